"""The side-by-side benchmark (tests/bench/run.py) in its quick mode: it runs, prints its
Markdown table, and hubsync's counted GETs and blob bytes are the least needed in every
scenario (0 on the no-op run), with every tag carrying the upstream digest.

Only hubsync with one worker is timed here (the peers take minutes; tests/bench/README.md
has the full table and the command that makes it).
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
                                "--json", out_json], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, timeout=300)
            self.assertEqual(p.returncode, 0, p.stderr[-3000:])
            with open(out_json) as f:
                doc = json.load(f)
        lines = p.stdout.splitlines()
        self.assertTrue(lines[0].startswith("| latency | scenario | tool |"), p.stdout)
        rows = [x for x in lines if x.startswith("| 0 ms |")]
        self.assertEqual(len(rows), 4, p.stdout)
        figures = doc["results"]["0"]["hubsync-1"]
        self.assertEqual(sorted(figures), ["full", "noop", "rebuild", "ref"])
        for scenario, f in figures.items():
            self.assertEqual(f["gets"], f["gets_min"], scenario)
            self.assertEqual(f["bytes"], f["bytes_min"], scenario)
            self.assertEqual(f["wrong_tags"], 0, scenario)
            self.assertEqual(f["auth_leaks"], 0, scenario)
            self.assertGreater(f["rss_kib"], 0, scenario)
        self.assertGreater(figures["full"]["gets_min"], 0)
        self.assertGreater(figures["rebuild"]["gets_min"], 0)
        self.assertEqual(figures["noop"]["gets"], 0)
        self.assertEqual(figures["noop"]["bytes"], 0)


if __name__ == "__main__":
    unittest.main()
