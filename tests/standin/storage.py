"""The stand-in's storage backend: answers the stand-in's reads (manifests by tag and digest,
blob HEAD and GET, tag lists) from a docker-registry's filesystem storage directly and sends
everything else (writes, ranges, anything it does not find) to that registry. Proxied, each
read cost the backend docker-registry about as much CPU as the target spent on the whole
copy it stood for (issue 12's whole-catalog benchmark: 196 of 564 CPU-seconds), so on a
machine of 2 CPUs the apparatus, not the code under test, set the pace. Read-only access to files
the registry has finished writing (it links a tag or revision after the data is there).
Python standard library only.
"""
import hashlib
import json
import os
import re
from urllib.parse import urlsplit

try:
    from . import layout
    from .memory import Response
    from .wire import DOCKER_SCHEMA1, NAME_RE, OCI_INDEX, OCI_MANIFEST, KeepAlive
except ImportError:  # imported by standin.py run as a script
    import layout
    from memory import Response
    from wire import DOCKER_SCHEMA1, NAME_RE, OCI_INDEX, OCI_MANIFEST, KeepAlive

CHUNK = 1 << 20
_ROUTE = re.compile(r"^/v2/(.+?)/(manifests|blobs|tags)/([^?]*)$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")


def _chunks(path):
    with open(path, "rb") as f:
        while True:
            data = f.read(CHUNK)
            if not data:
                return
            yield data


class Storage:
    """KeepAlive's request() and drop() over a docker-registry: reads from its storage root
    (the `rootdirectory` of its filesystem driver), the rest over HTTP to url."""

    def __init__(self, root, url):
        u = urlsplit(url)
        if u.scheme != "http" or not u.hostname or not u.port:
            raise ValueError("the backend must be http://HOST:PORT, got %r" % url)
        self.root = root
        self.url = url
        self.registry = KeepAlive(u.hostname, u.port)

    def drop(self):
        self.registry.drop()

    def request(self, method, path, body=None, headers=None):
        found = None
        if method in ("GET", "HEAD") and body is None and "Range" not in (headers or {}):
            found = self._read(method, path)
        if found is not None:
            return found
        return self.registry.request(method, path, body=body, headers=headers)

    @staticmethod
    def _link(path):
        """The digest a link file names, or None."""
        try:
            with open(path, "rb") as f:
                text = f.read().decode("ascii", "replace").strip()
        except OSError:
            return None
        return text if _DIGEST.match(text) else None

    def _read(self, method, path):
        """A Response for what the storage holds; None sends the request to the registry
        (it answers misses and odd names itself, with its own errors)."""
        m = _ROUTE.match(path)
        if m is None or not NAME_RE.match(m.group(1)):
            return None
        name, kind, ref = m.groups()
        head = method == "HEAD"
        if kind == "tags":
            if ref != "list":
                return None
            try:
                tags = os.listdir(layout.tags_dir(self.root, name))
            except OSError:
                return None
            data = (json.dumps({"name": name, "tags": sorted(tags)},
                               separators=(",", ":")) + "\n").encode()
            return Response(200, {"Content-Type": "application/json; charset=utf-8",
                                  "Content-Length": str(len(data))}, [data], head)
        d = _DIGEST.match(ref)
        if kind == "blobs":
            if d is None or self._link(layout.layer_link(self.root, name, ref)) != ref:
                return None
            blob = layout.blob_data(self.root, ref)
            try:
                size = os.path.getsize(blob)
            except OSError:
                return None
            return Response(200, {"Content-Type": "application/octet-stream",
                                  "Content-Length": str(size), "Docker-Content-Digest": ref,
                                  "ETag": '"%s"' % ref, "Accept-Ranges": "bytes"},
                            () if head else _chunks(blob), head)
        if d is not None:
            digest = self._link(layout.revision_link(self.root, name, ref))
            if digest != ref:
                return None
        elif _TAG.match(ref):
            digest = self._link(layout.tag_current_link(self.root, name, ref))
        else:
            return None
        if digest is None:
            return None
        try:
            with open(layout.blob_data(self.root, digest), "rb") as f:
                data = f.read()
        except OSError:
            return None
        media_type = self._media_type(data)
        if media_type is None or "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            return None
        return Response(200, {"Content-Type": media_type, "Content-Length": str(len(data)),
                              "Docker-Content-Digest": digest, "ETag": '"%s"' % digest},
                        [data], head)

    @staticmethod
    def _media_type(data):
        """The Content-Type docker-registry serves a stored manifest with: its mediaType,
        else an OCI index or manifest by shape; None (the registry answers) for schema 1 and
        anything else."""
        try:
            doc = json.loads(data)
        except ValueError:
            return None
        if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
            return None
        media_type = doc.get("mediaType")
        if isinstance(media_type, str) and media_type != DOCKER_SCHEMA1:
            return media_type
        if media_type is None:
            return OCI_INDEX if "manifests" in doc else OCI_MANIFEST
        return None
