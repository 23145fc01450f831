"""Starts a real `kiln serve` on an ephemeral port for integration tests."""
import http.client
import json
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time

KILN = os.environ.get("KILN_BIN", "build/src/cli/kiln")
SRC = os.environ.get("KILN_SOURCE_DIR", ".")


def import_model(yaml_name, out, seed=None, extra=()):
    """`kiln import models/YAML_NAME -o OUT [--seed S] [EXTRA...]` (seeded
    random weights); RuntimeError with kiln's message if it fails."""
    cmd = [KILN, "import", os.path.join(SRC, "models", yaml_name), "-o", out]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    r = subprocess.run(cmd + list(extra), capture_output=True, text=True, timeout=120)
    if r.returncode:
        raise RuntimeError("kiln import failed: " + r.stderr)


class Server:
    """`kiln serve --port 0` with an optional config text; use as a context manager."""

    def __init__(self, config=None, args=(), cwd=None):
        self.tmp = tempfile.mkdtemp(prefix="kiln-test-")
        cmd = [KILN, "serve", "--port", "0", "--data-dir", os.path.join(self.tmp, "var")]
        if config is not None:
            path = os.path.join(self.tmp, "config.yaml")
            with open(path, "w") as f:
                f.write(config)
            cmd += ["--config", path]
        cmd += list(args)
        self.stderr_path = os.path.join(self.tmp, "stderr.txt")
        self.err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.err, cwd=cwd)
        line = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if r:
                line = self.proc.stdout.readline()
                break
            if self.proc.poll() is not None:
                break
        m = re.search(rb"listening on http://([0-9.]+):(\d+)", line)
        if not m:
            msg = "kiln serve did not start: %r %s" % (line, self.stderr())
            self.stop()
            self.cleanup()
            raise RuntimeError(msg)
        self.host, self.port = m.group(1).decode(), int(m.group(2))

    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def request(self, method, path, body=None, headers=None, timeout=30):
        """One request on a new connection: (status, headers dict lower-cased, body bytes)."""
        c = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            c.close()

    def json(self, method, path, body=None, headers=None):
        status, h, data = self.request(method, path, body, headers)
        return status, json.loads(data)

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Signals the server and returns its exit code."""
        rc = self.proc.poll()
        if rc is None:
            self.proc.send_signal(sig)
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait()
        self.proc.stdout.close()
        self.err.close()
        return rc

    def cleanup(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        self.cleanup()


def worker_pids(server_pid):
    """Pids of the server's descendants (its zygote and workers)."""
    out, todo = [], [server_pid]
    while todo:
        pid = todo.pop()
        try:
            with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
                kids = [int(x) for x in f.read().split()]
        except OSError:
            kids = []
        out += kids
        todo += kids
    return out


def read_response(sock, buf=b""):
    """Reads one HTTP response from a raw socket: (status, headers dict with
    lower-case names, body, the bytes after it in the buffer)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a response: %r" % buf)
        buf += chunk
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, v = line.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    while len(buf) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside a body")
        buf += chunk
    return status, headers, buf[:n], buf[n:]
