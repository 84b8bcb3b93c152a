"""Air-gapped bundles: `hubsync-coordinator export` writes what the target holds as an OCI
image layout keyed to the synced official-images commit, `import` pushes it into another
registry. A full bundle reads with skopeo; an incremental one after the ref moves forward
holds only the new objects; importing the full then the incremental bundle into an empty
registry ends with the target's state, the tags sync --delete-removed took off the target
between the two commits left on the site (an import deletes nothing); a tampered or truncated bundle is refused naming the
file, with nothing written."""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

from harness import OFFICIAL_IMAGES, Registry
from harness.programs import bundle, catalog
from harness.stack import Stack
from harness.target import head, snapshot, tags

REPOS = ["hello-world", "alpine"]
OLD, NEW = "22539f0~1", "22539f0"  # alpine: security bump 3.22.5 and 3.23.5


def blob_files(directory):
    return set(os.listdir(os.path.join(directory, "blobs", "sha256")))


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


if __name__ == "__main__":
    unittest.main()
