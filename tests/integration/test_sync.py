"""End-to-end sync: coordinator + workers + real Redis + real docker-registry target, with the
Docker Hub stand-in upstream filled from the real official-images data.

Checks hubsync's main promises: every tag lands with the upstream digest; counted GETs are
exactly the distinct manifests the target lacked; blob bytes are exactly the unique bytes it
lacked; a re-run costs nothing; upstream rebuilds and catalog changes are found; one worker and
four give the same result; a pull quota smaller than the work is never overrun.
"""
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest
import urllib.request

from harness import OFFICIAL_IMAGES, RedisServer
from harness.programs import catalog, coordinator, worker
from harness.stack import MirrorCase, Stack
from harness.standin import Standin
from harness.target import ACCEPT, head, pushed_tags, tags
from standin.loader import totals

REPOS = MirrorCase.REPOS
def children_of(pushed):
    """Every child manifest digest of every group."""
    return {c["digest"] for r in pushed["repositories"] for g in r["groups"]
            for c in g["children"]}


def get_manifest(registry_url, repo, ref):
    req = urllib.request.Request("%s/v2/%s/manifests/%s" % (registry_url, repo, ref),
                                 headers={"Accept": ACCEPT})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def blob_exists(registry_url, repo, digest):
    req = urllib.request.Request("%s/v2/%s/blobs/%s" % (registry_url, repo, digest),
                                 method="HEAD")
    try:
        with urllib.request.urlopen(req, timeout=30):
            return True
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return False
        raise


def present_members(redis, repo):
    """{present set key: its digests} of every set of repo in Redis."""
    keys = redis.cli_raw("--scan", "--pattern", "hubsync:present:*:" + repo).split()
    return {k: set(redis.cli_raw("SMEMBERS", k).split()) for k in keys}


def assert_complete_content(test, registry_url, repo, tag):
    """The tag's index and every child and blob it references are on the target."""
    index = get_manifest(registry_url, repo, tag)
    children = index.get("manifests", [index])
    for c in children:
        if "manifests" in index:
            test.assertIsNotNone(head(registry_url, repo, c["digest"]),
                                 "%s:%s child %s missing" % (repo, tag, c["digest"]))
            m = get_manifest(registry_url, repo, c["digest"])
        else:
            m = index
        for b in [m["config"]] + m["layers"]:
            test.assertTrue(blob_exists(registry_url, repo, b["digest"]),
                            "%s:%s blob %s missing" % (repo, tag, b["digest"]))


class SyncTest(MirrorCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.min = totals(cls.pushed, REPOS)

    def sync(self):
        before = self.hub.counters()
        s = self.stack().run()
        after = self.hub.counters()
        s.gets = after["manifest_get"] - before["manifest_get"]
        s.heads = after["manifest_head"] - before["manifest_head"]
        s.blob_bytes = after["blob_bytes"] - before["blob_bytes"]
        self.assertEqual(after["auth_leaks"], 0)
        return s

    def assert_mirrors(self, pushed, repos):
        for (repo, tag), digest in pushed_tags(pushed, repos).items():
            self.assertEqual(head(self.target.url, "library/" + repo, tag), digest,
                             "library/%s:%s" % (repo, tag))

    def test_full_sync_then_noop(self):
        s = self.sync()
        self.assertEqual(s.rc, 0, s.stderr)
        r = s.report
        self.assertEqual(r["status"], "complete")
        self.assertEqual(r["jobs_done"], r["jobs_total"])
        self.assertEqual(r["tags_total"], self.min["tags"])
        self.assertEqual(r["tags_written"], self.min["tags"])
        # The physical minimum: each distinct manifest fetched once, each unique blob once.
        self.assertEqual(s.gets, self.min["manifest_gets_min"])
        self.assertEqual(r["upstream_manifest_gets"], s.gets)
        self.assertEqual(s.blob_bytes, self.min["blob_bytes"])
        self.assertEqual(r["blob_bytes_copied"], self.min["blob_bytes"])
        self.assertEqual(r["blobs_copied"], self.min["blobs"])
        self.assertEqual(r["blobs_copied"] + r["blobs_mounted"], self.min["blob_refs"])
        self.assertEqual(r["upstream_manifest_heads"], self.min["tags"])
        self.assert_mirrors(self.pushed, REPOS)
        # A real client sees the same bytes: skopeo's raw manifest hashes to the digest.
        ref = "docker://127.0.0.1:%d/library/hello-world:latest" % self.target.port
        raw = subprocess.check_output(["skopeo", "inspect", "--raw", "--tls-verify=false", ref])
        import hashlib
        self.assertEqual("sha256:" + hashlib.sha256(raw).hexdigest(),
                         pushed_tags(self.pushed, REPOS)[("hello-world", "latest")])
        self.assertEqual(self.redis.cli_raw("GET", "hubsync:synced-commit").strip(),
                         self.catalog["commit"])

        again = self.sync()
        self.assertEqual(again.rc, 0, again.stderr)
        self.assertEqual(again.report["status"], "complete")
        self.assertEqual(again.gets, 0)
        # The report and status show where the run's time went, each phase in ms.
        phases = again.report["phases"]
        self.assertEqual(sorted(phases), ["catalog", "end", "enqueue", "first_job", "work"])
        for name, ms in phases.items():
            self.assertIsInstance(ms, int, name)
            self.assertGreaterEqual(ms, 0, name)
        self.assertGreaterEqual(phases["work"], phases["first_job"])
        st = json.loads(subprocess.check_output(
            coordinator("status", "--json", redis=self.redis)))
        self.assertEqual(st["runs"][0]["phases"], phases)
        self.assertEqual(again.blob_bytes, 0)
        self.assertEqual(again.report["tags_unchanged"], self.min["tags"])
        self.assertEqual(again.report["tags_written"], 0)
        self.assertEqual(again.report["manifests_pushed"], 0)

    def test_connections_per_host_caps_requests_in_flight(self):
        # With latency every request takes long enough for the worker's jobs to overlap:
        # at 8 connections the stand-in sees more than 2 at once, at 2 never more.
        self.hub.config(latency_ms=40)
        self.addCleanup(self.hub.config, latency_ms=0)
        peaks = {}
        for n in (2, 8):
            st = Stack(["hello-world", "busybox"], hub=self.hub, worker_log_level="warn").start()
            self.addCleanup(st.stop)
            self.hub.reset_counters()
            s = st.run(workers=1, worker_extra=("--connections-per-host", str(n)))
            self.assertEqual(s.rc, 0, s.stderr)
            self.assertEqual(s.report["status"], "complete")
            peaks[n] = self.hub.counters()["in_flight_peak"]
        self.assertLessEqual(peaks[2], 2, peaks)
        self.assertGreater(peaks[8], 2, peaks)

    def test_batch_workers_leave_with_the_run(self):
        # --exit-when-idle workers with a long idle grace: once the run they worked for has
        # all its jobs queued and the queue is drained, they leave at once instead of waiting
        # the grace out (Stack.run gives them 60 s to exit).
        s = self.stack(["hello-world"]).run(worker_extra=["--idle-grace", "600"])
        self.assertEqual(s.rc, 0, s.stderr)
        self.assertEqual(s.report["status"], "complete")

    def test_waiting_batch_workers_share_the_first_jobs(self):
        # Batch workers started before the run wait on the stream, not on a timer: Redis
        # hands each one of the run's first jobs the moment they are queued. (Polling, the
        # first worker to look took every job up to its concurrency, after a wait of up to
        # a poll.)
        st = Stack(["alpine"], hub=self.hub, logs=True).start()
        try:
            ws = [st.worker("--exit-when-idle", "--idle-grace", "600") for _ in range(3)]
            deadline = time.time() + 30
            while st.redis.cli_raw("CLIENT", "LIST").count("cmd=xreadgroup") < len(ws):
                self.assertLess(time.time(), deadline, "the workers never waited on the stream")
                time.sleep(0.02)
            st.coordinator()
            run = st.report()
            for w in ws:
                w.wait(timeout=60)
            self.assertEqual(run.rc, 0, run.stderr)
            self.assertEqual(run.report["status"], "complete")
            done = []  # the groups each worker finished (a part's key has an '@')
            for path in st.logs:
                with open(path) as f:
                    text = f.read()
                if "stopped (done" in text:
                    done.append(len(re.findall(r"job=[^@\s]+ run=\S+ status=done", text)))
            self.assertEqual(len(done), len(ws))
            self.assertEqual(sum(done), run.report["jobs_total"])
            self.assertGreater(run.report["jobs_total"], len(ws))
            self.assertNotIn(0, done, done)
        finally:
            st.stop()

    def test_upstream_rebuild_is_found(self):
        # A stand-in of its own: the rebuild changes what it serves.
        hub = Standin(limit=100000).start()
        try:
            pushed = hub.load(self.catalog)
            first = self.stack(hub=hub).run()
            self.assertEqual(first.rc, 0, first.stderr)
            old_children = children_of(pushed)
            rebuilt = hub.rebuild("busybox:1.38.0-musl", "alpine:3.24")
            self.assertTrue(rebuilt["changed"])
            new_indexes = {g["new"] for g in rebuilt["changed"]}
            new_children = children_of(rebuilt) - old_children
            self.assertTrue(new_children)
            before = hub.counters()["manifest_get"]
            s = self.stack(hub=hub).run()
            self.assertEqual(s.rc, 0, s.stderr)
            self.assertEqual(s.report["status"], "complete")
            # Exactly the rebuilt groups were fetched: their new indexes and new children.
            self.assertEqual(hub.counters()["manifest_get"] - before,
                             len(new_indexes) + len(new_children))
            self.assertEqual(s.report["upstream_manifest_gets"],
                             len(new_indexes) + len(new_children))
            self.assertEqual(s.report["tags_written"],
                             sum(len(g["tags"]) for g in rebuilt["changed"]))
            self.assert_mirrors(rebuilt, REPOS)
        finally:
            hub.stop()

    def test_one_and_four_workers_agree(self):
        results = []
        for n in (1, 4):
            st = Stack(REPOS, hub=self.hub, worker_log_level="warn").start()
            try:
                before = self.hub.counters()
                s = st.run(workers=n)
                after = self.hub.counters()
                self.assertEqual(s.rc, 0, s.stderr)
                target = st.target
                state = {(repo, tag): head(target.url, "library/" + repo, tag)
                         for repo in REPOS for tag in tags(target.url, "library/" + repo)}
                keys = ["upstream_manifest_gets", "blob_bytes_copied", "blobs_copied",
                        "manifests_pushed", "tags_written"]
                results.append((state, {k: s.report[k] for k in keys},
                                after["manifest_get"] - before["manifest_get"],
                                after["blob_bytes"] - before["blob_bytes"]))
            finally:
                st.stop()
        self.assertEqual(results[0][0], results[1][0])
        self.assertEqual(results[0][1], results[1][1])
        self.assertEqual(results[0][2:], results[1][2:])
        self.assertEqual(results[1][2], self.min["manifest_gets_min"])


class QuotaTest(unittest.TestCase):
    """A pull quota smaller than the work: never overrun, deferred, resumed next window."""

    def test_quota_smaller_than_work(self):
        repos = ["hello-world", "busybox"]
        quota = 100
        st = Stack(repos, limit=quota, worker_log_level="warn").start()
        hub, redis, target, pushed = st.hub, st.redis, st.target, st.pushed
        try:
            need = totals(pushed, repos)["manifest_gets_min"]
            self.assertGreater(need, quota)
            self.assertLess(need, 2 * quota)
            s = st.run()
            c = hub.counters()
            self.assertEqual(s.rc, 75, s.stderr)
            self.assertEqual(s.report["status"], "deferred")
            self.assertGreater(s.report["jobs_deferred"], 0)
            self.assertEqual(c["manifest_get"], quota)  # the whole budget, not one more
            self.assertEqual(c["denied_429"], 0)
            # Nothing half-copied is visible: every tag there points at complete content.
            for repo in repos:
                for tag in tags(target.url, "library/" + repo):
                    assert_complete_content(self, target.url, "library/" + repo, tag)
            self.assertEqual(redis.cli_raw("GET", "hubsync:synced-commit").strip(), "")
            hub.reset_window()
            # Hub's window rolls slowly; the stand-in's starts afresh at once. hubsync
            # believes a higher count only once GETs have been quiet for 3 s (answers to
            # concurrent GETs arrive out of order).
            time.sleep(3.5)
            s2 = st.run()
            self.assertEqual(s2.rc, 0, s2.stderr)
            self.assertEqual(s2.report["status"], "complete")
            # Manifests fetched by jobs the budget cut short were kept, so the two windows
            # together cost exactly the minimum.
            self.assertEqual(hub.counters()["manifest_get"], need)
            self.assertEqual(s.report["upstream_manifest_gets"] +
                             s2.report["upstream_manifest_gets"], need)
            for (repo, tag), digest in pushed_tags(pushed, repos).items():
                self.assertEqual(head(target.url, "library/" + repo, tag), digest)
        finally:
            st.stop()


class NoWalkRedis(RedisServer):
    """Redis as production operators often run it: KEYS and HVALS renamed away, since each
    blocks the server while it walks every key or field."""

    def command(self):
        return super().command() + ["--rename-command", "KEYS", "",
                                    "--rename-command", "HVALS", ""]


class ProductionRedisTest(unittest.TestCase):
    """No program walks the keyspace or the delayed jobs' payloads: a run the budget cuts short
    ends deferred, status lists the budget and the worker health check answers, on a Redis
    without KEYS and HVALS."""

    def test_deferred_run_status_and_health_without_keys_and_hvals(self):
        redis = NoWalkRedis().start()
        self.addCleanup(redis.stop)
        st = Stack(["hello-world", "busybox"], redis=redis, limit=100,
                   worker_log_level="warn").start()
        self.addCleanup(st.stop)
        self.assertIn("unknown command", redis.cli("KEYS", "*"))
        s = st.run(timeout=120)
        self.assertEqual(s.rc, 75, s.stderr)
        self.assertEqual(s.report["status"], "deferred")
        self.assertGreater(s.report["jobs_deferred"], 0)
        # The run's record keeps how many of its jobs waited for the budget.
        self.assertEqual(int(redis.cli_raw("HGET", "hubsync:run:" + s.report["run"],
                                           "jobs_deferred")), s.report["jobs_deferred"])
        st_json = json.loads(subprocess.check_output(
            coordinator("status", "--json", redis=redis)))
        self.assertEqual([b["limit"] for b in st_json["budget"]], [100])
        self.assertEqual(st_json["queue"]["delayed"], 0)  # purged when the run ended
        self.assertEqual(st_json["queue"]["delayed_by_why"],
                         {"budget": 0, "backoff": 0, "registry": 0})
        health = worker("--health", redis=redis)
        self.assertEqual(subprocess.run(health, capture_output=True).returncode, 1)
        st.worker(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while subprocess.run(health, capture_output=True).returncode != 0:
            self.assertLess(time.time(), deadline, "the worker's heartbeat never showed")
            time.sleep(0.1)


class SourcesTest(unittest.TestCase):
    """Workers on other machines: each sends from its own address (--source-address), which
    the stand-in, as Hub, treats as a client with a pull budget of its own. The fleet uses
    every source's budget and overruns none; a run one source could not finish completes
    once a second source joins, at no more GETs than the minimum."""

    def wait_workers(self, redis, n):
        deadline = time.time() + 30
        while int(redis.cli_raw("ZCARD", "hubsync:workers").strip() or 0) < n:
            self.assertLess(time.time(), deadline, "%d workers never sent a heartbeat" % n)
            time.sleep(0.05)

    def test_second_source_finishes_what_one_could_not(self):
        repos = ["hello-world", "busybox"]
        quota = 100
        st = Stack(repos, limit=quota, worker_log_level="warn").start()
        self.addCleanup(st.stop)
        hub, redis = st.hub, st.redis
        need = totals(st.pushed, repos)["manifest_gets_min"]
        self.assertGreater(need, quota)
        self.assertLess(need, 2 * quota)
        st.worker("--source-address", "127.0.0.3")
        self.wait_workers(redis, 1)
        s = st.run(workers=0)
        self.assertEqual(s.rc, 75, s.stderr)
        c = hub.counters()
        self.assertEqual(c["sources"]["127.0.0.3"]["used"], quota)
        self.assertEqual(c["denied_429"], 0)
        # A second machine joins; the first one's budget is still spent. The first, waiting
        # on the stream longest, takes jobs first: each one it cannot pull for goes back to
        # the stream for the second instead of waiting for the first one's window.
        st.worker("--source-address", "127.0.0.4")
        self.wait_workers(redis, 2)
        s2 = st.run(workers=0)
        self.assertEqual(s2.rc, 0, s2.stderr)
        self.assertEqual(s2.report["status"], "complete")
        self.assertGreater(int(redis.cli_raw("HGET", "hubsync:stats", "requeued_spent")), 0)
        c = hub.counters()
        self.assertEqual(c["sources"]["127.0.0.3"]["used"], quota)
        self.assertEqual(c["sources"]["127.0.0.4"]["used"], need - quota)
        self.assertEqual(c["manifest_get"], need)
        self.assertEqual(c["denied_429"], 0)
        for (repo, tag), digest in pushed_tags(st.pushed, repos).items():
            self.assertEqual(head(st.target.url, "library/" + repo, tag), digest)


class RefForwardTest(unittest.TestCase):
    """Moving the official-images ref forward copies only what changed."""

    OLD, NEW = "22539f0~1", "22539f0"  # alpine: security bump 3.22.5 and 3.23.5

    def test_ref_forward(self):
        self.ref_forward(delete_removed=False)

    def test_ref_forward_delete_removed(self):
        self.ref_forward(delete_removed=True)

    def ref_forward(self, delete_removed):
        work = tempfile.mkdtemp(prefix="hubsync-oi-")
        src = os.path.join(work, "official-images")
        subprocess.check_call(["git", "clone", "-q", "--bare", OFFICIAL_IMAGES, src])
        repos = ["alpine"]
        st = Stack(repos, source=src, ref=self.OLD, worker_log_level="warn").start()
        hub, redis, target, old_cat = st.hub, st.redis, st.target, st.catalog
        try:
            s1 = st.run()
            self.assertEqual(s1.rc, 0, s1.stderr)
            self.assertEqual(redis.cli_raw("GET", "hubsync:synced-commit").strip(),
                             old_cat["commit"])
            new_cat = catalog(repos, self.NEW, src)
            self.assertNotEqual(new_cat["commit"], old_cat["commit"])
            pushed = hub.load(new_cat)
            diff = json.loads(subprocess.check_output(coordinator(
                "diff", "--from", self.OLD, "--to", self.NEW, "--json", official_images=src)))
            before = hub.counters()["manifest_get"]
            old_tags = {t for g in old_cat["repositories"][0]["groups"] for t in g["tags"]}
            new_tags = {t for g in new_cat["repositories"][0]["groups"] for t in g["tags"]}
            old_digests = {t: head(target.url, "library/alpine", t) for t in old_tags - new_tags}
            listed = set().union(*present_members(redis, "library/alpine").values())
            st.ref = self.NEW
            s2 = st.run(*(["--delete-removed"] if delete_removed else []))
            self.assertEqual(s2.rc, 0, s2.stderr)
            r = s2.report
            self.assertEqual(r["from"], old_cat["commit"])
            self.assertEqual(r["commit"], new_cat["commit"])
            self.assertEqual(redis.cli_raw("GET", "hubsync:synced-commit").strip(),
                             new_cat["commit"])
            # Only tags whose content moved are written; the rest are HEADed and left alone.
            self.assertGreater(r["tags_written"], 0)
            self.assertLess(r["tags_written"], len(new_tags))
            self.assertGreater(r["tags_unchanged"], 0)
            self.assertGreater(hub.counters()["manifest_get"] - before, 0)
            self.assertTrue(new_tags - old_tags)
            changed_keys = {g["key"] for repo in diff["repositories"] for g in repo["groups"]
                            if g["change"] != "removed"}
            self.assertTrue(changed_keys)
            for (repo, tag), digest in pushed_tags(pushed, repos).items():
                if tag in new_tags:
                    self.assertEqual(head(target.url, "library/" + repo, tag), digest)
            # Tags that left the catalog are reported; deleted only when asked to.
            removed = {t for x in r["removed_tags"] for t in x["tags"]}
            self.assertEqual(removed, old_tags - new_tags)
            self.assertTrue(removed)
            for t in removed:
                if delete_removed:
                    self.assertIsNone(head(target.url, "library/alpine", t), t)
                else:
                    self.assertIsNotNone(head(target.url, "library/alpine", t), t)
            if delete_removed:
                pruned = {t for x in r["pruned"] for t in x["deleted"]}
                self.assertEqual(pruned, removed)
                # What was deleted leaves the present sets: no later job takes it as there.
                gone = {old_digests[t] for t in pruned}
                self.assertLessEqual(gone, listed)
                for key, members in present_members(redis, "library/alpine").items():
                    self.assertFalse(gone & members, key)
            else:
                self.assertNotIn("pruned", r)
            for t in new_tags:
                self.assertIsNotNone(head(target.url, "library/alpine", t), t)
        finally:
            st.stop()
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
