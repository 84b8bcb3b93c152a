"""Reliability on the real stack: workers and the coordinator killed with SIGKILL, Redis
restarted (with AOF) and lost (without), the target registry restarted or down for a while,
a job's lease taken over mid-copy, and a misbehaving upstream (5xx, resets, truncated and
corrupted bodies, latency spikes, 429 bursts, a lying Content-Type, a redirect loop).

Every test checks the same promises: the run completes, the target ends identical to a
clean run's, no tag on the target ever points at a missing manifest or blob (checked
continuously while the run goes), every blob on the target hashes to its digest, and the
stand-in never saw a token sent to its CDN host.

KillCostTest checks what kills cost: no manifest a killed worker had fetched is paid for again.

HUBSYNC_FULL=1 (`make reliability`) runs 20 kill trials instead of 3.
"""
import json
import os
import random
import re
import signal
import subprocess
import time
import unittest

from harness import RedisServer, Registry, programs
from harness.stack import MirrorCase, Stack, StackCase, dead_letters
from harness.standin import Standin
from harness.target import pushed_tags, request, snapshot, tags

REPOS = ["hello-world", "registry"]
FULL = os.environ.get("HUBSYNC_FULL") == "1"
KILL_TRIALS = 20 if FULL else 3
LEASE_MS = 3000
# Every worker here: a short lease and quick retries, so that faults resolve within a test.
WORKER_ARGS = ["--lease-ms", str(LEASE_MS), "--backoff-ms", "200", "--backoff-max-ms", "1000"]


def fault_stack(hub, redis, target, repos=REPOS, worker_args=()):
    """A Stack whose workers log at info level and whose programs all log to files."""
    return Stack(repos, hub=hub, redis=redis, target=target, logs=True,
                 worker_log_level="info", worker_args=WORKER_ARGS + list(worker_args))


def watched(st, workers=2):
    """Start workers and a Watcher of the target while they run: the watcher."""
    for _ in range(workers):
        st.worker()
    return st.watch()


_hub = {}


def setUpModule():
    _hub["hub"] = Standin(limit=1000000).start()
    _hub["pushed"] = _hub["hub"].load(programs.catalog(REPOS))


def tearDownModule():
    _hub.pop("hub").stop()


class FaultBase(StackCase):
    """One stand-in for the module; each test gets its own Redis and target. A clean run's
    snapshot (computed once) is what every faulty run must end up identical to."""

    _clean = None

    @property
    def hub(self):
        return _hub["hub"]

    @property
    def expected(self):
        return pushed_tags(_hub["pushed"], REPOS)

    def clean_snapshot(self):
        """The target after an undisturbed run (computed once per class)."""
        if FaultBase._clean is None:
            st = fault_stack(self.hub, None, None).start()
            try:
                st.coordinator()
                st.wait_enqueued()
                st.worker("--exit-when-idle")
                run = st.report()
                st.stop_workers()
                self.assertEqual(run.rc, 0, run.report)
                FaultBase._clean = snapshot(st.target.url, REPOS)
            finally:
                st.stop()
        return FaultBase._clean

    def stack(self, repos=REPOS, worker_args=()):
        st = fault_stack(self.hub, self.redis, self.target, repos, worker_args)
        self.addCleanup(st.stop)
        return st

    def assert_converged(self, rc, report, watcher=None, verify_blobs=False):
        self.assertEqual(rc, 0, report)
        self.assertEqual(report["status"], "complete", report)
        self.assertEqual(report["jobs_done"], report["jobs_total"], report)
        self.assertEqual(report["jobs_failed"], 0, report)
        if watcher is not None:
            self.assertEqual(watcher.finish(), [])
            self.assertGreater(watcher.polls, 0)
        got = snapshot(self.target.url, REPOS, verify_blobs=verify_blobs)
        clean = self.clean_snapshot()
        self.assertEqual(got["tags"], clean["tags"])
        self.assertEqual(got["manifests"], clean["manifests"])
        self.assertEqual(got["blobs"], clean["blobs"])
        for (repo, tag), digest in self.expected.items():
            self.assertEqual(got["tags"].get("%s:%s" % (repo, tag)), digest)
        self.assertEqual(self.hub.counters()["auth_leaks"], 0)


class WorkerKillTest(FaultBase):
    """kill -9 of workers at random moments; their jobs are taken over after the lease."""

    def trial(self, seed):
        rng = random.Random(seed)
        st = self.stack()
        st.coordinator()
        st.wait_enqueued()
        watcher = watched(st)
        kills = 0
        try:
            for _ in range(rng.randint(1, 3)):
                time.sleep(rng.uniform(0.05, 1.5))
                if st.coord.poll() is not None:
                    break
                alive = [w for w in st.workers if w.poll() is None]
                victim = rng.choice(alive)
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                kills += 1
                # A dead worker's blob locks must not outlive its job leases, or the
                # worker taking its jobs over waits for them.
                for key in self.redis.cli_raw("--scan", "--pattern",
                                              "hubsync:lock:blob:*").split():
                    pttl = int(self.redis.cli_raw("PTTL", key).strip())
                    self.assertLessEqual(pttl, LEASE_MS, key)
                st.worker()
            run = st.report()
            rc, report = run.rc, run.report
        finally:
            st.stop_workers()
        self.assert_converged(rc, report, watcher)
        return kills, report

    def test_kill_workers_random_trials(self):
        seeds = [int(os.environ.get("HUBSYNC_SEED", "1000")) + i for i in range(KILL_TRIALS)]
        total_kills = 0
        for i, seed in enumerate(seeds):
            with self.subTest(seed=seed):
                if i:
                    self.redis.stop()
                    self.target.stop()
                    self.redis = RedisServer().start()
                    self.target = Registry().start()
                t0 = time.time()
                kills, report = self.trial(seed)
                total_kills += kills
                print("  seed %d: %d workers killed, run %s in %.1fs"
                      % (seed, kills, report["run"], time.time() - t0), flush=True)
        self.assertGreater(total_kills, 0)
        print("worker kill trials: %d, workers killed: %d" % (len(seeds), total_kills))


KILL_COST_REPOS = ["busybox", "hello-world", "memcached"]
KILL_COST_KILLS = 4
# A manifest the stand-in answered this shortly before a kill may not have reached the
# killed worker's keeping yet: it counts as in flight.
IN_FLIGHT_S = 0.05


class KillCostTest(MirrorCase):
    """A killed worker's work is not paid for twice: the manifests it fetched are found by
    the worker that takes its jobs over, so a sync with SIGKILLs at random points costs the
    minimum (one counted GET per distinct manifest) plus only the GETs the killed workers
    had in flight. Each worker pulls as its own stand-in user, so the stand-in's request log
    says which GETs were the victim's and when their answers went out."""

    REPOS = KILL_COST_REPOS
    USERS = ["w%d" % i for i in range(2 + KILL_COST_KILLS)]
    HUB_USERS = ["%s:pw-%s:unlimited" % (u, u) for u in USERS]

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # Blobs take a while (as from Hub's CDN), manifests do not: a worker is killed while
        # it copies the blobs of manifests it has fetched.
        cls.hub.config(bandwidth=1024)

    def start_worker(self, st, users, owner):
        """A worker pulling as the next unused user; owner maps it to its user."""
        user = users.pop(0)
        owner[st.worker(log=True, env={"HUBSYNC_UPSTREAM_USERNAME": user,
                                       "HUBSYNC_UPSTREAM_PASSWORD": "pw-" + user})] = user

    def gets_of(self, user):
        return self.hub.counters()["sources"].get(user, {}).get("used", 0)

    def in_flight(self, user, killed_at):
        """The victim's counted GETs not answered IN_FLIGHT_S before it was killed."""
        return sum(1 for e in self.hub.requests()
                   if e["counted"] and e["source"] == user
                   and e["t"] + e["ms"] / 1000.0 > killed_at - IN_FLIGHT_S)

    def test_killed_workers_fetches_are_not_paid_again(self):
        rng = random.Random(int(os.environ.get("HUBSYNC_SEED", "1000")))
        self.hub.reset_counters()
        # Fewer jobs at once than there are: workers take jobs (and pay) all along the run.
        st = self.stack(worker_args=["--concurrency", "1"])
        users = list(self.USERS)
        owner = {}
        st.coordinator()
        st.wait_enqueued()
        for _ in range(2):
            self.start_worker(st, users, owner)
        kills = []
        try:
            while len(kills) < KILL_COST_KILLS and st.coord.poll() is None:
                # A worker is killed at a random moment after it paid for a few more
                # manifests: mid-work. One that pays for none for a while has no work.
                victim = rng.choice([w for w in owner if w.poll() is None])
                gets = self.gets_of(owner[victim]) + rng.randint(1, 10)
                deadline = time.time() + 5
                while self.gets_of(owner[victim]) < gets and time.time() < deadline:
                    time.sleep(0.005)
                if self.gets_of(owner[victim]) < gets:
                    continue
                time.sleep(rng.uniform(0, 0.5))
                victim.send_signal(signal.SIGKILL)
                kills.append((owner[victim], time.time()))
                victim.wait()
                self.start_worker(st, users, owner)
            run = st.report()
        finally:
            st.stop_workers()
        self.assertEqual(run.rc, 0, run.stderr[-3000:])
        self.assertEqual(run.report["status"], "complete", run.report)
        got = snapshot(self.target.url, KILL_COST_REPOS)
        for (repo, tag), digest in pushed_tags(self.pushed, KILL_COST_REPOS).items():
            self.assertEqual(got["tags"].get("%s:%s" % (repo, tag)), digest)
        minimum = len(got["manifests"])
        total = self.hub.counters()["manifest_get"]
        in_flight = sum(self.in_flight(u, t) for u, t in kills)
        print("  %d workers killed: %d counted GETs for a minimum of %d, %d in flight at the "
              "kills; %s manifests still kept in Redis"
              % (len(kills), total, minimum, in_flight,
                 self.redis.cli_raw("ZCARD", "hubsync:manifests").strip()), flush=True)
        self.assertEqual(len(kills), KILL_COST_KILLS)
        self.assertLessEqual(total, minimum + in_flight)


class RedisRestartTest(FaultBase):
    """Redis killed with the run enqueued and restarted from its AOF: the waiting
    coordinator rides out the outage with backoff, and the run completes."""

    def test_redis_killed_and_restarted_while_coordinator_waits(self):
        st = self.stack()
        st.coordinator()
        st.wait_enqueued()
        time.sleep(1.5)  # everysec AOF: let the enqueued run reach the disk
        self.redis.kill(signal.SIGKILL)
        time.sleep(3.0)  # the coordinator sees it gone and backs off
        self.assertIsNone(st.coord.poll(), "the coordinator gave up during the outage")
        self.redis.start(self.redis.port)
        watcher = watched(st)
        try:
            run = st.report()
            rc, report = run.rc, run.report
        finally:
            st.stop_workers()
        self.assert_converged(rc, report, watcher)


    def test_redis_killed_and_restarted_while_workers_copy(self):
        self.hub.config(latency_ms=40)  # slow enough for the kill to land mid-copy
        try:
            st = self.stack(worker_args=["--lease-ms", "3000"])
            st.coordinator()
            st.wait_enqueued()
            watcher = watched(st)
            time.sleep(2.0)
            self.redis.kill(signal.SIGKILL)
            time.sleep(2.0)
            self.redis.start(self.redis.port)
            try:
                run = st.report()
                rc, report = run.rc, run.report
            finally:
                st.stop_workers()
        finally:
            self.hub.config(latency_ms=0)
        # Jobs whose settlement was lost come back after their lease and find their work
        # done: the run completes with the same target state as a clean run.
        self.assert_converged(rc, report, watcher)


class RedisLostTest(FaultBase):
    """Redis lost entirely (no persistence): the next run rebuilds from the target itself."""

    REDIS_OPTIONS = {"appendonly": False}

    def fresh_redis(self):
        self.redis.kill(signal.SIGKILL)
        self.redis.stop()
        self.redis = RedisServer(appendonly=False).start()

    def counted(self, fn):
        before = self.hub.counters()
        out = fn()
        after = self.hub.counters()
        return out, {k: after[k] - before[k] for k in ("manifest_get", "blob_bytes")}

    def sync(self):
        st = self.stack()
        st.coordinator()
        st.wait_enqueued()
        st.worker("--exit-when-idle")
        try:
            run = st.report()
            return run.rc, run.report
        finally:
            st.stop_workers()

    def test_lost_after_a_complete_run(self):
        rc, _ = self.sync()
        self.assertEqual(rc, 0)
        self.fresh_redis()
        (rc, report), spent = self.counted(self.sync)
        self.assertEqual(spent, {"manifest_get": 0, "blob_bytes": 0})
        self.assertEqual(report["tags_unchanged"], report["tags_total"])
        self.assert_converged(rc, report)

    def test_lost_mid_run(self):
        clean = self.clean_snapshot()
        st = self.stack()
        st.coordinator()
        st.wait_enqueued()
        st.worker()
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if snapshot(self.target.url, REPOS)["tags"]:
                    break
            except AssertionError:
                pass  # a tag being written (see Watcher): look again
            time.sleep(0.05)
        self.redis.kill(signal.SIGKILL)
        st.coord.kill()
        st.coord.wait()
        st.stop_workers()
        # What is already there (content of finished groups and of groups cut short).
        have = {d for d in clean["manifests"] for short in REPOS
                if request("%s/v2/library/%s/manifests/%s" % (self.target.url, short, d),
                        method="HEAD")[0] == 200}
        self.assertTrue(have)
        self.fresh_redis()
        (rc, report), spent = self.counted(self.sync)
        self.assertEqual(spent["manifest_get"], len(clean["manifests"] - have))
        self.assertEqual(report["upstream_manifest_gets"], spent["manifest_get"])
        self.assert_converged(rc, report)


class UpstreamFaultTest(FaultBase):
    """Every upstream fault at once: the run converges with identical digests, no corrupt
    blob is ever accepted, retries stay bounded."""

    FAULTS = dict(error_rate=0.05, reset_rate=0.05, truncate_rate=0.05, corrupt_rate=0.05,
                  spike_rate=0.05, spike_ms=400, burst_rate=0.01, burst_len=3,
                  burst_retry_after=1)
    OFF = dict(error_rate=0, reset_rate=0, truncate_rate=0, corrupt_rate=0, spike_rate=0,
               burst_rate=0, manifest_content_type="", redirect_loop_rate=0)

    def tearDown(self):
        self.hub.config(**self.OFF)
        super().tearDown()

    def test_all_faults_together(self):
        self.clean_snapshot()
        self.hub.config(seed=7, **self.FAULTS)
        before = self.hub.counters()
        st = self.stack(worker_args=["--max-attempts", "8"])
        st.coordinator()
        st.wait_enqueued()
        watcher = watched(st)
        try:
            run = st.report()
            rc, report = run.rc, run.report
        finally:
            st.stop_workers()
        after = self.hub.counters()
        faults = {k: after["faults"][k] - before["faults"].get(k, 0) for k in after["faults"]}
        self.hub.config(**self.OFF)
        # The faults did happen, of every kind.
        for kind in ("error", "reset", "truncate", "corrupt", "burst"):
            self.assertGreater(faults.get(kind, 0), 0, faults)
        self.assert_converged(rc, report, watcher, verify_blobs=True)
        # Bounded: each job retried at most a few times, no storm of requests.
        self.assertLessEqual(report["jobs_retried"], 3 * report["jobs_total"], report)
        self.assertLess(after["requests"] - before["requests"], 4000)

    def assert_dead_lettered(self, faults, reason):
        """With faults on, every hello-world job ends in the dead-letter stream with a
        reason matching the regex, after no retry beyond what the worker allows, and no
        tag is written."""
        self.hub.config(seed=3, **faults)
        st = self.stack(repos=["hello-world"],
                        worker_args=["--max-attempts", "2", "--http-retries", "1"])
        try:
            st.coordinator()
            st.wait_enqueued()
            st.worker("--exit-when-idle")
            run = st.report()
            rc, report = run.rc, run.report
        finally:
            st.stop_workers()
            self.hub.config(**self.OFF)
        self.assertEqual(rc, 1, report)
        self.assertEqual(report["status"], "failed")
        dead = dead_letters(self.redis)
        self.assertEqual(len(dead), report["jobs_total"], dead)
        for d in dead:
            self.assertRegex(d.get("reason", ""), reason, d)
        # Nothing corrupt, nothing half-done: no tag was written.
        self.assertEqual(snapshot(self.target.url, ["hello-world"], verify_blobs=True)["tags"],
                         {})
        self.assertEqual(self.hub.counters()["auth_leaks"], 0)
        return report

    def test_always_corrupt_is_dead_lettered_with_reason(self):
        self.assert_dead_lettered(dict(corrupt_rate=1.0),
                                  r"GET blob library/hello-world@sha256:[0-9a-f]{64} "
                                  r".*hash to sha256:")

    def test_lying_content_type_is_refused(self):
        # The bytes are right (their digest matches) but the registry calls them HTML:
        # a proxy in the way, or the wrong bytes; either way nothing is pushed.
        report = self.assert_dead_lettered(
            dict(manifest_content_type="text/html"),
            r"^failed after 2 attempts: manifest library/hello-world@sha256:[0-9a-f]{64} "
            r"from http://127\.0\.0\.1:\d+: "
            r"Content-Type 'text/html' does not match the manifest's mediaType "
            r"'application/vnd\.(oci\.image\.index\.v1|docker\.distribution\.manifest\.list\.v2)"
            r"\+json'$")
        # Retried as far as --max-attempts 2 allows, no further.
        self.assertEqual(report["jobs_retried"], report["jobs_total"], report)

    def test_redirect_loop_is_dead_lettered(self):
        before = self.hub.counters()["blob_get"]
        report = self.assert_dead_lettered(
            dict(redirect_loop_rate=1.0),
            r"GET blob library/hello-world@sha256:[0-9a-f]{64} at http://127\.0\.0\.1:\d+: "
            r"more than 5 redirects \(a redirect loop\)")
        # Not retried inside the client (a loop stays a loop): each blob GET is one
        # request plus 5 hops; the job is retried as far as --max-attempts 2 allows.
        self.assertEqual(report["jobs_retried"], report["jobs_total"], report)
        gets = self.hub.counters()["blob_get"] - before
        self.assertEqual(gets % 6, 0, gets)
        self.assertEqual(self.hub.counters()["faults"]["redirect_loop"], gets // 6)


class TargetRestartTest(FaultBase):
    """The target registry restarted mid-run: the run converges."""

    def test_target_restarted_mid_run(self):
        self.clean_snapshot()
        st = self.stack()
        st.coordinator()
        st.wait_enqueued()
        st.worker()
        st.worker()
        try:
            time.sleep(1.0)
            self.assertIsNone(st.coord.poll(), "the run ended before the target restarted")
            self.target.kill(signal.SIGKILL)
            time.sleep(1.0)
            self.target.start(self.target.port)
            run = st.report()
            rc, report = run.rc, run.report
        finally:
            st.stop_workers()
        self.assert_converged(rc, report, verify_blobs=True)


def log_lines(paths, pattern):
    """Lines of the log files matching the regex pattern."""
    out = []
    for path in paths:
        with open(path, errors="replace") as f:
            out += [line for line in f if re.search(pattern, line)]
    return out


class TargetOutageTest(FaultBase):
    """The target down for much longer than a job's attempts last (--max-attempts 3 with a
    200 ms backoff and one HTTP retry: about a second). Unreachable registries are not the
    job's fault: the jobs wait for the target without spending their attempts, and the run
    completes once it is back."""

    OUTAGE_S = 20
    WORKER_ARGS = ["--max-attempts", "3", "--http-retries", "1", "--concurrency", "4"]

    def outage(self, worker_args, during=None):
        """A run whose target is down from before the workers start until OUTAGE_S later:
        (exit code, report, worker log paths). during(stack) runs while it is down."""
        self.clean_snapshot()
        st = self.stack(worker_args=self.WORKER_ARGS + worker_args)
        try:
            st.coordinator()
            st.wait_enqueued()
            self.target.kill(signal.SIGKILL)
            down = time.time()
            st.worker()
            st.worker()
            if during is not None:
                during(st)
            time.sleep(max(0.0, down + self.OUTAGE_S - time.time()))
            if st.coord.poll() is not None:
                self.fail("the run ended while the target was down: %s" % st.coord.stdout.read())
            self.assertEqual(dead_letters(self.redis), [])
            self.target.start(self.target.port)
            run = st.report()
            rc, report = run.rc, run.report
        finally:
            st.stop_workers()
            if st.coord.poll() is None:
                st.coord.kill()
                st.coord.communicate()
        return rc, report, [p for p in st.logs if "worker" in p]

    def test_target_down_longer_than_attempts_no_dead_letter(self):
        seen = {}

        def waiting(st):
            # status shows the jobs waiting for the registry, not as failed.
            deadline = time.time() + self.OUTAGE_S
            while time.time() < deadline and not seen:
                s = json.loads(subprocess.run(
                    programs.coordinator("status", "--json", redis=self.redis),
                    stdout=subprocess.PIPE, text=True, timeout=30).stdout)
                if s["queue"]["delayed_by_why"]["registry"] > 0:
                    seen.update(s)
                time.sleep(0.2)

        rc, report, logs = self.outage(["--breaker-failures", "0"], during=waiting)
        self.assertTrue(seen, "no job was seen waiting for the registry")
        self.assert_converged(rc, report, verify_blobs=True)
        self.assertEqual(dead_letters(self.redis), [])
        # Each job met the outage again and again, never spending an attempt on it.
        failures = log_lines(logs, r" status=unavailable ")
        print("  target down %ds, no breaker: %d jobs, %d job failures"
              % (self.OUTAGE_S, report["jobs_total"], len(failures)))
        self.assertGreater(len(failures), 3 * report["jobs_total"], failures[:3])
        waits = self.redis.cli_raw("HGET", "hubsync:run:" + report["run"], "registry_waits")
        self.assertGreater(int(waits), 3 * report["jobs_total"], report)

    def test_breaker_defers_jobs_while_target_down(self):
        cooldown_s = 2
        states = []

        def watch_breaker(st):
            # The breaker is a hash in Redis that redis-cli shows.
            key = "hubsync:breaker:" + self.target.url
            deadline = time.time() + self.OUTAGE_S
            while time.time() < deadline and "open" not in states:
                states.append(self.redis.cli_raw("HGET", key, "state").strip())
                time.sleep(0.1)

        rc, report, logs = self.outage(["--breaker-failures", "3", "--breaker-cooldown-ms",
                                        str(cooldown_s * 1000)], during=watch_breaker)
        self.assertTrue("open" in states, "the breaker never opened: %s" % set(states))
        self.assert_converged(rc, report, verify_blobs=True)
        self.assertEqual(dead_letters(self.redis), [])
        # Once open, jobs wait instead of each trying the target: only those that failed
        # before it opened ran into the outage, and one probe per cool-down asked it.
        failures = log_lines(logs, r" status=unavailable ")
        probes = log_lines(logs, r"breaker half-open")
        print("  target down %ds: %d jobs, %d job failures, %d probes"
              % (self.OUTAGE_S, report["jobs_total"], len(failures), len(probes)))
        self.assertLessEqual(len(failures), report["jobs_total"] + 3, failures)
        self.assertGreater(len(probes), 0)
        self.assertLessEqual(len(probes), self.OUTAGE_S // cooldown_s + 2, probes)
        self.assertTrue(log_lines(logs, r"breaker open"))
        self.assertTrue(log_lines(logs, r"breaker closed"))
        key = "hubsync:breaker:" + self.target.url
        self.assertEqual(self.redis.cli_raw("HGET", key, "state").strip(), "closed")


class LeaseLostTest(FaultBase):
    """A job taken over by another consumer while its worker copies: the worker finds out
    before its tag writes and writes none (the new holder writes them)."""

    def test_no_tag_written_after_the_lease_is_taken(self):
        # A long lease: the worker's periodic renewal (every lease/3) does not come round
        # while the jobs run, so only a check before the tags can notice the theft.
        st = self.stack(repos=["hello-world"],
                        worker_args=["--lease-ms", "60000", "--id", "victim"])
        self.hub.config(latency_ms=300)  # jobs take seconds: the theft lands mid-copy
        try:
            st.worker()
            # Its first tick has renewed (nothing) and beaten: the next renewal is 20 s off.
            deadline = time.time() + 30
            while time.time() < deadline and not self.redis.cli_raw(
                    "EXISTS", "hubsync:worker:victim").strip() == "1":
                time.sleep(0.05)
            st.coordinator()
            st.wait_enqueued()
            total = int(self.redis.cli_raw("HGET", "hubsync:run:" + self.redis.cli_raw(
                "GET", "hubsync:runs:current").strip(), "jobs_total"))
            ids = []
            while time.time() < deadline and len(ids) < total:
                ids = self.redis.cli_raw("XPENDING", "hubsync:jobs", "workers", "-", "+",
                                         "100", "victim").split()[0::4]
                time.sleep(0.02)
            self.assertEqual(len(ids), total)
            for i in ids:
                self.redis.cli_raw("XCLAIM", "hubsync:jobs", "workers", "thief", "0", i,
                                   "JUSTID")
            log = st.logs[0]
            while time.time() < deadline and len(log_lines([log], r" status=")) < total:
                time.sleep(0.1)
        finally:
            self.hub.config(latency_ms=0)
            st.stop_workers()
            if st.coord is not None and st.coord.poll() is None:
                st.coord.kill()
                st.coord.communicate()
        done = log_lines([log], r" status=")
        self.assertEqual(len(done), total, done)
        for line in done:
            self.assertIn(" written=0 ", line)
        self.assertEqual(len(log_lines([log], r"lease lost")), total)
        self.assertEqual(tags(self.target.url, "library/hello-world"), [])
        # The thief still holds every job: the worker settled none of them.
        self.assertEqual(self.redis.cli_raw("XPENDING", "hubsync:jobs", "workers", "-", "+",
                                            "100", "thief").split()[0::4], ids)


if __name__ == "__main__":
    unittest.main()
