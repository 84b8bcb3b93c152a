"""Metrics: --metrics-listen on the coordinator and on each worker. Debian's prometheus
server scrapes them during a sync (it sees the run in progress from the coordinator) and its
query API answers the workers' GET counter with the number of manifest GETs the Docker Hub
stand-in counted; every metric served is documented in docs/metrics.md; no credential and no
URL shows in the metrics."""
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

from harness import OFFICIAL_IMAGES, TIMEOUT_FACTOR, free_port, wait_port
from harness.stack import PREFIX, Stack

REPOS = ["hello-world", "alpine"]
SECRET = "s3cret-of-the-metrics-test"
DOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs",
                    "metrics.md")


def scrape(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
        return r.read().decode()


def wait_for(cond, what, timeout=60):
    deadline = time.time() + timeout * TIMEOUT_FACTOR
    while True:
        got = cond()
        if got:
            return got
        if time.time() > deadline:
            raise AssertionError("%s: not within %ds" % (what, timeout))
        time.sleep(0.2)


class MetricsTest(unittest.TestCase):

    def setUp(self):
        self.assertIsNotNone(shutil.which("prometheus"), "Debian's prometheus is not installed")
        self.st = Stack(REPOS, worker_log_level="warn", logs=True).start()
        self.addCleanup(self.st.stop)
        self.dir = tempfile.mkdtemp(prefix="hubsync-prometheus-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        # Credentials the programs hold: they must never reach a metric.
        self.env = {"HUBSYNC_TARGET_USERNAME": "hubsync", "HUBSYNC_TARGET_PASSWORD": SECRET}

    def prometheus(self, targets):
        port = free_port()
        config = os.path.join(self.dir, "prometheus.yml")
        with open(config, "w") as f:
            json.dump({"global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                       "scrape_configs": [{"job_name": "hubsync", "static_configs": [
                           {"targets": ["127.0.0.1:%d" % p for p in targets]}]}]}, f)
        log = open(os.path.join(self.dir, "prometheus.log"), "w")
        p = subprocess.Popen(["prometheus", "--config.file=" + config,
                              "--storage.tsdb.path=" + os.path.join(self.dir, "data"),
                              "--web.listen-address=127.0.0.1:%d" % port],
                             stdout=log, stderr=log)
        log.close()

        def stop():
            p.terminate()
            p.wait(timeout=30)
        self.addCleanup(stop)
        wait_port(port, timeout=60, proc=p)
        return port

    def query(self, port, q):
        url = "http://127.0.0.1:%d/api/v1/query?%s" % (port, urllib.parse.urlencode({"query": q}))
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        return [(s["metric"], float(s["value"][1])) for s in body["data"]["result"]]

    def test_prometheus_scrapes_a_sync(self):
        st = self.st
        cport, wports = free_port(), [free_port(), free_port()]
        pport = self.prometheus([cport] + wports)
        # The daemon: its first run starts at once, then it waits, still serving.
        with open(st.log_path("coordinator.log"), "w") as log:
            st.coordinator("--metrics-listen", "127.0.0.1:%d" % cport, "--interval", "3600",
                           once=False, wait=False, json_report=False, env=self.env,
                           stdout=subprocess.DEVNULL, stderr=log)
        self.assertIsNotNone(st.wait_enqueued())
        # Prometheus sees the run in progress before any worker takes a job.
        wait_for(lambda: [v for _, v in self.query(pport, "hubsync_run_in_progress") if v == 1],
                 "the coordinator's run in progress, scraped")
        queued = self.query(pport, 'hubsync_queue_jobs{state="waiting"}')
        self.assertGreater(queued[0][1], 0)
        # Each repository is behind upstream since the official-images commit changed it
        # (a first run: every one, since the commit synced).
        made = int(subprocess.run(["git", "-C", OFFICIAL_IMAGES, "log", "-1", "--format=%ct",
                                   "HEAD"], capture_output=True, text=True,
                                  check=True).stdout)
        behind = dict((m["repository"], v) for m, v in
                      self.query(pport, "hubsync_repository_behind_seconds"))
        self.assertEqual(set(behind), set(REPOS))
        for v in behind.values():
            self.assertAlmostEqual(v, time.time() - made, delta=120)
        for p in wports:
            st.worker("--metrics-listen", "127.0.0.1:%d" % p, env=self.env)
        wait_for(lambda: st.redis.cli_raw("GET", PREFIX + "synced-commit").strip(),
                 "the run complete", timeout=300)
        gets = st.hub.counters()["manifest_get"]
        self.assertGreater(gets, 0)
        wait_for(lambda: [v for _, v in self.query(
            pport, "sum(hubsync_worker_upstream_manifest_gets_total)") if v == gets],
            "prometheus answering the stand-in's %d GETs" % gets)
        wait_for(lambda: [v for _, v in self.query(pport, "hubsync_run_in_progress") if v == 0],
                 "the run's end, scraped")
        wait_for(lambda: not self.query(pport, "hubsync_repository_behind_seconds"),
                 "every repository caught up, scraped")
        durations = self.query(pport, "hubsync_last_run_duration_seconds")
        self.assertGreater(durations[0][1], 0)

        texts = [scrape(p) for p in [cport] + wports]
        with open(DOCS) as f:
            docs = f.read()
        names = set()
        for text in texts:
            names |= set(re.findall(r"^# TYPE (\S+) ", text, re.M))
            self.assertNotIn(SECRET, text)
            for labels in re.findall(r"^\S+?\{(.*)\} ", text, re.M):
                self.assertNotIn("://", labels)
        self.assertIn("hubsync_worker_job_duration_seconds", names)
        self.assertIn("hubsync_pull_budget_remaining", names)
        undocumented = sorted(n for n in names if "`%s`" % n not in docs)
        self.assertEqual(undocumented, [], "metrics missing from docs/metrics.md")


if __name__ == "__main__":
    unittest.main()
