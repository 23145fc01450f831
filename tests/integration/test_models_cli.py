#!/usr/bin/env python3
"""`kiln models list|show|add|rm` against a real server: the token from
--token, KILN_TOKEN or --data-dir, one-line errors and exit codes."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kilnserver import KILN, Server  # noqa: E402

SRC = os.environ.get("KILN_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
CONFIG = """
server:
  auth: true
functions:
  - {name: digits, kind: predict, model: digits, max_workers: 1, idle_timeout: 1s}
"""
MNIST = os.path.join(SRC, "models", "mnist.kiln")


def kiln(*args, env=None):
    e = dict(os.environ)
    e.pop("KILN_TOKEN", None)
    e.update(env or {})
    r = subprocess.run([KILN, "models"] + list(args), capture_output=True, text=True,
                       timeout=60, env=e)
    return r.returncode, r.stdout, r.stderr


class ModelsCli(unittest.TestCase):
    def test_list_add_show_rm(self):
        with Server(CONFIG) as s:
            url = ["--url", "http://%s:%d" % (s.host, s.port)]
            data = os.path.join(s.tmp, "var")
            with open(os.path.join(data, "token")) as f:
                tok = f.read().strip()

            rc, out, err = kiln("list", *url)
            self.assertEqual((rc, out.split()), (0, ["NAME", "VERSIONS", "LATEST", "CREATED"]))
            # No token: the server's 401, in one line, exit 1.
            rc, out, err = kiln("add", "digits", MNIST, *url)
            self.assertEqual(rc, 1, err)
            self.assertIn("HTTP 401", err)
            self.assertEqual(err.count("\n"), 1)
            # The token three ways.
            rc, out, err = kiln("add", "digits", MNIST, "--data-dir", data, *url)
            self.assertEqual(rc, 0, err)
            self.assertIn("added digits version 1", out)
            rc, out, err = kiln("add", "digits", MNIST, "--version", "v2", *url,
                                env={"KILN_TOKEN": tok})
            self.assertEqual(rc, 0, err)
            rc, out, err = kiln("add", "digits", MNIST, "--version", "v2", "--token", tok, *url)
            self.assertEqual(rc, 1)
            self.assertIn("HTTP 409", err)
            rc, out, err = kiln("list", "--json", *url)
            self.assertEqual(rc, 0, err)
            self.assertEqual([(m["name"], m["versions"], m["latest"])
                              for m in json.loads(out)["models"]], [("digits", 2, "v2")])
            rc, out, err = kiln("show", "digits", *url)
            self.assertEqual(rc, 0, err)
            self.assertIn("latest: v2", out)
            self.assertEqual(len([ln for ln in out.splitlines() if "bytes" in ln]), 2)
            rc, out, err = kiln("show", "digits", "1", "--json", *url)
            self.assertEqual(rc, 0, err)
            self.assertEqual(json.loads(out)["version"], "1")
            # The model's own metadata.
            rc, out, err = kiln("meta", "digits", '{"task": "digits"}', "--token", tok, *url)
            self.assertEqual((rc, out.strip()), (0, "set the metadata of digits"), err)
            rc, out, err = kiln("show", "digits", *url)
            self.assertIn('metadata {"task":"digits"}', out)
            rc, out, err = kiln("meta", "digits", '[1]', "--token", tok, *url)
            self.assertEqual(rc, 2)
            self.assertIn("JSON object", err)
            # What the CLI added is served.
            st, h, body = s.request("POST", "/v2/models/digits/infer", json.dumps(
                {"inputs": [{"name": "x", "shape": [1, 1, 28, 28], "datatype": "FP32",
                             "data": [0.0] * 784}]}).encode())
            self.assertEqual(st, 200, body)

            rc, out, err = kiln("rm", "digits", "1", "--token", tok, *url)
            self.assertEqual(rc, 0, err)
            rc, out, err = kiln("show", "digits", "1", *url)
            self.assertEqual(rc, 1)
            self.assertIn("HTTP 404", err)
            rc, out, err = kiln("rm", "digits", "--token", tok, *url)
            self.assertEqual(rc, 0, err)
            rc, out, err = kiln("list", "--json", *url)
            self.assertEqual(json.loads(out)["models"], [])

            # Bad usage: exit 2; failures: exit 1; always one line on stderr.
            for args, code in ((["frob"], 2), ([], 2), (["rm", "../etc"], 2),
                               (["show", "a", "b", "c"], 2), (["add", "x"], 2),
                               (["meta", "x"], 2), (["meta", "x", "{", "--token", tok], 2),
                               (["meta", "x", "{}"], 1),
                               (["list", "--url", "ftp://x"], 2),
                               (["add", "x", "/no/such/file"], 1),
                               (["add", "x", os.path.join(SRC, "README.md"), "--token", tok], 1)):
                a = args if "--url" in args else args + url
                rc, out, err = kiln(*a)
                self.assertEqual(rc, code, (args, err))
                self.assertEqual(err.count("\n"), 1, (args, err))
            port = s.port
        # Nobody listens any more.
        rc, out, err = kiln("list", "--url", "http://127.0.0.1:%d" % port)
        self.assertEqual(rc, 1)
        self.assertIn("cannot connect", err)

    def test_local_store(self):
        """--local: the same commands on a data dir no server holds; a server
        started on it then serves what was added; while it runs --local
        refuses the data dir."""
        tmp = tempfile.mkdtemp(prefix="kiln-models-local-")
        try:
            data = os.path.join(tmp, "var")
            loc = ["--local", "--data-dir", data]
            rc, out, err = kiln("add", "digits", MNIST, *loc)
            self.assertEqual((rc, out.strip()[:22]), (0, "added digits version 1"), err)
            rc, out, err = kiln("meta", "digits", '{"site": "gate-3"}', *loc)
            self.assertEqual(rc, 0, err)
            rc, out, err = kiln("add", "x", os.path.join(SRC, "README.md"), *loc)
            self.assertEqual(rc, 1)
            self.assertIn("400: not a valid .kiln model", err)
            self.assertNotIn("HTTP", err)
            rc, out, err = kiln("show", "nope", *loc)
            self.assertEqual(rc, 1)
            self.assertIn("404", err)
            rc, out, err = kiln("list", "--json", *loc)
            self.assertEqual([(m["name"], m["versions"]) for m in json.loads(out)["models"]],
                             [("digits", 1)])
            with Server(CONFIG, args=["--data-dir", data]) as s:
                st, body = s.json("GET", "/v1/models/digits")
                self.assertEqual((st, body["metadata"]), (200, {"site": "gate-3"}))
                st, h, body = s.request("POST", "/v2/models/digits/infer", json.dumps(
                    {"inputs": [{"name": "x", "shape": [1, 1, 28, 28], "datatype": "FP32",
                                 "data": [0.0] * 784}]}).encode())
                self.assertEqual(st, 200, body)
                rc, out, err = kiln("list", *loc)
                self.assertEqual(rc, 1)
                self.assertIn("in use by a running server", err)
            rc, out, err = kiln("rm", "digits", *loc)
            self.assertEqual(rc, 0, err)
            rc, out, err = kiln("list", "--json", *loc)
            self.assertEqual(json.loads(out)["models"], [])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
