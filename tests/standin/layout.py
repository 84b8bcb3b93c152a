"""docker-registry's filesystem storage layout (CNCF distribution 2.x), in one place: where a
blob's bytes and a repository's link files lie under the `rootdirectory` of its filesystem
driver. The loader and the benchmark write content there directly (pushing it through the API
makes docker-registry the bottleneck) and the storage backend reads it; a path spelled wrong
in any of them would make the registry and the stand-in disagree. Every function takes that
root directory; digests are "sha256:<hex>". Python standard library only.
"""
import hashlib
import os
import threading


def _v2(root, *parts):
    return os.path.join(root, "docker", "registry", "v2", *parts)


def _repo(root, repo, *parts):
    return _v2(root, "repositories", *repo.split("/"), *parts)


def repository_dir(root, repo):
    """Everything docker-registry keeps of repo (its links; the blobs stay shared)."""
    return _repo(root, repo)


def blob_data(root, digest):
    """The file holding a blob's (or a manifest's) bytes."""
    hexd = digest[len("sha256:"):]
    return _v2(root, "blobs", "sha256", hexd[:2], hexd, "data")


def layer_link(root, repo, digest):
    """The link that puts a blob into repo."""
    return _repo(root, repo, "_layers", "sha256", digest[len("sha256:"):], "link")


def revision_link(root, repo, digest):
    """The link that puts a manifest into repo (by digest)."""
    return _repo(root, repo, "_manifests", "revisions", "sha256", digest[len("sha256:"):],
                 "link")


def tags_dir(root, repo):
    """The directory with one entry per tag of repo."""
    return _repo(root, repo, "_manifests", "tags")


def tag_current_link(root, repo, tag):
    """The link naming the manifest a tag points at now."""
    return os.path.join(tags_dir(root, repo), tag, "current", "link")


def tag_index_link(root, repo, tag, digest):
    """The link recording that a tag has pointed at a manifest."""
    return os.path.join(tags_dir(root, repo), tag, "index", "sha256", digest[len("sha256:"):],
                        "link")


def write_atomic(path, data):
    """Write bytes so the registry, reading at any time, sees the whole file or none (the name
    of the temporary file is unique per process and thread)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = "%s.%d.%d.tmp" % (path, os.getpid(), threading.get_ident())
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_link(path, digest):
    write_atomic(path, digest.encode())


def put_manifest(root, repo, body, tag=None):
    """What docker-registry does on a manifest PUT to repo (by tag, or by digest when tag is
    None): the bytes as a blob, a revision link, and for a tag its index and current links.
    Returns the manifest's digest."""
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    data = blob_data(root, digest)
    if not os.path.exists(data):
        write_atomic(data, body)
    write_link(revision_link(root, repo, digest), digest)
    if tag is not None:
        write_link(tag_index_link(root, repo, tag, digest), digest)
        write_link(tag_current_link(root, repo, tag), digest)
    return digest
