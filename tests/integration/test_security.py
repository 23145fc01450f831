#!/usr/bin/env python3
"""Security: every route of the router tried without a token and with wrong
ones (state-changing ones 401, nothing changed), the token kept out of logs,
process arguments and responses, workers switching user when the server
runs as root (server.user), and the default bind on loopback."""
import json
import os
import re
import stat
import sys
import tempfile
import shutil
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kilnserver import import_model, Server, worker_pids  # noqa: E402

SRC = os.environ.get("KILN_SOURCE_DIR", ".")

CONFIG = """
server:
  listen: 127.0.0.1:0
  auth: true
  auth_invoke: true
functions:
  - {name: echo, kind: echo, max_workers: 1}
  - {name: digits, kind: predict, model: digits-model, max_workers: 1, timeout: 60s}
"""

# Every route as a concrete path (m: a model with version 1; digits: a
# predict function), with the methods that change state or invoke a
# function: those need the token. Every other method must not succeed
# either way or is a read.
ROUTES = [
    ("/healthz", ()),
    ("/v2/health/live", ()),
    ("/v2/health/ready", ()),
    ("/v2", ()),
    ("/metrics", ()),
    ("/v1/functions", ()),
    ("/system/functions", ()),
    ("/function/echo", ("GET", "POST", "PUT", "DELETE", "PATCH")),
    ("/function/echo/sub/path", ("GET", "POST", "PUT", "DELETE", "PATCH")),
    ("/v2/models/digits", ("GET", "HEAD")),
    ("/v2/models/digits/ready", ()),
    ("/v2/models/digits/infer", ("POST",)),
    ("/v2/models/digits/versions/1/infer", ("POST",)),
    ("/v1/models", ("POST",)),
    ("/v1/models/m", ("DELETE",)),
    ("/v1/models/m/versions", ("POST",)),
    ("/v1/models/m/versions/1", ("PUT", "DELETE")),
    ("/v1/models/m/versions/latest", ("DELETE",)),
    ("/v1/models/m/versions/1/weights", ()),
    ("/v1/jobs", ("POST",)),
    ("/v1/jobs/1", ("DELETE",)),
]
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")


def router_literals():
    """The path literals the router matches on, from its source: a route
    added there and not to ROUTES fails test_routes_are_all_listed."""
    lits = set()
    for f in ("src/server/server.c", "src/server/models_api.c", "src/server/jobs.c"):
        with open(os.path.join(SRC, f)) as fh:
            text = fh.read()
        lits |= set(re.findall(r'after\(path, "([^"]+)"\)', text))
        lits |= set(re.findall(r'strcmp\(path, "([^"]+)"\)', text))
        lits |= set(re.findall(r'strn?cmp\(tail, "([^"]+)"', text))
    return lits


class Security(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-security-")
        cls.model = os.path.join(cls.tmp, "small-cnn.kiln")
        import_model("small-cnn.yaml", cls.model, 5)
        with open(cls.model, "rb") as f:
            cls.weights = f.read()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def token(self, s):
        with open(os.path.join(s.tmp, "var", "token")) as f:
            return f.read().strip()

    def test_routes_are_all_listed(self):
        listed = " ".join(p for p, _ in ROUTES)
        missing = [lit for lit in router_literals() if lit not in listed]
        self.assertEqual(missing, [], "routes in the router that ROUTES does not try")

    def test_every_route_without_or_with_a_wrong_token(self):
        with Server(CONFIG) as s:
            tok = self.token(s)
            good = {"Authorization": "Bearer " + tok}
            self.assertEqual(s.request("POST", "/v1/models", b'{"name": "m"}', good)[0], 201)
            st, _, out = s.request("PUT", "/v1/models/m/versions/1", self.weights, good)
            self.assertEqual(st, 201, out)
            st, _, out = s.request("PUT", "/v1/models/digits-model/versions/1", self.weights, good)
            self.assertEqual(st, 201, out)
            before = json.loads(s.request("GET", "/v1/models")[2])
            bad_tokens = [
                None, "Bearer ", "Bearer " + "0" * 64, "Bearer " + tok[:-1], "Bearer " + tok + "0",
                "Bearer " + tok.upper(), "Basic " + tok, "Bearer  " + tok,
            ]
            tried = 0
            for path, protected in ROUTES:
                for method in METHODS:
                    for bad in bad_tokens:
                        h = {} if bad is None else {"Authorization": bad}
                        body = None if method in ("GET", "HEAD") else b'{"name": "x"}'
                        st, hdr, out = s.request(method, path, body, h)
                        tried += 1
                        what = (method, path, bad and bad[:12])
                        if method in protected:
                            self.assertEqual(st, 401, what)
                            self.assertIn("Bearer", hdr["www-authenticate"])
                        else:
                            self.assertTrue(method in ("GET", "HEAD") or st >= 400, what)
                        self.assertLess(st, 500, what)
                        if method != "HEAD" and st >= 400:
                            self.assertIn("error", json.loads(out), what)
            # Nothing changed, and no invocation ran.
            self.assertEqual(json.loads(s.request("GET", "/v1/models")[2]), before)
            fns = json.loads(s.request("GET", "/v1/functions")[2])["functions"]
            self.assertEqual([f["invocations"] for f in fns], [0, 0])
            # The right token does what the wrong ones could not.
            self.assertEqual(s.request("POST", "/function/echo", b"hi", good)[:3:2], (200, b"hi"))
            self.assertEqual(s.request("DELETE", "/v1/models/m/versions/1", None, good)[0], 204)
            self.assertEqual(s.request("DELETE", "/v1/models/m", None, good)[0], 204)
            print("security: %d unauthorized requests on %d routes x %d methods" %
                  (tried, len(ROUTES), len(METHODS)))

    def test_token_is_not_leaked(self):
        """The token appears once on stderr (when it is created) and nowhere
        else: not in responses, metrics, the database, worker arguments or
        environments, nor in stderr after failed attempts or restarts."""
        s = Server(CONFIG)
        data = os.path.join(s.tmp, "var")
        try:
            tok = self.token(s)
            path = os.path.join(data, "token")
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
            self.assertEqual(s.stderr().count(tok), 1)
            good = {"Authorization": "Bearer " + tok}
            for bad in (tok[:-1] + "x", tok + tok, tok[:10]):
                s.request("POST", "/v1/models", b'{"name": "a"}', {"Authorization": "Bearer " + bad})
            self.assertEqual(s.request("POST", "/function/echo", b"x", good)[0], 200)
            for p in ("/metrics", "/v1/functions", "/system/functions", "/v1/models", "/v2"):
                self.assertNotIn(tok.encode(), s.request("GET", p)[2], p)
            for pid in [s.proc.pid] + worker_pids(s.proc.pid):
                for f in ("cmdline", "environ"):
                    try:
                        with open("/proc/%d/%s" % (pid, f), "rb") as fh:
                            self.assertNotIn(tok.encode(), fh.read(), (pid, f))
                    except FileNotFoundError:
                        pass
            first = s.stderr()
        finally:
            s.stop()
        s2 = Server(CONFIG, args=["--data-dir", data])
        try:
            s2.request("POST", "/v1/models", b'{"name": "b"}', {"Authorization": "Bearer x"})
        finally:
            s2.stop()
            s2.cleanup()
        self.assertNotIn(tok, s2.stderr() if os.path.exists(s2.stderr_path) else "")
        for name in os.listdir(data):
            if name.startswith("kiln.db"):
                with open(os.path.join(data, name), "rb") as fh:
                    self.assertNotIn(tok.encode(), fh.read(), name)
        self.assertEqual(first.count(tok), 1)
        s.cleanup()

    def test_default_bind_is_loopback(self):
        with open(os.path.join(SRC, "config", "default.yaml")) as f:
            listen = re.search(r"^\s*listen:\s*(\S+)", f.read(), re.M).group(1)
        self.assertTrue(listen.startswith("127.0.0.1:"), listen)
        with Server(None) as s:  # the built-in config
            self.assertEqual(s.host, "127.0.0.1")

    @unittest.skipIf(os.geteuid() != 0, "needs root (workers switch from root to server.user)")
    def test_workers_drop_root(self):
        import pwd
        nobody = pwd.getpwnam("nobody")
        cfg = CONFIG.replace("  auth_invoke: true\n", "  auth_invoke: false\n  user: nobody\n")
        cfg = cfg.replace("model: digits-model", "model: " + self.model)
        cfg = cfg.replace("kind: echo,", "kind: echo, faults: true,")
        with Server(cfg) as s:
            os.chmod(s.tmp, 0o755)  # the worker reads nothing there, but may traverse it
            os.chmod(self.tmp, 0o755)
            st, h, out = s.request("POST", "/function/echo", b"x")
            self.assertEqual(st, 200, out)
            pid = int(h["x-kiln-worker"])
            with open("/proc/%d/status" % pid) as f:
                status = f.read()
            uids = re.search(r"^Uid:\s+(.*)$", status, re.M).group(1).split()
            gids = re.search(r"^Gid:\s+(.*)$", status, re.M).group(1).split()
            groups = re.search(r"^Groups:\s*(.*)$", status, re.M).group(1).split()
            self.assertEqual(set(map(int, uids)), {nobody.pw_uid})
            self.assertEqual(set(map(int, gids)), {nobody.pw_gid})
            self.assertNotIn("0", groups)
            # The server itself stays root (it owns the data dir), and a
            # predict worker still maps its model as that user.
            self.assertEqual(os.stat("/proc/%d" % s.proc.pid).st_uid, 0)
            body = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 28, 28],
                                           "datatype": "FP32", "data": [0.0] * 784}]}).encode()
            st, h, out = s.request("POST", "/v2/models/digits/infer", body)
            self.assertEqual(st, 200, out)
            with open("/proc/%d/status" % int(h["x-kiln-worker"])) as f:
                self.assertIn("\t%d\t" % nobody.pw_uid, re.search(r"^Uid:.*$", f.read(), re.M)
                              .group(0) + "\t")
            # They still die with the server, even one busy for 30 s that
            # would not see its pipe close (a change of user clears the
            # parent-death signal, which the worker sets again).
            import threading
            busy = threading.Thread(target=lambda: self.assertRaises(
                OSError, s.request, "POST", "/function/echo?sleep_ms=30000", b"x"))
            busy.start()
            time.sleep(0.5)
            kids = worker_pids(s.proc.pid)
            self.assertGreaterEqual(len(kids), 3)  # zygote, echo, digits
            s.proc.kill()
            s.proc.wait()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(os.path.exists("/proc/%d" % p)
                                                      for p in kids):
                time.sleep(0.05)
            alive = [p for p in kids if os.path.exists("/proc/%d" % p)]
            for p in alive:
                os.kill(p, 9)
            busy.join(30)
            self.assertEqual(alive, [], "workers outlived the server")

    @unittest.skipIf(os.geteuid() != 0, "needs root")
    def test_unknown_user_is_refused_at_start(self):
        cfg = CONFIG.replace("  auth_invoke: true\n", "  user: no-such-user-kiln\n")
        with self.assertRaises(RuntimeError) as e:
            Server(cfg)
        self.assertIn("no-such-user-kiln", str(e.exception))


if __name__ == "__main__":
    unittest.main(verbosity=2)
