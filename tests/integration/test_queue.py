"""Integration tests: the Redis queue (common/rq) with several worker processes
against Debian's redis-server: what redis-cli shows, no job lost when a
worker is killed and Redis restarts, poison jobs dead-lettered, SIGTERM
hand-back, one pull budget shared by processes."""
import json
import subprocess
import signal
import time
import unittest

from harness import RedisServer
from harness.redisq import QueueTool


class QueueTest(unittest.TestCase):
    def setUp(self):
        self.redis = RedisServer().start()
        self.prefix = "it%d:" % int(time.time() * 1000)
        self.qt = QueueTool(self.redis.url, self.prefix)

    def tearDown(self):
        self.qt.close()
        self.redis.stop()

    def key(self, name):
        return self.prefix + name

    def cli(self, *args):
        return self.redis.cli_raw(*args)

    def test_redis_cli_shows_plain_json(self):
        self.qt.one("run-create", "r1", "0123abcd")
        self.qt.one("enqueue-jobs", 3, "r1", "http://127.0.0.1:5000")
        out = self.cli("XRANGE", self.key("jobs"), "-", "+", "COUNT", "1")
        lines = out.splitlines()
        self.assertEqual(lines[1], "key")
        self.assertEqual(lines[2], "repo0:tag")
        self.assertEqual(lines[3], "job")
        job = json.loads(lines[4])
        self.assertEqual(job["source_repo"], "library/repo0")
        self.assertEqual(job["run"], "r1")
        self.assertEqual(list(job)[:3], ["v", "run", "key"])
        self.assertEqual(self.cli("HGET", self.key("jobs:index"), "repo0:tag").strip(), lines[0])
        groups = self.cli("XINFO", "GROUPS", self.key("jobs"))
        self.assertIn("workers", groups)
        funcs = self.cli("FUNCTION", "LIST", "LIBRARYNAME", "hubsync")
        for f in ("hubsync_enqueue", "hubsync_take", "hubsync_ack", "hubsync_budget_acquire"):
            self.assertIn(f, funcs)
        self.assertIn("jobs_total", self.cli("HGETALL", self.key("run:r1")))
        self.assertEqual(self.cli("GET", self.key("runs:current")).strip(), "r1")
        stats = self.cli("HGETALL", self.key("stats")).split()
        self.assertEqual(dict(zip(stats[0::2], stats[1::2]))["enqueued"], "3")

    def test_no_job_lost_when_worker_killed_and_redis_restarts(self):
        n = 60
        self.qt.one("run-create", "r1", "c0ffee")
        self.qt.one("enqueue-jobs", n, "r1", "http://127.0.0.1:5000")
        opts = ("--lease-ms", 1500, "--idle-exit-ms", 3000)
        victim = self.qt.start_worker("victim", "--sleep-ms", 5000, *opts)
        victim.wait_event("took")
        workers = [victim] + [self.qt.start_worker("w%d" % i, "--sleep-ms", 100, *opts)
                              for i in (1, 2)]
        time.sleep(0.3)
        victim.signal(signal.SIGKILL)  # dies holding a job
        self.assertEqual(victim.wait(), -signal.SIGKILL)
        held = {e["key"] for e in victim.named("took")} - {e["key"] for e in victim.named("done")}
        self.assertEqual(len(held), 1)
        time.sleep(0.5)
        self.redis.restart()  # SIGTERM: the AOF keeps the queue
        for w in workers[1:]:
            self.assertEqual(w.wait(), 0, w.stderr())
        # Whatever was in a worker's hands during the restart is reclaimed
        # after its lease by a late worker.
        sweeper = self.qt.start_worker("sweeper", "--lease-ms", 1500, "--sleep-ms", 10,
                                       "--idle-exit-ms", 2500)
        self.assertEqual(sweeper.wait(), 0, sweeper.stderr())
        everyone = workers + [sweeper]
        # Every job was worked to the end. An ack whose answer was lost in the
        # restart ("ackfail") may still have been applied: Redis's counts
        # below say whether each job was acked exactly once.
        finished = {e["key"] for w in everyone for e in w.named("done") + w.named("ackfail")}
        self.assertEqual(finished, {"repo%d:tag" % i for i in range(n)})
        # The killed worker's job was delivered again, and counted as such.
        again = [e for w in everyone[1:] for e in w.named("took") if e["key"] in held]
        self.assertTrue(again and max(e["n"] for e in again) >= 2, again)
        run = self.qt.hash("run-get", "r1")
        self.assertEqual(int(run["jobs_done"]), n)  # one effective ack per job
        self.assertEqual(int(run["work_units"]), n)
        stats = self.qt.hash("stats")
        self.assertEqual(int(stats["done"]), n)
        self.assertGreaterEqual(int(stats["reclaimed"]), 1)
        self.assertEqual(self.cli("XLEN", self.key("jobs")).strip(), "0")
        self.assertEqual(self.cli("HLEN", self.key("jobs:index")).strip(), "0")
        pending = self.cli("XPENDING", self.key("jobs"), "workers").split()
        self.assertEqual(pending[0], "0")

    def test_poison_job_is_dead_lettered(self):
        self.qt.one("run-create", "r1", "c0ffee")
        job = '{"v":1,"run":"r1","key":"poison:1"}'
        self.qt.one("run-enqueue", "r1", "poison:1", job)
        self.qt.one("enqueue-jobs", 1, "r1", "http://127.0.0.1:5000")
        opts = ("--crash-on", "poison:1", "--lease-ms", 300, "--max-deliveries", 2,
                "--sleep-ms", 10, "--idle-exit-ms", 1500)
        for attempt in (1, 2):
            w = self.qt.start_worker("w%d" % attempt, *opts)
            self.assertEqual(w.wait(), 3)  # dies on the poison job
            self.assertEqual(w.named("crash")[0]["n"], attempt)
            time.sleep(0.4)
        w = self.qt.start_worker("w3", *opts)
        self.assertEqual(w.wait(), 0, w.stderr())
        self.assertEqual([e["key"] for e in w.named("done")], ["repo0:tag"])
        dead = self.cli("XREVRANGE", self.key("jobs:dead"), "+", "-").splitlines()
        fields = dict(zip(dead[1::2], dead[2::2]))
        self.assertEqual(fields["key"], "poison:1")
        self.assertEqual(fields["reason"], "max deliveries")
        self.assertEqual(fields["deliveries"], "3")
        self.assertEqual(fields["job"], job)
        self.assertEqual(int(self.qt.hash("run-get", "r1")["jobs_dead"]), 1)
        self.assertEqual(self.cli("HEXISTS", self.key("jobs:index"), "poison:1").strip(), "0")

    def test_sigterm_hands_the_job_back(self):
        self.qt.one("run-create", "r1", "c0ffee")
        self.qt.one("enqueue-jobs", 1, "r1", "http://127.0.0.1:5000")
        slow = self.qt.start_worker("slow", "--sleep-ms", 60000, "--lease-ms", 60000)
        took = slow.wait_event("took")
        self.assertEqual(took["n"], 1)
        t0 = time.time()
        slow.signal(signal.SIGTERM)
        self.assertEqual(slow.wait(), 0, slow.stderr())
        self.assertEqual(len(slow.named("handback")), 1)
        # Another worker gets it at once, not after the 60 s lease, and the
        # delivery count was not raised by the hand-back.
        fast = self.qt.start_worker("fast", "--sleep-ms", 10, "--lease-ms", 60000,
                                    "--idle-exit-ms", 1000)
        ev = fast.wait_event("took", timeout=5)
        self.assertEqual((ev["key"], ev["n"]), (took["key"], 1))
        self.assertEqual(fast.wait(), 0)
        self.assertLess(time.time() - t0, 10)
        self.assertEqual([e["key"] for e in fast.named("done")], [took["key"]])

    def test_pull_budget_shared_by_processes(self):
        self.assertEqual(self.qt.one("drain", "198.51.100.7")["granted"], 0)  # unknown
        self.assertEqual(self.qt.one("observe", "198.51.100.7", 100, 100, 21600)["n"], 100)
        procs = [subprocess.Popen(self.qt.base + ["--floor", "5", "drain", "198.51.100.7"],
                                  stdout=subprocess.PIPE, text=True) for _ in range(4)]
        granted = [json.loads(p.communicate(timeout=60)[0])["granted"] for p in procs]
        self.assertEqual(sum(granted), 95)  # never past the floor, never twice
        self.assertEqual(int(self.qt.hash("stats")["pulls_granted"]), 95)
        inflight = self.cli("ZCARD", self.key("budget:198.51.100.7:inflight")).strip()
        self.assertEqual(inflight, "95")


if __name__ == "__main__":
    unittest.main()
