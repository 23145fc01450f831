#!/usr/bin/env python3
"""The scheduler through the HTTP API: cold/warm, scale to zero, min_warm, 429, 502, 504."""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kilnserver import KILN, Server, worker_pids  # noqa: E402

CONFIG = """
server:
  listen: 127.0.0.1:0
  auth: false
functions:
  - name: quick
    kind: echo
    max_workers: 1
    idle_timeout: 300ms
    timeout: 10s
  - name: warm
    kind: echo
    min_warm: 1
    max_workers: 1
    idle_timeout: 100ms
  - name: faulty
    kind: echo
    faults: true
    max_workers: 1
    queue_limit: 1
    idle_timeout: 60s
    timeout: 1500ms
  - name: other
    kind: echo
    max_workers: 1
    idle_timeout: 60s
  - name: small
    kind: echo
    faults: true
    max_workers: 1
    memory_limit: 64MiB
"""


def function(s, name):
    _, body = s.json("GET", "/v1/functions")
    return next(f for f in body["functions"] if f["name"] == name)


def wait_for(pred, what, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class Background(threading.Thread):
    """One request on its own thread; .result is (status, headers, body)."""

    def __init__(self, s, path, body=b"x"):
        super().__init__(daemon=True)
        self.s, self.path, self.body, self.result = s, path, body, None
        self.start()

    def run(self):
        self.result = self.s.request("POST", self.path, self.body)


class Scheduler(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = Server(CONFIG)

    @classmethod
    def tearDownClass(cls):
        rc = cls.s.stop()
        # The invocation log (flushed at stop) holds every outcome, the 429
        # of test_queue_overflow too, with start 'none' (no worker ran it).
        import sqlite3
        db = sqlite3.connect(os.path.join(cls.s.tmp, "var", "kiln.db"))
        rows = db.execute("SELECT status, start FROM invocations WHERE function = 'faulty'"
                          ).fetchall()
        db.close()
        cls.s.cleanup()
        assert rc == 0, rc
        assert (429, "none") in rows, rows
        assert (200, "warm") in rows, rows

    def test_scale_to_zero_after_idle_timeout_then_cold_again(self):
        st, h, body = self.s.request("POST", "/function/quick", b"one")
        self.assertEqual((st, body), (200, b"one"))
        self.assertEqual(h["x-kiln-start"], "cold")
        pid = int(h["x-kiln-worker"])
        wait_for(lambda: function(self.s, "quick")["workers"]["idle"] == 0
                 and not alive(pid), "the idle worker to exit")
        st, h, body = self.s.request("POST", "/function/quick", b"two")
        self.assertEqual((st, body), (200, b"two"))
        self.assertEqual(h["x-kiln-start"], "cold")
        self.assertNotEqual(int(h["x-kiln-worker"]), pid)

    def test_min_warm_worker_makes_first_request_warm_and_stays(self):
        wait_for(lambda: function(self.s, "warm")["workers"]["idle"] == 1, "the min_warm worker")
        st, h, _ = self.s.request("POST", "/function/warm", b"w")
        self.assertEqual(st, 200)
        self.assertEqual(h["x-kiln-start"], "warm")
        pid = int(h["x-kiln-worker"])
        time.sleep(0.5)  # well past its idle_timeout of 100ms
        self.assertTrue(alive(pid), "min_warm worker scaled down")
        self.assertEqual(function(self.s, "warm")["workers"]["idle"], 1)

    def test_crash_mid_request_is_502_and_next_request_is_served(self):
        st, h, body = self.s.request("POST", "/function/faulty?crash=1", b"x")
        self.assertEqual(st, 502)
        self.assertIn("signal 9", json.loads(body)["error"])
        st, h, body = self.s.request("POST", "/function/faulty", b"after")
        self.assertEqual((st, body), (200, b"after"))

    def test_worker_killed_externally_mid_request_is_502(self):
        st, h, _ = self.s.request("POST", "/function/faulty", b"warm it")
        self.assertEqual(st, 200)
        busy = int(h["x-kiln-worker"])  # max_workers 1: the next request runs there too
        bg = Background(self.s, "/function/faulty?sleep_ms=1000")
        wait_for(lambda: function(self.s, "faulty")["workers"]["busy"] == 1, "a busy worker")
        self.assertIn(busy, worker_pids(self.s.proc.pid))
        os.kill(busy, signal.SIGKILL)
        bg.join(30)
        st, h, body = bg.result
        self.assertEqual(st, 502)
        self.assertIn("error", json.loads(body))
        st, _, body = self.s.request("POST", "/function/faulty", b"next")
        self.assertEqual((st, body), (200, b"next"))

    def test_timeout_is_504_worker_replaced_others_unaffected(self):
        st, h, _ = self.s.request("POST", "/function/faulty", b"warm it")
        self.assertEqual(st, 200)
        bg = Background(self.s, "/function/faulty?sleep_ms=20000")
        wait_for(lambda: function(self.s, "faulty")["workers"]["busy"] == 1, "a busy worker")
        # Another function answers while this one hangs.
        st, _, body = self.s.request("POST", "/function/other", b"fine")
        self.assertEqual((st, body), (200, b"fine"))
        bg.join(30)
        st, h, body = bg.result
        self.assertEqual(st, 504)
        self.assertIn("timeout", json.loads(body)["error"])
        hung = int(h["x-kiln-worker"])
        wait_for(lambda: not alive(hung), "the hung worker to be killed")
        st, h, body = self.s.request("POST", "/function/faulty", b"next")
        self.assertEqual((st, body), (200, b"next"))
        self.assertNotEqual(int(h["x-kiln-worker"]), hung)

    def test_queue_overflow_is_429_with_retry_after(self):
        self.s.request("POST", "/function/faulty", b"warm it")
        first = Background(self.s, "/function/faulty?sleep_ms=800")
        wait_for(lambda: function(self.s, "faulty")["workers"]["busy"] == 1, "a busy worker")
        second = Background(self.s, "/function/faulty")
        wait_for(lambda: function(self.s, "faulty")["workers"]["queued"] == 1, "a queued request")
        st, h, body = self.s.request("POST", "/function/faulty", b"third")
        self.assertEqual(st, 429)
        self.assertGreaterEqual(int(h["retry-after"]), 1)
        self.assertIn("queue", json.loads(body)["error"])
        first.join(30)
        second.join(30)
        self.assertEqual(first.result[0], 200)
        self.assertEqual(second.result[0], 200)
        self.assertEqual(second.result[1]["x-kiln-start"], "warm")

    def test_metrics_count_outcomes(self):
        self.s.request("POST", "/function/other", b"m")
        # the min_warm worker may still be starting (slow under ASan)
        wait_for(lambda: function(self.s, "warm")["workers"]["idle"] == 1, "the min_warm worker")
        st, h, body = self.s.request("GET", "/metrics")
        self.assertEqual(st, 200)
        self.assertTrue(h["content-type"].startswith("text/plain"))
        text = body.decode()
        line = [l for l in text.splitlines()
                if l.startswith('gateway_function_invocation_total{function_name="other",code="200"}')]
        self.assertEqual(len(line), 1)
        self.assertGreaterEqual(int(line[0].split()[-1]), 1)
        self.assertIn('kiln_function_workers{function_name="warm",state="idle"} 1', text)

    @unittest.skipIf(b"libasan" in subprocess.run(["ldd", KILN], capture_output=True).stdout,
                     "memory_limit is not applied under AddressSanitizer")
    def test_memory_limit_failure_is_502_and_worker_replaced(self):
        st, h, body = self.s.request("POST", "/function/small?alloc_mb=8", b"x")
        self.assertEqual(st, 200, body)
        first = int(h["x-kiln-worker"])
        st, h, body = self.s.request("POST", "/function/small?alloc_mb=256", b"x")
        self.assertEqual(st, 502, body)
        self.assertIn("memory_limit", json.loads(body)["error"])
        wait_for(lambda: not alive(first), "the worker to exit")
        st, h, body = self.s.request("POST", "/function/small", b"again")
        self.assertEqual((st, body), (200, b"again"))
        self.assertNotEqual(int(h["x-kiln-worker"]), first)

    @unittest.skipUnless(shutil.which("promtool"), "promtool (Debian package prometheus) not installed")
    def test_metrics_pass_promtool(self):
        self.s.request("POST", "/function/other", b"m")
        self.s.request("POST", "/function/faulty?crash=1", b"m")
        st, h, body = self.s.request("GET", "/metrics")
        self.assertEqual(st, 200)
        r = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
