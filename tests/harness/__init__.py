"""Test harness: real servers on free loopback ports, for the integration tests, the demo
and the benchmark.

    harness             RedisServer, Registry (here); paths, official-images, sanitizer env
    harness.programs    the programs' command lines, built in this one place
    harness.stack       Stack: hubsync over Redis, a target and the stand-in (the one
                        launcher); StackCase, MirrorCase
    harness.standin     the Docker Hub stand-in (tests/standin), as a server or in memory
    harness.target      what a registry holds: digests, tags, snapshots, a Watcher
    harness.podman      a throw-away podman pulling through a registries.conf mirror
    harness.redisq      queuetool (common/rq from the command line)
    harness.containers  podman and Docker engines for the compose tests

Every server runs as a child process in a private temporary directory and is
stopped (and its directory removed) by stop(), or at interpreter exit.
Python standard library only.
"""
import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.environ.get("HUBSYNC_ROOT") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("HUBSYNC_BIN") or os.path.join(ROOT, "bin")
TOOLS = os.environ.get("HUBSYNC_TOOLS") or os.path.join(ROOT, "build", "default", "tools")
# Where the official-images data for the demo and the tests comes from, in this order: the
# HUBSYNC_OFFICIAL_IMAGES environment variable; the project's ../shared copy beside the
# checkout; otherwise a clone of upstream into build/, made by ensure_official_images() (the
# demo and tests/run.py call it first). The variable is also the coordinator's own, so it is
# taken out of the environment here: the programs the tests start are given their source
# as a flag. tests/run.py hands what it found to every test process (the unit tests too) as
# HUBSYNC_TEST_OFFICIAL_IMAGES.
OFFICIAL_IMAGES_URL = "https://github.com/docker-library/official-images.git"
SHARED_OFFICIAL_IMAGES = os.path.normpath(
    os.path.join(ROOT, "..", "shared", "official-images", "official-images.git"))
CLONED_OFFICIAL_IMAGES = os.path.join(ROOT, "build", "official-images.git")


GIVEN_OFFICIAL_IMAGES = os.environ.pop("HUBSYNC_OFFICIAL_IMAGES", "")


def _official_images():
    if GIVEN_OFFICIAL_IMAGES:
        return GIVEN_OFFICIAL_IMAGES
    if os.environ.get("HUBSYNC_TEST_OFFICIAL_IMAGES"):
        return os.environ["HUBSYNC_TEST_OFFICIAL_IMAGES"]
    if os.path.isdir(SHARED_OFFICIAL_IMAGES):
        return SHARED_OFFICIAL_IMAGES
    return CLONED_OFFICIAL_IMAGES


OFFICIAL_IMAGES = _official_images()


def ensure_official_images(timeout=600):
    """None when OFFICIAL_IMAGES can be read (cloning upstream into build/ when it is the
    fallback and not there yet), else one line saying what was tried and how to point at a
    copy."""
    if "://" in OFFICIAL_IMAGES or os.path.isdir(OFFICIAL_IMAGES):
        return None
    tried = []
    if GIVEN_OFFICIAL_IMAGES:
        tried.append("HUBSYNC_OFFICIAL_IMAGES=%s (no such directory)" % OFFICIAL_IMAGES)
    else:
        tried.append("%s (not there)" % SHARED_OFFICIAL_IMAGES)
        tmp = OFFICIAL_IMAGES + ".partial"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(os.path.dirname(tmp), exist_ok=True)
        try:
            p = subprocess.run(["git", "clone", "-q", "--bare", OFFICIAL_IMAGES_URL, tmp],
                               stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=timeout)
            if p.returncode == 0:
                os.rename(tmp, OFFICIAL_IMAGES)
                return None
            why = (p.stderr.strip().splitlines() or ["exit %d" % p.returncode])[-1]
        except (OSError, subprocess.TimeoutExpired) as e:
            why = str(e)
        shutil.rmtree(tmp, ignore_errors=True)
        tried.append("a clone of %s (%s)" % (OFFICIAL_IMAGES_URL, why))
    return ("no official-images data: tried %s; point HUBSYNC_OFFICIAL_IMAGES (or the demo's "
            "--official-images) at a clone of docker-library/official-images"
            % "; ".join(tried))
# Programs built with sanitizers run 2-3x slower: the runner raises this in that mode and
# the harness's own waits scale with it.
TIMEOUT_FACTOR = float(os.environ.get("HUBSYNC_TIMEOUT_FACTOR") or 1)
SANITIZER_EXIT = 86


def sanitizer_env(report_dir):
    """Environment for programs built with -fsanitize=address,undefined: every report goes to
    a file under report_dir (never only to a stderr a test may discard), a report ends the
    program with exit SANITIZER_EXIT, and LeakSanitizer checks at exit."""
    common = "exitcode=%d:log_path=%s" % (SANITIZER_EXIT, os.path.join(report_dir, "asan"))
    env = {
        "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:" + common,
        "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1:" + common,
    }
    return env


def sanitizer_reports(report_dir, lines=12):
    """[(path, first lines)] of every sanitizer report file in report_dir."""
    out = []
    for name in sorted(os.listdir(report_dir)) if os.path.isdir(report_dir) else []:
        path = os.path.join(report_dir, name)
        with open(path, errors="replace") as f:
            head = [next(f, "") for _ in range(lines)]
        out.append((path, "".join(head)))
    return out

_live = []


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=15.0, proc=None, host="127.0.0.1"):
    deadline = time.time() + timeout * TIMEOUT_FACTOR
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited with %s before listening on %d"
                               % (proc.returncode, port))
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on %s:%d after %.0fs" % (host, port, timeout))


class Server:
    """A child process with a work directory and a log file."""

    name = "server"
    host = "127.0.0.1"  # the address it listens on

    def __init__(self, workdir=None):
        self.dir = workdir or tempfile.mkdtemp(prefix="hubsync-%s-" % self.name)
        self._own_dir = workdir is None
        self.proc = None
        self.port = None
        self.log_path = os.path.join(self.dir, "%s.log" % self.name)
        _live.append(self)

    def command(self):
        raise NotImplementedError

    def start(self, port=None):
        self.port = port or self.port or free_port()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), cwd=self.dir, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_port(self.port, proc=self.proc, host=self.host)
        return self

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def restart(self):
        self.kill(signal.SIGTERM)
        return self.start(self.port)

    def log(self):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        self.kill(signal.SIGTERM)
        if self._own_dir and os.environ.get("HUBSYNC_KEEP_TMP") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)
        if self in _live:
            _live.remove(self)


class RedisServer(Server):
    """Debian's redis-server with AOF persistence in its own directory."""

    name = "redis"

    def __init__(self, workdir=None, appendonly=True):
        super().__init__(workdir)
        self.appendonly = appendonly

    def command(self):
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
               "--dir", self.dir, "--save", "", "--maxmemory-policy", "noeviction"]
        if self.appendonly:
            cmd += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            cmd += ["--appendonly", "no"]
        return cmd

    @property
    def url(self):
        return "redis://127.0.0.1:%d" % self.port

    def cli(self, *args):
        """Run redis-cli against this server; returns stdout text."""
        p = subprocess.run(["redis-cli", "-p", str(self.port), "--no-raw"] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=30)
        return p.stdout

    def cli_raw(self, *args):
        p = subprocess.run(["redis-cli", "-p", str(self.port), "--raw"] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=30)
        return p.stdout


class Registry(Server):
    """Debian's docker-registry (CNCF distribution 2.8) on loopback, filesystem storage."""

    name = "registry"

    def __init__(self, workdir=None, extra_config=""):
        super().__init__(workdir)
        self.extra_config = extra_config

    def command(self):
        cfg = os.path.join(self.dir, "config.yml")
        with open(cfg, "w") as f:
            f.write("""version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:%d
%s""" % (self.storage, self.port, self.extra_config))
        return ["docker-registry", "serve", cfg]

    @property
    def storage(self):
        """The filesystem root of its storage."""
        return os.path.join(self.dir, "data")

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port


@atexit.register
def _stop_all():
    for s in list(_live):
        s.stop()
