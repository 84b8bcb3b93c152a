"""compose/ on real container engines, driven with docker-compose only, as an operator would.

The engines are Debian's podman 4.3 serving the Docker API and Debian's Docker Engine 20.10
(harness/containers.py: podman's settings for hosts like these, a private dockerd, the
images built locally on a debootstrapped Debian 12 and cached); the first scenario runs on
each, the two fault scenarios on Docker Engine (they test hubsync, not the engine; podman
without systemd once left a SIGKILLed container unrestarted for 4 minutes). The stack is compose/docker-compose.yml with credentials.yml, a .env made from
.env.example, and a test override with two changes: the stack's network is one the test
creates (so the Docker Hub stand-in can listen on its gateway, an address the containers
reach, before the stack starts and across `down`), and the coordinator's official-images
source is a read-only mount of the real data. The redis and registry images are the .env's
REDIS_IMAGE and REGISTRY_IMAGE, built from Debian's redis-server and docker-registry. The
workers log in to the stand-in with a token given as the compose secret.

- `up -d --scale worker=3`: every health check turns healthy, the coordinator's first run
  completes, every tag on the target has the upstream digest, counted GETs are the minimum,
  podman pulls through the published registry port as a docker.io mirror and gets the
  upstream digest; the redis-cli recipes of docs/redis-cli.md run through `exec redis redis-cli` (on
  podman);
  `down` (volumes kept) and `up` again: the next run costs 0 GETs and writes nothing.
- A worker process killed with SIGKILL and `docker-compose restart redis`, both mid-run: the
  run converges, nothing lost or doubled, Redis comes back from the AOF on its volume.
- `up -d --scale worker=1` mid-run: the removed workers hand their jobs back within their
  stop grace (SIGTERM), and the run completes with the one left.
- After each: the token shows nowhere in `docker-compose logs`, the containers' inspect
  output, Redis (a dump of every key) or the run reports."""
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import unittest

from harness import OFFICIAL_IMAGES, ROOT, free_port
from harness.containers import Docker, Podman, build_images
from harness.podman import Podman as PodmanClient, registries_conf
from harness.programs import catalog
from harness.standin import Standin
from harness.target import head, pushed_tags
from integration.test_docs import RECIPES, read, recipe_args, recipe_commands, recipe_values
from standin.loader import totals

COMPOSE_DIR = os.path.join(ROOT, "compose")
REPOS = ["hello-world", "busybox", "alpine"]
IMAGE_UID = 10001  # the user compose/Dockerfile's image runs as
USER = "hubsync-compose"
# The Docker Hub token: a canary that must never show outside its secret file.
TOKEN = "dckr_pat_" + secrets.token_hex(20)
WORKER_SCALE = 3
UPSTREAM_COUNTERS = ("token_requests", "manifest_get", "manifest_head", "blob_get", "blob_head")

_module = {}


def setUpModule():
    """Both engines, with the images: podman builds them (or finds them cached), docker gets
    a copy; in each, hubsync's image is also hubsync:latest, the name docker-compose.yml
    gives it (so compose runs it instead of building one)."""
    try:
        podman = _module["podman"] = Podman().start()
        t0 = time.time()
        images = _module["images"] = build_images(podman, say=lambda t: print("  " + t,
                                                                             flush=True))
        docker = _module["docker"] = Docker().start()
        t1 = time.time()
        docker.load(podman, images.values())
        print("  images: %.1fs in podman (%s), %.1fs more in docker"
              % (t1 - t0, podman.cache, time.time() - t1), flush=True)
        for engine in (podman, docker):
            engine.remove_leftovers(r"hubsync-test-(\d+)\b")
            engine.tag(images["hubsync"], "hubsync", "latest")
    except BaseException:
        tearDownModule()
        raise


def tearDownModule():
    for name in ("docker", "podman"):
        if name in _module:
            _module.pop(name).stop()


def wait_for(what, check, timeout=240, interval=0.5):
    """check()'s first true value, polled; AssertionError naming `what` at the timeout."""
    deadline = time.time() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError("timed out after %ds waiting for %s" % (timeout, what))
        time.sleep(interval)


def busy_workers(stack):
    """The hosts (container ids) of the workers holding jobs of the current run, while it has
    jobs left."""
    st = stack.status()
    run = st["current_run"]
    return run and run["jobs_done"] < run["jobs_total"] and [
        w["id"].split(":")[0] for w in st["workers"] if w["in_flight"] > 0]


class Stack:
    """One compose project of the deployment: its .env, override file and docker-compose
    command line, and the health checks the engine's timer would run, every 2 s."""

    def __init__(self, engine, name, network, official_images, token_file, settings):
        self.engine = engine
        self.name = name
        self.dir = tempfile.mkdtemp(prefix="hubsync-stack-")
        self.redis_port = free_port()
        self.registry_port = free_port()
        env = {
            "REDIS_IMAGE": _module["images"]["redis"],
            "REGISTRY_IMAGE": _module["images"]["registry"],
            "REDIS_PUBLISH": "127.0.0.1:%d" % self.redis_port,
            "REGISTRY_PUBLISH": "127.0.0.1:%d" % self.registry_port,
            "HUBSYNC_OFFICIAL_IMAGES": "/srv/official-images.git",
            "HUBSYNC_REPOS": ",".join(REPOS),
            "HUBSYNC_UPSTREAM_USERNAME": USER,
            "DOCKERHUB_TOKEN_FILE": token_file,
        }
        env.update(settings)
        # What an operator does: .env.example with their values.
        lines = []
        with open(os.path.join(COMPOSE_DIR, ".env.example")) as f:
            for line in f:
                k = line.split("=", 1)[0]
                lines.append("%s=%s\n" % (k, env.pop(k)) if "=" in line and k in env else line)
        lines += ["%s=%s\n" % kv for kv in env.items()]
        self.env_file = os.path.join(self.dir, ".env")
        with open(self.env_file, "w") as f:
            f.writelines(lines)
        self.override = os.path.join(self.dir, "test-override.yml")
        with open(self.override, "w") as f:
            f.write("services:\n  coordinator:\n    volumes:\n"
                    "      - %s:/srv/official-images.git:ro\n"
                    "networks:\n  default:\n    external: true\n    name: %s\n"
                    % (official_images, network))
        self.follower = None
        self._ticking = threading.Event()
        self._ticker = threading.Thread(target=self._tick, daemon=True)
        self._ticker.start()

    def _tick(self):
        while not self._ticking.wait(2.0):
            try:
                self.engine.check_health(self.name)
            except OSError:
                pass  # the engine is stopping

    def command(self, *args):
        """(argv, environment) of docker-compose for this project."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("HUBSYNC_", "COMPOSE_", "DOCKER"))}
        env["DOCKER_HOST"] = self.engine.docker_host
        return ["docker-compose", "--project-name", self.name, "--env-file", self.env_file,
                "-f", os.path.join(COMPOSE_DIR, "docker-compose.yml"),
                "-f", os.path.join(COMPOSE_DIR, "credentials.yml"),
                "-f", self.override] + list(args), env

    def compose(self, *args, timeout=300, check=True, binary=False):
        cmd, env = self.command(*args)
        p = subprocess.run(cmd, env=env, capture_output=True, text=not binary, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError("docker-compose %s: exit %d\n%s" % (" ".join(args),
                                                                     p.returncode,
                                                                     p.stderr[-4000:]))
        return p

    def follow_logs(self, service):
        """Start `docker-compose logs --follow` of a service into a file (followed_logs()
        stops it and returns what it got)."""
        cmd, env = self.command("logs", "--follow", "--no-color", service)
        with open(os.path.join(self.dir, "followed.log"), "w") as out:
            self.follower = subprocess.Popen(cmd, env=env, stdout=out,
                                             stderr=subprocess.STDOUT)

    def followed_logs(self):
        self.follower.terminate()
        self.follower.wait(timeout=30)
        with open(os.path.join(self.dir, "followed.log")) as f:
            return f.read()

    def redis_cli(self, *args):
        return self.compose("exec", "-T", "redis", "redis-cli", *args).stdout

    def status(self):
        """`hubsync-coordinator status --json`, run in the coordinator's container."""
        p = self.compose("exec", "-T", "coordinator", "hubsync-coordinator", "status", "--json")
        return json.loads(p.stdout)

    def run_record(self, run):
        out = self.compose("exec", "-T", "redis", "redis-cli", "-2", "--json", "HGETALL",
                           "hubsync:run:" + run).stdout
        flat = json.loads(out)
        return dict(zip(flat[0::2], flat[1::2]))

    def wait_run(self, after=(), timeout=300):
        """The record of the newest run not in `after` once it has finished."""
        def finished():
            runs = [r for r in self.status()["runs"] if r["id"] not in after]
            return runs and runs[0]["state"] not in ("running", None) and runs[0]["id"]
        return self.run_record(wait_for("a run to finish", finished, timeout))

    def containers(self, service=None, all=False):
        return self.engine.containers(self.name, service, all)

    def inspect(self, container_id):
        return self.engine.api("GET", "/containers/%s/json" % container_id)[1]

    def healthy(self, count):
        states = [(self.inspect(c["Id"])["State"].get("Health") or {}).get("Status")
                  for c in self.containers()]
        return len(states) == count and set(states) == {"healthy"}

    def stop(self):
        if self.follower is not None and self.follower.poll() is None:
            self.follower.kill()
            self.follower.wait()
        self.compose("down", "--volumes", "--timeout", "20", check=False)
        self._ticking.set()
        self._ticker.join()
        shutil.rmtree(self.dir, ignore_errors=True)


class ComposeUp:
    """The scenarios, on the engine ENGINE (a TestCase below for each)."""

    ENGINE = None

    @classmethod
    def setUpClass(cls):
        cls.engine = _module[cls.ENGINE]
        cls.tmp = tempfile.mkdtemp(prefix="hubsync-compose-up-")
        cls.network = "hubsync-test-%d-%s" % (os.getpid(), cls.ENGINE)
        gateway = cls.engine.create_network(cls.network, _module["images"]["base"])
        cls.catalog = catalog(REPOS)
        cls.hub = Standin(host=gateway, limit=100000, users=["%s:%s:100000" % (USER, TOKEN)])
        try:
            cls.hub.start()
            cls.pushed = cls.hub.load(cls.catalog)
        except BaseException:
            cls.tearDownClass()
            raise
        cls.least = totals(cls.pushed, REPOS)
        # The coordinator (uid 10001) reads its source through a read-only mount; libgit2
        # refuses a repository another user owns, so the mount is a copy the image's user owns.
        cls.official_images = os.path.join(cls.tmp, "official-images.git")
        shutil.copytree(OFFICIAL_IMAGES, cls.official_images)
        cls.token_file = os.path.join(cls.tmp, "dockerhub_token")
        with open(os.open(cls.token_file, os.O_WRONLY | os.O_CREAT, 0o400), "w") as f:
            f.write(TOKEN + "\n")
        for d, _, files in os.walk(cls.tmp):
            for name in [d] + [os.path.join(d, f) for f in files]:
                os.chown(name, IMAGE_UID, -1)

    @classmethod
    def tearDownClass(cls):
        cls.hub.stop()
        cls.engine.remove_network(cls.network)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def stack(self):
        name = "%s-%s" % (self.network, self._testMethodName.split("_")[1])
        # Short leases and stop grace: the kill and scale-down tests finish in seconds.
        env = {"HUBSYNC_UPSTREAM": self.hub.url, "HUBSYNC_LEASE_MS": "5000",
               "HUBSYNC_STOP_GRACE": "1", "HUBSYNC_LOG_LEVEL": "info"}
        s = Stack(self.engine, name, self.network, self.official_images, self.token_file, env)
        t0 = time.time()
        self.addCleanup(lambda: print("  %s %.0fs" % (name, time.time() - t0), flush=True))
        self.addCleanup(s.stop)
        return s

    def up(self, stack, workers=WORKER_SCALE):
        stack.compose("up", "-d", "--scale", "worker=%d" % workers)

    def gets(self):
        return self.hub.counters()["manifest_get"]

    def slow_upstream(self, ms):
        """Every stand-in request takes ms longer: the run lasts long enough for the fault."""
        self.hub.config(latency_ms=ms)
        self.addCleanup(self.hub.config, latency_ms=0)

    def assert_mirrored(self, stack):
        url = "http://127.0.0.1:%d" % stack.registry_port
        for (repo, tag), digest in pushed_tags(self.pushed, REPOS).items():
            self.assertEqual(head(url, "library/" + repo, tag), digest, "%s:%s" % (repo, tag))

    def assert_converged(self, stack, run):
        """The run completed, every job once, nothing dead or left pending, every tag right."""
        self.assertEqual(run["state"], "done", run)
        self.assertEqual(run["jobs_done"], run["jobs_total"], run)
        self.assertEqual((run["jobs_failed"], run["jobs_dead"]), ("0", "0"), run)
        self.assertEqual(int(run["tags_written"]) + int(run["tags_unchanged"]),
                         self.least["tags"], run)
        self.assertEqual(stack.redis_cli("XLEN", "hubsync:jobs:dead").strip(), "0")
        pending = stack.redis_cli("XPENDING", "hubsync:jobs", "workers").split()
        self.assertEqual(pending[0], "0", pending)
        self.assert_mirrored(stack)
        self.assertEqual(self.hub.counters()["auth_leaks"], 0)

    def assert_token_nowhere(self, stack):
        logs = stack.compose("logs", "--no-color").stdout
        self.assertIn("coordinator_1", logs)
        self.assertNotIn(TOKEN, logs)
        for c in stack.containers(all=True):
            self.assertNotIn(TOKEN, json.dumps(stack.inspect(c["Id"])), c["Names"])
        # Every key and value: an RDB dump without compression (a compressed string could
        # hide the token from a byte search).
        stack.redis_cli("CONFIG", "SET", "rdbcompression", "no")
        dump = stack.compose("exec", "-T", "redis", "sh", "-c",
                             "redis-cli --rdb /tmp/dump.rdb >/dev/null && cat /tmp/dump.rdb",
                             binary=True).stdout
        self.assertIn(b"hubsync:synced-commit", dump)
        self.assertNotIn(TOKEN.encode(), dump)
        status = stack.status()
        self.assertNotIn(TOKEN, json.dumps(status))
        for r in status["runs"]:
            self.assertNotIn(TOKEN, json.dumps(stack.run_record(r["id"])))
        # The token was used: the workers' pulls count against the account.
        self.assertEqual([b["source"] for b in status["budget"]], [USER])

    def test_1_up_sync_pull_then_down_and_up_costs_nothing(self):
        stack = self.stack()
        gets = self.gets()
        t0 = time.time()
        self.up(stack)
        wait_for("every container healthy", lambda: stack.healthy(3 + WORKER_SCALE), 180)
        healthy_s = time.time() - t0
        first = stack.wait_run()
        print("  up to healthy %.1fs, first run done %.1fs" % (healthy_s, time.time() - t0))
        self.assert_converged(stack, first)
        self.assertEqual(first["tags_written"], str(self.least["tags"]))
        self.assertEqual(first["upstream_manifest_gets"], str(self.least["manifest_gets_min"]))
        self.assertEqual(self.gets() - gets, self.least["manifest_gets_min"])
        self.assertEqual(len([w for w in stack.status()["workers"] if w["alive"]]),
                         WORKER_SCALE)

        # A client: podman with the published registry port as its docker.io mirror.
        with PodmanClient(registries_conf(self.hub.host, "127.0.0.1:%d" % stack.registry_port)) as p:
            before = self.hub.counters()
            p.pull("docker.io/library/hello-world:latest")
            after = self.hub.counters()
            self.assertEqual(p.digest("docker.io/library/hello-world:latest"),
                             pushed_tags(self.pushed, REPOS)[("hello-world", "latest")])
        self.assertEqual(sum(after[c] - before[c] for c in UPSTREAM_COUNTERS), 0)

        if self.ENGINE == "podman":
            # The same redis-cli on either engine: once is enough (30 execs, ~40 s).
            self.recipes_run_through_compose_exec(stack, first)

        stack.compose("down")
        self.assertEqual(stack.containers(all=True), [])
        gets = self.gets()
        self.up(stack)
        again = stack.wait_run(after={first["id"]})
        self.assert_converged(stack, again)
        self.assertEqual(self.gets(), gets)
        for k in ("upstream_manifest_gets", "tags_written", "manifests_pushed",
                  "blobs_copied", "blob_bytes_copied"):
            self.assertEqual(again[k], "0", (k, again))
        self.assertEqual(stack.redis_cli("GET", "hubsync:synced-commit").strip(),
                         self.catalog["commit"])
        self.assert_token_nowhere(stack)

    def recipes_run_through_compose_exec(self, stack, run):
        recipes = read(RECIPES)
        self.assertIn("docker compose exec redis redis-cli", recipes)
        cli = stack.redis_cli
        values = recipe_values(cli, "http://registry:5000", USER, run["id"],
                               cli("ZRANGE", "hubsync:workers", "0", "0").strip())
        self.assertTrue(values["<worker>"] and values["<epoch>"] and values["<digest>"], values)
        cmds = recipe_commands(recipes)
        self.assertGreater(len(cmds), 25)
        for argv in cmds:
            args = recipe_args(argv, values)
            p = stack.compose("exec", "-T", "redis", "redis-cli", *args, check=False)
            text = p.stdout + p.stderr
            self.assertEqual(p.returncode, 0, (args, text))
            self.assertNotRegex(text, r"^(\(error\) )?(ERR|WRONGTYPE)", (args, text))
        self.assertIn("remaining", cli("HGETALL", "hubsync:budget:" + USER))


class KillRestartScenario:
    """A worker killed and Redis restarted mid-run (a ComposeUp mixin)."""

    def test_2_worker_killed_and_redis_restarted_mid_run(self):
        stack = self.stack()
        self.slow_upstream(120)
        t0 = time.time()
        self.up(stack)
        host = wait_for("a worker holding jobs", lambda: busy_workers(stack))[0]
        victim = next(c for c in stack.containers("worker") if c["Id"].startswith(host))
        index = victim["Labels"]["com.docker.compose.container-number"]
        # SIGKILL to the worker process (as the OOM killer would): no chance to hand back.
        stack.compose("exec", "-T", "--index", index, "worker", "sh", "-c",
                      'kill -KILL "$(pidof hubsync-worker)"', check=False)
        wait_for("the killed worker's container to restart by its policy",
                 lambda: stack.inspect(victim["Id"])["RestartCount"] >= 1 and
                 stack.inspect(victim["Id"])["State"]["Running"])

        run = stack.status()["current_run"]
        self.assertLess(run["jobs_done"], run["jobs_total"], "the run ended before Redis "
                        "could be restarted mid-run")
        stack.compose("restart", "redis")
        restarted = time.time() - t0
        # What Redis held before the restart is there after it (its AOF, on its volume).
        self.assertEqual(stack.run_record(run["id"])["state"], "running")
        self.assertIn("aof_enabled:1", stack.redis_cli("INFO", "persistence"))
        self.assertIn("DB loaded from append only file",
                      stack.compose("logs", "--no-color", "redis").stdout)
        self.assertIn("appendonly.aof", stack.compose("exec", "-T", "redis", "ls",
                                                      "/data/appendonlydir").stdout)

        done = stack.wait_run()
        print("  restarted Redis at %.1fs, the run done at %.1fs" % (restarted, time.time() - t0))
        self.assertEqual(done["id"], run["id"])
        self.assert_converged(stack, done)
        self.assert_token_nowhere(stack)


class ScaleDownScenario:
    """Workers scaled down mid-run (a ComposeUp mixin)."""

    def test_3_scale_down_mid_run_hands_jobs_back(self):
        stack = self.stack()
        self.slow_upstream(150)
        self.up(stack)
        wait_for("every worker holding jobs",
                 lambda: len(busy_workers(stack) or ()) == WORKER_SCALE)
        # The removed containers' logs go with them: follow them from before.
        stack.follow_logs("worker")
        t0 = time.time()
        out = stack.compose("up", "-d", "--scale", "worker=1").stderr
        stopped_s = time.time() - t0
        print("  scaled down in %.1fs" % stopped_s, flush=True)
        self.assertIn("_worker_3 ... done", out)
        # SIGTERM, then SIGKILL after stop_grace_period (90 s): they stopped by themselves.
        self.assertLess(stopped_s, 90, out)
        self.assertEqual([c["Labels"]["com.docker.compose.container-number"]
                          for c in stack.containers("worker")], ["1"])

        done = stack.wait_run()
        self.assert_converged(stack, done)
        # (A removed container's last lines may miss the stream: its exit is not checked here
        # but by the time it took, under the SIGKILL deadline.)
        text = stack.followed_logs()
        for n in (2, 3):
            mine = [line for line in text.splitlines() if line.startswith("worker_%d " % n)]
            self.assertTrue(any("taking no new job" in line for line in mine), mine)
            self.assertTrue(any("handing it back" in line for line in mine), mine)
        self.assert_token_nowhere(stack)


class PodmanTest(ComposeUp, unittest.TestCase):
    ENGINE = "podman"


class DockerTest(ComposeUp, KillRestartScenario, ScaleDownScenario, unittest.TestCase):
    ENGINE = "docker"


if __name__ == "__main__":
    unittest.main()
