"""compose/: the deployment files.

- docker-compose.yml validates with Debian's docker-compose 1.29 (no engine needed) with
  .env.example, with no .env at all, and with credentials.yml; the effective configuration
  has what the deployment relies on (Redis AOF and noeviction, health checks, a scalable
  worker with a graceful stop, the coordinator as a scheduled daemon on a volume).
- The Dockerfile's stages install the build and runtime sections of .ci/packages: the build
  section holds the package of every header and pkg-config module the Makefile uses, the
  build stage's steps, replayed here, build both programs, and the runtime section has the
  package of every shared library the programs link.
- The GitHub Actions example installs the same sections, and its worker command, run as it
  is written, joins a running sync through Redis and drains it."""
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import unittest

from harness import BIN, ROOT
from harness.stack import Stack

COMPOSE_DIR = os.path.join(ROOT, "compose")
COMPOSE_FILE = os.path.join(COMPOSE_DIR, "docker-compose.yml")
CREDENTIALS_FILE = os.path.join(COMPOSE_DIR, "credentials.yml")
ENV_EXAMPLE = os.path.join(COMPOSE_DIR, ".env.example")
DOCKERFILE = os.path.join(COMPOSE_DIR, "Dockerfile")
WORKFLOW = os.path.join(COMPOSE_DIR, "github-actions-worker.yml")
DEPS = os.path.join(ROOT, ".ci", "deps")
# In every debian:12 image already.
BASE_IMAGE_PACKAGES = {"libc6"}


def load_yaml(text):
    """Parse YAML with the library docker-compose itself runs on (its interpreter's yaml);
    the tests stay standard-library only."""
    with open(shutil.which("docker-compose")) as f:
        interpreter = f.readline()[2:].strip()
    p = subprocess.run([interpreter, "-c", "import json, sys, yaml; "
                        "json.dump(yaml.safe_load(sys.stdin), sys.stdout)"],
                       input=text, capture_output=True, text=True, check=True)
    return json.loads(p.stdout)


def read_env(path):
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                k, _, v = line.partition("=")
                env[k] = v
    return env


def section(name):
    """The packages of one section of .ci/packages."""
    out = subprocess.run([DEPS, "--list", name], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def owners(paths):
    """The Debian packages that own these files."""
    out = subprocess.run(["dpkg", "-S"] + sorted(paths), capture_output=True, text=True,
                         check=True).stdout
    return {line.split(":")[0] for line in out.splitlines()}


def dockerfile_stages(path):
    """[(base image, alias, [(instruction, arguments)])] with continuations joined."""
    stages = []
    with open(path) as f:
        text = re.sub(r"\\\n", " ", f.read())
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            parts = rest.split()
            stages.append((parts[0], parts[2] if len(parts) > 2 else None, []))
        else:
            stages[-1][2].append((word.upper(), rest.strip()))
    return stages


def seconds(duration):
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)


class ComposeTest(unittest.TestCase):
    def config(self, *files, env_text=None, extra_env=None):
        """(exit code, effective configuration or None, stderr) of docker-compose config."""
        tmp = tempfile.mkdtemp(prefix="hubsync-compose-")
        self.addCleanup(shutil.rmtree, tmp, True)
        env_file = os.path.join(tmp, ".env")
        with open(env_file, "w") as f:
            f.write(env_text if env_text is not None else open(ENV_EXAMPLE).read())
        cmd = ["docker-compose"]
        for name in files or (COMPOSE_FILE,):
            cmd += ["-f", name]
        # Only the variables under test: none of the caller's HUBSYNC_* or COMPOSE_*.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("HUBSYNC_", "COMPOSE_", "DOCKERHUB_"))}
        env.update(extra_env or {})
        p = subprocess.run(cmd + ["--env-file", env_file, "config"], capture_output=True,
                           text=True, env=env, timeout=120)
        return p.returncode, load_yaml(p.stdout) if p.returncode == 0 else None, p.stderr

    def effective(self, *files, **kw):
        rc, cfg, err = self.config(*files, **kw)
        self.assertEqual(rc, 0, err)
        return cfg

    def test_validates_with_the_example_env(self):
        cfg = self.effective()
        self.assertEqual(set(cfg["services"]), {"redis", "registry", "coordinator", "worker",
                                                "prometheus"})
        self.assertEqual(set(cfg["volumes"]), {"redis-data", "registry-data",
                                               "coordinator-work", "prometheus-data"})

    def test_prometheus_is_an_optional_profile_scraping_both_programs(self):
        cfg = self.effective(env_text="HUBSYNC_METRICS_LISTEN=0.0.0.0:9100\n")
        prom = cfg["services"]["prometheus"]
        self.assertEqual(prom["profiles"], ["metrics"])  # `up` without the profile skips it
        for name in ("coordinator", "worker"):
            self.assertNotIn("profiles", cfg["services"][name])
            self.assertEqual(cfg["services"][name]["environment"]["HUBSYNC_METRICS_LISTEN"],
                             "0.0.0.0:9100")
        config = os.path.join(COMPOSE_DIR, "prometheus.yml")
        self.assertIn(config + ":/etc/prometheus/prometheus.yml:ro", prom["volumes"])
        p = subprocess.run(["promtool", "check", "config", config], capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        with open(config) as f:
            jobs = {j["job_name"]: j for j in load_yaml(f.read())["scrape_configs"]}
        self.assertEqual(jobs["hubsync-coordinator"]["static_configs"][0]["targets"],
                         ["coordinator:9100"])
        self.assertEqual(jobs["hubsync-worker"]["dns_sd_configs"][0],
                         {"names": ["worker"], "type": "A", "port": 9100})

    def test_validates_without_any_setting(self):
        cfg = self.effective(env_text="")
        env = cfg["services"]["coordinator"]["environment"]
        self.assertEqual(env["HUBSYNC_INTERVAL"], "21600")
        self.assertEqual(env["HUBSYNC_TARGET"], "http://registry:5000")
        self.assertEqual(cfg["services"]["worker"]["environment"]["HUBSYNC_STOP_GRACE"], "60")

    def test_redis_keeps_the_queue(self):
        redis = self.effective()["services"]["redis"]
        self.assertEqual(redis["image"], "redis:7.0")
        cmd = " ".join(redis["command"])
        for flag in ("--appendonly yes", "--appendfsync everysec",
                     "--maxmemory-policy noeviction"):
            self.assertIn(flag, cmd)
        self.assertIn("redis-data:/data", " ".join(redis["volumes"]))
        self.assertEqual(redis["healthcheck"]["test"], ["CMD", "redis-cli", "ping"])
        self.assertEqual(redis["ports"], ["127.0.0.1:6379:6379/tcp"])

    def test_registry_is_the_target(self):
        cfg = self.effective()
        reg = cfg["services"]["registry"]
        self.assertEqual(reg["image"], "registry:2")
        self.assertIn("registry-data:/var/lib/registry", " ".join(reg["volumes"]))
        self.assertIn("http://127.0.0.1:5000/v2/", reg["healthcheck"]["test"])
        self.assertEqual(reg["environment"]["REGISTRY_STORAGE_DELETE_ENABLED"], "true")
        target = cfg["services"]["coordinator"]["environment"]["HUBSYNC_TARGET"]
        self.assertEqual(target, "http://registry:5000")

    def test_coordinator_is_a_scheduled_daemon_with_its_clone_on_a_volume(self):
        c = self.effective()["services"]["coordinator"]
        self.assertEqual(c["command"], ["hubsync-coordinator", "sync"])
        env = c["environment"]
        self.assertEqual(env["HUBSYNC_INTERVAL"], "21600")
        self.assertEqual(env["HUBSYNC_REDIS"], "redis://redis:6379")
        self.assertNotIn("HUBSYNC_ONCE", env)
        mounts = [v.split(":")[1] for v in c["volumes"]]
        self.assertTrue(any(env["HUBSYNC_WORKDIR"].startswith(m + "/") for m in mounts),
                        (env["HUBSYNC_WORKDIR"], mounts))
        self.assertTrue(c["init"])
        self.assertEqual(c["restart"], "unless-stopped")
        self.assertEqual(c["depends_on"]["redis"]["condition"], "service_healthy")
        self.assertEqual(c["healthcheck"]["test"],
                         ["CMD", "hubsync-coordinator", "status", "--health"])

    def test_commands_exist(self):
        # Every program command line of the compose file runs, with its environment, as far
        # as option parsing goes: --help of the same argv answers 0.
        cfg = self.effective()
        for name in ("coordinator", "worker"):
            s = cfg["services"][name]
            argvs = [s["command"]]
            if "healthcheck" in s:
                argvs.append(s["healthcheck"]["test"][1:])
            for argv in argvs:
                p = subprocess.run([os.path.join(BIN, argv[0])] + argv[1:] + ["--help"],
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual(p.returncode, 0, (argv, p.stdout, p.stderr))
                self.assertIn("usage:", p.stdout + p.stderr)

    def test_worker_scales_and_stops_gracefully(self):
        w = self.effective()["services"]["worker"]
        self.assertEqual(w["command"], ["hubsync-worker"])
        # Anything fixed per container would stop `docker compose up --scale worker=N`.
        self.assertNotIn("container_name", w)
        self.assertNotIn("ports", w)
        self.assertNotIn("HUBSYNC_WORKER_ID", w["environment"])
        self.assertTrue(w["init"])
        self.assertEqual(w["restart"], "unless-stopped")
        self.assertGreater(seconds(w["stop_grace_period"]),
                           int(w["environment"]["HUBSYNC_STOP_GRACE"]) + 10)
        self.assertEqual(w["environment"]["HUBSYNC_REDIS"], "redis://redis:6379")
        self.assertEqual(w["depends_on"]["redis"]["condition"], "service_healthy")

    def test_workers_serve_the_coordinators_registries(self):
        # A worker refuses jobs that name another upstream or target than its own.
        mine = "HUBSYNC_UPSTREAM=https://mirror.example\nHUBSYNC_TARGET=https://reg.example:5443\n"
        for env_text in (None, "", mine):
            cfg = self.effective(env_text=env_text)
            coord = cfg["services"]["coordinator"]["environment"]
            worker = cfg["services"]["worker"]["environment"]
            for v in ("HUBSYNC_UPSTREAM", "HUBSYNC_TARGET"):
                self.assertEqual(worker[v], coord[v], (v, env_text))
        self.assertEqual(worker["HUBSYNC_TARGET"], "https://reg.example:5443")

    def test_programs_are_built_from_the_dockerfile(self):
        cfg = self.effective()
        for name in ("coordinator", "worker"):
            s = cfg["services"][name]
            self.assertEqual(s["build"]["context"], ROOT)
            self.assertEqual(s["build"]["dockerfile"], "compose/Dockerfile")
            self.assertEqual(s["image"], "hubsync:latest")

    def test_credentials_come_from_a_secret_file(self):
        files = (COMPOSE_FILE, CREDENTIALS_FILE)
        rc, _, err = self.config(*files)
        self.assertNotEqual(rc, 0)
        self.assertIn("set HUBSYNC_UPSTREAM_USERNAME in .env", err)
        env_text = open(ENV_EXAMPLE).read() + "HUBSYNC_UPSTREAM_USERNAME=alice\n"
        cfg = self.effective(*files, env_text=env_text)
        w = cfg["services"]["worker"]
        self.assertEqual(w["environment"]["HUBSYNC_UPSTREAM_USERNAME"], "alice")
        self.assertEqual(w["environment"]["HUBSYNC_UPSTREAM_PASSWORD_FILE"],
                         "/run/secrets/dockerhub_token")
        self.assertNotIn("HUBSYNC_UPSTREAM_PASSWORD", w["environment"])
        self.assertEqual(w["secrets"][0]["source"], "dockerhub_token")
        self.assertEqual(cfg["secrets"]["dockerhub_token"]["file"],
                         os.path.join(COMPOSE_DIR, "secrets", "dockerhub_token"))
        # The same through COMPOSE_FILE in .env, as credentials.yml tells operators.
        env_text += "COMPOSE_FILE=docker-compose.yml:credentials.yml\n"
        tmp = tempfile.mkdtemp(prefix="hubsync-compose-")
        self.addCleanup(shutil.rmtree, tmp, True)
        shutil.copy(COMPOSE_FILE, tmp)
        shutil.copy(CREDENTIALS_FILE, tmp)
        with open(os.path.join(tmp, ".env"), "w") as f:
            f.write(env_text)
        p = subprocess.run(["docker-compose", "config"], cwd=tmp, capture_output=True,
                           text=True, timeout=120,
                           env={k: v for k, v in os.environ.items()
                                if not k.startswith(("HUBSYNC_", "COMPOSE_"))})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("HUBSYNC_UPSTREAM_PASSWORD_FILE: /run/secrets/dockerhub_token", p.stdout)

    def test_env_example_holds_no_secret_and_nothing_unused(self):
        env = read_env(ENV_EXAMPLE)
        for k, v in env.items():
            if re.search(r"PASSWORD|TOKEN|SECRET", k) and not k.endswith("_FILE"):
                self.fail("%s belongs in a secret file, not in .env" % k)
        compose_text = open(COMPOSE_FILE).read() + open(CREDENTIALS_FILE).read()
        for k in env:
            self.assertIn("${%s:" % k, compose_text, "%s is set in .env.example but unused" % k)


class DockerfileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.stages = dockerfile_stages(DOCKERFILE)

    def runs(self, stage):
        return [a for ins, a in stage[2] if ins == "RUN"]

    def test_two_stages_on_debian_12(self):
        self.assertEqual(len(self.stages), 2)
        self.assertEqual([s[0] for s in self.stages], ["debian:12", "debian:12"])
        self.assertEqual(self.stages[0][1], "build")

    def test_build_stage_installs_what_the_makefile_compiles_with(self):
        self.assertTrue(any(r.startswith(".ci/deps --update build ") for r in
                            self.runs(self.stages[0])), self.runs(self.stages[0]))
        build = section("build")
        self.assertTrue({"build-essential", "pkg-config"} <= build)
        modules = re.search(r"^PKGS\s*:=(.*)$", open(os.path.join(ROOT, "Makefile")).read(),
                            re.M).group(1).split()
        files = set()
        for m in modules:
            d = subprocess.run(["pkg-config", "--variable=pcfiledir", m], capture_output=True,
                               text=True, check=True).stdout.strip()
            files.add(os.path.join(d, m + ".pc"))
        # hiredis and libev are linked without pkg-config: their headers tell the package.
        files.update(["/usr/include/hiredis/hiredis.h", "/usr/include/ev.h"])
        self.assertEqual(owners(files) - build, set())

    def test_runtime_stage_has_every_linked_library(self):
        self.assertTrue(any(r.startswith("/tmp/ci/deps --update runtime ") for r in
                            self.runs(self.stages[1])), self.runs(self.stages[1]))
        runtime = section("runtime")
        self.assertFalse({p for p in runtime if p.endswith("-dev")})
        self.assertIn("ca-certificates", runtime)
        needed = set()
        for prog in ("hubsync-coordinator", "hubsync-worker"):
            out = subprocess.run(["readelf", "-d", os.path.join(BIN, prog)],
                                 capture_output=True, text=True, check=True).stdout
            needed.update(re.findall(r"\(NEEDED\)\s+Shared library: \[(.+)\]", out))
        self.assertIn("libhiredis.so.0.14", needed)
        triplet = subprocess.run(["gcc", "-print-multiarch"], capture_output=True, text=True,
                                 check=True).stdout.strip()
        libs = set()
        for lib in needed:
            out = subprocess.run(["dpkg", "-S", "*/%s/%s" % (triplet, lib)],
                                 capture_output=True, text=True, check=True).stdout
            libs.update(line.split(":")[0] for line in out.splitlines())
        self.assertEqual(libs - BASE_IMAGE_PACKAGES - runtime, set())
        copied = [a for ins, a in self.stages[1][2] if ins == "COPY"]
        self.assertEqual(copied, ["--from=build /src/.ci/ /tmp/ci/",
                                  "--from=build /src/bin/ /usr/local/bin/"])

    def test_build_stage_steps_build_both_programs(self):
        # Replay the stage on a copy of what it COPYs: the source list is complete and the
        # build command works (WERROR=1, like CI).
        tmp = tempfile.mkdtemp(prefix="hubsync-dockerbuild-")
        self.addCleanup(shutil.rmtree, tmp, True)
        workdir = tmp
        for ins, args in self.stages[0][2]:
            if ins == "WORKDIR":
                workdir = os.path.join(tmp, args.lstrip("/"))
                os.makedirs(workdir, exist_ok=True)
            elif ins == "COPY":
                *srcs, dst = shlex.split(args)
                for src in srcs:
                    dest = os.path.join(workdir, dst)
                    if dst.endswith("/") and not os.path.isdir(os.path.join(ROOT, src)):
                        os.makedirs(dest, exist_ok=True)
                    if os.path.isdir(os.path.join(ROOT, src)):
                        shutil.copytree(os.path.join(ROOT, src), dest)
                    else:
                        shutil.copy(os.path.join(ROOT, src), dest)
            elif ins == "RUN" and ".ci/deps" not in args:
                p = subprocess.run(["sh", "-c", args], cwd=workdir, capture_output=True,
                                   text=True, timeout=900)
                self.assertEqual(p.returncode, 0, p.stdout[-3000:] + p.stderr[-3000:])
        for prog in ("hubsync-coordinator", "hubsync-worker"):
            p = subprocess.run([os.path.join(tmp, "src", "bin", prog), "--help"],
                               capture_output=True, text=True)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("usage: %s" % prog, p.stdout + p.stderr)


class WorkflowTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(WORKFLOW) as f:
            cls.wf = load_yaml(f.read())
        cls.job = cls.wf["jobs"]["worker"]
        cls.steps = cls.job["steps"]

    def worker_step(self):
        return next(s for s in self.steps if "hubsync-worker" in s.get("run", ""))

    def test_shape(self):
        on = self.wf.get("on", self.wf.get("true"))  # YAML 1.1 reads a bare `on` as true
        self.assertIn("schedule", on)
        self.assertIn("workflow_dispatch", on)
        self.assertEqual(self.job["container"], "debian:12")
        self.assertIn(".ci/deps --update build runtime", [s.get("run", "").strip()
                                                          for s in self.steps])
        self.assertTrue(any(s.get("run", "").startswith("make") for s in self.steps))
        self.assertEqual(self.worker_step()["run"].strip(),
                         'bin/hubsync-worker --redis "$HUBSYNC_REDIS" --exit-when-idle')

    def test_worker_command_joins_a_running_sync(self):
        stack = Stack("hello-world").start()
        self.addCleanup(stack.stop)
        sync = subprocess.Popen(stack.sync_argv(), stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        self.addCleanup(sync.kill)
        deadline = time.time() + 60
        while stack.redis.cli_raw("XLEN", "hubsync:jobs").strip() in ("", "0"):
            self.assertLess(time.time(), deadline, "the coordinator enqueued nothing")
            time.sleep(0.2)
        step = self.worker_step()
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUBSYNC_")}
        for k, v in step["env"].items():
            # GitHub expressions are the runner's; here they become the test's values.
            if "${{" not in v:
                env[k] = v
        env.update(HUBSYNC_REDIS=stack.redis.url, HUBSYNC_TARGET=stack.target.url,
                   HUBSYNC_UPSTREAM=stack.hub.url, HUBSYNC_WORKER_ID="gha-test-1",
                   HUBSYNC_IDLE_GRACE="3")
        p = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
        self.assertEqual(p.returncode, 0, p.stderr[-3000:])
        report = json.loads(sync.communicate(timeout=120)[0])
        self.assertEqual(report["status"], "complete")
        self.assertEqual(report["jobs_done"], report["jobs_total"])
        self.assertRegex(p.stderr, r"worker gha-test-1: stopped \(done %d, failed 0"
                         % report["jobs_total"])
        self.assertIn("queue drained: exiting (--exit-when-idle)", p.stderr)


if __name__ == "__main__":
    unittest.main()
