"""The Docker Hub stand-in itself: token flow, pull accounting, 429s, CDN redirect and
leak detection, every fault switch, Basic auth and push mode, the in-memory mode, the
loader's content, and a real client (skopeo) whose manifest GETs the stand-in must count
exactly."""
import base64
import gzip
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import unittest
from urllib.parse import urlsplit

from harness import ROOT, Registry, programs
from harness.standin import CDN_HOST, MemoryStandin, Standin, free_port_on
from standin import layout
from standin import loader as ld
from standin.memory import Blob
from standin.standin import ALL_MANIFESTS
from standin.storage import Storage
from standin.wire import KeepAlive

TOKEN_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
ANON_429 = ("You have reached your unauthenticated pull rate limit. "
            "https://www.docker.com/increase-rate-limit")

# A small catalog in the schema of `hubsync-coordinator catalog --json`.
CATALOG = {"commit": "0" * 40, "repositories": [
    {"name": "alpine", "groups": [
        {"kind": "tags", "tags": ["3.22.1", "3.22", "3", "latest"],
         "platforms": ["linux/amd64", "linux/arm/v6", "linux/arm/v7", "linux/arm64/v8",
                       "linux/386", "linux/ppc64le", "linux/riscv64", "linux/s390x"]},
        {"kind": "tags", "tags": ["3.21.4", "3.21"],
         "platforms": ["linux/amd64", "linux/arm64/v8"]}]},
    {"name": "redis", "groups": [
        {"kind": "tags", "tags": ["8.2.1", "8.2", "8", "latest"],
         "platforms": ["linux/amd64", "linux/arm/v7", "linux/arm64/v8"]},
        {"kind": "tags", "tags": ["8.2.1-alpine", "8.2-alpine", "alpine"],
         "platforms": ["linux/amd64", "linux/arm64/v8"]}]},
    {"name": "hello-world", "groups": [
        {"kind": "tags", "tags": ["linux"],
         "platforms": ["linux/amd64", "linux/arm/v7", "linux/arm64/v8"]},
        {"kind": "tags", "tags": ["nanoserver-ltsc2025"], "platforms": ["windows/amd64"]},
        {"kind": "tags", "tags": ["nanoserver-ltsc2022"], "platforms": ["windows/amd64"]},
        {"kind": "shared", "tags": ["latest"],
         "entries": ["linux", "nanoserver-ltsc2025", "nanoserver-ltsc2022"]},
        {"kind": "shared", "tags": ["nanoserver"],
         "entries": ["nanoserver-ltsc2025", "nanoserver-ltsc2022"]}]},
]}
LAYER_SIZE = 4096


def request(method, url, headers=None):
    """(status, headers, body) of one request on a fresh connection."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request(method, u.path + ("?" + u.query if u.query else ""),
                     headers=headers or {})
        r = conn.getresponse()
        return r.status, r.headers, r.read()
    finally:
        conn.close()


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(
        ("%s:%s" % (user, password)).encode()).decode()}


class StandinTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.hub = Standin(users=["alice:wonderland:5", "bob:builder:unlimited"],
                          verbose=True).start()
        t0 = time.time()
        cls.pushed = cls.hub.load(CATALOG, layer_size=LAYER_SIZE)
        cls.load_seconds = time.time() - t0
        cls.defaults = cls.hub.control("GET", "config")

    @classmethod
    def tearDownClass(cls):
        cls.hub.stop()

    def setUp(self):
        self.hub.config(**self.defaults)
        self.hub.reset_window()
        self.hub.reset_counters()

    # -- helpers ----------------------------------------------------------------------
    def group(self, repo, tag):
        r = next(r for r in self.pushed["repositories"] if r["name"] == "library/" + repo)
        return next(g for g in r["groups"] if tag in g["tags"])

    def get(self, method, path, token=None, headers=None):
        h = dict(headers or {})
        if token:
            h["Authorization"] = "Bearer " + token
        return request(method, self.hub.url + path, h)

    def manifest(self, repo, ref, token, method="GET"):
        return self.get(method, "/v2/library/%s/manifests/%s" % (repo, ref), token)

    def blob_location(self, repo, digest, token):
        status, headers, _ = self.get("GET", "/v2/library/%s/blobs/%s" % (repo, digest), token)
        self.assertEqual(status, 307)
        return headers["Location"]

    def a_layer(self, repo="alpine", tag="3.22"):
        child = self.group(repo, tag)["children"][0]
        return next(b for b in child["blobs"] if "layer" in b["mediaType"])

    # -- token flow -------------------------------------------------------------------
    def test_ping_challenge_has_no_scope(self):
        status, headers, body = self.get("GET", "/v2/")
        self.assertEqual(status, 401)
        self.assertEqual(headers["WWW-Authenticate"],
                         'Bearer realm="%s/token",service="registry.docker.io"' % self.hub.url)
        self.assertEqual(json.loads(body)["errors"][0]["code"], "UNAUTHORIZED")
        status, _, _ = self.get("GET", "/v2/", self.hub.token("alpine"))
        self.assertEqual(status, 200)

    def test_manifest_challenge_names_the_repository_scope(self):
        for method in ("GET", "HEAD"):
            status, headers, _ = self.manifest("alpine", "3.22", None, method)
            self.assertEqual(status, 401)
            self.assertEqual(headers["WWW-Authenticate"],
                             'Bearer realm="%s/token",service="registry.docker.io",'
                             'scope="repository:library/alpine:pull"' % self.hub.url)
        c = self.hub.counters()
        self.assertEqual((c["unauthorized_401"], c["manifest_get"], c["manifest_head"]),
                         (2, 0, 0))

    def test_token_response_has_docker_fields(self):
        status, _, body = request("GET", self.hub.url + "/token?service=registry.docker.io"
                                  "&scope=repository:library/alpine:pull")
        self.assertEqual(status, 200)
        tok = json.loads(body)
        self.assertEqual(set(tok), {"token", "access_token", "expires_in", "issued_at"})
        self.assertEqual(tok["token"], tok["access_token"])
        self.assertEqual(tok["expires_in"], 300)
        self.assertRegex(tok["issued_at"], TOKEN_RE)
        self.assertEqual(self.hub.counters()["token_requests"], 1)

    def test_token_only_allows_its_scopes(self):
        tok = self.hub.token("alpine")
        status, headers, _ = self.manifest("redis", "8.2", tok)
        self.assertEqual(status, 401)
        self.assertIn('scope="repository:library/redis:pull"', headers["WWW-Authenticate"])
        self.assertIn('error="insufficient_scope"', headers["WWW-Authenticate"])
        both = self.hub.token("alpine", "redis")
        self.assertEqual(self.manifest("redis", "8.2", both)[0], 200)
        self.assertEqual(self.manifest("alpine", "3.22", both)[0], 200)
        self.assertEqual(self.get("GET", "/v2/", "not.a-token")[0], 401)

    def test_user_tokens_and_wrong_passwords(self):
        tok = self.hub.token("alpine", user="alice", password="wonderland")
        status, headers, _ = self.manifest("alpine", "3.22", tok)
        self.assertEqual(status, 200)
        self.assertEqual(headers["docker-ratelimit-source"], "alice")
        self.assertEqual(headers["ratelimit-limit"], "5;w=21600")
        for user, password in (("alice", "wrong"), ("mallory", "wonderland")):
            with self.assertRaises(Exception) as cm:
                self.hub.token("alpine", user=user, password=password)
            self.assertEqual(cm.exception.code, 401)
        c = self.hub.counters()
        self.assertEqual((c["token_requests"], c["token_denied"]), (3, 2))
        self.assertEqual(c["sources"]["alice"]["used"], 1)
        self.assertNotIn("wonderland", json.dumps(c) + json.dumps(self.hub.requests()))

    def test_tokens_expire(self):
        self.hub.config(token_ttl=1)
        status, _, body = request("GET", self.hub.url + "/token?scope=repository:library/"
                                  "alpine:pull")
        tok = json.loads(body)
        self.assertEqual(tok["expires_in"], 1)
        self.assertEqual(self.manifest("alpine", "3.22", tok["token"], "HEAD")[0], 200)
        time.sleep(1.2)
        self.assertEqual(self.manifest("alpine", "3.22", tok["token"], "HEAD")[0], 401)

    # -- pull accounting -----------------------------------------------------------------
    def test_get_counts_head_is_free(self):
        tok = self.hub.token("alpine")
        g = self.group("alpine", "3.22")
        child = g["children"][0]["digest"]
        remaining = []
        for method, ref in (("HEAD", "3.22"), ("HEAD", "3.22"), ("GET", "3.22"),
                            ("HEAD", child), ("GET", child), ("GET", "latest")):
            status, headers, body = self.manifest("alpine", ref, tok, method)
            self.assertEqual(status, 200)
            remaining.append(headers["ratelimit-remaining"])
            if method == "GET":
                self.assertEqual(sha(body), g["index"]["digest"] if ref != child else child)
        self.assertEqual(remaining, ["100;w=21600", "100;w=21600", "99;w=21600",
                                     "99;w=21600", "98;w=21600", "97;w=21600"])
        c = self.hub.counters()
        self.assertEqual((c["manifest_get"], c["manifest_head"]), (3, 3))
        self.assertEqual(c["manifest_get_by_ref"], {"library/alpine:3.22": 1,
                                                    "library/alpine@" + child: 1,
                                                    "library/alpine:latest": 1})
        self.assertEqual(c["manifest_get_by_repo"], {"library/alpine": 3})
        self.assertEqual(c["sources"]["127.0.0.1"], {"used": 3, "limit": 100,
                                                     "remaining": 97})

    def test_manifest_headers_match_content(self):
        tok = self.hub.token("alpine")
        g = self.group("alpine", "3.22")
        for method in ("HEAD", "GET"):
            status, headers, _ = self.manifest("alpine", "3.22", tok, method)
            self.assertEqual(status, 200)
            self.assertEqual(headers["Content-Type"], ld.OCI_INDEX)
            self.assertEqual(headers["Docker-Content-Digest"], g["index"]["digest"])
            self.assertEqual(int(headers["Content-Length"]), g["index"]["size"])
            self.assertEqual(headers["docker-ratelimit-source"], "127.0.0.1")
            self.assertEqual(headers["ratelimit-limit"], "100;w=21600")

    def test_ratelimit_header_variants(self):
        self.hub.config(ratelimit_prefix="x-", window=3600)
        status, headers, _ = self.manifest("alpine", "3.22", self.hub.token("alpine"), "HEAD")
        self.assertEqual(headers["x-ratelimit-limit"], "100;w=3600")
        self.assertEqual(headers["x-ratelimit-remaining"], "100;w=3600")
        self.assertIsNone(headers["ratelimit-limit"])
        # A paid account: no ratelimit headers at all, only the source.
        tok = self.hub.token("alpine", user="bob", password="builder")
        for _ in range(3):
            status, headers, _ = self.manifest("alpine", "3.22", tok)
            self.assertEqual(status, 200)
            self.assertEqual(headers["docker-ratelimit-source"], "bob")
            self.assertIsNone(headers["x-ratelimit-limit"])
        self.assertEqual(self.hub.counters()["sources"]["bob"]["remaining"], None)

    def test_quota_gives_dockers_429_and_window_reset_restores(self):
        self.hub.config(limit=2)
        tok = self.hub.token("alpine")
        self.assertEqual(self.manifest("alpine", "3.22", tok)[0], 200)
        self.assertEqual(self.manifest("alpine", "3.21", tok)[0], 200)
        status, headers, body = self.manifest("alpine", "3.22", tok)
        self.assertEqual(status, 429)
        self.assertEqual(json.loads(body)["errors"][0]["code"], "TOOMANYREQUESTS")
        self.assertEqual(json.loads(body)["errors"][0]["message"], ANON_429)
        self.assertIsNone(headers["Retry-After"])
        self.assertEqual(headers["ratelimit-remaining"], "0;w=21600")
        # HEAD still answers (and tells the budget is gone); a user has its own budget.
        status, headers, _ = self.manifest("alpine", "3.22", tok, "HEAD")
        self.assertEqual((status, headers["ratelimit-remaining"]), (200, "0;w=21600"))
        alice = self.hub.token("alpine", user="alice", password="wonderland")
        self.assertEqual(self.manifest("alpine", "3.22", alice)[0], 200)
        c = self.hub.counters()
        self.assertEqual((c["manifest_get"], c["denied_429"]), (3, 1))
        self.hub.reset_window("127.0.0.1")
        status, headers, _ = self.manifest("alpine", "3.22", tok)
        self.assertEqual((status, headers["ratelimit-remaining"]), (200, "1;w=21600"))
        self.assertEqual(self.hub.counters()["sources"]["alice"]["used"], 1)

    def test_window_ends_by_itself(self):
        self.hub.config(limit=1, window=1)
        tok = self.hub.token("alpine")
        self.assertEqual(self.manifest("alpine", "3.22", tok)[0], 200)
        self.assertEqual(self.manifest("alpine", "3.22", tok)[0], 429)
        time.sleep(1.1)
        status, headers, _ = self.manifest("alpine", "3.22", tok)
        self.assertEqual((status, headers["ratelimit-limit"]), (200, "1;w=1"))

    def test_query_parameters_are_ignored(self):
        tok = self.hub.token("alpine")
        status, headers, _ = self.get("GET", "/v2/library/alpine/manifests/3.22?ns=docker.io",
                                      tok)
        self.assertEqual(status, 200)
        self.assertEqual(headers["Docker-Content-Digest"],
                         self.group("alpine", "3.22")["index"]["digest"])
        self.assertEqual(self.hub.counters()["manifest_get_by_ref"],
                         {"library/alpine:3.22": 1})
        entry = self.hub.requests()[-1]
        self.assertEqual((entry["query"], entry["counted"]), ({"ns": ["docker.io"]}, True))

    def test_token_announced_longer_than_it_lives(self):
        self.hub.config(token_ttl=1, token_expires_in=300)
        status, _, body = request("GET", self.hub.url + "/token?scope=repository:library/"
                                  "alpine:pull")
        tok = json.loads(body)
        self.assertEqual(tok["expires_in"], 300)
        claims = json.loads(base64.urlsafe_b64decode(tok["token"].split(".")[1] + "=="))
        self.assertEqual(claims["exp"] - claims["iat"], 1)

    def test_credentials_required_when_anonymous_is_off(self):
        self.hub.config(anonymous=False)
        with self.assertRaises(Exception) as cm:
            self.hub.token("alpine")
        self.assertEqual(cm.exception.code, 401)
        self.hub.token("alpine", user="alice", password="wonderland")
        c = self.hub.counters()
        self.assertEqual((c["token_requests"], c["token_denied"]), (2, 1))
        self.assertEqual(self.hub.token_requests(),
                         [("alice", ["repository:library/alpine:pull"])])

    def test_basic_auth_instead_of_tokens(self):
        self.hub.config(auth="basic")
        status, headers, _ = self.get("GET", "/v2/library/alpine/manifests/3.22")
        self.assertEqual((status, headers["WWW-Authenticate"]),
                         (401, 'Basic realm="registry.docker.io"'))
        status, headers, _ = self.get("GET", "/v2/library/alpine/manifests/3.22",
                                      headers=basic("alice", "wonderland"))
        self.assertEqual((status, headers["docker-ratelimit-source"]), (200, "alice"))
        self.assertEqual(self.get("GET", "/v2/", headers=basic("alice", "wrong"))[0], 401)
        # A token is no credential then.
        self.assertEqual(self.manifest("alpine", "3.22", self.hub.token("alpine"))[0], 401)
        c = self.hub.counters()
        self.assertEqual((c["unauthorized_401"], c["sources"]["alice"]["used"]), (3, 1))
        self.assertEqual([e["user"] for e in self.hub.requests() if e["path"].startswith("/v2")],
                         [None, "alice", None, None])

    def test_retry_after_and_a_window_started_with_pulls_used(self):
        self.hub.config(retry_after=120)
        self.hub.reset_window("127.0.0.1", used=99)
        tok = self.hub.token("alpine")
        status, headers, _ = self.manifest("alpine", "3.22", tok, "HEAD")
        self.assertEqual(headers["ratelimit-remaining"], "1;w=21600")
        self.assertEqual(self.manifest("alpine", "3.22", tok)[0], 200)
        status, headers, _ = self.manifest("alpine", "3.22", tok)
        self.assertEqual((status, headers["Retry-After"]), (429, "120"))
        self.assertEqual(self.hub.counters()["sources"]["127.0.0.1"],
                         {"used": 100, "limit": 100, "remaining": 0})
        with self.assertRaises(RuntimeError) as cm:
            self.hub.control("POST", "reset-window", {"used": 3})
        self.assertIn("400", str(cm.exception))

    def test_tag_list_pages(self):
        tok = self.hub.token("alpine")
        tags = sorted(t for r in self.pushed["repositories"] if r["name"] == "library/alpine"
                      for t in r["tags"])
        self.assertEqual(len(tags), 6)
        path = "/v2/library/alpine/tags/list?n=4"
        status, headers, body = self.get("GET", path, tok)
        self.assertEqual((status, json.loads(body)["tags"]), (200, tags[:4]))
        self.assertEqual(headers["Link"], '</v2/library/alpine/tags/list?n=4&last=%s>; '
                         'rel="next"' % tags[3])
        status, headers, body = self.get("GET", headers["Link"][1:].split(">")[0], tok)
        self.assertEqual((json.loads(body)["tags"], headers["Link"]), (tags[4:], None))
        self.hub.config(tags_paging="last")
        status, headers, body = self.get("GET", path, tok)
        self.assertEqual((json.loads(body)["tags"], headers["Link"]), (tags[:4], None))
        self.hub.config(tags_paging="all")
        self.assertEqual(json.loads(self.get("GET", path, tok)[2])["tags"], tags)
        self.assertEqual(self.hub.counters()["tags_list"], 4)

    def test_push_mode_takes_writes_with_push_scope(self):
        self.hub.config(push=True)
        layer = self.a_layer()
        scopes = "scope=repository:scratch/one:pull,push&scope=repository:library/alpine:pull"
        anon = json.loads(request("GET", self.hub.url + "/token?" + scopes)[2])["token"]
        status, headers, _ = self.get("POST", "/v2/scratch/one/blobs/uploads/", anon)
        self.assertEqual(status, 401)  # anonymous tokens never push
        self.assertIn('scope="repository:scratch/one:pull,push",error="insufficient_scope"',
                      headers["WWW-Authenticate"])
        tok = json.loads(request("GET", self.hub.url + "/token?" + scopes,
                                 basic("alice", "wonderland"))[2])["token"]
        status, headers, _ = self.get("POST", "/v2/scratch/one/blobs/uploads/", tok)
        self.assertEqual(status, 202)
        loc = headers["Location"]
        self.assertTrue(loc.startswith(self.hub.url + "/v2/scratch/one/blobs/uploads/"), loc)
        data = os.urandom(300000)
        u = urlsplit(loc)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        try:
            conn.request("PUT", "%s?%s&digest=%s" % (u.path, u.query, sha(data)), body=data,
                         headers={"Authorization": "Bearer " + tok,
                                  "Content-Type": "application/octet-stream"})
            self.assertEqual(conn.getresponse().status, 201)
        finally:
            conn.close()
        backend = self.hub.registry.url + "/v2/scratch/one/blobs/"
        self.assertEqual(request("HEAD", backend + sha(data))[0], 200)
        # A mount needs pull on its source too.
        mount = "/v2/scratch/one/blobs/uploads/?mount=%s&from=" % layer["digest"]
        self.assertEqual(self.get("POST", mount + "library/redis", tok)[0], 401)
        self.assertEqual(self.get("POST", mount + "library/alpine", tok)[0], 201)
        self.assertEqual(request("HEAD", backend + layer["digest"])[0], 200)
        self.assertEqual(self.hub.counters()["manifest_get"], 0)

    # -- blobs and the CDN ---------------------------------------------------------------
    def test_blob_get_redirects_to_cdn_on_another_host(self):
        tok = self.hub.token("alpine")
        layer = self.a_layer()
        loc = self.blob_location("alpine", layer["digest"], tok)
        self.assertTrue(loc.startswith(self.hub.cdn + "/registry-v2/docker/registry/v2/blobs/"
                                       "sha256/" + layer["digest"][7:9] + "/"), loc)
        self.assertEqual(urlsplit(loc).hostname, CDN_HOST)
        status, headers, body = request("GET", loc)
        self.assertEqual((status, sha(body), len(body)), (200, layer["digest"], layer["size"]))
        status, headers, body = request("GET", loc, {"Range": "bytes=10-19"})
        self.assertEqual((status, len(body)), (206, 10))
        status, headers, _ = self.get("HEAD", "/v2/library/alpine/blobs/" + layer["digest"], tok)
        self.assertEqual((status, headers["Docker-Content-Digest"], int(headers["Content-Length"])),
                         (200, layer["digest"], layer["size"]))
        c = self.hub.counters()
        self.assertEqual((c["blob_get"], c["cdn_get"], c["blob_head"], c["blob_bytes"],
                          c["auth_leaks"], c["manifest_get"]),
                         (1, 2, 1, layer["size"] + 10, 0, 0))
        missing = "sha256:" + "0" * 64
        self.assertEqual(self.get("GET", "/v2/library/alpine/blobs/" + missing, tok)[0], 404)

    def test_cdn_records_authorization_leaks_without_the_secret(self):
        tok = self.hub.token("alpine")
        loc = self.blob_location("alpine", self.a_layer()["digest"], tok)
        status, _, _ = request("GET", loc, {"Authorization": "Bearer " + tok})
        self.assertEqual(status, 200)
        c = self.hub.counters()
        self.assertEqual(c["auth_leaks"], 1)
        self.assertEqual(c["auth_leak_details"][0]["scheme"], "Bearer")
        self.assertNotIn(tok, json.dumps(c) + json.dumps(self.hub.requests()))
        # Neither the token nor the signed URL's signature shows in the access log.
        sig = re.search(r"verify=([^&]+)", loc).group(1)
        self.assertIn(urlsplit(loc).path + "?verify=-", self.hub.log())
        self.assertNotIn(sig, self.hub.log())
        self.assertNotIn(tok, self.hub.log())

    def test_cdn_refuses_tampered_urls(self):
        loc = self.blob_location("alpine", self.a_layer()["digest"], self.hub.token("alpine"))
        exp = re.search(r"verify=(\d+)-", loc).group(1)
        self.assertEqual(request("GET", loc.replace("verify=" + exp, "verify=%d"
                                                    % (int(exp) + 1)))[0], 403)
        self.assertEqual(request("GET", loc.replace("repo=library%2Falpine",
                                                    "repo=library%2Fredis"))[0], 403)

    # -- shaping and faults --------------------------------------------------------------
    def test_latency_jitter_and_spikes(self):
        tok = self.hub.token("alpine")
        self.hub.config(latency_ms=150)
        t0 = time.monotonic()
        self.manifest("alpine", "3.22", tok, "HEAD")
        self.assertGreaterEqual(time.monotonic() - t0, 0.15)
        self.hub.config(latency_ms=0, spike_rate=1.0, spike_ms=300, jitter_ms=50)
        t0 = time.monotonic()
        self.manifest("alpine", "3.22", tok, "HEAD")
        self.assertGreaterEqual(time.monotonic() - t0, 0.3)

    def test_bandwidth_cap_per_blob_response(self):
        layer = self.a_layer()
        loc = self.blob_location("alpine", layer["digest"], self.hub.token("alpine"))
        self.hub.config(bandwidth=layer["size"] * 2)
        t0 = time.monotonic()
        status, _, body = request("GET", loc)
        took = time.monotonic() - t0
        self.assertEqual((status, sha(body)), (200, layer["digest"]))
        self.assertGreaterEqual(took, 0.45)
        self.assertLess(took, 3.0)

    def test_error_rate_is_deterministic_from_the_seed(self):
        tok = self.hub.token("alpine")
        self.hub.config(error_rate=0.5, error_status=500, seed=7)

        def run():
            return [self.manifest("alpine", "3.22", tok, "HEAD")[0] for _ in range(30)]
        first = run()
        self.assertEqual(set(first), {200, 500})
        self.assertTrue(5 <= first.count(500) <= 25, first)
        self.assertEqual(self.hub.counters()["faults"]["error"], first.count(500))
        self.hub.reset_counters()
        self.assertEqual(run(), first)
        self.hub.config(seed=8)
        self.assertNotEqual(run(), first)

    def test_connection_reset_mid_body(self):
        tok = self.hub.token("alpine")
        self.hub.config(reset_rate=1.0)
        with self.assertRaises((ConnectionError, http.client.IncompleteRead)):
            self.manifest("alpine", "3.22", tok)
        loc = self.blob_location("alpine", self.a_layer()["digest"], tok)
        with self.assertRaises((ConnectionError, http.client.IncompleteRead)):
            request("GET", loc)
        self.assertEqual(self.hub.counters()["faults"]["reset"], 2)

    def test_truncated_blob(self):
        layer = self.a_layer()
        loc = self.blob_location("alpine", layer["digest"], self.hub.token("alpine"))
        self.hub.config(truncate_rate=1.0)
        with self.assertRaises(http.client.IncompleteRead) as cm:
            request("GET", loc)
        self.assertEqual(len(cm.exception.partial), layer["size"] // 2)
        self.assertEqual(cm.exception.expected, layer["size"] - layer["size"] // 2)
        self.assertEqual(self.hub.counters()["faults"]["truncate"], 1)

    def test_corrupted_blob_keeps_its_length(self):
        layer = self.a_layer()
        loc = self.blob_location("alpine", layer["digest"], self.hub.token("alpine"))
        good = request("GET", loc)[2]
        self.hub.config(corrupt_rate=1.0)
        status, headers, bad = request("GET", loc)
        self.assertEqual((status, len(bad), int(headers["Content-Length"])),
                         (200, layer["size"], layer["size"]))
        self.assertNotEqual(sha(bad), layer["digest"])
        self.assertEqual(sum(a != b for a, b in zip(good, bad)), 1)
        self.assertEqual(self.hub.counters()["faults"]["corrupt"], 1)

    def test_burst_of_abuse_429s(self):
        tok = self.hub.token("alpine")
        self.hub.config(burst_rate=1.0, burst_len=3, burst_retry_after=30)
        status, headers, body = self.manifest("alpine", "3.22", tok)
        self.assertEqual((status, headers["Retry-After"], headers["Content-Type"], body),
                         (429, "30", "text/plain", b"Too Many Requests (HAP429).\n"))
        self.hub.config(burst_rate=0.0)
        statuses = [self.manifest("alpine", "3.22", tok)[0] for _ in range(3)]
        self.assertEqual(statuses, [429, 429, 200])
        c = self.hub.counters()
        self.assertEqual((c["burst_429"], c["denied_429"], c["manifest_get"]), (3, 0, 1))

    def test_lying_content_type_keeps_the_bytes(self):
        tok = self.hub.token("alpine")
        honest = self.manifest("alpine", "3.22", tok)
        self.hub.config(manifest_content_type="text/html")
        for method in ("GET", "HEAD"):
            status, headers, body = self.manifest("alpine", "3.22", tok, method)
            self.assertEqual((status, headers["Content-Type"]), (200, "text/html"))
            self.assertEqual(headers["Docker-Content-Digest"],
                             honest[1]["Docker-Content-Digest"])
        self.assertEqual(body, b"")
        self.assertEqual(self.manifest("alpine", "3.22", tok)[2], honest[2])
        self.assertNotEqual(honest[1]["Content-Type"], "text/html")
        self.assertEqual(self.hub.counters()["faults"]["content_type"], 3)

    def test_redirect_loop_never_ends(self):
        layer = self.a_layer()
        tok = self.hub.token("alpine")
        self.hub.config(redirect_loop_rate=1.0)
        path = "/v2/library/alpine/blobs/%s" % layer["digest"]
        status, headers, _ = self.get("GET", path, tok)
        self.assertEqual((status, headers["Location"]), (307, path + "?loop=1"))
        # Once in the loop, every hop redirects again, whatever the rate says now.
        self.hub.config(redirect_loop_rate=0.0)
        for hop in range(1, 4):
            status, headers, _ = self.get("GET", path + "?loop=%d" % hop, tok)
            self.assertEqual((status, headers["Location"]), (307, path + "?loop=%d" % (hop + 1)))
        self.assertEqual(self.get("GET", path, tok)[0], 307)  # to the CDN again
        self.assertEqual(self.hub.counters()["faults"]["redirect_loop"], 1)

    def test_error_next_answers_before_auth_then_stops(self):
        self.hub.config(error_next=2, error_status=502)
        self.assertEqual([self.get("GET", "/v2/")[0] for _ in range(3)], [502, 502, 401])
        self.assertEqual(self.hub.control("GET", "config")["error_next"], 0)
        self.assertEqual(self.hub.counters()["faults"]["error"], 2)

    def test_manifest_digest_faults(self):
        tok = self.hub.token("alpine")
        index = self.group("alpine", "3.22")["index"]
        self.hub.config(manifest_fault="digest_header")
        status, headers, body = self.manifest("alpine", "3.22", tok)
        self.assertEqual(status, 200)
        self.assertEqual(headers["Docker-Content-Digest"], "sha256:" + "0" * 64)
        self.assertEqual(sha(body), index["digest"])
        self.hub.config(manifest_fault="extra_byte")
        status, headers, body = self.manifest("alpine", index["digest"], tok)
        self.assertEqual(headers["Docker-Content-Digest"], index["digest"])
        self.assertEqual((len(body), int(headers["Content-Length"])),
                         (index["size"] + 1, index["size"] + 1))
        faults = self.hub.counters()["faults"]
        self.assertEqual((faults["digest_header"], faults["extra_byte"]), (1, 1))

    def test_cdn_that_wants_credentials(self):
        tok = self.hub.token("alpine")
        loc = self.blob_location("alpine", self.a_layer()["digest"], tok)
        self.hub.config(cdn_challenge=True)
        status, headers, _ = request("GET", loc)
        self.assertEqual(status, 401)
        self.assertEqual(headers["WWW-Authenticate"],
                         'Bearer realm="%s/token",service="cdn"' % self.hub.cdn)
        self.assertEqual(request("GET", self.hub.cdn + "/token?service=cdn")[0], 200)
        self.assertEqual(self.hub.counters()["faults"]["cdn_challenge"], 2)
        self.assertEqual([(e["path"], e["status"]) for e in self.hub.requests()
                          if e["listener"] == "cdn"], [(urlsplit(loc).path, 401), ("/token", 200)])

    def test_control_api_rejects_bad_config(self):
        for bad, word in (({"no_such_knob": 1}, "no_such_knob"), ({"error_rate": 2}, "error_rate"),
                          ({"limit": "many"}, "limit"), ({"auth": "digest"}, "auth"),
                          ({"anonymous": "maybe"}, "anonymous"),
                          ({"tags_paging": "pages"}, "tags_paging")):
            with self.assertRaises(RuntimeError) as cm:
                self.hub.config(**bad)
            self.assertIn(word, str(cm.exception))
            self.assertIn("400", str(cm.exception))
        self.assertEqual(self.hub.control("GET", "config"), self.defaults)

    def test_bad_requests_and_a_dead_backend_get_clear_answers(self):
        tok = self.hub.token("alpine")
        self.assertEqual(self.get("PUT", "/v2/library/alpine/manifests/x", tok)[0], 405)
        self.assertEqual(self.get("GET", "/v2/library/alpine/blobs/sha256:zz", tok)[0], 400)
        self.assertEqual(self.get("GET", "/v2/library/Alpine/manifests/x", tok)[0], 400)
        self.assertEqual(self.get("GET", "/nothing")[0], 404)
        status, _, body = self.get("GET", "/v2/", headers={"Content-Length": "lots"})
        self.assertEqual(status, 400)
        self.assertIn(b"Content-Length", body)
        status, _, body = request("GET", self.hub.url + "/token?scope=repository:BAD:pull")
        self.assertEqual(status, 400)
        hub = Standin().start()
        try:
            hub.registry.stop()
            status, _, body = request("GET", hub.url + "/v2/library/alpine/manifests/3",
                                      {"Authorization": "Bearer " + hub.token("alpine")})
            self.assertEqual(status, 502)
            self.assertIn(b"stand-in backend", body)
        finally:
            hub.stop()

    # -- loader ----------------------------------------------------------------------
    def test_loader_index_has_attestations_after_each_image(self):
        tok = self.hub.token("alpine")
        g = self.group("alpine", "3.22")
        status, headers, body = self.manifest("alpine", "3.22", tok)
        index = json.loads(body)
        self.assertEqual(index["mediaType"], ld.OCI_INDEX)
        ms = index["manifests"]
        self.assertEqual(len(ms), 16)
        self.assertEqual([m["digest"] for m in ms], [c["digest"] for c in g["children"]])
        for image, att in zip(ms[0::2], ms[1::2]):
            self.assertNotEqual(image["platform"]["os"], "unknown")
            self.assertEqual(image["annotations"]["org.opencontainers.image.version"], "3.22.1")
            self.assertEqual(att["platform"], {"architecture": "unknown", "os": "unknown"})
            self.assertEqual(att["annotations"]["vnd.docker.reference.type"],
                             "attestation-manifest")
            self.assertEqual(att["annotations"]["vnd.docker.reference.digest"], image["digest"])
            self.assertEqual(att["annotations"]["com.docker.official-images.bashbrew.arch"],
                             image["annotations"]["com.docker.official-images.bashbrew.arch"])
            _, _, body = self.manifest("alpine", att["digest"], tok)
            self.assertEqual(sha(body), att["digest"])
            am = json.loads(body)
            types = [lay["annotations"]["in-toto.io/predicate-type"] for lay in am["layers"]]
            self.assertEqual({lay["mediaType"] for lay in am["layers"]}, {ld.IN_TOTO})
            self.assertEqual(types[0], ld.SLSA)
            self.assertEqual(len(types), 2 if att["annotations"][
                "com.docker.official-images.bashbrew.arch"] in ld.SBOM_ARCHES else 1)
        self.assertEqual([m["platform"].get("variant") for m in ms[0::2]],
                         [None, "v6", "v7", "v8", None, None, None, None])

    def test_loader_windows_and_shared_groups(self):
        tok = self.hub.token("hello-world")
        lists = {}
        for tag in ("linux", "nanoserver-ltsc2025", "nanoserver-ltsc2022", "latest",
                    "nanoserver"):
            status, headers, body = self.manifest("hello-world", tag, tok)
            self.assertEqual(status, 200)
            lists[tag] = json.loads(body)
            self.assertEqual(headers["Content-Type"], lists[tag]["mediaType"])
        self.assertEqual(lists["nanoserver-ltsc2022"]["mediaType"], ld.DOCKER_LIST)
        win = lists["nanoserver-ltsc2022"]["manifests"]
        self.assertEqual(len(win), 1)
        self.assertEqual(win[0]["mediaType"], ld.DOCKER_MANIFEST)
        self.assertEqual(win[0]["platform"], {"architecture": "amd64", "os": "windows",
                                              "os.version": "10.0.20348.3807"})
        self.assertEqual(lists["nanoserver"]["mediaType"], ld.DOCKER_LIST)

        def digests(tag):
            return [m["digest"] for m in lists[tag]["manifests"]]
        # Shared indexes combine the very same children as their entries' indexes.
        self.assertEqual(lists["latest"]["mediaType"], ld.OCI_INDEX)
        self.assertEqual(digests("latest"), digests("linux") + digests("nanoserver-ltsc2025")
                         + digests("nanoserver-ltsc2022"))
        self.assertEqual(digests("nanoserver"),
                         digests("nanoserver-ltsc2025") + digests("nanoserver-ltsc2022"))
        self.assertEqual(len(lists["latest"]["manifests"]), 8)
        _, headers, body = self.manifest("hello-world", win[0]["digest"], tok)
        self.assertEqual(json.loads(body)["mediaType"], ld.DOCKER_MANIFEST)
        self.assertEqual(json.loads(body)["layers"][0]["mediaType"], ld.DOCKER_LAYER)

    def test_loader_shares_base_layers_across_tags_and_repositories(self):
        def layers(repo, tag, arch):
            c = next(c for c in self.group(repo, tag)["children"]
                     if c["arch"] == arch and c["kind"] == "image")
            return [b["digest"] for b in c["blobs"] if "layer" in b["mediaType"]]
        alpine = layers("alpine", "3.22", "amd64")
        alpine_old = layers("alpine", "3.21", "amd64")
        redis_alpine = layers("redis", "alpine", "amd64")
        redis = layers("redis", "8.2", "amd64")
        hello = layers("hello-world", "linux", "amd64")
        # base layer first, then one per repository, then one per entry
        self.assertEqual(alpine[0], redis_alpine[0])
        self.assertEqual(alpine[0], alpine_old[0])
        self.assertEqual(alpine[1], alpine_old[1])
        self.assertEqual(redis[0], hello[0])
        self.assertNotEqual(redis[0], alpine[0])
        self.assertEqual(redis[1], redis_alpine[1])
        self.assertEqual(len({alpine[2], alpine_old[2], redis_alpine[2], redis[2], hello[2]}), 5)
        self.assertNotEqual(layers("alpine", "3.22", "arm64v8")[0], alpine[0])
        t = self.pushed["totals"]
        self.assertEqual((t["tags"], t["indexes"], t["manifests"]), (18, 9, 38))
        self.assertEqual(t["manifest_gets_min"], 47)
        self.assertLess(t["blobs"], t["blob_refs"])
        self.assertEqual(ld.totals(self.pushed, ["alpine"])["manifest_gets_min"], 2 + 16 + 4)

    def test_loader_layers_are_real_tar_gzip(self):
        tok = self.hub.token("redis")
        image = self.group("redis", "8.2")["children"][0]
        config = json.loads(self.fetch_blob("redis", image["blobs"][0]["digest"], tok))
        self.assertEqual((config["os"], config["architecture"]), ("linux", "amd64"))
        diff_ids = []
        for b in image["blobs"][1:]:
            raw = gzip.decompress(self.fetch_blob("redis", b["digest"], tok))
            diff_ids.append(sha(raw))
            with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
                self.assertEqual(tf.getmembers()[0].size, LAYER_SIZE)
        self.assertEqual(config["rootfs"]["diff_ids"], diff_ids)

    def fetch_blob(self, repo, digest, tok):
        status, _, body = request("GET", self.blob_location(repo, digest, tok))
        self.assertEqual((status, sha(body)), (200, digest))
        return body

    def test_loader_is_idempotent_and_api_mode_matches(self):
        again = ld.Loader(self.hub.registry.url, layer_size=LAYER_SIZE).load(CATALOG,
                                                                             ["hello-world"])
        self.assertEqual(again["push"]["uploads"], 0)
        self.assertEqual(again["push"]["already_present"], again["push"]["heads"])
        # Through the registry API (HEAD, mount, upload) into another registry: same digests.
        other = Registry().start()
        try:
            api = ld.Loader(other.url, layer_size=LAYER_SIZE, jobs=4).load(CATALOG,
                                                                           ["hello-world", "redis"])
        finally:
            other.stop()
        mine = {r["name"]: r["tags"] for r in self.pushed["repositories"]}
        for r in api["repositories"]:
            self.assertEqual(r["tags"], mine[r["name"]])
        self.assertEqual(api["push"]["uploads"], api["totals"]["blobs"])
        self.assertEqual(api["push"]["mounts"], api["totals"]["blob_refs"] - api["totals"]["blobs"])
        self.assertGreater(api["push"]["mounts"], 0)

    def test_loader_rejects_bad_catalogs_saying_where(self):
        def bad(change):
            cat = json.loads(json.dumps(CATALOG))
            change(cat["repositories"][2]["groups"])
            with self.assertRaises(ld.LoaderError) as cm:
                ld.read_catalog(cat)
            return str(cm.exception)
        msg = bad(lambda gs: gs[0].update(platforms=["linux/sparc"]))
        self.assertIn("repositories[2] (library/hello-world) groups[0]", msg)
        self.assertIn("linux/sparc", msg)
        msg = bad(lambda gs: gs[3].update(entries=["linux", "gone"]))
        self.assertIn("'gone'", msg)
        self.assertIn("bad tag!", bad(lambda gs: gs[0]["tags"].append("bad tag!")))
        self.assertIn("twice", bad(lambda gs: gs[1]["tags"].append("linux")))
        with self.assertRaises(ld.LoaderError) as cm:
            ld.read_catalog(CATALOG, ["nginx"])
        self.assertIn("library/nginx", str(cm.exception))

    def test_rebuild_moves_tags_to_new_content(self):
        hub = Standin().start()
        try:
            first = hub.load(CATALOG, ["hello-world"])
            tags = first["repositories"][0]["tags"]
            out = hub.rebuild("hello-world:linux")
            changed = {tuple(c["tags"]): c for c in out["changed"]}
            self.assertEqual(set(changed), {("linux",), ("latest",)})
            self.assertEqual(changed[("linux",)]["old"], tags["linux"])
            new_tags = out["repositories"][0]["tags"]
            self.assertNotEqual(new_tags["linux"], tags["linux"])
            self.assertEqual(new_tags["nanoserver"], tags["nanoserver"])
            # New: per image its entry layer, config, provenance and attestation config,
            # plus an SBOM for amd64 and arm64; base and repository layers stay.
            self.assertEqual(out["push"]["uploads"], 3 * 4 + 2)
            tok = hub.token("hello-world")
            status, headers, body = request("GET", hub.url + "/v2/library/hello-world/manifests/"
                                            "latest", {"Authorization": "Bearer " + tok})
            self.assertEqual(sha(body), changed[("latest",)]["new"])
            old = changed[("latest",)]["old"]
            self.assertEqual(request("HEAD", hub.url + "/v2/library/hello-world/manifests/" + old,
                                     {"Authorization": "Bearer " + tok})[0], 200)
        finally:
            hub.stop()

    def test_loader_reads_the_coordinator_catalog(self):
        repos = "alpine,busybox,debian,hello-world,httpd,memcached,nginx,postgres,redis,ubuntu"
        catalog = programs.catalog(repos.split(","))
        hub = Standin().start()
        try:
            t0 = time.time()
            pushed = hub.load(catalog)
            took = time.time() - t0
            t = pushed["totals"]
            linux = sum(1 for r in catalog["repositories"] for g in r["groups"]
                        if g["kind"] == "tags" for pl in g["platforms"]
                        if pl.startswith("linux/"))
            self.assertEqual(t["tags"], catalog["totals"]["tags"])
            self.assertEqual(t["manifests"], catalog["totals"]["entry_platforms"] + linux)
            self.assertLessEqual(t["indexes"], catalog["totals"]["groups"])
            self.assertLess(took, 20.0)
            # As on Docker Hub (docker-hub-facts.md 3.5, 4.3): hello-world:latest is an OCI
            # index of 9 Linux images, 9 attestations and 2 Windows images;
            # hello-world:nanoserver a Docker list of 2; alpine:3.24 an index of 16.
            tok = hub.token("hello-world", "alpine")
            for ref, media_type, n in (("hello-world:latest", ld.OCI_INDEX, 20),
                                       ("hello-world:nanoserver", ld.DOCKER_LIST, 2),
                                       ("alpine:3.24", ld.OCI_INDEX, 16)):
                status, _, body = request("GET", "%s/v2/library/%s/manifests/%s" % (
                    hub.url, *ref.split(":")), {"Authorization": "Bearer " + tok})
                index = json.loads(body)
                self.assertEqual((status, index["mediaType"], len(index["manifests"])),
                                 (200, media_type, n), ref)
        finally:
            hub.stop()

    def test_loader_command_line(self):
        other = Registry().start()
        tmp = tempfile.mkdtemp(prefix="hubsync-loader-")
        try:
            cat = os.path.join(tmp, "catalog.json")
            with open(cat, "w") as f:
                json.dump(CATALOG, f)
            cli = [sys.executable, os.path.join(ROOT, "tests", "standin", "loader.py")]
            p = subprocess.run(cli + ["load", "--registry", other.url, "--catalog", cat,
                                      "--repos", "alpine", "--out", os.path.join(tmp, "s.json"),
                                      "--storage", other.storage],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("6 tags, 2 indexes, 20 child manifests", p.stderr)
            p = subprocess.run(cli + ["rebuild", "--state", os.path.join(tmp, "s.json"),
                                      "--group", "alpine:3.21"],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            out = json.loads(p.stdout)
            self.assertEqual([c["tags"] for c in out["changed"]], [["3.21.4", "3.21"]])
            p = subprocess.run(cli + ["load", "--registry", other.url, "--catalog", cat,
                                      "--repos", "nginx"], capture_output=True, text=True,
                               timeout=60)
            self.assertEqual(p.returncode, 1)
            self.assertIn("loader: catalog: no repository library/nginx", p.stderr)
        finally:
            other.stop()
            shutil.rmtree(tmp, ignore_errors=True)

    def test_standin_command_line_starts_its_own_registry(self):
        tmp = tempfile.mkdtemp(prefix="hubsync-standin-cli-")
        p = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "standin", "standin.py"),
                              "--registry-data", tmp, "--cdn-port",
                              str(free_port_on(CDN_HOST)), "--limit", "7"],
                             stdout=subprocess.PIPE, text=True)
        try:
            info = json.loads(p.stdout.readline())
            self.assertEqual(set(info), {"registry", "cdn", "backend"})
            status, headers, _ = request("GET", info["registry"] + "/v2/")
            self.assertEqual(status, 401)
            status, _, body = request("GET", info["registry"] + "/_standin/config")
            self.assertEqual(json.loads(body)["limit"], 7)
            status, _, body = request("GET", info["registry"] + "/_standin/info")
            self.assertEqual(json.loads(body), info)
            self.assertEqual(request("GET", info["backend"] + "/v2/")[0], 200)
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=20)
            p.stdout.close()
        with self.assertRaises(OSError):
            request("GET", info["backend"] + "/v2/")
        shutil.rmtree(tmp, ignore_errors=True)
        for bad, word in ((["--user", "alice"], "NAME:PASSWORD"), (["--error-rate", "3"],
                                                                   "error_rate")):
            p = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "standin",
                                                             "standin.py"),
                                "--backend", "http://127.0.0.1:1"] + bad,
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(p.returncode, 2)
            self.assertIn(word, p.stderr)

    def test_restart_forgets_tokens_and_counters(self):
        tok = self.hub.token("alpine")
        self.assertEqual(self.manifest("alpine", "3.22", tok)[0], 200)
        port = self.hub.port
        self.hub.restart()
        self.assertEqual(self.hub.port, port)
        self.assertEqual(self.hub.counters()["manifest_get"], 0)
        self.assertEqual(self.manifest("alpine", "3.22", tok)[0], 401)
        self.assertEqual(self.manifest("alpine", "3.22", self.hub.token("alpine"))[0], 200)

    # -- a real client -----------------------------------------------------------------
    def skopeo(self, ref, *extra):
        dest = tempfile.mkdtemp(prefix="hubsync-skopeo-")
        self.addCleanup(shutil.rmtree, dest, True)
        p = subprocess.run(["skopeo", "--debug", "copy", "--all", "--src-tls-verify=false"]
                           + list(extra) + ["docker://%s/library/%s" % (self.hub.host, ref),
                                            "dir:" + os.path.join(dest, "img")],
                           capture_output=True, text=True, timeout=120)
        calls = re.findall(r'msg="(GET|HEAD) (http://[^"\s]+/manifests/[^"\s]+)"', p.stderr)
        return p, calls, os.path.join(dest, "img")

    def test_skopeo_copy_all_counts_exactly_its_manifest_gets(self):
        p, calls, dest = self.skopeo("alpine:3.22")
        self.assertEqual(p.returncode, 0, p.stderr[-3000:])
        gets = ["library" + urlsplit(u).path.split("/library", 1)[1] for m, u in calls
                if m == "GET"]
        heads = [u for m, u in calls if m == "HEAD"]
        c = self.hub.counters()
        self.assertEqual(c["manifest_get"], len(gets))
        self.assertEqual(c["manifest_head"], len(heads))
        by_ref = {}
        for g in gets:
            name, ref = g.split("/manifests/")
            key = name + ("@" if ref.startswith("sha256:") else ":") + ref
            by_ref[key] = by_ref.get(key, 0) + 1
        self.assertEqual(c["manifest_get_by_ref"], by_ref)
        counted = [e for e in self.hub.requests() if e["counted"]]
        self.assertEqual(len(counted), len(gets))
        self.assertTrue(all(e["method"] == "GET" and "/manifests/" in e["path"] for e in counted))
        # skopeo fetched each manifest once: the index plus its 16 children.
        g = self.group("alpine", "3.22")
        self.assertEqual(len(gets), 1 + len(g["children"]))
        self.assertEqual(c["sources"]["127.0.0.1"]["used"], len(gets))
        self.assertEqual(c["auth_leaks"], 0)
        self.assertEqual(c["cdn_get"], c["blob_get"])
        # what skopeo wrote is what the loader pushed
        self.assertEqual(sorted(f for f in os.listdir(dest) if f != "version"),
                         sorted({"manifest.json"} | {c["digest"][7:] + ".manifest.json"
                                                     for c in g["children"]}
                                | {b["digest"][7:] for b in g["blobs"]}))
        for b in g["blobs"]:
            with open(os.path.join(dest, b["digest"][7:]), "rb") as f:
                self.assertEqual(sha(f.read()), b["digest"])
        self.assertEqual(c["blob_bytes"], sum(b["size"] for b in g["blobs"]))

    def test_skopeo_with_credentials_is_accounted_to_the_user(self):
        p, calls, _ = self.skopeo("redis:alpine", "--src-creds", "alice:wonderland")
        self.assertEqual(p.returncode, 0, p.stderr[-3000:])
        self.assertNotIn("wonderland", self.hub.log())
        c = self.hub.counters()
        gets = [u for m, u in calls if m == "GET"]
        self.assertEqual(c["sources"]["alice"]["used"], len(gets))
        self.assertEqual(len(gets), 5)
        self.assertNotIn("127.0.0.1", c["sources"])

    def test_skopeo_waits_out_the_pull_limit(self):
        # skopeo backs off on a 429 (2 s, 4 s, ...); a new, larger window during its first
        # sleep lets it finish. Refused GETs are not counted, as on Docker Hub since 2022.
        self.hub.config(limit=3)
        dest = tempfile.mkdtemp(prefix="hubsync-skopeo-")
        self.addCleanup(shutil.rmtree, dest, True)
        p = subprocess.Popen(["skopeo", "--debug", "copy", "--all", "--src-tls-verify=false",
                              "docker://%s/library/alpine:3.22" % self.hub.host,
                              "dir:" + os.path.join(dest, "img")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 30
        while self.hub.counters()["denied_429"] == 0 and time.time() < deadline:
            time.sleep(0.05)
        self.hub.config(limit=100)
        self.hub.reset_window()
        _, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 0, err[-3000:])
        retries = err.count("Too many requests to ")
        gets = len(re.findall(r'msg="GET http://[^"\s]+/manifests/', err))
        c = self.hub.counters()
        why = "%s\n%s" % (json.dumps(c), err[-3000:])
        # One refusal, unless this machine stalled the test past skopeo's first retry.
        self.assertGreaterEqual(retries, 1, why)
        self.assertEqual(c["denied_429"], retries, why)
        self.assertEqual(c["manifest_get"], gets - retries, why)
        self.assertEqual(c["manifest_get"], 1 + len(self.group("alpine", "3.22")["children"]),
                         why)
        self.assertEqual(c["sources"]["127.0.0.1"]["used"], c["manifest_get"] - 3, why)

    def test_podman_pulls_and_unpacks_one_platform(self):
        # podman checks every layer against the config's diff_ids while unpacking.
        tmp = tempfile.mkdtemp(prefix="hubsync-podman-")
        self.addCleanup(shutil.rmtree, tmp, True)
        podman = ["podman", "--root", os.path.join(tmp, "root"), "--runroot",
                  os.path.join(tmp, "run"), "--storage-driver", "vfs"]
        p = subprocess.run(podman + ["pull", "--tls-verify=false", "--arch", "arm64",
                                     "%s/library/redis:8.2" % self.hub.host],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr[-3000:])
        image = next(c for c in self.group("redis", "8.2")["children"]
                     if c["arch"] == "arm64v8" and c["kind"] == "image")
        self.assertEqual(p.stdout.strip(), image["blobs"][0]["digest"][7:])
        c = self.hub.counters()
        self.assertEqual(c["manifest_get_by_ref"], {"library/redis:8.2": 1,
                                                    "library/redis@" + image["digest"]: 1})
        self.assertEqual(c["auth_leaks"], 0)

    def test_loading_is_fast(self):
        # 3 repositories, 18 tags: the whole class fixture loads in well under a few seconds.
        self.assertLess(self.load_seconds, 10.0)


class StorageBackendTest(unittest.TestCase):
    """direct_reads: the stand-in answers reads from the backend's storage files
    (standin/storage.py) with what the backend docker-registry itself answers."""

    @classmethod
    def setUpClass(cls):
        cls.hub = Standin(direct_reads=True).start()
        cls.pushed = cls.hub.load(CATALOG, layer_size=LAYER_SIZE)

    @classmethod
    def tearDownClass(cls):
        cls.hub.stop()

    def storage(self):
        """(Storage over the hub's backend, [paths it sent on to the registry])."""
        reg = self.hub.registry
        st = Storage(self.hub.storage, reg.url)
        sent, send = [], st.registry.request

        def counted(method, path, body=None, headers=None):
            sent.append(path)
            return send(method, path, body=body, headers=headers)
        st.registry.request = counted
        return st, sent

    def answers(self, backend, method, path, headers=None):
        r = backend.request(method, path, headers=dict(ALL_MANIFESTS if "/manifests/" in
                                                       path else {}, **(headers or {})))
        body = r.read()
        if r.status == 200 and path.endswith("/tags/list"):
            # The stand-in sorts the list; the registry keeps directory order.
            doc = json.loads(body)
            body = (doc["name"], sorted(doc["tags"]))
        return (r.status, body if r.status == 200 else b"",
                {k: r.getheader(k) for k in ("Content-Type", "Docker-Content-Digest",
                                             "Content-Length", "Content-Range")
                 if r.status == 200})

    def test_reads_match_the_registry_and_never_reach_it(self):
        st, sent = self.storage()
        reg = KeepAlive("127.0.0.1", self.hub.registry.port)
        paths = []
        for r in self.pushed["repositories"]:
            name = r["name"]
            paths.append(("GET", "/v2/%s/tags/list" % name))
            for tag, digest in r["tags"].items():
                paths += [(m, "/v2/%s/manifests/%s" % (name, ref))
                          for m in ("GET", "HEAD") for ref in (tag, digest)]
            for g in r["groups"]:
                for child in g.get("children", []):
                    paths.append(("GET", "/v2/%s/manifests/%s" % (name, child["digest"])))
                    for b in child["blobs"]:
                        paths += [(m, "/v2/%s/blobs/%s" % (name, b["digest"]))
                                  for m in ("GET", "HEAD")]
        self.assertGreater(len(paths), 100)
        for method, path in paths:
            with self.subTest(method=method, path=path):
                self.assertEqual(self.answers(st, method, path),
                                 self.answers(reg, method, path))
        self.assertEqual(sent, [])

    def test_misses_and_ranges_are_the_registrys_answers(self):
        st, sent = self.storage()
        reg = KeepAlive("127.0.0.1", self.hub.registry.port)
        layer = self.pushed["repositories"][0]["groups"][0]["children"][0]["blobs"][-1]
        paths = [("GET", "/v2/library/alpine/manifests/no-such-tag", None),
                 ("GET", "/v2/library/alpine/manifests/sha256:" + "0" * 64, None),
                 ("GET", "/v2/library/alpine/manifests/..", None),
                 ("GET", "/v2/library/nope/tags/list", None),
                 ("HEAD", "/v2/library/alpine/blobs/sha256:" + "1" * 64, None),
                 ("GET", "/v2/library/alpine/blobs/" + layer["digest"], {"Range": "bytes=0-9"})]
        for method, path, headers in paths:
            with self.subTest(path=path):
                got = self.answers(st, method, path, headers)
                self.assertEqual(got, self.answers(reg, method, path, headers))
                self.assertNotEqual(got[0], 200 if headers is None else 0)
        self.assertEqual(sent, [p for _, p, _ in paths])

    def test_a_rebuild_is_served_at_once_and_counted(self):
        hub = Standin(direct_reads=True).start()
        self.addCleanup(hub.stop)
        first = hub.load(CATALOG, ["hello-world"])["repositories"][0]["tags"]["linux"]
        new = hub.rebuild("hello-world:linux")["repositories"][0]["tags"]["linux"]
        self.assertNotEqual(first, new)
        tok = hub.token("hello-world")
        status, headers, body = request("GET", hub.url + "/v2/library/hello-world/manifests/"
                                        "linux", {"Authorization": "Bearer " + tok})
        self.assertEqual((status, headers["Docker-Content-Digest"], sha(body)), (200, new, new))
        self.assertEqual(hub.counters()["manifest_get"], 1)


class LayoutTest(unittest.TestCase):
    """standin/layout.py, the storage paths the loader, the storage backend and the benchmark
    share, against a real docker-registry both ways: it serves what layout writes, and where
    it writes, layout names the files."""

    def setUp(self):
        self.reg = Registry().start()
        self.addCleanup(self.reg.stop)
        self.root = self.reg.storage

    def get(self, method, path):
        return request(method, self.reg.url + path,
                       dict(ALL_MANIFESTS) if "/manifests/" in path else {})

    def test_the_registry_serves_what_layout_writes(self):
        blob = b"layer bytes"
        layout.write_atomic(layout.blob_data(self.root, sha(blob)), blob)
        layout.write_link(layout.layer_link(self.root, "library/w", sha(blob)), sha(blob))
        index = ld._canon({"schemaVersion": 2, "mediaType": ld.OCI_INDEX, "manifests": []})
        tagged = layout.put_manifest(self.root, "library/w", index, "v1")
        untagged = layout.put_manifest(self.root, "library/w", index + b" ")
        self.assertEqual(tagged, sha(index))
        status, headers, body = self.get("GET", "/v2/library/w/blobs/" + sha(blob))
        self.assertEqual((status, body), (200, blob))
        for ref, digest in (("v1", tagged), (tagged, tagged), (untagged, untagged)):
            status, headers, body = self.get("GET", "/v2/library/w/manifests/" + ref)
            self.assertEqual((status, headers["Docker-Content-Digest"], sha(body)),
                             (200, digest, digest))
        status, _, body = self.get("GET", "/v2/library/w/tags/list")
        self.assertEqual((status, json.loads(body)["tags"]), (200, ["v1"]))

    def test_layout_names_what_the_registry_writes(self):
        pushed = ld.Loader(self.reg.url, layer_size=LAYER_SIZE, jobs=4).load(CATALOG,
                                                                             ["hello-world"])
        links = []
        for r in pushed["repositories"]:
            name = r["name"]
            self.assertEqual(sorted(os.listdir(layout.tags_dir(self.root, name))),
                             sorted(r["tags"]))
            for tag, digest in r["tags"].items():
                links += [(layout.tag_current_link(self.root, name, tag), digest),
                          (layout.tag_index_link(self.root, name, tag, digest), digest)]
            for g in r["groups"]:
                links += [(layout.revision_link(self.root, name, d), d)
                          for d in [g["index"]["digest"]] + [c["digest"] for c in g["children"]]]
                links += [(layout.layer_link(self.root, name, b["digest"]), b["digest"])
                          for b in g["blobs"]]
        self.assertGreater(len(links), 20)
        for path, digest in links:
            with self.subTest(path=path):
                with open(path, "rb") as f:
                    self.assertEqual(f.read(), digest.encode())
                with open(layout.blob_data(self.root, digest), "rb") as f:
                    self.assertEqual(sha(f.read()), digest)


class MemoryStandinTest(unittest.TestCase):
    """The stand-in over in-memory content the test adds itself: what no registry would
    take (bytes that are no manifest) or hold (a blob generated as it is read), behind the
    same token flow, pull accounting and CDN."""

    def setUp(self):
        self.hub = MemoryStandin().start()
        self.addCleanup(self.hub.stop)

    def get(self, path, token, method="GET"):
        return request(method, self.hub.url + path, {"Authorization": "Bearer " + token})

    def test_manifests_by_tag_and_digest(self):
        body = b" " * 1000  # a registry would refuse it: it is not JSON
        digest = self.hub.add_manifest("library/x", "v1", ld.OCI_INDEX, body)
        self.assertEqual(digest, sha(body))
        untagged = self.hub.add_manifest("library/x", None, ld.OCI_INDEX, b"{}")
        tok = self.hub.token("x")
        for ref in ("v1", digest):
            status, headers, got = self.get("/v2/library/x/manifests/" + ref, tok)
            self.assertEqual((status, got, headers["Docker-Content-Digest"],
                              headers["Content-Type"]), (200, body, digest, ld.OCI_INDEX))
        self.assertEqual(self.get("/v2/library/x/manifests/" + untagged, tok)[:3:2], (200, b"{}"))
        status, _, got = self.get("/v2/library/x/manifests/v2", tok)
        self.assertEqual((status, json.loads(got)["errors"][0]["code"]), (404, "MANIFEST_UNKNOWN"))
        self.assertEqual(json.loads(self.get("/v2/library/x/tags/list", tok)[2])["tags"], ["v1"])
        self.assertEqual(self.get("/v2/library/y/tags/list", self.hub.token("y"))[0], 404)
        c = self.hub.counters()
        self.assertEqual((c["manifest_get"], c["sources"]["127.0.0.1"]["used"]), (4, 4))

    def test_generated_blob_streams_through_the_cdn(self):
        size = (3 << 20) + 5
        blob = self.hub.add_blob(Blob(size=size, seed=3))
        self.assertEqual(blob.digest, Blob(size=size, seed=3).digest)  # the seed decides
        self.assertNotEqual(blob.digest, Blob(size=size, seed=4).digest)
        tok = self.hub.token("any/repo")  # a blob is served under every repository
        status, headers, _ = self.get("/v2/any/repo/blobs/" + blob.digest, tok)
        self.assertEqual(status, 307)
        self.assertEqual(urlsplit(headers["Location"]).hostname, CDN_HOST)
        status, _, data = request("GET", headers["Location"])
        self.assertEqual((status, len(data), sha(data)), (200, size, blob.digest))
        status, headers, _ = self.get("/v2/any/repo/blobs/" + blob.digest, tok, "HEAD")
        self.assertEqual((status, int(headers["Content-Length"])), (200, size))
        self.assertEqual(self.get("/v2/any/repo/blobs/sha256:" + "0" * 64, tok)[0], 404)
        c = self.hub.counters()
        self.assertEqual((c["blob_get"], c["cdn_get"], c["blob_bytes"]), (2, 1, size))


if __name__ == "__main__":
    unittest.main()
