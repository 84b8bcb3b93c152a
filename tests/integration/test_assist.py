"""Work that spreads: the children of a large tag group's index are offered to idle workers
(the assist stream), which copy them while the group's job copies the rest, with the same
guarantees: children before their index, tags last and digest-exact, each distinct manifest
fetched once, the run's counters the sum of what the workers did; an assistant killed
mid-copy leaves its children to the job (its copy locks expire).
"""
import re
import signal
import time

from harness.stack import MirrorCase, Stack
from harness.target import head, pushed_tags
from standin.loader import totals

REPOS = ["alpine"]  # groups of 8 platforms and their attestations: 16 children each
LATENCY_MS = 80     # so that the workers' copies overlap
LEASE_MS = 3000     # a killed assistant's copy locks expire after this

# A job's or an assist's end in a worker's log, and its counters.
END = re.compile(r"(assist )?job=(\S+) run=(\S+) .*status=(\w+)")
COUNTERS = {"gets": "upstream_manifest_gets", "manifests": "manifests_pushed",
            "blobs": "blobs_copied", "bytes": "blob_bytes_copied",
            "mounted": "blobs_mounted", "skipped": "blobs_skipped"}


def worker_ends(path, run):
    """[(assist?, key, status, {report counter: value})] of run's ends in a worker's log."""
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            m = END.search(line)
            if not m or m.group(3) != run:
                continue
            n = {COUNTERS[k]: int(v) for k, v in re.findall(r"\b(\w+)=(\d+)", line)
                 if k in COUNTERS}
            out.append((bool(m.group(1)), m.group(2), m.group(4), n))
    return out


class AssistTest(MirrorCase):
    REPOS = REPOS

    def setUp(self):
        super().setUp()
        self.hub.config(latency_ms=LATENCY_MS)
        self.addCleanup(self.hub.config, latency_ms=0)

    def start(self, n, level, *args):
        """A stack whose coordinator has queued its run, then n batch workers logging at
        level; (stack, run id, workers)."""
        st = Stack(self.REPOS, hub=self.hub, redis=self.redis, target=self.target, logs=True,
                   worker_log_level=level, worker_args=list(args))
        self.addCleanup(st.stop)
        st.coordinator()
        run = st.wait_enqueued()
        self.assertIsNotNone(run, "the coordinator exited before queueing its run")
        ws = [st.worker("--exit-when-idle") for _ in range(n)]
        return st, run, ws

    def finish(self, st, ws):
        """The coordinator's Run once it and the workers left."""
        r = st.report(timeout=300)
        for w in ws:
            w.wait(timeout=60)
        self.assertEqual(r.rc, 0, r.stderr)
        self.assertEqual(r.report["status"], "complete")
        return r

    def assert_tags_right(self):
        for (repo, tag), digest in pushed_tags(self.pushed, self.REPOS).items():
            self.assertEqual(head(self.target.url, "library/" + repo, tag), digest,
                             "library/%s:%s" % (repo, tag))

    def test_children_spread_over_workers(self):
        before = self.hub.counters()["manifest_get"]
        st, run, ws = self.start(3, "info")
        r = self.finish(st, ws)
        gets = self.hub.counters()["manifest_get"] - before
        self.assert_tags_right()
        # Each distinct manifest fetched once, whoever copied it.
        least = totals(self.pushed, self.REPOS)
        self.assertEqual(gets, least["manifest_gets_min"])
        self.assertEqual(r.report["upstream_manifest_gets"], gets)
        self.assertEqual(r.report["manifests_pushed"], least["manifest_gets_min"])
        # The run's counters are the sum of what the workers said they did, assists too.
        logs = [p for p in st.logs if p != st.coord_log]
        ends = [e for p in logs for e in worker_ends(p, run)]
        for counter in COUNTERS.values():
            self.assertEqual(sum(n[counter] for _, _, _, n in ends), r.report[counter],
                             counter)
        # Some children were copied by a worker that did not hold their group's job.
        helped = [(key, n["manifests_pushed"]) for assist, key, status, n in ends
                  if assist and status == "done" and n["manifests_pushed"] > 0]
        self.assertTrue(helped, "no worker copied another's children")
        owners = {}
        for i, p in enumerate(logs):
            for assist, key, status, _ in worker_ends(p, run):
                if not assist and status == "done":
                    owners[key] = i
        for i, p in enumerate(logs):
            for assist, key, status, n in worker_ends(p, run):
                if assist and n["manifests_pushed"] > 0:
                    self.assertNotEqual(owners.get(key), i, "%s assisted by its owner" % key)

    def test_assistant_killed_mid_copy(self):
        st, run, ws = self.start(3, "debug", "--lease-ms", str(LEASE_MS))
        logs = [p for p in st.logs if p != st.coord_log]
        victim = None
        deadline = time.time() + 60
        while victim is None:
            self.assertLess(time.time(), deadline, "no worker took an offer")
            for w, p in zip(ws, logs):
                with open(p, errors="replace") as f:
                    if re.search(r"assist job=\S+: \d+ children taken", f.read()):
                        victim = w
                        break
            time.sleep(0.02)
        time.sleep(LATENCY_MS * 3 / 1000.0)  # its requests under way
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        self.finish(st, [w for w in ws if w is not victim])
        self.assert_tags_right()
