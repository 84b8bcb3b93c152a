#!/usr/bin/env python3
"""Fill a docker-registry with content shaped like Docker Hub's Official Images.

Input is the catalog JSON of `hubsync-coordinator catalog --json`:
  {"commit": SHA, "repositories": [{"name": N, "groups": [{"kind": "tags"|"shared",
   "tags": [...], "platforms": ["linux/amd64", ...], "entries": [first tags]}]}]}
Each "tags" group (one library entry, identified by its first tag) becomes an index pushed
under all its tags: one image manifest per platform and, for Linux images, one attestation
manifest (platform unknown/unknown, in-toto layers) right after its subject. Linux and mixed
groups are OCI indexes of OCI manifests; Windows-only groups are Docker manifest lists of
Docker v2 manifests. A "shared" group is one index combining the very same child manifests as
its entries' indexes. Layers are real tar+gzip: a few base-OS layers per platform shared by
every repository, one layer per repository and platform, one per entry and platform, all
deterministic from the seed. A rebuild gives chosen entries new layer bytes (so new child
manifests and a new index digest) under the same tags, as an upstream rebuild does.

The result ("pushed manifest", JSON) lists, per repository and group, the index and child
digests and every blob with its size, so tests can compute the least GETs and bytes a copy
needs (see totals()). Python 3 standard library only; importable and a command-line tool.
"""
import argparse
import concurrent.futures
import gzip
import hashlib
import io
import json
import os
import random
import re
import sys
import tarfile
import threading
from urllib.parse import urlsplit

try:
    from . import layout
    from .wire import (DOCKER_LIST, DOCKER_MANIFEST, NAME_RE, OCI_INDEX, OCI_MANIFEST,
                       KeepAlive)
except ImportError:  # run as a script
    import layout
    from wire import DOCKER_LIST, DOCKER_MANIFEST, NAME_RE, OCI_INDEX, OCI_MANIFEST, KeepAlive

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
IN_TOTO = "application/vnd.in-toto+json"
SLSA = "https://slsa.dev/provenance/v0.2"
SPDX = "https://spdx.dev/Document"

# bashbrew architecture -> (os, architecture, variant)
ARCHES = {
    "amd64": ("linux", "amd64", None), "arm32v5": ("linux", "arm", "v5"),
    "arm32v6": ("linux", "arm", "v6"), "arm32v7": ("linux", "arm", "v7"),
    "arm64v8": ("linux", "arm64", "v8"), "i386": ("linux", "386", None),
    "mips64le": ("linux", "mips64le", None), "ppc64le": ("linux", "ppc64le", None),
    "riscv64": ("linux", "riscv64", None), "s390x": ("linux", "s390x", None),
    "windows-amd64": ("windows", "amd64", None),
}
PLATFORMS = {"/".join(p for p in v if p): k for k, v in ARCHES.items()}
PLATFORMS.update({"linux/arm64": "arm64v8", "linux/arm": "arm32v7"})
# Docker Hub only makes SBOMs for some architectures; the others get provenance only.
SBOM_ARCHES = ("amd64", "arm64v8")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# Base images: how many layers each has, and the base name Docker Hub annotates.
LINUX_BASES = {"alpine": (1, "alpine:3.22"), "debian": (1, "debian:bookworm-slim"),
               "ubuntu": (1, "ubuntu:noble")}
WINDOWS_BASES = {"servercore": (2, "mcr.microsoft.com/windows/servercore:ltsc2022"),
                 "nanoserver": (1, "mcr.microsoft.com/windows/nanoserver:ltsc2022")}
WINDOWS_VERSIONS = (("ltsc2025", "10.0.26100.4349"), ("ltsc2022", "10.0.20348.3807"),
                    ("1809", "10.0.17763.7434"), ("ltsc2019", "10.0.17763.7434"))


class LoaderError(Exception):
    """A bad catalog or an unexpected answer from the registry; the message says where."""


def _canon(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def _digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def repo_name(name):
    """Official images live under library/ on Docker Hub."""
    return name if "/" in name else "library/" + name


def parse_platform(text, where):
    """A catalog platform ("linux/arm64/v8" or a bashbrew name "arm64v8") -> bashbrew arch."""
    if not isinstance(text, str):
        raise LoaderError("%s: platform %r is not a string" % (where, text))
    if text in ARCHES:
        return text
    arch = PLATFORMS.get(text)
    if arch is None:
        raise LoaderError("%s: unknown platform %r" % (where, text))
    return arch


def read_catalog(catalog, repos=None):
    """Check a catalog and keep the chosen repositories (all when repos is None).
    Returns [{"name": "library/x", "groups": [{"kind", "tags", "arches", "entries"}]}]."""
    if not isinstance(catalog, dict) or not isinstance(catalog.get("repositories"), list):
        raise LoaderError("catalog: no \"repositories\" list")
    wanted = None if repos is None else {repo_name(r) for r in repos}
    out = []
    for i, repo in enumerate(catalog["repositories"]):
        where = "catalog repositories[%d]" % i
        if not isinstance(repo, dict) or not isinstance(repo.get("name"), str):
            raise LoaderError("%s: no \"name\"" % where)
        name = repo_name(repo["name"])
        where += " (%s)" % name
        if not NAME_RE.match(name):
            raise LoaderError("%s: invalid repository name" % where)
        if wanted is not None and name not in wanted:
            continue
        groups = []
        entries = {}
        seen_tags = set()
        for j, g in enumerate(repo.get("groups") or []):
            gw = "%s groups[%d]" % (where, j)
            if not isinstance(g, dict) or g.get("kind") not in ("tags", "shared"):
                raise LoaderError("%s: kind must be \"tags\" or \"shared\"" % gw)
            tags = g.get("tags")
            if not isinstance(tags, list) or not tags:
                raise LoaderError("%s: no tags" % gw)
            for t in tags:
                if not isinstance(t, str) or not TAG_RE.match(t):
                    raise LoaderError("%s: invalid tag %r" % (gw, t))
                if t in seen_tags:
                    raise LoaderError("%s: tag %r appears twice" % (gw, t))
                seen_tags.add(t)
            group = {"kind": g["kind"], "tags": list(tags)}
            if g["kind"] == "tags":
                plats = g.get("platforms")
                if not isinstance(plats, list) or not plats:
                    raise LoaderError("%s: no platforms" % gw)
                arches = sorted({parse_platform(p, gw) for p in plats})
                group["arches"] = arches
                group["entries"] = [tags[0]]
                entries[tags[0]] = arches
            else:
                ents = g.get("entries")
                if not isinstance(ents, list) or not ents:
                    raise LoaderError("%s: a shared group needs \"entries\"" % gw)
                group["entries"] = list(ents)
            groups.append(group)
        for g in groups:
            for e in g["entries"]:
                if e not in entries:
                    raise LoaderError("%s: shared tags %s name entry %r, which is no "
                                      "\"tags\" group" % (where, ",".join(g["tags"]), e))
        out.append({"name": name, "groups": groups})
    if wanted is not None:
        missing = wanted - {r["name"] for r in out}
        if missing:
            raise LoaderError("catalog: no repository %s" % ", ".join(sorted(missing)))
    return out


def _layer(key, size):
    """(gzip bytes, uncompressed tar digest) of a one-file tar whose payload is `size`
    pseudo-random bytes drawn from `key`: the same key always gives the same bytes."""
    payload = random.Random(key).randbytes(size)
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        info = tarfile.TarInfo("standin/" + hashlib.sha256(key.encode()).hexdigest()[:16])
        info.size = size
        info.mtime = 0
        tf.addfile(info, io.BytesIO(payload))
    raw = tar.getvalue()
    # Level 1: random bytes do not compress, and this keeps big layers cheap to make.
    return gzip.compress(raw, compresslevel=1, mtime=0), _digest(raw)


def _platform(arch, tag):
    os_, architecture, variant = ARCHES[arch]
    p = {"architecture": architecture, "os": os_}
    if variant:
        p["variant"] = variant
    if os_ == "windows":
        p["os.version"] = next((v for k, v in WINDOWS_VERSIONS if k in tag),
                               WINDOWS_VERSIONS[1][1])
    return p


def platform_string(p):
    return "/".join(x for x in (p["os"], p["architecture"], p.get("variant")) if x)


def _base_for(repo, tag, windows):
    if windows:
        return "nanoserver" if "nanoserver" in tag else "servercore"
    short = repo.split("/")[-1]
    for b in LINUX_BASES:
        if b == short or b in tag:
            return b
    return "ubuntu" if any(k in tag for k in ("jammy", "noble", "focal")) else "debian"


class Loader:
    """Pushes catalog content into a registry. One instance keeps the generation of every
    entry, so rebuild() can change chosen groups later."""

    def __init__(self, registry, seed=1, layer_size=512, jobs=8, storage=None):
        """storage: the docker-registry's filesystem root directory, when known; blobs and
        manifests are then written there directly, in its layout (ten times faster than
        pushing through the API, where docker-registry is the bottleneck)."""
        u = urlsplit(registry)
        if u.scheme != "http" or not u.hostname or not u.port:
            raise LoaderError("registry must be http://HOST:PORT, got %r" % registry)
        self.registry = registry
        self._conn = KeepAlive(u.hostname, u.port)
        self.seed = seed
        self.layer_size = layer_size
        self.jobs = jobs
        self.storage = storage
        self.repos = {}          # name -> groups as read_catalog gives them
        self.generations = {}    # name -> {entry: generation}
        self.commit = None
        self.pushed = {}         # name -> [group records], kept in catalog order
        self._lock = threading.Lock()
        self._stripes = [threading.Lock() for _ in range(64)]
        self._shared_layers = {}  # key -> (digest, size, diff_id)
        self._home = {}           # blob digest -> a repository known to hold it
        self._present = set()     # (repository, digest) known to be there
        self.stats = None

    # -- registry I/O -----------------------------------------------------------------
    def _request(self, method, path, body=None, headers=None):
        resp = self._conn.request(method, path, body, headers)
        return resp, resp.read()

    def _expect(self, what, resp, data, *ok):
        if resp.status not in ok:
            raise LoaderError("%s: registry %s answered %d %s" % (
                what, self.registry, resp.status, data[:300].decode("utf-8", "replace")))

    def _count(self, key, n=1):
        with self._lock:
            self.stats[key] += n

    def _ensure_blob(self, repo, digest, make):
        """Put a blob into repo once (make() gives its bytes if it must be uploaded)."""
        if (repo, digest) in self._present:
            return
        with self._stripes[int(digest[7:11], 16) % len(self._stripes)]:
            if (repo, digest) in self._present:
                return
            if self.storage:
                self._store_blob(repo, digest, make)
            else:
                self._upload_blob(repo, digest, make)
            with self._lock:
                self._home.setdefault(digest, repo)
                self._present.add((repo, digest))

    def _store_blob(self, repo, digest, make):
        """The same as _upload_blob, in docker-registry's filesystem layout: the blob
        under blobs/, a link to it in the repository's _layers/."""
        link = layout.layer_link(self.storage, repo, digest)
        self._count("heads")
        if os.path.exists(link):
            self._count("already_present")
            return
        data = layout.blob_data(self.storage, digest)
        if os.path.exists(data):
            self._count("mounts")
        else:
            body = make()
            layout.write_atomic(data, body)
            self._count("uploads")
            self._count("upload_bytes", len(body))
        layout.write_link(link, digest)

    def _upload_blob(self, repo, digest, make):
        """HEAD the blob in repo; if missing, mount it from a repository known to hold it,
        else upload make()'s bytes."""
        path = "/v2/%s/blobs/%s" % (repo, digest)
        resp, data = self._request("HEAD", path)
        self._count("heads")
        if resp.status == 200:
            self._count("already_present")
            return
        self._expect("HEAD %s" % path, resp, data, 404)
        home = self._home.get(digest)
        if home is not None:
            resp, data = self._request(
                "POST", "/v2/%s/blobs/uploads/?mount=%s&from=%s" % (repo, digest, home), b"")
            self._expect("mount %s into %s" % (digest, repo), resp, data, 201, 202)
            if resp.status == 201:
                self._count("mounts")
                return
        else:
            resp, data = self._request("POST", "/v2/%s/blobs/uploads/" % repo, b"")
            self._expect("start upload to %s" % repo, resp, data, 202)
        # A 202 (fresh upload, or a mount the registry declined) gives the upload URL.
        u = urlsplit(resp.getheader("Location") or "")
        body = make()
        resp, data = self._request(
            "PUT", u.path + "?" + (u.query + "&" if u.query else "") + "digest=" + digest,
            body, {"Content-Type": "application/octet-stream"})
        self._expect("upload %s to %s" % (digest, repo), resp, data, 201)
        self._count("uploads")
        self._count("upload_bytes", len(body))

    def _put_manifest(self, repo, ref, media_type, body):
        """Push a manifest by digest or tag (children first, the index last)."""
        self._count("manifest_puts")
        if self.storage:
            layout.put_manifest(self.storage, repo, body,
                                None if ref.startswith("sha256:") else ref)
            return
        resp, data = self._request("PUT", "/v2/%s/manifests/%s" % (repo, ref), body,
                                   {"Content-Type": media_type})
        self._expect("PUT %s manifest %s" % (repo, ref), resp, data, 201)

    # -- content ----------------------------------------------------------------------
    def _shared_layer(self, key):
        """A layer shared by many images: made once to learn its digest, then made again
        only if it must be uploaded."""
        meta = self._shared_layers.get(key)
        if meta is None:
            data, diff_id = _layer(key, self.layer_size)
            meta = (_digest(data), len(data), diff_id)
            with self._lock:
                meta = self._shared_layers.setdefault(key, meta)
        return meta

    def _push_blob(self, repo, media_type, data, blobs):
        digest = _digest(data)
        self._ensure_blob(repo, digest, lambda: data)
        blobs.append({"mediaType": media_type, "digest": digest, "size": len(data)})
        return blobs[-1]

    def _image(self, repo, entry, arch, gen):
        """Push one platform image (and its attestation) of an entry; returns the child
        records the index and the pushed manifest need."""
        windows = ARCHES[arch][0] == "windows"
        platform = _platform(arch, entry)
        pstr = platform_string(platform)
        base = _base_for(repo, entry, windows)
        nbase, base_name = (WINDOWS_BASES if windows else LINUX_BASES)[base]
        layer_type = DOCKER_LAYER if windows else OCI_LAYER
        seed = self.seed
        blobs = []
        diff_ids = []
        # Windows bases differ per OS build (ltsc2022, ltsc2025, ...).
        keys = ["%d|base|%s|%s|%s|%d" % (seed, base, arch, platform.get("os.version", ""), i)
                for i in range(nbase)]
        keys.append("%d|repo|%s|%s" % (seed, repo, arch))
        for key in keys:
            digest, size, diff_id = self._shared_layer(key)
            self._ensure_blob(repo, digest, lambda k=key: _layer(k, self.layer_size)[0])
            blobs.append({"mediaType": layer_type, "digest": digest, "size": size})
            diff_ids.append(diff_id)
        data, diff_id = _layer("%d|entry|%s|%s|%s|%d" % (seed, repo, entry, arch, gen),
                               self.layer_size)
        self._push_blob(repo, layer_type, data, blobs)
        diff_ids.append(diff_id)
        revision = hashlib.sha1(("%d|%s|%s|%d" % (seed, repo, entry, gen)).encode()).hexdigest()
        created = "2026-08-21T%02d:%02d:00Z" % (gen // 60 % 24, gen % 60)
        config = dict(platform)
        config.update({
            "created": created,
            "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Cmd": [repo.split("/")[-1]],
                       "Labels": {"org.opencontainers.image.revision": revision,
                                  "org.opencontainers.image.version": entry}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": created, "created_by": "standin layer %d" % i}
                        for i in range(len(diff_ids))]})
        cfg = self._push_blob(repo, DOCKER_CONFIG if windows else OCI_CONFIG, _canon(config),
                              [])
        manifest = _canon({"schemaVersion": 2,
                           "mediaType": DOCKER_MANIFEST if windows else OCI_MANIFEST,
                           "config": cfg, "layers": blobs})
        mdigest = _digest(manifest)
        self._put_manifest(repo, mdigest, DOCKER_MANIFEST if windows else OCI_MANIFEST,
                           manifest)
        image = {"digest": mdigest, "mediaType": DOCKER_MANIFEST if windows else OCI_MANIFEST,
                 "size": len(manifest), "platform": pstr, "entry": entry, "arch": arch,
                 "kind": "image", "blobs": [cfg] + blobs,
                 "descriptor_platform": platform,
                 "annotations": {
                     "com.docker.official-images.bashbrew.arch": arch,
                     "org.opencontainers.image.base.name": base_name,
                     "org.opencontainers.image.created": created,
                     "org.opencontainers.image.revision": revision,
                     "org.opencontainers.image.source":
                         "https://github.com/docker-library/%s.git#%s:%s"
                         % (repo.split("/")[-1], revision, entry),
                     "org.opencontainers.image.url": "https://hub.docker.com/_/%s"
                                                     % repo.split("/")[-1],
                     "org.opencontainers.image.version": entry}}
        if windows:
            # Windows images are built with the classic builder: no attestations on Hub.
            return [image]
        return [image, self._attestation(repo, image, arch, created)]

    def _attestation(self, repo, image, arch, created):
        layers = []
        provenance = _canon({
            "_type": "https://in-toto.io/Statement/v0.1", "predicateType": SLSA,
            "subject": [{"name": "pkg:docker/%s@%s?platform=%s" % (
                repo, image["entry"], image["platform"].replace("/", "%2F")),
                "digest": {"sha256": image["digest"][7:]}}],
            "predicate": {"builder": {"id": "https://github.com/docker-library"},
                          "buildType": "https://mobyproject.org/buildkit@v1",
                          "metadata": {"buildStartedOn": created, "buildFinishedOn": created},
                          "materials": [{"uri": b["digest"]} for b in image["blobs"]]}})
        self._push_blob(repo, IN_TOTO, provenance, layers)
        layers[-1]["annotations"] = {"in-toto.io/predicate-type": SLSA}
        if arch in SBOM_ARCHES:
            sbom = _canon({
                "_type": "https://in-toto.io/Statement/v0.1", "predicateType": SPDX,
                "subject": [{"name": "pkg:docker/%s@%s" % (repo, image["entry"]),
                             "digest": {"sha256": image["digest"][7:]}}],
                "predicate": {"spdxVersion": "SPDX-2.3", "name": "sbom",
                              "packages": [{"name": "pkg-%d" % i, "SPDXID": "SPDXRef-%d" % i,
                                            "versionInfo": image["entry"]}
                                           for i in range(8)]}})
            self._push_blob(repo, IN_TOTO, sbom, layers)
            layers[-1]["annotations"] = {"in-toto.io/predicate-type": SPDX}
        cfg = self._push_blob(repo, OCI_CONFIG, _canon({
            "architecture": "unknown", "os": "unknown", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [b["digest"] for b in layers]}}), [])
        manifest = _canon({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg,
                           "layers": layers})
        mdigest = _digest(manifest)
        self._put_manifest(repo, mdigest, OCI_MANIFEST, manifest)
        return {"digest": mdigest, "mediaType": OCI_MANIFEST, "size": len(manifest),
                "platform": "unknown/unknown", "entry": image["entry"], "arch": arch,
                "kind": "attestation", "attestation_of": image["digest"],
                "blobs": [cfg] + layers,
                "descriptor_platform": {"architecture": "unknown", "os": "unknown"},
                "annotations": {"com.docker.official-images.bashbrew.arch": arch,
                                "vnd.docker.reference.digest": image["digest"],
                                "vnd.docker.reference.type": "attestation-manifest"}}

    @staticmethod
    def _index(children):
        """Index bytes for children (already in order): a Docker manifest list when the
        first child is a Docker manifest (Windows-only), an OCI index otherwise."""
        docker = children[0]["mediaType"] == DOCKER_MANIFEST
        manifests = []
        for c in children:
            d = {"mediaType": c["mediaType"], "digest": c["digest"], "size": c["size"],
                 "platform": c["descriptor_platform"]}
            if not docker:
                d["annotations"] = c["annotations"]
            manifests.append(d)
        media_type = DOCKER_LIST if docker else OCI_INDEX
        return media_type, _canon({"schemaVersion": 2, "mediaType": media_type,
                                   "manifests": manifests})

    # -- loading ----------------------------------------------------------------------
    def load(self, catalog, repos=None):
        """Push the chosen repositories (all when None) of a catalog; returns the pushed
        manifest (see module doc)."""
        chosen = read_catalog(catalog, repos)
        self.commit = catalog.get("commit")
        for r in chosen:
            self.repos[r["name"]] = r["groups"]
            self.generations.setdefault(r["name"], {})
        return self._push({r["name"]: None for r in chosen})

    def rebuild(self, targets):
        """Rebuild the groups holding the given "repo:tag" references: their entries get
        the next generation (new layer bytes), and every group using those entries (their
        own and the shared ones) is pushed again under the same tags. Returns the pushed
        manifest with "changed": [{"repository", "tags", "old", "new"}]."""
        bumped = {}
        for t in targets:
            name, _, tag = t.rpartition(":")
            name = repo_name(name)
            group = next((g for g in self.repos.get(name, []) if tag in g["tags"]), None)
            if group is None:
                raise LoaderError("rebuild %s: no loaded group has tag %r in %s"
                                  % (t, tag, name))
            bumped.setdefault(name, set()).update(group["entries"])
        before = {(n, tuple(g["tags"])): g["index"]["digest"]
                  for n in bumped for g in self.pushed[n]}
        for name, entries in bumped.items():
            gens = self.generations[name]
            for e in entries:
                gens[e] = gens.get(e, 0) + 1
        out = self._push(bumped)
        out["changed"] = []
        for name in bumped:
            for g in self.pushed[name]:
                old = before[(name, tuple(g["tags"]))]
                if old != g["index"]["digest"]:
                    out["changed"].append({"repository": name, "tags": g["tags"],
                                           "old": old, "new": g["index"]["digest"]})
        return out

    def _push(self, todo):
        """Push groups of the repositories in todo (name -> entries whose groups to push,
        None for all), images in parallel first, then indexes."""
        self.stats = {"uploads": 0, "upload_bytes": 0, "mounts": 0, "heads": 0,
                      "already_present": 0, "manifest_puts": 0}
        with concurrent.futures.ThreadPoolExecutor(self.jobs) as pool:
            images = {}
            for name, only in todo.items():
                gens = self.generations[name]
                for g in self.repos[name]:
                    if g["kind"] != "tags" or (only is not None and g["entries"][0] not in only):
                        continue
                    e = g["entries"][0]
                    for arch in g["arches"]:
                        images[(name, e, arch)] = pool.submit(self._image, name, e, arch,
                                                              gens.get(e, 0))
            built = {k: f.result() for k, f in images.items()}
            puts = []
            for name, only in todo.items():
                records = {tuple(g["tags"]): g for g in self.pushed.get(name, [])}
                groups = []
                for g in self.repos[name]:
                    if only is not None and not set(g["entries"]) & only:
                        groups.append(records[tuple(g["tags"])])
                        continue
                    children = []
                    for e in g["entries"]:
                        arches = next(x["arches"] for x in self.repos[name]
                                      if x["kind"] == "tags" and x["entries"][0] == e)
                        for arch in arches:
                            children.extend(built[(name, e, arch)] if (name, e, arch) in built
                                            else self._children_of(name, e, arch))
                    children = _order(children)
                    media_type, body = self._index(children)
                    digest = _digest(body)
                    puts.extend(pool.submit(self._put_manifest, name, t, media_type, body)
                                for t in g["tags"])
                    groups.append(_group_record(g, media_type, digest, len(body), children))
                self.pushed[name] = groups
            for f in puts:
                f.result()
        return self.manifest()

    def _children_of(self, name, entry, arch):
        """Children already pushed for an entry's image (a shared group whose other
        entries were not rebuilt)."""
        for g in self.pushed[name]:
            if g["kind"] == "tags" and g["entries"][0] == entry:
                return [c for c in g["children"] if c["arch"] == arch]
        raise LoaderError("%s: entry %s was never pushed" % (name, entry))

    def manifest(self):
        repos = []
        for name, groups in self.pushed.items():
            tags = {t: g["index"]["digest"] for g in groups for t in g["tags"]}
            repos.append({"name": name, "groups": groups, "tags": tags,
                          "generations": dict(self.generations[name]),
                          "catalog": self.repos[name]})
        out = {"registry": self.registry, "seed": self.seed, "layer_size": self.layer_size,
               "commit": self.commit, "repositories": repos, "push": dict(self.stats or {})}
        out["totals"] = totals(out)
        return out

    @classmethod
    def from_manifest(cls, manifest, registry=None, jobs=8, storage=None):
        """A Loader that continues from a pushed manifest (for rebuilds from the CLI)."""
        self = cls(registry or manifest["registry"], manifest["seed"], manifest["layer_size"],
                   jobs, storage)
        self.commit = manifest.get("commit")
        for r in manifest["repositories"]:
            self.repos[r["name"]] = r["catalog"]
            self.generations[r["name"]] = dict(r["generations"])
            self.pushed[r["name"]] = r["groups"]
        return self


def _order(children):
    """Linux images before Windows ones (stable), each attestation right after its image."""
    images = sorted((c for c in children if c["kind"] == "image"),
                    key=lambda c: c["descriptor_platform"]["os"] == "windows")
    att = {c["attestation_of"]: c for c in children if c["kind"] == "attestation"}
    out = []
    for c in images:
        out.append(c)
        if c["digest"] in att:
            out.append(att[c["digest"]])
    return out


def _group_record(g, media_type, digest, size, children):
    blobs = {}
    for c in children:
        for b in c["blobs"]:
            blobs[b["digest"]] = b["size"]
    return {"kind": g["kind"], "tags": g["tags"], "entries": g["entries"],
            "index": {"digest": digest, "mediaType": media_type, "size": size},
            "children": children,
            "blobs": [{"digest": d, "size": s} for d, s in sorted(blobs.items())]}


def totals(manifest, repos=None):
    """What copying (the chosen repositories of) a pushed manifest takes at the least:
    manifest_gets_min = distinct manifests per repository (indexes + children), each
    fetched once; blobs/blob_bytes = distinct blobs over all repositories (cross-repository
    mounts make each one a single download); blob_refs = distinct (repository, blob)."""
    wanted = None if repos is None else {repo_name(r) for r in repos}
    indexes, children, blobs, refs, tags = set(), set(), {}, set(), 0
    for r in manifest["repositories"]:
        if wanted is not None and r["name"] not in wanted:
            continue
        tags += len(r["tags"])
        for g in r["groups"]:
            indexes.add((r["name"], g["index"]["digest"]))
            for c in g["children"]:
                children.add((r["name"], c["digest"]))
            for b in g["blobs"]:
                blobs[b["digest"]] = b["size"]
                refs.add((r["name"], b["digest"]))
    return {"tags": tags, "indexes": len(indexes), "manifests": len(children),
            "manifest_gets_min": len(indexes) + len(children), "blobs": len(blobs),
            "blob_bytes": sum(blobs.values()), "blob_refs": len(refs)}


def main(argv=None):
    ap = argparse.ArgumentParser(description="Fill a registry with Docker-Hub-shaped official "
                                             "images (see tests/standin/README.md)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    lo = sub.add_parser("load", help="push repositories of a catalog")
    lo.add_argument("--catalog", required=True,
                    help="catalog JSON file (hubsync-coordinator catalog --json), - for stdin")
    lo.add_argument("--repos", help="comma-separated repositories (default: all)")
    lo.add_argument("--seed", type=int, default=1)
    lo.add_argument("--layer-size", type=int, default=512,
                    help="payload bytes per layer (default %(default)s)")
    rb = sub.add_parser("rebuild", help="rebuild groups of an earlier load")
    rb.add_argument("--state", required=True, help="pushed manifest written by load/rebuild")
    rb.add_argument("--group", action="append", required=True, metavar="REPO:TAG",
                    help="a group to rebuild, by any of its tags (repeatable)")
    for p in (lo, rb):
        p.add_argument("--registry", help="registry URL http://HOST:PORT (rebuild: default "
                                          "the one in --state)")
        p.add_argument("--jobs", type=int, default=8, help="parallel requests")
        p.add_argument("--storage", help="the registry's filesystem root directory, to write "
                                         "blobs there directly (much faster)")
        p.add_argument("--out", default="-", help="where to write the pushed manifest")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "load":
            if not a.registry:
                ap.error("load needs --registry")
            with (sys.stdin if a.catalog == "-" else open(a.catalog)) as f:
                catalog = json.load(f)
            loader = Loader(a.registry, a.seed, a.layer_size, a.jobs, a.storage)
            out = loader.load(catalog, a.repos.split(",") if a.repos else None)
        else:
            with open(a.state) as f:
                loader = Loader.from_manifest(json.load(f), a.registry, a.jobs, a.storage)
            out = loader.rebuild(a.group)
    except (OSError, ValueError, LoaderError) as e:
        print("loader: %s" % e, file=sys.stderr)
        return 1
    text = json.dumps(out, indent=1, sort_keys=True) + "\n"
    if a.out == "-":
        sys.stdout.write(text)
    else:
        with open(a.out, "w") as f:
            f.write(text)
    print("loader: %(tags)d tags, %(indexes)d indexes, %(manifests)d child manifests, "
          "%(blobs)d blobs (%(blob_bytes)d bytes)" % out["totals"], file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
