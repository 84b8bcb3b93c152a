"""The stand-in's in-memory backend: manifests, blobs and tags held in the test's own process
instead of a docker-registry, for content no registry would take (a manifest that is not
JSON, 5 MiB of spaces) or that is too big to store (a blob of GiBs, generated chunk by chunk
as it is read). It answers the few requests the stand-in sends its backend (manifest GET,
blob HEAD and GET, the tag list) with objects shaped like http.client responses; it holds no
uploads (the stand-in's push mode needs a docker-registry). Blobs are served under every
repository name. Python standard library only.
"""
import hashlib
import json
import random
import re
import threading

CHUNK = 1 << 20
_ROUTE = re.compile(r"^/v2/(.+?)/(manifests|blobs|tags)/([^?]*)")


def _errors(code, message):
    return json.dumps({"errors": [{"code": code, "message": message}]}).encode()


class Blob:
    """Blob bytes, either held (data) or generated (size, seed): chunk i of a generated blob
    is a seeded random block with i written into its first 8 bytes, so it never sits in
    memory whole."""

    def __init__(self, data=None, size=None, seed=1):
        self.data = data
        if data is not None:
            self.size = len(data)
            self.digest = "sha256:" + hashlib.sha256(data).hexdigest()
            return
        self.size = size
        self.block = random.Random(seed).randbytes(CHUNK)
        h = hashlib.sha256()
        for c in self.chunks():
            h.update(c)
        self.digest = "sha256:" + h.hexdigest()

    def chunks(self):
        if self.data is not None:
            for i in range(0, len(self.data), CHUNK):
                yield self.data[i:i + CHUNK]
            return
        left, i = self.size, 0
        while left > 0:
            b = i.to_bytes(8, "little") + self.block[8:]
            yield b[:min(left, CHUNK)]
            left -= CHUNK
            i += 1


class Response:
    """What the stand-in reads of a backend answer: status, getheader(), read([n])."""

    def __init__(self, status, headers, chunks=(), head=False):
        self.status = status
        self._headers = {k.lower(): v for k, v in headers.items()}
        self._chunks = iter(() if head else chunks)
        self._left = b""

    def getheader(self, name, default=None):
        return self._headers.get(name.lower(), default)

    def read(self, n=-1):
        out = []
        have = 0
        while n < 0 or have < n:
            if not self._left:
                self._left = next(self._chunks, b"")
                if not self._left:
                    break
            take = self._left if n < 0 else self._left[:n - have]
            self._left = self._left[len(take):]
            out.append(take)
            have += len(take)
        return b"".join(out)


class Memory:
    """A registry's content in dicts, behind KeepAlive's request() and drop()."""

    url = "memory"

    def __init__(self):
        self.lock = threading.Lock()
        self.manifests = {}  # (repo, tag or digest) -> (media type, bytes)
        self.blobs = {}      # digest -> Blob
        self.tags = {}       # repo -> [tag]

    def add_blob(self, blob):
        with self.lock:
            self.blobs[blob.digest] = blob
        return blob

    def add_manifest(self, repo, tag, media_type, body):
        """Store body under its digest and, unless tag is None, under tag; returns the
        digest. A repository with only untagged manifests lists no tag."""
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        with self.lock:
            self.manifests[(repo, digest)] = (media_type, body)
            tags = self.tags.setdefault(repo, [])
            if tag is not None:
                self.manifests[(repo, tag)] = (media_type, body)
                if tag not in tags:
                    tags.append(tag)
        return digest

    def drop(self):
        """Nothing to close: there is no connection."""

    def request(self, method, path, body=None, headers=None):
        head = method == "HEAD"
        m = _ROUTE.match(path)
        if method not in ("GET", "HEAD"):
            return Response(405, {"Content-Type": "application/json"},
                            [_errors("UNSUPPORTED", "the in-memory backend is read-only")])
        if m is None:
            return Response(404, {"Content-Type": "application/json"},
                            [_errors("NOT_FOUND", "unknown endpoint")], head)
        repo, kind, ref = m.groups()
        with self.lock:
            if kind == "manifests":
                found = self.manifests.get((repo, ref))
            elif kind == "blobs":
                found = self.blobs.get(ref)
            else:
                found = self.tags.get(repo)
        if found is None:
            code = {"manifests": "MANIFEST_UNKNOWN", "blobs": "BLOB_UNKNOWN",
                    "tags": "NAME_UNKNOWN"}[kind]
            data = _errors(code, "%s unknown" % kind)
            return Response(404, {"Content-Type": "application/json",
                                  "Content-Length": str(len(data))}, [data], head)
        if kind == "manifests":
            media_type, data = found
            return Response(200, {"Content-Type": media_type, "Content-Length": str(len(data)),
                                  "Docker-Content-Digest":
                                      "sha256:" + hashlib.sha256(data).hexdigest()},
                            [data], head)
        if kind == "blobs":
            return Response(200, {"Content-Type": "application/octet-stream",
                                  "Content-Length": str(found.size),
                                  "Docker-Content-Digest": found.digest},
                            found.chunks(), head)
        data = json.dumps({"name": repo, "tags": list(found)}).encode()
        return Response(200, {"Content-Type": "application/json",
                              "Content-Length": str(len(data))}, [data], head)
