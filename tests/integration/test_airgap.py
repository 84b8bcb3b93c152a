"""Air-gapped bundles: `hubsync-coordinator export` writes what the target holds as an OCI
image layout keyed to the synced official-images commit, `import` pushes it into another
registry. A full bundle reads with skopeo; an incremental one after the ref moves forward
holds only the new objects; importing the full then the incremental bundle into an empty
registry ends with the target's state, the tags sync --delete-removed took off the target
between the two commits left on the site (an import deletes nothing); a tampered or truncated bundle is refused naming the
file, with nothing written. With --workers the bundle workers (hubsync-worker --bundle-dir)
write the objects into the shared directory: the same bundle as one process writes, also when
one of them is killed mid-export."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

from harness import OFFICIAL_IMAGES, Registry
from harness.programs import bundle, catalog
from harness.stack import Stack
from harness.target import head, snapshot, tags

REPOS = ["hello-world", "alpine"]
OLD, NEW = "22539f0~1", "22539f0"  # alpine: security bump 3.22.5 and 3.23.5


def blob_files(directory):
    return set(os.listdir(os.path.join(directory, "blobs", "sha256")))


def read(path):
    with open(path, "rb") as f:
        return f.read()


def bad_files(directory):
    """Files of blobs/sha256 that are not an object hashing to its name (.part included)."""
    sha = os.path.join(directory, "blobs", "sha256")
    bad = []
    for name in os.listdir(sha):
        h = hashlib.sha256()
        with open(os.path.join(sha, name), "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != name:
            bad.append(name)
    return bad


class AirgapTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.stack = Stack(REPOS, ref=OLD, worker_log_level="warn").start()
        cls.far = Registry().start()  # the air-gapped site's registry, empty
        cls.work = tempfile.mkdtemp(prefix="hubsync-airgap-")
        run = cls.stack.run()
        assert run.rc == 0, run.stderr
        cls.old_commit = cls.stack.catalog["commit"]

    @classmethod
    def tearDownClass(cls):
        cls.far.stop()
        cls.stack.stop()
        shutil.rmtree(cls.work, ignore_errors=True)

    def coordinator(self, command, directory, *extra, target=None):
        p = subprocess.run(bundle(command, directory, *extra, redis=self.stack.redis,
                                  target=target or self.stack.target,
                                  **({"official_images": OFFICIAL_IMAGES, "repos": REPOS}
                                     if command == "export" else {})),
                           capture_output=True, text=True, timeout=600)
        return p.returncode, (json.loads(p.stdout) if p.returncode == 0 else None), p.stderr

    def export(self, name, *extra):
        d = os.path.join(self.work, name)
        rc, report, err = self.coordinator("export", d, *extra)
        self.assertEqual(rc, 0, err)
        return d, report

    def test_full_then_incremental(self):
        st = self.stack
        full, r1 = self.export("full")
        self.assertEqual(r1["commit"], self.old_commit)
        self.assertIsNone(r1["base"])
        self.assertEqual(r1["objects"], r1["manifests"] + r1["blobs"])
        self.assertEqual(len(blob_files(full)), r1["objects"])
        # skopeo reads the layout: a tag copied out of it keeps its digest.
        tag = tags(st.target.url, "library/alpine")[0]
        want = head(st.target.url, "library/alpine", tag)
        subprocess.run(["skopeo", "copy", "--all", "--preserve-digests", "--dest-tls-verify=false",
                        "oci:%s:alpine:%s" % (full, tag),
                        "docker://127.0.0.1:%d/skopeo/alpine:%s" % (self.far.port, tag)],
                       check=True, capture_output=True, timeout=300)
        self.assertEqual(head(self.far.url, "skopeo/alpine", tag), want)

        # Into the empty far registry: identical to the target.
        rc, imp, err = self.coordinator("import", full, target=self.far)
        self.assertEqual(rc, 0, err)
        self.assertGreater(imp["blobs_uploaded"], 0)
        self.assertEqual(snapshot(self.far.url, REPOS), snapshot(st.target.url, REPOS))

        # The ref moves forward, tags that left the catalog deleted from the target: the next
        # bundle holds only what the first lacks.
        new_cat = catalog(REPOS, NEW)
        st.hub.load(new_cat)
        st.ref = NEW
        run = st.run("--delete-removed")
        self.assertEqual(run.rc, 0, run.stderr)
        removed = {"%s:%s" % (x["repository"].split("/", 1)[1], t)
                   for x in run.report["pruned"] for t in x["deleted"]}
        self.assertTrue(removed)
        incr, r2 = self.export("incremental")
        self.assertEqual(r2["base"], self.old_commit)
        self.assertNotEqual(r2["commit"], self.old_commit)
        files = blob_files(incr)
        self.assertTrue(files)
        self.assertFalse(files & blob_files(full))
        self.assertEqual(len(files), r2["manifests"] + r2["blobs"])
        old_state = snapshot(self.far.url, REPOS)
        new_state = snapshot(st.target.url, REPOS)
        new_manifests = {d.split(":")[1] for d in new_state["manifests"] - old_state["manifests"]}
        self.assertTrue(new_manifests)
        self.assertLessEqual(new_manifests, files)
        with open(os.path.join(incr, "index.json")) as f:
            names = {m["annotations"]["org.opencontainers.image.ref.name"]
                     for m in json.load(f)["manifests"]}
        self.assertEqual(names, {"%s:%s" % (r["name"], t) for r in new_cat["repositories"]
                                 for g in r["groups"] for t in g["tags"]})
        self.assertFalse(names & removed)
        self.assertEqual(set(new_state["tags"]), names)

        # A changed or a truncated bundle is refused, naming the file, and writes nothing.
        victim = sorted(files)[0]
        for how in ("tampered", "truncated", "missing"):
            bad = os.path.join(self.work, how)
            shutil.copytree(incr, bad)
            path = os.path.join(bad, "blobs", "sha256", victim)
            if how == "missing":
                os.unlink(path)
            else:
                with open(path, "r+b") as f:
                    if how == "tampered":
                        b = f.read(1)
                        f.seek(0)
                        f.write(bytes([b[0] ^ 1]))
                    else:
                        f.truncate(os.path.getsize(path) // 2)
            rc, _, err = self.coordinator("import", bad, target=self.far)
            self.assertEqual(rc, 1, err)
            self.assertIn(path, err)
            self.assertEqual(snapshot(self.far.url, REPOS), old_state, how)

        # An incremental bundle applies only on its base: not on an empty registry.
        empty = Registry().start()
        try:
            rc, _, err = self.coordinator("import", incr, target=empty)
            self.assertEqual(rc, 1, err)
            self.assertIn("import the bundles up to", err)
            self.assertEqual(tags(empty.url, "library/alpine"), [])
        finally:
            empty.stop()

        rc, imp2, err = self.coordinator("import", incr, target=self.far)
        self.assertEqual(rc, 0, err)
        # The site gets every tag of the new state; like sync without --delete-removed, an
        # import deletes nothing: the removed tags stay where they were.
        far_state = snapshot(self.far.url, REPOS)
        self.assertEqual({t: d for t, d in far_state["tags"].items() if t in names},
                         new_state["tags"])
        self.assertEqual({t: d for t, d in far_state["tags"].items() if t not in names},
                         {t: old_state["tags"][t] for t in removed})
        self.assertLessEqual(new_state["manifests"], far_state["manifests"])
        self.assertLessEqual(new_state["blobs"], far_state["blobs"])


class BundleWorkersTest(unittest.TestCase):
    """export --workers: one job per tag group in the bundle queue, written by bundle workers
    sharing the directory."""

    @classmethod
    def setUpClass(cls):
        cls.stack = Stack(REPOS, ref=OLD, worker_log_level="warn").start()
        cls.far = Registry().start()
        cls.work = tempfile.mkdtemp(prefix="hubsync-bundlejobs-")
        run = cls.stack.run()
        assert run.rc == 0, run.stderr
        cls.alone = os.path.join(cls.work, "alone")
        p = subprocess.run(cls.export_argv(cls.alone), capture_output=True, text=True,
                           timeout=600)
        assert p.returncode == 0, p.stderr
        cls.alone_report = json.loads(p.stdout)

    @classmethod
    def tearDownClass(cls):
        cls.far.stop()
        cls.stack.stop()
        shutil.rmtree(cls.work, ignore_errors=True)

    @classmethod
    def export_argv(cls, directory, *extra):
        return bundle("export", directory, "--full", *extra, redis=cls.stack.redis,
                      target=cls.stack.target, official_images=OFFICIAL_IMAGES, repos=REPOS)

    def bundle_worker(self, directory, *extra):
        """A bundle worker, stopped at the end of the test."""
        w = self.stack.worker("--bundle-dir", directory, "--lease-ms", "1000", *extra,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(w.wait)
        self.addCleanup(w.kill)
        return w

    def stats(self):
        out = self.stack.redis.cli_raw("HGETALL", "hubsync:bundle:stats").split()
        return {out[i]: int(out[i + 1]) for i in range(0, len(out) - 1, 2)}

    def assert_same_bundle(self, directory, report):
        self.assertEqual(read(os.path.join(directory, "index.json")),
                         read(os.path.join(self.alone, "index.json")))
        self.assertEqual(blob_files(directory), blob_files(self.alone))
        self.assertEqual(bad_files(directory), [])
        self.assertEqual(report["objects"], self.alone_report["objects"])
        self.assertEqual(report["files_written"] + report["files_reused"],
                         len(blob_files(directory)))

    def test_job_of_another_export_writes_nothing(self):
        """A job left in the queue by an export that is not the one in progress (interrupted,
        or replaced) is settled without a write into this one's directory."""
        st = self.stack
        shared = os.path.join(self.work, "stale")
        with open(os.path.join(self.alone, "hubsync-bundle.json")) as f:
            blob = next(o for o in json.load(f)["objects"] if o["level"] == "blob")
        job = json.dumps({"run": "old-export", "objects": [{
            "repo": "library/" + blob["repositories"][0], "digest": blob["digest"],
            "size": blob["size"], "manifest": False}]})
        before = self.stats().get("done", 0)
        st.redis.cli_raw("SET", "hubsync:bundle:current", "new-export")
        st.redis.cli_raw("XADD", "hubsync:bundle:jobs", "*", "key", "stale:1", "job", job)
        self.bundle_worker(shared)
        deadline = time.time() + 120
        while self.stats().get("done", 0) == before:
            self.assertLess(time.time(), deadline, "the job was not settled")
        self.assertEqual(blob_files(shared), set())
        st.redis.cli_raw("DEL", "hubsync:bundle:current")

    def test_two_workers_write_what_one_process_writes(self):
        st = self.stack
        shared = os.path.join(self.work, "two")
        for _ in range(2):
            self.bundle_worker(shared)
        before = self.stats().get("done", 0)
        p = subprocess.run(self.export_argv(shared, "--workers"), capture_output=True,
                           text=True, timeout=600)
        self.assertEqual(p.returncode, 0, p.stderr)
        report = json.loads(p.stdout)
        self.assert_same_bundle(shared, report)
        # The jobs went through the bundle queue, one per tag group that has objects.
        self.assertGreater(self.stats()["done"] - before, 1)
        tag = tags(st.target.url, "library/alpine")[0]
        subprocess.run(["skopeo", "copy", "--all", "--preserve-digests",
                        "--dest-tls-verify=false", "oci:%s:alpine:%s" % (shared, tag),
                        "docker://127.0.0.1:%d/skopeo/alpine:%s" % (self.far.port, tag)],
                       check=True, capture_output=True, timeout=300)
        self.assertEqual(head(self.far.url, "skopeo/alpine", tag),
                         st.upstream_digest("alpine", tag))

    def test_two_writers_of_one_blob(self):
        """Two jobs naming the same blob, taken at once by two bundle workers sharing the
        directory: one right file, no temporary file left."""
        st = self.stack
        shared = os.path.join(self.work, "race")
        with open(os.path.join(self.alone, "hubsync-bundle.json")) as f:
            blob = max((o for o in json.load(f)["objects"] if o["level"] == "blob"),
                       key=lambda o: o["size"])
        job = json.dumps({"run": "race", "objects": [{
            "repo": "library/" + blob["repositories"][0], "digest": blob["digest"],
            "size": blob["size"], "manifest": False}]})
        before = self.stats().get("done", 0)
        st.redis.cli_raw("SET", "hubsync:bundle:current", "race")  # the export in progress
        for key in ("race:a", "race:b"):
            st.redis.cli_raw("XADD", "hubsync:bundle:jobs", "*", "key", key, "job", job)
        for _ in range(2):
            self.bundle_worker(shared, "--concurrency", "1")
        deadline = time.time() + 120
        while self.stats().get("done", 0) - before < 2:
            self.assertLess(time.time(), deadline, "the two jobs were not done")
        self.assertEqual(blob_files(shared), {blob["digest"].split(":")[1]})
        self.assertEqual(bad_files(shared), [])

    def test_worker_killed_mid_export(self):
        st = self.stack
        shared = os.path.join(self.work, "killed")
        before = self.stats().get("reclaimed", 0)
        export = subprocess.Popen(self.export_argv(shared, "--workers"), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        victim = self.bundle_worker(shared, "--id", "victim", "--concurrency", "1",
                                    "--blob-concurrency", "1")
        # Stop the worker until it is caught holding a job, then kill it: the job is left
        # half done, pending under its name.
        caught = False
        while not caught and export.poll() is None:
            victim.send_signal(signal.SIGSTOP)
            held = st.redis.cli_raw("XPENDING", "hubsync:bundle:jobs", "workers").split()
            caught = "victim" in held
            if not caught:
                victim.send_signal(signal.SIGCONT)
        self.assertTrue(caught, "the export ended before the worker was caught with a job")
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        self.bundle_worker(shared)
        out, err = export.communicate(timeout=600)
        self.assertEqual(export.returncode, 0, err)
        self.assert_same_bundle(shared, json.loads(out))
        self.assertGreaterEqual(self.stats()["reclaimed"] - before, 1)


if __name__ == "__main__":
    unittest.main()
