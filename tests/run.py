#!/usr/bin/env python3
"""hubsync's test runner: unit tests (cmocka), fuzz smoke runs, integration tests.

Each cmocka binary runs with TAP output and every test case is counted; each
integration module under tests/integration is a unittest module whose cases are
counted the same way. The last line is `N passed, N failed`.
"""
import argparse
import fnmatch
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Tally:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.failures = []

    def add(self, ok, name):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            self.failures.append(name)


def run_unit(build, tally, valgrind=False, label="unit"):
    bins = sorted(glob.glob(os.path.join(build, "tests", "test_*")))
    bins = [b for b in bins if os.access(b, os.X_OK) and not b.endswith((".o", ".d"))]
    if not bins:
        tally.add(False, "unit: no test binaries in %s" % build)
    env = dict(os.environ, CMOCKA_MESSAGE_OUTPUT="TAP", HUBSYNC_ROOT=ROOT)
    for b in bins:
        name = os.path.basename(b)
        cmd = [b]
        if valgrind:
            cmd = ["valgrind", "--leak-check=full", "--errors-for-leak-kinds=definite,indirect",
                   "--error-exitcode=99", "-q"] + cmd
        t0 = time.time()
        p = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, errors="replace")
        cases = 0
        for line in p.stdout.splitlines():
            m = re.match(r"^(not ok|ok) \d+ - (.*)$", line)
            if m:
                cases += 1
                tally.add(m.group(1) == "ok", "%s %s: %s" % (label, name, m.group(2)))
        if p.returncode != 0 or cases == 0:
            if cases == 0 or p.returncode not in (0, 1):
                tally.add(False, "%s: exit %d" % (name, p.returncode))
            sys.stdout.write(p.stdout)
        print("%s %-28s %3d cases  %.1fs  exit %d" % (label, name, cases, time.time() - t0,
                                                       p.returncode), flush=True)


def run_fuzz(seconds, tally):
    fuzzers = sorted(glob.glob(os.path.join(ROOT, "build", "fuzz", "bin", "fuzz_*")))
    if not fuzzers:
        tally.add(False, "fuzz: no fuzz targets built (make fuzz)")
    for f in fuzzers:
        name = os.path.basename(f)
        corpus = os.path.join(ROOT, "tests", "fuzz", "corpus", name[len("fuzz_"):])
        work = os.path.join(ROOT, "build", "fuzz", "corpus", name)
        os.makedirs(work, exist_ok=True)
        cmd = [f, "-max_total_time=%d" % seconds, "-max_len=65536", "-rss_limit_mb=2048",
               "-artifact_prefix=%s/" % work, work]
        if os.path.isdir(corpus):
            cmd.append(corpus)
        p = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, errors="replace")
        execs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", p.stdout)
        done = re.findall(r"Done (\d+) runs", p.stdout)
        n = execs[-1] if execs else (done[-1] if done else "?")
        ok = p.returncode == 0
        if not ok:
            sys.stdout.write(p.stdout[-4000:])
        tally.add(ok, "fuzz %s" % name)
        print("fuzz %-28s %s execs in %ds  exit %d" % (name, n, seconds, p.returncode),
              flush=True)


def tests_of(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from tests_of(t)
        else:
            yield t


def integration_modules(pattern, excludes):
    """File names of the integration modules matching pattern and no module --exclude."""
    names = []
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "integration", "test_*.py"))):
        name = os.path.basename(path)
        if not fnmatch.fnmatch(name, pattern):
            continue
        if any(fnmatch.fnmatch(name, x) for x in excludes):
            print("integration %s excluded (--exclude)" % name, flush=True)
        else:
            names.append(name)
    return names


def integration_suite(loader, pattern, excludes):
    """The integration modules matching pattern, minus the modules (file name) and test
    cases (id: integration.<module>.<class>.<test>) matching an --exclude."""
    top = os.path.join(ROOT, "tests")
    suite = unittest.TestSuite()
    for name in integration_modules(pattern, excludes):
        for t in tests_of(loader.discover(os.path.join(top, "integration"), pattern=name,
                                          top_level_dir=top)):
            if any(fnmatch.fnmatch(t.id(), x) for x in excludes):
                print("integration %s excluded (--exclude)" % t.id(), flush=True)
            else:
                suite.addTest(t)
    return suite


class TimedResult(unittest.TextTestResult):
    """A TextTestResult that adds up the seconds spent in each test module (a test is charged
    from the end of the one before, so class set-up counts too)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seconds = {}
        self._last = time.monotonic()

    def stopTest(self, test):
        super().stopTest(test)
        module = test.id().rsplit(".", 2)[0]
        now = time.monotonic()
        self.seconds[module] = self.seconds.get(module, 0.0) + now - self._last
        self._last = now


def run_integration(build, tally, pattern, excludes=(), sanitize=False):
    os.environ.setdefault("HUBSYNC_ROOT", ROOT)
    os.environ.setdefault("HUBSYNC_BIN", os.path.join(ROOT, "bin"))
    os.environ.setdefault("HUBSYNC_TOOLS", os.path.join(build, "tools"))
    reports = os.environ.get("HUBSYNC_SANITIZER_REPORTS") or \
        os.path.join(build, "sanitizer-reports")
    if sanitize:
        os.environ.setdefault("HUBSYNC_TIMEOUT_FACTOR", "3")
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import harness  # reads the environment above
    if sanitize:
        shutil.rmtree(reports, ignore_errors=True)
        os.makedirs(reports)
        os.environ.update(harness.sanitizer_env(reports))
        print("sanitized programs from %s; reports go to %s" % (os.environ["HUBSYNC_BIN"],
                                                                 reports), flush=True)
    suite = integration_suite(unittest.TestLoader(), pattern, excludes)
    result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2,
                                     resultclass=TimedResult).run(suite)
    # Where CI's time goes: the slowest modules, to keep the whole run within its budget.
    print("integration time by module (s):")
    for module, secs in sorted(result.seconds.items(), key=lambda kv: -kv[1]):
        print("  %7.1f  %s" % (secs, module))
    for t, _ in result.failures + result.errors:
        tally.add(False, "integration: %s" % t.id())
    ok = result.testsRun - len(result.failures) - len(result.errors) - len(result.skipped)
    for _ in range(max(ok, 0)):
        tally.add(True, "integration")
    for t, why in result.skipped:
        # A skipped test is a test that did not run: it counts as a failure here.
        tally.add(False, "integration skipped: %s (%s)" % (t.id(), why))
    if sanitize:
        # A report is a failure even when the test around it passed (its stderr discarded,
        # its exit code not checked, or the process outlived the test).
        for path, head in harness.sanitizer_reports(reports):
            print("sanitizer report %s:\n%s" % (path, head), flush=True)
            tally.add(False, "sanitizer report: %s" % path)


def run_integration_parallel(build, tally, pattern, excludes, sanitize, jobs):
    """Each module in its own `run.py integration` child, `jobs` at a time (most of these
    tests wait on timers and peers, so two share a core well). A child's output is printed
    whole when it ends; its FAILED lines and closing count go into tally."""
    pending = integration_modules(pattern, excludes)
    running = {}  # Popen -> (module, output file, start)
    seconds = {}
    if sanitize:
        shutil.rmtree(os.path.join(build, "sanitizer-reports"), ignore_errors=True)
    base = [sys.executable, os.path.abspath(__file__), "--build", os.path.relpath(build, ROOT),
            "integration"] + [a for x in excludes for a in ("--exclude", x)] + \
        (["--sanitize"] if sanitize else [])
    while pending or running:
        while pending and len(running) < jobs:
            module = pending.pop(0)
            out = tempfile.TemporaryFile(mode="w+")
            env = dict(os.environ)
            if sanitize:
                env["HUBSYNC_SANITIZER_REPORTS"] = os.path.join(build, "sanitizer-reports",
                                                                module[:-3])
            p = subprocess.Popen(base + ["--pattern", module], stdout=out,
                                 stderr=subprocess.STDOUT, env=env, cwd=ROOT)
            running[p] = (module, out, time.monotonic())
        done = [p for p in running if p.poll() is not None]
        if not done:
            time.sleep(0.2)
            continue
        for p in done:
            module, out, start = running.pop(p)
            seconds[module] = time.monotonic() - start
            out.seek(0)
            text = out.read()
            out.close()
            sys.stdout.write(text)
            sys.stdout.flush()
            m = re.search(r"^(\d+) passed, (\d+) failed$", text, re.M)
            if p.returncode not in (0, 1) or m is None:
                tally.add(False, "integration: %s exited %d" % (module, p.returncode))
                continue
            for _ in range(int(m.group(1))):
                tally.add(True, "integration")
            for line in re.findall(r"^FAILED: (.*)$", text, re.M):
                tally.add(False, line)
    print("integration time by module (s, %d at a time):" % jobs)
    for module, secs in sorted(seconds.items(), key=lambda kv: -kv[1]):
        print("  %7.1f  %s" % (secs, module))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["unit", "fuzz", "integration", "all"])
    ap.add_argument("--build", default="build/default")
    ap.add_argument("--asan-build", help="also run the unit tests built with sanitizers here")
    ap.add_argument("--fuzz-seconds", type=int, default=20)
    ap.add_argument("--valgrind", action="store_true")
    ap.add_argument("--pattern", default="test_*.py")
    ap.add_argument("--jobs", type=int, default=1,
                    help="integration modules run at once, each in its own process")
    ap.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                    help="leave out integration modules whose file name, and test cases whose id, "
                    "matches (repeatable)")
    ap.add_argument("--bin", help="the programs' directory for integration tests "
                    "(default: bin)")
    ap.add_argument("--sanitize", action="store_true",
                    help="the programs are built with ASan+UBSan: set the sanitizers' "
                    "environment and count every report file as a failure")
    a = ap.parse_args()
    build = os.path.join(ROOT, a.build)
    if a.bin:
        os.environ["HUBSYNC_BIN"] = os.path.join(ROOT, a.bin)
    if a.asan_build:
        # test_sanitizers runs the programs built there.
        os.environ["HUBSYNC_ASAN_BIN"] = os.path.join(ROOT, a.asan_build, "bin")
    if a.what in ("unit", "integration", "all"):
        # The unit tests of the catalog and the integration tests read real data.
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        import harness
        missing = harness.ensure_official_images()
        if missing:
            print("tests: " + missing, file=sys.stderr)
            return 2
        os.environ["HUBSYNC_TEST_OFFICIAL_IMAGES"] = harness.OFFICIAL_IMAGES
    tally = Tally()
    if a.what in ("unit", "all"):
        run_unit(build, tally, a.valgrind)
        if a.asan_build:
            run_unit(os.path.join(ROOT, a.asan_build), tally, label="asan")
    if a.what in ("fuzz", "all"):
        run_fuzz(a.fuzz_seconds, tally)
    if a.what in ("integration", "all"):
        if a.jobs > 1:
            run_integration_parallel(build, tally, a.pattern, a.exclude, a.sanitize, a.jobs)
        else:
            run_integration(build, tally, a.pattern, a.exclude, a.sanitize)
    for f in tally.failures:
        print("FAILED: %s" % f)
    print("%d passed, %d failed" % (tally.passed, tally.failed))
    return 0 if tally.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
