"""A whole hubsync on loopback: Redis, a target docker-registry and the Docker Hub stand-in
filled from the real official-images data, plus the coordinator and worker command lines.
The demo and the integration tests build on it. Python standard library only.

    rig = Rig("hello-world,alpine").start()
    workers = [rig.worker() for _ in range(2)]
    report = subprocess.run(rig.sync_command("--json"), stdout=PIPE)
    rig.stop()                      # workers get SIGTERM, servers stop, directories go
"""
import os
import shutil
import signal
import subprocess
import tempfile

from harness import BIN, OFFICIAL_IMAGES, RedisServer, Registry
from harness.mirror import catalog, head
from harness.standin import Standin

COORDINATOR = os.path.join(BIN, "hubsync-coordinator")
WORKER = os.path.join(BIN, "hubsync-worker")


class RigError(RuntimeError):
    pass


class Rig:
    """repos: what the coordinator syncs; hub_repos: what the stand-in holds (default the
    same); limit: the stand-in's anonymous pulls per window."""

    def __init__(self, repos, hub_repos=None, limit=10000, official_images=OFFICIAL_IMAGES):
        self.repos = repos
        self.hub_repos = hub_repos or repos
        self.limit = limit
        self.official_images = official_images
        self.dir = tempfile.mkdtemp(prefix="hubsync-rig-")
        # docker-registry is several times faster on tmpfs.
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.target_dir = tempfile.mkdtemp(prefix="hubsync-rig-target-", dir=shm)
        self.catalog = self.pushed = None
        self.redis = self.target = self.hub = None
        self.workers = []

    def start(self):
        for prog in (COORDINATOR, WORKER):
            if not os.access(prog, os.X_OK):
                raise RigError("%s is missing: run make first" % prog)
        try:
            try:
                self.catalog = catalog(self.hub_repos.split(","), source=self.official_images)
            except RuntimeError as e:
                raise RigError(str(e))
            self.redis = RedisServer().start()
            self.target = Registry(workdir=self.target_dir).start()
            self.hub = Standin(limit=self.limit).start()
            self.pushed = self.hub.load(self.catalog)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def target_host(self):
        return "127.0.0.1:%d" % self.target.port

    def sync_command(self, *extra):
        """argv of `hubsync-coordinator sync --once --wait` over this rig."""
        return [COORDINATOR, "sync", "--once", "--wait", "--redis", self.redis.url,
                "--official-images", self.official_images, "--upstream", self.hub.url,
                "--target", self.target.url, "--repos", self.repos] + list(extra)

    def worker(self, *extra, log=None, env=None):
        """Start a hubsync-worker on this rig's Redis; stderr to the file `log` (a name in the
        rig's directory) or inherited."""
        out = None
        if log is not None:
            out = open(os.path.join(self.dir, log), "w")
        try:
            p = subprocess.Popen([WORKER, "--redis", self.redis.url, "--upstream", self.hub.url,
                                  "--target", self.target.url] + list(extra),
                                 stdout=out, stderr=out,
                                 env=None if env is None else dict(os.environ, **env))
        finally:
            if out is not None:
                out.close()
        self.workers.append(p)
        return p

    def log_path(self, name):
        return os.path.join(self.dir, name)

    def upstream_digest(self, repo, tag):
        """The index digest the stand-in serves for library/<repo>:<tag>."""
        for r in self.pushed["repositories"]:
            if r["name"] == "library/" + repo:
                return r["tags"][tag]
        raise KeyError("%s:%s is not on the stand-in" % (repo, tag))

    def target_digest(self, repo, tag):
        """The digest the target serves for library/<repo>:<tag>, or None if it lacks it."""
        return head(self.target.url, "library/" + repo, tag)

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

    def stop(self):
        self.stop_workers()
        for s in (self.hub, self.target, self.redis):
            if s is not None:
                s.stop()
        if os.environ.get("HUBSYNC_KEEP_TMP") != "1":
            shutil.rmtree(self.target_dir, ignore_errors=True)
            shutil.rmtree(self.dir, ignore_errors=True)
