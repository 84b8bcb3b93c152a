#!/usr/bin/env python3
"""Docker Hub stand-in: a registry front that behaves like registry-1.docker.io on the wire.

It sits in front of a real docker-registry (the "backend", which holds the content; or, in a
test's own process, the in-memory backend of memory.py) and adds what Docker Hub adds: the
Bearer token flow (anonymous and user tokens, scopes, expiry; HTTP Basic instead on request),
pull accounting (every manifest GET counts, HEAD is free, a quota per source and window, the
ratelimit-* headers, Docker's 429 body), blob GETs redirected to a "CDN" listener on another
host, pushes with push scopes when asked, and switchable shaping and faults (latency,
bandwidth, 5xx, resets, truncated or corrupted blobs, 429 bursts, lying headers) that are
deterministic from a seed. A control API under /_standin/ exposes
counters, a request log and run-time configuration. See README.md next to this file.

Python 3 standard library only.
"""
import argparse
import base64
import collections
import hashlib
import hmac
import http.client
import io
import json
import os
import re
import signal
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

try:
    from .storage import Storage
    from .wire import (DOCKER_LIST, DOCKER_MANIFEST, DOCKER_SCHEMA1, NAME_RE, OCI_INDEX,
                       OCI_MANIFEST, KeepAlive)
except ImportError:  # run as a script
    from storage import Storage
    from wire import (DOCKER_LIST, DOCKER_MANIFEST, DOCKER_SCHEMA1, NAME_RE, OCI_INDEX,
                      OCI_MANIFEST, KeepAlive)

SERVICE = "registry.docker.io"
CHUNK = 256 * 1024
CDN_URL_TTL = 1200
MANIFEST_CACHE_BYTES = 64 << 20
DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
MANIFEST_RE = re.compile(r"^/v2/(.+)/manifests/([^/]+)$")
BLOB_RE = re.compile(r"^/v2/(.+)/blobs/([^/]+)$")
TAGS_RE = re.compile(r"^/v2/(.+)/tags/list$")
REFERRERS_RE = re.compile(r"^/v2/(.+)/referrers/([^/]+)$")
WRITE_RE = re.compile(r"^/v2/(.+?)/(?:manifests|blobs)/")
CDN_RE = re.compile(r"^/registry-v2/docker/registry/v2/blobs/sha256/([a-f0-9]{2})/"
                    r"([a-f0-9]{64})/data$")
VERIFY_RE = re.compile(r"verify=[^&\s\"]*")
ANON_429 = ("You have reached your unauthenticated pull rate limit. "
            "https://www.docker.com/increase-rate-limit")
USER_429 = ("You have reached your pull rate limit. You may increase the limit by "
            "authenticating and upgrading: https://www.docker.com/increase-rate-limit")



def boolean(value):
    """A config switch: true/false, 1/0, yes/no."""
    if value in (True, "true", "1", "yes"):
        return True
    if value in (False, "false", "0", "no"):
        return False
    raise ValueError("not a boolean: %r" % (value,))


# Run-time configuration: (name, type, default, help). Each is a command-line flag
# (--name-with-dashes) and a key of POST /_standin/config.
CONFIG = [
    ("limit", int, 100, "anonymous pulls (manifest GETs) per window and client IP"),
    ("user_limit", int, 200, "pulls per window for users given without their own limit"),
    ("window", float, 21600.0, "rate-limit window in seconds (the w= of the headers)"),
    ("token_ttl", float, 300.0, "token lifetime in seconds (expires_in)"),
    ("token_expires_in", float, 0.0, "expires_in the token answer announces (0: token_ttl; "
                                     "more plays a server that ends tokens before it said)"),
    ("auth", str, "bearer", 'how clients authenticate: "bearer" (the token flow) or "basic" '
                            "(HTTP Basic with a --user on every request, no token)"),
    ("anonymous", boolean, True, "the token endpoint hands out anonymous tokens (false: "
                                 "credentials required)"),
    ("push", boolean, False, "user tokens may grant push and writes go to the backend (Hub "
                             "for its users; a target with token auth); false: read-only"),
    ("retry_after", int, 0, "Retry-After of the quota 429s (0: none, as Docker Hub)"),
    ("ratelimit_prefix", str, "", 'prefix of the ratelimit-* header names ("" or "x-")'),
    ("seed", int, 0, "seed of every random fault decision"),
    ("latency_ms", float, 0.0, "added latency per request (registry, token and CDN)"),
    ("jitter_ms", float, 0.0, "extra latency, uniform in [0, jitter_ms)"),
    ("spike_rate", float, 0.0, "fraction of requests that get spike_ms more latency"),
    ("spike_ms", float, 0.0, "latency of a spike"),
    ("bandwidth", int, 0, "bytes per second per blob response (0: unlimited)"),
    ("error_rate", float, 0.0, "fraction of manifest, blob and CDN requests answered 5xx"),
    ("error_status", int, 503, "status of those answers"),
    ("error_next", int, 0, "the next N GET and HEAD requests under /v2/ answered error_status "
                           "before anything else, auth included (an outage in front of the "
                           "registry; counts down)"),
    ("reset_rate", float, 0.0, "fraction of manifest and blob GETs whose connection is "
                               "reset half-way through the body"),
    ("truncate_rate", float, 0.0, "fraction of CDN blob bodies cut short (then closed)"),
    ("corrupt_rate", float, 0.0, "fraction of CDN blob bodies with one byte flipped"),
    ("burst_rate", float, 0.0, "chance that a /v2/ request starts a burst of abuse 429s"),
    ("burst_len", int, 5, "requests answered 429 in one burst"),
    ("burst_retry_after", int, 60, "Retry-After of the abuse 429s (0: none sent)"),
    ("manifest_content_type", str, "", "Content-Type of every manifest answer instead of the "
                                       "real one (a lying registry or proxy; \"\": the real one)"),
    ("redirect_loop_rate", float, 0.0, "fraction of blob GETs redirected back to themselves, "
                                       "again on every hop (a redirect loop)"),
    ("manifest_fault", str, "", '"digest_header": manifest answers name another digest; '
                                '"extra_byte": one byte more in the body than the digest '
                                'names; "": none'),
    ("cdn_challenge", boolean, False, "the CDN answers 401 with a Bearer challenge for a realm "
                                      "of its own (a CDN that wants credentials)"),
    ("tags_paging", str, "link", 'tag lists: "link" (n honoured, a Link header to the next '
                                 'page, as Docker Hub), "last" (n honoured, no Link), "all" '
                                 "(n ignored, as docker-registry 2.8)"),
    ("referrers_api", boolean, True, "GET /v2/<name>/referrers/<digest> (OCI 1.1) answers the "
                                     "repository's tagged manifests whose subject is digest, "
                                     "a counted pull; false: 404, as docker-registry 2.8"),
    ("referrers_page", int, 0, "descriptors per referrers answer, with a Link to the next "
                               "page (0: all in one)"),
]
CHOICES = {"ratelimit_prefix": ("", "x-"), "auth": ("bearer", "basic"),
           "manifest_fault": ("", "digest_header", "extra_byte"),
           "tags_paging": ("link", "last", "all")}
CONFIG_TYPES = {name: typ for name, typ, _, _ in CONFIG}
FAULTS = ("error", "reset", "truncate", "corrupt", "burst", "content_type", "redirect_loop",
          "digest_header", "extra_byte", "cdn_challenge")
ALL_MANIFESTS = {"Accept": ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST,
                                      DOCKER_SCHEMA1, "*/*"])}


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json(obj):
    return json.dumps(obj, sort_keys=True).encode()


def _errors(code, message, detail=None):
    return _json({"errors": [{"code": code, "message": message, "detail": detail}]})


def parse_user(spec):
    """NAME:PASSWORD[:LIMIT] -> (name, password, limit); limit None = default,
    -1 = unlimited (no ratelimit headers, like a paid account)."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise ValueError("--user wants NAME:PASSWORD[:LIMIT], got %d field(s)" % len(parts))
    limit = None
    if len(parts) == 3:
        if parts[2] == "unlimited":
            limit = -1
        elif parts[2].isdigit():
            limit = int(parts[2])
        else:
            raise ValueError("--user %s: LIMIT must be a number or 'unlimited'" % parts[0])
    return parts[0], parts[1], limit


def checked_config(base, changes):
    """base updated with changes, each converted to its type and checked; raises
    ValueError naming the bad key or value."""
    new = dict(base)
    for key, value in changes.items():
        typ = CONFIG_TYPES.get(key)
        if typ is None:
            raise ValueError("unknown config key %r" % key)
        try:
            new[key] = typ(value)
        except (TypeError, ValueError):
            raise ValueError("config %s: %r is not a %s" % (key, value, typ.__name__))
        if key.endswith("_rate") and not 0.0 <= new[key] <= 1.0:
            raise ValueError("config %s: %r is not in [0, 1]" % (key, value))
        if typ is not str and new[key] < 0:
            raise ValueError("config %s: %r is negative" % (key, value))
    for key, allowed in CHOICES.items():
        if new[key] not in allowed:
            raise ValueError("config %s must be one of %s"
                             % (key, ", ".join(json.dumps(a) for a in allowed)))
    return new


class BadRequest(Exception):
    """A request the stand-in cannot parse; answered 400 with the message."""


class Hub:
    """Shared state of both listeners: configuration, tokens, quotas, counters, request log."""

    def __init__(self, backend, config, users, log_size):
        """backend: a registry's URL http://HOST:PORT, or an object with KeepAlive's
        request() and drop() and a url (memory.Memory)."""
        if isinstance(backend, str):
            u = urlsplit(backend)
            if u.scheme != "http" or not u.hostname or not u.port:
                raise ValueError("--backend must be http://HOST:PORT, got %r" % backend)
            self.backend = KeepAlive(u.hostname, u.port)
            self.backend_url = backend
        else:
            self.backend = backend
            self.backend_url = backend.url
        self.config = checked_config(default_config(), config)
        self.users = {name: (password, limit) for name, password, limit in users}
        self.secret = os.urandom(32)
        self.lock = threading.Lock()
        self.in_flight = 0  # registry and token requests being answered (not reset)
        self.sources = {}
        self.log = collections.deque(maxlen=log_size)
        self.manifest_cache = {}
        self.manifest_cache_bytes = 0
        self.realm = None
        self.cdn_base = None
        self.reset_counters()

    # -- configuration -------------------------------------------------------------------
    def set_config(self, changes):
        """Apply a dict of changes; raises ValueError naming a bad key or value."""
        new = checked_config(self.config, changes)
        with self.lock:
            if new["seed"] != self.config["seed"]:
                self.rolls = collections.Counter()
            self.config = new
        return new

    def cfg(self, key):
        return self.config[key]

    # -- counters --------------------------------------------------------------------
    def reset_counters(self):
        with self.lock:
            self.counters = {
                "requests": 0, "manifest_get": 0, "manifest_head": 0,
                "manifest_get_by_repo": {}, "manifest_get_by_ref": {},
                "manifest_head_by_ref": {}, "blob_get": 0, "blob_head": 0, "cdn_get": 0,
                "blob_bytes": 0, "denied_429": 0, "burst_429": 0, "token_requests": 0,
                "token_denied": 0, "unauthorized_401": 0, "tags_list": 0, "referrers_get": 0,
                "auth_leaks": 0,
                "auth_leak_details": [], "faults": {f: 0 for f in FAULTS},
                "in_flight_peak": self.in_flight,
            }
            self.rolls = collections.Counter()
            self.burst_left = 0
            self.seq = 0
            self.log.clear()

    def count(self, key, n=1):
        with self.lock:
            self.counters[key] += n

    def enter(self):
        """A registry or token request begins: the peak of those answered at once is what
        a client's connection cap allows (HTTP/1.1: one request per connection)."""
        with self.lock:
            self.in_flight += 1
            if self.in_flight > self.counters["in_flight_peak"]:
                self.counters["in_flight_peak"] = self.in_flight

    def leave(self):
        with self.lock:
            self.in_flight -= 1

    def count_in(self, key, sub, n=1):
        with self.lock:
            d = self.counters[key]
            d[sub] = d.get(sub, 0) + n

    def snapshot(self):
        with self.lock:
            c = json.loads(json.dumps(self.counters))
            now = time.monotonic()
            c["sources"] = {}
            for src, (start, used, limit) in self.sources.items():
                if now - start >= self.config["window"]:
                    used = 0
                c["sources"][src] = {"used": used, "limit": limit,
                                     "remaining": None if limit < 0 else max(limit - used, 0)}
            return c

    def record(self, entry):
        with self.lock:
            self.seq += 1
            entry["seq"] = self.seq
            self.log.append(entry)

    def requests_since(self, since):
        with self.lock:
            return [e for e in self.log if e["seq"] > since]

    # -- deterministic randomness ---------------------------------------------------------
    def roll(self, kind):
        """The n-th decision of a kind is a fixed number in [0, 1) for a given seed, so a
        run sees the same sequence of faults whatever the timing."""
        with self.lock:
            n = self.rolls[kind]
            self.rolls[kind] = n + 1
            seed = self.config["seed"]
        h = hashlib.sha256(("%d:%s:%d" % (seed, kind, n)).encode()).digest()
        return struct.unpack(">Q", h[:8])[0] / 2.0 ** 64

    def chance(self, kind, rate_key):
        rate = self.config[rate_key]
        return rate > 0 and self.roll(kind) < rate

    def outage(self):
        """True for each of the next error_next requests (counting it down)."""
        with self.lock:
            if self.config["error_next"] > 0:
                self.config["error_next"] -= 1
                return True
        return False

    def delay(self):
        c = self.config
        ms = c["latency_ms"]
        if c["jitter_ms"] > 0:
            ms += self.roll("jitter") * c["jitter_ms"]
        if self.chance("spike", "spike_rate"):
            ms += c["spike_ms"]
        if ms > 0:
            time.sleep(ms / 1000.0)

    def burst(self):
        """True when this request falls in a burst of abuse-limit 429s."""
        with self.lock:
            if self.burst_left > 0:
                self.burst_left -= 1
                return True
        if self.chance("burst", "burst_rate"):
            with self.lock:
                self.burst_left = max(self.config["burst_len"] - 1, 0)
            return True
        return False

    # -- tokens -----------------------------------------------------------------------
    def issue_token(self, user, access):
        """A signed token for user ("" anonymous) granting access ({repository: set of
        actions}); returns (token, the expires_in to announce, now)."""
        now = time.time()
        ttl = self.config["token_ttl"]
        header = {"alg": "HS256", "typ": "JWT"}
        claims = {"iss": "standin", "aud": SERVICE, "sub": user or "", "iat": now,
                  "exp": now + ttl, "jti": _b64(os.urandom(12)),
                  "access": [{"type": "repository", "name": r, "actions": sorted(access[r])}
                             for r in sorted(access)]}
        signing = _b64(_json(header)) + "." + _b64(_json(claims))
        sig = hmac.new(self.secret, signing.encode(), hashlib.sha256).digest()
        return signing + "." + _b64(sig), self.config["token_expires_in"] or ttl, now

    def verify_token(self, token):
        """Claims of a valid, unexpired token we issued, else None."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        signing = parts[0] + "." + parts[1]
        want = hmac.new(self.secret, signing.encode(), hashlib.sha256).digest()
        try:
            if not hmac.compare_digest(_unb64(parts[2]), want):
                return None
            claims = json.loads(_unb64(parts[1]))
        except (ValueError, TypeError):
            return None
        if claims.get("exp", 0) <= time.time():
            return None
        claims["allowed"] = {(a["name"], act) for a in claims.get("access", [])
                             for act in a["actions"]}
        return claims

    def check_user(self, name, password):
        known = self.users.get(name)
        return known is not None and hmac.compare_digest(known[0].encode(), password.encode())

    # -- quotas -----------------------------------------------------------------------
    def limit_for(self, user):
        if not user:
            return self.config["limit"]
        own = self.users.get(user, (None, None))[1]
        return self.config["user_limit"] if own is None else own

    def quota(self, source, limit, take):
        """(allowed, remaining) for a source; take=True spends one pull if any is left.
        limit < 0 means unlimited: always allowed, remaining None."""
        with self.lock:
            now = time.monotonic()
            start, used, _ = self.sources.get(source, (now, 0, limit))
            if now - start >= self.config["window"]:
                start, used = now, 0
            allowed = limit < 0 or used < limit
            if take and allowed:
                used += 1
            self.sources[source] = (start, used, limit)
            return allowed, None if limit < 0 else max(limit - used, 0)

    def reset_window(self, source=None, used=0):
        """Start a new window now for one source (with `used` pulls already spent in it),
        or for all."""
        if used and source is None:
            raise ValueError("reset-window: used needs a source")
        with self.lock:
            if source is None:
                self.sources.clear()
            elif used:
                self.sources[source] = (time.monotonic(), used, self.limit_for(
                    source if source in self.users else ""))
            else:
                self.sources.pop(source, None)


class Handler(BaseHTTPRequestHandler):
    """Common parts of both listeners."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 300

    def version_string(self):
        return "standin"

    @property
    def hub(self):
        return self.server.hub

    def log_message(self, fmt, *args):
        if self.server.verbose:
            # A signed CDN URL works for anyone who has it: keep it out of logs.
            line = VERIFY_RE.sub("verify=-", fmt % args)
            sys.stderr.write("%s %s\n" % (self.address_string(), line))

    def send_response(self, code, message=None):
        self._status = code
        super().send_response(code, message)

    def reply(self, status, body=b"", headers=(), ctype="application/json"):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
            self._sent += len(body)

    def read_body(self):
        text = self.headers.get("Content-Length") or "0"
        if not text.isdigit():
            raise BadRequest("bad Content-Length %r" % text[:40])
        n = int(text)
        return self.rfile.read(n) if n > 0 else b""

    def guarded(self, listener, handle):
        """Run handle(): bad input becomes a 400, a failing backend a 502 (or a closed
        connection once the answer has begun), never a dead thread; then log the request
        (listener None: the control API, not logged)."""
        try:
            handle()
        except BadRequest as e:
            self.close_connection = True
            if self._status is None:
                self.reply(400, _errors("BAD_REQUEST", str(e)))
        except (OSError, http.client.HTTPException) as e:
            self.close_connection = True
            if self._status is None:
                try:
                    self.reply(502, _errors("UNAVAILABLE", "stand-in backend: %s" % e))
                except OSError:
                    pass
        finally:
            if listener is not None:
                self.log_request_entry(listener)

    def reset_connection(self):
        """Close with RST (SO_LINGER 0), like a connection dropped mid-response."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.connection.close()

    def stream(self, src, length, blob, partial=None):
        """Copy a body (a backend response, or bytes in a BytesIO) to the client in
        chunks, applying the reset fault and, for blobs, the bandwidth cap, truncation and
        corruption. partial() is called when src was not read to its end."""
        hub = self.hub
        cut = None
        fault = None
        if length > 0 and hub.chance("reset", "reset_rate"):
            cut, fault = length // 2, "reset"
        elif blob and length > 0 and hub.chance("truncate", "truncate_rate"):
            cut, fault = length // 2, "truncate"
        flip = None
        if blob and length > 0 and hub.chance("corrupt", "corrupt_rate"):
            flip = int(hub.roll("corrupt-at") * length)
            fault = fault or "corrupt"
        if fault:
            hub.count_in("faults", fault)
            self._fault = fault
        bandwidth = hub.cfg("bandwidth") if blob else 0
        chunk = CHUNK if bandwidth <= 0 else max(1024, min(CHUNK, bandwidth // 20))
        sent = 0
        t0 = time.monotonic()
        try:
            while cut is None or sent < cut:
                want = chunk if cut is None else min(chunk, cut - sent)
                data = src.read(want)
                if not data:
                    break
                if flip is not None and sent <= flip < sent + len(data):
                    i = flip - sent
                    data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
                # Counted before the write: a client that has every byte may read the
                # counters before this thread runs again.
                if blob:
                    hub.count("blob_bytes", len(data))
                self.wfile.write(data)
                sent += len(data)
                if bandwidth > 0:
                    ahead = sent / bandwidth - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
        finally:
            self._sent += sent
            if partial is not None and (cut is not None or sent < length):
                partial()
        if fault == "reset":
            self.reset_connection()
        elif fault == "truncate":
            self.close_connection = True

    def handle_one_request(self):
        # Fresh per-request state for the request log.
        self._status = None
        self._sent = 0
        self._fault = None
        self._counted = False
        self._source = None
        self._user = None
        self._t0 = time.time()
        super().handle_one_request()

    def log_request_entry(self, listener):
        if self._status is None:
            return
        u = urlsplit(self.path)
        query = {k: v for k, v in parse_qs(u.query).items() if k != "verify"}
        entry = {"t": self._t0, "listener": listener, "method": self.command, "path": u.path,
                 "status": self._status, "bytes": self._sent, "counted": self._counted,
                 "source": self._source, "user": self._user, "fault": self._fault,
                 "ms": round((time.time() - self._t0) * 1000.0, 2)}
        if query:
            entry["query"] = query
        self.hub.record(entry)


class RegistryHandler(Handler):
    """registry-1.docker.io + auth.docker.io/token + the /_standin/ control API."""

    def do_GET(self):
        self.dispatch()

    def do_HEAD(self):
        self.dispatch()

    def do_POST(self):
        self.dispatch()

    def do_PUT(self):
        self.dispatch()

    def do_DELETE(self):
        self.dispatch()

    def do_PATCH(self):
        self.dispatch()

    def dispatch(self):
        u = urlsplit(self.path)
        if u.path.startswith("/_standin/"):
            self.guarded(None, lambda: self.control(u.path[len("/_standin/"):],
                                                    parse_qs(u.query)))
        else:
            self.hub.enter()
            try:
                self.guarded("registry", lambda: self.route(u.path, u.query))
            finally:
                self.hub.leave()

    def route(self, path, query):
        hub = self.hub
        hub.count("requests")
        write = self.command not in ("GET", "HEAD")
        forward = write and hub.cfg("push") and path.startswith("/v2/")
        if not forward:  # a forwarded body streams through to the backend
            self.read_body()
        hub.delay()
        if path == "/token":
            self.token(parse_qs(query))
        elif not path.startswith("/v2"):
            self.reply(404, _errors("NOT_FOUND", "not found"))
        elif forward:
            self.write(path, query)
        elif write:
            self.reply(405, _errors("UNSUPPORTED", "the stand-in is read-only"))
        elif hub.outage():
            self.error_answer()
        elif hub.burst():
            hub.count("burst_429")
            hub.count_in("faults", "burst")
            self._fault = "burst"
            after = hub.cfg("burst_retry_after")
            self.reply(429, b"Too Many Requests (HAP429).\n", ctype="text/plain",
                       headers=[("Retry-After", str(after))] if after else [])
        elif path in ("/v2", "/v2/"):
            if self.auth(None) is not None:
                self.reply(200, b"{}", headers=self.api_headers())
        else:
            self.v2(path, query)

    def api_headers(self):
        return [("Docker-Distribution-Api-Version", "registry/2.0")]

    def error_answer(self):
        self.hub.count_in("faults", "error")
        self._fault = "error"
        self.reply(self.hub.cfg("error_status"), _errors("UNAVAILABLE", "service unavailable"),
                   headers=self.api_headers())

    # -- token endpoint ----------------------------------------------------------------
    def token(self, query):
        hub = self.hub
        hub.count("token_requests")
        user = ""
        auth = self.headers.get("Authorization", "")
        if auth:
            name = self.basic_user(auth)
            if name is None:
                hub.count("token_denied")
                self.reply(401, _json({"details": "incorrect username or password"}))
                return
            user = name
        elif not hub.cfg("anonymous"):
            hub.count("token_denied")
            self.reply(401, _json({"details": "authentication required"}))
            return
        # Pull for anyone; push only for a user, and only when the stand-in takes writes.
        grantable = {"pull", "push"} if user and hub.cfg("push") else {"pull"}
        access = {}
        for scope in query.get("scope", []):
            for item in scope.split(" "):
                kind, _, rest = item.partition(":")
                name, _, actions = rest.rpartition(":")
                if kind not in ("repository", "repository(plugin)") or not NAME_RE.match(name):
                    hub.count("token_denied")
                    self.reply(400, _json({"details": "invalid scope %r" % item}))
                    return
                granted = grantable & set(actions.split(","))
                if granted:
                    access.setdefault(name, set()).update(granted)
        token, ttl, now = hub.issue_token(user, access)
        issued = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + (
            ".%06dZ" % int((now % 1) * 1e6))
        self._source = user or self.client_address[0]
        self._user = user or None
        self.reply(200, _json({"token": token, "access_token": token,
                               "expires_in": int(ttl) if ttl == int(ttl) else ttl,
                               "issued_at": issued}))

    def auth(self, name, actions=("pull",)):
        """Claims ({"sub": user or ""}) when the request may do actions on repository `name`
        (None: any valid credentials), else answer 401 with the challenge (Docker Hub's, or
        Basic with auth=basic) and return None."""
        hub = self.hub
        header = self.headers.get("Authorization", "")
        claims = None
        if hub.cfg("auth") == "basic":
            user = self.basic_user(header)
            if user is not None:
                claims = {"sub": user}
        elif header[:7].lower() == "bearer ":
            claims = hub.verify_token(header[7:].strip())
            if claims is not None and name is not None and \
                    not all((name, a) in claims["allowed"] for a in actions):
                claims["insufficient"] = True
        if claims is not None and not claims.get("insufficient"):
            self._source = claims["sub"] or self.client_address[0]
            self._user = claims["sub"] or None
            return claims
        hub.count("unauthorized_401")
        if hub.cfg("auth") == "basic":
            challenge = 'Basic realm="%s"' % SERVICE
        else:
            challenge = 'Bearer realm="%s",service="%s"' % (hub.realm, SERVICE)
        detail = None
        if name is not None and hub.cfg("auth") == "bearer":
            challenge += ',scope="repository:%s:%s"' % (name, ",".join(actions))
            detail = [{"Type": "repository", "Class": "", "Name": name, "Action": a}
                      for a in actions]
        if claims is not None:
            challenge += ',error="insufficient_scope"'
        # A request body may follow that nobody reads.
        self.close_connection = self.command not in ("GET", "HEAD")
        self.reply(401, _errors("UNAUTHORIZED", "authentication required", detail),
                   headers=self.api_headers() + [("WWW-Authenticate", challenge)])
        return None

    def basic_user(self, header):
        """The user HTTP Basic credentials name when they are right, else None."""
        if header[:6].lower() != "basic ":
            return None
        try:
            name, _, password = base64.b64decode(header[6:].strip(),
                                                 validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return name if self.hub.check_user(name, password) else None

    # -- /v2/<name>/... ---------------------------------------------------------------
    def v2(self, path, query):
        hub = self.hub
        for regex, what in ((MANIFEST_RE, "manifest"), (BLOB_RE, "blob"), (TAGS_RE, "tags"),
                            (REFERRERS_RE, "referrers")):
            m = regex.match(path)
            if m:
                break
        else:
            self.reply(404, _errors("NOT_FOUND", "unknown endpoint"), headers=self.api_headers())
            return
        name = m.group(1)
        if not NAME_RE.match(name):
            self.reply(400, _errors("NAME_INVALID", "invalid repository name"),
                       headers=self.api_headers())
            return
        claims = self.auth(name)
        if claims is None:
            return
        if what != "tags" and hub.chance("error", "error_rate"):
            self.error_answer()
            return
        if what == "manifest":
            self.manifest(name, m.group(2), claims)
        elif what == "blob":
            self.blob(name, m.group(2), query)
        elif what == "referrers":
            self.referrers(name, m.group(2), query, claims)
        else:
            self.tags(name, query)

    def ratelimit_headers(self, limit, remaining):
        hub = self.hub
        headers = [("docker-ratelimit-source", self._source)]
        if limit >= 0:
            p = hub.cfg("ratelimit_prefix")
            w = hub.cfg("window")
            w = int(w) if w == int(w) else w
            headers += [(p + "ratelimit-limit", "%d;w=%s" % (limit, w)),
                        (p + "ratelimit-remaining", "%d;w=%s" % (remaining, w))]
        return headers

    def pull(self, claims, take):
        """The ratelimit headers of a request (a pull when take), or None once it was
        answered 429 for a spent quota."""
        hub = self.hub
        limit = hub.limit_for(claims["sub"])
        allowed, remaining = hub.quota(self._source, limit, take=take)
        rl = self.ratelimit_headers(limit, remaining)
        if take and not allowed:
            hub.count("denied_429")
            msg = USER_429 if claims["sub"] else ANON_429
            if hub.cfg("retry_after"):
                rl.append(("Retry-After", str(hub.cfg("retry_after"))))
            self.reply(429, _errors("TOOMANYREQUESTS", msg), headers=self.api_headers() + rl)
            return None
        return rl

    def manifest(self, name, ref, claims):
        hub = self.hub
        get = self.command == "GET"
        rl = self.pull(claims, get)
        if rl is None:
            return
        key = "%s%s%s" % (name, "@" if DIGEST_RE.match(ref) else ":", ref)
        if get:
            self._counted = True
            hub.count("manifest_get")
            hub.count_in("manifest_get_by_repo", name)
            hub.count_in("manifest_get_by_ref", key)
        else:
            hub.count("manifest_head")
            hub.count_in("manifest_head_by_ref", key)
        status, headers, body = self.fetch_manifest(name, ref)
        lie = hub.cfg("manifest_content_type")
        if lie and status == 200:
            hub.count_in("faults", "content_type")
            self._fault = "content_type"
            headers = [(k, lie if k == "Content-Type" else v) for k, v in headers]
        fault = hub.cfg("manifest_fault")
        if fault and status == 200:
            hub.count_in("faults", fault)
            self._fault = fault
            if fault == "digest_header":
                headers = [(k, "sha256:" + "0" * 64 if k == "Docker-Content-Digest" else v)
                           for k, v in headers]
            else:
                body += b" "
        self.send_response(status)
        for k, v in headers + rl + self.api_headers():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if get:
            self.stream(io.BytesIO(body), len(body), blob=False)

    def fetch_manifest(self, name, ref):
        """(status, headers, body) of a manifest: from the cache for a digest reference
        (what a digest names never changes), else from the backend, which is the slower
        part of a manifest request."""
        hub = self.hub
        with hub.lock:
            hit = hub.manifest_cache.get((name, ref))
        if hit is not None:
            return hit
        # Docker Hub serves what it has whatever the Accept header says (checking the
        # media type is the client's job); docker-registry 2.8 would 404 an OCI
        # manifest to a client that does not list OCI types, so ask for everything.
        resp = hub.backend.request("GET", "/v2/%s/manifests/%s" % (name, ref),
                                   headers=ALL_MANIFESTS)
        body = resp.read()
        headers = [(k, resp.getheader(k)) for k in ("Content-Type", "Docker-Content-Digest",
                                                     "ETag") if resp.getheader(k) is not None]
        out = (resp.status, headers, body)
        digest = resp.getheader("Docker-Content-Digest")
        if resp.status == 200 and digest:
            with hub.lock:
                if hub.manifest_cache_bytes + len(body) > MANIFEST_CACHE_BYTES:
                    hub.manifest_cache.clear()
                    hub.manifest_cache_bytes = 0
                hub.manifest_cache[(name, digest)] = out
                hub.manifest_cache_bytes += len(body)
        return out

    def blob(self, name, digest, query):
        hub = self.hub
        if not DIGEST_RE.match(digest):
            self.reply(400, _errors("DIGEST_INVALID", "invalid digest"), headers=self.api_headers())
            return
        if self.command == "HEAD":
            hub.count("blob_head")
            self.proxy("HEAD", "/v2/%s/blobs/%s" % (name, digest))
            return
        hub.count("blob_get")
        hop = parse_qs(query).get("loop")
        if hop or hub.chance("redirect_loop", "redirect_loop_rate"):
            n = int(hop[0]) + 1 if hop and hop[0].isdigit() else 1
            if n == 1:
                hub.count_in("faults", "redirect_loop")
            self._fault = "redirect_loop"
            self.reply(307, b"", headers=self.api_headers() + [
                ("Location", "/v2/%s/blobs/%s?loop=%d" % (name, digest, n))],
                ctype="text/html; charset=utf-8")
            return
        resp = hub.backend.request("HEAD", "/v2/%s/blobs/%s" % (name, digest))
        resp.read()
        if resp.status != 200:
            self.reply(404, _errors("BLOB_UNKNOWN", "blob unknown to registry", digest),
                       headers=self.api_headers())
            return
        exp = int(time.time()) + CDN_URL_TTL
        hexd = digest[len("sha256:"):]
        sig = _b64(hmac.new(hub.secret, ("%d|%s|%s" % (exp, name, digest)).encode(),
                            hashlib.sha256).digest()[:16])
        location = "%s/registry-v2/docker/registry/v2/blobs/sha256/%s/%s/data?verify=%d-%s" \
                   "&repo=%s" % (hub.cdn_base, hexd[:2], hexd, exp, sig, quote(name, safe=""))
        self.reply(307, b"", headers=self.api_headers() + [("Location", location)],
                   ctype="text/html; charset=utf-8")

    def referrers(self, name, digest, query, claims):
        """OCI 1.1 referrers: an image index of the descriptors of the repository's tagged
        manifests whose subject is digest (the backend, docker-registry 2.8, keeps no such
        index), filtered by artifactType, paged by page= and a Link; each page a pull."""
        hub = self.hub
        if not hub.cfg("referrers_api"):
            self.reply(404, b"404 page not found\n", ctype="text/plain")
            return
        if not DIGEST_RE.match(digest):
            self.reply(400, _errors("DIGEST_INVALID", "invalid digest"), headers=self.api_headers())
            return
        get = self.command == "GET"
        rl = self.pull(claims, get)
        if rl is None:
            return
        if get:
            self._counted = True
            hub.count("manifest_get")
            hub.count("referrers_get")
            hub.count_in("manifest_get_by_repo", name)
            hub.count_in("manifest_get_by_ref", "%s/referrers@%s" % (name, digest))
        resp = hub.backend.request("GET", "/v2/%s/tags/list" % name)
        body = resp.read()
        descs, seen = [], set()
        for tag in sorted(json.loads(body).get("tags") or [] if resp.status == 200 else []):
            status, headers, mbody = self.fetch_manifest(name, tag)
            try:
                m = json.loads(mbody) if status == 200 else None
            except ValueError:
                m = None
            if not isinstance(m, dict) or not isinstance(m.get("subject"), dict) or \
                    m["subject"].get("digest") != digest:
                continue
            d = dict(headers).get("Docker-Content-Digest")
            if d in seen:
                continue
            seen.add(d)
            desc = {"mediaType": m.get("mediaType", OCI_MANIFEST), "digest": d,
                    "size": len(mbody)}
            kind = m.get("artifactType") or (m.get("config") or {}).get("mediaType")
            if kind:
                desc["artifactType"] = kind
            descs.append(desc)
        q = parse_qs(query)
        headers = self.api_headers() + rl
        kind = q.get("artifactType", [None])[0]
        if kind is not None:
            descs = [d for d in descs if d.get("artifactType") == kind]
            headers.append(("OCI-Filters-Applied", "artifactType"))
        page, size = q.get("page", ["0"])[0], hub.cfg("referrers_page")
        if not page.isdigit():
            raise BadRequest("bad page %r" % page[:40])
        if size > 0:
            start = int(page) * size
            if start + size < len(descs):
                headers.append(("Link", '</v2/%s/referrers/%s?page=%d>; rel="next"'
                                % (name, digest, int(page) + 1)))
            descs = descs[start:start + size]
        self.reply(200, _json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descs}),
                   headers=headers, ctype=OCI_INDEX)

    def tags(self, name, query):
        """The backend's tag list, sorted, paged by n and last as tags_paging says."""
        hub = self.hub
        hub.count("tags_list")
        resp = hub.backend.request("GET", "/v2/%s/tags/list" % name)
        body = resp.read()
        if resp.status != 200:
            self.reply(resp.status, body, headers=self.api_headers(),
                       ctype=resp.getheader("Content-Type") or "application/json")
            return
        q = parse_qs(query)
        n = q.get("n", ["0"])[0]
        if not n.isdigit():
            raise BadRequest("bad n %r" % n[:40])
        n = int(n)
        tags = sorted(json.loads(body).get("tags") or [])
        last = q.get("last", [None])[0]
        if last is not None:
            tags = [t for t in tags if t > last]
        headers = self.api_headers()
        mode = hub.cfg("tags_paging")
        if mode != "all" and 0 < n < len(tags):
            tags = tags[:n]
            if mode == "link":
                headers.append(("Link", '</v2/%s/tags/list?n=%d&last=%s>; rel="next"'
                                % (name, n, quote(tags[-1]))))
        self.reply(200, _json({"name": name, "tags": tags}), headers=headers)

    def write(self, path, query):
        """A write (push mode): allowed with push on the repository (and pull on a mount's
        source), then streamed to the backend, which builds its Location headers on the
        stand-in's address, and its answer relayed."""
        hub = self.hub
        m = WRITE_RE.match(path)
        if m is None or not NAME_RE.match(m.group(1)):
            self.close_connection = True
            self.reply(404, _errors("NOT_FOUND", "unknown endpoint"), headers=self.api_headers())
            return
        if self.auth(m.group(1), ("pull", "push")) is None:
            return
        source = parse_qs(query).get("from", [None])[0]
        if source is not None and self.auth(source) is None:
            return
        text = self.headers.get("Content-Length") or "0"
        if not text.isdigit():
            raise BadRequest("bad Content-Length %r" % text[:40])
        left = int(text)
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("authorization", "connection", "expect")}

        def body():
            nonlocal left
            while left > 0:
                data = self.rfile.read(min(left, CHUNK))
                if not data:
                    raise BadRequest("the request body ended early")
                left -= len(data)
                yield data

        hub.backend.drop()  # a fresh connection: a streamed body cannot be sent twice
        resp = hub.backend.request(self.command, path + ("?" + query if query else ""),
                                   body=body() if left else None, headers=headers)
        data = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
            self._sent += len(data)

    def proxy(self, method, path):
        """Forward to the backend and relay status, the headers clients use, and body."""
        hub = self.hub
        resp = hub.backend.request(method, path)
        self.send_response(resp.status)
        for k in ("Content-Type", "Content-Length", "Docker-Content-Digest", "ETag",
                  "Content-Range", "Accept-Ranges", "Link"):
            v = resp.getheader(k)
            if v is not None:
                self.send_header(k, v)
        for k, v in self.api_headers():
            self.send_header(k, v)
        length = int(resp.getheader("Content-Length") or 0)
        if resp.getheader("Content-Length") is None:
            self.close_connection = True
        self.end_headers()
        if method == "HEAD":
            resp.read()
            return
        self.stream(resp, length, blob=False, partial=hub.backend.drop)

    # -- control API ------------------------------------------------------------------
    def control(self, what, query):
        hub = self.hub
        body = self.read_body()
        try:
            args = json.loads(body) if body.strip() else {}
            if not isinstance(args, dict):
                raise ValueError("body must be a JSON object")
            if what == "counters" and self.command == "GET":
                out = hub.snapshot()
            elif what == "reset-counters" and self.command == "POST":
                hub.reset_counters()
                out = {"ok": True}
            elif what == "config" and self.command == "GET":
                out = dict(hub.config)
            elif what == "config" and self.command == "POST":
                out = hub.set_config(args)
            elif what == "reset-window" and self.command == "POST":
                hub.reset_window(args.get("source"), int(args.get("used", 0)))
                out = {"ok": True}
            elif what == "requests" and self.command == "GET":
                since = int(query.get("since", ["0"])[0])
                out = {"requests": hub.requests_since(since)}
            elif what == "info" and self.command == "GET":
                out = {"registry": hub.realm[:-len("/token")], "cdn": hub.cdn_base,
                       "backend": hub.backend_url}
            else:
                self.reply(404, _json({"error": "no control endpoint %s %s"
                                       % (self.command, what)}))
                return
        except ValueError as e:
            self.reply(400, _json({"error": str(e)}))
            return
        self.reply(200, _json(out))


class CdnHandler(Handler):
    """production.cloudflare.docker.com: serves blob bytes behind signed, expiring URLs."""

    def do_GET(self):
        self.guarded("cdn", self.serve_blob)

    def do_HEAD(self):
        self.guarded("cdn", self.serve_blob)

    def serve_blob(self):
        hub = self.hub
        self.read_body()
        u = urlsplit(self.path)
        auth = self.headers.get("Authorization")
        if auth is not None:
            # Never store the credential itself: its scheme and length are enough.
            scheme = auth.split(" ", 1)[0]
            if " " not in auth or not scheme.isalpha() or len(scheme) > 16:
                scheme = "(unknown)"
            with hub.lock:
                hub.counters["auth_leaks"] += 1
                hub.counters["auth_leak_details"].append(
                    {"method": self.command, "path": u.path, "scheme": scheme,
                     "length": len(auth)})
        hub.delay()
        if hub.cfg("cdn_challenge"):
            hub.count_in("faults", "cdn_challenge")
            self._fault = "cdn_challenge"
            if u.path == "/token":  # the realm hands a token to anyone, as a trap would
                self.reply(200, _json({"token": "cdn-token", "expires_in": 300}))
            else:
                self.reply(401, b"", ctype="text/plain", headers=[(
                    "WWW-Authenticate", 'Bearer realm="%s/token",service="cdn"' % hub.cdn_base)])
            return
        m = CDN_RE.match(u.path)
        q = parse_qs(u.query)
        verify = q.get("verify", [""])[0]
        name = q.get("repo", [""])[0]
        exp, _, sig = verify.partition("-")
        digest = "sha256:" + m.group(2) if m else ""
        want = _b64(hmac.new(hub.secret, ("%s|%s|%s" % (exp, name, digest)).encode(),
                             hashlib.sha256).digest()[:16])
        if (m is None or not exp.isdigit() or int(exp) < time.time()
                or not hmac.compare_digest(sig, want)):
            self.reply(403, b"Forbidden\n", ctype="text/plain")
            return
        hub.count("cdn_get")
        if hub.chance("error", "error_rate"):
            hub.count_in("faults", "error")
            self._fault = "error"
            self.reply(hub.cfg("error_status"), b"Service Unavailable\n",
                       ctype="text/plain")
            return
        headers = {}
        if self.headers.get("Range"):
            headers["Range"] = self.headers["Range"]
        resp = hub.backend.request(self.command, "/v2/%s/blobs/%s" % (name, digest),
                                   headers=headers)
        self.send_response(resp.status)
        for k in ("Content-Length", "Content-Range", "Accept-Ranges", "ETag"):
            v = resp.getheader(k)
            if v is not None:
                self.send_header(k, v)
        self.send_header("Content-Type", "application/octet-stream")
        length = int(resp.getheader("Content-Length") or 0)
        self.end_headers()
        if self.command == "HEAD" or resp.status >= 300:
            # Error bodies are relayed whole; they are small.
            data = resp.read()
            if self.command != "HEAD":
                self.wfile.write(data)
            return
        self.stream(resp, length, blob=True, partial=hub.backend.drop)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, addr, handler, hub, verbose):
        super().__init__(addr, handler)
        self.hub = hub
        self.verbose = verbose

    def handle_error(self, request, client_address):
        # A client that goes away mid-response is normal (and faults cause it on purpose).
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, BrokenPipeError, socket.timeout)):
            return
        super().handle_error(request, client_address)


def start(host, port, cdn_host, cdn_port, backend, config, users=(), log_size=100000,
          verbose=False):
    """Start both listeners on background threads; returns (hub, [servers])."""
    hub = Hub(backend, config, users, log_size)
    reg = Server((host, port), RegistryHandler, hub, verbose)
    cdn = Server((cdn_host, cdn_port), CdnHandler, hub, verbose)
    hub.realm = "http://%s:%d/token" % (host, reg.server_address[1])
    hub.cdn_base = "http://%s:%d" % (cdn_host, cdn.server_address[1])
    for s in (reg, cdn):
        threading.Thread(target=s.serve_forever, daemon=True).start()
    return hub, [reg, cdn]


def default_config():
    return {name: default for name, _, default, _ in CONFIG}


def main(argv=None):
    ap = argparse.ArgumentParser(description="Docker Hub stand-in (see tests/standin/README.md)")
    ap.add_argument("--host", default="127.0.0.1", help="registry and token listener address")
    ap.add_argument("--port", type=int, default=0, help="registry port (0: any free port)")
    ap.add_argument("--cdn-host", default="127.0.0.2",
                    help="CDN listener address; another host than --host, so that clients "
                         "that drop Authorization across hosts do so")
    ap.add_argument("--cdn-port", type=int, default=0, help="CDN port (0: any free port)")
    ap.add_argument("--backend", help="backing registry URL http://HOST:PORT")
    ap.add_argument("--registry-data", metavar="DIR",
                    help="start a docker-registry with its storage in DIR as the backend")
    ap.add_argument("--registry-port", type=int, default=0,
                    help="port of that registry (0: any free port)")
    ap.add_argument("--backend-storage", metavar="DIR",
                    help="the backend's storage root (docker-registry's rootdirectory): "
                         "reads come from its files, writes and misses go to the backend "
                         "(standin/storage.py)")
    ap.add_argument("--user", action="append", default=[], metavar="NAME:PASSWORD[:LIMIT]",
                    help="a user for HTTP Basic on /token; LIMIT a number or 'unlimited'")
    ap.add_argument("--request-log", type=int, default=100000,
                    help="requests kept for GET /_standin/requests")
    ap.add_argument("--verbose", action="store_true", help="access log on stderr")
    for name, typ, default, help_text in CONFIG:
        ap.add_argument("--" + name.replace("_", "-"), type=typ, default=default,
                        help=help_text + " (default %(default)s)")
    a = ap.parse_args(argv)
    if bool(a.backend) == bool(a.registry_data):
        ap.error("give exactly one of --backend and --registry-data")
    try:
        users = [parse_user(u) for u in a.user]
        config = checked_config(default_config(),
                                {name: getattr(a, name) for name in CONFIG_TYPES})
    except ValueError as e:
        ap.error(str(e))
    registry = None
    if a.registry_data:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from harness import Registry
        registry = Registry(workdir=os.path.abspath(a.registry_data)).start(
            a.registry_port or None)
        backend = registry.url
    else:
        backend = a.backend
    if a.backend_storage:
        try:
            backend = Storage(a.backend_storage, backend)
        except ValueError as e:
            ap.error(str(e))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        hub, servers = start(a.host, a.port, a.cdn_host, a.cdn_port, backend, config, users,
                             a.request_log, a.verbose)
        print(json.dumps({"registry": hub.realm[:-len("/token")], "cdn": hub.cdn_base,
                          "backend": hub.backend_url}), flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        if registry is not None:
            registry.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
