"""Bad input of every kind gets one clear error naming what and where, no crash, and nothing
already synced is lost: flags and environment of both programs, registry URLs, official-images
sources and refs, and garbage or oversized job payloads put straight into the Redis queue."""
import json
import os
import subprocess
import time
import unittest

from harness import BIN, OFFICIAL_IMAGES, RedisServer, Registry
from harness.standin import Standin
from integration.test_sync import Sync, catalog, head, pushed_tags

COORD = BIN + "/hubsync-coordinator"
WORKER = BIN + "/hubsync-worker"


def run(cmd, env=None, timeout=60):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=timeout)


class FlagsTest(unittest.TestCase):
    def one_line_error(self, p, *words):
        self.assertEqual(p.returncode, 2, p.stderr)
        lines = [l for l in p.stderr.splitlines() if l.strip()]
        self.assertEqual(len(lines), 1, p.stderr)
        for w in words:
            self.assertIn(w, lines[0])
        self.assertNotIn("Segmentation", p.stderr)

    def test_worker_flags_and_environment(self):
        self.one_line_error(run([WORKER, "--concurrency", "0"]), "--concurrency", "out of range")
        self.one_line_error(run([WORKER, "--concurency", "4"]), "--concurency")
        self.one_line_error(run([WORKER], env={"HUBSYNC_CONCURRENCY": "many"}),
                            "HUBSYNC_CONCURRENCY", "not an integer")
        self.one_line_error(run([WORKER, "--exit-when-idle=perhaps"]), "--exit-when-idle")
        self.one_line_error(run([WORKER, "--redis", "http://127.0.0.1:6379"]), "redis")
        self.one_line_error(run([WORKER, "--log-format", "yaml"]), "--log-format")

    def test_coordinator_flags_sources_and_refs(self):
        base = [COORD, "sync", "--once", "--redis", "redis://127.0.0.1:9",
                "--official-images", OFFICIAL_IMAGES]
        self.one_line_error(run(base), "--target")
        self.one_line_error(run(base + ["--target", "ftp://example/x"]), "--target")
        self.one_line_error(run(base + ["--target", "http://127.0.0.1:5000",
                                        "--platforms", "linux/amd64"]), "--platform-policy")
        self.one_line_error(run(base + ["--target", "http://127.0.0.1:5000",
                                        "--platforms", "linux", "--platform-policy",
                                        "rewrite"]), "--platforms")
        self.one_line_error(run([COORD, "catalog", "--official-images",
                                 "/nonexistent/official-images.git"]), "/nonexistent")
        self.one_line_error(run([COORD, "catalog", "--official-images", OFFICIAL_IMAGES,
                                 "--ref", "no-such-ref"]), "no-such-ref")
        self.one_line_error(run([COORD, "catalog", "--bogus"]), "--bogus")


class QueuePayloadTest(unittest.TestCase):
    """Garbage in the job stream is dead-lettered with the reason; the good jobs still run."""

    def test_garbage_and_oversized_jobs(self):
        repos = ["hello-world"]
        hub = Standin(limit=100000).start()
        redis, target = RedisServer().start(), Registry().start()
        try:
            pushed = hub.load(catalog(repos))
            # The queue exists once a coordinator ran; enqueue the real run first.
            s = Sync(hub, redis, target, repos, workers=0)
            coord = subprocess.Popen(s.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
            deadline = time.time() + 60
            while time.time() < deadline and \
                    redis.cli_raw("EXISTS", "hubsync:jobs").strip() != "1":
                time.sleep(0.05)
            bad = {
                "not-json": "{this is not json",
                "wrong-type": json.dumps({"v": 1, "run": "x", "key": "k", "tags": "latest"}),
                "bad-url": json.dumps({"v": 1, "run": "r1", "key": "k", "upstream": "file:///etc",
                                       "source_repo": "library/x", "target": "http://t:1",
                                       "target_repo": "library/x", "tags": ["a"],
                                       "platforms": [], "platform_policy": "all",
                                       "reason": "check", "attempt": 0}),
                "oversized": json.dumps({"v": 1, "pad": "x" * 100000}),
            }
            for key, payload in bad.items():
                subprocess.run(["redis-cli", "-p", str(redis.port), "-x", "XADD",
                                "hubsync:jobs", "*", "key", "garbage:" + key, "job"],
                               input=payload, text=True, check=True, capture_output=True)
            worker = subprocess.Popen([WORKER, "--redis", redis.url, "--exit-when-idle"],
                                      stderr=subprocess.PIPE, text=True)
            out, err = coord.communicate(timeout=300)
            werr = worker.communicate(timeout=120)[1]
            self.assertEqual(worker.returncode, 0, werr[-2000:])
            self.assertNotIn("Segmentation", werr)
            report = json.loads(out)
            self.assertEqual(report["status"], "complete", err[-2000:])
            for (repo, tag), digest in pushed_tags(pushed, repos).items():
                self.assertEqual(head(target.url, "library/" + repo, tag), digest)
            p = subprocess.run(["redis-cli", "-p", str(redis.port), "-2", "--json", "XRANGE",
                                "hubsync:jobs:dead", "-", "+"], capture_output=True, text=True,
                               check=True)
            dead = {f[f.index("key") + 1]: f[f.index("reason") + 1]
                    for _, f in json.loads(p.stdout)}
            self.assertEqual(set(dead), {"garbage:" + k for k in bad})
            for key, reason in dead.items():
                self.assertIn("invalid job payload", reason, key)
            self.assertIn("upstream", dead["garbage:bad-url"])
        finally:
            redis.stop()
            target.stop()
            hub.stop()


if __name__ == "__main__":
    unittest.main()
