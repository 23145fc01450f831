#!/usr/bin/env python3
"""The model manager API over the store: CRUD, uploads (.kiln and bad data),
download, predict from a registered model, and persistence across restarts;
the same API as a function of kind models (/function/NAME/...)."""
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
  - {name: model-manager, kind: models}
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

    def test_model_metadata(self):
        """A model's own metadata: set on create, replaced with PUT, shown by
        GET, checked (an object, within the limit), kept across a restart."""
        self.data = os.path.join(self.tmp, "var-meta")
        s = Server(CONFIG, args=["--data-dir", self.data])
        try:
            a = self.auth(s)
            meta = {"task": "digits", "labels": ["0", "1"], "owner": "lab"}
            st, body = s.json("POST", "/v1/models", json.dumps(
                {"name": "withmeta", "metadata": meta}).encode(), a)
            self.assertEqual((st, body["metadata"], body["versions"]), (201, meta, 0))
            st, body = s.json("GET", "/v1/models/withmeta")
            self.assertEqual((st, body["metadata"]), (200, meta))
            st, body = s.json("PUT", "/v1/models/withmeta/versions/1", self.weights, a)
            self.assertEqual(st, 201, body)
            new = {"task": "digits", "note": "retrained"}
            st, _, _ = s.request("PUT", "/v1/models/withmeta", json.dumps({"metadata": new}))
            self.assertEqual(st, 401)
            st, body = s.json("PUT", "/v1/models/withmeta", json.dumps({"metadata": new}).encode(),
                              a)
            self.assertEqual((st, body["metadata"], body["versions"]), (200, new, 1))
            st, body = s.json("PUT", "/v1/models/fresh", b'{"metadata": {"a": 1}}', a)
            self.assertEqual((st, body["metadata"]), (201, {"a": 1}))
            for bad, want in ((b'{"metadata": [1]}', 400), (b'{"metadata": "x"}', 400),
                              (b"[1", 400), (b"{}", 200),
                              (json.dumps({"metadata": {"x": "y" * 70000}}).encode(), 413)):
                st, body = s.json("PUT", "/v1/models/fresh", bad, a)
                self.assertEqual(st, want, (bad[:40], body))
            st, body = s.json("GET", "/v1/models/fresh")
            self.assertIsNone(body["metadata"])  # {} without "metadata" cleared it
            st, body = s.json("PUT", "/v1/models/..", b'{"metadata": {}}', a)
            self.assertEqual(st, 400)
        finally:
            self.assertEqual(s.stop(), 0)
        s = Server(CONFIG, args=["--data-dir", self.data])
        try:
            st, body = s.json("GET", "/v1/models/withmeta")
            self.assertEqual((st, body["metadata"], len(body["versions"])), (200, new, 1))
        finally:
            s.stop()

    def test_models_function(self):
        """kind models: /function/NAME[/...] is /v1/models[/...], run by the
        server itself, counted, logged and timed like every invocation."""
        self.data = os.path.join(self.tmp, "var-fn")
        s = Server(CONFIG, args=["--data-dir", self.data])
        fn = "/function/model-manager"
        try:
            a = self.auth(s)
            st, h, _ = s.request("POST", fn, b'{"name": "viafn"}')
            self.assertEqual(st, 401)
            st, h, body = s.request("POST", fn, b'{"name": "viafn"}', a)
            self.assertEqual(st, 201, body)
            self.assertEqual(h["x-kiln-start"], "none")
            self.assertEqual(h["x-kiln-worker"], str(s.proc.pid))
            self.assertGreaterEqual(int(h["x-kiln-exec-us"]), 0)
            st, h, body = s.request("PUT", fn + "/viafn/versions/1", self.weights, a)
            self.assertEqual(st, 201, body)
            self.assertEqual(h["x-kiln-start"], "none")
            sha = json.loads(body)["sha256"]
            # what the function wrote, /v1/models reads, and the other way round
            st, body = s.json("GET", "/v1/models/viafn/versions/latest")
            self.assertEqual((st, body["version"], body["sha256"]), (200, "1", sha))
            st, body = s.json("POST", "/v1/models/viafn/versions", self.weights, a)
            self.assertEqual((st, body["version"]), (201, "2"))
            st, body = s.json("GET", fn)
            self.assertEqual([(m["name"], m["versions"]) for m in body["models"]], [("viafn", 2)])
            st, h, blob = s.request("GET", fn + "/viafn/versions/1/weights")
            self.assertEqual((st, hashlib.sha256(blob).hexdigest()), (200, sha))
            for path in (fn + "/..", fn + "/.x", fn + "/viafn/versions/../x"):
                st, _, _ = s.request("GET", path)
                self.assertIn(st, (400, 404), path)
            st, _, _ = s.request("PATCH", fn + "/viafn", b"", a)
            self.assertEqual(st, 405)
            st, _, _ = s.request("DELETE", fn + "/viafn")
            self.assertEqual(st, 401)
            st, _, _ = s.request("DELETE", fn + "/viafn", headers=a)
            self.assertEqual(st, 204)
            self.assertEqual(s.request("GET", fn + "/viafn")[0], 404)
            # 12 requests went to the function
            st, body = s.json("GET", "/system/functions")
            count = {f["name"]: f["invocationCount"] for f in body}
            self.assertEqual(count["model-manager"], 12)
            st, _, text = s.request("GET", "/metrics")
            self.assertIn(b'gateway_function_invocation_total{function_name="model-manager",'
                          b'code="204"} 1', text)
        finally:
            self.assertEqual(s.stop(), 0)
        import sqlite3
        db = sqlite3.connect(os.path.join(self.data, "kiln.db"))
        rows = db.execute("SELECT status, start, worker FROM invocations WHERE function = ?"
                          " ORDER BY id", ("model-manager",)).fetchall()
        db.close()
        self.assertEqual(len(rows), 12)
        self.assertEqual({r[1] for r in rows}, {"none"})
        self.assertEqual([r[0] for r in rows[:3]], [401, 201, 201])
        self.assertEqual(rows[-1][0], 404)


if __name__ == "__main__":
    unittest.main(verbosity=2)
