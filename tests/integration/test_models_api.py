#!/usr/bin/env python3
"""The model manager API over the store: CRUD, uploads (.kiln and bad data),
download, predict from a registered model, and persistence across restarts."""
import hashlib
import json
import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kilnserver import import_model, Server  # noqa: E402

CONFIG = """
server:
  listen: 127.0.0.1:0
  auth: true
functions:
  - {name: digits, kind: predict, model: lenet, max_workers: 1, idle_timeout: 200ms}
"""


class Models(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-models-")
        cls.kiln_file = os.path.join(cls.tmp, "lenet.kiln")
        import_model("lenet-mnist.yaml", cls.kiln_file)
        with open(cls.kiln_file, "rb") as f:
            cls.weights = f.read()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def auth(self, s):
        with open(os.path.join(self.data, "token")) as f:
            return {"Authorization": "Bearer " + f.read().strip()}

    def test_crud_upload_predict_restart(self):
        self.data = os.path.join(self.tmp, "var")
        s = Server(CONFIG, args=["--data-dir", self.data])
        try:
            a = self.auth(s)
            st, _, _ = s.request("POST", "/v1/models", b'{"name": "lenet"}')
            self.assertEqual(st, 401)
            st, body = s.json("POST", "/v1/models", b'{"name": "lenet"}', a)
            self.assertEqual(st, 201, body)
            st, body = s.json("POST", "/v1/models", b'{"name": "lenet"}', a)
            self.assertEqual(st, 409, body)
            for bad in (b'{"name": "../etc"}', b'{"name": ".hidden"}', b'{"name": ""}', b"[1"):
                st, body = s.json("POST", "/v1/models", bad, a)
                self.assertEqual(st, 400, bad)
            st, body = s.json("PUT", "/v1/models/lenet/versions/1", self.weights, a)
            self.assertEqual(st, 201, body)
            self.assertEqual(body["version"], "1")
            self.assertEqual(body["metadata"]["format"], "kiln")
            sha = body["sha256"]
            st, body = s.json("PUT", "/v1/models/lenet/versions/1", self.weights, a)
            self.assertEqual(st, 409, body)
            st, body = s.json("POST", "/v1/models/lenet/versions", self.weights, a)
            self.assertEqual((st, body["version"]), (201, "2"))
            st, body = s.json("PUT", "/v1/models/lenet/versions/3", b"not a model at all", a)
            self.assertEqual(st, 400, body)
            self.assertIn("ONNX", body["error"])
            st, _, _ = s.request("PUT", "/v1/models/lenet/versions/3", self.weights)
            self.assertEqual(st, 401)
            st, body = s.json("GET", "/v1/models")
            self.assertEqual([(m["name"], m["versions"], m["latest"]) for m in body["models"]],
                             [("lenet", 2, "2")])
            st, body = s.json("GET", "/v1/models/lenet/versions/latest")
            self.assertEqual((st, body["version"]), (200, "2"))
            st, h, blob = s.request("GET", "/v1/models/lenet/versions/1/weights")
            self.assertEqual(st, 200)
            self.assertEqual(hashlib.sha256(blob).hexdigest(), sha)
            for path in ("/v1/models/..", "/v1/models/a%2f..", "/v1/models/.x/versions/1"):
                st, _, _ = s.request("GET", path)
                self.assertIn(st, (400, 404), path)
            # The predict function finds the registered model.
            st, h, out = s.request("POST", "/v2/models/lenet/infer", json.dumps(
                {"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32",
                             "data": [0.5] * 784}]}).encode(), {"Content-Type": "application/json"})
            self.assertEqual(st, 200, out)
            self.assertEqual(json.loads(out)["model_name"], "lenet")
        finally:
            self.assertEqual(s.stop(), 0)
        # The invocation log holds that request with its timings.
        import sqlite3
        db = sqlite3.connect(os.path.join(self.data, "kiln.db"))
        rows = db.execute("SELECT function, status, start FROM invocations").fetchall()
        db.close()
        self.assertIn(("digits", 200, "cold"), rows)
        # The invocation log holds that request with its timings.
        import sqlite3
        db = sqlite3.connect(os.path.join(self.data, "kiln.db"))
        rows = db.execute("SELECT function, status, start FROM invocations").fetchall()
        db.close()
        self.assertIn(("digits", 200, "cold"), rows)
        s = Server(CONFIG, args=["--data-dir", self.data])
        try:
            a = self.auth(s)
            st, body = s.json("GET", "/v1/models/lenet")
            self.assertEqual(st, 200)
            self.assertEqual([v["version"] for v in body["versions"]], ["1", "2"])
            st, _, _ = s.request("DELETE", "/v1/models/lenet/versions/1", headers=a)
            self.assertEqual(st, 204)
            st, body = s.json("GET", "/v1/models/lenet")
            self.assertEqual([v["version"] for v in body["versions"]], ["2"])
            st, _, _ = s.request("DELETE", "/v1/models/lenet")
            self.assertEqual(st, 401)
            st, _, _ = s.request("DELETE", "/v1/models/lenet", headers=a)
            self.assertEqual(st, 204)
            self.assertEqual(s.request("GET", "/v1/models/lenet")[0], 404)
        finally:
            s.stop()
            s.cleanup()


if __name__ == "__main__":
    unittest.main(verbosity=2)
