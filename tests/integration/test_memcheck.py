"""The coordinator and the worker under valgrind memcheck on a real end-to-end sync: no
invalid access, no use of uninitialised memory, no definite or indirect leak."""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

from harness.stack import MirrorCase
from harness.target import head, pushed_tags

REPOS = ["hello-world"]


def memcheck(log):
    return ["valgrind", "--quiet", "--error-exitcode=99", "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect", "--track-fds=no",
            "--log-file=" + log]


class MemcheckTest(MirrorCase):
    REPOS = REPOS

    def test_sync_under_valgrind(self):
        logs = tempfile.mkdtemp(prefix="hubsync-memcheck-")
        self.addCleanup(shutil.rmtree, logs, ignore_errors=True)
        clog, wlog = os.path.join(logs, "coordinator.log"), os.path.join(logs, "worker.log")
        st = self.stack()
        coord = st.coordinator(wrap=memcheck(clog))
        st.wait_enqueued(timeout=120)
        worker = st.worker("--exit-when-idle", wrap=memcheck(wlog), stderr=subprocess.PIPE,
                           text=True)
        out, err = coord.communicate(timeout=600)
        werr = worker.communicate(timeout=300)[1]
        for name, path in (("coordinator", clog), ("worker", wlog)):
            with open(path) as f:
                self.assertEqual(f.read().strip(), "", "%s under valgrind" % name)
        self.assertEqual(worker.returncode, 0, werr[-2000:])
        self.assertEqual(coord.returncode, 0, err[-2000:])
        self.assertEqual(json.loads(out)["status"], "complete")
        for (repo, tag), digest in pushed_tags(self.pushed, REPOS).items():
            self.assertEqual(head(self.target.url, "library/" + repo, tag), digest)

if __name__ == "__main__":
    unittest.main()
