"""A target that lost data behind the same address is repaired by the next run.

The workers' present sets and mount sources in Redis are a hint about the target, never the
truth: after the target's storage is wiped (a recreated volume, a new registry on the same
host:port) or one repository of it is lost (a restore, a registry GC, a manual cleanup), the
next run must converge in one attempt per job, every tag with the upstream digest, no dead
letter, in bounded time.
"""
import shutil
import signal
import time

from harness import TIMEOUT_FACTOR
from harness.stack import MirrorCase, dead_letters
from harness.target import head, pushed_tags
from standin import layout

# Both runs of a test take a few seconds on loopback; a run that stalls on a stale hint (the
# failure this module guards against) waits 30 minutes per lock, so this bound catches it.
RUN_TIMEOUT = 120 * TIMEOUT_FACTOR


class RepairTest(MirrorCase):
    REPOS = ["hello-world", "busybox"]

    def sync(self, repos=None, extra=()):
        """One run that must end within RUN_TIMEOUT: (report, seconds)."""
        t0 = time.time()
        s = self.stack(repos).run(*extra, timeout=RUN_TIMEOUT)
        self.assertEqual(s.rc, 0, s.stderr[-3000:])
        return s.report, time.time() - t0

    def lose(self, repo=None):
        """Stop the target, delete repo from its storage (all of the storage when None),
        start it again on the same port."""
        self.target.kill(signal.SIGTERM)
        root = self.target.storage
        shutil.rmtree(layout.repository_dir(root, repo) if repo else root)
        self.target.start(self.target.port)

    def record(self):
        """The target's record in Redis (epoch, marker, repo, ...)."""
        lines = self.redis.cli_raw("HGETALL", "hubsync:target:" + self.target.url).split()
        return dict(zip(lines[0::2], lines[1::2]))

    def assert_one_clean_run(self, report, repos=None):
        """Complete in one attempt per job, nothing dead, every tag right."""
        repos = repos or self.REPOS
        self.assertEqual(report["status"], "complete", report)
        self.assertEqual(report["jobs_done"], report["jobs_total"], report)
        self.assertEqual(report["jobs_retried"], 0, report)
        self.assertEqual(report["jobs_failed"], 0, report)
        self.assertEqual(dead_letters(self.redis), [])
        for (repo, tag), digest in pushed_tags(self.pushed, repos).items():
            self.assertEqual(head(self.target.url, "library/" + repo, tag), digest,
                             "library/%s:%s" % (repo, tag))

    def present(self, repo, digest):
        """Whether a present set of repo (of any epoch) lists digest."""
        keys = self.redis.cli_raw("--scan", "--pattern", "hubsync:present:*:" + repo).split()
        return any(self.redis.cli_raw("SISMEMBER", k, digest).strip() == "1" for k in keys)

    def test_wiped_storage_is_repaired_in_one_run(self):
        first, t1 = self.sync()
        self.assertEqual(first["status"], "complete", first)
        before = self.record()
        self.lose()
        gets = self.hub.counters()["manifest_get"]
        report, t2 = self.sync()
        print("  first run %.1fs, after the wipe %.1fs" % (t1, t2), flush=True)
        self.assert_one_clean_run(report)
        # The new storage starts a new epoch: the old sets are no longer read.
        self.assertNotEqual(self.record()["epoch"], before["epoch"])
        # Everything was copied again, each manifest fetched once.
        self.assertEqual(report["tags_written"], report["tags_total"], report)
        self.assertEqual(self.hub.counters()["manifest_get"] - gets,
                         first["upstream_manifest_gets"])

    def test_lost_repository_is_repaired_in_one_run(self):
        first, _ = self.sync()
        self.assertEqual(first["status"], "complete", first)
        before = self.record()
        # Lose the repository that does not hold the epoch marker: the epoch stands, so the
        # sets still list what is gone and every 404 has to correct them.
        lost = [r for r in self.REPOS if "library/" + r != before.get("repo")][0]
        self.lose("library/" + lost)
        report, t2 = self.sync()
        print("  after losing library/%s: %.1fs" % (lost, t2), flush=True)
        self.assert_one_clean_run(report)
        self.assertEqual(self.record()["epoch"], before["epoch"])
        written = sum(1 for (repo, _) in pushed_tags(self.pushed, [lost]))
        self.assertEqual(report["tags_written"], written, report)

    def test_mount_from_a_home_that_lost_the_blob_streams_and_forgets_it(self):
        first, _ = self.sync()
        self.assertEqual(first["status"], "complete", first)
        lost = [r for r in self.REPOS if "library/" + r != self.record().get("repo")][0]
        others = [r for r in self.REPOS if r != lost]
        # The blobs the first run copied only there (of the selected platforms): the lost
        # repository is their one mount source.
        blobs = {b["digest"] for r in self.pushed["repositories"] if r["name"] == "library/" + lost
                 for g in r["groups"] for b in g["blobs"]
                 if self.present("library/" + lost, b["digest"]) and
                 not any(self.present("library/" + o, b["digest"]) for o in others)}
        self.assertTrue(blobs)
        self.lose("library/" + lost)
        # Another prefix on the same target: its blobs' mount source is the lost repository.
        report, _ = self.sync(repos=[lost], extra=["--target-prefix", "mirror/"])
        self.assertEqual(report["status"], "complete", report)
        self.assertEqual(report["jobs_retried"], 0, report)
        self.assertEqual(dead_letters(self.redis), [])
        self.assertGreaterEqual(report["blobs_copied"], len(blobs), report)
        for (repo, tag), digest in pushed_tags(self.pushed, [lost]).items():
            self.assertEqual(head(self.target.url, "mirror/" + repo, tag), digest)
        # The lost repository is neither listed as holding them nor their mount source.
        for b in blobs:
            self.assertFalse(self.present("library/" + lost, b), b)
        home = "hubsync:blobhome:%s:%s" % (self.target.url, self.record()["epoch"])
        for b in blobs:
            self.assertEqual(self.redis.cli_raw("HGET", home, b).strip(), "mirror/" + lost)
