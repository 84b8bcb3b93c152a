"""The local demo (tests/demo/demo.py, `make demo`), the podman pull through a
registries.conf mirror on its own, and what an operator watches: the coordinator's
progress on a terminal and without one, and both programs' --log-format json."""
import json
import os
import pty
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from harness import OFFICIAL_IMAGES, ROOT
from harness.podman import Podman, registries_conf
from harness.stack import Stack

DEMO = os.path.join(ROOT, "tests", "demo", "demo.py")
DEMO_REPOS = "hello-world,alpine,memcached,registry"
LOG_KEYS = {"ts", "role", "pid", "level", "msg"}
PROGRESS_RE = re.compile(r"run \S+: jobs (\d+)/(\d+) \(failed \d+, deferred \d+\) tags written "
                         r"\d+ \| pulls \d+, (\d+/\d+ left|no limit seen) \| [0-9.]+ [KMGT]?B"
                         r"( ETA \d+s)?")


def listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class DemoTest(unittest.TestCase):
    """The README's first command, as a user runs it."""

    def run_demo(self, *args, timeout=300):
        t0 = time.time()
        p = subprocess.run([sys.executable, DEMO] + list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        return p, time.time() - t0

    def assert_cleaned_up(self, out):
        ports = [int(p) for p in re.findall(r"http://127\.0\.0\.1:(\d+)", out)]
        ports += [int(p) for p in re.findall(r"redis://127\.0\.0\.1:(\d+)", out)]
        self.assertGreaterEqual(len(set(ports)), 3, out)
        for port in set(ports):
            self.assertFalse(listening(port), "port %d still open after the demo" % port)
        logs = re.search(r"logs in (\S+)\)", out).group(1)
        self.assertFalse(os.path.exists(logs), logs)

    def test_demo_syncs_pulls_through_the_mirror_and_cleans_up(self):
        p, secs = self.run_demo()
        out = p.stdout
        self.assertEqual(p.returncode, 0, out[-4000:])
        # The run report, complete, one job per tag group.
        m = re.search(r"to sync\s+\S+: (\d+) tag groups \(one job each\), (\d+) tags", out)
        groups, tags = int(m.group(1)), int(m.group(2))
        self.assertRegex(out, r"run \S+ \([0-9a-f]{12}\): complete\n")
        self.assertIn("  jobs      %d total, %d done, 0 failed, 0 deferred" % (groups, groups),
                      out)
        self.assertIn("  tags      %d total, 0 unchanged, %d written" % (tags, tags), out)
        # Progress lines without a terminal: plain lines.
        self.assertRegex(out, PROGRESS_RE)
        self.assertNotIn("\r", out)
        # The workers' job lines, one per job across both workers.
        m = re.search(r"one log line per job \(worker 1: (\d+) jobs, worker 2: (\d+) jobs"
                      r"(?:; \d+ assists)?\)", out)
        self.assertEqual(int(m.group(1)) + int(m.group(2)), groups)
        # redis-cli recipes with the real port, and what they show.
        port = re.search(r"Redis\s+redis://127\.0\.0\.1:(\d+)", out).group(1)
        cmds = re.findall(r"\$ redis-cli -p (\d+) (\S+) (\S+)", out)
        self.assertGreaterEqual(len(cmds), 8)
        self.assertEqual({c[0] for c in cmds}, {port})
        for key in ("hubsync:jobs", "hubsync:jobs:dead", "hubsync:synced-commit",
                    "hubsync:stats", "hubsync:workers", "hubsync:ctl:paused"):
            self.assertIn(key, [c[2] for c in cmds])
        commit = re.search(r"official-images\s+\S+ at ([0-9a-f]{12})", out).group(1)
        self.assertRegex(out, r"GET hubsync:synced-commit\n.*\n\s+%s[0-9a-f]{28}\n" % commit)
        self.assertRegex(out, r"HGETALL hubsync:run:\S+\n.*\n\s+id=\S+ state=done ")
        self.assertRegex(out, r"HGETALL hubsync:budget:127\.0\.0\.1\n.*\n\s+limit=10000 ")
        # podman through the mirror: the upstream digest, and Docker Hub never asked.
        pulled = re.search(r"pulled digest\s+(sha256:[0-9a-f]{64})", out).group(1)
        upstream = re.search(r"upstream digest\s+(sha256:[0-9a-f]{64})", out).group(1)
        self.assertEqual(pulled, upstream)
        self.assertIn("served by the mirror: the stand-in (Docker Hub) saw no request", out)
        self.assertIn("Trying to pull docker.io/library/hello-world:latest", out)
        self.assertEqual(len(re.findall(r"demo-worker-\d: stopped \(done \d+, failed 0", out)), 2)
        self.assert_cleaned_up(out)
        self.assertLess(secs, 120, "the demo took %.0fs" % secs)
        print("demo: %.1fs, %d jobs, %d tags" % (secs, groups, tags), file=sys.stderr)

    def test_demo_with_a_spent_budget_ends_deferred(self):
        p, _ = self.run_demo("--repos", "hello-world,alpine", "--limit", "30")
        out = p.stdout
        self.assertEqual(p.returncode, 0, out[-4000:])
        self.assertRegex(out, r"run \S+ \([0-9a-f]{12}\): deferred\n")
        self.assertRegex(out, r"  jobs      \d+ total, \d+ done, 0 failed, [1-9]\d* deferred")
        self.assertIn("a daemon coordinator resumes in the next window", out)
        self.assertRegex(out, r"HGETALL hubsync:budget:127\.0\.0\.1\n.*\n\s+limit=30 ")
        # The image either made it before the budget ran out, or the pull is skipped.
        self.assertRegex(out, r"served by the mirror|skipped: the deferred run did not reach")
        self.assert_cleaned_up(out)

    def test_interrupted_demo_cleans_up(self):
        # Ctrl-C in the middle of the sync: the terminal signals the whole process group.
        proc = subprocess.Popen([sys.executable, DEMO, "--repos", "alpine,memcached"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        out = []
        for line in proc.stdout:
            out.append(line)
            if line.startswith("==> Syncing"):
                break
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
        out = "".join(out) + rest
        self.assertEqual(proc.returncode, 130, out[-3000:])
        self.assertIn("interrupted: everything stopped and removed", out)
        self.assert_cleaned_up(out)

    def test_demo_reports_a_missing_repository_source(self):
        p, _ = self.run_demo("--official-images", "/nonexistent/official-images.git")
        self.assertEqual(p.returncode, 2, p.stdout)
        self.assertEqual(p.stdout.strip(), "demo: no official-images repository at "
                         "/nonexistent/official-images.git (--official-images)")

    def test_demo_names_the_sources_it_tried(self):
        env = dict(os.environ, HUBSYNC_OFFICIAL_IMAGES="/nonexistent/oi.git")
        p = subprocess.run([sys.executable, DEMO], stdout=subprocess.PIPE, env=env,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        self.assertEqual(p.returncode, 2, p.stdout)
        self.assertEqual(len(p.stdout.strip().splitlines()), 1, p.stdout)
        self.assertIn("tried HUBSYNC_OFFICIAL_IMAGES=/nonexistent/oi.git (no such directory)",
                      p.stdout)


class OfficialImagesSourceTest(unittest.TestCase):
    """Without the environment variable and without ../shared, the data is a clone of
    upstream in build/ (here a local path plays GitHub)."""

    def ensure(self, url):
        tmp = tempfile.mkdtemp(prefix="hubsync-oi-")
        self.addCleanup(shutil.rmtree, tmp, True)
        code = ("import harness, json; "
                "harness.SHARED_OFFICIAL_IMAGES = %r; harness.OFFICIAL_IMAGES_URL = %r; "
                "harness.OFFICIAL_IMAGES = %r; "
                "print(json.dumps(harness.ensure_official_images()))"
                % (os.path.join(tmp, "no-shared"), url, os.path.join(tmp, "build", "oi.git")))
        env = {k: v for k, v in os.environ.items()
               if k not in ("HUBSYNC_OFFICIAL_IMAGES", "HUBSYNC_TEST_OFFICIAL_IMAGES")}
        p = subprocess.run([sys.executable, "-c", code], cwd=os.path.join(ROOT, "tests"),
                           env=env, capture_output=True, text=True, timeout=300, check=True)
        return json.loads(p.stdout), os.path.join(tmp, "build", "oi.git")

    def test_clones_upstream_when_nothing_else_is_there(self):
        missing, path = self.ensure(OFFICIAL_IMAGES)
        self.assertIsNone(missing)
        head = subprocess.run(["git", "--git-dir", path, "rev-parse", "HEAD"],
                              capture_output=True, text=True, check=True).stdout
        self.assertEqual(head, subprocess.run(["git", "--git-dir", OFFICIAL_IMAGES, "rev-parse",
                                               "HEAD"], capture_output=True, text=True,
                                              check=True).stdout)

    def test_says_what_it_tried(self):
        missing, path = self.ensure("/nonexistent/upstream.git")
        self.assertFalse(os.path.exists(path))
        self.assertRegex(missing, r"^no official-images data: tried \S+/no-shared \(not "
                         r"there\); a clone of /nonexistent/upstream.git \(.+\); point "
                         r"HUBSYNC_OFFICIAL_IMAGES")


class MirrorPullTest(unittest.TestCase):
    """podman with a registries.conf mirror, as an operator configures a CRI-O/podman host:
    what hubsync copied comes from the target; what it did not falls back to Docker Hub."""

    @classmethod
    def setUpClass(cls):
        cls.stack = Stack("hello-world", hub_repos="hello-world,busybox").start()
        w = cls.stack.worker("--exit-when-idle", "--idle-grace", "3", log="worker.log")
        p = subprocess.run(cls.stack.sync_argv(), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=180)
        w.wait(timeout=60)
        assert p.returncode == 0, p.stdout
        cls.podman = Podman(registries_conf(cls.stack.hub.host, cls.stack.target_host))

    @classmethod
    def tearDownClass(cls):
        cls.podman.close()
        cls.stack.stop()

    def upstream_requests(self):
        c = self.stack.hub.counters()
        return {k: c[k] for k in ("token_requests", "manifest_get", "manifest_head",
                                  "blob_get", "blob_head")}

    def test_synced_image_comes_from_the_target(self):
        before = self.upstream_requests()
        image_id, progress = self.podman.pull("docker.io/library/hello-world:linux")
        self.assertRegex(image_id, r"^[0-9a-f]{64}$")
        self.assertEqual(self.upstream_requests(), before)
        self.assertEqual(self.podman.digest("docker.io/library/hello-world:linux"),
                         self.stack.upstream_digest("hello-world", "linux"))
        # A short name resolves through unqualified-search-registries to the same place
        # (the same amd64 image, now also known by the "latest" index digest).
        self.podman.pull("hello-world:latest")
        self.assertEqual(self.upstream_requests(), before)
        self.assertIn(self.stack.upstream_digest("hello-world", "latest"),
                      self.podman.repo_digests("docker.io/library/hello-world:latest"))

    def test_image_the_target_lacks_falls_back_to_docker_hub(self):
        before = self.stack.hub.counters()["manifest_get"]
        self.podman.pull("docker.io/library/busybox:latest")
        self.assertGreater(self.stack.hub.counters()["manifest_get"], before)
        self.assertEqual(self.podman.digest("docker.io/library/busybox:latest"),
                         self.stack.upstream_digest("busybox", "latest"))

    def test_podman_sees_only_our_registries_conf_and_keeps_its_state(self):
        conf = registries_conf(self.stack.hub.host, self.stack.target_host)
        probe = Podman(conf)
        regs = json.loads(probe.run("info", "--format", "{{json .Registries}}").stdout)
        self.assertEqual(set(regs), {"docker.io", "search"})
        self.assertEqual(regs["search"], ["docker.io"])
        self.assertEqual(regs["docker.io"]["Location"], self.stack.hub.host)
        self.assertEqual([m["Location"] for m in regs["docker.io"]["Mirrors"]],
                         [self.stack.target_host])
        self.assertTrue(os.path.isdir(os.path.join(probe.dir, "root")))
        pdir = probe.dir
        probe.close()
        self.assertFalse(os.path.exists(pdir))


def read_pty(fd, sink, stop):
    while not stop.is_set():
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                data = os.read(fd, 65536)
            except OSError:
                return
            if not data:
                return
            sink.append(data)


class OperatingTest(unittest.TestCase):
    """Progress and logs as an operator sees them."""

    def setUp(self):
        self.stack = Stack("hello-world").start()
        self.addCleanup(self.stack.stop)

    def json_lines(self, text, role):
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        for o in lines:
            self.assertEqual(set(o), LOG_KEYS, o)
            self.assertEqual(o["role"], role)
            self.assertIn(o["level"], ("DEBUG", "INFO", "WARN", "ERROR"))
            self.assertRegex(o["ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        return lines

    def start_workers_later(self, delay, *workers):
        """Start workers (argument tuples for Stack.worker) after delay seconds: the run then
        shows that many seconds of progress whatever the machine's speed."""
        def later():
            time.sleep(delay)
            for args, kw in workers:
                self.stack.worker(*args, **kw)
        t = threading.Thread(target=later)
        t.start()
        self.addCleanup(t.join)

    def test_terminal_progress_updates_in_place_and_logs_are_json(self):
        self.start_workers_later(3.5, (("--log-format", "json"), {"log": "w1.log"}),
                                 ((), {"log": "w2.log", "env": {"HUBSYNC_LOG_FORMAT": "json"}}))
        master, slave = pty.openpty()
        stop, chunks = threading.Event(), []
        reader = threading.Thread(target=read_pty, args=(master, chunks, stop))
        reader.start()
        try:
            p = subprocess.run(self.stack.sync_argv("--log-format", "json"),
                               stdout=subprocess.PIPE, stderr=slave, text=True, timeout=180)
        finally:
            os.close(slave)
            time.sleep(0.3)
            stop.set()
            reader.join()
            os.close(master)
        self.assertEqual(p.returncode, 0, p.stdout)
        tty = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
        updates = tty.split("\r\x1b[K")[1:]
        self.assertGreaterEqual(len(updates), 3, tty)
        for u in updates[:-1]:
            # Each update overwrites the line: no newline until the run is over.
            self.assertRegex(u, "^" + PROGRESS_RE.pattern + "$")
        self.assertRegex(updates[-1], "^" + PROGRESS_RE.pattern + "\n")
        done, total = PROGRESS_RE.match(updates[-1]).group(1, 2)
        self.assertEqual(done, total)
        logs = self.json_lines(tty, "coordinator")
        self.assertTrue(any("jobs (" in o["msg"] for o in logs), tty)
        self.assertEqual(json.loads(p.stdout)["status"], "complete")
        self.assertEqual(self.stack.stop_workers(), [0, 0])
        jobs = 0
        for name in ("w1.log", "w2.log"):
            with open(self.stack.log_path(name)) as f:
                text = f.read()
            self.assertTrue(text.strip())
            lines = self.json_lines(text, "worker")
            self.assertEqual(len(lines), len(text.strip().splitlines()), text)
            jobs += sum(1 for o in lines if o["msg"].startswith("job=") and
                        " status=done " in o["msg"])
        self.assertEqual(jobs, json.loads(p.stdout)["jobs_total"])

    def test_plain_progress_every_few_seconds_without_a_terminal(self):
        self.start_workers_later(7, ((), {"log": "w.log"}))
        proc = subprocess.Popen(self.stack.sync_argv(json_report=False), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        seen = []
        for line in proc.stderr:
            if PROGRESS_RE.match(line):
                seen.append((time.time(), line))
        proc.wait(timeout=180)
        report = proc.stdout.read()
        proc.stdout.close()
        proc.stderr.close()
        self.assertEqual(proc.returncode, 0, report)
        self.assertGreaterEqual(len(seen), 2, seen)
        for (t0, a), (t1, b) in zip(seen, seen[1:]):
            self.assertGreater(t1 - t0, 3.5, (a, b))
        for _, line in seen:
            self.assertNotIn("\r", line)
            self.assertNotIn("\x1b", line)


if __name__ == "__main__":
    unittest.main()
