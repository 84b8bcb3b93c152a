"""What a registry holds, read over its API as a client would (every manifest type
accepted): digests of tags, tag lists, a whole snapshot of repositories checked for
dangling references, and a Watcher that takes such snapshots while a run writes.
Python standard library only.
"""
import hashlib
import json
import threading
import time
import urllib.error
import urllib.request

from standin import wire

ACCEPT = ", ".join([wire.OCI_INDEX, wire.DOCKER_LIST, wire.OCI_MANIFEST, wire.DOCKER_MANIFEST])


def request(url, method="GET", accept=ACCEPT):
    """(status, headers, body) of one request; HTTP errors are answers too."""
    req = urllib.request.Request(url, method=method, headers={"Accept": accept})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, b""


def head(registry_url, repo, ref):
    """The digest registry_url serves for repo:ref, or None on 404."""
    code, headers, _ = request("%s/v2/%s/manifests/%s" % (registry_url, repo, ref), "HEAD")
    if code == 404:
        return None
    if code != 200:
        raise AssertionError("HEAD %s:%s: %d" % (repo, ref, code))
    return headers["Docker-Content-Digest"]


def tags(registry_url, repo):
    """The tags registry_url lists for repo ([] when it does not know repo)."""
    code, _, body = request("%s/v2/%s/tags/list" % (registry_url, repo))
    if code == 404:
        return []
    if code != 200:
        raise AssertionError("tags/list %s: %d" % (repo, code))
    return json.loads(body).get("tags") or []


def pushed_tags(pushed, repos):
    """{(repo, tag): index digest} of what the stand-in serves (a loader's pushed
    manifest) for these repositories."""
    out = {}
    for r in pushed["repositories"]:
        name = r["name"].split("/", 1)[1]
        if name in repos:
            for tag, digest in r["tags"].items():
                out[(name, tag)] = digest
    return out


def snapshot(url, repos, verify_blobs=False):
    """What the target holds for library/<repo> of repos, as {"tags": {repo:tag: digest},
    "manifests": set, "blobs": set}, reached from the tags. Raises AssertionError naming the
    first tag that points at a missing manifest or blob. verify_blobs also GETs every blob
    and checks it hashes to its digest."""
    found, manifests, blobs = {}, set(), set()
    for short in repos:
        repo = "library/" + short
        for tag in tags(url, repo):
            code, h, body = request("%s/v2/%s/manifests/%s" % (url, repo, tag))
            if code != 200:
                raise AssertionError("%s:%s listed but its manifest answers %d"
                                     % (repo, tag, code))
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
            if h.get("Docker-Content-Digest") != digest:
                raise AssertionError("%s:%s manifest bytes do not hash to its digest" %
                                     (repo, tag))
            found["%s:%s" % (short, tag)] = digest
            m = json.loads(body)
            todo = [(digest, m)]
            for c in m.get("manifests", []):
                code, _, cbody = request("%s/v2/%s/manifests/%s" % (url, repo, c["digest"]))
                if code != 200:
                    raise AssertionError("%s:%s child manifest %s missing (%d)"
                                         % (repo, tag, c["digest"], code))
                todo.append((c["digest"], json.loads(cbody)))
            for d, doc in todo:
                manifests.add(d)
                for b in ([doc["config"]] if "config" in doc else []) + doc.get("layers", []):
                    if (repo, b["digest"]) in blobs:
                        continue
                    blob_url = "%s/v2/%s/blobs/%s" % (url, repo, b["digest"])
                    if verify_blobs:
                        code, _, data = request(blob_url, accept="*/*")
                        ok = code == 200 and \
                            "sha256:" + hashlib.sha256(data).hexdigest() == b["digest"]
                        what = "is corrupt" if code == 200 else "missing (%d)" % code
                    else:
                        code, _, _ = request(blob_url, method="HEAD", accept="*/*")
                        ok, what = code == 200, "missing (%d)" % code
                    if not ok:
                        raise AssertionError("%s:%s blob %s %s" % (repo, tag, b["digest"], what))
                    blobs.add((repo, b["digest"]))
    return {"tags": found, "manifests": manifests, "blobs": blobs}


class Watcher(threading.Thread):
    """Polls the target while a run goes and records every inconsistency it sees."""

    def __init__(self, url, repos):
        super().__init__(daemon=True)
        self.url, self.repos = url, repos
        self.problems, self.polls = [], 0
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            try:
                snapshot(self.url, self.repos)
                self.polls += 1
            except AssertionError as e:
                # docker-registry lists a tag a moment before its link file exists (its own
                # tag write is not atomic): only what is still wrong half a second later is
                # a dangling tag.
                time.sleep(0.5)
                try:
                    snapshot(self.url, self.repos)
                except AssertionError as again:
                    if str(again) == str(e):
                        self.problems.append(str(e))
                except (OSError, ValueError):
                    pass
            except (OSError, ValueError):
                pass  # the target is being restarted on purpose
            self._halt.wait(0.2)

    def finish(self):
        self._halt.set()
        self.join(timeout=60)
        return self.problems
