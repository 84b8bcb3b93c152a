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
Each scenario records wall time, counted upstream GETs (stand-in counters) against the least
needed, blob bytes from upstream against the unique bytes needed, and the peak RSS of the
copying processes (GNU time). The table gives the median wall time over the runs.

    python3 tests/bench/run.py                       # the committed table (tests/bench/README.md)
    python3 tests/bench/run.py --quick               # CI: small repos, 1 run, 0 ms
    python3 tests/bench/run.py --memory-only         # one worker copying a 1 GiB blob

Python 3 standard library only; needs bin/ built (make), skopeo, docker-registry,
redis-server and /usr/bin/time.
"""
import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/: harness, standin

from harness import BIN, OFFICIAL_IMAGES, RedisServer, Registry  # noqa: E402
from harness.programs import catalog, coordinator  # noqa: E402
from harness.stack import Stack  # noqa: E402
from harness.standin import Standin  # noqa: E402
from harness.target import head  # noqa: E402
from standin.loader import repo_name  # noqa: E402

GNU_TIME = "/usr/bin/time"
SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None
SCENARIOS = ["full", "noop", "rebuild", "ref"]
TOOLS = ["hubsync-1", "hubsync-2", "hubsync-4", "skopeo-sync", "seed-script"]
# Commits of the real official-images history: busybox (8e5e322), hello-world (043587d) and
# alpine (00b473f) changed between these two.
OLD_REF, NEW_REF = "8e5e322~1", "00b473f"
DEFAULT_REPOS = "hello-world,busybox"
DEFAULT_REBUILD = "busybox:musl"
QUICK = {"repos": "hello-world,busybox", "runs": 1, "latency": "0",
         "rebuild": "busybox:musl"}


class BenchError(Exception):
    """A tool failed or the stack misbehaved; the message says which and where."""


# -- helpers ---------------------------------------------------------------------------------
def moved_groups(source, old, new, repos):
    """"repo:tag" of each tag group whose library entry changed between two refs and that
    existed before (new entries are new content anyway)."""
    diff = json.loads(subprocess.check_output(
        coordinator("diff", "--from", old, "--to", new, "--json", official_images=source)))
    return ["%s:%s" % (r["name"], g["tags"][0]) for r in diff["repositories"]
            if r["name"] in repos for g in r["groups"]
            if g["kind"] == "tags" and g["change"] == "changed" and g["key"] == g["old_key"]]


def content(pushed, repos):
    """(set of (repo, manifest digest), {blob digest: size}) a pushed manifest holds."""
    wanted = {repo_name(r) for r in repos}
    manifests, blobs = set(), {}
    for r in pushed["repositories"]:
        if r["name"] not in wanted:
            continue
        for g in r["groups"]:
            manifests.add((r["name"], g["index"]["digest"]))
            manifests.update((r["name"], c["digest"]) for c in g["children"])
            blobs.update((b["digest"], b["size"]) for b in g["blobs"])
    return manifests, blobs


def tag_digests(pushed, repos):
    wanted = {repo_name(r) for r in repos}
    return {(r["name"], t): d for r in pushed["repositories"] if r["name"] in wanted
            for t, d in r["tags"].items()}


def mirrored(target, pushed, repos):
    """Tags on the target that do not carry the upstream digest (empty when all do)."""
    return sorted("%s:%s" % k for k, d in tag_digests(pushed, repos).items()
                  if head(target.url, k[0], k[1]) != d)


def gnu_time(tmp):
    """(command prefix that runs a program under GNU time, file that will hold its peak RSS
    in KiB)."""
    fd, rss = tempfile.mkstemp(prefix="rss-", dir=tmp)
    os.close(fd)
    return [GNU_TIME, "-f", "%M", "-o", rss], rss


def peak_kib(path):
    with open(path) as f:
        lines = [x for x in f.read().split() if x.isdigit()]
    if not lines:
        raise BenchError("no peak RSS recorded in %s" % path)
    return int(lines[-1])


def run_checked(cmd, tmp, what, timeout):
    """Run one command under GNU time; returns its peak RSS in KiB."""
    prefix, rss = gnu_time(tmp)
    p = subprocess.Popen(prefix + cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    out, _ = p.communicate(timeout=timeout)
    if p.returncode != 0:
        raise BenchError("%s failed (exit %d): %s" % (what, p.returncode, out[-2000:]))
    return peak_kib(rss)


# -- tools -----------------------------------------------------------------------------------
class Hubsync:
    """hubsync-coordinator sync --once --wait plus N hubsync-worker --exit-when-idle; one
    Redis for the whole chain (it is hubsync's memory between runs)."""

    def __init__(self, workers, concurrency=None):
        self.name = "hubsync-%d" % workers
        self.workers = workers
        self.extra = [] if concurrency is None else ["--concurrency", str(concurrency)]
        self.redis = None

    def open(self, tmp):
        self.redis = RedisServer().start()

    def close(self):
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    def sync(self, ctx):
        st = Stack(ctx.repos, hub=ctx.hub, redis=self.redis, target=ctx.target,
                   source=ctx.source, ref=ctx.ref, log_level="warn", worker_args=self.extra)
        try:
            # End to end, as an operator runs it: the coordinator and the workers start
            # together and the sync is over when the last of them has exited. Batch workers
            # leave as soon as the run is over; the idle grace only bounds how long they
            # wait for the coordinator to queue the run (it reads official-images first).
            st.coordinator()
            rss = []
            for _ in range(self.workers):
                prefix, path = gnu_time(ctx.tmp)
                st.worker("--exit-when-idle", "--idle-grace", "120", wrap=prefix)
                rss.append(path)
            run = st.report(timeout=ctx.timeout)
            for w in st.workers:
                w.wait(timeout=60)
            end = time.monotonic()
        finally:
            st.stop()
        if run.rc != 0:
            raise BenchError("%s: coordinator exit %d: %s" % (self.name, run.rc,
                                                             run.stderr[-2000:]))
        if run.report.get("status") != "complete":
            raise BenchError("%s: run %s" % (self.name, run.report.get("status")))
        return max(peak_kib(p) for p in rss), end


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
        rss = run_checked(["skopeo", "sync", "--all", "--preserve-digests", "--src", "yaml",
                           "--dest", "docker", "--dest-tls-verify=false", cfg, dest],
                          ctx.tmp, self.name, ctx.timeout)
        return rss, time.monotonic()


class SeedScript(Peer):
    """The user's old script, done right (all platforms): per tag group `skopeo copy --all`
    of its first tag from upstream, then target-to-target `skopeo copy --all` for the others.
    Run in full every time (its incremental mode followed `git diff` and so never saw
    upstream rebuilds)."""

    name = "seed-script"

    def sync(self, ctx):
        peak = 0
        tgt = "docker://127.0.0.1:%d/" % ctx.target.port
        base = ["skopeo", "copy", "--all", "--preserve-digests", "--src-tls-verify=false",
                "--dest-tls-verify=false", "-q"]
        for r in ctx.catalog["repositories"]:
            name = repo_name(r["name"])
            for g in r["groups"]:
                first = g["tags"][0]
                peak = max(peak, run_checked(
                    base + ["docker://%s/%s:%s" % (ctx.hub.host, name, first),
                            "%s%s:%s" % (tgt, name, first)],
                    ctx.tmp, "%s %s:%s" % (self.name, name, first), ctx.timeout))
                for t in g["tags"][1:]:
                    peak = max(peak, run_checked(
                        base + ["%s%s:%s" % (tgt, name, first), "%s%s:%s" % (tgt, name, t)],
                        ctx.tmp, "%s retag %s:%s" % (self.name, name, t), ctx.timeout))
        return peak, time.monotonic()


def make_tool(name, concurrency=None):
    if name.startswith("hubsync-"):
        return Hubsync(int(name.split("-", 1)[1]), concurrency)
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


def chain(tool, opts, latency, cats):
    """Run every chosen scenario once for one tool; returns {scenario: figures}."""
    tmp = tempfile.mkdtemp(prefix="hubsync-bench-", dir=SHM)
    hub = Standin(limit=10 ** 9, workdir=os.path.join(tmp, "hub"))
    target = Registry(workdir=os.path.join(tmp, "target"))
    os.makedirs(target.dir)
    results = {}
    try:
        hub.start()
        target.start()
        tool.open(tmp)
        pushed = hub.load(cats["old"], layer_size=opts.layer_size)
        hub.config(latency_ms=latency)
        seen_m, seen_b = set(), {}
        for sc in SCENARIOS:
            if sc not in opts.scenarios:
                continue
            ref, cat = opts.old_ref, cats["old"]
            if sc == "rebuild":
                pushed = hub.rebuild(*opts.rebuild)
            elif sc == "ref":
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
            before = hub.counters()
            t0 = time.monotonic()
            rss, end = tool.sync(ctx)
            wall = end - t0
            after = hub.counters()
            wrong = mirrored(target, pushed, opts.repos)
            results[sc] = {
                "wall": wall, "rss_kib": rss,
                "gets": after["manifest_get"] - before["manifest_get"],
                "gets_min": need_gets,
                "heads": after["manifest_head"] - before["manifest_head"],
                "bytes": after["blob_bytes"] - before["blob_bytes"],
                "bytes_min": need_bytes,
                "requests": after["requests"] - before["requests"],
                "auth_leaks": after["auth_leaks"] - before["auth_leaks"],
                "wrong_tags": len(wrong),
            }
            print("  %-11s %-8s %6.2fs gets %d/%d bytes %d/%d rss %d KiB%s" % (
                tool.name, sc, wall, results[sc]["gets"], need_gets, results[sc]["bytes"],
                need_bytes, rss, "" if not wrong else "  WRONG TAGS: " + " ".join(wrong[:5])),
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
        rows = [r[sc] for r in runs]
        walls = [r["wall"] for r in rows]
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
            peers = [f["wall"] for t, f in rows if not t.startswith("hubsync")]
            best_peer = min(peers) if peers else None
            for t, f in rows:
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


def speedup(results, opts):
    """hubsync 1 -> N workers on the full sync, per latency."""
    out = []
    for latency in sorted(results):
        r = results[latency]
        one = r.get("hubsync-1", {}).get("full")
        if one is None:
            continue
        parts = ["%s %.2fx" % (t, one["wall"] / r[t]["full"]["wall"])
                 for t in opts.tools if t.startswith("hubsync-") and "full" in r.get(t, {})]
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


def _store(storage, data_path, digest):
    """Move a file into docker-registry's blob layout."""
    hexd = digest.split(":", 1)[1]
    dst = os.path.join(storage, "blobs", "sha256", hexd[:2], hexd, "data")
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    os.replace(data_path, dst)


def _link(storage, *parts, digest):
    path = os.path.join(storage, "repositories", *parts)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(digest)


def _store_bytes(storage, tmp, body):
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    path = os.path.join(tmp, "obj")
    with open(path, "wb") as f:
        f.write(body)
    _store(storage, path, digest)
    return digest


def push_big_image(hub, repo, size, tmp):
    """library/<repo>:latest on the stand-in's backend: an OCI index of one amd64 image
    whose single layer is `size` random bytes (written straight into its storage)."""
    storage = os.path.join(hub.storage, "docker", "registry", "v2")
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
    _store(storage, layer, layer_d)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [layer_d]}}).encode()
    config_d = _store_bytes(storage, tmp, config)
    name = "library/" + repo
    for d in (layer_d, config_d):
        _link(storage, name, "_layers", "sha256", d.split(":")[1], "link", digest=d)
    image = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_d, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_d, "size": size}]}).encode()
    image_d = _store_bytes(storage, tmp, image)
    index = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": image_d, "size": len(image),
                       "platform": {"architecture": "amd64", "os": "linux"}}]}).encode()
    index_d = _store_bytes(storage, tmp, index)
    for d in (image_d, index_d):
        _link(storage, name, "_manifests", "revisions", "sha256", d.split(":")[1], "link",
              digest=d)
    _link(storage, name, "_manifests", "tags", "latest", "current", "link", digest=index_d)
    _link(storage, name, "_manifests", "tags", "latest", "index", "sha256",
          index_d.split(":")[1], "link", digest=index_d)
    return index_d


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
        os.makedirs(os.path.join(src, "library"))
        with open(os.path.join(src, "library", repo), "w") as f:
            f.write(LIBRARY_FILE)
        git = ["git", "-C", src, "-c", "user.name=bench", "-c", "user.email=bench@invalid"]
        subprocess.check_call(git[:3] + ["init", "-q"])
        subprocess.check_call(git + ["add", "library"])
        subprocess.check_call(git + ["commit", "-q", "-m", "bench"])
        hub.start()
        target.start()
        tool.open(tmp)
        index_d = push_big_image(hub, repo, opts.big_size, tmp)
        ctx = Ctx(hub=hub, target=target, repos=[repo], source=src, ref="HEAD", tmp=tmp,
                  timeout=opts.timeout)
        before = hub.counters()
        t0 = time.monotonic()
        rss, end = tool.sync(ctx)
        wall = end - t0
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


# -- main ------------------------------------------------------------------------------------
def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repos", help="repositories (default %s; quick: %s)"
                    % (DEFAULT_REPOS, QUICK["repos"]))
    ap.add_argument("--latency-ms", help="comma-separated stand-in latencies per request "
                    "(default 0,30; quick: 0)")
    ap.add_argument("--runs", type=int, help="runs per tool and latency (default 3; quick: 1)")
    ap.add_argument("--tools", default=",".join(TOOLS), help="default %(default)s")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="default %(default)s")
    ap.add_argument("--rebuild", help="groups rebuilt upstream, repo:tag,... (default %s)"
                    % DEFAULT_REBUILD)
    ap.add_argument("--old-ref", default=OLD_REF, help="default %(default)s")
    ap.add_argument("--new-ref", default=NEW_REF, help="default %(default)s")
    ap.add_argument("--worker-concurrency", type=int,
                    help="hubsync-worker --concurrency (default: the worker's own, 8)")
    ap.add_argument("--layer-size", type=int, default=65536,
                    help="payload bytes per layer (default %(default)s)")
    ap.add_argument("--official-images", default=OFFICIAL_IMAGES,
                    help="bare official-images repository (cloned to a temp dir)")
    ap.add_argument("--quick", action="store_true", help="CI mode: %s" % QUICK)
    ap.add_argument("--memory", action="store_true", help="also the 1 GiB memory benchmark")
    ap.add_argument("--memory-only", action="store_true", help="only the memory benchmark")
    ap.add_argument("--big-size", type=int, default=1 << 30,
                    help="layer size of the memory benchmark (default %(default)s)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per sync")
    ap.add_argument("--out", help="also write the Markdown here")
    ap.add_argument("--json", help="write every figure as JSON here")
    opts = ap.parse_args(argv)
    q = opts.quick
    opts.repos = (opts.repos or (QUICK["repos"] if q else DEFAULT_REPOS)).split(",")
    opts.latency = [int(x) for x in (opts.latency_ms or (QUICK["latency"] if q else
                                                          "0,30")).split(",")]
    opts.runs = opts.runs or (QUICK["runs"] if q else 3)
    opts.rebuild = (opts.rebuild or (QUICK["rebuild"] if q else DEFAULT_REBUILD)).split(",")
    opts.tools = opts.tools.split(",")
    opts.scenarios = opts.scenarios.split(",")
    for t in opts.tools:
        make_tool(t)
    bad = [s for s in opts.scenarios if s not in SCENARIOS]
    if bad:
        ap.error("unknown scenario %s (one of %s)" % (",".join(bad), ",".join(SCENARIOS)))
    return opts


def main(argv=None):
    opts = parse_args(argv)
    for prog in (GNU_TIME, BIN + "/hubsync-coordinator", BIN + "/hubsync-worker"):
        if not os.access(prog, os.X_OK):
            raise BenchError("%s missing (install GNU time; run make)" % prog)
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    load_before = os.getloadavg()
    doc = {"date": started, "repos": opts.repos, "layer_size": opts.layer_size,
           "old_ref": opts.old_ref, "new_ref": opts.new_ref, "rebuild": opts.rebuild,
           "runs": opts.runs, "cpus": os.cpu_count(), "load_before": load_before}
    md = []

    def emit(part):
        """Print each part as soon as it is measured, and keep the files up to date."""
        md.append(part)
        sys.stdout.write(part + "\n")
        sys.stdout.flush()
        if opts.out:
            with open(opts.out, "w") as f:
                f.write("\n".join(md))
        if opts.json:
            with open(opts.json, "w") as f:
                json.dump(doc, f, indent=1, sort_keys=True)

    if not opts.memory_only:
        work = tempfile.mkdtemp(prefix="hubsync-bench-oi-")
        try:
            opts.source = os.path.join(work, "official-images.git")
            subprocess.check_call(["git", "clone", "-q", "--bare", opts.official_images,
                                   opts.source])
            cats = {"old": catalog(opts.repos, opts.old_ref, opts.source),
                    "new": catalog(opts.repos, opts.new_ref, opts.source),
                    "moved": moved_groups(opts.source, opts.old_ref, opts.new_ref,
                                          opts.repos)}
            results = {}
            for latency in opts.latency:
                results[latency] = {}
                for name in opts.tools:
                    runs = []
                    for i in range(opts.runs):
                        print("latency %d ms, %s, run %d/%d" % (latency, name, i + 1,
                                                                 opts.runs),
                              file=sys.stderr, flush=True)
                        runs.append(chain(make_tool(name, opts.worker_concurrency), opts,
                                          latency, cats))
                    results[latency][name] = summarize(runs)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        doc.update(results=results, moved=cats["moved"], load_after=os.getloadavg(),
                   tags=sum(len(g["tags"]) for r in cats["old"]["repositories"]
                            for g in r["groups"]),
                   groups=sum(len(r["groups"]) for r in cats["old"]["repositories"]))
        emit(table(results, opts))
        emit(speedup(results, opts))
    if opts.memory or opts.memory_only:
        mem = memory_bench(opts)
        doc["memory"] = mem
        emit("- memory: one worker copying a %s blob: peak RSS %.1f MiB, %.1f s, %s from "
             "upstream\n" % (human(mem["size"]), mem["rss_kib"] / 1024.0, mem["wall"],
                             human(mem["bytes"])))
    doc["load_after"] = os.getloadavg()
    setup = "" if opts.memory_only else (
        "; repos %s; layer size %d bytes; %d run(s); worker concurrency %s; refs %s -> %s; "
        "rebuilt %s" % (",".join(opts.repos), opts.layer_size, opts.runs,
                        opts.worker_concurrency or "default", opts.old_ref, opts.new_ref,
                        ",".join(opts.rebuild)))
    emit("- %s, %d CPUs, load average %.2f before, %.2f after%s\n" % (
        started, os.cpu_count(), load_before[0], doc["load_after"][0], setup))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print("bench: %s" % e, file=sys.stderr)
        sys.exit(1)
