#!/usr/bin/env python3
"""Soak (suite `slow`): `kiln load` for KILN_SOAK_SECONDS (default 600)
against echo, a predict function by image and by KServe v2 JSON, in bursts
separated by idle gaps longer than idle_timeout (every burst scales up from
zero again), with a worker SIGKILLed every few seconds. Checks: the server's
RSS and file descriptors and the workers' RSS do not grow from the first
part of the run to the last, every answered invocation has its row in the
invocation log, every request is answered. p99 per part is printed, not
asserted (the machine is shared)."""
import csv
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import shutil
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kilnserver import KILN, Server, worker_pids  # noqa: E402

SRC = os.environ.get("KILN_SOURCE_DIR", ".")
SECONDS = int(os.environ.get("KILN_SOAK_SECONDS", "600"))
BURST_S, GAP_S = 20, 4
KILL_EVERY_S = 5

CONFIG = """
server:
  listen: 127.0.0.1:0
  auth: false
functions:
  - {name: echo, kind: echo, max_workers: 2, idle_timeout: 1s, timeout: 10s}
  - {name: digits, kind: predict, model: %s, max_workers: 2, idle_timeout: 1s, timeout: 20s}
"""


def proc_status(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def is_worker(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().startswith("kiln:")
    except OSError:
        return False


def p99(latencies):
    if not latencies:
        return 0.0
    latencies = sorted(latencies)
    return latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] / 1000.0


class Soak(unittest.TestCase):
    def test_soak(self):
        tmp = tempfile.mkdtemp(prefix="kiln-soak-")
        try:
            self.soak(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def soak(self, tmp):
        model = os.path.join(tmp, "lenet.kiln")
        r = subprocess.run([KILN, "import", os.path.join(SRC, "models", "lenet-mnist.yaml"),
                            "-o", model, "--seed", "9"], capture_output=True, text=True,
                           timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        payloads = os.path.join(SRC, "bench", "scenarios", "payloads")
        with open(os.path.join(tmp, "infer.json"), "w") as f:
            json.dump({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                                   "data": [0.3] * 784}]}, f)
        cycles = max(1, SECONDS // (BURST_S + GAP_S))
        stages = "".join("  - {target: 6, duration: 0s}\n  - {target: 6, duration: %ds}\n"
                         "  - {target: 0, duration: 0s}\n  - {target: 0, duration: %ds}\n"
                         % (BURST_S, GAP_S) for _ in range(cycles))
        scenario = os.path.join(tmp, "soak.yaml")
        with open(scenario, "w") as f:
            f.write("name: soak\nexecutor: ramping-vus\nstart_vus: 0\nstages:\n" + stages +
                    "graceful_ramp_down: 5s\ngraceful_stop: 5s\n"
                    "think_time: {min: 1ms, max: 20ms}\ntimeout: 30s\nrequests:\n"
                    "  - {name: echo, path: /function/echo, weight: 3, body: 'soak'}\n"
                    "  - {name: image, path: /function/digits, weight: 2, "
                    "headers: {Content-Type: image/png}, body_file: %s}\n"
                    "  - {name: infer, path: /v2/models/digits/infer, weight: 1, "
                    "headers: {Content-Type: application/json}, body_file: %s}\n"
                    % (os.path.join(payloads, "digit28.png"), os.path.join(tmp, "infer.json")))
        out = os.path.join(tmp, "out")
        s = Server(CONFIG % model)
        data = os.path.join(s.tmp, "var")
        samples = []  # (t, server rss, server fds, max worker rss, n workers)
        kills = 0
        try:
            load = subprocess.Popen([KILN, "load", "--url", "http://%s:%d" % (s.host, s.port),
                                     "--scenario", scenario, "--out", out, "--quiet"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            rng = random.Random(4)
            t0 = time.monotonic()
            next_kill = t0 + KILL_EVERY_S
            while load.poll() is None:
                time.sleep(0.5)
                kids = [p for p in worker_pids(s.proc.pid) if is_worker(p)]
                wrss = []
                for p in kids:
                    try:
                        wrss.append(proc_status(p, "VmRSS"))
                    except OSError:
                        pass
                samples.append((time.monotonic() - t0, proc_status(s.proc.pid, "VmRSS"),
                                len(os.listdir("/proc/%d/fd" % s.proc.pid)),
                                max(wrss) if wrss else 0, len(kids)))
                if time.monotonic() >= next_kill and kids:
                    try:
                        os.kill(rng.choice(kids), signal.SIGKILL)
                        kills += 1
                    except ProcessLookupError:
                        pass
                    next_kill = time.monotonic() + KILL_EVERY_S
            stdout, stderr = load.communicate()
            self.assertEqual(load.returncode, 0, stderr.decode()[-2000:])
            self.assertIsNone(s.proc.poll(), "the server died")
            self.assertEqual(s.request("GET", "/healthz")[0], 200)
        finally:
            rc = s.stop()
        try:
            self.assertEqual(rc, 0, s.stderr()[-2000:])
            with open(os.path.join(out, "requests.csv")) as f:
                rows = list(csv.DictReader(f))
            answered = [r for r in rows if int(r["status"]) > 0]
            unanswered = [r for r in rows if int(r["status"]) == 0]
            db = sqlite3.connect(os.path.join(data, "kiln.db"))
            logged = db.execute("SELECT count(*) FROM invocations").fetchone()[0]
            self.assertEqual(db.execute("PRAGMA integrity_check").fetchall(), [("ok",)])
            db.close()
        finally:
            s.cleanup()

        # Parts: the first and last quarter of the run (past the first burst).
        end = samples[-1][0]

        def part(lo, hi):
            return [x for x in samples if lo * end <= x[0] < hi * end]
        early, late = part(0.1, 0.35), part(0.75, 1.0)
        self.assertTrue(early and late)

        def top(xs, i):
            return max(x[i] for x in xs)

        def low(xs, i):
            return min(x[i] for x in xs)
        mib = 1 << 20
        srv_early, srv_late = top(early, 1), top(late, 1)
        fd_early, fd_late = low(early, 2), low(late, 2)
        w_early, w_late = top(early, 3), top(late, 3)
        t_start = float(rows[0]["t_start"]) if rows else 0
        lat = [(float(r["t_start"]) - t_start, int(r["latency_us"])) for r in answered]
        span = max(t for t, _ in lat) if lat else 1
        p99s = [p99([u for t, u in lat if k * span / 4 <= t < (k + 1) * span / 4])
                for k in range(4)]
        statuses = {}
        for r in answered:
            statuses[r["status"]] = statuses.get(r["status"], 0) + 1
        print("soak: %d s, %d requests %s, %d unanswered, %d log rows, %d worker kills" %
              (round(end), len(rows), json.dumps(statuses, sort_keys=True), len(unanswered),
               logged, kills))
        print("soak: server RSS max %.1f -> %.1f MiB, fds min %d -> %d, worker RSS max "
              "%.1f -> %.1f MiB (first vs last quarter)" %
              (srv_early / mib, srv_late / mib, fd_early, fd_late, w_early / mib, w_late / mib))
        print("soak: p99 per quarter (ms): %s" % ", ".join("%.2f" % x for x in p99s))
        self.assertEqual(unanswered, [])
        self.assertEqual(logged, len(answered), "invocation-log rows lost")
        self.assertTrue(all(r["status"] == "200" or r["status"].startswith("5") for r in rows))
        self.assertLessEqual(srv_late, srv_early * 1.25 + 8 * mib)
        self.assertLessEqual(fd_late, fd_early + 4)
        self.assertLessEqual(w_late, w_early * 1.25 + 8 * mib)
        self.assertGreater(kills, 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
