#!/usr/bin/env python3
"""The HTTP layer: keep-alive, pipelining, limits, timeouts and malformed input."""
import json
import os
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kilnserver import Server, read_response  # noqa: E402

CONFIG = """
server:
  listen: 127.0.0.1:0
  auth: false
  limits:
    max_header_bytes: 2KiB
    max_body_bytes: 4KiB
    max_connections: 8
  timeouts:
    idle: 2s
    read: 400ms
    write: 5s
    request: 10s
functions:
  - name: echo
    kind: echo
    max_workers: 1
"""


class Http(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = Server(CONFIG)

    @classmethod
    def tearDownClass(cls):
        cls.s.stop()
        cls.s.cleanup()

    def connect(self):
        c = socket.create_connection((self.s.host, self.s.port), timeout=10)
        self.addCleanup(c.close)
        return c

    def raw(self, data):
        """Sends raw bytes on a new connection; returns the first response."""
        with socket.create_connection((self.s.host, self.s.port), timeout=10) as c:
            c.sendall(data)
            return read_response(c)

    def assert_served(self):
        st, _, body = self.s.request("GET", "/healthz")
        self.assertEqual(st, 200)

    def test_keep_alive_serves_many_requests_on_one_connection(self):
        c = self.connect()
        rest = b""
        for i in range(20):
            body = b"n%d" % i
            c.sendall(b"POST /function/echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                      % (len(body), body))
            st, h, got, rest = read_response(c, rest)
            self.assertEqual((st, got), (200, body))
            self.assertNotIn("connection", h)

    def test_pipelined_requests_are_answered_in_order(self):
        c = self.connect()
        reqs = b"".join(b"POST /function/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\np%d"
                        % i for i in range(8))
        reqs += b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        c.sendall(reqs)
        rest = b""
        for i in range(8):
            st, _, got, rest = read_response(c, rest)
            self.assertEqual((st, got), (200, b"p%d" % i))
        st, _, got, rest = read_response(c, rest)
        self.assertEqual(json.loads(got)["status"], "ok")

    def test_pipelined_requests_beyond_the_read_buffer_are_all_answered(self):
        """More pipelined bytes than the server buffers while a request is
        processed (64 KiB): it stops reading, then resumes."""
        c = self.connect()
        n, size = 120, 1000
        reqs = b"".join(b"POST /function/echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                        % (size, (b"%04d" % i) * (size // 4)) for i in range(n))
        self.assertGreater(len(reqs), 65536)
        c.sendall(reqs)
        rest = b""
        for i in range(n):
            st, _, got, rest = read_response(c, rest)
            self.assertEqual((st, got[:4], len(got)), (200, b"%04d" % i, size))
        self.assert_served()

    def test_half_closed_client_still_gets_its_response(self):
        c = self.connect()
        c.sendall(b"POST /function/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nhalf")
        c.shutdown(socket.SHUT_WR)
        st, _, got, rest = read_response(c)
        self.assertEqual((st, got), (200, b"half"))
        while rest == b"":
            chunk = c.recv(100)
            if not chunk:
                break
            rest += chunk
        self.assertEqual(rest, b"")  # then the server closes
        self.assert_served()

    def test_connection_close_is_honoured(self):
        c = self.connect()
        c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        st, h, _, _ = read_response(c)
        self.assertEqual(st, 200)
        self.assertEqual(h["connection"], "close")
        self.assertEqual(c.recv(10), b"")

    def test_oversized_headers_are_431(self):
        st, h, body, _ = self.raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4000
                                  + b"\r\n\r\n")
        self.assertEqual(st, 431)
        self.assertIn("max_header_bytes", json.loads(body)["error"])
        self.assert_served()

    def test_oversized_body_is_413_before_it_is_read(self):
        st, h, body, _ = self.raw(b"POST /function/echo HTTP/1.1\r\nHost: x\r\n"
                                  b"Content-Length: 100000\r\n\r\n")
        self.assertEqual(st, 413)
        self.assertIn("max_body_bytes", json.loads(body)["error"])
        self.assert_served()

    def test_oversized_chunked_body_is_413(self):
        chunk = b"a" * 3000
        data = (b"POST /function/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                + (b"%x\r\n%s\r\n" % (len(chunk), chunk)) * 2 + b"0\r\n\r\n")
        st, _, body, _ = self.raw(data)
        self.assertEqual(st, 413)
        self.assert_served()

    def test_chunked_body_within_limit_is_reassembled(self):
        data = (b"POST /function/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
        st, _, body, _ = self.raw(data)
        self.assertEqual((st, body), (200, b"abcdefg"))

    def test_slow_client_gets_408(self):
        c = self.connect()
        c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finishes
        st, _, body, _ = read_response(c)
        self.assertEqual(st, 408)
        self.assertIn("read", json.loads(body)["error"])
        self.assert_served()

    def test_idle_connection_is_closed(self):
        c = self.connect()
        c.settimeout(10)
        t0 = time.monotonic()
        self.assertEqual(c.recv(10), b"")
        self.assertLess(time.monotonic() - t0, 9)

    def test_timeouts_follow_the_state_after_a_request(self):
        # A served request moves the connection's deadline later (read,
        # request, write, then idle); the timer set for an earlier one
        # must not close it early, and a new request's read timeout runs
        # from its first byte.
        c = self.connect()
        c.settimeout(10)
        c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(read_response(c)[0], 200)
        time.sleep(1.0)  # idle, past the read timeout (400 ms)
        t0 = time.monotonic()
        c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finishes
        st, _, body, _ = read_response(c)
        waited = time.monotonic() - t0
        self.assertEqual(st, 408, body)
        self.assertGreater(waited, 0.3)
        self.assertLess(waited, 3.0)
        c2 = self.connect()
        c2.settimeout(10)
        c2.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(read_response(c2)[0], 200)
        t0 = time.monotonic()
        self.assertEqual(c2.recv(10), b"")  # closed at the idle timeout (2 s), not before
        idle = time.monotonic() - t0
        self.assertGreater(idle, 1.8)
        self.assertLess(idle, 6.0)
        self.assert_served()

    def test_connection_limit_answers_503(self):
        held = [self.connect() for _ in range(8)]
        for h in held:  # make sure the server accepted them all
            h.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertEqual(read_response(h)[0], 200)
        c = self.connect()
        st, h, body, _ = read_response(c)
        self.assertEqual(st, 503)
        self.assertIn("max_connections", json.loads(body)["error"])
        for h in held:
            h.close()
        time.sleep(0.2)
        self.assert_served()

    def test_hundred_bad_requests_get_4xx_and_server_still_serves(self):
        bad = [
            b"GARBAGE\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET / HTTP/9.9\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nNo Colon Header\r\n\r\n",
            b"POST /function/echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"GET /\x00 HTTP/1.1\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 600 + b"\r\n",
            b"POST /function/echo HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"GET /function/../../etc/passwd HTTP/1.1\r\n\r\n",
            b"POST /function/%2e%2e HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            b"POST /function/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            b"DELETE /healthz HTTP/1.1\r\n\r\n",
        ]
        n = 0
        while n < 100:
            data = bad[n % len(bad)]
            st, _, body, _ = self.raw(data)
            self.assertTrue(400 <= st < 500, (data[:60], st))
            self.assertIn("error", json.loads(body))
            n += 1
        self.assert_served()
        st, _, body = self.s.request("POST", "/function/echo", b"still")
        self.assertEqual((st, body), (200, b"still"))

    def test_head_has_no_body_and_keeps_the_connection(self):
        c = self.connect()
        c.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        buf = b""
        while buf.count(b"\r\n\r\n") < 2 or not buf.endswith(b"}"):
            chunk = c.recv(65536)
            if not chunk:
                break
            buf += chunk
        head, rest = buf.split(b"\r\n\r\n", 1)
        self.assertTrue(head.startswith(b"HTTP/1.1 200"))
        self.assertIn(b"Content-Length: 15", head)
        self.assertTrue(rest.startswith(b"HTTP/1.1 200"), rest[:40])

    def test_expect_100_continue(self):
        c = self.connect()
        c.sendall(b"POST /function/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        st, _, _, rest = read_response(c)
        self.assertEqual(st, 100)
        c.sendall(b"abc")
        st, _, body, _ = read_response(c, rest)
        self.assertEqual((st, body), (200, b"abc"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
