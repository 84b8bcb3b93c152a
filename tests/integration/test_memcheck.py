"""The coordinator and the worker under valgrind memcheck on a real end-to-end sync: no
invalid access, no use of uninitialised memory, no definite or indirect leak."""
import json
import os
import subprocess
import tempfile
import time
import unittest

from harness import BIN, OFFICIAL_IMAGES, RedisServer, Registry
from harness.standin import Standin
from harness.mirror import catalog, enqueued, head, pushed_tags

REPOS = ["hello-world"]


def memcheck(log):
    return ["valgrind", "--quiet", "--error-exitcode=99", "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect", "--track-fds=no",
            "--log-file=" + log]


class MemcheckTest(unittest.TestCase):
    def test_sync_under_valgrind(self):
        hub = Standin(limit=100000).start()
        redis, target = RedisServer().start(), Registry().start()
        logs = tempfile.mkdtemp(prefix="hubsync-memcheck-")
        try:
            pushed = hub.load(catalog(REPOS))
            clog, wlog = os.path.join(logs, "coordinator.log"), os.path.join(logs, "worker.log")
            coord = subprocess.Popen(
                memcheck(clog) + [BIN + "/hubsync-coordinator", "sync", "--once", "--wait",
                                  "--json", "--redis", redis.url, "--official-images",
                                  OFFICIAL_IMAGES, "--upstream", hub.url, "--target",
                                  target.url, "--repos", ",".join(REPOS)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            deadline = time.time() + 120
            while time.time() < deadline and coord.poll() is None and not enqueued(redis):
                time.sleep(0.1)
            worker = subprocess.Popen(
                memcheck(wlog) + [BIN + "/hubsync-worker", "--redis", redis.url,
                                  "--exit-when-idle", "--log-level", "warn"],
                stderr=subprocess.PIPE, text=True)
            out, err = coord.communicate(timeout=600)
            werr = worker.communicate(timeout=300)[1]
            for name, path in (("coordinator", clog), ("worker", wlog)):
                with open(path) as f:
                    self.assertEqual(f.read().strip(), "", "%s under valgrind" % name)
            self.assertEqual(worker.returncode, 0, werr[-2000:])
            self.assertEqual(coord.returncode, 0, err[-2000:])
            self.assertEqual(json.loads(out)["status"], "complete")
            for (repo, tag), digest in pushed_tags(pushed, REPOS).items():
                self.assertEqual(head(target.url, "library/" + repo, tag), digest)
        finally:
            redis.stop()
            target.stop()
            hub.stop()


if __name__ == "__main__":
    unittest.main()
