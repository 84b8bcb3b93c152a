"""Security: credentials never leak, TLS is verified unless the URL says http://, tokens
never follow a redirect to another host, and no credentials go to a host that only a job
payload or another origin's challenge names.

Secrets come from every source hubsync reads them from (environment, docker config with a
credential helper, a redis:// URL with a password) and are then looked for in every log
line, every Redis key and value, and the run report, in plain, base64 and URL-encoded form.
"""
import base64
import json
import os
import shutil
import ssl
import stat
import subprocess
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

from harness import OFFICIAL_IMAGES, RedisServer, Registry, programs
from harness.redisq import QueueTool
from harness.stack import MirrorCase, Stack, dead_letters
from harness.standin import MemoryStandin, Standin
from harness.target import ACCEPT, head, pushed_tags

REPOS = ["hello-world"]
ALICE_PW = "S3cretPW-alice-7f1d"
HELPER_PW = "H3lperSecret-bob-99c2"
REDIS_PW = "R3disPass-5e0b/x@y"


class SecretRedis(RedisServer):
    """redis-server with --requirepass; cli commands authenticate."""

    def command(self):
        return super().command() + ["--requirepass", REDIS_PW]

    @property
    def url(self):
        return "redis://:%s@127.0.0.1:%d" % (urllib.parse.quote(REDIS_PW, safe=""), self.port)

    def cmd(self, *args, fmt="--raw"):
        env = dict(os.environ, REDISCLI_AUTH=REDIS_PW)
        p = subprocess.run(["redis-cli", "-p", str(self.port), fmt] + list(args), env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=30, errors="replace")
        return p.stdout

    def cli_raw(self, *args):
        return self.cmd(*args)

    def dump_all(self):
        """Every key name and value in the database, as one text."""
        out = []
        readers = {"string": ["GET"], "hash": ["HGETALL"], "set": ["SMEMBERS"],
                   "zset": ["ZRANGE", None, "0", "-1", "WITHSCORES"], "list": ["LRANGE", None,
                                                                             "0", "-1"],
                   "stream": ["XRANGE", None, "-", "+"]}
        keys = self.cmd("--scan").split()
        for k in keys:
            out.append(k)
            t = self.cmd("TYPE", k).strip()
            r = readers[t]
            args = [r[0], k] + r[2:] if len(r) > 1 else [r[0], k]
            out.append(self.cmd(*args))
        out.append(self.cmd("FUNCTION", "LIST"))
        return keys, "\n".join(out)


def forms(secret):
    """The ways a secret could be written down: plain, in Basic auth, URL-encoded."""
    return {secret, urllib.parse.quote(secret, safe=""),
            base64.b64encode(secret.encode()).decode().rstrip("=")}


class SecretsTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="hubsync-secrets-")
        self.hub = Standin(limit=1000, users=["alice:%s:100000" % ALICE_PW,
                                              "bob:%s:100000" % HELPER_PW]).start()
        self.pushed = self.hub.load(programs.catalog(REPOS))
        self.redis = SecretRedis().start()
        self.target = Registry().start()
        self.logs = []

    def tearDown(self):
        self.redis.stop()
        self.target.stop()
        self.hub.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def sync(self, env):
        """One run, every program logging at debug level to a file in self.logs, the
        report too."""
        st = Stack(REPOS, hub=self.hub, redis=self.redis, target=self.target, env=env,
                   logs=True, log_level="debug")
        self.addCleanup(st.stop)
        run = st.run(workers=1)
        self.logs += st.logs
        self.logs.append(st.log_path("report"))
        with open(self.logs[-1], "w") as f:
            f.write(run.stdout)
        self.assertEqual(run.rc, 0, run.stdout)
        for (repo, tag), digest in pushed_tags(self.pushed, REPOS).items():
            self.assertEqual(head(self.target.url, "library/" + repo, tag), digest)
        return run.report

    def assert_nowhere(self, secrets):
        keys, redis_text = self.redis.dump_all()
        self.assertIn("hubsync:run:", " ".join(keys))  # the dump did read the run
        texts = {"redis": redis_text}
        for path in self.logs:
            with open(path, errors="replace") as f:
                texts[os.path.basename(path)] = f.read()
        self.assertTrue(any("debug" in t.lower() or "DEBUG" in t for t in texts.values()))
        for where, text in texts.items():
            for s in secrets:
                for form in forms(s):
                    self.assertNotIn(form, text, "secret found in %s" % where)
            # Bearer tokens (JWTs) and Authorization headers are secrets too.
            self.assertNotIn("eyJ", text, "a token found in %s" % where)
            self.assertNotIn("Authorization: Basic", text, where)

    def test_secrets_never_leak(self):
        # 1. Credentials from the environment, Redis password in the URL.
        env = dict(os.environ, HUBSYNC_UPSTREAM_USERNAME="alice",
                   HUBSYNC_UPSTREAM_PASSWORD=ALICE_PW, DOCKER_CONFIG=self.tmp)
        self.sync(env)
        self.assertIn("alice", self.hub.counters()["sources"])
        # 2. Credentials from a docker credential helper (no environment), into a fresh
        # target so everything is copied again.
        self.target.stop()
        self.target = Registry().start()
        helper_dir = os.path.join(self.tmp, "bin")
        os.makedirs(helper_dir)
        helper = os.path.join(helper_dir, "docker-credential-hubsynctest")
        with open(helper, "w") as f:
            f.write("#!/bin/sh\nread server\nprintf '{\"ServerURL\":\"%%s\",\"Username\":"
                    "\"bob\",\"Secret\":\"%s\"}' \"$server\"\n" % HELPER_PW)
        os.chmod(helper, stat.S_IRWXU)
        with open(os.path.join(self.tmp, "config.json"), "w") as f:
            json.dump({"credHelpers": {self.hub.host: "hubsynctest"}}, f)
        env = dict(os.environ, DOCKER_CONFIG=self.tmp,
                   PATH=helper_dir + os.pathsep + os.environ["PATH"])
        env.pop("HUBSYNC_UPSTREAM_USERNAME", None)
        self.sync(env)
        c = self.hub.counters()
        self.assertIn("bob", c["sources"])
        self.assertEqual(c["auth_leaks"], 0)
        self.assertEqual(c["token_denied"], 0)
        self.assert_nowhere([ALICE_PW, HELPER_PW, REDIS_PW])

    def test_wrong_redis_password_not_echoed(self):
        bad = "redis://:%s@127.0.0.1:%d" % ("Wr0ngRedisPW", self.redis.port)
        p = subprocess.run(programs.sync(wait=False, json_report=False, redis=bad,
                                         official_images=OFFICIAL_IMAGES, upstream=self.hub,
                                         target=self.target, repos="hello-world"),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=120)
        self.assertNotEqual(p.returncode, 0)
        self.assertNotIn("Wr0ngRedisPW", p.stdout + p.stderr)
        self.assertIn("127.0.0.1:%d" % self.redis.port, p.stderr)


class ForeignRegistryJobTest(MirrorCase):
    """Jobs name registries, the worker's own configuration decides: a job naming another
    upstream or target is dead-lettered with a reason naming that URL and the option to set,
    and that host gets no request at all, let alone the credentials of the environment."""

    REPOS = REPOS

    def job(self, upstream, target):
        return json.dumps({"v": 1, "run": "r1", "key": "k", "upstream": upstream,
                           "source_repo": "library/hello-world", "target": target,
                           "target_repo": "library/hello-world", "tags": ["latest"],
                           "platforms": [], "platform_policy": "all", "reason": "check",
                           "attempt": 0})

    def test_job_naming_another_registry_is_refused(self):
        other = MemoryStandin().start()  # wants credentials, as Docker Hub does
        self.addCleanup(other.stop)
        q = QueueTool(self.redis.url, "hubsync:")
        q.one("enqueue", "other-upstream", self.job(other.url, self.target.url))
        q.one("enqueue", "other-target", self.job(self.hub.url, other.url + "/"))
        config_dir = tempfile.mkdtemp(prefix="hubsync-noconfig-")
        self.addCleanup(shutil.rmtree, config_dir, ignore_errors=True)
        env = dict(os.environ, HUBSYNC_UPSTREAM_USERNAME="alice",
                   HUBSYNC_UPSTREAM_PASSWORD=ALICE_PW, HUBSYNC_TARGET_USERNAME="bob",
                   HUBSYNC_TARGET_PASSWORD=HELPER_PW, DOCKER_CONFIG=config_dir)
        w = subprocess.run(programs.worker("--exit-when-idle", "--max-attempts", "1",
                                           "--http-retries", "0", redis=self.redis,
                                           upstream=self.hub, target=self.target),
                           capture_output=True, text=True, env=env, timeout=120)
        self.assertEqual(w.returncode, 0, w.stderr[-2000:])
        self.assertEqual(other.requests(), [])
        dead = {d["key"]: d["reason"] for d in dead_letters(self.redis)}
        self.assertEqual(set(dead), {"other-upstream", "other-target"})
        self.assertIn("upstream %s is not this worker's" % other.url, dead["other-upstream"])
        self.assertIn("--upstream", dead["other-upstream"])
        self.assertIn("target %s/ is not this worker's" % other.url, dead["other-target"])
        self.assertIn("--target", dead["other-target"])
        for text in list(dead.values()) + [w.stderr]:
            self.assertNotIn(ALICE_PW, text)
            self.assertNotIn(HELPER_PW, text)


class ForeignChallengeTest(MirrorCase):
    """Credentials go only to the realm the registry's own challenge names: a blob GET
    redirected to another origin (a CDN on the same host, another port) that answers 401
    with a realm of its own is a failure, and that realm gets nothing."""

    REPOS = REPOS
    HUB_USERS = ["alice:%s:100000" % ALICE_PW]
    HUB_OPTIONS = {"host": "127.0.0.1", "cdn_challenge": True}

    def test_cdn_challenge_gets_no_credentials(self):
        config_dir = tempfile.mkdtemp(prefix="hubsync-noconfig-")
        self.addCleanup(shutil.rmtree, config_dir, ignore_errors=True)
        s = self.stack().run(workers=1, worker_extra=["--max-attempts", "1", "--http-retries", "0"],
                             worker_env={"HUBSYNC_UPSTREAM_USERNAME": "alice",
                                         "HUBSYNC_UPSTREAM_PASSWORD": ALICE_PW,
                                         "DOCKER_CONFIG": config_dir})
        self.assertNotEqual(s.rc, 0, s.stderr)
        # The blob GETs did reach the CDN, and the hub's own realm got alice's credentials.
        cdn = [e for e in self.hub.requests() if e["listener"] == "cdn"]
        self.assertTrue(any(e["path"].startswith("/registry-v2/") for e in cdn), cdn)
        c = self.hub.counters()
        self.assertIn("alice", c["sources"])
        self.assertEqual((c["auth_leaks"], c["auth_leak_details"]), (0, []))
        self.assertEqual([e for e in cdn if e["path"] == "/token"], [])
        reasons = [d["reason"] for d in dead_letters(self.redis)]
        self.assertTrue(reasons)
        for r in reasons:
            self.assertIn("401", r)


# docker-credential-hubsynctest for HelperCacheTest: answers bob's credentials for the
# stand-in and logs each call (one JSON line). HELPER_MODE "slow": every call but the first
# sleeps 3.5 s and counts the requests the stand-in received meanwhile; "wrong-first": the
# first answer has a wrong password.
HELPER = r"""#!/usr/bin/env python3
import json, os, sys, time, urllib.request

def received():
    with urllib.request.urlopen(os.environ["HELPER_HUB"] + "/_standin/counters") as r:
        return json.load(r)["requests"]

server = sys.stdin.readline().strip()
log = os.environ["HELPER_LOG"]
calls = len(open(log).readlines()) if os.path.exists(log) else 0
entry = {"server": server, "start": time.time()}
if os.environ["HELPER_MODE"] == "slow" and calls > 0:
    time.sleep(0.5)
    entry["before"] = received()
    time.sleep(3)
    entry["after"] = received()
secret = os.environ["HELPER_SECRET"]
if os.environ["HELPER_MODE"] == "wrong-first" and calls == 0:
    secret = "wrong-" + secret
entry["end"] = time.time()
with open(log, "a") as f:
    f.write(json.dumps(entry) + "\n")
print(json.dumps({"ServerURL": server, "Username": "bob", "Secret": secret}))
"""


class HelperCacheTest(MirrorCase):
    """A credential helper runs beside the transfers, never in their way, and its answer is
    asked again once older than --cred-helper-ttl, or at once after a 401 refused it."""

    REPOS = ["hello-world", "busybox"]
    HUB_USERS = ["bob:%s:100000" % HELPER_PW]

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="hubsync-helper-")
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        bindir = os.path.join(self.tmp, "bin")
        os.makedirs(bindir)
        helper = os.path.join(bindir, "docker-credential-hubsynctest")
        with open(helper, "w") as f:
            f.write(HELPER)
        os.chmod(helper, stat.S_IRWXU)
        with open(os.path.join(self.tmp, "config.json"), "w") as f:
            json.dump({"credHelpers": {self.hub.host: "hubsynctest"}}, f)
        self.log = os.path.join(self.tmp, "helper.log")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HUBSYNC_")}
        self.env.update(DOCKER_CONFIG=self.tmp, PATH=bindir + os.pathsep + os.environ["PATH"],
                        HELPER_LOG=self.log, HELPER_HUB=self.hub.url, HELPER_SECRET=HELPER_PW)
        self.queue = QueueTool(self.redis.url, "hubsync:")
        self.workers = self.stack(env=self.env)

    def calls(self):
        if not os.path.exists(self.log):
            return []
        with open(self.log) as f:
            return [json.loads(line) for line in f]

    def enqueue(self, repo, group):
        """One job for a tag group of the stand-in; its tags, to check on the target."""
        tags = group["tags"]
        self.queue.one("enqueue", "%s:%s" % (repo, tags[0]), json.dumps({
            "v": 1, "run": "r1", "key": "%s:%s" % (repo, tags[0]), "upstream": self.hub.url,
            "source_repo": "library/" + repo, "target": self.target.url,
            "target_repo": "library/" + repo, "tags": tags, "platforms": [],
            "platform_policy": "all", "reason": "changed", "attempt": 0}))
        return [(repo, t) for t in tags]

    def groups(self, repo):
        return next(r["groups"] for r in self.pushed["repositories"]
                    if r["name"] == "library/" + repo)

    def worker(self, mode, *extra):
        return self.workers.worker("--exit-when-idle", *extra, stderr=subprocess.PIPE,
                                   text=True, env={"HELPER_MODE": mode})

    def assert_copied(self, worker, tags):
        err = worker.communicate(timeout=180)[1]
        self.assertEqual(worker.returncode, 0, err[-2000:])
        self.assertEqual(dead_letters(self.redis), [])
        want = pushed_tags(self.pushed, self.REPOS)
        for repo, tag in tags:
            self.assertEqual(head(self.target.url, "library/" + repo, tag), want[(repo, tag)])
        self.assertIn("bob", self.hub.counters()["sources"])

    def test_slow_helper_leaves_other_transfers_going_and_is_asked_again(self):
        # Every stand-in request takes 1 s: the busybox job is still copying when the helper
        # is asked again for the next job.
        self.hub.config(latency_ms=1000)
        self.addCleanup(self.hub.config, latency_ms=0)
        busy = max(self.groups("busybox"), key=lambda g: len(g["children"]))
        tags = self.enqueue("busybox", busy)
        w = self.worker("slow", "--cred-helper-ttl", "1")
        deadline = time.time() + 60
        while not self.calls():
            self.assertLess(time.time(), deadline, "the helper was never asked")
            self.assertIsNone(w.poll(), w.stderr.read() if w.poll() is not None else "")
            time.sleep(0.05)
        # Past the first answer's cache time, a job that needs the credentials comes in.
        while time.time() < self.calls()[0]["end"] + 1.2:
            time.sleep(0.05)
        tags += self.enqueue("hello-world", self.groups("hello-world")[0])
        self.assert_copied(w, tags)
        calls = self.calls()
        self.assertGreaterEqual(len(calls), 2, "the helper's answer was never asked again")
        again = calls[1]
        self.assertGreater(again["after"], again["before"],
                           "no request reached the stand-in while the helper ran: %r" % again)

    def test_refused_answer_is_asked_again_at_once(self):
        tags = self.enqueue("hello-world", self.groups("hello-world")[0])
        w = self.worker("wrong-first", "--max-attempts", "3", "--backoff-ms", "100",
                        "--http-retries", "0")
        self.assert_copied(w, tags)
        self.assertEqual(len(self.calls()), 2)
        self.assertGreater(self.hub.counters()["token_denied"], 0)


class TlsRegistry(Registry):
    """docker-registry serving HTTPS with a self-signed certificate for 127.0.0.1."""

    name = "tlsregistry"

    def __init__(self):
        super().__init__()
        self.cert = os.path.join(self.dir, "cert.pem")
        key = os.path.join(self.dir, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        key, "-out", self.cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.extra_config = "  tls:\n    certificate: %s\n    key: %s\n" % (self.cert, key)

    @property
    def url(self):
        return "https://127.0.0.1:%d" % self.port


class TlsTest(MirrorCase):
    """TLS is verified unless the URL is http://: a self-signed target is refused, and
    accepted once --ca-file names its certificate."""

    REPOS = REPOS
    TARGET = TlsRegistry

    def sync(self, worker_extra):
        st = self.stack(worker_log_level=None)
        st.coordinator()
        st.wait_enqueued()
        w = st.worker("--exit-when-idle", "--max-attempts", "1", "--http-retries", "0",
                      *worker_extra, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                      text=True)
        log = w.communicate(timeout=300)[0]
        run = st.report(timeout=120)
        return run.rc, run.report, log

    def test_self_signed_refused_then_accepted_with_ca_file(self):
        rc, report, log = self.sync([])
        self.assertEqual(rc, 1, report)
        self.assertEqual(report["jobs_done"], 0)
        self.assertEqual(report["tags_written"], 0)
        self.assertRegex(log.lower(), "certificate|ssl|tls")
        rc, report, log = self.sync(["--ca-file", self.target.cert])
        self.assertEqual(rc, 0, log)
        self.assertEqual(report["status"], "complete")
        # The content really is there, read back over verified TLS.
        ctx = ssl.create_default_context(cafile=self.target.cert)
        for (repo, tag), digest in pushed_tags(self.pushed, REPOS).items():
            req = urllib.request.Request("%s/v2/library/%s/manifests/%s" % (
                self.target.url, repo, tag), method="HEAD", headers={"Accept": ACCEPT})
            with urllib.request.urlopen(req, timeout=30, context=ctx) as r:
                self.assertEqual(r.headers["Docker-Content-Digest"], digest)


if __name__ == "__main__":
    unittest.main()
