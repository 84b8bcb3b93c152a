"""`hubsync-coordinator plan` and `status` against a real redis-server, a real docker-registry
target and the Docker Hub stand-in upstream filled from the real official-images data.

plan: on an empty target it predicts every write and a counted-GET range that holds what a
real sync then spends; after the sync it predicts nothing; an upstream rebuild shows up as
writes; it never sends a counted GET and never changes Redis. status: empty Redis, a run in
flight (jobs, workers with heartbeats, budget), the run afterwards, failures (delayed and dead
letters), the pause switch and budget pauses as documented in common/keys.h, --json shape,
--health and the exit codes, Redis down.
"""
import json
import subprocess
import time
import unittest

from harness import OFFICIAL_IMAGES, free_port, programs
from harness.stack import MirrorCase
from standin.loader import totals

REPOS = ["hello-world", "busybox"]


def coordinator(command, *args, timeout=120, **options):
    """Run `hubsync-coordinator command` (options as for programs.coordinator)."""
    return subprocess.run(programs.coordinator(command, *args, **options),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout)


def snapshot(redis):
    """Every key with its serialized value (DUMP), to prove nothing was written."""
    keys = sorted(redis.cli_raw("KEYS", "*").split())
    if not keys:
        return {}
    out = subprocess.run(["redis-cli", "-p", str(redis.port), "--no-raw"],
                         input="".join("DUMP %s\n" % k for k in keys), stdout=subprocess.PIPE,
                         text=True, timeout=30).stdout.splitlines()
    return dict(zip(keys, out))


def catalog_tags(cat, repos):
    return sum(len(g["tags"]) for r in cat["repositories"] if r["name"] in repos
               for g in r["groups"])


def catalog_groups(cat, repos):
    return sum(len(r["groups"]) for r in cat["repositories"] if r["name"] in repos)


class Base(MirrorCase):
    REPOS = REPOS
    HUB_LIMIT = 10000

    def common(self, repos=REPOS, hub=None):
        return dict(official_images=OFFICIAL_IMAGES, upstream=hub or self.hub,
                    target=self.target, repos=repos)

    def plan(self, *extra, repos=REPOS, hub=None, rc=0):
        """plan --json; asserts that it spent no pull and wrote nothing to Redis."""
        hub = hub or self.hub
        before, keys = hub.counters()["manifest_get"], snapshot(self.redis)
        p = coordinator("plan", "--json", *extra, redis=self.redis, **self.common(repos, hub))
        self.assertEqual(p.returncode, rc, p.stderr)
        self.assertEqual(hub.counters()["manifest_get"], before, "plan sent a counted GET")
        self.assertEqual(snapshot(self.redis), keys, "plan changed Redis")
        return json.loads(p.stdout)

    def status(self, *extra, rc=0):
        s = coordinator("status", "--json", *extra, redis=self.redis)
        self.assertEqual(s.returncode, rc, s.stderr)
        return json.loads(s.stdout)

    def start_sync(self, *extra, repos=REPOS):
        """`sync --once --wait --json` over a Stack that self.workers() then joins."""
        self.st = self.stack(repos, worker_log_level=None)
        return self.st.coordinator(*extra)

    def wait_enqueued(self):
        run = self.st.wait_enqueued()
        self.assertIsNotNone(run, "sync ended before enqueueing")
        return run

    def workers(self, n, *extra):
        return [self.st.worker("--exit-when-idle", *extra, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL) for _ in range(n)]

    def finish(self, sync, workers):
        out, err = sync.communicate(timeout=180)
        for w in workers:
            w.wait(timeout=60)
        return sync.returncode, json.loads(out), err


class PlanThenSyncTest(Base):
    def test_plan_predicts_the_sync_and_status_follows_it(self):
        tags = catalog_tags(self.catalog, REPOS)
        groups = catalog_groups(self.catalog, REPOS)
        least = totals(self.pushed, REPOS)
        indexes = least["indexes"]
        least = least["manifest_gets_min"]

        # --- plan on an empty target, Redis without a marker ---
        p = self.plan()
        self.assertEqual(snapshot(self.redis), {})
        self.assertIn("empty", self.redis.cli("FUNCTION", "LIST"))  # no library loaded either
        t = p["totals"]
        self.assertEqual(p["commit"], self.catalog["commit"])
        self.assertIsNone(p["from"])
        self.assertTrue(p["first_run"])
        self.assertEqual(p["marker"], "redis")
        self.assertEqual((t["groups"], t["groups_changed"], t["tags"]), (groups, groups, tags))
        self.assertEqual((t["unchanged"], t["to_write"]), (0, tags))
        self.assertEqual((t["missing_upstream"], t["errors"]), (0, 0))
        self.assertEqual(t["digests"], indexes)
        self.assertEqual(t["digests_to_fetch"], indexes)
        self.assertEqual(t["gets_min"], indexes)
        self.assertLessEqual(t["gets_min"], least)
        self.assertGreaterEqual(t["gets_max"], least)
        for g in p["groups"]:
            self.assertEqual(len(g["write"]), g["tags"], g["key"])
            self.assertEqual(g["problems"], [])
        self.assertEqual([r["name"] for r in p["repositories"]], sorted(REPOS))
        self.assertEqual(sum(r["to_write"] for r in p["repositories"]), tags)
        b = p["budget"]
        self.assertEqual((b["reported"], b["limit"], b["window_s"], b["source"]),
                         (True, 10000, 21600, "127.0.0.1"))
        self.assertEqual(b["verdict"], "fits")
        self.assertLessEqual(b["remaining"], 10000)

        # The readable form says the same.
        r = coordinator("plan", **self.common())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("first run, every group counts as changed", r.stdout)
        self.assertIn("at least %d, at most %d" % (t["gets_min"], t["gets_max"]), r.stdout)
        self.assertRegex(r.stdout, r"total +%d +%d +%d +0 +%d " % (groups, groups, tags, tags))

        # --- the real sync; status while it runs ---
        self.hub.config(latency_ms=20)  # long enough a run to look at
        gets_before = self.hub.counters()["manifest_get"]
        try:
            sync = self.start_sync()
            run = self.wait_enqueued()
            workers = self.workers(2)
            seen_worker = seen_budget = None
            deadline = time.time() + 120
            while sync.poll() is None and time.time() < deadline:
                s = self.status()
                cur = s["current_run"]
                if cur is not None:
                    self.assertEqual(cur["id"], run)
                    self.assertEqual(cur["jobs_total"], groups)
                    self.assertTrue(s["coordinator"]["held"])
                    alive = [w for w in s["workers"] if w["alive"]]
                    if alive and seen_worker is None:
                        seen_worker = alive[0]
                    if s["budget"] and seen_budget is None:
                        seen_budget = s["budget"][0]
                    if seen_worker and seen_budget:
                        # A sync started now would resume this run; plan says so.
                        r = coordinator("plan", "--json", redis=self.redis, **self.common())
                        self.assertEqual(r.returncode, 0, r.stderr)
                        self.assertEqual(json.loads(r.stdout)["resumes_run"], run)
                        h = coordinator("status", "--health", redis=self.redis)
                        self.assertEqual(h.returncode, 0, h.stdout + h.stderr)
                        self.assertIn("lease held by", h.stdout)
                        self.assertIn("current run  %s" % run, h.stdout)
                        break
                time.sleep(0.2)
        finally:
            self.hub.config(latency_ms=0)
        rc, report, err = self.finish(sync, workers)
        self.assertEqual(rc, 0, err)
        self.assertIsNotNone(seen_worker, "no live worker seen during the run")
        for k in ("host", "pid", "started_ms", "jobs", "jobs_done", "bytes"):
            self.assertIn(k, seen_worker)
        self.assertGreaterEqual(seen_worker["beat_age_ms"], 0)
        self.assertLess(seen_worker["beat_age_ms"], 30000)
        self.assertIsNotNone(seen_budget, "no budget seen during the run")
        self.assertEqual((seen_budget["source"], seen_budget["limit"]), ("127.0.0.1", 10000))

        # The prediction holds: the writes exactly, the GETs within the range.
        gets = self.hub.counters()["manifest_get"] - gets_before
        self.assertEqual(report["status"], "complete")
        self.assertEqual(report["tags_written"], t["to_write"])
        self.assertEqual(report["upstream_manifest_gets"], gets)
        self.assertGreaterEqual(gets, t["gets_min"])
        self.assertLessEqual(gets, t["gets_max"])

        # --- status after the run ---
        s = self.status("--health")
        self.assertIsNone(s["current_run"])
        self.assertFalse(s["coordinator"]["held"])
        self.assertEqual(s["synced_commit"], self.catalog["commit"])
        self.assertEqual(s["queue"]["stream"], 0)
        self.assertEqual(s["queue"]["dead"], 0)
        self.assertEqual(s["workers"], [])  # they said goodbye
        last = s["runs"][0]
        self.assertEqual((last["id"], last["state"], last["commit"]),
                         (run, "done", self.catalog["commit"]))
        self.assertEqual((last["jobs_done"], last["jobs_total"], last["jobs_failed"]),
                         (groups, groups, 0))
        self.assertEqual(last["tags_written"], tags)
        self.assertEqual(last["upstream_manifest_gets"], gets)
        self.assertGreaterEqual(last["duration_ms"], 0)
        self.assertTrue(s["health"]["ok"])
        self.assertIn("last run finished", s["health"]["reason"])
        budget = s["budget"][0]
        self.assertEqual(budget["remaining"],
                         self.hub.counters()["sources"]["127.0.0.1"]["remaining"])
        self.assertEqual(budget["http_429"], 0)
        self.assertEqual(s["stats"]["done"], groups)

        # --- plan after the sync: nothing to do, and it knows the marker ---
        p = self.plan()
        t = p["totals"]
        self.assertFalse(p["first_run"])
        self.assertEqual(p["from"], self.catalog["commit"])
        self.assertEqual((t["unchanged"], t["to_write"], t["digests_to_fetch"]), (tags, 0, 0))
        self.assertEqual((t["gets_min"], t["gets_max"], t["groups_changed"]), (0, 0, 0))
        r = coordinator("plan", redis=self.redis, **self.common())
        self.assertIn("already synced, every group is a check", r.stdout)
        self.assertIn("at least 0, at most 0", r.stdout)

        # --- an upstream rebuild without a catalog change: found with HEADs only ---
        rebuilt = self.hub.rebuild("busybox:latest")
        changed = rebuilt["changed"]
        self.assertTrue(changed)
        p = self.plan()
        t = p["totals"]
        self.assertEqual(t["to_write"], sum(len(c["tags"]) for c in changed))
        self.assertEqual(t["digests_to_fetch"], len({c["new"] for c in changed}))
        self.assertEqual(t["gets_min"], t["digests_to_fetch"])
        self.assertEqual(t["groups_changed"], 0)
        written = {("library/" + g["repository"], tag) for g in p["groups"] for tag in g["write"]}
        self.assertEqual(written, {(c["repository"], tag) for c in changed for tag in c["tags"]})

    def test_plan_with_platform_policy(self):
        """Under --platform-policy the range shrinks to the chosen platforms and still holds;
        afterwards the target's rewritten indexes count as current (they name their source)."""
        sel = ["--platforms", "linux/amd64", "--platform-policy", "rewrite"]
        p = self.plan(*sel)
        t = p["totals"]
        self.assertEqual(p["platform_policy"], "rewrite")
        self.assertGreater(t["to_write"], 0)
        # One platform: an index, at most one image and one attestation each.
        self.assertEqual(t["gets_max"], 3 * t["digests_to_fetch"])
        sync = self.start_sync(*sel)
        self.wait_enqueued()
        rc, report, err = self.finish(sync, self.workers(2))
        self.assertEqual(rc, 0, err)
        self.assertEqual(report["tags_written"], t["to_write"])
        self.assertGreaterEqual(report["upstream_manifest_gets"], t["gets_min"])
        self.assertLessEqual(report["upstream_manifest_gets"], t["gets_max"])
        t = self.plan(*sel)["totals"]
        self.assertEqual((t["to_write"], t["gets_max"]), (0, 0))


class StatusTest(Base):
    def test_empty_redis(self):
        s = self.status()
        for k in ("redis", "prefix", "now_ms", "paused", "synced_commit", "coordinator",
                  "queue", "workers", "workers_silent", "budget", "current_run", "runs",
                  "stats", "health"):
            self.assertIn(k, s)
        self.assertEqual(s["prefix"], "hubsync:")
        self.assertFalse(s["paused"])
        self.assertIsNone(s["synced_commit"])
        self.assertEqual(s["coordinator"], {"held": False, "holder": None,
                                            "expires_in_ms": None})
        self.assertEqual(s["queue"], {"stream": 0, "waiting": 0, "in_flight": 0, "delayed": 0,
                                      "delayed_by_why": {"budget": 0, "backoff": 0,
                                                         "registry": 0},
                                      "next_due_in_ms": None, "dead": 0, "dead_newest": []})
        self.assertEqual((s["workers"], s["budget"], s["runs"]), ([], [], []))
        self.assertIsNone(s["current_run"])
        self.assertFalse(s["health"]["ok"])
        # Without --health a live Redis is enough; with it, nothing runs: exit 1.
        self.status("--health", rc=1)
        r = coordinator("status", redis=self.redis)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("no coordinator holds the lease", r.stdout)
        self.assertIn("never (no run has completed)", r.stdout)
        self.assertEqual(snapshot(self.redis), {})  # looking wrote nothing
        self.assertIn("empty", self.redis.cli("FUNCTION", "LIST"))

    def test_redis_down(self):
        port = free_port()
        r = coordinator("status", redis="redis://127.0.0.1:%d" % port)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stdout, "")
        lines = r.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertIn("hubsync-coordinator status: redis 127.0.0.1:%d/0" % port, lines[0])
        self.assertIn("refused", lines[0])
        r = coordinator("status", "--health", "--json",
                        redis="redis://:secret@127.0.0.1:%d" % port)
        self.assertEqual(r.returncode, 1)
        self.assertNotIn("secret", r.stderr)
        # plan goes on without the marker, and says so.
        p = coordinator("plan", "--json", redis="redis://127.0.0.1:%d" % port,
                        **self.common(["hello-world"]))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["marker"], "unreachable")
        self.assertIn("planning as a first run", p.stderr)

    def test_failures_delays_and_dead_letters(self):
        """alpine is in the catalog but not upstream: its jobs back off, then die."""
        repos = ["hello-world", "alpine"]
        p = self.plan(repos=repos, rc=0)
        alpine = [g for g in p["groups"] if g["repository"] == "alpine"]
        self.assertTrue(alpine)
        self.assertEqual(p["totals"]["missing_upstream"], sum(g["tags"] for g in alpine))
        sync = self.start_sync(repos=repos)
        run = self.wait_enqueued()
        workers = self.workers(1, "--max-attempts", "2", "--backoff-ms", "4000")
        seen_backoff = None
        deadline = time.time() + 60
        while sync.poll() is None and time.time() < deadline and seen_backoff is None:
            s = self.status()
            if s["queue"]["delayed_by_why"]["backoff"] > 0:
                seen_backoff = s
            time.sleep(0.2)
        rc, report, err = self.finish(sync, workers)
        self.assertEqual(rc, 1, err)
        self.assertIsNotNone(seen_backoff, "no job seen waiting for its backoff")
        self.assertGreater(seen_backoff["queue"]["next_due_in_ms"], -5000)
        s = self.status()
        self.assertEqual(s["queue"]["dead"], len(alpine))
        newest = s["queue"]["dead_newest"]
        self.assertEqual(len(newest), min(5, len(alpine)))
        for d in newest:
            self.assertTrue(d["key"].startswith("alpine:"), d)
            self.assertIn("failed after 2 attempts", d["reason"])
            self.assertGreater(d["ts_ms"], 0)
        self.assertEqual([d["ts_ms"] for d in newest],
                         sorted((d["ts_ms"] for d in newest), reverse=True))
        last = s["runs"][0]
        self.assertEqual((last["id"], last["state"]), (run, "failed"))
        self.assertEqual(last["jobs_failed"], len(alpine))
        self.assertIsNone(s["synced_commit"])  # a failed run never moves the marker
        r = coordinator("status", redis=self.redis)
        self.assertIn("%d dead" % len(alpine), r.stdout)
        self.assertIn("failed after 2 attempts", r.stdout)

    def test_documented_keys(self):
        """Pause switch, lease, budget pause, delayed jobs and a current run, written as
        common/keys.h documents them (what redis-cli users and other tools do)."""
        cli = self.redis.cli_raw
        now = int(cli("TIME").split()[0]) * 1000
        run = "20261129T020000Z-beef"
        cli("SET", "hubsync:ctl:paused", "1")
        cli("SET", "hubsync:coordinator", "box:42:0badc0de", "PX", "30000")
        cli("HSET", "hubsync:budget:127.0.0.1", "limit", "100", "remaining", "0", "window_s",
            "21600", "observed_ms", str(now - 5000), "paused_until_ms", str(now + 600000),
            "http_429", "2", "unlimited", "0")
        cli("ZADD", "hubsync:budget:127.0.0.1:inflight", str(now + 60000), "r1")
        # Sources are percent-encoded in key names (an IPv6 address has colons).
        cli("HSET", "hubsync:budget:2001%3Adb8%3A%3A1", "unlimited", "1", "observed_ms", str(now))
        cli("ZADD", "hubsync:budgets", str(now - 5000), "127.0.0.1", str(now), "2001:db8::1")
        cli("HSET", "hubsync:run:" + run, "id", run, "state", "running", "commit", "c" * 40,
            "started_ms", str(now - 90000), "jobs_total", "10", "jobs_done", "4",
            "jobs_failed", "1", "jobs_dead", "1", "tags_written", "7",
            "upstream_manifest_gets", "12", "blob_bytes_copied", "2500000", "jobs_deferred", "1")
        cli("ZADD", "hubsync:runs", str(now - 90000), run)
        cli("SET", "hubsync:runs:current", run)
        for key, why, r in (("a:1", "budget", run), ("a:2", "budget", "older"),
                            ("b:1", "backoff", run), ("c:1", "registry", run)):
            cli("ZADD", "hubsync:jobs:delayed", str(now + 120000), key)
            cli("HSET", "hubsync:jobs:delayed:payload", key,
                json.dumps({"why": why, "due_ms": now + 120000,
                            "job": {"run": r, "key": key}}))
        cli("HSET", "hubsync:jobs:delayed:count", "budget", "2", "backoff", "1", "registry", "1")
        keys = snapshot(self.redis)
        s = self.status("--health")
        self.assertEqual(snapshot(self.redis), keys)
        self.assertTrue(s["paused"])
        self.assertEqual(s["coordinator"]["holder"], "box:42")  # not the lease's token
        self.assertGreater(s["coordinator"]["expires_in_ms"], 20000)
        self.assertEqual(s["queue"]["delayed"], 4)
        self.assertEqual(s["queue"]["delayed_by_why"], {"budget": 2, "backoff": 1, "registry": 1})
        self.assertGreater(s["queue"]["next_due_in_ms"], 100000)
        budget = {b["source"]: b for b in s["budget"]}
        self.assertEqual(set(budget), {"127.0.0.1", "2001:db8::1"})
        b = budget["127.0.0.1"]
        self.assertEqual((b["limit"], b["remaining"], b["window_s"], b["http_429"]),
                         (100, 0, 21600, 2))
        self.assertEqual(b["reserved"], 1)
        self.assertGreater(b["paused_for_ms"], 500000)
        self.assertGreaterEqual(b["observed_age_ms"], 5000)
        self.assertTrue(budget["2001:db8::1"]["unlimited"])
        self.assertIsNone(budget["2001:db8::1"]["paused_for_ms"])
        cur = s["current_run"]
        self.assertEqual((cur["id"], cur["jobs_done"], cur["deferred"]), (run, 4, 1))
        self.assertGreaterEqual(cur["elapsed_ms"], 90000)
        self.assertEqual(s["runs"][0]["jobs_failed"], 2)  # failed + dead, as sync reports
        self.assertIsNone(s["runs"][0]["duration_ms"])
        r = coordinator("status", redis=self.redis)
        self.assertEqual(r.returncode, 0, r.stderr)
        for text in ("PAUSED", "lease held by box:42", "2001:db8::1", "unlimited",
                     "jobs 4/10 (failed 2, deferred 1)", "2.5 MB",
                     "budget 2, backoff 1, registry down 1"):
            self.assertIn(text, r.stdout)
        self.assertNotIn("0badc0de", r.stdout)

        # --health: the lease alone is enough; without it the last finished run decides.
        cli("DEL", "hubsync:coordinator")
        self.status("--health", rc=1)
        cli("HSET", "hubsync:run:" + run, "state", "done", "finished_ms", str(now - 130000))
        self.status("--health", "--interval", "60", rc=1)  # 130 s > 2 x 60 s
        self.status("--health", "--interval", "70")         # 130 s < 2 x 70 s
        self.status("--interval", "60")                     # no --health: Redis answered

        # Another prefix is another deployment.
        s = self.status("--redis-prefix", "other:")
        self.assertEqual((s["budget"], s["runs"], s["paused"]), ([], [], False))

    def test_usage(self):
        r = coordinator("status", "--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("--json prints one object", r.stdout)
        r = coordinator("plan", "--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("gets_min", r.stdout)
        self.assertEqual(coordinator("status", "stray").returncode, 2)
        r = coordinator("plan", official_images=OFFICIAL_IMAGES)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--target is required", r.stderr)
        r = coordinator("plan", "--platforms", "linux/amd64", target=self.target)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--platform-policy", r.stderr)


if __name__ == "__main__":
    unittest.main()
