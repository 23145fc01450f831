#!/usr/bin/env python3
"""kiln serve with its built-in config: health, function list, echo on a worker, clean stop."""
import json
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kilnserver import Server, worker_pids  # noqa: E402


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class ServeDefaults(unittest.TestCase):
    def setUp(self):
        self.s = Server()

    def tearDown(self):
        self.s.stop()
        self.s.cleanup()

    def test_healthz(self):
        status, body = self.s.json("GET", "/healthz")
        self.assertEqual(status, 200)
        self.assertEqual(body["status"], "ok")

    def test_functions_lists_the_default_echo(self):
        status, body = self.s.json("GET", "/v1/functions")
        self.assertEqual(status, 200)
        names = {f["name"]: f for f in body["functions"]}
        self.assertIn("echo", names)
        self.assertEqual(names["echo"]["kind"], "echo")
        self.assertEqual(names["echo"]["invocations"], 0)

    def test_echo_runs_on_a_worker_cold_then_warm(self):
        payload = b"kiln \x00\xff binary-safe " + os.urandom(64)
        status, h, body = self.s.request("POST", "/function/echo", payload,
                                         {"Content-Type": "application/octet-stream"})
        self.assertEqual(status, 200, body)
        self.assertEqual(body, payload)
        self.assertEqual(h["x-kiln-start"], "cold")
        pid = int(h["x-kiln-worker"])
        self.assertNotEqual(pid, self.s.proc.pid)
        self.assertIn(pid, worker_pids(self.s.proc.pid))
        self.assertGreater(int(h["x-kiln-init-us"]), 0)
        status, h2, body = self.s.request("POST", "/function/echo", b"again",
                                          {"Content-Type": "text/plain"})
        self.assertEqual(status, 200)
        self.assertEqual(body, b"again")
        self.assertEqual(h2["content-type"], "text/plain")
        self.assertEqual(h2["x-kiln-start"], "warm")
        self.assertEqual(int(h2["x-kiln-worker"]), pid)
        self.assertEqual(int(h2["x-kiln-init-us"]), 0)
        for k in ("x-kiln-queue-us", "x-kiln-exec-us"):
            self.assertGreaterEqual(int(h2[k]), 0)
        _, fns = self.s.json("GET", "/v1/functions")
        self.assertEqual(fns["functions"][0]["invocations"], 2)

    def test_unknown_function_and_route_are_404_json(self):
        status, body = self.s.json("POST", "/function/nope", b"x")
        self.assertEqual(status, 404)
        self.assertIn("nope", body["error"])
        status, body = self.s.json("GET", "/no/such/route")
        self.assertEqual(status, 404)
        self.assertIn("error", body)

    def test_wrong_method_is_405(self):
        status, body = self.s.json("POST", "/healthz", b"")
        self.assertEqual(status, 405)
        self.assertIn("error", body)


class ServeStops(unittest.TestCase):
    def stop_with(self, sig):
        s = Server()
        try:
            status, h, _ = s.request("POST", "/function/echo", b"x")
            self.assertEqual(status, 200)
            pid = int(h["x-kiln-worker"])
            self.assertEqual(s.stop(sig), 0)
            deadline = time.monotonic() + 10
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertFalse(pid_alive(pid), "worker outlived the server")
            self.assertNotIn("handles left open", s.stderr())
        finally:
            s.stop()
            s.cleanup()

    def test_sigterm_lets_requests_in_progress_finish(self):
        import threading
        s = Server("server: {listen: '127.0.0.1:0'}\nfunctions:\n"
                   "  - {name: slow, kind: echo, faults: true, max_workers: 1}\n")
        try:
            result = {}

            def call():
                result["r"] = s.request("POST", "/function/slow?sleep_ms=1500", b"done")
            t = threading.Thread(target=call)
            t.start()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                _, body = s.json("GET", "/v1/functions")
                if body["functions"][0]["workers"]["busy"]:
                    break
                time.sleep(0.02)
            s.proc.send_signal(signal.SIGTERM)
            t.join(30)
            st, _, body = result["r"]
            self.assertEqual((st, body), (200, b"done"))
            self.assertEqual(s.proc.wait(20), 0)
        finally:
            s.stop()
            s.cleanup()

    def test_sigint_stops_server_and_workers(self):
        self.stop_with(signal.SIGINT)

    def test_sigterm_stops_server_and_workers(self):
        self.stop_with(signal.SIGTERM)


class ServeCommandLine(unittest.TestCase):
    def test_bad_config_names_file_and_line(self):
        import subprocess
        import tempfile
        from kilnserver import KILN
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write("server:\n  listen: 127.0.0.1:0\nfunctions:\n  - name: a\n    kind: frobnicate\n")
        try:
            r = subprocess.run([KILN, "serve", "--config", f.name], capture_output=True, text=True,
                               timeout=30)
        finally:
            os.unlink(f.name)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f.name + ":5:", r.stderr)
        self.assertIn("frobnicate", r.stderr)

    def test_unwritable_sample_file_is_a_one_line_error(self):
        import subprocess
        import tempfile
        from kilnserver import KILN
        tmp = tempfile.mkdtemp(prefix="kiln-sample-")
        cfg = os.path.join(tmp, "c.yaml")
        missing = os.path.join(tmp, "no", "such", "dir", "cpu.csv")
        with open(cfg, "w") as f:
            f.write("server:\n  listen: 127.0.0.1:0\n  auth: false\n"
                    "  sample: {interval: 1s, file: %s}\n"
                    "functions:\n  - {name: e, kind: echo}\n" % missing)
        try:
            r = subprocess.run([KILN, "serve", "--config", cfg, "--data-dir",
                                os.path.join(tmp, "var")], capture_output=True, text=True,
                               timeout=30)
        finally:
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertIn("server.sample", r.stderr)
        self.assertIn(missing, r.stderr)
        self.assertNotIn("listening", r.stdout)

    def test_bad_port_is_usage_error(self):
        import subprocess
        from kilnserver import KILN
        r = subprocess.run([KILN, "serve", "--port", "99999"], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(r.returncode, 2)


if __name__ == "__main__":
    unittest.main(verbosity=2)
