"""kill -9 of the coordinator: a restarted coordinator resumes the same run, no group is lost
and none is enqueued twice; a run counts each of its jobs exactly once, also when it resumes,
when it takes over jobs an ended run left behind, and when one of its jobs is lost; the
coordinator keeps its lease while official-images is fetched."""
import json
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

from harness import OFFICIAL_IMAGES, programs
from harness.stack import MirrorCase, StackCase, enqueued
from harness.target import head, pushed_tags
from integration.test_sync import REPOS

NO_UPSTREAM = "http://127.0.0.1:9"
ENQUEUE_ONLY = {"wait": False, "json_report": False}  # sync --once without --wait


class CoordinatorKillTest(StackCase):

    def current_run(self):
        return self.redis.cli_raw("GET", "hubsync:runs:current").strip()

    def test_killed_mid_enqueue(self):
        # The whole catalog: thousands of jobs, so the kill lands while enqueueing.
        cat = json.loads(subprocess.check_output(
            programs.coordinator("catalog", "--json", official_images=OFFICIAL_IMAGES)))
        groups = sum(len(r["groups"]) for r in cat["repositories"])
        st = self.stack(hub=NO_UPSTREAM)
        p = st.coordinator(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **ENQUEUE_ONLY)
        deadline = time.time() + 60
        while time.time() < deadline:
            n = int(self.redis.cli_raw("XLEN", "hubsync:jobs").strip() or 0)
            if n > 50:
                break
            time.sleep(0.01)
        p.send_signal(signal.SIGKILL)
        p.wait()
        run = self.current_run()
        self.assertTrue(run)
        rec = self.redis.cli_raw("HGET", "hubsync:run:" + run, "enqueued").strip()
        self.assertNotEqual(rec, "1", "the kill came too late to test a half-done enqueue")
        # The restart waits out the dead coordinator's lease, then resumes the same run.
        r = subprocess.run(st.sync_argv(**ENQUEUE_ONLY), capture_output=True, text=True,
                           timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("resuming run " + run, r.stderr)
        self.assertEqual(self.current_run(), run)
        total = int(self.redis.cli_raw("HGET", "hubsync:run:" + run, "jobs_total").strip())
        self.assertEqual(total, groups)
        self.assertEqual(int(self.redis.cli_raw("XLEN", "hubsync:jobs").strip()), groups)
        self.assertEqual(int(self.redis.cli_raw("HLEN", "hubsync:jobs:index").strip()), groups)

    def test_killed_mid_wait(self):
        st = self.stack(REPOS, worker_log_level="warn").start()  # a stand-in of its own
        p = st.coordinator(stderr=subprocess.DEVNULL)
        run = st.wait_enqueued()
        worker = st.worker("--exit-when-idle")
        time.sleep(0.5)
        p.send_signal(signal.SIGKILL)
        p.wait()
        r = subprocess.run(st.sync_argv(), capture_output=True, text=True, timeout=300)
        worker.wait(timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        report = json.loads(r.stdout)
        self.assertEqual(report["run"], run)
        self.assertEqual(report["status"], "complete")
        self.assertEqual(report["jobs_done"], report["jobs_total"])
        self.assertEqual(report["jobs_total"],
                         sum(len(x["groups"]) for x in st.catalog["repositories"]))
        for (repo, tag), digest in pushed_tags(st.pushed, REPOS).items():
            self.assertEqual(head(self.target.url, "library/" + repo, tag), digest)
        # At-least-once, never more than once per manifest: nothing fetched twice.
        self.assertEqual(st.hub.counters()["manifest_get"], report["upstream_manifest_gets"])


def wait_for(what, cond, timeout=60):
    deadline = time.time() + timeout
    while not cond():
        if time.time() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


class RunAccountingTest(MirrorCase):
    """The run's numbers are per job: each job of the run settles once."""

    REPOS = ["hello-world", "busybox"]

    def setUp(self):
        super().setUp()
        self.st = self.stack()

    def field(self, run, name):
        return int(self.redis.cli_raw("HGET", "hubsync:run:" + run, name).strip() or 0)

    def current_run(self):
        return self.redis.cli_raw("GET", "hubsync:runs:current").strip()

    def groups(self):
        return sum(len(r["groups"]) for r in self.catalog["repositories"])

    def worker(self, *opts):
        return self.st.worker(*opts)

    def assert_exact(self, report, run=None):
        if run:
            self.assertEqual(report["run"], run)
        self.assertEqual(report["status"], "complete", report)
        self.assertEqual(report["jobs_total"], self.groups())
        self.assertEqual(report["jobs_done"], report["jobs_total"])
        self.assertEqual(report["jobs_failed"], 0)
        self.assertEqual(self.redis.cli_raw("XLEN", "hubsync:jobs").strip(), "0")
        self.assertEqual(self.redis.cli_raw("HLEN", "hubsync:jobs:index").strip(), "0")
        self.assertEqual(self.redis.cli_raw("GET", "hubsync:synced-commit").strip(),
                         report["commit"])
        for (repo, tag), digest in pushed_tags(self.pushed, self.REPOS).items():
            self.assertEqual(head(self.target.url, "library/" + repo, tag), digest)

    def test_killed_at_k_of_n_then_resumed_counts_n_of_n(self):
        first = self.st.coordinator(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for("the run's jobs", lambda: enqueued(self.redis))
        run = self.current_run()
        w = self.worker("--concurrency", "1")
        wait_for("3 jobs done", lambda: self.field(run, "jobs_done") >= 3)
        first.kill()
        first.wait()
        w.send_signal(signal.SIGTERM)
        w.wait(timeout=60)
        done = self.field(run, "jobs_done")
        self.assertLess(done, self.groups(), "the kill came too late: every job was done")
        # The dead coordinator's lease, as if it had run out.
        self.redis.cli_raw("DEL", "hubsync:coordinator")
        self.worker()
        r = subprocess.run(self.st.sync_argv(), capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        self.assertIn("resuming run " + run, r.stderr)
        self.assert_exact(json.loads(r.stdout), run)
        self.assertIn("%d settled before" % done, r.stderr)  # not enqueued again

    def test_new_run_counts_the_jobs_an_ended_run_left(self):
        p = subprocess.run(self.st.sync_argv(**ENQUEUE_ONLY), capture_output=True, text=True,
                           timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        old = self.current_run()
        # The run ends with its jobs still queued (as one that failed while jobs waited).
        self.redis.cli_raw("HSET", "hubsync:run:" + old, "state", "failed")
        self.redis.cli_raw("DEL", "hubsync:runs:current")
        s = self.st.run(timeout=180)
        self.assertEqual(s.rc, 0, s.stderr[-3000:])
        self.assertNotEqual(s.report["run"], old)
        self.assert_exact(s.report)
        self.assertEqual(self.field(old, "jobs_done"), 0)  # an ended run's record stays

    def test_stalled_run_is_shown_and_recovers(self):
        p = subprocess.run(self.st.sync_argv(**ENQUEUE_ONLY), capture_output=True, text=True,
                           timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        run = self.current_run()

        def entries():
            out = self.redis.cli_raw("XRANGE", "hubsync:jobs", "-", "+").splitlines()
            return [(out[i], out[i + 2]) for i in range(0, len(out), 5)]

        # A job deleted by hand: nothing would ever settle it.
        lost_id, lost_key = entries()[0]
        self.redis.cli_raw("XDEL", "hubsync:jobs", lost_id)
        status = programs.coordinator("status", redis=self.redis)
        st = json.loads(subprocess.check_output(status + ["--json"], text=True))
        self.assertEqual(st["current_run"]["lost"], 1)
        self.assertFalse(st["health"]["ok"])
        h = subprocess.run(status + ["--health"], capture_output=True, text=True)
        self.assertEqual(h.returncode, 1)
        self.assertIn("STALLED: 1 jobs", h.stdout)
        # A coordinator waiting for the run enqueues lost jobs again: the one lost before it
        # resumed, and one lost while it waits.
        with tempfile.NamedTemporaryFile("w+") as log:
            coord = self.st.coordinator(stderr=log)
            wait_for("the resumed run's jobs", lambda: "settled before" in open(log.name).read())
            lost_id, lost_key = entries()[0]
            self.redis.cli_raw("XDEL", "hubsync:jobs", lost_id)
            wait_for("the lost job enqueued again",
                     lambda: lost_key in [k for _, k in entries()], timeout=30)
            self.assertIn("(lost); enqueued them again", open(log.name).read())
            self.worker("--exit-when-idle")
            out = coord.communicate(timeout=300)[0]
            self.assertEqual(coord.returncode, 0, open(log.name).read()[-3000:])
        self.assert_exact(json.loads(out), run)


class HangingServer:
    """Accepts connections and never answers (an official-images remote that hangs)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


class FetchLeaseTest(StackCase):
    def test_lease_held_while_official_images_is_fetched(self):
        remote = HangingServer()
        self.addCleanup(remote.close)
        workdir = tempfile.mkdtemp(prefix="hubsync-oi-")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", workdir]))
        st = self.stack(hub=NO_UPSTREAM, source="http://127.0.0.1:%d/oi.git" % remote.port)
        p = st.coordinator("--workdir", workdir, "--fetch-timeout", "120", stdout=None,
                           **ENQUEUE_ONLY)

        def lease():
            return self.redis.cli_raw("GET", "hubsync:coordinator").strip()

        wait_for("the coordinator lease", lease)
        holder = lease()
        # Past the lease's 30 s, the fetch still hanging: the lease is still this one's.
        t0 = time.time()
        while time.time() - t0 < 35:
            self.assertEqual(lease(), holder, "lease lost after %.0fs" % (time.time() - t0))
            time.sleep(0.5)
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=30)
        self.assertNotEqual(p.returncode, 0)
        # A fetch longer than --fetch-timeout is given up, with no run left behind.
        t0 = time.time()
        r = subprocess.run(st.sync_argv("--workdir", workdir, "--fetch-timeout", "5",
                                        **ENQUEUE_ONLY), capture_output=True, text=True,
                           timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("took longer than 5 s", r.stderr)
        self.assertLess(time.time() - t0, 30)
        self.assertEqual(self.redis.cli_raw("EXISTS", "hubsync:runs:current").strip(), "0")


if __name__ == "__main__":
    unittest.main()
