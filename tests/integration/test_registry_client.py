"""Integration tests of the registry client (common/reg*) through regtool.

Real docker-registry processes (harness.Registry) are the targets and, where
they can show the behaviour, the sources; the Docker Hub stand-in provides
what a real registry cannot: Docker Hub's auth flow and rate-limit headers,
429s, 5xx bursts, a CDN redirect, corrupted and truncated blobs (in its
in-memory mode, MemoryStandin: manifests no registry takes, a blob of hundreds
of MiB generated on the fly), and token auth with push scopes in front of a
real registry as a target.

HUBSYNC_BIG_BLOB_MIB sets the size of the flat-memory copy (default 256;
2048 for the 2 GiB figure).
"""
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request

from harness import TOOLS, Registry
from harness.standin import MemoryStandin, Standin
from standin.memory import Blob

REGTOOL = os.path.join(TOOLS, "regtool")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
FAST = ["--retry-base-ms", "20", "--retry-max-ms", "100"]


class Tool:
    """Runs regtool with an empty docker config, so nothing of the machine's
    own ~/.docker leaks in."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="hubsync-regtool-")

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def run(self, *args, env=None, timeout=300):
        e = dict(os.environ, DOCKER_CONFIG=self.dir)
        e.update(env or {})
        p = subprocess.run([REGTOOL] + [str(a) for a in args], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=e, timeout=timeout)
        out = json.loads(p.stdout) if p.stdout.strip() else None
        return p.returncode, out, p.stderr


def push_blob(reg_url, repo, data):
    """Upload bytes to a real registry with urllib (independent of the client)."""
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    r = urllib.request.urlopen(urllib.request.Request(
        "%s/v2/%s/blobs/uploads/" % (reg_url, repo), method="POST", data=b""))
    loc = r.headers["Location"]
    urllib.request.urlopen(urllib.request.Request(
        loc + ("&" if "?" in loc else "?") + "digest=" + d, method="PUT", data=data,
        headers={"Content-Type": "application/octet-stream"}))
    return d


def blob_status(reg_url, repo, digest):
    try:
        return urllib.request.urlopen(urllib.request.Request(
            "%s/v2/%s/blobs/%s" % (reg_url, repo, digest), method="HEAD")).status
    except urllib.error.HTTPError as e:
        return e.code


def image_manifest(config_digest, layers):
    """Image manifest bytes with deliberate, non-canonical spacing: they must
    travel byte for byte."""
    return (json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                   "digest": config_digest, "size": 2},
                        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                    "digest": d, "size": n} for d, n in layers]},
                       indent=3) + "\n").encode()


class RealRegistryTest(unittest.TestCase):
    """Manifests, blobs, mounts and tags against Debian's docker-registry."""

    @classmethod
    def setUpClass(cls):
        cls.reg = Registry().start()
        cls.tool = Tool()
        cls.layer = os.urandom(3 * 1000 * 1000 + 17)
        cls.layer_digest = push_blob(cls.reg.url, "lib/src", cls.layer)
        cls.config_digest = push_blob(cls.reg.url, "lib/src", b"{}")

    @classmethod
    def tearDownClass(cls):
        cls.tool.close()
        cls.reg.stop()

    def test_ping(self):
        rc, out, _ = self.tool.run("ping", self.reg.url)
        self.assertEqual(rc, 0)
        self.assertEqual(out["class"], "ok")
        self.assertEqual(out["status"], 200)

    def test_manifest_round_trip_keeps_exact_bytes(self):
        body = image_manifest(self.config_digest, [(self.layer_digest, len(self.layer))])
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        path = os.path.join(self.tool.dir, "m.json")
        with open(path, "wb") as f:
            f.write(body)
        rc, out, _ = self.tool.run("put-manifest", self.reg.url + "/lib/src:v1", OCI_MANIFEST, path)
        self.assertEqual((rc, out["class"], out["status"]), (0, "ok", 201))
        self.assertEqual(out["digest"], digest)
        rc, out, _ = self.tool.run("head", self.reg.url + "/lib/src:v1")
        self.assertEqual(out["digest"], digest)
        self.assertEqual(out["content_type"], OCI_MANIFEST)
        self.assertEqual(out["length"], len(body))
        self.assertEqual(out["stats"]["manifest_heads"], 1)
        self.assertEqual(out["stats"]["manifest_gets"], 0)
        got = os.path.join(self.tool.dir, "got.json")
        for ref in (":v1", "@" + digest):
            rc, out, _ = self.tool.run("get", self.reg.url + "/lib/src" + ref, "--out", got)
            self.assertEqual((rc, out["class"]), (0, "ok"))
            self.assertEqual(out["digest"], digest)
            self.assertEqual(out["manifest_get_hook_calls"], 1)
            with open(got, "rb") as f:
                self.assertEqual(f.read(), body)
        # pushing under its digest works too; under a wrong digest it is refused
        rc, out, _ = self.tool.run("put-manifest", self.reg.url + "/lib/src@" + digest,
                                   OCI_MANIFEST, path)
        self.assertEqual((out["class"], out["digest"]), ("ok", digest))
        # a repository without the blobs refuses the manifest (400 MANIFEST_BLOB_UNKNOWN)
        rc, out, _ = self.tool.run("put-manifest", self.reg.url + "/lib/other:v1", OCI_MANIFEST, path)
        self.assertEqual((rc, out["class"], out["status"]), (1, "protocol", 400))
        self.assertIn("MANIFEST_BLOB_UNKNOWN", out["msg"])
        rc, out, _ = self.tool.run("put-manifest", self.reg.url + "/lib/other@sha256:" + "1" * 64,
                                   OCI_MANIFEST, path)
        self.assertEqual((rc, out["class"], out["stats"]["requests"]), (1, "digest_mismatch", 0))

    def test_missing_manifest(self):
        rc, out, _ = self.tool.run("get", self.reg.url + "/lib/src:nope")
        self.assertEqual(rc, 1)
        self.assertEqual((out["class"], out["status"]), ("not_found", 404))
        self.assertIn("lib/src:nope", out["msg"])
        self.assertIn(self.reg.url, out["msg"])
        self.assertIn("MANIFEST_UNKNOWN", out["msg"])
        self.assertEqual(out["attempts"], 1)

    def test_copy_blob_between_repositories(self):
        rc, out, _ = self.tool.run("copy-blob", self.reg.url + "/lib/src", self.reg.url + "/lib/copy",
                                   self.layer_digest, len(self.layer))
        self.assertEqual((rc, out["class"], out["mounted"]), (0, "ok", False))
        self.assertEqual(out["length"], len(self.layer))
        self.assertEqual(out["stats"]["blob_bytes"], len(self.layer))
        rc, out, _ = self.tool.run("head-blob", self.reg.url + "/lib/copy", self.layer_digest)
        self.assertEqual((out["class"], out["length"]), ("ok", len(self.layer)))
        rc, out, _ = self.tool.run("head-blob", self.reg.url + "/lib/copy", "sha256:" + "2" * 64)
        self.assertEqual((rc, out["class"]), (1, "not_found"))

    def test_streams_within_one_host_never_wait_for_each_other(self):
        # Each copy holds a connection for its GET and one for its PUT; four at once
        # over two connections stalled until the stall timeout when two GETs took both.
        stall = ["--low-speed-secs", "5", "--retries", "0"]
        rc, out, err = self.tool.run("copy-blob", "--host-conns", "2", "--parallel", "4", *stall,
                                     self.reg.url + "/lib/src", self.reg.url + "/lib/two",
                                     self.layer_digest, len(self.layer), timeout=60)
        self.assertEqual(rc, 0, err)
        self.assertEqual([r["class"] for r in out["results"]], ["ok"] * 4)
        self.assertLess(out["seconds"], 4)
        # One connection cannot carry both ends: a clear refusal, not a stall.
        rc, out, _ = self.tool.run("copy-blob", "--host-conns", "1", *stall,
                                   self.reg.url + "/lib/src", self.reg.url + "/lib/one",
                                   self.layer_digest, len(self.layer), timeout=60)
        self.assertEqual((rc, out["class"]), (1, "invalid"))
        self.assertIn("needs 2 connections", out["msg"])
        self.assertEqual(blob_status(self.reg.url, "lib/one", self.layer_digest), 404)

    def test_mount_201(self):
        rc, out, _ = self.tool.run("copy-blob", self.reg.url + "/lib/src", self.reg.url + "/lib/m1",
                                   self.layer_digest, len(self.layer), "--from", "lib/src")
        self.assertEqual((rc, out["class"], out["status"], out["mounted"]), (0, "ok", 201, True))
        self.assertEqual(out["length"], 0)  # no byte moved
        self.assertEqual(out["stats"]["requests"], 1)
        rc, out, _ = self.tool.run("mount-blob", self.reg.url + "/lib/m2", self.layer_digest, "lib/src")
        self.assertEqual((rc, out["class"], out["mounted"]), (0, "ok", True))
        self.assertEqual(blob_status(self.reg.url, "lib/m2", self.layer_digest), 200)

    def test_mount_fallback_202_continues_the_upload(self):
        # The mount source lacks the blob: the registry answers 202 and opens
        # an upload session that the copy must use.
        rc, out, _ = self.tool.run("copy-blob", self.reg.url + "/lib/src", self.reg.url + "/lib/m3",
                                   self.layer_digest, len(self.layer), "--from", "lib/empty")
        self.assertEqual((rc, out["class"], out["mounted"]), (0, "ok", False))
        self.assertEqual(out["length"], len(self.layer))
        self.assertEqual(out["stats"]["requests"], 3)  # POST mount (202), GET, PUT
        self.assertEqual(blob_status(self.reg.url, "lib/m3", self.layer_digest), 200)
        # mount only: a 202 is "not mounted" and leaves nothing behind
        rc, out, _ = self.tool.run("mount-blob", self.reg.url + "/lib/m4", self.layer_digest, "lib/empty")
        self.assertEqual((rc, out["class"], out["mounted"]), (1, "not_found", False))
        self.assertEqual(blob_status(self.reg.url, "lib/m4", self.layer_digest), 404)

    def test_put_small_blob_from_memory(self):
        data = b"hubsync storage epoch marker\n" + os.urandom(16)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with tempfile.NamedTemporaryFile() as f:
            f.write(data)
            f.flush()
            rc, out, _ = self.tool.run("put-blob", self.reg.url + "/lib/marker", f.name)
            self.assertEqual((rc, out["class"], out["status"]), (0, "ok", 201))
            self.assertEqual((out["digest"], out["length"]), (digest, len(data)))
            self.assertEqual(out["stats"]["requests"], 2)  # POST uploads/, PUT ?digest=
            rc, out, _ = self.tool.run("put-blob", self.reg.url + "/Bad/Repo", f.name)
            self.assertEqual((rc, out["class"], out["stats"]["requests"]), (1, "invalid", 0))
        rc, out, _ = self.tool.run("head-blob", self.reg.url + "/lib/marker", digest)
        self.assertEqual((rc, out["class"], out["length"]), (0, "ok", len(data)))

    def test_chunked_upload(self):
        rc, out, _ = self.tool.run("copy-blob", "--chunk-threshold", "1000000", "--chunk-bytes", "1000000",
                                   self.reg.url + "/lib/src", self.reg.url + "/lib/chunked",
                                   self.layer_digest, len(self.layer))
        self.assertEqual((rc, out["class"]), (0, "ok"))
        # POST, GET, 4 PATCHes (3 MB + 17 bytes in 1 MB chunks), closing PUT
        self.assertEqual(out["stats"]["requests"], 7)
        self.assertEqual(blob_status(self.reg.url, "lib/chunked", self.layer_digest), 200)

    def test_tags(self):
        push_blob(self.reg.url, "lib/tags", b"{}")
        body = image_manifest(self.config_digest, [])
        path = os.path.join(self.tool.dir, "t.json")
        with open(path, "wb") as f:
            f.write(body)
        names = ["t%d" % i for i in range(5)]
        for t in names:
            rc, out, _ = self.tool.run("put-manifest", self.reg.url + "/lib/tags:" + t, OCI_MANIFEST, path)
            self.assertEqual(out["class"], "ok")
        # distribution 2.8 answers all tags at once, unsorted, whatever n
        # says (no Link); the client keeps the server's order
        rc, out, _ = self.tool.run("tags", self.reg.url + "/lib/tags", "--page-size", "2")
        self.assertEqual((rc, out["class"]), (0, "ok"))
        self.assertEqual(sorted(out["tags"]), names)
        rc, out, _ = self.tool.run("tags", self.reg.url + "/lib/tags", "--page-size", "2", "--max-tags", "3")
        self.assertEqual((rc, out["class"]), (1, "too_large"))


class AuthTest(unittest.TestCase):
    """Docker Hub's auth flow, as the stand-in plays it."""

    def setUp(self):
        self.tool = Tool()
        self.hubs = []

    def tearDown(self):
        for f in self.hubs:
            f.stop()
        self.tool.close()

    def hub(self, **kw):
        f = MemoryStandin(**kw).start()
        f.add_manifest("library/x", "latest", OCI_INDEX, b'{"schemaVersion":2,"manifests":[]}')
        self.hubs.append(f)
        return f

    def test_anonymous_bearer_fetches_one_token_and_reuses_it(self):
        f = self.hub()
        rc, out, _ = self.tool.run("head", f.url + "/library/x:latest", "--repeat", "3")
        self.assertEqual((rc, out["class"]), (0, "ok"))
        self.assertEqual(out["stats"]["token_fetches"], 1)
        self.assertEqual(f.token_requests(), [(None, ["repository:library/x:pull"])])
        c = f.counters()
        self.assertEqual(c["unauthorized_401"], 1)  # only the very first request
        self.assertEqual(c["manifest_head"], 3)     # answered ones (the 401 is not)
        self.assertEqual(out["results"][0]["attempts"], 2)
        self.assertEqual(out["results"][2]["attempts"], 1)
        rc, out, _ = self.tool.run("ping", f.url)
        self.assertEqual((rc, out["class"]), (0, "ok"))

    def test_concurrent_requests_share_one_token_fetch(self):
        f = self.hub()
        # all 20 start before anything is known: 20 answers of 401, one fetch
        rc, out, _ = self.tool.run("get", f.url + "/library/x:latest", "--parallel", "20")
        self.assertEqual(rc, 0)
        self.assertEqual(len(out["results"]), 20)
        self.assertTrue(all(r["class"] == "ok" for r in out["results"]))
        self.assertEqual(out["stats"]["token_fetches"], 1)
        self.assertEqual(len(f.token_requests()), 1)
        self.assertEqual(out["manifest_get_hook_calls"], out["stats"]["manifest_gets"])

    def test_bearer_with_credentials(self):
        f = self.hub(users=["alice:s3cret-pw"], anonymous=False)
        env = {"HS_SRC_USERNAME": "alice", "HS_SRC_PASSWORD": "s3cret-pw"}
        rc, out, err = self.tool.run("head", f.url + "/library/x:latest", "--src-creds-env", "HS_SRC",
                                     env=env)
        self.assertEqual((rc, out["class"]), (0, "ok"))
        self.assertEqual(f.token_requests(), [("alice", ["repository:library/x:pull"])])
        env["HS_SRC_PASSWORD"] = "wrong-pw"
        rc, out, err = self.tool.run("head", f.url + "/library/x:latest", "--src-creds-env", "HS_SRC",
                                     env=env)
        self.assertEqual((rc, out["class"]), (1, "unauthorized"))
        self.assertIn("credentials refused", out["msg"])
        self.assertNotIn("wrong-pw", json.dumps(out) + err)
        # anonymous where the token endpoint wants credentials
        rc, out, err = self.tool.run("head", f.url + "/library/x:latest")
        self.assertEqual((rc, out["class"]), (1, "unauthorized"))

    def test_credentials_from_docker_config(self):
        f = self.hub(users=["bob:pw-from-config"], anonymous=False)
        host = f.url[len("http://"):]
        auth = __import__("base64").b64encode(b"bob:pw-from-config").decode()
        with open(os.path.join(self.tool.dir, "config.json"), "w") as c:
            json.dump({"auths": {host: {"auth": auth}}}, c)
        rc, out, err = self.tool.run("head", f.url + "/library/x:latest", "--src-creds-env", "HS_NONE")
        self.assertEqual((rc, out["class"]), (0, "ok"))
        self.assertEqual(f.token_requests()[0][0], "bob")

    def test_basic(self):
        f = self.hub(auth="basic", users=["carol:basic-pw"])
        env = {"HS_SRC_USERNAME": "carol", "HS_SRC_PASSWORD": "basic-pw"}
        rc, out, _ = self.tool.run("get", f.url + "/library/x:latest", "--src-creds-env", "HS_SRC",
                                   "--repeat", "2", env=env)
        self.assertEqual((rc, out["class"]), (0, "ok"))
        self.assertEqual(out["stats"]["token_fetches"], 0)
        # once learnt, Basic goes with every request
        self.assertEqual(f.counters()["unauthorized_401"], 1)
        env["HS_SRC_PASSWORD"] = "bad-basic-pw"
        rc, out, err = self.tool.run("get", f.url + "/library/x:latest", "--src-creds-env", "HS_SRC",
                                     env=env)
        self.assertEqual((rc, out["class"], out["status"]), (1, "unauthorized", 401))
        self.assertNotIn("bad-basic-pw", json.dumps(out) + err)
        rc, out, _ = self.tool.run("get", f.url + "/library/x:latest")
        self.assertEqual((rc, out["class"]), (1, "unauthorized"))

    def test_token_refreshed_before_it_expires(self):
        f = self.hub(token_ttl=2)
        rc, out, _ = self.tool.run("head", f.url + "/library/x:latest", "--repeat", "2",
                                   "--interval-ms", "1500")
        self.assertEqual((rc, out["class"]), (0, "ok"))
        self.assertEqual(out["stats"]["token_fetches"], 2)
        # the refresh came before the server refused
        self.assertEqual(f.counters()["unauthorized_401"], 1)

    def test_token_refused_by_the_server_is_refetched(self):
        # The answer says 300 s, the server expires it after 1 s.
        f = self.hub(token_ttl=1, token_expires_in=300)
        rc, out, _ = self.tool.run("head", f.url + "/library/x:latest", "--repeat", "2",
                                   "--interval-ms", "1500")
        self.assertEqual((rc, out["class"]), (0, "ok"))
        self.assertTrue(all(r["class"] == "ok" for r in out["results"]))
        self.assertEqual(out["stats"]["token_fetches"], 2)
        self.assertEqual(f.counters()["unauthorized_401"], 2)
        self.assertEqual(out["results"][1]["attempts"], 2)


class UpstreamBehaviourTest(unittest.TestCase):
    """Rate limits, 429, retries, digests, pagination."""

    @classmethod
    def setUpClass(cls):
        cls.tool = Tool()
        cls.f = MemoryStandin().start()
        cls.body = b'{"schemaVersion":2,"mediaType":"%s","manifests":[]}' % OCI_INDEX.encode()
        cls.digest = cls.f.add_manifest("library/x", "latest", OCI_INDEX, cls.body)
        for i in range(7):
            cls.f.add_manifest("library/many", "v%02d" % i, OCI_INDEX, cls.body)
        cls.f.add_manifest("library/nothing", None, OCI_INDEX, cls.body)  # no tag
        cls.f.add_manifest("library/big", "huge", OCI_INDEX, b" " * (5 << 20))
        cls.defaults = cls.f.control("GET", "config")

    @classmethod
    def tearDownClass(cls):
        cls.f.stop()
        cls.tool.close()

    def setUp(self):
        self.f.config(**self.defaults)
        self.f.reset_window()
        self.f.reset_counters()

    def test_ratelimit_headers_reach_the_hook(self):
        self.f.reset_window("127.0.0.1", used=24)  # of the 100 anonymous pulls
        rc, out, _ = self.tool.run("head", self.f.url + "/library/x:latest")
        self.assertEqual(out["ratelimit"], {"limit": 100, "limit_window": 21600, "remaining": 76,
                                            "remaining_window": 21600, "source": "127.0.0.1"})
        self.assertGreaterEqual(out["ratelimit_hook_calls"], 1)
        self.assertEqual(out["last_ratelimit"]["remaining"], 76)
        self.f.config(ratelimit_prefix="x-", window=3600)
        self.f.reset_window("127.0.0.1", used=95)
        rc, out, _ = self.tool.run("head", self.f.url + "/library/x:latest")
        self.assertEqual((out["ratelimit"]["remaining"], out["ratelimit"]["remaining_window"]), (5, 3600))

    def test_429_is_a_budget_event_and_not_retried(self):
        self.f.reset_window("127.0.0.1", used=100)
        self.f.config(retry_after=120)
        rc, out, _ = self.tool.run("get", self.f.url + "/library/x:latest", *FAST)
        self.assertEqual(rc, 1)
        self.assertEqual((out["class"], out["status"], out["retry_after"]), ("rate_limited", 429, 120))
        self.assertIn("TOOMANYREQUESTS", out["msg"])
        self.assertEqual(out["stats"]["retries"], 0)
        self.assertEqual(self.f.counters()["denied_429"], 1)
        # every manifest GET sent is reported: the 401 one and the 429 one
        sent = sum(1 for e in self.f.requests()
                   if e["method"] == "GET" and "/manifests/" in e["path"])
        self.assertEqual(sent, 2)
        self.assertEqual(out["stats"]["manifest_gets"], sent)
        self.assertEqual(out["manifest_get_hook_calls"], sent)
        self.assertEqual(out["ratelimit"]["remaining"], 0)
        self.f.config(retry_after=0)  # no Retry-After, as Docker Hub
        rc, out, _ = self.tool.run("get", self.f.url + "/library/x:latest", *FAST)
        self.assertEqual((out["class"], out["retry_after"]), ("rate_limited", -1))
        # HEAD is still free
        rc, out, _ = self.tool.run("head", self.f.url + "/library/x:latest")
        self.assertEqual(out["class"], "ok")

    def test_5xx_retried_then_ok(self):
        self.f.config(error_next=2)
        rc, out, _ = self.tool.run("head", self.f.url + "/library/x:latest", *FAST)
        self.assertEqual((rc, out["class"]), (0, "ok"))
        self.assertEqual(out["stats"]["retries"], 2)
        self.assertEqual(self.f.counters()["faults"]["error"], 2)

    def test_5xx_retries_are_bounded_with_backoff(self):
        self.f.config(error_next=1000)
        t0 = time.time()
        rc, out, _ = self.tool.run("get", self.f.url + "/library/x:latest", "--retries", "3",
                                   "--retry-base-ms", "100", "--retry-max-ms", "400")
        took = time.time() - t0
        self.assertEqual((rc, out["class"], out["status"]), (1, "server", 503))
        self.assertEqual(self.f.counters()["faults"]["error"], 4)
        self.assertEqual(out["stats"]["retries"], 3)
        # backoff 100, 200, 400 ms with equal jitter: at least 350 ms, well under 5 s
        self.assertGreater(took, 0.35)
        self.assertLess(took, 5)

    def test_digest_checks(self):
        self.f.config(manifest_fault="digest_header")
        rc, out, _ = self.tool.run("get", self.f.url + "/library/x:latest")
        self.assertEqual((rc, out["class"]), (1, "digest_mismatch"))
        self.assertEqual(out["digest"], self.digest)  # what the bytes really hash to
        self.f.config(manifest_fault="extra_byte")
        rc, out, _ = self.tool.run("get", self.f.url + "/library/x@" + self.digest)
        self.assertEqual((rc, out["class"]), (1, "digest_mismatch"))
        self.f.config(manifest_fault="")
        rc, out, _ = self.tool.run("get", self.f.url + "/library/x@" + self.digest)
        self.assertEqual((rc, out["class"], out["digest"]), (0, "ok", self.digest))

    def test_manifest_body_is_bounded(self):
        rc, out, _ = self.tool.run("get", self.f.url + "/library/big:huge")
        self.assertEqual((rc, out["class"]), (1, "too_large"))

    def test_pagination_link_last_and_unpaged(self):
        want = ["v%02d" % i for i in range(7)]
        for mode, pages in (("link", 3), ("last", 3), ("all", 1)):
            self.f.config(tags_paging=mode)
            before = self.f.counters()["tags_list"]
            rc, out, _ = self.tool.run("tags", self.f.url + "/library/many", "--page-size", "3")
            self.assertEqual((rc, out["class"]), (0, "ok"), mode)
            self.assertEqual(out["tags"], want, mode)
            self.assertEqual(self.f.counters()["tags_list"] - before, pages, mode)
        rc, out, _ = self.tool.run("tags", self.f.url + "/library/nothing")
        self.assertEqual((rc, out["class"], out["tags"]), (0, "ok", []))


class BlobCopyTest(unittest.TestCase):
    """Streaming copies from the stand-in (Bearer auth, CDN redirect) into a real
    registry: nothing unverified may ever land there."""

    @classmethod
    def setUpClass(cls):
        cls.tool = Tool()
        cls.up = MemoryStandin().start()
        cls.target = Registry().start()
        cls.blob = cls.up.add_blob(Blob(os.urandom(5 * 1000 * 1000 + 3)))

    @classmethod
    def tearDownClass(cls):
        cls.up.stop()
        cls.target.stop()
        cls.tool.close()

    def setUp(self):
        self.up.config(corrupt_rate=0, truncate_rate=0)
        self.up.reset_counters()

    def copy(self, repo, size=None, *extra):
        return self.tool.run("copy-blob", *FAST, *extra, self.up.url + "/library/src",
                             self.target.url + "/" + repo, self.blob.digest,
                             self.blob.size if size is None else size)

    def test_redirect_never_carries_the_token(self):
        rc, out, _ = self.copy("lib/redirected")
        self.assertEqual((rc, out["class"]), (0, "ok"))
        self.assertEqual(blob_status(self.target.url, "lib/redirected", self.blob.digest), 200)
        c = self.up.counters()
        self.assertEqual((c["auth_leaks"], c["auth_leak_details"]), (0, []))
        self.assertGreaterEqual(c["cdn_get"], 1)
        # the registry itself did get the token with the blob GET: only a request with a
        # valid token is redirected
        gets = [e for e in self.up.requests() if e["listener"] == "registry" and
                e["method"] == "GET" and "/blobs/" in e["path"]]
        self.assertEqual(gets[-1]["status"], 307)

    def test_corrupted_blob_is_rejected_and_not_committed(self):
        self.up.config(corrupt_rate=1.0)
        rc, out, _ = self.copy("lib/corrupt")
        self.assertEqual((rc, out["class"]), (1, "digest_mismatch"))
        self.assertNotEqual(out["digest"], self.blob.digest)
        self.assertEqual(self.up.counters()["blob_get"], 1)  # a mismatch is not retried
        self.assertEqual(blob_status(self.target.url, "lib/corrupt", self.blob.digest), 404)

    def test_truncated_blob_is_retried_then_rejected(self):
        self.up.config(truncate_rate=1.0)
        rc, out, _ = self.copy("lib/truncated", None, "--retries", "2")
        self.assertEqual((rc, out["class"]), (1, "network"))
        self.assertEqual(self.up.counters()["blob_get"], 3)
        self.assertEqual(out["stats"]["retries"], 2)
        self.assertEqual(blob_status(self.target.url, "lib/truncated", self.blob.digest), 404)
        # a fault that clears: the retry succeeds
        self.up.config(truncate_rate=0)
        rc, out, _ = self.copy("lib/truncated")
        self.assertEqual((rc, out["class"]), (0, "ok"))

    def test_wrong_size_is_rejected(self):
        for size in (self.blob.size - 1, self.blob.size + 1):
            rc, out, _ = self.copy("lib/size", size)
            self.assertEqual((rc, out["class"]), (1, "digest_mismatch"))
            self.assertIn("descriptor", out["msg"])
        self.assertEqual(blob_status(self.target.url, "lib/size", self.blob.digest), 404)

    def test_missing_source_blob(self):
        rc, out, _ = self.tool.run("copy-blob", *FAST, self.up.url + "/library/src",
                                   self.target.url + "/lib/none", "sha256:" + "3" * 64, 10)
        self.assertEqual((rc, out["class"], out["status"]), (1, "not_found", 404))
        self.assertEqual(blob_status(self.target.url, "lib/none", "sha256:" + "3" * 64), 404)


class TargetAuthTest(unittest.TestCase):
    """Pushing to a registry that wants Bearer tokens with push scope: the stand-in in push
    mode in front of a real registry."""

    @classmethod
    def setUpClass(cls):
        cls.tool = Tool()
        cls.proxy = Standin(users=["pusher:push-pw"], anonymous=False, push=True).start()
        cls.reg = cls.proxy.registry
        cls.up = MemoryStandin().start()
        cls.blob = cls.up.add_blob(Blob(os.urandom(200 * 1000)))
        cls.env = {"HS_DST_USERNAME": "pusher", "HS_DST_PASSWORD": "push-pw"}

    @classmethod
    def tearDownClass(cls):
        cls.up.stop()
        cls.proxy.stop()
        cls.tool.close()

    def test_copy_and_mount_ask_for_the_right_scopes(self):
        rc, out, err = self.tool.run("copy-blob", self.up.url + "/library/src",
                                     self.proxy.url + "/lib/one", self.blob.digest, self.blob.size,
                                     "--dst-creds-env", "HS_DST", env=self.env)
        self.assertEqual((rc, out["class"]), (0, "ok"), err)
        tokens = self.proxy.token_requests()
        scopes = [s for u, ss in tokens for s in ss]
        self.assertIn("repository:lib/one:pull,push", scopes)
        self.assertTrue(all(u == "pusher" for u, _ in tokens))
        rc, out, err = self.tool.run("mount-blob", self.proxy.url + "/lib/two", self.blob.digest,
                                     "lib/one", "--src-creds-env", "HS_DST", env=self.env)
        self.assertEqual((rc, out["class"], out["mounted"]), (0, "ok", True), err)
        last = self.proxy.token_requests()[-1][1]
        self.assertEqual(sorted(last), ["repository:lib/one:pull", "repository:lib/two:pull,push"])
        self.assertEqual(blob_status(self.reg.url, "lib/two", self.blob.digest), 200)

    def test_push_without_credentials_is_unauthorized(self):
        rc, out, _ = self.tool.run("copy-blob", self.up.url + "/library/src",
                                   self.proxy.url + "/lib/anon", self.blob.digest, self.blob.size)
        self.assertEqual((rc, out["class"]), (1, "unauthorized"))
        self.assertEqual(blob_status(self.reg.url, "lib/anon", self.blob.digest), 404)


class TlsTest(unittest.TestCase):
    """TLS is verified by default; a private CA is trusted through the CA
    file option; small requests may use HTTP/2, blob streams use HTTP/1.1."""

    @classmethod
    def setUpClass(cls):
        cls.tool = Tool()
        cls.cert = os.path.join(cls.tool.dir, "cert.pem")
        key = os.path.join(cls.tool.dir, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-keyout", key, "-out", cls.cert, "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cls.reg = Registry(extra_config="  tls:\n    certificate: %s\n    key: %s\n"
                           % (cls.cert, key)).start()
        cls.https = "https://127.0.0.1:%d" % cls.reg.port
        cls.plain = Registry().start()
        cls.data = os.urandom(1 << 20)
        cls.digest = push_blob(cls.plain.url, "lib/src", cls.data)

    @classmethod
    def tearDownClass(cls):
        cls.reg.stop()
        cls.plain.stop()
        cls.tool.close()

    def test_verified_by_default(self):
        rc, out, _ = self.tool.run("ping", self.https, "--retries", "0")
        # A refused certificate is a setting to fix, not a network failure to wait out.
        self.assertEqual((rc, out["class"]), (1, "tls"))
        self.assertIn("certificate", out["msg"].lower())

    def test_ca_file(self):
        rc, out, _ = self.tool.run("ping", self.https, "--ca-file", self.cert)
        self.assertEqual((rc, out["class"], out["status"]), (0, "ok", 200))
        # a blob streamed into the TLS registry (HTTP/1.1), then HEADs at once
        # (HTTP/2 where the server offers it)
        rc, out, err = self.tool.run("copy-blob", "--ca-file", self.cert, self.plain.url + "/lib/src",
                                     self.https + "/lib/tls", self.digest, len(self.data))
        self.assertEqual((rc, out["class"]), (0, "ok"), err)
        rc, out, _ = self.tool.run("head-blob", "--ca-file", self.cert, self.https + "/lib/tls",
                                   self.digest, "--parallel", "8")
        self.assertTrue(all(r["class"] == "ok" for r in out["results"]))
        self.assertEqual(out["results"][0]["length"], len(self.data))

    def test_plain_http_to_a_tls_port_fails(self):
        rc, out, _ = self.tool.run("ping", "http://127.0.0.1:%d" % self.reg.port, "--retries", "0")
        self.assertEqual(rc, 1)
        self.assertNotEqual(out["class"], "ok")


class BigBlobTest(unittest.TestCase):
    """A large blob streams through in constant memory (peak RSS of the
    regtool process, whatever the size)."""

    def test_big_blob_flat_memory(self):
        mib = int(os.environ.get("HUBSYNC_BIG_BLOB_MIB", "256"))
        tool = Tool()
        up = MemoryStandin().start()
        target = Registry().start()
        try:
            blob = up.add_blob(Blob(size=mib << 20, seed=7))
            results = {}
            for label, extra in (("monolithic", []),
                                 ("chunked", ["--chunk-threshold", "0", "--chunk-bytes", str(64 << 20)])):
                t0 = time.time()
                rc, out, err = tool.run("copy-blob", *extra, up.url + "/library/big",
                                        target.url + "/lib/big-" + label, blob.digest, blob.size,
                                        timeout=1800)
                took = time.time() - t0
                self.assertEqual((rc, out["class"]), (0, "ok"), err)
                self.assertEqual(out["length"], blob.size)
                self.assertEqual(blob_status(target.url, "lib/big-" + label, blob.digest), 200)
                results[label] = (out["peak_rss_kb"], took)
                # constant memory: far below the blob size, independent of it
                self.assertLess(out["peak_rss_kb"], 64 * 1024)
            print("\n    big blob %d MiB: %s" % (mib, ", ".join(
                "%s peak RSS %.1f MiB in %.1f s (%.0f MiB/s)" % (k, v[0] / 1024, v[1], mib / v[1])
                for k, v in results.items())))
        finally:
            up.stop()
            target.stop()  # removes the registry's directory, blob included
            tool.close()


if __name__ == "__main__":
    unittest.main()
