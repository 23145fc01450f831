#!/usr/bin/env python3
"""kiln load against a target that logs what it served (load_target.py):
the summary's counts must equal the target's log, and its percentiles must
equal those recomputed from requests.csv."""
import csv
import json
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load_target  # noqa: E402

KILN = os.environ.get("KILN_BIN", "build/src/cli/kiln")


def kiln_load(url, scenario_text, out_dir, *extra, name="scenario.yaml"):
    path = os.path.join(out_dir, name)
    with open(path, "w") as f:
        f.write(scenario_text)
    out = os.path.join(out_dir, "out")
    r = subprocess.run([KILN, "load", "--url", url, "--scenario", path, "--out", out, "--quiet",
                        *extra], capture_output=True, text=True, timeout=120)
    return r, out


def read_csv(out):
    with open(os.path.join(out, "requests.csv")) as f:
        return list(csv.DictReader(f))


def percentile(sorted_values, p):
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return 0.0
    rank = p / 100 * (len(sorted_values) - 1)
    lo = int(rank)
    if lo + 1 >= len(sorted_values):
        return float(sorted_values[-1])
    return sorted_values[lo] + (sorted_values[lo + 1] - sorted_values[lo]) * (rank - lo)


class LoadAgainstTarget(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def start_target(self, delay_ms, cold_delay_ms):
        srv, log, port = load_target.start(delay_ms, cold_delay_ms)
        self.addCleanup(srv.server_close)
        self.addCleanup(srv.shutdown)
        return log, "http://127.0.0.1:%d" % port

    def check_trend(self, trend, latencies_us):
        v = sorted(latencies_us)
        self.assertEqual(trend["count"], len(v))
        if not v:
            return
        self.assertAlmostEqual(trend["min"], v[0] / 1e3, places=6)
        self.assertAlmostEqual(trend["max"], v[-1] / 1e3, places=6)
        self.assertAlmostEqual(trend["avg"], sum(v) / len(v) / 1e3, places=6)
        for key, p in (("med", 50), ("p(90)", 90), ("p(95)", 95), ("p(99)", 99)):
            self.assertAlmostEqual(trend[key], percentile(v, p) / 1e3, places=6, msg=key)

    def test_ramping_vus_counts_match_the_target(self):
        """10 s of ramping VUs with a weighted mix: every count equals the
        target's log; percentiles equal those of requests.csv."""
        log, url = self.start_target(delay_ms=2, cold_delay_ms=20)
        with open(os.path.join(self.dir, "tensor.bin"), "wb") as f:
            f.write(bytes(range(256)) * 16)
        scenario = """
name: ten-seconds
executor: ramping-vus
start_vus: 1
stages:
  - {target: 8, duration: 3s}
  - {target: 8, duration: 4s}
  - {target: 0, duration: 3s}
think_time: {min: 0ms, max: 5ms}
requests:
  - {name: predict, path: /function/predict, weight: 4, body_file: tensor.bin,
     headers: {Content-Type: application/octet-stream}}
  - {name: health, method: GET, path: /healthz, weight: 2}
  - {name: broken, method: POST, path: /fail, weight: 1, body: '{"x": 1}'}
"""
        r, out = kiln_load(url, scenario, self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(out, "summary.json")) as f:
            s = json.load(f)
        m, k = s["metrics"], s["kiln"]
        served = log.counts()
        self.assertGreater(served["total"], 50)
        self.assertEqual(m["http_reqs"]["count"], served["total"])
        self.assertEqual(m["iterations"]["count"], served["total"])
        self.assertEqual(k["cold"]["count"], served["cold"])
        self.assertEqual(k["warm"]["count"], served["warm"])
        self.assertEqual(k["unlabelled"], 0)
        self.assertEqual(m["http_req_failed"]["passes"], served["status"].get(500, 0))
        self.assertEqual(k["requests"]["predict"]["count"], served["by_path"]["/function/predict"])
        self.assertEqual(k["requests"]["health"]["count"], served["by_path"]["/healthz"])
        self.assertEqual(k["requests"]["broken"]["count"], served["by_path"]["/fail"])
        self.assertEqual(k["requests"]["broken"]["failed"], served["by_path"]["/fail"])
        # Keep-alive: one connection, so one cold start, per VU that ran.
        self.assertEqual(served["cold"], log.connections)
        self.assertLessEqual(served["cold"], 8)
        self.assertEqual(m["vus_max"]["value"], 8)
        self.assertEqual(m["interrupted_iterations"]["count"], 0)
        # The bodies arrived whole.
        with log.lock:
            sizes = {row[4] for row in log.requests if row[0] == "/function/predict"}
        self.assertEqual(sizes, {4096})

        rows = read_csv(out)
        self.assertEqual(len(rows), served["total"])
        lat = [int(row["latency_us"]) for row in rows]
        self.check_trend(m["http_req_duration"], lat)
        self.check_trend(k["cold"], [int(x["latency_us"]) for x in rows if x["start"] == "cold"])
        self.check_trend(k["warm"], [int(x["latency_us"]) for x in rows if x["start"] == "warm"])
        # The target sleeps before answering: no latency can be below it.
        self.assertGreaterEqual(min(lat), 2000)
        self.assertGreaterEqual(min(int(x["latency_us"]) for x in rows if x["start"] == "cold"),
                                20000)
        self.assertEqual({x["function"] for x in rows}, {"predict", "health", "broken"})
        self.assertTrue(all(x["worker"].startswith("py-") for x in rows))
        self.assertTrue(all(x["exec_us"] == "2000" for x in rows))
        # The timeline accounts for every request.
        with open(os.path.join(out, "timeline.csv")) as f:
            tl = list(csv.DictReader(f))
        self.assertEqual(sum(int(x["reqs"]) for x in tl), served["total"])
        self.assertEqual(sum(int(x["cold"]) for x in tl), served["cold"])

    def test_arrival_rate_without_keep_alive(self):
        """Open loop: exactly rate x duration arrivals on a fixed timetable;
        without keep-alive every request is a new connection, so cold."""
        log, url = self.start_target(delay_ms=1, cold_delay_ms=1)
        scenario = """
executor: constant-arrival-rate
rate: 40
time_unit: 1s
duration: 4s
max_vus: 50
keep_alive: false
requests: [{path: /a}]
"""
        r, out = kiln_load(url, scenario, self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(out, "summary.json")) as f:
            s = json.load(f)
        m, k = s["metrics"], s["kiln"]
        served = log.counts()
        self.assertEqual(m["dropped_iterations"]["count"], 0)
        self.assertEqual(served["total"], 160)
        self.assertEqual(m["http_reqs"]["count"], 160)
        self.assertEqual(k["cold"]["count"], 160)
        self.assertEqual(log.connections, 160)
        rows = read_csv(out)
        sched = sorted(float(x["scheduled"]) for x in rows)
        for i, t in enumerate(sched):
            self.assertAlmostEqual(t - sched[0], i * 0.025, delta=2e-6)
        # Latency counts from the scheduled time, never from a later send.
        for x in rows:
            self.assertGreaterEqual(float(x["t_start"]) + 1e-6, float(x["scheduled"]))

    def test_server_closing_connections_is_not_an_error(self):
        """A server that answers Connection: close: kiln load reconnects."""
        log, url = self.start_target(delay_ms=0, cold_delay_ms=0)
        scenario = """
stages: [{target: 3, duration: 2s}]
requests: [{path: /close}]
"""
        r, out = kiln_load(url, scenario, self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(out, "summary.json")) as f:
            m = json.load(f)["metrics"]
        served = log.counts()
        self.assertEqual(m["http_req_failed"]["passes"], 0)
        self.assertEqual(m["http_reqs"]["count"], served["total"])
        self.assertEqual(served["cold"], served["total"])

    def test_max_requests_bounds_the_run(self):
        log, url = self.start_target(delay_ms=0, cold_delay_ms=0)
        scenario = "stages: [{target: 4, duration: 20s}]\nrequests: [{path: /a}]\n"
        r, out = kiln_load(url, scenario, self.dir, "--max-requests", "137")
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(out, "summary.json")) as f:
            s = json.load(f)
        self.assertEqual(s["stopped_by"], "max_requests")
        self.assertEqual(s["metrics"]["http_reqs"]["count"], 137)
        self.assertEqual(log.counts()["total"], 137)

    def test_refusals(self):
        scenario = "stages: [{target: 1, duration: 1s}]\nrequests: [{path: /a}]\n"
        # Not loopback: refused before any connection is attempted.
        r, out = kiln_load("http://192.0.2.1:9", scenario, self.dir)
        self.assertEqual(r.returncode, 2)
        self.assertIn("not a loopback address", r.stderr)
        self.assertFalse(os.path.exists(out))
        # A bad scenario names its file and line.
        r, _ = kiln_load("http://127.0.0.1:9", "requests: [{path: /a}]\nstages:\n  - {target: "
                         "-1, duration: 1s}\n", self.dir, name="bad.yaml")
        self.assertEqual(r.returncode, 2)
        self.assertRegex(r.stderr, r"bad\.yaml:3: target")
        self.assertEqual(len(r.stderr.strip().splitlines()), 1)
        # Limits: more VUs than allowed.
        r, _ = kiln_load("http://127.0.0.1:9", scenario, self.dir, "--max-vus", "1",
                         "--duration-scale", "2", "--max-requests", "3")
        self.assertEqual(r.returncode, 0, r.stderr)
        r, _ = kiln_load("http://127.0.0.1:9", "stages: [{target: 5, duration: 1s}]\n"
                         "requests: [{path: /a}]\n", self.dir, "--max-vus", "4")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--max-vus", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
