"""What the stand-in and the loader share on the wire: media types, the repository name
grammar, and keep-alive HTTP connections."""
import http.client
import re
import threading

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+prettyjws"
# distribution-spec repository name: path components separated by "/".
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(r"^%s(?:/%s)*$" % (_COMPONENT, _COMPONENT))

RETRYABLE = (http.client.RemoteDisconnected, ConnectionError, BrokenPipeError)


class KeepAlive:
    """One keep-alive connection per thread to one server (the stand-in's backend, the
    loader's registry), opened again once when the server has closed an idle one."""

    def __init__(self, host, port, timeout=120):
        self.addr = (host, port)
        self.timeout = timeout
        self._local = threading.local()

    def request(self, method, path, body=None, headers=None):
        """Send a request and return the response; the caller reads it to the end (or
        calls drop()) before this thread's next request."""
        for attempt in (0, 1):
            conn = getattr(self._local, "conn", None)
            fresh = conn is None
            if fresh:
                conn = http.client.HTTPConnection(*self.addr, timeout=self.timeout)
                self._local.conn = conn
            try:
                conn.request(method, path, body=body, headers=headers or {})
                return conn.getresponse()
            except RETRYABLE:
                self.drop()
                if fresh or attempt:
                    raise
        raise AssertionError("unreachable")

    def drop(self):
        """Close this thread's connection (a response left unread makes it unusable)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
