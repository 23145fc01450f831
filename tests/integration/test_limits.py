#!/usr/bin/env python3
"""Resource limits: a worker over its memory_limit or cpu_limit gets its
request a 502 and is replaced; a full disk under the data dir (a small
tmpfs, when this process may mount one) gives clear errors and corrupts
nothing; running out of file descriptors refuses connections and the
server recovers when they are closed."""
import json
import os
import resource
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kilnserver import KILN, Server  # noqa: E402

SRC = os.environ.get("KILN_SOURCE_DIR", ".")
ASAN = b"libasan" in subprocess.run(["ldd", KILN], capture_output=True).stdout


def integrity(data):
    db = sqlite3.connect(os.path.join(data, "kiln.db"))
    try:
        return db.execute("PRAGMA integrity_check").fetchall()
    finally:
        db.close()


class Limits(unittest.TestCase):
    def test_worker_memory_and_cpu_limits(self):
        cfg = """
server: {listen: 127.0.0.1:0, auth: false}
functions:
  - {name: small, kind: echo, faults: true, memory_limit: 64MiB, max_workers: 1}
  - {name: cpu, kind: echo, faults: true, cpu_limit: 1s, max_workers: 1, timeout: 30s}
"""
        with Server(cfg) as s:
            if not ASAN:  # ASan reserves terabytes of address space: no RLIMIT_AS there
                # 30 rounds: the next request racing the exiting worker's
                # close (it once got "cannot write to the worker", ~1 in 30).
                for _ in range(30):
                    st, _, out = s.request("POST", "/function/small?alloc_mb=512", b"x")
                    self.assertEqual(st, 502, out)
                    self.assertIn("memory_limit", json.loads(out)["error"])
                    # Sent while that worker exits: it waits for the next one.
                    st, _, out = s.request("POST", "/function/small?alloc_mb=8", b"y")
                    self.assertEqual((st, out), (200, b"y"))
            st, h, out = s.request("POST", "/function/cpu?spin_ms=1500", b"x")
            self.assertEqual(st, 502, out)
            self.assertIn("signal %d" % 24, json.loads(out)["error"])  # SIGXCPU
            st, _, out = s.request("POST", "/function/cpu?spin_ms=100", b"z")
            self.assertEqual((st, out), (200, b"z"))
            self.assertEqual(s.request("GET", "/healthz")[0], 200)

    def test_invocation_log_retention(self):
        """server.log.retention_rows bounds the log: the newest rows stay,
        with their order and content; retention_rows 0 keeps every row."""
        def rows(s):
            db = sqlite3.connect("file:%s?mode=ro" % os.path.join(s.tmp, "var", "kiln.db"),
                                 uri=True)
            try:
                return db.execute("SELECT bytes_in FROM invocations WHERE function = 'e'"
                                  " ORDER BY id").fetchall()
            finally:
                db.close()

        def wait_rows(s, want):
            deadline = time.time() + 10
            while time.time() < deadline:
                got = rows(s)
                if got[-1:] == [(want,)]:
                    return got
                time.sleep(0.05)
            self.fail("the log never showed the last invocation: %r" % got[-3:])

        for keep in (7, 0):
            cfg = """
server:
  listen: 127.0.0.1:0
  auth: false
  log: {retention_rows: %d, batch_rows: 4, flush: 10ms}
functions:
  - {name: e, kind: echo, max_workers: 1}
""" % keep
            with Server(cfg) as s:
                for i in range(1, 31):
                    st, _, out = s.request("POST", "/function/e", b"x" * i)
                    self.assertEqual((st, out), (200, b"x" * i))
                got = wait_rows(s, 30)
                want = range(24, 31) if keep else range(1, 31)
                self.assertEqual(got, [(i,) for i in want])

    @unittest.skipIf(os.geteuid() != 0, "mounting a tmpfs needs root")
    def test_disk_full(self):
        tmp = tempfile.mkdtemp(prefix="kiln-diskfull-")
        mnt = os.path.join(tmp, "mnt")
        os.mkdir(mnt)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", mnt],
                           capture_output=True, text=True)
        if r.returncode:
            shutil.rmtree(tmp)
            self.skipTest("cannot mount a tmpfs: " + r.stderr.strip())
        try:
            self.disk_full(tmp, mnt)
        finally:
            subprocess.run(["umount", "-l", mnt])
            shutil.rmtree(tmp, ignore_errors=True)

    def disk_full(self, tmp, mnt):
        model = os.path.join(tmp, "m.kiln")
        weights = []
        for seed in range(1, 4):
            r = subprocess.run([KILN, "import", os.path.join(SRC, "models", "lenet-mnist.yaml"),
                                "-o", model, "--seed", str(seed)], capture_output=True, text=True,
                               timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
            with open(model, "rb") as f:
                weights.append(f.read())
        data = os.path.join(mnt, "var")
        cfg = """
server:
  listen: 127.0.0.1:0
  limits: {max_body_bytes: 32MiB}
functions:
  - {name: echo, kind: echo, max_workers: 1}
  - {name: digits, kind: predict, model: full, max_workers: 1, timeout: 60s}
"""
        s = Server(cfg, args=["--data-dir", data])
        try:
            with open(os.path.join(data, "token")) as f:
                a = {"Authorization": "Bearer " + f.read().strip()}
            acked, errors = {}, []
            for i, w in enumerate(weights):
                st, _, out = s.request("PUT", "/v1/models/full/versions/%d" % i, w, a)
                if st == 201:
                    acked[str(i)] = json.loads(out)["sha256"]
                else:
                    errors.append((st, json.loads(out)["error"]))
            self.assertGreater(len(acked), 0)
            self.assertGreater(len(errors), 0, "the 40 MiB tmpfs never filled")
            for st, msg in errors:
                self.assertEqual(st, 507, msg)
                self.assertIn("space", msg)
            # Fill what is left, then the server still answers everything.
            with open(os.path.join(mnt, "filler"), "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * (1 << 20))
                        f.flush()
                except OSError:
                    pass
            st, _, out = s.request("POST", "/v1/models", b'{"name": "another"}', a)
            self.assertTrue(st == 201 or st == 507, (st, out))
            for _ in range(50):
                st, _, out = s.request("POST", "/function/echo", b"x")
                self.assertEqual((st, out), (200, b"x"))
            self.assertEqual(s.request("GET", "/healthz")[0], 200)
            st, _, out = s.request("GET", "/v1/models/full")
            self.assertEqual(st, 200, out)
            listed = {v["version"]: v["sha256"] for v in json.loads(out)["versions"]}
            self.assertEqual(listed, acked)
            self.assertEqual(os.listdir(os.path.join(data, "blobs", "tmp")), [])
            # Space back: uploads work again.
            os.unlink(os.path.join(mnt, "filler"))
            v0 = sorted(acked)[0]
            self.assertEqual(s.request("DELETE", "/v1/models/full/versions/" + v0, None, a)[0],
                             204)
            del acked[v0]
            st, _, out = s.request("PUT", "/v1/models/full/versions/again", weights[0], a)
            self.assertEqual(st, 201, out)
            acked["again"] = json.loads(out)["sha256"]
            body = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 28, 28],
                                           "datatype": "FP32", "data": [0.5] * 784}]}).encode()
            self.assertEqual(s.request("POST", "/v2/models/digits/infer", body)[0], 200)
        finally:
            rc = s.stop()
            s.cleanup()
        self.assertEqual(rc, 0)
        self.assertEqual(integrity(data), [("ok",)])
        s = Server(cfg, args=["--data-dir", data])
        try:
            for ver, sha in acked.items():
                st, _, out = s.request("GET", "/v1/models/full/versions/%s" % ver)
                self.assertEqual((st, json.loads(out)["sha256"]), (200, sha))
        finally:
            s.stop()
            s.cleanup()
        print("limits: disk full: %d uploads stored, %d refused with 507" %
              (len(weights) - len(errors), len(errors)))

    def test_file_descriptors_exhausted(self):
        """The server under RLIMIT_NOFILE 64: connections past it are
        refused (closed, or 503), those open keep working, and closing them
        brings it back."""
        def low_nofile():
            resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        cfg = """
server: {listen: 127.0.0.1:0, auth: false, limits: {max_connections: 1000}}
functions:
  - {name: echo, kind: echo, max_workers: 1}
"""
        import kilnserver
        orig = kilnserver.subprocess.Popen

        def popen(*args, **kw):
            kw["preexec_fn"] = low_nofile
            return orig(*args, **kw)
        kilnserver.subprocess.Popen = popen
        try:
            s = Server(cfg)
        finally:
            kilnserver.subprocess.Popen = orig
        try:
            self.assertEqual(s.request("POST", "/function/echo", b"w")[0], 200)
            conns, refused, served = [], 0, 0
            for _ in range(150):
                c = socket.create_connection((s.host, s.port), timeout=10)
                conns.append(c)
            for c in conns:
                try:
                    c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    data = c.recv(65536)
                except OSError:
                    data = b""
                if data.startswith(b"HTTP/1.1 200"):
                    served += 1
                else:
                    self.assertTrue(data == b"" or data.startswith(b"HTTP/1.1 503"), data[:60])
                    refused += 1
            self.assertGreater(refused, 0)
            self.assertGreater(served, 0)
            self.assertIsNone(s.proc.poll())
            for c in conns:
                c.close()
            time.sleep(0.5)
            for _ in range(20):
                self.assertEqual(s.request("GET", "/healthz")[0], 200)
            st, _, out = s.request("POST", "/function/echo", b"back")
            self.assertEqual((st, out), (200, b"back"))
            print("limits: fds exhausted: 150 connections, %d served, %d refused" %
                  (served, refused))
        finally:
            self.assertEqual(s.stop(), 0, s.stderr()[-2000:])
            s.cleanup()


if __name__ == "__main__":
    unittest.main(verbosity=2)
