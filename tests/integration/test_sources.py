"""The sync file end to end: images beyond the official ones, from a second Docker Hub
namespace on the stand-in and from a second plain docker-registry playing ghcr.io/quay.io,
beside the official-images catalog, through the same queue and the same workers.

Images are built by the test (a config and a gzipped tar layer of random bytes, OCI
manifests with their own spacing, so they must travel byte for byte). Checks: the filters
pick the right tags, the target ends digest-exact and skopeo and podman read it, tags
sharing a digest are one job, a full run spends exactly the counted GETs the minimum needs
and a no-op run none, a bad sync file changes nothing, and a worker not given the sync file
copies nothing from its registries.
"""
import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import tempfile
import time
import unittest
import urllib.request

from harness import TIMEOUT_FACTOR, Registry, free_port
from harness.podman import Podman, registries_conf
from harness.programs import coordinator
from harness.stack import PREFIX, MirrorCase, dead_letters
from harness.standin import Standin
from harness.target import head, tags
from standin.loader import totals

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def push_blob(reg_url, repo, data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    r = urllib.request.urlopen(urllib.request.Request(
        "%s/v2/%s/blobs/uploads/" % (reg_url, repo), method="POST", data=b""), timeout=30)
    loc = r.headers["Location"]
    urllib.request.urlopen(urllib.request.Request(
        loc + ("&" if "?" in loc else "?") + "digest=" + d, method="PUT", data=data,
        headers={"Content-Type": "application/octet-stream"}), timeout=30)
    return d


def push_image(reg_url, repo, tag_list, seed, extra=None):
    """A one-layer image under every tag of tag_list (extra: more manifest fields, e.g. a
    subject); its manifest digest. The layer is a real gzipped tar its config names, so
    that podman can pull the image."""
    content = hashlib.sha256(b"layer %d" % seed).digest() * 100
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.USTAR_FORMAT) as t:
        info = tarfile.TarInfo("seed")
        info.size = len(content)
        t.addfile(info, io.BytesIO(content))
    layer = gzip.compress(tar.getvalue(), mtime=0)
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed,
                         "rootfs": {"type": "layers", "diff_ids": [
                             "sha256:" + hashlib.sha256(tar.getvalue()).hexdigest()]}}).encode()
    cd, ld = push_blob(reg_url, repo, config), push_blob(reg_url, repo, layer)
    body = (json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                   "digest": cd, "size": len(config)},
                        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                    "digest": ld, "size": len(layer)}], **(extra or {})},
                       indent=3) + "\n").encode()
    for t in tag_list:
        urllib.request.urlopen(urllib.request.Request(
            "%s/v2/%s/manifests/%s" % (reg_url, repo, t), method="PUT", data=body,
            headers={"Content-Type": OCI_MANIFEST}), timeout=30)
    return "sha256:" + hashlib.sha256(body).hexdigest()


def subject(reg_url, repo, digest):
    """The manifest fields that make a referrer of repo@digest."""
    size = len(urllib.request.urlopen(urllib.request.Request(
        "%s/v2/%s/manifests/%s" % (reg_url, repo, digest), headers={"Accept": OCI_MANIFEST}),
        timeout=30).read())
    return {"subject": {"mediaType": OCI_MANIFEST, "digest": digest, "size": size}}


def write_sync_file(case, text):
    """text as sync.yaml in a directory removed after the test case; its path."""
    d = tempfile.mkdtemp(prefix="hubsync-syncfile-")
    case.addCleanup(lambda: subprocess.run(["rm", "-rf", d]))
    path = os.path.join(d, "sync.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


class SyncFileTest(MirrorCase):
    REPOS = ["hello-world"]

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ghcr = Registry().start()
        try:
            hub = cls.hub.registry.url
            # bitnami/app on the stand-in: semver picks >=1.1.0 <2 (1.1.0, 1.2.0), not the
            # release candidate; latest shares 1.2.0's digest but is no version.
            cls.app = {"1.0.0": push_image(hub, "bitnami/app", ["1.0.0"], 1),
                       "1.1.0": push_image(hub, "bitnami/app", ["1.1.0"], 2),
                       "1.2.0": push_image(hub, "bitnami/app", ["1.2.0", "latest"], 3),
                       "2.0.0-rc1": push_image(hub, "bitnami/app", ["2.0.0-rc1"], 4)}
            # org/tool on "ghcr": the 2 newest v<N> by tag order (v9, v10; v10 also "stable"),
            # not dev.
            g = cls.ghcr.url
            cls.tool = {"v2": push_image(g, "org/tool", ["v2"], 5),
                        "v9": push_image(g, "org/tool", ["v9"], 6),
                        "v10": push_image(g, "org/tool", ["v10", "stable"], 7),
                        "dev": push_image(g, "org/tool", ["dev"], 8)}
            # cosign-style signature and attestation of v10 (taken along), and a signature
            # of app 1.2.0 (left: its entry says referrers: false).
            cls.v10_refs = {
                t: push_image(g, "org/tool", [t], 9 + i)
                for i, t in enumerate(("sha256-%s.sig" % cls.tool["v10"][7:],
                                       "sha256-%s.att" % cls.tool["v10"][7:]))}
            cls.app_sig = "sha256-%s.sig" % cls.app["1.2.0"][7:]
            push_image(hub, "bitnami/app", [cls.app_sig], 11)
            # acme/signed 1.0 on the stand-in: a signature and an SBOM the referrers API lists
            # (pushed with a subject, under tags no entry takes), and a cosign-style signature
            # by its fallback tag only (no subject).
            cls.signed = push_image(hub, "acme/signed", ["1.0"], 12)
            of = subject(hub, "acme/signed", cls.signed)
            cls.signed_api = [
                push_image(hub, "acme/signed", [t], 13 + i, dict(of, artifactType=k))
                for i, (t, k) in enumerate((("ref-sig", "application/vnd.dev.cosign.sig"),
                                            ("ref-sbom", "application/spdx+json")))]
            cls.signed_fallback = "sha256-%s.sig" % cls.signed[7:]
            cls.signed_sig = push_image(hub, "acme/signed", [cls.signed_fallback], 15)
            # acme/chain 1.0: an attestation the referrers API lists, and two signatures of
            # that attestation, one the API lists (its subject) and one by its fallback tag.
            cls.chain = push_image(hub, "acme/chain", ["1.0"], 16)
            cls.chain_att = push_image(hub, "acme/chain", ["att"], 17, dict(
                subject(hub, "acme/chain", cls.chain), artifactType="application/vnd.in-toto+json"))
            cls.chain_sig = push_image(hub, "acme/chain", ["att-sig"], 18, dict(
                subject(hub, "acme/chain", cls.chain_att),
                artifactType="application/vnd.dev.cosign.sig"))
            cls.chain_fallback = "sha256-%s.sig" % cls.chain_att[7:]
            cls.chain_fallback_sig = push_image(hub, "acme/chain", [cls.chain_fallback], 19)
        except BaseException:
            cls.ghcr.stop()
            super().tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.ghcr.stop()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix="hubsync-syncfile-")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", self.dir]))

    def sync_file(self, text):
        path = os.path.join(self.dir, "sync.yaml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def mixed(self):
        ghcr = "127.0.0.1:%d" % self.ghcr.port
        return self.sync_file("""version: 1
registries:
  %s:
    url: %s
sync:
  - source: bitnami/app
    tags: {semver: ">=1.1.0 <2", names: [latest]}
    digests: [%s]
    referrers: false
  - source: %s/org/tool
    target: mirror/tool
    tags: {regex: "^v[0-9]+$", newest: 2, order: tag}
    digests: [%s, %s]
""" % (ghcr, self.ghcr.url, self.app["1.0.0"], ghcr, self.tool["dev"], self.tool["v10"]))

    def plan(self, st, path):
        """`plan --json` of the stack with the sync file: {source: entry}."""
        p = subprocess.run(coordinator("plan", "--json", "--sync-file", path,
                                       official_images=st.source, upstream=self.hub,
                                       target=self.target, repos=self.REPOS),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        return {e["source"]: e for e in json.loads(p.stdout)["sources"]}

    def status(self):
        """`status --json` of the stack's Redis."""
        p = subprocess.run(coordinator("status", "--json", redis=self.redis),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        return json.loads(p.stdout)

    def test_mixed_sync_file(self):
        path = self.mixed()
        st = self.stack().start()
        # plan prices each entry before the run: app's two tagged digests and its pinned one
        # are counted Docker Hub GETs; tool's are not (its three digests, v10's two referrers
        # under their fallback tags, and one referrers API listing for each of the three
        # digests; at most one more for each referrer, had ghcr the API).
        plan = self.plan(st, path)
        app, tool = plan["bitnami/app"], plan["127.0.0.1:%d/org/tool" % self.ghcr.port]
        self.assertEqual((app["counted"], app["groups"], app["tags"], app["to_write"],
                          app["digests_to_fetch"], app["gets_min"], app["gets_max"],
                          app["referrers_api_unpriced"]),
                         (True, 3, 3, 3, 3, 3, 3, False))
        self.assertEqual((tool["counted"], tool["groups"], tool["tags"], tool["to_write"],
                          tool["gets_min"], tool["gets_max"], tool["referrers_api_unpriced"]),
                         (False, 3, 2, 2, 3 + 2 + 3, 3 + 2 + 3 + 2, True))
        before = self.hub.counters()["manifest_get"]
        run = st.run("--sync-file", path, worker_extra=("--sync-file", path))
        self.assertEqual(run.rc, 0, run.stderr)
        full = self.hub.counters()["manifest_get"] - before
        # hello-world's manifests plus one per distinct bitnami/app digest taken (two tagged,
        # one pinned).
        base = totals(self.pushed, self.REPOS)["manifest_gets_min"]
        minimum = base + 3
        self.assertEqual(full, minimum)
        # plan's price for app is what the stand-in counted.
        self.assertEqual(app["gets_min"], full - base)
        # + ghcr's three, v10's two referrers, and the referrers API asked of ghcr for its
        # three digests (docker-registry 2.8 answers 404: the fallback tags are all there is)
        self.assertEqual(run.report["upstream_manifest_gets"], full + 3 + 2 + 3)
        t = self.target.url
        self.assertEqual(sorted(tags(t, "bitnami/app")), ["1.1.0", "1.2.0", "latest"])
        self.assertEqual(sorted(tags(t, "mirror/tool")), sorted(["v10", "v9"] + list(self.v10_refs)))
        for tag, digest in self.v10_refs.items():
            self.assertEqual(head(t, "mirror/tool", tag), digest)
        for tag in ("1.1.0", "1.2.0"):
            self.assertEqual(head(t, "bitnami/app", tag), self.app[tag])
        self.assertEqual(head(t, "bitnami/app", "latest"), self.app["1.2.0"])
        for tag in ("v9", "v10"):
            self.assertEqual(head(t, "mirror/tool", tag), self.tool[tag])
        # status shows the run per entry: its jobs and counted GETs (those of Docker Hub
        # and ghcr's, referrers included).
        status = self.status()
        self.assertEqual(status["entries_run"], run.report["run"])
        self.assertEqual([(e["source"], e["target"], e["jobs_done"], e["jobs_total"],
                           e["jobs_failed"], e["upstream_manifest_gets"], e["errors"])
                          for e in status["entries"]],
                         [("127.0.0.1:%d/org/tool" % self.ghcr.port, "mirror/tool", 3, 3, 0,
                           3 + 2 + 3, []),
                          ("bitnami/app", "bitnami/app", 3, 3, 0, 3, [])])
        # ghcr has no referrers API: plan's price is what the run spent.
        self.assertEqual(tool["gets_min"], status["entries"][0]["upstream_manifest_gets"])
        # Pinned digests are there by digest, untagged.
        self.assertEqual(head(t, "bitnami/app", self.app["1.0.0"]), self.app["1.0.0"])
        self.assertEqual(head(t, "mirror/tool", self.tool["dev"]), self.tool["dev"])
        raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                              "docker://127.0.0.1:%d/mirror/tool:v10" % self.target.port],
                             stdout=subprocess.PIPE, check=True, timeout=60).stdout
        self.assertEqual("sha256:" + hashlib.sha256(raw).hexdigest(), self.tool["v10"])
        # podman pulls them from the target too: a Docker Hub namespace's image and ghcr's.
        with Podman(registries_conf(self.hub.host, "127.0.0.1:%d" % self.target.port)) as pm:
            for ref, digest in (("bitnami/app:1.2.0", self.app["1.2.0"]),
                                ("mirror/tool:v10", self.tool["v10"])):
                ref = "127.0.0.1:%d/%s" % (self.target.port, ref)
                pm.pull(ref, "--tls-verify=false")
                self.assertEqual(pm.digest(ref), digest)

        before = self.hub.counters()["manifest_get"]
        again = st.run("--sync-file", path, worker_extra=("--sync-file", path))
        self.assertEqual(again.rc, 0, again.stderr)
        self.assertEqual(self.hub.counters()["manifest_get"] - before, 0)
        self.assertEqual(again.report["upstream_manifest_gets"], 0)
        self.assertEqual(again.report["tags_written"], 0)
        for entry in self.plan(st, path).values():
            self.assertEqual((entry["unchanged"], entry["to_write"], entry["gets_max"]),
                             (entry["tags"], 0, 0), entry)
        # Tags sharing a digest were one job: 2 of app's, 2 of tool's beside the official
        # ones; a pinned digest one more unless a chosen tag has it (v10).
        official = st.run()
        self.assertEqual(official.rc, 0, official.stderr)
        self.assertEqual(run.report["jobs_total"], official.report["jobs_total"] + 6)
        print("\nsync file: full run %d counted GETs (minimum %d), no-op run 0"
              % (full, minimum))

    def signed_sync_file(self, **hub_config):
        """A sync file taking acme/signed 1.0, with the stand-in set so for the test."""
        self.hub.config(**hub_config)
        self.addCleanup(self.hub.config, referrers_api=True, referrers_page=0)
        return self.sync_file("version: 1\nsync:\n  - source: acme/signed\n"
                              "    tags: {names: [\"1.0\"]}\n")

    def run_signed(self, **hub_config):
        """A run of acme/signed 1.0 with the stand-in set so; the stand-in's counted GETs
        and referrers GETs it took, beyond hello-world's minimum."""
        path = self.signed_sync_file(**hub_config)
        st = self.stack().start()
        before = self.hub.counters()
        run = st.run("--sync-file", path, worker_extra=("--sync-file", path))
        self.assertEqual(run.rc, 0, run.stderr)
        after = self.hub.counters()
        self.assertEqual(sorted(tags(self.target.url, "acme/signed")),
                         sorted(["1.0", self.signed_fallback]))
        self.assertEqual(head(self.target.url, "acme/signed", "1.0"), self.signed)
        self.assertEqual(head(self.target.url, "acme/signed", self.signed_fallback),
                         self.signed_sig)
        base = totals(self.pushed, self.REPOS)["manifest_gets_min"]
        return (st, path, after["manifest_get"] - before["manifest_get"] - base,
                after["referrers_get"] - before["referrers_get"])

    def test_referrers_api(self):
        """The referrers the API lists (two pages of one) are copied digest-exact, at one
        counted GET each and one per page; the fallback tag too; each referrer's own
        referrers are asked for (none); a no-op run asks nothing."""
        path = self.signed_sync_file(referrers_page=1)
        plan = self.plan(self.stack().start(), path)["acme/signed"]
        st, path, gets, pages = self.run_signed(referrers_page=1)
        # plan priced the image, its fallback signature and the image's listing (at most the
        # signature's listing more); the referrers the API lists, their listings and the
        # second page it cannot know before the run, and says so.
        self.assertEqual((plan["gets_min"], plan["gets_max"], plan["referrers_api_unpriced"]),
                         (1 + 1 + 1, 1 + 1 + 1 + 1, True))
        self.assertLessEqual(plan["gets_max"], gets)
        # the image, its fallback signature, the two API referrers, the two pages, and the
        # listing of each of the three referrers
        self.assertEqual((gets, pages), (1 + 1 + 2 + 2 + 3, 2 + 3))
        for d in self.signed_api:
            self.assertEqual(head(self.target.url, "acme/signed", d), d)
        before = self.hub.counters()["manifest_get"]
        again = st.run("--sync-file", path, worker_extra=("--sync-file", path))
        self.assertEqual(again.rc, 0, again.stderr)
        self.assertEqual(self.hub.counters()["manifest_get"] - before, 0)
        print("\nreferrers API: %d counted GETs (image, fallback signature, 2 referrers, "
              "2 pages, 3 referrers' listings), no-op run 0" % gets)

    def test_referrers_pages_reserved_each(self):
        """Each referrers page's counted GET is reserved from the budget before it is sent
        (two pages of one here, and a page for each referrer's own): the pulls the fleet
        granted are the counted GETs the stand-in saw."""
        path = self.signed_sync_file(referrers_page=1)
        st = self.stack().start()

        def granted():
            return int(self.redis.cli_raw("HGET", PREFIX + "stats", "pulls_granted").strip() or 0)

        before, before_gets = granted(), self.hub.counters()
        run = st.run("--sync-file", path, worker_extra=("--sync-file", path))
        self.assertEqual(run.rc, 0, run.stderr)
        after = self.hub.counters()
        self.assertEqual(after["referrers_get"] - before_gets["referrers_get"], 2 + 3)
        self.assertEqual(granted() - before, after["manifest_get"] - before_gets["manifest_get"])

    def test_referrers_of_referrers(self):
        """Signatures of an attestation of the image (one the referrers API lists, one under
        its fallback tag) are followed and copied digest-exact, at one counted GET for each
        digest and one listing of each; a no-op run asks nothing."""
        path = self.sync_file("version: 1\nsync:\n  - source: acme/chain\n"
                              "    tags: {names: [\"1.0\"]}\n")
        st = self.stack().start()
        before = self.hub.counters()["manifest_get"]
        run = st.run("--sync-file", path, worker_extra=("--sync-file", path))
        self.assertEqual(run.rc, 0, run.stderr)
        gets = (self.hub.counters()["manifest_get"] - before
                - totals(self.pushed, self.REPOS)["manifest_gets_min"])
        # the image, the attestation, its two signatures; the referrers listing of each
        self.assertEqual(gets, 4 + 4)
        t = self.target.url
        self.assertEqual(sorted(tags(t, "acme/chain")), sorted(["1.0", self.chain_fallback]))
        self.assertEqual(head(t, "acme/chain", "1.0"), self.chain)
        self.assertEqual(head(t, "acme/chain", self.chain_fallback), self.chain_fallback_sig)
        for d in (self.chain_att, self.chain_sig, self.chain_fallback_sig):
            self.assertEqual(head(t, "acme/chain", d), d)
        before = self.hub.counters()["manifest_get"]
        again = st.run("--sync-file", path, worker_extra=("--sync-file", path))
        self.assertEqual(again.rc, 0, again.stderr)
        self.assertEqual(self.hub.counters()["manifest_get"] - before, 0)
        print("\nreferrers of referrers: %d counted GETs (4 digests, 4 listings), no-op run 0"
              % gets)

    def test_referrers_api_missing_falls_back_to_tags(self):
        """A registry answering 404 to the referrers API: the fallback tags are copied, the
        image tagged, the referrers only the API lists are not (the 404 is no pull)."""
        _, _, gets, pages = self.run_signed(referrers_api=False)
        self.assertEqual((gets, pages), (1 + 1, 0))
        for d in self.signed_api:
            self.assertIsNone(head(self.target.url, "acme/signed", d))

    def test_status_per_entry_with_a_failing_one(self):
        """An entry whose registry does not answer is in status with its error and no job;
        the other entry's jobs are done; the text view says both."""
        down = "127.0.0.1:%d" % free_port()
        path = self.sync_file("""version: 1
registries:
  %s:
    url: http://%s
sync:
  - source: bitnami/app
    tags: [latest]
    referrers: false
  - source: %s/org/gone
    target: mirror/gone
""" % (down, down, down))
        st = self.stack().start()
        run = st.run("--sync-file", path, worker_extra=("--sync-file", path))
        self.assertEqual(run.rc, 1, run.stderr)
        entries = {e["source"]: e for e in self.status()["entries"]}
        app, gone = entries["bitnami/app"], entries["%s/org/gone" % down]
        self.assertEqual((app["jobs_done"], app["jobs_total"], app["upstream_manifest_gets"],
                          app["errors"]), (1, 1, 1, []))
        self.assertEqual((gone["target"], gone["jobs_total"], len(gone["errors"])),
                         ("mirror/gone", 0, 1))
        self.assertIn(down, gone["errors"][0])
        p = subprocess.run(coordinator("status", redis=self.redis), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"\n  bitnami/app +bitnami/app +1/1 +0 +1\n")
        self.assertRegex(p.stdout, r"\n  %s/org/gone +mirror/gone +0/0 +0 +0\n    error: "
                         % down.replace(".", r"\."))

    def test_bad_sync_file_changes_nothing(self):
        path = self.sync_file("version: 1\nsync:\n  - source: bitnami/app\n"
                              "    tags: {regex: '(v'}\n")
        st = self.stack().start()
        p = subprocess.run(st.sync_argv("--sync-file", path, wait=False), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=60)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--sync-file: %s:4:" % path, p.stderr)
        self.assertEqual(self.redis.cli_raw("KEYS", PREFIX + "*").split(), [])

    def test_worker_without_the_sync_file_refuses_its_registries(self):
        path = self.mixed()
        st = self.stack().start()
        run = st.run("--sync-file", path, "--repos", "hello-world")
        self.assertNotEqual(run.rc, 0)
        dead = dead_letters(self.redis)
        refused = [d for d in dead if "and not in its sync file" in d.get("reason", "")]
        self.assertTrue(refused, dead)
        self.assertEqual(tags(self.target.url, "mirror/tool"), [])
        # Docker Hub namespaces are the worker's own upstream: copied as before.
        self.assertEqual(sorted(tags(self.target.url, "bitnami/app")), ["1.1.0", "1.2.0", "latest"])


class OtherRegistryTest(MirrorCase):
    """A second stand-in plays ghcr.io with its own token auth and user: its credentials go
    to it alone, and its abuse 429s (with Retry-After) slow only its own jobs."""

    REPOS = ["hello-world"]

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.gh = Standin(users=["ghuser:ghpw"]).start()
        try:
            cls.tool = {t: push_image(cls.gh.registry.url, "org/tool", [t], 20 + i)
                        for i, t in enumerate(("v1", "v2", "v3"))}
        except BaseException:
            cls.gh.stop()
            super().tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.gh.stop()
        super().tearDownClass()

    def sync_file(self):
        path = write_sync_file(
            self, "version: 1\nregistries:\n  ghcr.example:\n    url: %s\n"
                  "    credentials: [GHCR_T]\nsync:\n  - source: ghcr.example/org/tool\n"
                  "    tags: {glob: 'v*'}\n" % self.gh.url)
        return path, {"GHCR_T_USERNAME": "ghuser", "GHCR_T_PASSWORD": "ghpw"}

    def test_slow_registry_keeps_the_lease(self):
        """Reading a slow registry's tags takes longer than the coordinator lease (30 s):
        the coordinator keeps it meanwhile and the run goes on."""
        path, env = self.sync_file()
        self.gh.config(latency_ms=12000)
        self.addCleanup(lambda: self.gh.config(latency_ms=0))
        st = self.stack().start()
        st.coordinator("--sync-file", path, env=env)
        self.assertIsNotNone(st.wait_enqueued(timeout=180))
        self.gh.config(latency_ms=0)
        for _ in range(2):
            st.worker("--exit-when-idle", "--sync-file", path, env=env)
        run = st.report()
        self.assertEqual(run.rc, 0, run.stderr)
        for t, digest in self.tool.items():
            self.assertEqual(head(self.target.url, "ghcr.example/org/tool", t), digest)

    def test_429_burst_throttles_only_its_registry(self):
        self.burst(retry_after=1)

    def test_429_burst_without_retry_after_throttles_only_its_registry(self):
        """429s that say not how long: ghcr's jobs back off and come back (no pull budget
        is spent, the run is not deferred)."""
        self.burst(retry_after=0)

    def burst(self, retry_after):
        """A burst of 429s from ghcr (Retry-After: retry_after seconds, 0: none) while its
        jobs run: the run completes, Docker Hub untouched."""
        path, env = self.sync_file()
        self.addCleanup(self.gh.config, burst_rate=0.0, burst_retry_after=60)
        st = self.stack().start()
        st.coordinator("--sync-file", path, env=env)
        self.assertIsNotNone(st.wait_enqueued())
        before = self.gh.counters()["burst_429"]
        self.gh.config(burst_rate=1.0, burst_len=4, burst_retry_after=retry_after)
        for _ in range(2):
            st.worker("--exit-when-idle", "--sync-file", path, env=env)
        deadline = time.time() + 60 * TIMEOUT_FACTOR
        while self.gh.counters()["burst_429"] == before:
            self.assertLess(time.time(), deadline, "no 429 burst")
            time.sleep(0.02)
        self.gh.config(burst_rate=0.0)
        run = st.report()
        self.assertEqual(run.rc, 0, run.stderr)
        self.assertEqual(run.report["jobs_done"], run.report["jobs_total"])
        for t, digest in self.tool.items():
            self.assertEqual(head(self.target.url, "ghcr.example/org/tool", t), digest)
        # Docker Hub saw no 429 and its budget was never paused for ghcr's.
        self.assertEqual(self.hub.counters()["burst_429"], 0)
        for key in self.redis.cli_raw("--scan", "--pattern", PREFIX + "budget:*").split():
            if not key.endswith(":inflight"):
                self.assertEqual(self.redis.cli_raw("HGET", key, "paused_until_ms").strip(), "",
                                 key)
        # ghcr's credentials went to ghcr only.
        self.assertIn("ghuser", [u for u, _ in self.gh.token_requests()])
        self.assertNotIn("ghuser", [u for u, _ in self.hub.token_requests()])


class PooledHubAccountsTest(MirrorCase):
    """Two Docker Hub accounts named by the sync file's docker.io credentials, each with a
    pull budget smaller than the run needs: the run completes using both, each counted GET
    reserved from the account with the most left, neither past its own budget, no 429."""

    REPOS = ["hello-world"]
    HUB_USERS = ["hub-a:tok-a:50", "hub-b:tok-b:50"]

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            cls.pool = {"1.%d" % i: push_image(cls.hub.registry.url, "team/pool",
                                               ["1.%d" % i], 30 + i) for i in range(4)}
        except BaseException:
            super().tearDownClass()
            raise

    def test_run_draws_from_both_accounts(self):
        path = write_sync_file(
            self, "version: 1\nregistries:\n  docker.io:\n    credentials: [HUB_A, HUB_B]\n"
                  "sync:\n  - source: team/pool\n    tags: {glob: '1.*'}\n"
                  "    referrers: false\n")  # the budgets count image GETs only
        env = {"HUB_A_USERNAME": "hub-a", "HUB_A_PASSWORD": "tok-a",
               "HUB_B_USERNAME": "hub-b", "HUB_B_PASSWORD": "tok-b"}
        minimum = totals(self.pushed, self.REPOS)["manifest_gets_min"] + len(self.pool)
        # Each account has `share` pulls left in its window: more than half the run, less
        # than all of it.
        share = minimum // 2 + 1
        self.assertLess(share, minimum)
        for user in ("hub-a", "hub-b"):
            self.hub.reset_window(user, used=50 - share)
        before = self.hub.counters()
        st = self.stack().start()
        run = st.run("--sync-file", path, worker_extra=("--sync-file", path), worker_env=env)
        self.assertEqual(run.rc, 0, run.stderr)
        self.assertEqual(run.report["jobs_done"], run.report["jobs_total"])
        after = self.hub.counters()
        self.assertEqual(after["manifest_get"] - before["manifest_get"], minimum)
        self.assertEqual(after["denied_429"] - before["denied_429"], 0)
        used = {u: after["sources"][u]["used"] - (50 - share) for u in ("hub-a", "hub-b")}
        self.assertEqual(sum(used.values()), minimum, used)
        for user, n in used.items():
            self.assertGreater(n, 0, used)
            self.assertLessEqual(n, share, used)
        for tag, digest in self.pool.items():
            self.assertEqual(head(self.target.url, "team/pool", tag), digest)
        # Budgets are kept under the accounts' names; no secret reaches Redis or the logs.
        self.assertIn(PREFIX + "budget:HUB_A",
                      self.redis.cli_raw("--scan", "--pattern", PREFIX + "budget:*").split())
        dump = self.redis.cli_raw("--scan", "--pattern", PREFIX + "*")
        for secret in ("tok-a", "tok-b"):
            self.assertNotIn(secret, dump)
            self.assertNotIn(secret, run.stderr)
        print("\npooled accounts: %d counted GETs (minimum %d), hub-a %d, hub-b %d of %d each"
              % (after["manifest_get"] - before["manifest_get"], minimum, used["hub-a"],
                 used["hub-b"], share))


if __name__ == "__main__":
    unittest.main()
