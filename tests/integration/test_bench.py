"""The side-by-side benchmark (tests/bench/run.py) in its quick mode: it runs, prints its
Markdown table, and hubsync's counted GETs and blob bytes are the least needed in every
scenario (0 on the no-op run), with every tag carrying the upstream digest.

Only hubsync with one worker is timed here (the peers take minutes; tests/bench/README.md
has the full table and the command that makes it). A tiny slice of the scales of issue 12:
the `month` scenario (OLD -> NEW on a target that holds OLD) with the quick refs, the CPU
seconds of each process kind, and the `big` scale's throughput table on two 1 MiB layers.
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

from harness import ROOT

BENCH = os.path.join(ROOT, "tests", "bench", "run.py")


class BenchQuickTest(unittest.TestCase):
    def test_quick_table_and_minimum_gets(self):
        with tempfile.TemporaryDirectory(prefix="hubsync-bench-test-") as tmp:
            out_json = os.path.join(tmp, "bench.json")
            p = subprocess.run([sys.executable, BENCH, "--quick", "--tools", "hubsync-1",
                                "--repos", "hello-world", "--rebuild", "hello-world:linux",
                                "--scenarios", "full,noop,rebuild,ref,month",
                                "--json", out_json], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, timeout=300)
            self.assertEqual(p.returncode, 0, p.stderr[-3000:])
            with open(out_json) as f:
                doc = json.load(f)
        lines = p.stdout.splitlines()
        self.assertTrue(lines[0].startswith("| latency | scenario | tool |"), p.stdout)
        table = lines[:lines.index("")]
        rows = [x for x in table if x.startswith("| 0 ms |")]
        self.assertEqual(len(rows), 5, p.stdout)
        figures = doc["results"]["0"]["hubsync-1"]
        self.assertEqual(sorted(figures), ["full", "month", "month-base", "noop", "rebuild",
                                           "ref"])
        for scenario, f in figures.items():
            self.assertEqual(f["gets"], f["gets_min"], scenario)
            self.assertEqual(f["bytes"], f["bytes_min"], scenario)
            self.assertEqual(f["wrong_tags"], 0, scenario)
            self.assertEqual(f["auth_leaks"], 0, scenario)
            self.assertGreater(f["rss_kib"], 0, scenario)
            self.assertEqual(sorted(f["cpu"]), ["coordinator", "redis", "stand-in",
                                                "stand-in backend", "target", "workers"])
        self.assertGreater(figures["full"]["gets_min"], 0)
        self.assertGreater(figures["rebuild"]["gets_min"], 0)
        self.assertEqual(figures["noop"]["gets"], 0)
        self.assertEqual(figures["noop"]["bytes"], 0)
        # month costs what ref costs: the same refs, on a target that holds OLD.
        self.assertEqual(figures["month"]["gets"], figures["ref"]["gets"])
        self.assertGreater(figures["full"]["cpu"]["workers"], 0)

    def test_big_scale_throughput_table(self):
        p = subprocess.run([sys.executable, BENCH, "--scale", "big", "--tools", "hubsync-1",
                            "--big-size", str(1 << 20), "--big-count", "2", "--latency-ms",
                            "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=300)
        self.assertEqual(p.returncode, 0, p.stderr[-3000:])
        rows = {x.split("|")[1].strip(): x.split("|")[5].strip()
                for x in p.stdout.splitlines() if x.startswith("| ") and "MiB/s" not in x}
        # Every copier fetched both layers once from upstream (skopeo and curl too).
        self.assertEqual(rows, {t: "2.0 MiB" for t in ("hubsync-1", "skopeo-copy",
                                                       "curl-null", "curl-pipe")}, p.stdout)


if __name__ == "__main__":
    unittest.main()
