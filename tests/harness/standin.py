"""Docker Hub stand-in for integration tests: a backing docker-registry plus
tests/standin/standin.py in front of it, on free loopback ports, and the loader that fills it.

    hub = Standin(limit=100, users=["alice:secret:200"]).start()
    pushed = hub.load(catalog)            # Docker-Hub-shaped content (standin.loader)
    ... point the code under test at hub.url (registry) ...
    hub.counters()["manifest_get"]        # pulls spent
    hub.stop()

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
from standin.loader import Loader

STANDIN = os.path.join(ROOT, "tests", "standin", "standin.py")
CDN_HOST = "127.0.0.2"


def free_port_on(host):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


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


class Standin:
    """Backing registry + stand-in. Keyword arguments become standin.py flags
    (limit=3 -> --limit 3, verbose=True -> --verbose); users are NAME:PASSWORD[:LIMIT]
    strings. The registry's
    storage goes to /dev/shm when it exists (docker-registry is several times faster on
    tmpfs) unless workdir says where. It listens on 127.0.0.1 with its CDN on 127.0.0.2, or
    with both on `host` (an address containers reach, e.g. their network's gateway)."""

    def __init__(self, users=(), workdir=None, host=None, **flags):
        base = workdir
        if base is None:
            base = tempfile.mkdtemp(prefix="hubsync-standin-",
                                    dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        self.dir = base
        self._own_dir = workdir is None
        args = []
        for u in users:
            args += ["--user", u]
        for k, v in flags.items():
            if v is True:
                args.append("--" + k.replace("_", "-"))
            elif v is not False:
                args += ["--" + k.replace("_", "-"), str(v)]
        self._args = args
        self._hosts = (host, host) if host else ("127.0.0.1", CDN_HOST)
        self.registry = Registry(workdir=os.path.join(base, "registry"))
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
    def port(self):
        return self.front.port

    @property
    def host(self):
        """host:port as image references want it: f"{hub.host}/library/alpine:3"."""
        return "%s:%d" % (self.front.host, self.front.port)

    @property
    def url(self):
        return "http://%s:%d" % (self.front.host, self.front.port)

    @property
    def cdn(self):
        return "http://%s:%d" % (self.front.cdn_host, self.front.cdn_port)

    @property
    def storage(self):
        """The backing registry's filesystem root."""
        return os.path.join(self.registry.dir, "data")

    def log(self):
        return self.front.log()

    # -- control API --------------------------------------------------------------
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

    def reset_window(self, source=None):
        """Start a new rate-limit window now (for one source, or all)."""
        return self.control("POST", "reset-window", {} if source is None else
                            {"source": source})

    def requests(self, since=0):
        return self.control("GET", "requests?since=%d" % since)["requests"]

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
