"""Bad input of every kind gets one clear error naming what and where, no crash, and nothing
already synced is lost: flags and environment of both programs, registry URLs, official-images
sources and refs, and garbage or oversized job payloads put straight into the Redis queue."""
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import unittest

from harness import OFFICIAL_IMAGES, RedisServer, programs
from harness.stack import MirrorCase, dead_letters
from harness.target import head, pushed_tags


def run(cmd, env=None, timeout=60):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=timeout)


class FlagsTest(unittest.TestCase):
    def one_line_error(self, p, *words):
        self.assertEqual(p.returncode, 2, p.stderr)
        lines = [l for l in p.stderr.splitlines() if l.strip()]
        self.assertEqual(len(lines), 1, p.stderr)
        for w in words:
            self.assertIn(w, lines[0])
        self.assertNotIn("Segmentation", p.stderr)

    def test_worker_flags_and_environment(self):
        self.one_line_error(run(programs.worker("--concurrency", "0")), "--concurrency",
                            "out of range")
        self.one_line_error(run(programs.worker("--concurency", "4")), "--concurency")
        self.one_line_error(run(programs.worker(), env={"HUBSYNC_CONCURRENCY": "many"}),
                            "HUBSYNC_CONCURRENCY", "not an integer")
        self.one_line_error(run(programs.worker("--exit-when-idle=perhaps")), "--exit-when-idle")
        for bad, shown in (("0", "0 is out of range"), ("257", "257 is out of range"),
                           ("x", "'x' is not an integer"), ("", "'' is not an integer")):
            self.one_line_error(run(programs.worker("--connections-per-host", bad)),
                                "--connections-per-host", shown)
        self.one_line_error(run(programs.worker(), env={"HUBSYNC_CONNECTIONS_PER_HOST": "257"}),
                            "HUBSYNC_CONNECTIONS_PER_HOST", "257", "out of range")
        self.one_line_error(run(programs.worker(redis="http://127.0.0.1:6379",
                                                target="http://127.0.0.1:5000")), "redis")
        self.one_line_error(run(programs.worker()), "--target")
        self.one_line_error(run(programs.worker(target="ftp://127.0.0.1:5000")), "--target")
        self.one_line_error(run(programs.worker(target="http://127.0.0.1:5000"),
                                env={"HUBSYNC_UPSTREAM": "registry-1.docker.io"}), "--upstream")
        self.one_line_error(run(programs.worker(log_format="yaml")), "--log-format")

    def test_coordinator_flags_sources_and_refs(self):
        base = programs.sync(wait=False, json_report=False, redis="redis://127.0.0.1:9",
                             official_images=OFFICIAL_IMAGES)
        self.one_line_error(run(base), "--target")
        self.one_line_error(run(base + ["--target", "ftp://example/x"]), "--target")
        self.one_line_error(run(base + ["--target", "http://127.0.0.1:5000",
                                        "--platforms", "linux/amd64"]), "--platform-policy")
        self.one_line_error(run(base + ["--target", "http://127.0.0.1:5000",
                                        "--platforms", "linux", "--platform-policy",
                                        "rewrite"]), "--platforms")
        self.one_line_error(run(programs.coordinator(
            "catalog", official_images="/nonexistent/official-images.git")), "/nonexistent")
        self.one_line_error(run(programs.coordinator(
            "catalog", official_images=OFFICIAL_IMAGES, ref="no-such-ref")), "no-such-ref")
        self.one_line_error(run(programs.coordinator("catalog", "--bogus")), "--bogus")


class ReferenceTest(unittest.TestCase):
    """--repos, --exclude-repos and --skip take image references: every way of writing
    docker.io/library/<name> selects <name>; anything else is one line and exit 2 before
    anything is enqueued."""

    REFUSED = [
        ("Alpine", "--repos: 'Alpine': uppercase letters are not allowed"),
        ("alpine:3.20", "--repos: 'alpine:3.20' names a tag: select tags with --tags"),
        ("ghcr.io/x/y", "--repos: 'ghcr.io/x/y' is on ghcr.io, not Docker Hub"),
        ("nosuch", "--repos: 'nosuch' is not in official-images at "),
    ]

    def plan(self, *args):
        return run(programs.coordinator("plan", "--json", *args,
                                        official_images=OFFICIAL_IMAGES,
                                        target="http://127.0.0.1:1",
                                        upstream="http://127.0.0.1:1"))

    def planned(self, *args):
        p = self.plan(*args)
        self.assertIn(p.returncode, (0, 1), p.stderr)  # 1: the registries are unreachable
        return json.loads(p.stdout)

    def one_line_error(self, p, text):
        FlagsTest.one_line_error(self, p, text)

    def test_plan(self):
        # One tag keeps the HEADs to the unreachable registries (and their retries) few.
        o = self.planned("--repos", "docker.io/library/alpine", "--tags", "latest")
        self.assertEqual([r["name"] for r in o["repositories"]], ["alpine"])
        self.assertEqual(o["totals"]["tags"], 1)
        for form, text in self.REFUSED:
            p = self.plan("--repos", "alpine," + form)
            self.one_line_error(p, text)
            self.assertEqual(p.stdout, "")
        self.one_line_error(self.plan("--repos", "nosuch"), o["commit"][:12])
        self.one_line_error(self.plan("--exclude-repos", "bitnami/redis"),
                            "--exclude-repos: 'bitnami/redis' is not an official image")
        self.one_line_error(self.plan("--skip", "Python:*"), "--skip: 'Python': uppercase")
        self.one_line_error(self.plan("--skip", "python"), "--skip: 'python' is not REPO:TAGGLOB")

    def test_plan_unknown_exclude_is_a_warning(self):
        p = self.plan("--repos", "alpine", "--tags", "latest", "--exclude-repos", "nosuch")
        self.assertIn(p.returncode, (0, 1), p.stderr)
        self.assertIn("--exclude-repos: 'nosuch' is not in official-images", p.stderr)

    def test_catalog(self):
        p = run(programs.coordinator("catalog", "--json", official_images=OFFICIAL_IMAGES,
                                     repos="docker.io/library/alpine,library/hello-world"))
        self.assertEqual(p.returncode, 0, p.stderr)
        names = [r["name"] for r in json.loads(p.stdout)["repositories"]]
        self.assertEqual(names, ["alpine", "hello-world"])
        for form, text in self.REFUSED:
            self.one_line_error(run(programs.coordinator(
                "catalog", official_images=OFFICIAL_IMAGES, repos=form)), text)

    def test_sync_once(self):
        redis = RedisServer().start()
        runs = 0

        def enqueued(*args):
            """The jobs one sync --once (no --wait: nothing contacts the registries) enqueues,
            each call under its own key prefix so it starts a run of its own."""
            nonlocal runs
            runs += 1
            prefix = "t%d:" % runs
            p = run(base + ["--redis-prefix", prefix] + list(args))
            self.assertEqual(p.returncode, 0, p.stderr)
            out = subprocess.run(["redis-cli", "-p", str(redis.port), "--json", "XRANGE",
                                  prefix + "jobs", "-", "+"], capture_output=True, text=True,
                                 check=True).stdout
            return [json.loads(fields[3]) for _, fields in json.loads(out)]

        try:
            base = programs.sync(wait=False, json_report=False, redis=redis,
                                 official_images=OFFICIAL_IMAGES, target="http://127.0.0.1:1",
                                 upstream="http://127.0.0.1:1")
            for form, text in self.REFUSED:
                self.one_line_error(run(base + ["--repos", form]), text)
                self.assertEqual(redis.cli_raw("KEYS", "hubsync:run*").strip(), "")
                self.assertEqual(redis.cli_raw("XLEN", "hubsync:jobs").strip(), "0")
            for form in ("library/alpine", "docker.io/library/alpine", "index.docker.io/alpine"):
                jobs = enqueued("--repos", form)
                self.assertTrue(jobs, form)
                self.assertEqual({j["source_repo"] for j in jobs}, {"library/alpine"}, form)

            def tags(jobs):
                return [t for j in jobs for t in j["tags"]]

            self.assertTrue([t for t in tags(enqueued("--repos", "python")) if "windows" in t])
            for skip in ("library/python:*windows*", "docker.io/library/python:*windows*",
                         "*:*windows*", "*windows*"):
                left = tags(enqueued("--repos", "python", "--skip", skip))
                self.assertTrue(left, skip)
                self.assertFalse([t for t in left if "windows" in t], skip)
        finally:
            redis.stop()


    def test_daemon_reports_once_per_interval(self):
        redis = RedisServer().start()
        try:
            d = subprocess.Popen(programs.sync(once=False, wait=False, json_report=False,
                                               redis=redis, official_images=OFFICIAL_IMAGES,
                                               target="http://127.0.0.1:1",
                                               upstream="http://127.0.0.1:1", repos="nosuch"),
                                 stderr=subprocess.PIPE, text=True)
            # Read up to the line announcing the next run: the daemon then sleeps.
            seen, killer = [], threading.Timer(60, d.kill)
            killer.start()
            try:
                for line in d.stderr:
                    seen.append(line)
                    if "next run in" in line:
                        break
            finally:
                killer.cancel()
            self.assertIsNone(d.poll(), "the daemon exited")
            d.terminate()
            err = "".join(seen) + d.communicate(timeout=30)[1]
            errors = [l for l in err.splitlines() if "'nosuch' is not in official-images" in l]
            self.assertEqual(len(errors), 1, err[-2000:])
            # The next try waits the interval (21600 s + jitter), as other source errors do.
            nxt = re.search(r"next run in (\d+)s", err)
            self.assertTrue(nxt, err[-2000:])
            self.assertGreaterEqual(int(nxt.group(1)), 21600)
            self.assertEqual(redis.cli_raw("KEYS", "hubsync:run*").strip(), "")
        finally:
            redis.stop()


class QueuePayloadTest(MirrorCase):
    """Garbage in the job stream is dead-lettered with the reason; the good jobs still run."""

    REPOS = ["hello-world"]

    def test_garbage_and_oversized_jobs(self):
        # The queue exists once a coordinator ran; enqueue the real run first.
        st = self.stack(worker_log_level=None)
        coord = st.coordinator()
        deadline = time.time() + 60
        while time.time() < deadline and \
                self.redis.cli_raw("EXISTS", "hubsync:jobs").strip() != "1":
            time.sleep(0.05)
        bad = {
            "not-json": "{this is not json",
            "wrong-type": json.dumps({"v": 1, "run": "x", "key": "k", "tags": "latest"}),
            "bad-url": json.dumps({"v": 1, "run": "r1", "key": "k", "upstream": "file:///etc",
                                   "source_repo": "library/x", "target": "http://t:1",
                                   "target_repo": "library/x", "tags": ["a"],
                                   "platforms": [], "platform_policy": "all",
                                   "reason": "check", "attempt": 0}),
            "oversized": json.dumps({"v": 1, "pad": "x" * 100000}),
        }
        for key, payload in bad.items():
            subprocess.run(["redis-cli", "-p", str(self.redis.port), "-x", "XADD",
                            "hubsync:jobs", "*", "key", "garbage:" + key, "job"],
                           input=payload, text=True, check=True, capture_output=True)
        worker = st.worker("--exit-when-idle", stderr=subprocess.PIPE, text=True)
        out, err = coord.communicate(timeout=300)
        werr = worker.communicate(timeout=120)[1]
        self.assertEqual(worker.returncode, 0, werr[-2000:])
        self.assertNotIn("Segmentation", werr)
        report = json.loads(out)
        self.assertEqual(report["status"], "complete", err[-2000:])
        for (repo, tag), digest in pushed_tags(self.pushed, self.REPOS).items():
            self.assertEqual(head(self.target.url, "library/" + repo, tag), digest)
        dead = {d["key"]: d["reason"] for d in dead_letters(self.redis)}
        self.assertEqual(set(dead), {"garbage:" + k for k in bad})
        for key, reason in dead.items():
            self.assertIn("invalid job payload", reason, key)
        self.assertIn("upstream", dead["garbage:bad-url"])


class BadLibraryFileTest(MirrorCase):
    """A library file whose name is no repository name (library/Hello_World) is reported for
    its repository; the others are synced; the run does not count as complete."""

    REPOS = ["hello-world", "busybox"]

    def setUp(self):
        super().setUp()
        self.src = tempfile.mkdtemp(prefix="hubsync-oi-")
        self.addCleanup(shutil.rmtree, self.src, True)
        subprocess.run(["git", "clone", "-q", OFFICIAL_IMAGES, self.src], check=True)
        shutil.copy(os.path.join(self.src, "library", "hello-world"),
                    os.path.join(self.src, "library", "Hello_World"))
        git = ["git", "-C", self.src, "-c", "user.name=t", "-c", "user.email=t@example.org"]
        subprocess.run(git + ["add", "library/Hello_World"], check=True)
        subprocess.run(git + ["commit", "-q", "-m", "a file named Hello_World"], check=True)

    def sync(self):
        others = [n for n in os.listdir(os.path.join(self.src, "library"))
                  if n not in self.REPOS and n != "Hello_World"]
        return self.stack([], source=self.src).run("--exclude-repos", ",".join(others))

    def test_other_repositories_sync_and_the_marker_stays(self):
        for attempt in (1, 2):
            s = self.sync()
            self.assertEqual(s.rc, 1, s.stderr[-3000:])
            r = s.report
            self.assertNotIn("resuming", s.stderr)  # every run starts afresh
            self.assertEqual(r["status"], "failed")
            self.assertEqual([e["repository"] for e in r["catalog_errors"]], ["Hello_World"])
            self.assertIn("not a valid repository name", r["catalog_errors"][0]["error"])
            groups = sum(len(x["groups"]) for x in self.catalog["repositories"])
            self.assertEqual((r["jobs_total"], r["jobs_done"]), (groups, groups))
            for (repo, tag), digest in pushed_tags(self.pushed, self.REPOS).items():
                self.assertEqual(head(self.target.url, "library/" + repo, tag), digest)
            self.assertEqual(self.redis.cli_raw("EXISTS", "hubsync:synced-commit").strip(),
                             "0")
            self.assertEqual(self.redis.cli_raw("EXISTS", "hubsync:runs:current").strip(),
                             "0")


if __name__ == "__main__":
    unittest.main()
