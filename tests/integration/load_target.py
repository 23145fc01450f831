#!/usr/bin/env python3
"""A small HTTP/1.1 target for testing `kiln load`, standing in for a kiln
server: the first request on each connection answers X-Kiln-Start: cold,
later ones warm, after a configurable delay. It keeps a log of what it
served, so a test can compare the load generator's counts with it.

Run alone: load_target.py [--delay-ms N] [--cold-delay-ms N] prints its port.
Paths: /fail answers 500; /close answers and closes the connection; any
other path answers 200 with a small JSON body (echoing the request body's
length)."""
import argparse
import http.server
import json
import socket
import socketserver
import sys
import threading
import time


class Log:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = []  # (path, method, start, status, body_len)
        self.connections = 0

    def add(self, *row):
        with self.lock:
            self.requests.append(row)

    def counts(self):
        with self.lock:
            rows = list(self.requests)
        out = {"total": len(rows), "cold": 0, "warm": 0, "by_path": {}, "status": {}}
        for path, _method, start, status, _n in rows:
            out[start] += 1
            out["by_path"][path] = out["by_path"].get(path, 0) + 1
            out["status"][status] = out["status"].get(status, 0) + 1
        return out


def make_handler(log, delay_s, cold_delay_s):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()
            # Headers and body go out in two writes: without this, Nagle's
            # algorithm holds the second until the client's delayed ACK.
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.served = 0
            with log.lock:
                log.connections += 1

        def log_message(self, *args):
            pass

        def handle_any(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            start = "cold" if self.served == 0 else "warm"
            self.served += 1
            time.sleep(cold_delay_s if start == "cold" else delay_s)
            status = 500 if self.path == "/fail" else 200
            out = json.dumps({"path": self.path, "received": len(body)}).encode()
            # Logged before the response goes out: by the time a client has
            # its response, the request is in the log.
            log.add(self.path, self.command, start, status, len(body))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.send_header("X-Kiln-Start", start)
            self.send_header("X-Kiln-Worker", "py-%d" % threading.get_ident())
            self.send_header("X-Kiln-Exec-Us", str(int(delay_s * 1e6)))
            if self.path == "/close":
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = do_PUT = handle_any

    return Handler


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


def start(delay_ms=0.0, cold_delay_ms=None):
    """Starts a target on 127.0.0.1 on a free port in a thread; returns
    (server, log, port). server.shutdown() stops it."""
    log = Log()
    cold = delay_ms if cold_delay_ms is None else cold_delay_ms
    srv = Server(("127.0.0.1", 0), make_handler(log, delay_ms / 1e3, cold / 1e3))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, log, srv.server_address[1]


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--delay-ms", type=float, default=0)
    ap.add_argument("--cold-delay-ms", type=float, default=None)
    a = ap.parse_args()
    srv, log, port = start(a.delay_ms, a.cold_delay_ms)
    print(port, flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        print(json.dumps(log.counts()), file=sys.stderr)
