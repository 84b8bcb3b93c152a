"""The coordinator and the worker built with -fsanitize=address,undefined (build/asan/bin, made
by `make asan-build`) on a real end-to-end sync: a full run, a no-op run, plan and status, a
worker stopped by SIGTERM mid-run, workers leaving through --exit-when-idle, upstream faults,
garbage job payloads and bad flags. Every program writes its sanitizer reports to files (a
report can never hide in a discarded stderr) and LeakSanitizer checks each one at exit: any
report file is a failure, and so is a missing ASan build. A control run proves a report
from these programs does land where the tests look."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest
from functools import partial

from harness import (OFFICIAL_IMAGES, ROOT, SANITIZER_EXIT, programs, sanitizer_env,
                     sanitizer_reports)
from harness.stack import MirrorCase
from harness.target import head, pushed_tags

ASAN_BIN = os.environ.get("HUBSYNC_ASAN_BIN") or os.path.join(ROOT, "build", "asan", "bin")
COORD = os.path.join(ASAN_BIN, "hubsync-coordinator")
WORKER = os.path.join(ASAN_BIN, "hubsync-worker")
# Quick retries so the fault run's error paths finish within the test's time.
RETRY = ["--backoff-ms", "200", "--backoff-max-ms", "1000"]


def setUpModule():
    for prog in (COORD, WORKER):
        if not os.access(prog, os.X_OK):
            raise RuntimeError("%s is missing: build it with `make asan-build`" % prog)
    out = subprocess.run(["nm", COORD], capture_output=True, text=True, check=True).stdout
    if "__asan_init" not in out:
        raise RuntimeError("%s is not built with AddressSanitizer" % COORD)


class SanitizerTest(MirrorCase):
    REPOS = ["hello-world", "busybox"]

    def setUp(self):
        super().setUp()
        self.reports = tempfile.mkdtemp(prefix="hubsync-sanitizers-")
        self.env = dict(os.environ, **sanitizer_env(self.reports))
        self.st = self.stack(bin=ASAN_BIN, env=self.env, worker_args=RETRY)

    def tearDown(self):
        # Runs before the cleanups: every program must be gone before reports are read.
        self.st.kill()
        reports = sanitizer_reports(self.reports)
        shutil.rmtree(self.reports, ignore_errors=True)
        self.assertEqual(reports, [], "sanitizer reports (leaks count too)")

    # -- programs -------------------------------------------------------------------------
    def run_prog(self, argv, timeout=120):
        return subprocess.run(argv, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def coordinator(self, *extra):
        return self.st.coordinator(*extra)

    def worker(self, *extra):
        return self.st.worker(*extra, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)

    def wait_enqueued(self, coord):
        if self.st.wait_enqueued(timeout=120) is None:
            self.fail("coordinator ended before enqueuing: %s" % coord.stderr.read()[-2000:])

    def sync(self, workers=2):
        """A whole run with workers that leave through --exit-when-idle; returns the report."""
        coord = self.coordinator()
        self.wait_enqueued(coord)
        ws = [self.worker("--exit-when-idle") for _ in range(workers)]
        return self.finish(coord, ws)

    def finish(self, coord, workers):
        out, err = coord.communicate(timeout=300)
        for w in workers:
            werr = w.communicate(timeout=120)[1]
            self.assertEqual(w.returncode, 0, "worker: " + werr[-2000:])
        self.assertEqual(coord.returncode, 0, "coordinator: " + err[-2000:])
        return json.loads(out)

    def assert_mirrors(self):
        for (repo, tag), digest in pushed_tags(self.pushed, self.REPOS).items():
            self.assertEqual(head(self.target.url, "library/" + repo, tag), digest,
                             "library/%s:%s" % (repo, tag))

    # -- tests ----------------------------------------------------------------------------
    def test_a_report_is_caught(self):
        # The control: a sanitizer report from these programs (here ASan's RSS limit) lands
        # in the report directory and the program exits SANITIZER_EXIT, so an empty
        # directory after the other tests means no report, not a report sent elsewhere.
        elsewhere = tempfile.mkdtemp(prefix="hubsync-sanitizers-control-")
        self.addCleanup(shutil.rmtree, elsewhere, True)
        env = dict(os.environ, **sanitizer_env(elsewhere))
        env["ASAN_OPTIONS"] += ":hard_rss_limit_mb=1"
        p = subprocess.run(programs.coordinator("catalog", "--json", bin=ASAN_BIN,
                                                official_images=OFFICIAL_IMAGES),
                           env=env, capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, SANITIZER_EXIT, p.stderr[-2000:])
        reports = sanitizer_reports(elsewhere)
        self.assertEqual(len(reports), 1, reports)
        self.assertIn("AddressSanitizer: hard rss limit exhausted", reports[0][1])

    def test_sync_noop_plan_and_status(self):
        report = self.sync()
        self.assertEqual(report["status"], "complete")
        self.assertEqual(report["jobs_done"], report["jobs_total"])
        self.assertGreater(report["tags_written"], 0)
        self.assert_mirrors()
        again = self.sync()
        self.assertEqual(again["status"], "complete")
        self.assertEqual(again["tags_written"], 0)
        self.assertEqual(again["upstream_manifest_gets"], 0)
        p = self.run_prog(programs.coordinator(
            "plan", "--json", bin=ASAN_BIN, redis=self.redis, official_images=OFFICIAL_IMAGES,
            upstream=self.hub, target=self.target, repos=self.REPOS))
        self.assertEqual(p.returncode, 0, p.stderr[-2000:])
        self.assertEqual(json.loads(p.stdout)["totals"]["to_write"], 0)
        p = self.run_prog(programs.coordinator("status", "--json", bin=ASAN_BIN,
                                               redis=self.redis))
        self.assertEqual(p.returncode, 0, p.stderr[-2000:])
        status = json.loads(p.stdout)
        self.assertEqual(status["runs"][0]["state"], "done")
        self.assertEqual(status["queue"]["dead"], 0)

    def test_worker_sigterm_mid_run(self):
        # Slow upstream: the worker is caught with jobs in hand.
        self.hub.config(latency_ms=150)
        try:
            coord = self.coordinator()
            self.wait_enqueued(coord)
            w1 = self.worker("--stop-grace", "0", "--concurrency", "4")
            deadline = time.time() + 60
            while self.redis.cli_raw("XPENDING", "hubsync:jobs", "workers").split()[:1] \
                    in ([], ["0"]):
                self.assertLess(time.time(), deadline, "the worker took no job")
                time.sleep(0.05)
            time.sleep(0.5)
            w1.send_signal(signal.SIGTERM)
            err = w1.communicate(timeout=60)[1]
            self.assertEqual(w1.returncode, 0, err[-2000:])
            self.assertIn("handing it back", err)
            report = self.finish(coord, [self.worker("--exit-when-idle")])
        finally:
            self.hub.config(latency_ms=0)
        self.assertEqual(report["status"], "complete")
        self.assertEqual(report["jobs_failed"], 0)
        self.assert_mirrors()

    def test_upstream_faults(self):
        self.hub.config(seed=7, error_rate=0.03, reset_rate=0.03, truncate_rate=0.03,
                        corrupt_rate=0.03)
        before = self.hub.counters()["faults"]
        try:
            report = self.sync()
        finally:
            self.hub.config(error_rate=0, reset_rate=0, truncate_rate=0, corrupt_rate=0)
        self.assertEqual(report["status"], "complete")
        self.assert_mirrors()
        # The error paths did run: every kind of fault was served at least once.
        faults = self.hub.counters()["faults"]
        for kind in ("error", "reset", "truncate", "corrupt"):
            self.assertGreater(faults.get(kind, 0), before.get(kind, 0), faults)

    def test_bad_input(self):
        worker, coordinator = (partial(f, bin=ASAN_BIN)
                               for f in (programs.worker, programs.coordinator))
        for argv in (worker("--concurrency", "0"), worker("--concurency", "4"),
                     worker(redis="http://127.0.0.1:6379", target="http://127.0.0.1:5000"),
                     worker(target="ftp://127.0.0.1:5000"),
                     coordinator("sync", "--once", redis=self.redis),
                     coordinator("catalog", official_images="/nonexistent/oi.git"),
                     coordinator("catalog", official_images=OFFICIAL_IMAGES, ref="no-such-ref"),
                     coordinator("bogus-command")):
            p = self.run_prog(argv)
            self.assertEqual(p.returncode, 2, "%s: %s" % (argv, p.stderr))
        # Garbage payloads next to a real run: dead-lettered, the run completes.
        coord = self.coordinator()
        self.wait_enqueued(coord)
        bad = ["{this is not json", json.dumps({"v": 1, "tags": "latest"}),
               json.dumps({"v": 1, "pad": "x" * 100000}), "[]", "null"]
        for i, payload in enumerate(bad):
            subprocess.run(["redis-cli", "-p", str(self.redis.port), "-x", "XADD",
                            "hubsync:jobs", "*", "key", "garbage:%d" % i, "job"],
                           input=payload, text=True, check=True, capture_output=True)
        report = self.finish(coord, [self.worker("--exit-when-idle") for _ in range(2)])
        self.assertEqual(report["status"], "complete")
        self.assert_mirrors()
        self.assertEqual(self.redis.cli_raw("XLEN", "hubsync:jobs:dead").strip(),
                         str(len(bad)))


if __name__ == "__main__":
    unittest.main()
