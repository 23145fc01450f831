#!/usr/bin/env python3
"""Batching in workers (concurrency > 1, max_batch): invocations that wait in
a worker's socket together are run as one round and answered each with its
own result, headers (X-Kiln-Batch: the round's size) and log row; a batched
answer is byte for byte the answer the same request gets alone; a crash in a
round fails that round's requests with 502 and the next request is served.

A round is made deterministic by stopping the worker (SIGSTOP) while the
requests are sent, waiting until the server has accepted all of them, then
letting it run (SIGCONT): it finds them all in its socket at once."""
import json
import os
import signal
import socket
import subprocess
import sqlite3
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kilnserver import KILN, SRC, read_response, Server  # noqa: E402
from test_predict import png  # noqa: E402

MNIST = os.path.join(SRC, "models", "mnist.kiln")

CONFIG = """
server:
  listen: 127.0.0.1:0
  auth: false
functions:
  - {name: echo, kind: echo, min_warm: 1, max_workers: 1, concurrency: 8, max_batch: 8,
     faults: true, timeout: 60s}
  - {name: mnist, kind: predict, model: %s, min_warm: 1, max_workers: 1, concurrency: 32,
     max_batch: 32, timeout: 60s}
  - {name: unbatched, kind: echo, min_warm: 1, max_workers: 1, concurrency: 4, max_batch: 1,
     timeout: 60s}
  - {name: short, kind: echo, min_warm: 1, max_workers: 1, concurrency: 4, max_batch: 4,
     timeout: 1s}
  - {name: waiting, kind: echo, min_warm: 1, max_workers: 1, concurrency: 4, max_batch: 4,
     batch_wait_us: 20000, timeout: 60s}
  - {name: small, kind: echo, min_warm: 1, max_workers: 1, concurrency: 4, max_batch: 4,
     faults: true, memory_limit: 64MiB, timeout: 60s}
""" % MNIST


def digits():
    """Distinct 28x28 grayscale PNGs: strokes at different places."""
    out = []
    for k in range(7):
        out.append(png(28, 28, lambda x, y, k=k: 255 if (x + 2 * k) % 9 < 3 or y == 4 + 3 * k
                       else 0))
    with open(os.path.join(SRC, "bench/scenarios/payloads/digit28.png"), "rb") as f:
        out.append(f.read())
    return out


class Batch(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = Server(CONFIG)
        cls.sent = {}  # function -> requests sent

    @classmethod
    def tearDownClass(cls):
        cls.s.stop()
        cls.s.cleanup()

    def post(self, fn, body, query="", ctype="application/octet-stream"):
        self.sent[fn] = self.sent.get(fn, 0) + 1
        return self.s.request("POST", "/function/%s%s" % (fn, query), body,
                              {"Content-Type": ctype}, timeout=60)

    def invocations(self, fn):
        _, body = self.s.json("GET", "/system/functions")
        return next(f["invocationCount"] for f in body if f["name"] == fn)

    def worker_pid(self, fn, body=b"ping", ctype="text/plain"):
        st, h, data = self.post(fn, body, "", ctype)
        self.assertEqual(st, 200, data)
        return int(h["x-kiln-worker"])

    def round(self, fn, requests):
        """Sends requests [(body, query, ctype)] while fn's worker is stopped,
        so that it takes them in one round; the answers in order."""
        pid = self.worker_pid(fn, requests[0][0], requests[0][2])
        before = self.invocations(fn)
        out = [None] * len(requests)

        def send(i, r):
            out[i] = self.post(fn, *r)
        os.kill(pid, signal.SIGSTOP)
        try:
            threads = [threading.Thread(target=send, args=(i, r)) for i, r in enumerate(requests)]
            deadline = time.monotonic() + 30
            for i, t in enumerate(threads):
                t.start()  # one at a time: the round holds them in this order
                while self.invocations(fn) < before + i + 1 and time.monotonic() < deadline:
                    time.sleep(0.005)
            self.assertEqual(self.invocations(fn), before + len(requests))
            time.sleep(0.1)  # the last dispatch's write reaches the socket
        finally:
            os.kill(pid, signal.SIGCONT)
        for t in threads:
            t.join(60)
        return pid, out

    def test_a_round_answers_each_request_with_its_own_result(self):
        bodies = [b"request %d " % i * (i + 1) for i in range(6)]
        pid, out = self.round("echo", [(b, "", "text/x-%d" % i) for i, b in enumerate(bodies)])
        for i, (st, h, data) in enumerate(out):
            self.assertEqual(st, 200, data)
            self.assertEqual(data, bodies[i])
            self.assertEqual(h["content-type"], "text/x-%d" % i)
            self.assertEqual(int(h["x-kiln-worker"]), pid)
            self.assertEqual(h["x-kiln-start"], "warm")
            for k in ("x-kiln-queue-us", "x-kiln-init-us", "x-kiln-exec-us"):
                self.assertGreaterEqual(int(h[k]), 0)
        sizes = [int(h["x-kiln-batch"]) for _, h, _ in out]
        print("batch: echo round sizes %s" % sizes)
        self.assertTrue(all(2 <= n <= 8 for n in sizes), sizes)

    def test_large_bodies_past_the_socket_buffer_arrive_whole_and_in_order(self):
        # The server writes the frames of one loop turn together; 6 x 1.5 MB
        # to a stopped worker overflow its socket, so the rest goes out in
        # parts as the worker reads: every body must arrive whole, each to
        # its own request.
        bodies = [os.urandom(1536 * 1024) for _ in range(6)]
        _, out = self.round("echo", [(b, "", "application/x-%d" % i)
                                     for i, b in enumerate(bodies)])
        for i, (st, h, data) in enumerate(out):
            self.assertEqual(st, 200, data[:200])
            self.assertEqual(h["content-type"], "application/x-%d" % i)
            self.assertTrue(data == bodies[i], "body %d differs" % i)

    def test_batch_wait_answers_alone_or_in_a_round(self):
        # A round that waits for more (batch_wait_us) still answers a lone
        # request once the wait is over, and a full round at once.
        for i in range(3):
            st, h, data = self.post("waiting", b"alone %d" % i)
            self.assertEqual((st, data, h["x-kiln-batch"]), (200, b"alone %d" % i, "1"))
        _, out = self.round("waiting", [(b"w%d" % i, "", "text/plain") for i in range(4)])
        self.assertEqual([(st, data) for st, _, data in out], [(200, b"w%d" % i) for i in range(4)])
        self.assertEqual([h["x-kiln-batch"] for _, h, _ in out], ["4"] * 4)

    def test_max_batch_1_runs_one_at_a_time(self):
        pid, out = self.round("unbatched", [(b"u%d" % i, "", "text/plain") for i in range(4)])
        self.assertEqual([(st, data) for st, _, data in out], [(200, b"u%d" % i) for i in range(4)])
        self.assertEqual([h["x-kiln-batch"] for _, h, _ in out], ["1"] * 4)

    def test_batched_predictions_equal_single_ones(self):
        images = digits()
        alone = []
        for img in images:
            st, h, data = self.post("mnist", img, "?top_k=10", "image/png")
            self.assertEqual(st, 200, data)
            self.assertEqual(h["x-kiln-batch"], "1")
            alone.append(data)
        self.assertGreater(len(set(alone)), 4, "the test images should not all look alike")
        # Each image twice, interleaved, plus a KServe v2 body and a bad one.
        reqs = [(img, "?top_k=10", "image/png") for img in images + images]
        v2 = json.dumps({"inputs": [{"name": "x", "shape": [1, 1, 28, 28], "datatype": "FP32",
                                     "data": [0.5] * 784}]}).encode()
        reqs += [(v2, "", "application/json"), (b"not an image", "", "image/png")]
        st, _, v2_alone = self.post("mnist", v2, "", "application/json")
        self.assertEqual(st, 200)
        _, out = self.round("mnist", reqs)
        for i, img in enumerate(images + images):
            st, h, data = out[i]
            self.assertEqual(st, 200, data)
            self.assertEqual(data, alone[i % len(images)], "image %d" % (i % len(images)))
        self.assertEqual(out[-2][0], 200)
        self.assertEqual(out[-2][2], v2_alone)
        self.assertEqual(out[-1][0], 400)
        self.assertIn(b"error", out[-1][2])
        sizes = [int(h["x-kiln-batch"]) for _, h, _ in out]
        print("batch: mnist round sizes %s" % sizes)
        self.assertTrue(all(n >= 2 for n in sizes), sizes)
        # Rounds of 2..7 images run at other batch sizes (a session each).
        for n in (2, 3, 5):
            _, out = self.round("mnist", reqs[:n])
            self.assertEqual([st for st, _, _ in out], [200] * n)
            self.assertEqual([data for _, _, data in out], [alone[i] for i in range(n)])
            self.assertEqual([h["x-kiln-batch"] for _, h, _ in out], [str(n)] * n)

    def test_a_crash_fails_its_round_only(self):
        reqs = [(b"a", "", "text/plain"), (b"b", "?crash=1", "text/plain"),
                (b"c", "", "text/plain")]
        pid, out = self.round("echo", reqs)
        for st, h, data in out:
            self.assertEqual(st, 502, data)
            self.assertIn("error", json.loads(data))
            self.assertEqual(int(h["x-kiln-worker"]), pid)
        # The next request is served by a new worker.
        st, h, data = self.post("echo", b"after")
        self.assertEqual((st, data), (200, b"after"))
        self.assertNotEqual(int(h["x-kiln-worker"]), pid)
        # Other functions were not touched.
        st, _, data = self.post("unbatched", b"other")
        self.assertEqual((st, data), (200, b"other"))

    @unittest.skipIf(b"libasan" in subprocess.run(["ldd", KILN], capture_output=True).stdout,
                     "memory_limit is not applied under AddressSanitizer")
    def test_a_worker_that_must_exit_leaves_the_rest_of_its_round_to_the_next(self):
        # The second request fails memory_limit: its worker answers it (502)
        # and exits; the first was answered, the last two run on a new worker.
        reqs = [(b"one", "", "text/plain"), (b"x", "?alloc_mb=256", "text/plain"),
                (b"three", "", "text/plain"), (b"four", "", "text/plain")]
        pid, out = self.round("small", reqs)
        self.assertEqual((out[0][0], out[0][2]), (200, b"one"))
        self.assertEqual(int(out[0][1]["x-kiln-worker"]), pid)
        self.assertEqual(out[1][0], 502, out[1][2])
        self.assertIn("memory_limit", json.loads(out[1][2])["error"])
        for st, h, data in out[2:]:
            self.assertEqual(st, 200, data)
            self.assertNotEqual(int(h["x-kiln-worker"]), pid)
        self.assertEqual([data for _, _, data in out[2:]], [b"three", b"four"])

    def test_timeouts_hold_in_a_round(self):
        pid = self.worker_pid("short")
        os.kill(pid, signal.SIGSTOP)  # never answers: every deadline passes
        try:
            out = [None] * 3

            def send(i):
                out[i] = self.post("short", b"t%d" % i)
            threads = [threading.Thread(target=send, args=(i,)) for i in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
        finally:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        codes = sorted(st for st, _, _ in out)
        self.assertIn(504, codes)
        self.assertTrue(set(codes) <= {502, 504}, codes)
        st, _, data = self.post("short", b"next")
        self.assertEqual((st, data), (200, b"next"))

    def test_pipelined_responses_written_at_once_all_arrive(self):
        # Answers the server writes in one go finish on the next loop turn:
        # pipelined requests it answers itself must not wait for other I/O.
        with socket.create_connection((self.s.host, self.s.port), timeout=10) as c:
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 5 +
                      b"GET /no-such-route HTTP/1.1\r\nHost: x\r\n\r\n" +
                      b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            rest = b""
            codes = []
            for _ in range(7):
                st, _, _, rest = read_response(c, rest)
                codes.append(st)
        self.assertEqual(codes, [200] * 5 + [404, 200])

    def test_z_every_request_has_a_log_row(self):
        # Last (unittest runs tests in name order): the rows of all the above.
        s = self.s
        s.stop()
        db = sqlite3.connect(os.path.join(s.tmp, "var", "kiln.db"))
        try:
            rows = dict(db.execute("SELECT function, count(*) FROM invocations GROUP BY function"))
            batched = db.execute("SELECT count(*) FROM invocations WHERE function = 'mnist'"
                                 " AND status = 200 AND exec_us > 0").fetchone()[0]
        finally:
            db.close()
        for fn, n in self.sent.items():
            self.assertEqual(rows.get(fn), n, fn)
        self.assertGreater(batched, 0)


if __name__ == "__main__":
    unittest.main()
