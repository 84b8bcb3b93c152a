#!/usr/bin/env python3
"""Side-by-side benchmark: hubsync (1, 2, 4 workers) against `skopeo sync` and the seed's
script (a loop of `skopeo copy --all`), on the same Docker Hub stand-in, the same
official-images data and the same scenarios, in one run.

Every tool runs one chain per run: a fresh stand-in (loaded at the OLD official-images ref),
a fresh target docker-registry (storage on /dev/shm) and, for hubsync, a fresh Redis; then
  full     sync into the empty target
  noop     the same sync again
  rebuild  after an upstream rebuild of some groups (same tags, new digests)
  ref      after moving the official-images ref forward (OLD -> NEW; the stand-in serves NEW)
  month    the same move on a chain of its own that first syncs OLD (the catalog scale's
           month of official-images history)
Each scenario records wall time, counted upstream GETs (stand-in counters) against the least
needed, blob bytes from upstream against the unique bytes needed, and the peak RSS of the
copying processes (GNU time), and the CPU seconds of each process kind. The table gives
the median wall time over the runs.

    python3 tests/bench/run.py                       # the committed table (tests/bench/README.md)
    python3 tests/bench/run.py --quick               # CI: small repos, 1 run, 0 ms
    python3 tests/bench/run.py --memory-only         # one worker copying a 1 GiB blob
    python3 tests/bench/run.py --scale catalog       # the whole catalog, 1-8 workers
    python3 tests/bench/run.py --scale big           # blob throughput against skopeo, curl

Python 3 standard library only; needs bin/ built (make), skopeo, docker-registry,
redis-server and /usr/bin/time.
"""
import argparse
import concurrent.futures
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/: harness, standin

from harness import BIN, OFFICIAL_IMAGES, RedisServer, Registry  # noqa: E402
from harness.programs import catalog, coordinator  # noqa: E402
from harness.stack import Stack  # noqa: E402
from harness.standin import Standin  # noqa: E402
from harness.target import head  # noqa: E402
from standin import layout  # noqa: E402
from standin.loader import repo_name  # noqa: E402

GNU_TIME = "/usr/bin/time"
SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None
SCENARIOS = ["full", "noop", "rebuild", "ref", "month"]
TOOLS = ["hubsync-1", "hubsync-2", "hubsync-4", "skopeo-sync", "seed-script"]
# Commits of the real official-images history: busybox (8e5e322), hello-world (043587d) and
# alpine (00b473f) changed between these two.
OLD_REF, NEW_REF = "8e5e322~1", "00b473f"
DEFAULT_REPOS = "hello-world,busybox"
DEFAULT_REBUILD = "busybox:musl"
QUICK = {"repos": "hello-world,busybox", "runs": 1, "latency_ms": "0",
         "rebuild": "busybox:musl"}
# Each scale's defaults; an option given on the command line wins.
SCALES = {
    "repos": {"repos": DEFAULT_REPOS, "latency_ms": "0,30", "runs": 3,
              "tools": ",".join(TOOLS), "scenarios": "full,noop,rebuild,ref",
              "rebuild": DEFAULT_REBUILD, "old_ref": OLD_REF, "new_ref": NEW_REF,
              "layer_size": 65536},
    # The whole catalog at the newest commit, layers of a few hundred bytes (so neither
    # registry is the limit), Docker Hub's order of latency; month: OLD -> NEW.
    "catalog": {"repos": "all", "latency_ms": "20", "runs": 1,
                "tools": "hubsync-1,hubsync-2,hubsync-4,hubsync-8",
                "scenarios": "full,noop,month", "rebuild": DEFAULT_REBUILD,
                "layer_size": 300},
    # A few images of one large random layer each: blob throughput.
    "big": {"latency_ms": "20", "runs": 1, "tools": "hubsync-1,hubsync-2",
            "scenarios": "full", "rebuild": DEFAULT_REBUILD, "big_size": 256 << 20},
}


class BenchError(Exception):
    """A tool failed or the stack misbehaved; the message says which and where."""


class Timeout(BenchError):
    """A sync ran past --timeout (the peers on the whole catalog may); the chain reports
    how far it got."""


# -- helpers ---------------------------------------------------------------------------------
def moved_groups(source, old, new, repos):
    """"repo:tag" of each tag group whose library entry changed between two refs and that
    existed before (new entries are new content anyway)."""
    diff = json.loads(subprocess.check_output(
        coordinator("diff", "--from", old, "--to", new, "--json", official_images=source)))
    return ["%s:%s" % (r["name"], g["tags"][0]) for r in diff["repositories"]
            if repos is None or r["name"] in repos for g in r["groups"]
            if g["kind"] == "tags" and g["change"] == "changed" and g["key"] == g["old_key"]]


def content(pushed, repos):
    """(set of (repo, manifest digest), {blob digest: size}) a pushed manifest holds (of
    these repos; None: all)."""
    wanted = None if repos is None else {repo_name(r) for r in repos}
    manifests, blobs = set(), {}
    for r in pushed["repositories"]:
        if wanted is not None and r["name"] not in wanted:
            continue
        for g in r["groups"]:
            manifests.add((r["name"], g["index"]["digest"]))
            manifests.update((r["name"], c["digest"]) for c in g["children"])
            blobs.update((b["digest"], b["size"]) for b in g["blobs"])
    return manifests, blobs


def tag_digests(pushed, repos):
    wanted = None if repos is None else {repo_name(r) for r in repos}
    return {(r["name"], t): d for r in pushed["repositories"]
            if wanted is None or r["name"] in wanted
            for t, d in r["tags"].items()}


def mirrored(target, pushed, repos):
    """Tags on the target that do not carry the upstream digest (empty when all do); eight
    HEADs at a time (the whole catalog has ~10,000 tags)."""
    want = tag_digests(pushed, repos)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = dict(zip(want, pool.map(lambda k: head(target.url, k[0], k[1]), want)))
    return sorted("%s:%s" % k for k, d in want.items() if got[k] != d)


def gnu_time(tmp):
    """(command prefix that runs a program under GNU time, file that will hold its peak RSS
    in KiB and its user and system CPU seconds)."""
    fd, rss = tempfile.mkstemp(prefix="rss-", dir=tmp)
    os.close(fd)
    return [GNU_TIME, "-f", "%M %U %S", "-o", rss], rss


def time_figures(path):
    """(peak RSS in KiB, CPU seconds) GNU time wrote (its last line; a line before it may
    say the command failed)."""
    with open(path) as f:
        lines = [x.split() for x in f.read().splitlines() if x.strip()]
    try:
        kib, user, system = lines[-1]
        return int(kib), float(user) + float(system)
    except (IndexError, ValueError):
        raise BenchError("no peak RSS and CPU time recorded in %s" % path)


def cpu_seconds(pid):
    """CPU seconds (user + system) a live process has used so far, from /proc."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vm_rss_kib(pid):
    """Resident set of a live process in KiB (None once it is gone)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def child_pid(pid):
    """The first child of a process (the program GNU time runs), or None."""
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            kids = f.read().split()
    except OSError:
        return None
    return int(kids[0]) if kids else None


class RssSampler(threading.Thread):
    """Samples the RSS of the programs run under GNU time by these processes every
    `every` seconds, so a table can say whether it stays flat (peak RSS alone cannot)."""

    def __init__(self, procs, every=0.5):
        super().__init__(daemon=True)
        self.procs, self.every = procs, every
        self.samples = []  # (seconds since start, largest RSS in KiB)
        self.done = threading.Event()

    def run(self):
        t0 = time.monotonic()
        pids = {}
        while not self.done.wait(self.every):
            rss = []
            for p in self.procs:
                if p.pid not in pids:
                    kid = child_pid(p.pid)
                    if kid is None:
                        continue
                    pids[p.pid] = kid
                kib = vm_rss_kib(pids[p.pid])
                if kib is not None:
                    rss.append(kib)
            if rss:
                self.samples.append((time.monotonic() - t0, max(rss)))

    def stop(self):
        self.done.set()
        self.join()

    def deciles(self):
        """Largest worker RSS (KiB) at 10%, 20%, ... 100% of the sampled time."""
        if not self.samples:
            return []
        end = self.samples[-1][0]
        out = []
        for i in range(1, 11):
            at = [k for t, k in self.samples if t <= end * i / 10.0]
            out.append(at[-1] if at else self.samples[0][1])
        return out


def run_checked(cmd, tmp, what, timeout):
    """Run one command under GNU time; returns (peak RSS in KiB, CPU seconds). Past its
    timeout it is killed and Timeout raised."""
    prefix, rss = gnu_time(tmp)
    p = subprocess.Popen(prefix + cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # The program first: killed alone, GNU time left it running, holding the pipe.
        kid = child_pid(p.pid)
        if kid is not None:
            os.kill(kid, signal.SIGKILL)
        p.kill()
        p.communicate()
        raise Timeout("%s still running after %d s" % (what, timeout))
    if p.returncode != 0:
        raise BenchError("%s failed (exit %d): %s" % (what, p.returncode, out[-2000:]))
    return time_figures(rss)


# -- tools -----------------------------------------------------------------------------------
class Hubsync:
    """hubsync-coordinator sync --once --wait plus N hubsync-worker --exit-when-idle; one
    Redis for the whole chain (it is hubsync's memory between runs)."""

    def __init__(self, workers, concurrency=None, connections=None):
        self.name = "hubsync-%d" % workers
        self.workers = workers
        self.extra = [] if concurrency is None else ["--concurrency", str(concurrency)]
        if connections is not None:
            self.extra += ["--connections-per-host", str(connections)]
        self.redis = None

    def open(self, tmp):
        self.redis = RedisServer().start()

    def close(self):
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    def sync(self, ctx):
        st = Stack(ctx.repos or [], hub=ctx.hub, redis=self.redis, target=ctx.target,
                   source=ctx.source, ref=ctx.ref, log_level="warn", worker_args=self.extra)
        redis0 = cpu_seconds(self.redis.proc.pid)
        try:
            # End to end, as an operator runs it: the coordinator and the workers start
            # together and the sync is over when the last of them has exited. Batch workers
            # leave as soon as the run is over; the idle grace only bounds how long they
            # wait for the coordinator to queue the run (it reads official-images first).
            prefix, coord_time = gnu_time(ctx.tmp)
            st.coordinator(wrap=prefix)
            times = []
            for _ in range(self.workers):
                prefix, path = gnu_time(ctx.tmp)
                st.worker("--exit-when-idle", "--idle-grace", "120", wrap=prefix)
                times.append(path)
            sampler = RssSampler(list(st.workers))
            sampler.start()
            try:
                run = st.report(timeout=ctx.timeout)
            except subprocess.TimeoutExpired:
                raise Timeout("%s still running after %d s" % (self.name, ctx.timeout))
            finally:
                sampler.stop()
            for w in st.workers:
                w.wait(timeout=60)
            end = time.monotonic()
            redis_cpu = cpu_seconds(self.redis.proc.pid) - redis0
        finally:
            st.stop()
        if run.rc != 0:
            raise BenchError("%s: coordinator exit %d: %s" % (self.name, run.rc,
                                                             run.stderr[-2000:]))
        if run.report.get("status") != "complete":
            raise BenchError("%s: run %s" % (self.name, run.report.get("status")))
        workers = [time_figures(p) for p in times]
        return {"rss_kib": max(k for k, _ in workers), "end": end,
                "rss_trace": sampler.deciles(), "phases": run.report.get("phases"),
                "cpu": {"coordinator": time_figures(coord_time)[1],
                        "workers": sum(c for _, c in workers), "redis": redis_cpu}}


class Peer:
    """A peer tool: a command per sync, no state of its own between syncs."""

    def open(self, tmp):
        pass

    def close(self):
        pass


class SkopeoSync(Peer):
    """skopeo sync --all --src yaml --dest docker from a YAML of every catalog tag."""

    name = "skopeo-sync"

    def sync(self, ctx):
        images = {}
        for r in ctx.catalog["repositories"]:
            tags = [t for g in r["groups"] for t in g["tags"]]
            images[repo_name(r["name"])] = tags
        # JSON is YAML: skopeo reads this as its --src yaml file.
        cfg = os.path.join(ctx.tmp, "skopeo-sync.yaml")
        with open(cfg, "w") as f:
            json.dump({ctx.hub.host: {"tls-verify": False, "images": images}}, f)
        dest = "127.0.0.1:%d/library" % ctx.target.port
        rss, cpu = run_checked(["skopeo", "sync", "--all", "--preserve-digests", "--src",
                                "yaml", "--dest", "docker", "--dest-tls-verify=false", cfg,
                                dest], ctx.tmp, self.name, ctx.timeout)
        return {"rss_kib": rss, "end": time.monotonic(), "cpu": {"skopeo": cpu}}


class SeedScript(Peer):
    """The user's old script, done right (all platforms): per tag group `skopeo copy --all`
    of its first tag from upstream, then target-to-target `skopeo copy --all` for the others.
    Run in full every time (its incremental mode followed `git diff` and so never saw
    upstream rebuilds)."""

    name = "seed-script"

    def sync(self, ctx):
        peak, cpu = 0, 0.0
        tgt = "docker://127.0.0.1:%d/" % ctx.target.port
        base = ["skopeo", "copy", "--all", "--preserve-digests", "--src-tls-verify=false",
                "--dest-tls-verify=false", "-q"]
        for r in ctx.catalog["repositories"]:
            name = repo_name(r["name"])
            for g in r["groups"]:
                first = g["tags"][0]
                copies = [(["docker://%s/%s:%s" % (ctx.hub.host, name, first),
                            "%s%s:%s" % (tgt, name, first)], "%s:%s" % (name, first))]
                copies += [(["%s%s:%s" % (tgt, name, first), "%s%s:%s" % (tgt, name, t)],
                            "retag %s:%s" % (name, t)) for t in g["tags"][1:]]
                for args, what in copies:
                    kib, sec = run_checked(base + args, ctx.tmp,
                                           "%s %s" % (self.name, what), ctx.timeout)
                    peak, cpu = max(peak, kib), cpu + sec
        return {"rss_kib": peak, "end": time.monotonic(), "cpu": {"skopeo": cpu}}


def make_tool(name, concurrency=None, connections=None):
    if name.startswith("hubsync-"):
        return Hubsync(int(name.split("-", 1)[1]), concurrency, connections)
    if name == "skopeo-sync":
        return SkopeoSync()
    if name == "seed-script":
        return SeedScript()
    raise BenchError("unknown tool %r (one of %s)" % (name, ", ".join(TOOLS)))


# -- one chain of scenarios ------------------------------------------------------------------
class Ctx:
    """What a tool needs for one sync: stand-in, target, catalog, source and ref."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def server_pids(hub, target):
    """{process kind: pid} of the servers every tool shares."""
    return {"stand-in": hub.front.proc.pid, "stand-in backend": hub.registry.proc.pid,
            "target": target.proc.pid}


def chain(tool, opts, latency, cats, scenarios):
    """Run these scenarios once, in order, for one tool; returns {scenario: figures}. A
    chain that starts with `month` first syncs the OLD catalog (at 0 ms: it only sets the
    scene) and records that as `month-base`."""
    tmp = tempfile.mkdtemp(prefix="hubsync-bench-", dir=SHM)
    hub = Standin(limit=10 ** 9, workdir=os.path.join(tmp, "hub"),
                  direct_reads=not opts.proxied_reads)
    target = Registry(workdir=os.path.join(tmp, "target"))
    os.makedirs(target.dir)
    results = {}
    try:
        hub.start()
        target.start()
        tool.open(tmp)
        first = "old" if scenarios[0] == "month" or opts.full_ref == opts.old_ref else "new"
        pushed = hub.load(cats[first], layer_size=opts.layer_size)
        seen_m, seen_b = set(), {}
        steps = (["month-base"] if scenarios[0] == "month" else []) + scenarios
        for sc in steps:
            ref, cat = opts.full_ref, cats[first]
            hub.config(latency_ms=0 if sc == "month-base" else latency)
            if sc == "month-base":
                ref = opts.old_ref
            elif sc == "rebuild":
                pushed = hub.rebuild(*opts.rebuild)
            elif sc in ("ref", "month"):
                hub.load(cats["new"], layer_size=opts.layer_size)
                # Upstream rebuilds what a changed library entry (new GitCommit) names.
                pushed = hub.rebuild(*cats["moved"])
                ref, cat = opts.new_ref, cats["new"]
            m, b = content(pushed, opts.repos)
            need_gets = len(m - seen_m)
            need_bytes = sum(s for d, s in b.items() if d not in seen_b)
            seen_m |= m
            seen_b.update(b)
            ctx = Ctx(hub=hub, target=target, repos=opts.repos, source=opts.source, ref=ref,
                      catalog=cat, tmp=tmp, timeout=opts.timeout)
            pids = server_pids(hub, target)
            cpu0 = {k: cpu_seconds(pid) for k, pid in pids.items()}
            before = hub.counters()
            t0 = time.monotonic()
            try:
                got = tool.sync(ctx)
            except Timeout as e:
                after = hub.counters()
                results[sc] = {"timeout": str(e), "wall": time.monotonic() - t0,
                               "gets": after["manifest_get"] - before["manifest_get"],
                               "gets_min": need_gets,
                               "bytes": after["blob_bytes"] - before["blob_bytes"],
                               "bytes_min": need_bytes,
                               "requests": after["requests"] - before["requests"]}
                print("  %-11s %-8s TIMEOUT after %.0f s: gets %d/%d bytes %d/%d" % (
                    tool.name, sc, results[sc]["wall"], results[sc]["gets"], need_gets,
                    results[sc]["bytes"], need_bytes), file=sys.stderr, flush=True)
                break
            wall = got["end"] - t0
            cpu = {k: cpu_seconds(pid) - cpu0[k] for k, pid in pids.items()}
            cpu.update(got["cpu"])
            after = hub.counters()
            wrong = mirrored(target, pushed, opts.repos)
            results[sc] = {
                "wall": wall, "rss_kib": got["rss_kib"], "cpu": cpu,
                "rss_trace": got.get("rss_trace"), "phases": got.get("phases"),
                "gets": after["manifest_get"] - before["manifest_get"],
                "gets_min": need_gets,
                "heads": after["manifest_head"] - before["manifest_head"],
                "bytes": after["blob_bytes"] - before["blob_bytes"],
                "bytes_min": need_bytes,
                "requests": after["requests"] - before["requests"],
                "auth_leaks": after["auth_leaks"] - before["auth_leaks"],
                "wrong_tags": len(wrong),
            }
            print("  %-11s %-10s %6.2fs gets %d/%d bytes %d/%d rss %d KiB cpu %s%s" % (
                tool.name, sc, wall, results[sc]["gets"], need_gets, results[sc]["bytes"],
                need_bytes, got["rss_kib"],
                " ".join("%s=%.1f" % kv for kv in sorted(cpu.items())),
                "" if not wrong else "  WRONG TAGS: " + " ".join(wrong[:5])),
                file=sys.stderr, flush=True)
    finally:
        tool.close()
        target.stop()
        hub.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def summarize(runs):
    """Median wall time over runs; the other figures from the run with that median (they
    are the same in every run unless something is wrong, which the max shows)."""
    out = {}
    for sc in runs[0]:
        rows = [r[sc] for r in runs if sc in r]
        walls = [r["wall"] for r in rows]
        late = [r for r in rows if "timeout" in r]
        if late:
            out[sc] = dict(late[0], wall_min=min(walls), wall_max=max(walls))
            continue
        med = statistics.median(walls)
        out[sc] = dict(rows[0], wall=med, wall_min=min(walls), wall_max=max(walls),
                       gets=max(r["gets"] for r in rows),
                       bytes=max(r["bytes"] for r in rows),
                       rss_kib=max(r["rss_kib"] for r in rows),
                       wrong_tags=max(r["wrong_tags"] for r in rows),
                       auth_leaks=max(r["auth_leaks"] for r in rows))
    return out


# -- output ----------------------------------------------------------------------------------
def human(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024.0


def table(results, opts):
    """results: {latency: {tool: {scenario: figures}}} -> Markdown."""
    lines = ["| latency | scenario | tool | wall (median) | vs fastest peer | counted GETs "
             "(min) | blob bytes from upstream (min) | peak RSS | tags right |",
             "|---|---|---|---|---|---|---|---|---|"]
    for latency in sorted(results):
        per_tool = results[latency]
        for sc in SCENARIOS:
            rows = [(t, per_tool[t][sc]) for t in opts.tools if sc in per_tool.get(t, {})]
            peers = [f["wall"] for t, f in rows
                     if not t.startswith("hubsync") and "timeout" not in f]
            best_peer = min(peers) if peers else None
            for t, f in rows:
                if "timeout" in f:
                    lines.append("| %d ms | %s | %s | stopped after %.0f s | | %d so far (%d) "
                                 "| %s so far (%s) | | not finished |" % (
                                     latency, sc, t, f["wall"], f["gets"], f["gets_min"],
                                     human(f["bytes"]), human(f["bytes_min"])))
                    continue
                ratio = ""
                if best_peer is not None and t.startswith("hubsync") and f["wall"] > 0:
                    ratio = "%.1fx faster" % (best_peer / f["wall"])
                wall = "%.2f s" % f["wall"]
                if f["wall_max"] - f["wall_min"] > 0.005:
                    wall += " (%.2f-%.2f)" % (f["wall_min"], f["wall_max"])
                lines.append("| %d ms | %s | %s | %s | %s | %d (%d) | %s (%s) | %.1f MiB | %s |" % (
                    latency, sc, t, wall, ratio, f["gets"], f["gets_min"], human(f["bytes"]),
                    human(f["bytes_min"]), f["rss_kib"] / 1024.0,
                    "all" if f["wrong_tags"] == 0 else "%d wrong" % f["wrong_tags"]))
    return "\n".join(lines) + "\n"


CPU_KINDS = ["coordinator", "workers", "skopeo", "redis", "stand-in", "stand-in backend",
             "target"]


def cpu_table(results, opts):
    """CPU seconds of each process kind per sync, the run's phases (hubsync) and the
    largest worker's RSS sampled at each tenth of the run -> Markdown."""
    lines = ["| latency | scenario | tool | wall | " + " | ".join(CPU_KINDS) +
             " | CPU total (of %d CPUs x wall) | phases (s) | worker RSS by tenths of the run "
             "(MiB) |" % os.cpu_count(),
             "|---|---|---|---|" + "---|" * len(CPU_KINDS) + "---|---|---|"]
    for latency in sorted(results):
        for t in opts.tools:
            for sc, f in results[latency].get(t, {}).items():
                if "cpu" not in f:
                    continue
                cpu = f["cpu"]
                phases = f.get("phases") or {}
                lines.append("| %d ms | %s | %s | %.1f s | %s | %.1f (%.0f%%) | %s | %s |" % (
                    latency, sc, t, f["wall"],
                    " | ".join("%.1f" % cpu[k] if k in cpu else "" for k in CPU_KINDS),
                    sum(cpu.values()),
                    100.0 * sum(cpu.values()) / (os.cpu_count() * f["wall"]),
                    ", ".join("%s %.1f" % (k, v / 1000.0) for k, v in phases.items()
                              if isinstance(v, (int, float))),
                    " ".join("%.1f" % (k / 1024.0) for k in f.get("rss_trace") or [])))
    return "\n".join(lines) + "\n"


def speedup(results, opts):
    """hubsync 1 -> N workers on the full sync, per latency."""
    out = []
    for latency in sorted(results):
        r = results[latency]
        one = r.get("hubsync-1", {}).get("full")
        if one is None or "timeout" in one:
            continue
        parts = ["%s %.2fx" % (t, one["wall"] / r[t]["full"]["wall"])
                 for t in opts.tools if t.startswith("hubsync-") and "full" in r.get(t, {})
                 and "timeout" not in r[t]["full"]]
        out.append("- %d ms, full sync, speed-up over 1 worker: %s" % (latency,
                                                                        ", ".join(parts)))
    return "\n".join(out) + "\n"


# -- memory benchmark ------------------------------------------------------------------------
LIBRARY_FILE = """Maintainers: hubsync bench (@hubsync)
GitRepo: https://example.invalid/bench.git

Tags: latest
Architectures: amd64
GitCommit: 0123456789abcdef0123456789abcdef01234567
Directory: .
"""


def push_big_image(hub, repo, size, tmp):
    """library/<repo>:latest on the stand-in's backend: an OCI index of one amd64 image
    whose single layer is `size` random bytes (written straight into its storage); returns
    (index digest, layer digest)."""
    root = hub.storage
    layer = os.path.join(tmp, "layer")
    h = hashlib.sha256()
    chunk = 8 << 20
    with open(layer, "wb") as f:
        left = size
        while left:
            b = os.urandom(min(chunk, left))
            h.update(b)
            f.write(b)
            left -= len(b)
    layer_d = "sha256:" + h.hexdigest()
    data = layout.blob_data(root, layer_d)
    os.makedirs(os.path.dirname(data), exist_ok=True)
    os.replace(layer, data)  # moved, not copied: it can be GiBs
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [layer_d]}}).encode()
    config_d = "sha256:" + hashlib.sha256(config).hexdigest()
    layout.write_atomic(layout.blob_data(root, config_d), config)
    name = "library/" + repo
    for d in (layer_d, config_d):
        layout.write_link(layout.layer_link(root, name, d), d)
    image = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_d, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_d, "size": size}]}).encode()
    image_d = layout.put_manifest(root, name, image)
    index = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": image_d, "size": len(image),
                       "platform": {"architecture": "amd64", "os": "linux"}}]}).encode()
    index_d = layout.put_manifest(root, name, index, "latest")
    return index_d, layer_d


def library_repo(src, repos):
    """A one-commit official-images repository at src listing each repo (tag latest,
    amd64)."""
    os.makedirs(os.path.join(src, "library"))
    for repo in repos:
        with open(os.path.join(src, "library", repo), "w") as f:
            f.write(LIBRARY_FILE)
    git = ["git", "-C", src, "-c", "user.name=bench", "-c", "user.email=bench@invalid"]
    subprocess.check_call(git[:3] + ["init", "-q"])
    subprocess.check_call(git + ["add", "library"])
    subprocess.check_call(git + ["commit", "-q", "-m", "bench"])


def memory_bench(opts):
    """One worker copies one image with a `--big-size` layer; returns its figures."""
    tmp = tempfile.mkdtemp(prefix="hubsync-bench-mem-", dir=SHM)
    repo = "hubsync-bench-big"
    src = os.path.join(tmp, "official-images")
    hub = Standin(limit=10 ** 9, workdir=os.path.join(tmp, "hub"))
    target = Registry(workdir=os.path.join(tmp, "target"))
    os.makedirs(target.dir)
    tool = Hubsync(1)
    try:
        library_repo(src, [repo])
        hub.start()
        target.start()
        tool.open(tmp)
        index_d, _ = push_big_image(hub, repo, opts.big_size, tmp)
        ctx = Ctx(hub=hub, target=target, repos=[repo], source=src, ref="HEAD", tmp=tmp,
                  timeout=opts.timeout)
        before = hub.counters()
        t0 = time.monotonic()
        got = tool.sync(ctx)
        rss, wall = got["rss_kib"], got["end"] - t0
        after = hub.counters()
        got = head(target.url, "library/" + repo, "latest")
        if got != index_d:
            raise BenchError("memory benchmark: target has %s, upstream %s" % (got, index_d))
        return {"size": opts.big_size, "wall": wall, "rss_kib": rss,
                "bytes": after["blob_bytes"] - before["blob_bytes"]}
    finally:
        tool.close()
        target.stop()
        hub.stop()
        shutil.rmtree(tmp, ignore_errors=True)


# -- blob throughput (--scale big) -------------------------------------------------------------
def curl_blobs(hub, layers, target=None):
    """Fetch every layer at once with plain curl (following the CDN redirect, as hubsync
    does): to /dev/null, or streamed into target (a chunked PUT of a monolithic upload)
    when given. Returns the seconds until the last finished."""
    procs = []
    t0 = time.monotonic()
    for repo, digest in layers:
        name = "library/" + repo
        get = ["curl", "-sSf", "-L", "-H", "Authorization: Bearer " + hub.token(name),
               "%s/v2/%s/blobs/%s" % (hub.url, name, digest)]
        if target is None:
            procs.append(subprocess.Popen(get + ["-o", "/dev/null"]))
            continue
        req = urllib.request.Request("%s/v2/%s/blobs/uploads/" % (target.url, name),
                                     data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            loc = urllib.parse.urljoin(target.url, r.headers["Location"])
        loc += ("&" if "?" in loc else "?") + "digest=" + digest
        src = subprocess.Popen(get, stdout=subprocess.PIPE)
        procs.append(subprocess.Popen(["curl", "-sSf", "-X", "PUT", "-T", "-", "-o",
                                       "/dev/null", "-H",
                                       "Content-Type: application/octet-stream", loc],
                                      stdin=src.stdout))
        src.stdout.close()
        procs.append(src)
    bad = [p.args for p in procs if p.wait() != 0]
    if bad:
        raise BenchError("curl failed: %s" % bad[0])
    return time.monotonic() - t0


def skopeo_copies(hub, target, repos, tmp, timeout):
    """`skopeo copy --all` of every image at once, one process per image; returns
    (seconds, peak RSS KiB, CPU seconds)."""
    procs = []
    t0 = time.monotonic()
    for repo in repos:
        prefix, path = gnu_time(tmp)
        procs.append((subprocess.Popen(prefix + [
            "skopeo", "copy", "--all", "--preserve-digests", "--src-tls-verify=false",
            "--dest-tls-verify=false", "-q", "docker://%s/library/%s:latest" % (hub.host, repo),
            "docker://127.0.0.1:%d/library/%s:latest" % (target.port, repo)]), path))
    for p, _ in procs:
        if p.wait(timeout=timeout) != 0:
            raise BenchError("skopeo copy failed: %s" % p.args)
    wall = time.monotonic() - t0
    figs = [time_figures(path) for _, path in procs]
    return wall, max(k for k, _ in figs), sum(c for _, c in figs)


def big_bench(opts):
    """--big-count images of one --big-size random layer each, copied by hubsync (1 and 2
    workers), by skopeo copy and by plain curl (the limit) into fresh targets; returns rows
    of {tool, wall, bytes, rss_kib, cpu}."""
    tmp = tempfile.mkdtemp(prefix="hubsync-bench-big-", dir=SHM)
    repos = ["hubsync-bench-big%d" % i for i in range(opts.big_count)]
    src = os.path.join(tmp, "official-images")
    hub = Standin(limit=10 ** 9, workdir=os.path.join(tmp, "hub"))
    rows = []
    try:
        library_repo(src, repos)
        hub.start()
        layers = [(r, push_big_image(hub, r, opts.big_size, tmp)[1]) for r in repos]
        hub.config(latency_ms=opts.latency[0])
        total = opts.big_size * len(repos)
        tools = [t for t in opts.tools if t.startswith("hubsync-")] + ["skopeo-copy",
                                                                       "curl-null",
                                                                       "curl-pipe"]
        for name in tools:
            target = Registry(workdir=os.path.join(tmp, "target-" + name))
            os.makedirs(target.dir)
            target.start()
            tool = make_tool(name) if name.startswith("hubsync-") else None
            try:
                pid = target.proc.pid
                cpu0 = {"stand-in": cpu_seconds(hub.front.proc.pid),
                        "stand-in backend": cpu_seconds(hub.registry.proc.pid),
                        "target": cpu_seconds(pid)}
                before = hub.counters()
                t0 = time.monotonic()
                row = {"tool": name, "rss_kib": None, "cpu": {}}
                if tool is not None:
                    tool.open(tmp)
                    got = tool.sync(Ctx(hub=hub, target=target, repos=repos, source=src,
                                        ref="HEAD", tmp=tmp, timeout=opts.timeout))
                    row.update(wall=got["end"] - t0, rss_kib=got["rss_kib"],
                               cpu=dict(got["cpu"]))
                elif name == "skopeo-copy":
                    wall, kib, sec = skopeo_copies(hub, target, repos, tmp, opts.timeout)
                    row.update(wall=wall, rss_kib=kib, cpu={"skopeo": sec})
                else:
                    row["wall"] = curl_blobs(hub, layers,
                                             target if name == "curl-pipe" else None)
                row["cpu"].update({"stand-in": cpu_seconds(hub.front.proc.pid) -
                                   cpu0["stand-in"],
                                   "stand-in backend": cpu_seconds(hub.registry.proc.pid) -
                                   cpu0["stand-in backend"],
                                   "target": cpu_seconds(pid) - cpu0["target"]})
                row["bytes"] = hub.counters()["blob_bytes"] - before["blob_bytes"]
                if name != "curl-null":
                    missing = [r for r, d in layers
                               if not blob_present(target, r, d)]
                    if missing:
                        raise BenchError("%s: the target lacks the layer of %s" % (
                            name, ", ".join(missing)))
                rows.append(row)
                print("  %-11s %6.2fs %.1f MiB/s" % (name, row["wall"],
                                                      total / 1048576.0 / row["wall"]),
                      file=sys.stderr, flush=True)
            finally:
                if tool is not None:
                    tool.close()
                target.stop()
    finally:
        hub.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def blob_present(target, repo, digest):
    req = urllib.request.Request("%s/v2/library/%s/blobs/%s" % (target.url, repo, digest),
                                 method="HEAD")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status == 200
    except urllib.error.HTTPError:
        return False


def big_table(rows, opts):
    total = opts.big_size * opts.big_count
    curl = next((r["wall"] for r in rows if r["tool"] == "curl-null"), None)
    lines = ["| tool | wall | MiB/s | of curl to /dev/null | blob bytes from upstream | peak "
             "RSS | CPU s (copier, stand-in, stand-in backend, target; curl's not taken) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        copier = [v for k, v in r["cpu"].items()
                  if k not in ("stand-in", "stand-in backend", "target", "redis")]
        lines.append("| %s | %.2f s | %.1f | %s | %s | %s | %s, %.1f, %.1f, %.1f |" % (
            r["tool"], r["wall"], total / 1048576.0 / r["wall"],
            "%.0f%%" % (100.0 * curl / r["wall"]) if curl else "",
            human(r["bytes"]), "" if r["rss_kib"] is None else "%.1f MiB" % (
                r["rss_kib"] / 1024.0),
            "%.1f" % sum(copier) if copier else "-", r["cpu"]["stand-in"],
            r["cpu"]["stand-in backend"], r["cpu"]["target"]))
    return "\n".join(lines) + "\n"


# -- main ------------------------------------------------------------------------------------
def month_before(source, ref):
    """The newest commit at least 30 days older than ref (the catalog scale's OLD)."""
    when = int(subprocess.check_output(["git", "-C", source, "log", "-1", "--format=%ct",
                                        ref], text=True))
    return subprocess.check_output(["git", "-C", source, "rev-list", "-1",
                                    "--before=%d" % (when - 30 * 86400), ref],
                                   text=True).strip()[:12]


def newest(source):
    return subprocess.check_output(["git", "-C", source, "rev-parse", "--short=12", "HEAD"],
                                   text=True).strip()


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=sorted(SCALES), default="repos",
                    help="defaults of every option below: %s" % "; ".join(
                        "%s: %s" % kv for kv in sorted(SCALES.items())))
    ap.add_argument("--repos", help="repositories (quick: %s; 'all': the whole catalog)"
                    % QUICK["repos"])
    ap.add_argument("--latency-ms", help="comma-separated stand-in latencies per request "
                    "(quick: 0)")
    ap.add_argument("--runs", type=int, help="runs per tool and latency (quick: 1)")
    ap.add_argument("--tools", help="hubsync-N (N workers), %s" % ", ".join(
        t for t in TOOLS if not t.startswith("hubsync")))
    ap.add_argument("--scenarios", help="of %s" % ",".join(SCENARIOS))
    ap.add_argument("--rebuild", help="groups rebuilt upstream, repo:tag,... (default %s)"
                    % DEFAULT_REBUILD)
    ap.add_argument("--old-ref", help="OLD official-images commit (catalog: the newest "
                    "commit 30 days before NEW)")
    ap.add_argument("--new-ref", help="NEW official-images commit (catalog: the newest)")
    ap.add_argument("--worker-concurrency", type=int,
                    help="hubsync-worker --concurrency (default: the worker's own, 8)")
    ap.add_argument("--connections-per-host", type=int,
                    help="hubsync-worker --connections-per-host (default: the worker's own, 8)")
    ap.add_argument("--layer-size", type=int, help="payload bytes per layer")
    ap.add_argument("--official-images", default=OFFICIAL_IMAGES,
                    help="bare official-images repository (cloned to a temp dir)")
    ap.add_argument("--quick", action="store_true", help="CI mode: %s" % QUICK)
    ap.add_argument("--memory", action="store_true", help="also the 1 GiB memory benchmark")
    ap.add_argument("--memory-only", action="store_true", help="only the memory benchmark")
    ap.add_argument("--big-size", type=int,
                    help="layer size of the memory benchmark (1 GiB) and of each image of "
                    "the big scale (256 MiB)")
    ap.add_argument("--big-count", type=int, default=3,
                    help="images of the big scale (default %(default)s)")
    ap.add_argument("--proxied-reads", action="store_true",
                    help="repos and catalog scales: the stand-in sends every read to its "
                    "backend docker-registry (the tables before 2026-12-03 19:00) instead of "
                    "reading its storage files (the big scale and --memory always send them)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per sync")
    ap.add_argument("--out", help="also write the Markdown here")
    ap.add_argument("--json", help="write every figure as JSON here")
    opts = ap.parse_args(argv)
    scale = dict(SCALES[opts.scale], **(QUICK if opts.quick else {}))
    for key in ("repos", "latency_ms", "runs", "tools", "scenarios", "rebuild", "old_ref",
                "new_ref", "layer_size", "big_size"):
        if getattr(opts, key) is None:
            setattr(opts, key, scale.get(key))
    opts.repos = None if opts.repos in (None, "all") else opts.repos.split(",")
    opts.latency = [int(x) for x in opts.latency_ms.split(",")]
    opts.rebuild = opts.rebuild.split(",")
    opts.tools = opts.tools.split(",")
    opts.scenarios = opts.scenarios.split(",")
    for t in opts.tools:
        make_tool(t)
    bad = [s for s in opts.scenarios if s not in SCENARIOS]
    if bad:
        ap.error("unknown scenario %s (one of %s)" % (",".join(bad), ",".join(SCENARIOS)))
    return opts


def chains(opts):
    """The scenarios in chains: month needs a target that holds OLD, so it has its own."""
    out = [[s for s in SCENARIOS if s in opts.scenarios and s != "month"]]
    if "month" in opts.scenarios:
        out.append(["month"])
    return [c for c in out if c]


def catalog_bench(opts, doc, emit):
    work = tempfile.mkdtemp(prefix="hubsync-bench-oi-")
    try:
        opts.source = os.path.join(work, "official-images.git")
        subprocess.check_call(["git", "clone", "-q", "--bare", opts.official_images,
                               opts.source])
        if opts.scale == "catalog":
            opts.new_ref = opts.new_ref or newest(opts.source)
            opts.old_ref = opts.old_ref or month_before(opts.source, opts.new_ref)
            opts.full_ref = opts.new_ref
        else:
            opts.full_ref = opts.old_ref
        doc.update(old_ref=opts.old_ref, new_ref=opts.new_ref)
        cats = {"old": catalog(opts.repos, opts.old_ref, opts.source),
                "new": catalog(opts.repos, opts.new_ref, opts.source),
                "moved": moved_groups(opts.source, opts.old_ref, opts.new_ref, opts.repos)}
        results = {}
        for latency in opts.latency:
            results[latency] = {}
            for name in opts.tools:
                runs = []
                for i in range(opts.runs):
                    print("latency %d ms, %s, run %d/%d" % (latency, name, i + 1, opts.runs),
                          file=sys.stderr, flush=True)
                    one = {}
                    for scenarios in chains(opts):
                        one.update(chain(make_tool(name, opts.worker_concurrency,
                                                   opts.connections_per_host), opts,
                                         latency, cats, scenarios))
                    runs.append(one)
                results[latency][name] = summarize(runs)
                doc["results"] = results
                emit("")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    full = cats["new" if opts.full_ref == opts.new_ref else "old"]
    doc.update(moved=cats["moved"],
               tags=sum(len(g["tags"]) for r in full["repositories"] for g in r["groups"]),
               groups=sum(len(r["groups"]) for r in full["repositories"]),
               repositories=len(full["repositories"]))
    emit(table(results, opts))
    emit(cpu_table(results, opts))
    emit(speedup(results, opts))


def main(argv=None):
    opts = parse_args(argv)
    for prog in (GNU_TIME, BIN + "/hubsync-coordinator", BIN + "/hubsync-worker"):
        if not os.access(prog, os.X_OK):
            raise BenchError("%s missing (install GNU time; run make)" % prog)
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    load_before = os.getloadavg()
    doc = {"date": started, "scale": opts.scale, "repos": opts.repos,
           "layer_size": opts.layer_size, "rebuild": opts.rebuild, "runs": opts.runs,
           "cpus": os.cpu_count(), "load_before": load_before,
           "worker_concurrency": opts.worker_concurrency,
           "connections_per_host": opts.connections_per_host}
    md = []

    def emit(part):
        """Print each part as soon as it is measured, and keep the files up to date."""
        if part:
            md.append(part)
            sys.stdout.write(part + "\n")
            sys.stdout.flush()
        if opts.out:
            with open(opts.out, "w") as f:
                f.write("\n".join(md))
        if opts.json:
            with open(opts.json, "w") as f:
                json.dump(doc, f, indent=1, sort_keys=True)

    if opts.scale == "big":
        doc["big"] = big_bench(opts)
        emit(big_table(doc["big"], opts))
    elif not opts.memory_only:
        catalog_bench(opts, doc, emit)
    if opts.memory or opts.memory_only:
        opts.big_size = opts.big_size or 1 << 30
        mem = memory_bench(opts)
        doc["memory"] = mem
        emit("- memory: one worker copying a %s blob: peak RSS %.1f MiB, %.1f s, %s from "
             "upstream\n" % (human(mem["size"]), mem["rss_kib"] / 1024.0, mem["wall"],
                             human(mem["bytes"])))
    doc["load_after"] = os.getloadavg()
    if opts.scale == "big":
        setup = "; %d images of one %s layer; latency %d ms" % (
            opts.big_count, human(opts.big_size), opts.latency[0])
    elif opts.memory_only:
        setup = ""
    else:
        setup = ("; repos %s; layer size %d bytes; %d run(s); worker concurrency %s; "
                 "connections per host %s; refs %s -> %s; rebuilt %s; stand-in reads %s" % (
                     ",".join(opts.repos) if opts.repos else "all", opts.layer_size,
                     opts.runs, opts.worker_concurrency or "default",
                     opts.connections_per_host or "default", opts.old_ref,
                     opts.new_ref, ",".join(opts.rebuild),
                     "proxied to its backend" if opts.proxied_reads else "from storage"))
    emit("- %s, %d CPUs, load average %.2f before, %.2f after%s\n" % (
        started, os.cpu_count(), load_before[0], doc["load_after"][0], setup))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print("bench: %s" % e, file=sys.stderr)
        sys.exit(1)
