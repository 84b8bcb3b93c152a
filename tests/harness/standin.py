"""Docker Hub stand-in for integration tests, on free loopback ports: Standin runs
tests/standin/standin.py in front of a backing docker-registry, filled by the loader;
MemoryStandin runs the same stand-in inside the test process over in-memory content
(tests/standin/memory.py) that the test adds itself.

    hub = Standin(limit=100, users=["alice:secret:200"]).start()
    pushed = hub.load(catalog)            # Docker-Hub-shaped content (standin.loader)
    ... point the code under test at hub.url (registry) ...
    hub.counters()["manifest_get"]        # pulls spent
    hub.stop()

    up = MemoryStandin(auth="basic", users=["carol:pw"]).start()
    up.add_manifest("library/x", "latest", media_type, body)
    blob = up.add_blob(Blob(size=1 << 30, seed=7))    # generated as it is read

See tests/standin/README.md for the flags, the control API and the loader.
"""
import atexit
import base64
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request

from harness import ROOT, Registry, Server
from standin import standin as server
from standin.loader import Loader
from standin.memory import Memory

STANDIN = os.path.join(ROOT, "tests", "standin", "standin.py")
CDN_HOST = "127.0.0.2"


def free_port_on(host):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _hosts(host):
    """(registry host, CDN host): 127.0.0.1 and 127.0.0.2, or both on `host`."""
    return (host, host) if host else ("127.0.0.1", CDN_HOST)


class _Front(Server):
    """The standin.py process."""

    name = "standin"

    def __init__(self, workdir, backend, host, cdn_host, args):
        super().__init__(workdir)
        self.backend = backend
        self.host = host
        self.cdn_host = cdn_host
        self.cdn_port = free_port_on(cdn_host)
        self.args = args

    def command(self):
        return [sys.executable, STANDIN, "--host", self.host, "--port", str(self.port),
                "--cdn-host", self.cdn_host, "--cdn-port", str(self.cdn_port),
                "--backend", self.backend] + self.args

    def start(self, port=None):
        super().start(port or self.port or free_port_on(self.host))
        deadline = time.time() + 15
        while True:
            try:
                with socket.create_connection((self.cdn_host, self.cdn_port), timeout=0.5):
                    return self
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("stand-in CDN not listening on %s:%d; log:\n%s"
                                       % (self.cdn_host, self.cdn_port, self.log()))
                time.sleep(0.05)


def _flags(users, flags):
    """standin.py arguments: users as --user, keyword arguments as flags (limit=3 -> --limit 3,
    push=True -> --push true, verbose=True -> --verbose)."""
    args = []
    for u in users:
        args += ["--user", u]
    for k, v in flags.items():
        flag = "--" + k.replace("_", "-")
        if k in server.CONFIG_TYPES:
            args += [flag, str(v).lower() if isinstance(v, bool) else str(v)]
        elif v is True:
            args.append(flag)
        elif v is not False:
            args += [flag, str(v)]
    return args


class _Control:
    """What both stand-ins offer a test: addresses and the control API (subclasses set
    self._registry = (host, port) and self._cdn = (host, port))."""

    @property
    def port(self):
        return self._registry[1]

    @property
    def host(self):
        """host:port as image references want it: f"{hub.host}/library/alpine:3"."""
        return "%s:%d" % self._registry

    @property
    def url(self):
        return "http://%s:%d" % self._registry

    @property
    def cdn(self):
        return "http://%s:%d" % self._cdn

    def control(self, method, what, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + "/_standin/" + what, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            raise RuntimeError("stand-in %s %s: %d %s" % (method, what, e.code,
                                                          e.read().decode(errors="replace")))

    def counters(self):
        return self.control("GET", "counters")

    def reset_counters(self):
        return self.control("POST", "reset-counters")

    def config(self, **changes):
        """Change run-time settings (see standin.py CONFIG); returns the whole config."""
        return self.control("POST", "config", changes)

    def reset_window(self, source=None, used=0):
        """Start a new rate-limit window now (for one source, `used` pulls already spent in
        it; or for all)."""
        body = {} if source is None else {"source": source, "used": used}
        return self.control("POST", "reset-window", body)

    def requests(self, since=0):
        return self.control("GET", "requests?since=%d" % since)["requests"]

    def token_requests(self):
        """[(user or None, [scope, ...])] of every token request answered, in order."""
        return [(e["user"], e.get("query", {}).get("scope", [])) for e in self.requests()
                if e["listener"] == "registry" and e["path"] == "/token" and e["status"] == 200]

    def token(self, *repos, user=None, password=None):
        """A pull token for library/<repo> names (or full names), as a client gets it."""
        scopes = "&".join("scope=repository:%s:pull" % (r if "/" in r else "library/" + r)
                          for r in repos)
        req = urllib.request.Request("%s/token?service=registry.docker.io&%s"
                                     % (self.url, scopes))
        if user is not None:
            cred = base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
            req.add_header("Authorization", "Basic " + cred)
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)["token"]


class Standin(_Control):
    """Backing registry + stand-in. Keyword arguments become standin.py flags
    (limit=3 -> --limit 3, verbose=True -> --verbose); users are NAME:PASSWORD[:LIMIT]
    strings. The registry's
    storage goes to /dev/shm when it exists (docker-registry is several times faster on
    tmpfs) unless workdir says where. It listens on 127.0.0.1 with its CDN on 127.0.0.2, or
    with both on `host` (an address containers reach, e.g. their network's gateway).
    direct_reads: the stand-in reads the registry's storage itself (standin/storage.py), so
    the backend's CPU is spent on writes only (benchmarks)."""

    def __init__(self, users=(), workdir=None, host=None, direct_reads=False, **flags):
        base = workdir
        if base is None:
            base = tempfile.mkdtemp(prefix="hubsync-standin-",
                                    dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        self.dir = base
        self._own_dir = workdir is None
        self._args = _flags(users, flags)
        self._hosts = _hosts(host)
        self.registry = Registry(workdir=os.path.join(base, "registry"))
        if direct_reads:
            self._args += ["--backend-storage", self.storage]
        self.front = None
        self.loader = None
        # The two servers stop at exit by themselves; this also removes the directory.
        atexit.register(self.stop)

    def start(self):
        os.makedirs(self.registry.dir, exist_ok=True)
        self.registry.start()
        front_dir = os.path.join(self.dir, "front")
        os.makedirs(front_dir, exist_ok=True)
        self.front = _Front(front_dir, self.registry.url, *self._hosts, self._args)
        self.front.start()
        return self

    def stop(self):
        atexit.unregister(self.stop)
        if self.front is not None:
            self.front.stop()
        self.registry.stop()
        if self._own_dir and os.environ.get("HUBSYNC_KEEP_TMP") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)

    def restart(self):
        """Restart the stand-in process (new token secret, counters and quotas)."""
        self.front.kill(signal.SIGTERM)
        self.front.start(self.front.port)

    @property
    def _registry(self):
        return self.front.host, self.front.port

    @property
    def _cdn(self):
        return self.front.cdn_host, self.front.cdn_port

    @property
    def storage(self):
        """The backing registry's filesystem root."""
        return self.registry.storage

    def log(self):
        return self.front.log()

    # -- content ------------------------------------------------------------------
    def load(self, catalog, repos=None, seed=1, layer_size=512, jobs=8):
        """Fill the backing registry from a catalog (standin.loader); returns the pushed
        manifest. Later rebuild() calls continue from it."""
        if self.loader is None or (self.loader.seed, self.loader.layer_size) != (seed,
                                                                                 layer_size):
            self.loader = Loader(self.registry.url, seed=seed, layer_size=layer_size,
                                 jobs=jobs, storage=self.storage)
        return self.loader.load(catalog, repos)

    def rebuild(self, *refs):
        """Rebuild groups by "repo:tag" (see Loader.rebuild); returns the pushed manifest
        with "changed"."""
        return self.loader.rebuild(list(refs))


class MemoryStandin(_Control):
    """The stand-in on threads of this process over in-memory content (standin.memory):
    for what no registry would hold (a manifest that is not JSON) or could (a blob of GiBs,
    generated as it is read). Keyword arguments are config keys (auth="basic", push=...;
    see standin.py CONFIG); users are NAME:PASSWORD[:LIMIT] strings."""

    def __init__(self, users=(), host=None, **config):
        self.content = Memory()
        self._users = [server.parse_user(u) for u in users]
        self._config = config
        self._hosts = _hosts(host)
        self._servers = []

    def start(self):
        registry_host, cdn_host = self._hosts
        _, self._servers = server.start(registry_host, 0, cdn_host, 0, self.content,
                                        self._config, self._users)
        self._registry, self._cdn = (s.server_address[:2] for s in self._servers)
        return self

    def stop(self):
        for s in self._servers:
            s.shutdown()
            s.server_close()
        self._servers = []

    def add_blob(self, blob):
        """Serve a standin.memory.Blob (under every repository); returns it."""
        return self.content.add_blob(blob)

    def add_manifest(self, repo, tag, media_type, body):
        """Serve body as repo's manifest under its digest and tag (None: the digest only);
        returns the digest."""
        return self.content.add_manifest(repo, tag, media_type, body)
