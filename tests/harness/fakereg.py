"""Small registry stand-ins for the registry client's integration tests.

Everything runs in threads of the test process on loopback ports, so tests
can switch behaviour and read counters directly. Python standard library only.

- FakeRegistry: an in-memory, read-mostly registry (manifests, blobs, tag
  lists) with switchable auth (none, Basic, Bearer with a token endpoint on
  the same port, anonymous or per-user, token lifetimes), Docker-Hub-style
  rate-limit headers and 429s, 5xx bursts, blob GETs redirected to a CDN
  listener that records Authorization headers, corrupted or truncated blob
  bodies, Link/last tag pagination. Blobs can be generated deterministically
  chunk by chunk, so multi-GiB blobs are never held in memory.
- Challenger: a host that answers everything with a Bearer challenge for a realm on
  itself and records what it receives (credentials sent where they must not go).
- AuthProxy: Bearer-token auth in front of a real docker-registry (the
  target side of copies with credentials); request bodies stream through,
  answers (small, from a target) are relayed whole.
"""
import base64
import hashlib
import http.client
import http.server
import json
import random
import re
import secrets
import socketserver
import sys
import threading
import time
import urllib.parse

CHUNK = 1 << 20


class Blob:
    """Blob bytes, either held (small) or generated: chunk i of a generated
    blob is a seeded random block with i written into its first 8 bytes."""

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


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # Clients that hang up mid-answer are part of the tests (aborted
        # uploads, bounded bodies); anything else is worth a traceback.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Base:
    """A threaded HTTP/1.1 server bound to a free loopback port."""

    def __init__(self):
        self.lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _any(self):
                try:
                    owner.handle(self)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _any

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    @staticmethod
    def send(h, status, body=b"", headers=None, head=False):
        h.send_response(status)
        hdrs = dict(headers or {})
        hdrs.setdefault("Content-Length", str(len(body)))
        for k, v in hdrs.items():
            if isinstance(v, list):
                for one in v:
                    h.send_header(k, one)
            else:
                h.send_header(k, v)
        h.end_headers()
        if body and not head:
            h.wfile.write(body)

    @staticmethod
    def read_body(h):
        n = int(h.headers.get("Content-Length") or 0)
        return h.rfile.read(n) if n else b""


def _errors(code, message):
    return json.dumps({"errors": [{"code": code, "message": message}]}).encode()


class Tokens:
    """Bearer tokens with scopes and lifetimes; the token endpoint's logic."""

    def __init__(self, users=None, anonymous=True, ttl=300, real_ttl=None):
        self.users = dict(users or {})
        self.anonymous = anonymous
        self.ttl = ttl              # what the answer announces (expires_in)
        self.real_ttl = real_ttl    # what the server enforces (None: ttl)
        self.tokens = {}
        self.lock = threading.Lock()
        self.requests = []          # (user or None, [scopes]) per token request

    def issue(self, h):
        q = urllib.parse.urlparse(h.path).query
        params = urllib.parse.parse_qs(q)
        scopes = params.get("scope", [])
        user = None
        auth = h.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
            except Exception:
                u, p = None, None
            if u not in self.users or self.users[u] != p:
                _Base.send(h, 401, _errors("UNAUTHORIZED", "bad credentials"),
                           {"WWW-Authenticate": 'Basic realm="token"'})
                with self.lock:
                    self.requests.append(("!" + str(u), scopes))
                return
            user = u
        elif not self.anonymous:
            _Base.send(h, 401, _errors("UNAUTHORIZED", "credentials required"),
                       {"WWW-Authenticate": 'Basic realm="token"'})
            with self.lock:
                self.requests.append((None, scopes))
            return
        granted = set()
        for s in scopes:
            m = re.fullmatch(r"repository:([^:]+):([a-z,*]+)", s)
            if m:
                for a in m.group(2).split(","):
                    granted.add((m.group(1), a))
        tok = "tok-" + secrets.token_hex(12)
        real = self.ttl if self.real_ttl is None else self.real_ttl
        with self.lock:
            self.tokens[tok] = (time.time() + real, granted, user)
            self.requests.append((user, scopes))
        body = json.dumps({"token": tok, "access_token": tok, "expires_in": self.ttl,
                           "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ")}).encode()
        _Base.send(h, 200, body, {"Content-Type": "application/json"})

    def check(self, h, repo, action):
        """True if the request carries a valid token allowing action on repo
        (repo None: any valid token)."""
        auth = h.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return False
        with self.lock:
            t = self.tokens.get(auth[7:])
        if not t or t[0] < time.time():
            return False
        return repo is None or (repo, action) in t[1]


_route = re.compile(r"^/v2/(.+?)/(manifests|blobs|tags)/(.*)$")


class FakeRegistry(_Base):
    """See the module docstring. Knobs are plain attributes, safe to change
    between requests."""

    def __init__(self, auth=None, users=None, anonymous=True, token_ttl=300, token_real_ttl=None,
                 cdn=False):
        super().__init__()
        self.auth = auth                  # None, "basic", "bearer"
        self.tokens = Tokens(users, anonymous, token_ttl, token_real_ttl)
        self.basic_users = dict(users or {})
        self.manifests = {}               # (repo, ref) -> (media_type, bytes)
        self.blobs = {}                   # digest -> Blob
        self.tags = {}                    # repo -> [tags]
        self.page_mode = "link"           # "link", "last", "all"
        self.ratelimit = None             # (limit, remaining, window, source) on manifest answers
        self.x_ratelimit = False          # send the x-ratelimit-* names instead
        self.limited = None               # (retry_after or None): manifest GETs answer 429
        self.fail_next = 0                # answer that many requests 503
        self.fail_status = 503
        self.fail_match = None            # regex on "METHOD path", None: all
        self.blob_fault = None            # None, "corrupt", "truncate"
        self.manifest_fault = None        # None, "wrong_digest_header"
        self.counts = {"requests": 0, "manifest_get": 0, "manifest_head": 0, "blob_get": 0,
                       "401": 0, "429": 0, "5xx": 0, "tag_pages": 0}
        self.log = []                     # (method, path, had Authorization)
        self.cdn = FakeCDN(self) if cdn else None

    def start(self):
        if self.cdn:
            self.cdn.start()
        return super().start()

    def stop(self):
        if self.cdn:
            self.cdn.stop()
        super().stop()

    # content
    def add_blob(self, blob):
        self.blobs[blob.digest] = blob
        return blob

    def add_manifest(self, repo, tag, media_type, body):
        d = "sha256:" + hashlib.sha256(body).hexdigest()
        self.manifests[(repo, tag)] = (media_type, body)
        self.manifests[(repo, d)] = (media_type, body)
        if tag not in self.tags.setdefault(repo, []):
            self.tags[repo].append(tag)
        return d

    def count(self, key):
        with self.lock:
            self.counts[key] += 1

    # auth
    def _challenge(self, h, repo, action):
        self.count("401")
        if self.auth == "basic":
            hdr = 'Basic realm="fake registry"'
        else:
            hdr = 'Bearer realm="%s/token",service="fake.registry"' % self.url
            if repo:
                hdr += ',scope="repository:%s:%s"' % (repo, action)
        self.send(h, 401, _errors("UNAUTHORIZED", "authentication required"),
                  {"WWW-Authenticate": hdr, "Content-Type": "application/json"},
                  head=h.command == "HEAD")

    def _authorized(self, h, repo, action):
        if self.auth is None:
            return True
        if self.auth == "basic":
            a = h.headers.get("Authorization", "")
            if a.startswith("Basic "):
                u, _, p = base64.b64decode(a[6:]).decode(errors="replace").partition(":")
                return self.basic_users.get(u) == p
            return False
        return self.tokens.check(h, repo, action)

    def handle(self, h):
        path = urllib.parse.urlparse(h.path).path
        with self.lock:
            self.counts["requests"] += 1
            self.log.append((h.command, h.path, "Authorization" in h.headers))
        if path == "/token" and self.auth == "bearer":
            self.tokens.issue(h)
            return
        key = "%s %s" % (h.command, path)
        if self.fail_next > 0 and (self.fail_match is None or re.search(self.fail_match, key)):
            with self.lock:
                self.fail_next -= 1
                self.counts["5xx"] += 1
            self.send(h, self.fail_status, b"upstream trouble", {"Content-Type": "text/plain"},
                      head=h.command == "HEAD")
            return
        if path == "/v2/" or path == "/v2":
            if not self._authorized(h, None, None):
                return self._challenge(h, None, None)
            return self.send(h, 200, b"{}", {"Content-Type": "application/json"},
                             head=h.command == "HEAD")
        m = _route.match(path)
        if not m:
            return self.send(h, 404, _errors("NAME_UNKNOWN", "no route"), head=h.command == "HEAD")
        repo, kind, ref = m.groups()
        if not self._authorized(h, repo, "pull"):
            return self._challenge(h, repo, "pull")
        if kind == "manifests":
            return self._manifest(h, repo, ref)
        if kind == "blobs":
            return self._blob(h, repo, ref)
        return self._tags(h, repo)

    def _rl_headers(self, h):
        hdrs = {}
        if self.ratelimit:
            limit, remaining, window, source = self.ratelimit
            p = "x-ratelimit-" if self.x_ratelimit else "ratelimit-"
            hdrs[p + "limit"] = "%d;w=%d" % (limit, window)
            hdrs[p + "remaining"] = "%d;w=%d" % (remaining, window)
            hdrs["docker-ratelimit-source"] = source
        return hdrs

    def _manifest(self, h, repo, ref):
        head = h.command == "HEAD"
        self.count("manifest_head" if head else "manifest_get")
        hdrs = self._rl_headers(h)
        if self.limited is not None and not head:
            self.count("429")
            hdrs["Content-Type"] = "application/json"
            if self.limited:
                hdrs["Retry-After"] = str(self.limited)
            return self.send(h, 429, _errors(
                "TOOMANYREQUESTS", "You have reached your unauthenticated pull rate limit. "
                "https://www.docker.com/increase-rate-limit"), hdrs)
        if (repo, ref) not in self.manifests:
            hdrs["Content-Type"] = "application/json"
            return self.send(h, 404, _errors("MANIFEST_UNKNOWN", "manifest unknown"), hdrs, head)
        mt, body = self.manifests[(repo, ref)]
        d = "sha256:" + hashlib.sha256(body).hexdigest()
        if self.manifest_fault == "wrong_digest_header":
            d = "sha256:" + "0" * 64
        elif self.manifest_fault == "wrong_bytes":
            body = body + b" "
        hdrs.update({"Content-Type": mt, "Docker-Content-Digest": d})
        self.send(h, 200, body, hdrs, head)

    def _blob(self, h, repo, digest):
        head = h.command == "HEAD"
        blob = self.blobs.get(digest)
        if blob is None:
            return self.send(h, 404, _errors("BLOB_UNKNOWN", "blob unknown"),
                             {"Content-Type": "application/json"}, head)
        if head:
            return self.send(h, 200, b"", {"Content-Length": str(blob.size),
                                           "Docker-Content-Digest": digest}, True)
        self.count("blob_get")
        if self.cdn:
            loc = "%s/blobs/%s/data?verify=sig" % (self.cdn.url, digest)
            return self.send(h, 307, b"", {"Location": loc})
        stream_blob(self, h, blob, self.blob_fault)

    def _tags(self, h, repo):
        self.count("tag_pages")
        tags = sorted(self.tags.get(repo, []))
        q = urllib.parse.parse_qs(urllib.parse.urlparse(h.path).query)
        n = int(q.get("n", ["0"])[0] or 0)
        last = q.get("last", [None])[0]
        if last is not None:
            tags = [t for t in tags if t > last]
        hdrs = {"Content-Type": "application/json"}
        if self.page_mode != "all" and n > 0 and len(tags) > n:
            tags = tags[:n]
            if self.page_mode == "link":
                hdrs["Link"] = '</v2/%s/tags/list?n=%d&last=%s>; rel="next"' % (repo, n, tags[-1])
        body = json.dumps({"name": repo, "tags": tags}).encode()
        self.send(h, 200, body, hdrs)


def stream_blob(server, h, blob, fault):
    """Send a blob in chunks: faithfully, with one byte flipped, or cut off
    halfway (the connection closes with bytes still owed)."""
    h.send_response(200)
    h.send_header("Content-Length", str(blob.size))
    h.send_header("Content-Type", "application/octet-stream")
    h.send_header("Docker-Content-Digest", blob.digest)
    h.end_headers()
    sent = 0
    for c in blob.chunks():
        if fault == "truncate" and sent + len(c) > blob.size // 2:
            h.wfile.write(c[:blob.size // 2 - sent])
            h.wfile.flush()
            h.close_connection = True
            return
        if fault == "corrupt" and sent <= blob.size // 2 < sent + len(c):
            i = blob.size // 2 - sent
            c = c[:i] + bytes([c[i] ^ 0xff]) + c[i + 1:]
        h.wfile.write(c)
        sent += len(c)


class FakeCDN(_Base):
    """Serves the registry's blobs at /blobs/<digest>/data on its own port
    (another origin) and records every Authorization header it receives."""

    def __init__(self, registry):
        super().__init__()
        self.registry = registry
        self.auth_seen = []
        self.gets = 0

    def handle(self, h):
        with self.lock:
            self.gets += 1
            if "Authorization" in h.headers:
                self.auth_seen.append(h.headers["Authorization"])
        m = re.match(r"^/blobs/(sha256:[0-9a-f]{64})/data", h.path)
        blob = self.registry.blobs.get(m.group(1)) if m else None
        if not blob:
            return self.send(h, 404, b"no such blob")
        stream_blob(self, h, blob, self.registry.blob_fault)


class Challenger(_Base):
    """A host that wants credentials: every request is recorded in `requests` as (method,
    path, Authorization header or None) and answered 401 with a Bearer challenge whose realm
    is its own /token, which hands out a token to anyone. Security tests point hubsync at
    it (as a job's registry, as a CDN) and check that it got no credentials."""

    def __init__(self):
        super().__init__()
        self.requests = []

    def handle(self, h):
        with self.lock:
            self.requests.append((h.command, h.path, h.headers.get("Authorization")))
        head = h.command == "HEAD"
        if h.path.startswith("/token"):
            return self.send(h, 200, b'{"token": "stolen", "expires_in": 300}',
                             {"Content-Type": "application/json"}, head=head)
        self.send(h, 401, b"", {"WWW-Authenticate": 'Bearer realm="%s/token",service="elsewhere"'
                                % self.url}, head=head)


class AuthProxy(_Base):
    """Bearer auth (token endpoint at /token, users by Basic) in front of a
    real registry; request bodies stream through in chunks."""

    def __init__(self, backend_port, users=None, anonymous=False):
        super().__init__()
        self.backend_port = backend_port
        self.tokens = Tokens(users, anonymous)
        self.counts = {"401": 0}

    def handle(self, h):
        path = urllib.parse.urlparse(h.path).path
        if path == "/token":
            return self.tokens.issue(h)
        m = re.match(r"^/v2/(.+?)/(manifests|blobs|tags)/", path)
        repo = m.group(1) if m else None
        push = h.command in ("PUT", "POST", "PATCH", "DELETE")
        action = "push" if push else "pull"
        ok = self.tokens.check(h, repo, action)
        # A mount also needs pull on the source repository.
        q = urllib.parse.parse_qs(urllib.parse.urlparse(h.path).query)
        if ok and "from" in q:
            ok = self.tokens.check(h, q["from"][0], "pull")
        if not ok:
            with self.lock:
                self.counts["401"] += 1
            hdr = 'Bearer realm="%s/token",service="proxy"' % self.url
            if repo:
                hdr += ',scope="repository:%s:%s"' % (repo, "pull,push" if push else "pull")
            h.close_connection = True  # an unread request body may follow
            return self.send(h, 401, _errors("UNAUTHORIZED", "authentication required"),
                             {"WWW-Authenticate": hdr, "Content-Type": "application/json",
                              "Connection": "close"}, head=h.command == "HEAD")
        self._forward(h)

    def _forward(self, h):
        conn = http.client.HTTPConnection("127.0.0.1", self.backend_port, timeout=60)
        hdrs = {k: v for k, v in h.headers.items()
                if k.lower() not in ("authorization", "host", "connection", "expect")}
        hdrs["Host"] = "127.0.0.1:%d" % self.port
        n = int(h.headers.get("Content-Length") or 0)

        def body():
            left = n
            while left > 0:
                c = h.rfile.read(min(left, CHUNK))
                if not c:
                    return
                left -= len(c)
                yield c

        try:
            conn.request(h.command, h.path, body=body() if n else None, headers=hdrs)
            r = conn.getresponse()
        except (OSError, http.client.HTTPException):
            h.close_connection = True
            conn.close()
            return
        h.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("connection", "transfer-encoding"):
                h.send_header(k, v)
        data = r.read()
        if "Content-Length" not in r.headers:
            h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)
        conn.close()
