#!/usr/bin/env python3
"""The bearer token: created once with mode 0600, required where the config says."""
import os
import stat
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kilnserver import Server  # noqa: E402

CONFIG = """
server:
  listen: 127.0.0.1:0
  auth: true
  auth_invoke: %s
functions:
  - {name: echo, kind: echo, max_workers: 1}
"""


class Auth(unittest.TestCase):
    def test_token_protects_invocations_when_configured(self):
        with Server(CONFIG % "true") as s:
            path = os.path.join(s.tmp, "var", "token")
            mode = stat.S_IMODE(os.stat(path).st_mode)
            self.assertEqual(mode, 0o600)
            with open(path) as f:
                token = f.read().strip()
            self.assertEqual(len(token), 64)
            self.assertIn(token, s.stderr())  # printed once, on creation
            st, h, _ = s.request("POST", "/function/echo", b"x")
            self.assertEqual(st, 401)
            self.assertIn("Bearer", h["www-authenticate"])
            st, _, _ = s.request("POST", "/function/echo", b"x",
                                 {"Authorization": "Bearer " + "0" * 64})
            self.assertEqual(st, 401)
            st, _, _ = s.request("POST", "/function/echo", b"x",
                                 {"Authorization": "Bearer " + token[:-1]})
            self.assertEqual(st, 401)
            st, _, body = s.request("POST", "/function/echo", b"ok",
                                    {"Authorization": "Bearer " + token})
            self.assertEqual((st, body), (200, b"ok"))
            # Health and metrics stay open.
            self.assertEqual(s.request("GET", "/healthz")[0], 200)
            self.assertEqual(s.request("GET", "/metrics")[0], 200)

    def test_token_survives_restart_and_is_not_printed_again(self):
        s1 = Server(CONFIG % "true")
        data = os.path.join(s1.tmp, "var")
        with open(os.path.join(data, "token")) as f:
            token = f.read().strip()
        s1.stop()
        s2 = Server(CONFIG % "true", args=["--data-dir", data])
        try:
            self.assertNotIn(token, s2.stderr())
            st, _, _ = s2.request("POST", "/function/echo", b"x",
                                  {"Authorization": "Bearer " + token})
            self.assertEqual(st, 200)
        finally:
            s2.stop()
            s2.cleanup()
            s1.cleanup()

    def test_invocations_open_by_default(self):
        with Server(CONFIG % "false") as s:
            self.assertEqual(s.request("POST", "/function/echo", b"x")[0], 200)

    def test_world_readable_token_is_refused(self):
        s1 = Server(CONFIG % "false")
        data = os.path.join(s1.tmp, "var")
        s1.stop()
        os.chmod(os.path.join(data, "token"), 0o644)
        with self.assertRaises(RuntimeError) as e:
            Server(CONFIG % "false", args=["--data-dir", data])
        self.assertIn("chmod 600", str(e.exception))
        s1.cleanup()


if __name__ == "__main__":
    unittest.main(verbosity=2)
