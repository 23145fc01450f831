#!/usr/bin/env python3
"""kiln load against a real kiln serve with echo functions: the summary's
counts must equal the server's own (Prometheus /metrics, /system/functions
and the invocation log in its SQLite database, read after the server
stopped and flushed it), and the server's own /proc sampler (server.sample)
must have seen the workers that answered. Skipped when this kiln has no
serve command. KILN_SERVE_BIN picks another kiln binary for the server."""
import csv
import json
import os
import re
import select
import shutil
import sqlite3
import subprocess
import tempfile
import time
import unittest
import urllib.request

KILN = os.environ.get("KILN_BIN", "build/src/cli/kiln")
SERVE = os.environ.get("KILN_SERVE_BIN", KILN)

CONFIG = """
server:
  listen: 127.0.0.1:0
  auth: false
  sample: {interval: 200ms}
functions:
  - name: echo
    kind: echo
    min_warm: 0
    max_workers: 2
    concurrency: 1
    idle_timeout: 60s
    queue_limit: 256
    timeout: 10s
  - name: blink
    kind: echo
    min_warm: 0
    max_workers: 1
    concurrency: 1
    idle_timeout: 1s
    queue_limit: 256
    timeout: 10s
"""


def has_serve():
    try:
        return subprocess.run([SERVE, "serve", "--help"], capture_output=True,
                              timeout=10).returncode == 0
    except OSError:
        return False


@unittest.skipUnless(has_serve(), "this kiln has no serve command")
class LoadAgainstServe(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="kiln-load-serve-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        cfg = os.path.join(self.tmp, "serve.yaml")
        with open(cfg, "w") as f:
            f.write(CONFIG)
        self.err = open(os.path.join(self.tmp, "serve.err"), "wb")
        self.data = os.path.join(self.tmp, "var")
        self.proc = subprocess.Popen(
            [SERVE, "serve", "--config", cfg, "--port", "0", "--data-dir", self.data],
            stdout=subprocess.PIPE, stderr=self.err)
        self.addCleanup(self.stop)
        line = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not line:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if r:
                line = self.proc.stdout.readline()
            elif self.proc.poll() is not None:
                break
        m = re.search(rb"listening on (http://[0-9.]+:\d+)", line)
        if not m:
            self.fail("kiln serve did not start: %r" % line)
        self.url = m.group(1).decode()

    def stop(self):
        """SIGTERM: the server drains, stops its workers and closes the
        store, which writes the invocation log's last batch."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.err.close()

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return r.read().decode()

    def server_counts(self, function):
        """(invocations by code, cold, warm) from /metrics."""
        text = self.get("/metrics")
        codes, starts = {}, {"cold": 0, "warm": 0}
        for m in re.finditer(r'^gateway_function_invocation_total\{function_name="%s",'
                             r'code="(\d+)"\} (\d+)' % function, text, re.M):
            codes[int(m.group(1))] = int(m.group(2))
        for m in re.finditer(r'^kiln_function_starts_total\{function_name="%s",'
                             r'start="(cold|warm)"\} (\d+)' % function, text, re.M):
            starts[m.group(1)] = int(m.group(2))
        return codes, starts["cold"], starts["warm"]

    def invocation_count(self, function):
        for f in json.loads(self.get("/system/functions")):
            if f["name"] == function:
                return f["invocationCount"]
        return None

    def logged_counts(self, function):
        """(rows, cold, warm, failed) of the invocation log in kiln.db."""
        db = sqlite3.connect("file:%s?mode=ro" % os.path.join(self.data, "kiln.db"), uri=True)
        try:
            return db.execute(
                "SELECT count(*), count(*) FILTER (WHERE start = 'cold'),"
                " count(*) FILTER (WHERE start = 'warm'),"
                " count(*) FILTER (WHERE status NOT BETWEEN 200 AND 399)"
                " FROM invocations WHERE function = ?", (function,)).fetchone()
        finally:
            db.close()

    def run_load(self, scenario):
        path = os.path.join(self.tmp, "scenario.yaml")
        with open(path, "w") as f:
            f.write(scenario)
        out = os.path.join(self.tmp, "out")
        r = subprocess.run([KILN, "load", "--url", self.url, "--scenario", path, "--out", out,
                            "--quiet"], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(out, "summary.json")) as f:
            return json.load(f)

    def test_ten_second_load_matches_metrics_and_invocation_log(self):
        s = self.run_load("""
stages: [{target: 6, duration: 3s}, {target: 6, duration: 5s}, {target: 0, duration: 2s}]
requests:
  - {name: echo, path: /function/echo, body: '{"x": [1, 2, 3]}',
     headers: {Content-Type: application/json}}
""")
        m, k = s["metrics"], s["kiln"]
        codes, cold, warm = self.server_counts("echo")
        total = sum(codes.values())
        self.assertGreater(total, 20)
        self.assertEqual(m["http_reqs"]["count"], total)
        self.assertEqual(self.invocation_count("echo"), total)
        self.assertEqual(k["cold"]["count"], cold)
        self.assertEqual(k["warm"]["count"], warm)
        self.assertEqual(m["http_req_failed"]["passes"],
                         sum(n for c, n in codes.items() if not 200 <= c < 400))
        # max_workers 2: at most two workers, so at most two cold starts.
        self.assertGreaterEqual(cold, 1)
        self.assertLessEqual(cold, 2)

        # The invocation log kept up: nothing dropped from its queue.
        self.assertIn('kiln_invocation_log_rows_total{outcome="dropped"} 0\n',
                      self.get("/metrics"))
        self.stop()
        self.assertEqual(self.proc.returncode, 0)
        rows, log_cold, log_warm, log_failed = self.logged_counts("echo")
        self.assertEqual(rows, m["http_reqs"]["count"])
        self.assertEqual(log_cold, k["cold"]["count"])
        self.assertEqual(log_warm, k["warm"]["count"])
        self.assertEqual(log_failed, m["http_req_failed"]["passes"])

        # The server's sampler: rows for itself and for each worker that
        # answered, tagged with the function.
        with open(os.path.join(self.tmp, "out", "requests.csv"), newline="") as f:
            answered = {r["worker"] for r in csv.DictReader(f) if r["worker"]}
        with open(os.path.join(self.data, "cpu.csv"), newline="") as f:
            samples = list(csv.DictReader(f))
        self.assertEqual(list(samples[0].keys()),
                         ["ts", "function", "worker_pid", "cpu_pct", "rss_kb", "pss_kb"])
        sampled = {r["worker_pid"] for r in samples if r["function"] == "echo"}
        self.assertTrue(answered)
        self.assertLessEqual(answered, sampled)
        self.assertTrue(any(r["function"] == "server" for r in samples))
        # RSS is exact (smaps_rollup) in the rows that have PSS.
        self.assertTrue(all(float(r["cpu_pct"]) >= 0 and int(r["rss_kb"]) >= 0
                            for r in samples))
        self.assertTrue(all(int(r["rss_kb"]) > 0 and int(r["pss_kb"]) > 0
                            for r in samples if r["pss_kb"]))
        self.assertTrue(any(r["pss_kb"] for r in samples))

    def test_bursts_after_idle_timeout_start_cold_again(self):
        """Scale to zero: three bursts separated by gaps longer than blink's
        1 s idle_timeout; each burst has a cold start."""
        s = self.run_load("""
stages:
  - {target: 2, duration: 0s}
  - {target: 2, duration: 1s}
  - {target: 0, duration: 0s}
  - {target: 0, duration: 3s}
  - {target: 2, duration: 0s}
  - {target: 2, duration: 1s}
  - {target: 0, duration: 0s}
  - {target: 0, duration: 3s}
  - {target: 2, duration: 0s}
  - {target: 2, duration: 1s}
graceful_ramp_down: 5s
think_time: 20ms
requests: [{path: /function/blink, body: hi}]
""")
        k = s["kiln"]
        codes, cold, warm = self.server_counts("blink")
        self.assertEqual(s["metrics"]["http_reqs"]["count"], sum(codes.values()))
        self.assertEqual(k["cold"]["count"], cold)
        self.assertEqual(k["warm"]["count"], warm)
        self.assertGreaterEqual(cold, 3)


if __name__ == "__main__":
    unittest.main(verbosity=2)
