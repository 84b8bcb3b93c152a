"""One hubsync on loopback, for the integration tests, the demo and the benchmark: Redis, a
target docker-registry and the Docker Hub stand-in filled from the real official-images data,
with the coordinator and workers a caller starts, stops, kills and restarts over them.

    stack = Stack(["hello-world", "alpine"]).start()   # servers of its own
    run = stack.run(workers=2)                         # sync --once --wait --json
    run.rc, run.report, run.stderr
    stack.stop()         # programs go (workers on SIGTERM), its servers stop, its files go

Tests borrow servers instead (Stack(repos, hub=, redis=, target=)), usually through
MirrorCase.stack(). Python standard library only.
"""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

from harness import BIN, OFFICIAL_IMAGES, TIMEOUT_FACTOR, RedisServer, Registry, programs
from harness.standin import Standin
from harness.target import Watcher, head

PREFIX = "hubsync:"


class StackError(RuntimeError):
    """A program is missing or the stack could not be set up; the message says which."""


def enqueued(redis):
    """The current run has all its jobs in the queue."""
    run = redis.cli_raw("GET", PREFIX + "runs:current").strip()
    return bool(run) and redis.cli_raw("HGET", PREFIX + "run:" + run, "enqueued").strip() == "1"


def dead_letters(redis):
    """[{field: value}] of the dead-letter stream."""
    p = subprocess.run(["redis-cli", "-p", str(redis.port), "-2", "--json", "XRANGE",
                        PREFIX + "jobs:dead", "-", "+"], stdout=subprocess.PIPE, text=True,
                       check=True, timeout=30)
    return [dict(zip(fields[0::2], fields[1::2])) for _, fields in json.loads(p.stdout)]


class Run:
    """How a coordinator's run ended: exit code, report (None without JSON), its stdout
    and stderr texts."""

    def __init__(self, rc, report, stdout, stderr):
        self.rc, self.report, self.stdout, self.stderr = rc, report, stdout, stderr


class Stack:
    """hubsync over a stand-in (hub), Redis and a target. Servers given are used as they are
    and left running by stop() (hub may also be an upstream URL); start() starts the others:
    Redis, a target with its storage on /dev/shm, and a stand-in granting `limit` anonymous
    pulls, filled from the catalog of hub_repos (default: repos) at ref of source.

    Every program gets --redis, --upstream, --target (the coordinator also
    --official-images source, --repos, --ref), the log levels given (workers:
    worker_log_level, else log_level), workers worker_args, then what the call adds; it runs from bin (BIN: bin/) with env (None: this
    process's environment) plus what the call adds. Output: as the call says (Popen
    keywords), or into a log file in self.dir (log="name", or log=True for a numbered one;
    logs=True does that for every program); self.logs lists them."""

    def __init__(self, repos, hub=None, redis=None, target=None, hub_repos=None, limit=100000,
                 source=OFFICIAL_IMAGES, ref=None, bin=BIN, env=None, logs=False,
                 log_level=None, worker_log_level=None, worker_args=()):
        self.repos = repos.split(",") if isinstance(repos, str) else list(repos)
        self.hub_repos = hub_repos.split(",") if isinstance(hub_repos, str) else hub_repos
        self.hub, self.redis, self.target = hub, redis, target
        self._own = []  # the servers this stack started
        self.limit = limit
        self.source, self.ref, self.bin = source, ref, bin
        self.env, self.log_all = env, logs
        self.log_level = log_level
        self.worker_log_level = worker_log_level or log_level
        self.worker_args = list(worker_args)
        self.catalog = self.pushed = None
        self.dir = tempfile.mkdtemp(prefix="hubsync-stack-")
        self._dirs = [self.dir]
        self.logs = []
        self.procs, self.workers, self.coord, self.coord_log = [], [], None, None

    # -- servers ----------------------------------------------------------------------------
    def start(self):
        """Start the servers not given; StackError if a program or the catalog is missing."""
        for prog in ("hubsync-coordinator", "hubsync-worker"):
            if not os.access(os.path.join(self.bin, prog), os.X_OK):
                raise StackError("%s is missing: run make first" % os.path.join(self.bin, prog))
        try:
            if self.hub is None:
                try:
                    self.catalog = programs.catalog(self.hub_repos or self.repos, self.ref,
                                                    self.source, self.bin)
                except RuntimeError as e:
                    raise StackError(str(e))
            if self.redis is None:
                self.redis = self._owned(RedisServer())
            if self.target is None:
                # docker-registry is several times faster on tmpfs.
                shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
                self._dirs.append(tempfile.mkdtemp(prefix="hubsync-target-", dir=shm))
                self.target = self._owned(Registry(workdir=self._dirs[-1]))
            if self.hub is None:
                self.hub = self._owned(Standin(limit=self.limit))
                self.pushed = self.hub.load(self.catalog)
        except BaseException:
            self.stop()
            raise
        return self

    def _owned(self, server):
        self._own.append(server)
        return server.start()

    @property
    def target_host(self):
        return "127.0.0.1:%d" % self.target.port

    def upstream_digest(self, repo, tag):
        """The index digest the stand-in serves for library/<repo>:<tag>."""
        for r in self.pushed["repositories"]:
            if r["name"] == "library/" + repo:
                return r["tags"][tag]
        raise KeyError("%s:%s is not on the stand-in" % (repo, tag))

    def target_digest(self, repo, tag):
        """The digest the target serves for library/<repo>:<tag>, or None if it lacks it."""
        return head(self.target.url, "library/" + repo, tag)

    # -- command lines ----------------------------------------------------------------------
    def sync_argv(self, *extra, **flags):
        """argv of `hubsync-coordinator sync` over this stack (flags: once, wait,
        json_report; all on by default)."""
        return programs.sync(*extra, bin=self.bin,
                             redis=self.redis, official_images=self.source, upstream=self.hub,
                             target=self.target, repos=self.repos or None, ref=self.ref,
                             log_level=self.log_level, **flags)

    def worker_argv(self, *extra):
        return programs.worker(*(self.worker_args + list(extra)), bin=self.bin,
                               redis=self.redis, upstream=self.hub, target=self.target,
                               log_level=self.worker_log_level)

    # -- programs ---------------------------------------------------------------------------
    def log_path(self, name):
        return os.path.join(self.dir, name)

    def _spawn(self, role, argv, log, env, wrap, popen):
        if log is None and self.log_all:
            log = True
        out = path = None
        if log is not None:
            path = self.log_path(log if isinstance(log, str) else
                                 "%s-%d.log" % (role, len(self.logs)))
            self.logs.append(path)
            out = open(path, "w")
            if role == "worker":
                popen.setdefault("stdout", out)
            popen.setdefault("stderr", out)
        if env or self.env is not None:
            popen["env"] = dict(os.environ if self.env is None else self.env, **(env or {}))
        try:
            p = subprocess.Popen(list(wrap) + argv, **popen)
        finally:
            if out is not None:
                out.close()
        self.procs.append(p)
        return p, path

    def coordinator(self, *extra, once=True, wait=True, json_report=True, log=None, env=None,
                    wrap=(), **popen):
        """Start `hubsync-coordinator sync` (by default --once --wait --json, its stdout and
        stderr piped as text); it is self.coord."""
        popen.setdefault("stdout", subprocess.PIPE)
        popen.setdefault("stderr", subprocess.PIPE)
        popen.setdefault("text", True)
        self.coord, self.coord_log = self._spawn("coordinator", self.sync_argv(
            *extra, once=once, wait=wait, json_report=json_report), log, env, wrap, popen)
        return self.coord

    def worker(self, *extra, log=None, env=None, wrap=(), **popen):
        """Start a hubsync-worker (its output inherited unless popen or log say otherwise)."""
        w, _ = self._spawn("worker", self.worker_argv(*extra), log, env, wrap, popen)
        self.workers.append(w)
        return w

    def wait_enqueued(self, timeout=60):
        """The current run's id once all its jobs are queued; None if self.coord exited
        first. Workers join then: an --exit-when-idle worker leaves a queue that stays
        empty."""
        deadline = time.time() + timeout * TIMEOUT_FACTOR
        while not enqueued(self.redis):
            if self.coord is not None and self.coord.poll() is not None:
                return None
            if time.time() > deadline:
                raise AssertionError("no run enqueued within %ds" % timeout)
            time.sleep(0.02)
        return self.redis.cli_raw("GET", PREFIX + "runs:current").strip()

    def report(self, timeout=300):
        """Wait for self.coord: its Run (stderr from its pipe or its log). A coordinator
        past timeout is killed with the workers and TimeoutExpired raised."""
        try:
            out, err = self.coord.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # A run past its bound is a failure; its programs must not outlive the test.
            for p in [self.coord] + self.workers:
                p.kill()
                p.wait()
            raise
        if err is None and self.coord_log is not None:
            with open(self.coord_log, errors="replace") as f:
                err = f.read()
        return Run(self.coord.returncode, json.loads(out) if out and out.strip() else None,
                   out, err)

    def run(self, *extra, workers=2, worker_extra=(), worker_env=None, timeout=300,
            **coordinator):
        """One whole run: the coordinator (extra and keywords as for coordinator()), then
        once its jobs are queued `workers` workers with --exit-when-idle and worker_extra
        (worker_env added to their environment); its Run once the coordinator and the
        workers have exited."""
        self.coordinator(*extra, **coordinator)
        ws = []
        if self.wait_enqueued() is not None:
            ws = [self.worker("--exit-when-idle", *worker_extra, env=worker_env)
                  for _ in range(workers)]
        run = self.report(timeout)
        for w in ws:
            w.wait(timeout=60)
        return run

    def watch(self):
        """A Watcher of the target's repos, started."""
        w = Watcher(self.target.url, self.repos)
        w.start()
        return w

    def stop_workers(self, timeout=30):
        """SIGTERM (graceful stop), then SIGKILL after timeout; returns the exit codes."""
        for w in self.workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        codes = []
        for w in self.workers:
            try:
                codes.append(w.wait(timeout=timeout))
            except subprocess.TimeoutExpired:
                w.kill()
                codes.append(w.wait())
        self.workers = []
        return codes

    def kill(self):
        """SIGKILL every program still running (no graceful stop: nothing runs at exit)."""
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            for f in (p.stdout, p.stderr):
                if f is not None:
                    f.close()
        self.procs = []

    def stop(self):
        """Workers stop on SIGTERM, every other program is killed, the servers this stack
        started stop and its directory goes."""
        self.stop_workers()
        self.kill()
        for s in reversed(self._own):
            s.stop()
        self._own = []
        if os.environ.get("HUBSYNC_KEEP_TMP") != "1":
            for d in self._dirs:
                shutil.rmtree(d, ignore_errors=True)


class StackCase(unittest.TestCase):
    """A fresh Redis (RedisServer(**REDIS_OPTIONS)) and target registry (TARGET, a harness
    Registry class) for each test. A test may replace self.redis: the one there at the end
    is stopped. stack() gives a Stack over them, stopped when the test ends."""

    TARGET = Registry
    REDIS_OPTIONS = {}

    def setUp(self):
        self.redis = RedisServer(**self.REDIS_OPTIONS).start()
        self.addCleanup(lambda: self.redis.stop())
        self.target = self.TARGET().start()
        self.addCleanup(self.target.stop)

    def stack(self, repos=(), hub=None, **kw):
        """A Stack over this test's Redis and target and hub (a stand-in or an upstream
        URL); it stops (its programs first) before the servers do."""
        st = Stack(repos, hub=hub, redis=self.redis, target=self.target, **kw)
        self.addCleanup(st.stop)
        return st


class MirrorCase(StackCase):
    """StackCase plus a stand-in holding REPOS (real official-images data) for the class:
    Standin(limit=HUB_LIMIT, users=HUB_USERS, **HUB_OPTIONS). stack() runs over it, its
    workers logging warnings only."""

    REPOS = ["hello-world", "busybox", "alpine"]
    HUB_LIMIT = 100000
    HUB_USERS = ()
    HUB_OPTIONS = {}

    @classmethod
    def setUpClass(cls):
        cls.catalog = programs.catalog(cls.REPOS)
        cls.hub = Standin(limit=cls.HUB_LIMIT, users=cls.HUB_USERS, **cls.HUB_OPTIONS).start()
        try:
            cls.pushed = cls.hub.load(cls.catalog)
        except BaseException:
            cls.hub.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.hub.stop()

    def stack(self, repos=None, hub=None, **kw):
        kw.setdefault("worker_log_level", "warn")
        return super().stack(self.REPOS if repos is None else repos, hub or self.hub, **kw)
