"""Drive build/.../tools/queuetool (common/rq from the command line) for tests.

QueueTool(redis_url, prefix) runs one-shot commands and returns their JSON
lines; start_worker() runs `queuetool work` in the background and collects its
events (one JSON object per line) from a reader thread.
"""
import json
import os
import queue
import signal
import subprocess
import threading
import time

from harness import TOOLS

QUEUETOOL = os.path.join(TOOLS, "queuetool")


class Worker:
    """A `queuetool work` process and the events it printed."""

    def __init__(self, argv):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        self.events = []
        self.err = ""
        self._q = queue.Queue()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self):
        for line in self.proc.stdout:
            line = line.strip()
            if line:
                ev = json.loads(line)
                self.events.append(ev)
                self._q.put(ev)

    def wait_event(self, name, timeout=10.0):
        """The next event called name (others seen meanwhile are kept in events)."""
        end = time.time() + timeout
        while time.time() < end:
            try:
                ev = self._q.get(timeout=max(0.01, end - time.time()))
            except queue.Empty:
                break
            if ev.get("event") == name:
                return ev
        raise AssertionError("no %r event in %.0fs; got %r" % (name, timeout, self.events))

    def named(self, name):
        return [e for e in self.events if e.get("event") == name]

    def signal(self, sig):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout=60):
        """Exit status; afterwards stderr() has what the process logged."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait()
            raise
        finally:
            self._t.join(timeout=5)
            self.err = self.proc.stderr.read()
            self.proc.stdout.close()
            self.proc.stderr.close()
        return rc

    def stderr(self):
        return self.err


class QueueTool:
    def __init__(self, redis_url, prefix):
        self.base = [QUEUETOOL, "--redis", redis_url, "--prefix", prefix]
        self.workers = []

    def lines(self, *args, check=True):
        p = subprocess.run(self.base + [str(a) for a in args], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=60)
        if check and p.returncode != 0:
            raise AssertionError("queuetool %s: exit %d\n%s%s"
                                 % (" ".join(map(str, args)), p.returncode, p.stdout, p.stderr))
        return [json.loads(l) for l in p.stdout.splitlines() if l.strip()]

    def one(self, *args):
        out = self.lines(*args)
        assert len(out) == 1, out
        return out[0]

    def hash(self, *args):
        """A hash answer (run-get, stats) as a dict."""
        items = self.one(*args)["items"]
        return dict(zip(items[0::2], items[1::2]))

    def start_worker(self, consumer, *opts):
        w = Worker(self.base + ["work", consumer] + [str(o) for o in opts])
        self.workers.append(w)
        return w

    def close(self):
        """Kill the workers a failed test left running."""
        for w in self.workers:
            if w.proc.returncode is None:
                w.signal(signal.SIGKILL)
                w.wait()
