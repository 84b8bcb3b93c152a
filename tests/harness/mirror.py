"""What end-to-end tests of a mirror share: the catalog of the real official-images data,
what the stand-in serves, what a registry holds (HEAD with every manifest type accepted),
one sync run (coordinator plus --exit-when-idle workers), and a TestCase with a stand-in
per class and a fresh Redis and target registry per test (StackCase without the stand-in)."""
import json
import os
import subprocess
import time
import unittest
import urllib.error
import urllib.request

from harness import BIN, OFFICIAL_IMAGES, RedisServer, Registry
from harness.standin import Standin
from standin import wire

ACCEPT = ", ".join([wire.OCI_INDEX, wire.DOCKER_LIST, wire.OCI_MANIFEST, wire.DOCKER_MANIFEST])


def catalog(repos, ref=None, source=OFFICIAL_IMAGES):
    """`hubsync-coordinator catalog --json` of these repositories; RuntimeError with the
    coordinator's own message if it fails."""
    cmd = [BIN + "/hubsync-coordinator", "catalog", "--official-images", source, "--repos",
           ",".join(repos), "--json"]
    if ref:
        cmd += ["--ref", ref]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("hubsync-coordinator catalog: %s" % p.stderr.strip())
    return json.loads(p.stdout)


def pushed_tags(pushed, repos):
    """{(repo, tag): index digest} of what the stand-in serves."""
    out = {}
    for r in pushed["repositories"]:
        name = r["name"].split("/", 1)[1]
        if name in repos:
            for tag, digest in r["tags"].items():
                out[(name, tag)] = digest
    return out


def head(registry_url, repo, ref):
    """The digest registry_url serves for repo:ref, or None on 404."""
    req = urllib.request.Request("%s/v2/%s/manifests/%s" % (registry_url, repo, ref),
                                 method="HEAD", headers={"Accept": ACCEPT})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.headers["Docker-Content-Digest"]
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


def enqueued(redis):
    """The current run has all its jobs in the queue."""
    run = redis.cli_raw("GET", "hubsync:runs:current").strip()
    return bool(run) and redis.cli_raw("HGET", "hubsync:run:" + run, "enqueued").strip() == "1"


def dead_letters(redis):
    """[{field: value}] of the dead-letter stream."""
    p = subprocess.run(["redis-cli", "-p", str(redis.port), "-2", "--json", "XRANGE",
                        "hubsync:jobs:dead", "-", "+"], stdout=subprocess.PIPE, text=True,
                       check=True, timeout=30)
    return [dict(zip(fields[0::2], fields[1::2])) for _, fields in json.loads(p.stdout)]


class Sync:
    """One sync run: coordinator --once --wait plus workers with --exit-when-idle."""

    def __init__(self, hub, redis, target, repos, source=OFFICIAL_IMAGES, ref=None,
                 workers=2, extra=(), worker_extra=(), worker_env=None):
        self.cmd = [BIN + "/hubsync-coordinator", "sync", "--once", "--wait", "--json",
                    "--redis", redis.url, "--official-images", source, "--upstream", hub.url,
                    "--target", target.url, "--repos", ",".join(repos)] + list(extra)
        if ref:
            self.cmd += ["--ref", ref]
        self.redis = redis
        self.workers = workers
        self.worker_cmd = [BIN + "/hubsync-worker", "--redis", redis.url, "--upstream", hub.url,
                           "--target", target.url, "--exit-when-idle", "--log-level",
                           "warn"] + list(worker_extra)
        self.worker_env = None if worker_env is None else dict(os.environ, **worker_env)

    def run(self, timeout=300):
        coord = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        # Workers join once the run's jobs are in the queue (the coordinator enqueues, then
        # waits; an --exit-when-idle worker leaves a queue that stays empty).
        deadline = time.time() + 60
        while time.time() < deadline and coord.poll() is None and not enqueued(self.redis):
            time.sleep(0.05)
        ws = [subprocess.Popen(self.worker_cmd, env=self.worker_env)
              for _ in range(self.workers)]
        try:
            out, err = coord.communicate(timeout=timeout)
            for w in ws:
                w.wait(timeout=60)
        except subprocess.TimeoutExpired:
            # A run past its bound is a failure; its programs must not outlive the test.
            for p in [coord] + ws:
                p.kill()
                p.wait()
            raise
        self.rc = coord.returncode
        self.stderr = err
        self.report = json.loads(out) if out.strip() else None
        return self


class StackCase(unittest.TestCase):
    """A fresh Redis (RedisServer(**REDIS_OPTIONS)) and target registry (TARGET, a harness
    Registry class) for each test, and the programs a test starts (appended to self.procs)
    killed when it ends. A test may replace self.redis: the one there at the end is stopped."""

    TARGET = Registry
    REDIS_OPTIONS = {}

    def setUp(self):
        self.redis = RedisServer(**self.REDIS_OPTIONS).start()
        self.addCleanup(lambda: self.redis.stop())
        self.target = self.TARGET().start()
        self.addCleanup(self.target.stop)
        self.procs = []
        self.addCleanup(self.kill_procs)  # runs first: programs go before their servers

    def kill_procs(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


class MirrorCase(StackCase):
    """StackCase plus a stand-in holding REPOS (real official-images data) for the class:
    Standin(limit=HUB_LIMIT, users=HUB_USERS, **HUB_OPTIONS)."""

    REPOS = ["hello-world", "busybox", "alpine"]
    HUB_LIMIT = 100000
    HUB_USERS = ()
    HUB_OPTIONS = {}

    @classmethod
    def setUpClass(cls):
        cls.catalog = catalog(cls.REPOS)
        cls.hub = Standin(limit=cls.HUB_LIMIT, users=cls.HUB_USERS, **cls.HUB_OPTIONS).start()
        try:
            cls.pushed = cls.hub.load(cls.catalog)
        except BaseException:
            cls.hub.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.hub.stop()
