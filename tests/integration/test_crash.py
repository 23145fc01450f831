#!/usr/bin/env python3
"""Crash safety: the server SIGKILLed during model uploads and during heavy
invocation logging, then restarted on the same data dir (the database
passes PRAGMA integrity_check, every acknowledged model is there, whole and
loads, no partial one is visible, it serves again); workers SIGKILLed at
random during a load run (every request answered, 200 or 5xx, none hangs,
the worker count recovers). Counts are printed as `crash: ...` lines."""
import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kilnserver import import_model, Server, worker_pids  # noqa: E402

UPLOAD_ROUNDS = int(os.environ.get("KILN_CRASH_ROUNDS", "2"))

CONFIG = """
server:
  listen: 127.0.0.1:0
  auth: true
  limits: {max_body_bytes: 32MiB}
functions:
  - {name: echo, kind: echo, max_workers: 2}
  - {name: digits, kind: predict, model: crash, max_workers: 1, timeout: 60s}
"""

INPUT = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                                "data": [0.25] * 784}]}).encode()


def integrity(data):
    """PRAGMA integrity_check of the store's database (server not running)."""
    db = sqlite3.connect(os.path.join(data, "kiln.db"))
    try:
        return db.execute("PRAGMA integrity_check").fetchall()
    finally:
        db.close()


def count_rows(data, table):
    db = sqlite3.connect(os.path.join(data, "kiln.db"))
    try:
        return db.execute("SELECT count(*) FROM %s" % table).fetchone()[0]
    finally:
        db.close()


def kill_server(s):
    kids = worker_pids(s.proc.pid)
    s.proc.send_signal(signal.SIGKILL)
    s.proc.wait()
    s.stop()
    # Its zygote and workers die with it (PR_SET_PDEATHSIG); wait until they did.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(os.path.exists("/proc/%d" % p) for p in kids):
        time.sleep(0.05)


class Crash(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-crash-")
        cls.weights = []
        for seed, extra in ((1, []), (2, ["--compress"])):
            out = os.path.join(cls.tmp, "m%d.kiln" % seed)
            import_model("lenet-mnist.yaml", out, seed, extra)
            with open(out, "rb") as f:
                cls.weights.append(f.read())

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def auth(self, data):
        with open(os.path.join(data, "token")) as f:
            return {"Authorization": "Bearer " + f.read().strip()}

    def check_store(self, s, data, acked, inflight):
        """Every acknowledged version is listed and whole; anything else
        listed is an in-flight upload that completed, whole too; the
        temporary directory is empty; the latest version serves."""
        st, _, out = s.request("GET", "/v1/models/crash")
        self.assertEqual(st, 200, out)
        listed = {v["version"]: v["sha256"] for v in json.loads(out)["versions"]}
        for ver, sha in acked.items():
            self.assertEqual(listed.get(ver), sha, "acknowledged version %s lost" % ver)
        for ver, sha in listed.items():
            self.assertTrue(ver in acked or ver in inflight, "unknown version %s" % ver)
            st, _, blob = s.request("GET", "/v1/models/crash/versions/%s/weights" % ver)
            self.assertEqual(st, 200)
            self.assertEqual(hashlib.sha256(blob).hexdigest(), sha, "version %s is partial" % ver)
        self.assertEqual(os.listdir(os.path.join(data, "blobs", "tmp")), [])
        st, _, out = s.request("POST", "/v2/models/digits/infer", INPUT)
        self.assertEqual(st, 200, out)
        return listed

    def test_kill_during_model_upload(self):
        data = os.path.join(self.tmp, "upload-var")
        acked, inflight = {}, set()
        rng = random.Random(int(os.environ.get("KILN_CRASH_SEED", "1")))
        kills = 0
        for rnd in range(UPLOAD_ROUNDS):
            s = Server(CONFIG, args=["--data-dir", data])
            a = self.auth(data)
            if rnd:
                self.check_store(s, data, acked, inflight)
            ver = "a%d" % rnd
            st, _, out = s.request("PUT", "/v1/models/crash/versions/" + ver,
                                   self.weights[rnd % 2], a)
            self.assertEqual(st, 201, out)
            acked[ver] = json.loads(out)["sha256"]
            # Uploads in flight while the server is killed.
            results = {}

            def upload(v, body):
                try:
                    results[v] = s.request("PUT", "/v1/models/crash/versions/" + v, body, a,
                                           timeout=30)
                except (OSError, http.client.HTTPException) as e:
                    results[v] = e
            threads = []
            for k in range(3):
                v = "f%d-%d" % (rnd, k)
                inflight.add(v)
                t = threading.Thread(target=upload, args=(v, self.weights[(rnd + k) % 2]))
                t.start()
                threads.append(t)
            time.sleep(rng.uniform(0.0, 1.2))
            kill_server(s)
            kills += 1
            for t in threads:
                t.join(60)
                self.assertFalse(t.is_alive())
            for v, r in results.items():
                if isinstance(r, tuple) and r[0] == 201:
                    acked[v] = json.loads(r[2])["sha256"]
            self.assertEqual(integrity(data), [("ok",)])
            s.cleanup()
        s = Server(CONFIG, args=["--data-dir", data])
        try:
            listed = self.check_store(s, data, acked, inflight)
        finally:
            self.assertEqual(s.stop(), 0)
            s.cleanup()
        self.assertEqual(integrity(data), [("ok",)])
        print("crash: upload kills %d, acknowledged %d, listed %d, in flight %d" %
              (kills, len(acked), len(listed), len(inflight)))

    def test_kill_during_heavy_invocation_logging(self):
        data = os.path.join(self.tmp, "log-var")
        total_ok = 0
        for rnd in range(2):
            s = Server(CONFIG, args=["--data-dir", data])
            stop = threading.Event()
            counts = []

            def blast():
                n = 0
                c = http.client.HTTPConnection(s.host, s.port, timeout=30)
                try:
                    while not stop.is_set():
                        c.request("POST", "/function/echo", body=b"x" * 64)
                        r = c.getresponse()
                        r.read()
                        n += r.status == 200
                except (OSError, http.client.HTTPException):
                    pass
                c.close()
                counts.append(n)
            threads = [threading.Thread(target=blast) for _ in range(6)]
            for t in threads:
                t.start()
            time.sleep(1.0)
            kill_server(s)
            stop.set()
            for t in threads:
                t.join(30)
            total_ok += sum(counts)
            self.assertEqual(integrity(data), [("ok",)])
            rows = count_rows(data, "invocations")
            self.assertLessEqual(rows, total_ok)
            s.cleanup()
        s = Server(CONFIG, args=["--data-dir", data])
        try:
            for _ in range(20):
                st, _, out = s.request("POST", "/function/echo", b"again")
                self.assertEqual((st, out), (200, b"again"))
        finally:
            self.assertEqual(s.stop(), 0)
            s.cleanup()
        self.assertEqual(integrity(data), [("ok",)])
        after = count_rows(data, "invocations")
        self.assertGreaterEqual(after, rows + 20)  # a clean stop flushes the log
        print("crash: log kills 2, invocations answered %d, rows kept %d" % (total_ok, rows))

    def test_workers_killed_during_load(self):
        cfg = """
server:
  listen: 127.0.0.1:0
  auth: false
functions:
  - {name: echo, kind: echo, faults: true, min_warm: 2, max_workers: 3, queue_limit: 1000,
     timeout: 20s}
"""
        with Server(cfg) as s:
            stop = threading.Event()
            statuses, errors = [], []
            lock = threading.Lock()

            def client():
                c = http.client.HTTPConnection(s.host, s.port, timeout=25)
                while not stop.is_set():
                    try:
                        c.request("POST", "/function/echo?sleep_ms=5", body=b"load")
                        r = c.getresponse()
                        body = r.read()
                        with lock:
                            statuses.append(r.status)
                        if r.status == 200:
                            self.assertEqual(body, b"load")
                    except (OSError, http.client.HTTPException) as e:
                        with lock:
                            errors.append(repr(e))
                        c.close()
                        c = http.client.HTTPConnection(s.host, s.port, timeout=25)
                c.close()

            def worker(pid):
                # Workers name themselves kiln:FUNCTION; the zygote does not.
                try:
                    with open("/proc/%d/comm" % pid) as f:
                        return f.read().startswith("kiln:")
                except OSError:
                    return False
            threads = [threading.Thread(target=client) for _ in range(8)]
            for t in threads:
                t.start()
            rng = random.Random(2)
            kills = 0
            t_end = time.monotonic() + float(os.environ.get("KILN_CRASH_LOAD_S", "3"))
            while time.monotonic() < t_end:
                pids = [p for p in worker_pids(s.proc.pid) if worker(p)]
                if pids:
                    try:
                        os.kill(rng.choice(pids), signal.SIGKILL)
                        kills += 1
                    except ProcessLookupError:
                        pass
                time.sleep(rng.uniform(0.02, 0.15))
            stop.set()
            for t in threads:
                t.join(60)
                self.assertFalse(t.is_alive(), "a client hangs")
            self.assertEqual(errors, [])
            bad = [x for x in statuses if x != 200 and not 500 <= x < 600]
            self.assertEqual(bad, [])
            self.assertGreater(statuses.count(200), 0)
            # The worker count comes back to min_warm.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                fn = json.loads(s.request("GET", "/v1/functions")[2])["functions"][0]
                if fn["workers"]["idle"] >= 2:
                    break
                time.sleep(0.1)
            self.assertGreaterEqual(fn["workers"]["idle"], 2, fn)
            st, _, out = s.request("POST", "/function/echo", b"after")
            self.assertEqual((st, out), (200, b"after"))
            print("crash: worker kills %d during %d requests: %d ok, %d 5xx" %
                  (kills, len(statuses), statuses.count(200), len(statuses) -
                   statuses.count(200)))


if __name__ == "__main__":
    unittest.main(verbosity=2)
