"""Events: each tag written, moved to a new digest or removed, and each run's end, go to the
hubsync:events stream (redis-cli XRANGE reads it) and, with `sync --webhook URL`, to a
receiver as CloudEvents JSON, in the stream's order, each once, the receiver's failures
retried."""
import http.server
import json
import signal
import subprocess
import threading
import time
import unittest

from harness import OFFICIAL_IMAGES, TIMEOUT_FACTOR
from harness.programs import catalog
from harness.stack import PREFIX, Stack
from harness.target import head, tags

REPOS = ["hello-world", "alpine"]
OLD, NEW = "22539f0~1", "22539f0"  # alpine: security bump 3.22.5 and 3.23.5


def snapshot_tags(url, repos):
    """{(target repository, tag): digest} of the registry at url."""
    out = {}
    for repo in ("library/" + r for r in repos):
        for t in tags(url, repo):
            out[(repo, t)] = head(url, repo, t)
    return out


class Receiver(http.server.HTTPServer):
    """Takes CloudEvents; answers 503 to the first POST (the sender must retry it), or to
    every one (refuse=True)."""

    def __init__(self, refuse=False):
        self.events, self.posts, self.refuse = [], 0, refuse
        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return "http://127.0.0.1:%d/hook" % self.server_address[1]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.posts += 1
        ok = self.server.posts > 1 and not self.server.refuse
        if ok:
            assert self.headers["Content-Type"] == "application/cloudevents+json"
            self.server.events.append(json.loads(body))
        self.send_response(200 if ok else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class EventsTest(unittest.TestCase):

    def setUp(self):
        # A short lease: a killed worker's jobs are taken over within the test.
        self.st = Stack(REPOS, ref=OLD, worker_log_level="warn",
                        worker_args=["--lease-ms", "3000", "--backoff-ms", "200"]).start()
        self.addCleanup(self.st.stop)
        self.rx = Receiver()
        self.addCleanup(self.rx.server_close)
        self.addCleanup(self.rx.shutdown)

    def run_sync(self):
        run = self.st.run("--webhook", self.rx.url)
        self.assertEqual(run.rc, 0, run.stderr)
        return run

    def new_events(self, since):
        evs = self.rx.events[since:]
        self.assertEqual(evs[-1]["type"], "io.hubsync.run.finished")
        for e in evs:
            self.assertEqual(e["specversion"], "1.0")
            self.assertEqual(e["source"], "hubsync")
        return evs

    def tag_events(self, evs, kind):
        return [(e["data"]["repository"], e["data"]["tag"], e["data"]["digest"])
                for e in evs if e["type"] == "io.hubsync.tag." + kind]

    def test_each_tag_event_once_in_order(self):
        st = self.st
        self.run_sync()
        first = self.new_events(0)
        state1 = snapshot_tags(st.target.url, REPOS)
        written = self.tag_events(first, "written")
        self.assertEqual(len(written), len(set((r, t) for r, t, _ in written)), "a tag twice")
        self.assertEqual(set(written), {(r, t, d) for (r, t), d in state1.items()})
        self.assertEqual(self.tag_events(first, "moved"), [])
        self.assertEqual(first[-1]["data"]["status"], "complete")
        # In the stream's order, every entry delivered once (the 503 retried).
        stream = st.redis.cli_raw("XRANGE", PREFIX + "events", "-", "+").split("\n")
        ids = [e["id"] for e in first]
        self.assertEqual(ids, sorted(ids, key=lambda i: tuple(map(int, i.split("-")))))
        self.assertEqual(len(set(ids)), len(ids))
        self.assertEqual([i for i in stream if i in set(ids)], ids)
        self.assertEqual(self.rx.posts, len(first) + 1)

        # The ref moves forward: moved tags say so, with the digest they had; tags that left
        # the catalog are deleted (--delete-removed) and say so.
        st.hub.load(catalog(REPOS, NEW))
        st.ref = NEW
        self.assertEqual(st.redis.cli_raw("HGETALL", PREFIX + "behind").split(), [])
        st.coordinator("--webhook", self.rx.url, "--delete-removed")
        self.assertIsNotNone(st.wait_enqueued())
        # Only the repository the commit changed is behind, since that commit was made.
        made = subprocess.run(["git", "-C", OFFICIAL_IMAGES, "log", "-1", "--format=%ct", NEW],
                              capture_output=True, text=True, check=True).stdout.strip()
        self.assertEqual(st.redis.cli_raw("HGETALL", PREFIX + "behind").split(),
                         ["alpine", made + "000"])
        for _ in range(2):
            st.worker("--exit-when-idle")
        run = st.report()
        self.assertEqual(run.rc, 0, run.stderr)
        self.assertEqual(st.redis.cli_raw("HGETALL", PREFIX + "behind").split(), [])
        second = self.new_events(len(first))
        state2 = snapshot_tags(st.target.url, REPOS)
        moved = self.tag_events(second, "moved")
        self.assertTrue(moved)
        self.assertEqual(set(moved), {(r, t, d) for (r, t), d in state2.items()
                                      if (r, t) in state1 and state1[(r, t)] != d})
        self.assertEqual(set(self.tag_events(second, "written")),
                         {(r, t, d) for (r, t), d in state2.items() if (r, t) not in state1})
        removed = [(e["data"]["repository"], e["data"]["tag"]) for e in second
                   if e["type"] == "io.hubsync.tag.removed"]
        self.assertTrue(removed)
        self.assertEqual(len(removed), len(set(removed)), "a tag removed twice")
        self.assertEqual(set(removed), set(state1) - set(state2))
        self.assertEqual({e["data"]["run"] for e in second if e["type"] in
                          ("io.hubsync.tag.removed", "io.hubsync.run.finished")},
                         {second[-1]["data"]["run"]})
        for e in second:
            if e["type"] == "io.hubsync.tag.moved":
                key = (e["data"]["repository"], e["data"]["tag"])
                self.assertEqual(e["data"]["previous"], state1[key])

    def test_each_tag_once_across_a_worker_kill(self):
        st = self.st
        st.coordinator("--webhook", self.rx.url)
        self.assertIsNotNone(st.wait_enqueued())
        first, second = st.worker(), st.worker()
        # Killed once it wrote a tag, with more jobs in hand; a new worker takes them over.
        self.wait_until(lambda: int(st.redis.cli_raw("XLEN", PREFIX + "events")) > 0 and
                        ":%d" % first.pid in st.redis.cli_raw("XPENDING", PREFIX + "jobs",
                                                              "workers"),
                        "a tag written while the first worker holds jobs")
        first.send_signal(signal.SIGKILL)
        first.wait()
        st.worker()
        run = st.report()
        self.assertEqual(run.rc, 0, run.stderr)
        evs = self.new_events(0)
        written = self.tag_events(evs, "written")
        self.assertEqual(len(written), len(set(written)), "a tag event twice")
        self.assertEqual(set(written), {(r, t, d) for (r, t), d in
                                        snapshot_tags(st.target.url, REPOS).items()})
        self.assertEqual(self.tag_events(evs, "moved"), [])
        self.assertIsNone(second.poll())

    def test_a_write_a_killed_worker_left_untold_is_told_once(self):
        """A worker killed between a tag's PUT and its event leaves the event recorded
        (hubsync:events:pending, written before the PUT); the next worker to find that tag
        right appends it, once. A record of a digest the tag does not have is dropped."""
        st = self.st
        run = st.run()
        self.assertEqual(run.rc, 0, run.stderr)
        state = snapshot_tags(st.target.url, REPOS)
        st.redis.cli_raw("DEL", PREFIX + "events")
        pending = PREFIX + "events:pending"

        def record(repo, tag, digest):
            data = json.dumps({"digest": digest, "previous": "", "repository": repo,
                               "run": "killed", "tag": tag}, separators=(",", ":"),
                              sort_keys=True)
            st.redis.cli_raw("HSET", pending, "%s %s:%s" % (st.target.url, repo, tag),
                             "%s tag.written %s" % (digest, data))
            return json.loads(data)

        told = ("library/hello-world", "latest")
        data = record(*told, state[told])
        record("library/alpine", "latest", "sha256:" + "0" * 64)
        self.assertEqual(st.redis.cli_raw("HLEN", pending).strip(), "2")
        self.run_sync()
        evs = self.new_events(0)
        self.assertEqual([(e["type"], e["data"]) for e in evs[:-1]],
                         [("io.hubsync.tag.written", data)])
        self.assertEqual(st.redis.cli_raw("HLEN", pending).strip(), "0")

    def test_only_the_lease_holder_delivers(self):
        st = self.st
        run = st.run()  # events in the stream, none delivered
        self.assertEqual(run.rc, 0, run.stderr)
        refusing = Receiver(refuse=True)
        self.addCleanup(refusing.server_close)
        self.addCleanup(refusing.shutdown)

        def daemon(url, log):
            path = st.log_path(log)
            with open(path, "w") as f:
                st.coordinator("--webhook", url, "--interval", "3600", once=False, wait=False,
                               json_report=False, stdout=subprocess.DEVNULL, stderr=f)
            return path

        daemon(refusing.url, "holder.log")
        self.wait_until(lambda: refusing.posts >= 1, "the lease holder delivering")
        standby = daemon(self.rx.url, "standby.log")
        self.wait_until(lambda: "standing by" in open(standby).read(),
                        "the standby (%s)" % standby)
        # The holder goes on trying (1 s, then 2 s apart) while the standby naps.
        seen = refusing.posts
        self.wait_until(lambda: refusing.posts >= seen + 2, "the holder trying again")
        self.assertEqual(self.rx.posts, 0, "the standby delivered events")

    def wait_until(self, cond, what, timeout=60):
        deadline = time.time() + timeout * TIMEOUT_FACTOR
        while not cond():
            if time.time() > deadline:
                raise AssertionError("%s: not within %ds" % (what, timeout))
            time.sleep(0.1)


if __name__ == "__main__":
    unittest.main()
