#!/usr/bin/env python3
"""hubsync's local demo: a whole sync on loopback, in well under a minute.

    make demo                        (after make; or: python3 tests/demo/demo.py [options])

Starts a Redis, a target docker-registry and the Docker Hub stand-in filled from the real
official-images data (../shared/official-images), two workers and the coordinator
(`sync --once --wait`, with its progress); prints the run report, the workers' job lines and
the redis-cli commands to look inside (with the real port); pulls one image with podman
through a registries.conf mirror pointing at the target and shows that its digest is the
upstream one; then stops and removes everything. Exit 0 when the run completed and the
pulled digest is the upstream one, or when the run was deferred by the pull budget (with a
low --limit; the pull is then skipped if the image did not make it).
Python standard library only.
"""
import argparse
import os
import shlex
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import harness  # noqa: E402
from harness.podman import Podman, PodmanError, registries_conf  # noqa: E402
from harness.stack import PREFIX, Stack, StackError  # noqa: E402

DEFAULT_REPOS = "hello-world,alpine,memcached,registry"
# What a client asking Docker Hub would show in the stand-in's counters.
UPSTREAM_COUNTERS = ("token_requests", "manifest_get", "manifest_head", "blob_get", "blob_head")
EXIT_DEFERRED = 75


def say(text=""):
    print(text, flush=True)


def step(text):
    say("\n==> " + text)


def indent(text, pad="    "):
    return "\n".join(pad + line for line in text.rstrip("\n").splitlines())


def parse_args(argv):
    ap = argparse.ArgumentParser(description="Run a whole hubsync sync on loopback and pull "
                                 "one image through the target with podman.")
    ap.add_argument("--repos", default=DEFAULT_REPOS,
                    help="official-images repositories to sync (default: %(default)s)")
    ap.add_argument("--image", default="hello-world:latest",
                    help="docker.io/library image podman pulls through the mirror "
                    "(default: %(default)s)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes (default: 2)")
    ap.add_argument("--limit", type=int, default=10000,
                    help="anonymous pulls per window the stand-in grants (Docker Hub: 100; "
                    "try 100 to see a run deferred by the budget; default: %(default)s)")
    ap.add_argument("--official-images",
                    help="official-images repository, a path or a URL (default: "
                    "$HUBSYNC_OFFICIAL_IMAGES, else %s when it exists, else a clone of %s in "
                    "build/)" % (harness.SHARED_OFFICIAL_IMAGES, harness.OFFICIAL_IMAGES_URL))
    ap.add_argument("--keep", action="store_true",
                    help="keep everything running until Enter, to try the redis-cli commands")
    return ap.parse_args(argv)


class Demo:
    def __init__(self, args):
        self.a = args
        self.stack = Stack(args.repos, limit=args.limit, source=args.official_images)
        self.worker_logs = []
        self.deferred = False

    # -- set-up -------------------------------------------------------------------------
    def start(self):
        step("Reading official-images with the coordinator and starting the servers")
        st = self.stack.start()
        cat = st.catalog
        groups = sum(len(r["groups"]) for r in cat["repositories"])
        tags = sum(len(g["tags"]) for r in cat["repositories"] for g in r["groups"])
        t = st.pushed["totals"]
        say("    official-images   %s at %.12s" % (self.a.official_images, cat["commit"]))
        say("    to sync           %s: %d tag groups (one job each), %d tags"
            % (self.a.repos, groups, tags))
        say("    Redis             %s" % st.redis.url)
        say("    target registry   %s   (docker-registry, empty)" % st.target.url)
        say("    Docker Hub        %s   (stand-in: %d indexes, %d manifests, %d blobs; "
            "%d pulls per window)" % (st.hub.url, t["indexes"], t["manifests"], t["blobs"],
                                      self.a.limit))

    def start_workers(self):
        step("Starting %d workers (they wait for jobs; logs in %s)"
             % (self.a.workers, self.stack.dir))
        for i in range(self.a.workers):
            name = "worker-%d.log" % (i + 1)
            self.stack.worker("--id", "demo-worker-%d" % (i + 1), log=name)
            self.worker_logs.append(self.stack.log_path(name))

    # -- the run ------------------------------------------------------------------------
    def sync(self):
        cmd = self.stack.sync_argv(json_report=False)
        step("Syncing: " + " ".join(shlex.quote(c) for c in
                                     ["hubsync-coordinator"] + cmd[1:]))
        # Progress goes to our stderr as is (an updating line on a terminal); the report is
        # the coordinator's stdout.
        p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        say(p.stdout.rstrip("\n"))
        if p.returncode == 128 + signal.SIGINT:
            raise KeyboardInterrupt  # the terminal's Ctrl-C reached the coordinator first
        if p.returncode == EXIT_DEFERRED:
            self.deferred = True
            say("    (deferred: the stand-in's pull budget ran out; a daemon coordinator "
                "resumes in the next window)")
        elif p.returncode != 0:
            raise SystemExit("the sync failed (exit %d)" % p.returncode)
        return p.returncode

    def show_worker_lines(self):
        # A job's end is "job=<key> run=... status=..."; "assist job=..." is a worker
        # copying children of another's job (docs/scaling.md), not a job of its own.
        lines, assists = [], 0
        for path in self.worker_logs:
            with open(path, errors="replace") as f:
                mine = [line.rstrip("\n") for line in f if " job=" in line and " status=" in line]
            assists += sum(1 for line in mine if "assist job=" in line)
            lines.append([line for line in mine if "assist job=" not in line])
        step("Workers: one log line per job (%s%s)"
             % (", ".join("worker %d: %d jobs" % (i + 1, len(ls)) for i, ls in enumerate(lines)),
                "; %d assists" % assists if assists else ""))
        for ls in lines:
            for line in ls[:2]:
                say("    " + line)

    def rcli(self, *args):
        return self.stack.redis.cli_raw(*args).strip()

    def shown(self, cmd):
        """One line of redis-cli output: hashes as field=value."""
        lines = self.rcli(*cmd).splitlines()
        if cmd[0] == "HGETALL":
            lines = ["%s=%s" % kv for kv in zip(lines[0::2], lines[1::2])]
        return " ".join(lines) or "(empty)"

    def show_redis(self):
        port = self.stack.redis.port
        run = self.rcli("ZREVRANGE", PREFIX + "runs", "0", "0")
        budgets = [k for k in self.rcli("--scan", "--pattern", PREFIX + "budget:*").split()
                   if not k.endswith(":inflight")]
        target_id = self.stack.target.url
        epoch = self.rcli("HGET", "%starget:%s" % (PREFIX, target_id), "epoch")
        image_repo = self.a.image.split(":")[0]
        recipes = [
            ("queue: jobs in the stream (waiting or being copied)", ["XLEN", PREFIX + "jobs"]),
            ("jobs each worker holds right now", ["XPENDING", PREFIX + "jobs", "workers"]),
            ("workers and their last heartbeat (ms)",
             ["ZRANGE", PREFIX + "workers", "0", "-1", "WITHSCORES"]),
            ("retries waiting for their time, dead letters",
             ["ZCARD", PREFIX + "jobs:delayed"], ["XLEN", PREFIX + "jobs:dead"]),
            ("the last run", ["HGETALL", PREFIX + "run:" + run]),
            ("the official-images commit fully synced", ["GET", PREFIX + "synced-commit"]),
            ("digests known present in one target repository",
             ["SCARD", "%spresent:%s:%s:library/%s" % (PREFIX, target_id, epoch, image_repo)]),
            ("the shared pull budget (source = the stand-in's docker-ratelimit-source)",
             ["HGETALL", budgets[0] if budgets else PREFIX + "budget:<source>"]),
            ("lifetime counters", ["HGETALL", PREFIX + "stats"]),
        ]
        step("Look inside with redis-cli (--keep keeps the servers up to try them)")
        for recipe in recipes:
            what, cmds = recipe[0], recipe[1:]
            for c in cmds:
                say("    $ redis-cli -p %d %s" % (port, " ".join(shlex.quote(x) for x in c)))
            say("      # %s" % what)
            out = " | ".join(self.shown(c) for c in cmds)
            say("      %s" % (out if len(out) <= 600 else out[:600] + " ..."))
        say("    $ redis-cli -p %d SET %sctl:paused 1    # pause every worker; DEL it to resume"
            % (port, PREFIX))

    # -- the client -----------------------------------------------------------------------
    def podman_pull(self):
        ref = "docker.io/library/" + self.a.image
        step("A client: podman pulls %s with the target as its docker.io mirror" % ref)
        hub = self.stack.hub
        conf = registries_conf(hub.host, self.stack.target_host)
        say("    registries.conf (CONTAINERS_REGISTRIES_CONF; Docker Hub is the stand-in here):")
        say(indent(conf, "      "))
        repo, tag = self.a.image.split(":")
        if self.stack.target_digest(repo, tag) is None:
            if self.deferred:
                # podman would fall back to a Docker Hub whose budget is spent as well.
                say("    skipped: the deferred run did not reach library/%s:%s, and the "
                    "stand-in's pull budget is spent too" % (repo, tag))
                return True
            say("    library/%s:%s is not on the target: is %s in --repos?" % (repo, tag, repo))
            return False
        try:
            podman = Podman(conf)
        except PodmanError as e:
            say("    skipped: %s" % e)
            return True
        with podman:
            before = hub.counters()
            image_id, progress = podman.pull(ref)
            after = hub.counters()
            say(indent(progress, "    podman: "))
            got = podman.digest(ref)
        want = self.stack.upstream_digest(repo, tag)
        asked = sum(after[c] - before[c] for c in UPSTREAM_COUNTERS)
        say("    image id          %s" % image_id)
        say("    pulled digest     %s" % got)
        say("    upstream digest   %s   %s" % (want, "(the same)" if got == want
                                                 else "(DIFFERENT)"))
        if asked == 0:
            say("    served by the mirror: the stand-in (Docker Hub) saw no request during "
                "the pull")
        else:
            say("    served by Docker Hub: the mirror lacked it (%d requests went upstream)"
                % asked)
        return got == want

def main(argv=None):
    a = parse_args(argv)
    if a.image.count(":") != 1:
        raise SystemExit("--image wants repository:tag, e.g. hello-world:latest")
    if a.official_images:
        if "://" not in a.official_images and not os.path.isdir(a.official_images):
            print("demo: no official-images repository at %s (--official-images)"
                  % a.official_images, file=sys.stderr)
            return 2
    else:
        missing = harness.ensure_official_images()
        if missing:
            print("demo: " + missing, file=sys.stderr)
            return 2
        a.official_images = harness.OFFICIAL_IMAGES
    started = time.time()
    say("hubsync demo: Redis, a target registry, a Docker Hub stand-in, the coordinator "
        "and %d workers, all on loopback" % a.workers)
    d = Demo(a)
    try:
        d.start()
        d.start_workers()
        d.sync()
        d.show_worker_lines()
        d.show_redis()
        same = d.podman_pull()
        if a.keep:
            step("Everything keeps running: press Enter to stop and clean up")
            sys.stdin.readline()
        step("Cleaning up: workers stop on SIGTERM, servers stop, temporary files go")
        d.stack.stop_workers()
        for path in d.worker_logs:
            with open(path, errors="replace") as f:
                last = [line for line in f if "stopped" in line]
            say("    " + (last[-1].rstrip("\n") if last else "%s: no stop line" % path))
    except (StackError, PodmanError) as e:
        say("demo failed: %s" % e)
        return 1
    except KeyboardInterrupt:
        say("\ninterrupted: everything stopped and removed")
        return 130
    finally:
        d.stack.stop()
    say("\ndemo finished in %.1fs" % (time.time() - started))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
