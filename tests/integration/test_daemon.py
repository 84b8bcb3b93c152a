"""The long-running shapes: the coordinator as a daemon (schedule, one active coordinator,
stand-by, clean stop) and the worker's graceful stop on SIGTERM."""
import json
import signal
import subprocess
import time
import unittest

from harness import programs
from harness.stack import MirrorCase
from harness.target import head, pushed_tags

REPOS = MirrorCase.REPOS


def wait_for(pred, timeout=60, step=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("condition not met within %ss" % timeout)


class DaemonTest(MirrorCase):
    def setUp(self):
        super().setUp()
        self.st = self.stack(REPOS, worker_log_level="info")

    def coordinator(self, *extra):
        """The coordinator as a daemon (no --once)."""
        return self.st.coordinator("--interval", "60", "--jitter", "0", *extra, once=False,
                                   wait=False, json_report=False)

    def worker(self, *extra):
        return self.st.worker(*extra, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)

    def pending(self):
        """Jobs delivered to a worker and not yet settled."""
        out = self.redis.cli_raw("XPENDING", "hubsync:jobs", "workers").split("\n")
        return int(out[0]) if out and out[0].strip().isdigit() else 0

    def runs(self):
        out = self.redis.cli_raw("ZRANGE", "hubsync:runs", "0", "-1").split()
        return [(r, self.redis.cli_raw("HGET", "hubsync:run:" + r, "state").strip())
                for r in out]

    def test_daemon_runs_one_coordinator_at_a_time(self):
        first = self.coordinator()
        wait_for(lambda: self.redis.cli_raw("GET", "hubsync:coordinator").strip())
        second = self.coordinator()
        workers = [self.worker(), self.worker()]
        # The first run completes and moves the marker; only one run exists.
        commit = self.catalog["commit"]
        wait_for(lambda: self.redis.cli_raw("GET", "hubsync:synced-commit").strip() == commit,
                 timeout=120)
        self.assertEqual([s for _, s in self.runs()], ["done"])
        for (repo, tag), digest in pushed_tags(self.pushed, REPOS).items():
            self.assertEqual(head(self.target.url, "library/" + repo, tag), digest)
        # SIGTERM: both coordinators stop promptly; the stand-by never ran anything.
        for p in (first, second):
            p.send_signal(signal.SIGTERM)
        for p in (first, second):
            self.assertEqual(p.wait(timeout=30), 0)
        self.assertIn("standing by", second.stderr.read())
        self.assertEqual(self.redis.cli_raw("EXISTS", "hubsync:coordinator").strip(), "0")
        health = programs.worker("--health", redis=self.redis)
        wait_for(lambda: subprocess.run(health, capture_output=True).returncode == 0)
        for w in workers:
            w.send_signal(signal.SIGTERM)
            self.assertEqual(w.wait(timeout=30), 0)
        gone = subprocess.run(health, capture_output=True, text=True)
        self.assertEqual(gone.returncode, 1)
        self.assertIn("no live heartbeat", gone.stderr)
        # Workers leave the heartbeat set when they stop cleanly.
        self.assertEqual(self.redis.cli_raw("ZCARD", "hubsync:workers").strip(), "0")

    def test_worker_sigterm_hands_back_and_another_finishes(self):
        # Slow upstream: jobs take long enough to be caught in hand.
        self.hub.config(latency_ms=150)
        try:
            coord = self.st.coordinator()
            w1 = self.worker("--stop-grace", "0", "--concurrency", "4")
            # SIGTERM while it holds jobs.
            wait_for(lambda: self.pending() > 0)
            time.sleep(0.5)
            w1.send_signal(signal.SIGTERM)
            self.assertEqual(w1.wait(timeout=60), 0)
            err = w1.stderr.read()
            self.assertIn("taking no new job", err)
            self.assertIn("handing it back", err)
            stats = dict(zip(*[iter(self.redis.cli_raw("HGETALL", "hubsync:stats").split())] * 2))
            self.assertGreater(int(stats.get("handback", 0)), 0)
            # A job handed back is delivered again without counting as a failed delivery.
            w2 = self.worker("--exit-when-idle")
            out, _ = coord.communicate(timeout=300)
            w2.wait(timeout=60)
            report = json.loads(out)
            self.assertEqual(report["status"], "complete", report)
            self.assertEqual(report["jobs_failed"], 0)
            for (repo, tag), digest in pushed_tags(self.pushed, REPOS).items():
                self.assertEqual(head(self.target.url, "library/" + repo, tag), digest)
        finally:
            self.hub.config(latency_ms=0)


if __name__ == "__main__":
    unittest.main()
