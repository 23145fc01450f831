#!/usr/bin/env python3
"""Predict functions: KServe v2 metadata and infer (matching `kiln run`), images, bad input."""
import json
import re
import os
import struct
import subprocess
import sys
import unittest
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kilnserver import KILN, SRC, import_model, Server  # noqa: E402


def write_npy(path, shape, values):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }" % "".join(
        "%d," % d for d in shape)
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
        f.write(struct.pack("<%df" % len(values), *values))


def png(width, height, pixel):
    raw = b"".join(b"\x00" + bytes(pixel(x, y) for x in range(width)) for y in range(height))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


class Predict(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = None
        import tempfile
        cls.tmp = tempfile.mkdtemp(prefix="kiln-predict-")
        cls.model = os.path.join(cls.tmp, "lenet.kiln")
        import_model("lenet-mnist.yaml", cls.model, 7)
        cls.s = Server("""
server:
  listen: 127.0.0.1:0
  limits:
    max_tensor_elements: 100000
    max_json_depth: 8
functions:
  - name: mnist
    kind: predict
    model: %s
    max_workers: 1
    timeout: 60s
  - name: missing
    kind: predict
    model: no-such-model
    max_workers: 1
  - name: fashion
    kind: predict
    model: %s
    max_workers: 1
    concurrency: 4
    timeout: 60s
""" % (cls.model, os.path.join(SRC, "models", "fashion-mnist.kiln")))

    @classmethod
    def tearDownClass(cls):
        if cls.s:
            cls.s.stop()
            cls.s.cleanup()
        import shutil
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def infer(self, body, path="/v2/models/mnist/infer"):
        st, h, data = self.s.request("POST", path, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        return st, json.loads(data)

    def test_health(self):
        for p in ("/v2/health/live", "/v2/health/ready"):
            self.assertEqual(self.s.request("GET", p)[0], 200)

    def test_metadata(self):
        st, body = self.s.json("GET", "/v2/models/mnist")
        self.assertEqual(st, 200, body)
        self.assertEqual(body["inputs"][0]["shape"], [-1, 1, 28, 28])
        self.assertEqual(body["inputs"][0]["datatype"], "FP32")
        self.assertEqual(body["outputs"][0]["shape"], [-1, 10])
        st, body = self.s.json("GET", "/v2/models/mnist/ready")
        self.assertEqual((st, body["ready"]), (200, True))
        self.assertEqual(self.s.request("GET", "/v2/models/nope")[0], 404)

    def test_infer_matches_kiln_run(self):
        vals = [((i * 37) % 101) / 100.0 for i in range(2 * 784)]
        npy = os.path.join(self.tmp, "x.npy")
        write_npy(npy, (2, 1, 28, 28), vals)
        r = subprocess.run([KILN, "run", self.model, "--input", npy, "--json"],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        want = json.loads(r.stdout)
        st, got = self.infer({"id": "req-1", "inputs": [
            {"name": "image", "shape": [2, 1, 28, 28], "datatype": "FP32", "data": vals}]})
        self.assertEqual(st, 200, got)
        self.assertEqual(got["id"], "req-1")
        out = got["outputs"][0]
        self.assertEqual(out["shape"], want["shape"])
        self.assertEqual(len(out["data"]), len(want["data"]))
        for a, b in zip(out["data"], want["data"]):
            self.assertAlmostEqual(a, b, delta=1e-5)
        # Nested data means the same as flat data.
        nested = [[[vals[n * 784 + y * 28:n * 784 + y * 28 + 28] for y in range(28)]]
                  for n in range(2)]
        st, got2 = self.infer({"inputs": [
            {"name": "image", "shape": [2, 1, 28, 28], "datatype": "FP32", "data": nested}]})
        self.assertEqual(st, 200, got2)
        self.assertEqual(got2["outputs"][0]["data"], out["data"])

    def test_function_route_and_image_top_k(self):
        img = png(40, 40, lambda x, y: 255 if 15 < x < 25 else 0)
        st, h, data = self.s.request("POST", "/function/mnist?top_k=3", img,
                                     {"Content-Type": "image/png"})
        self.assertEqual(st, 200, data)
        preds = json.loads(data)["predictions"]
        self.assertEqual(len(preds), 3)
        probs = [p["probability"] for p in preds]
        self.assertEqual(probs, sorted(probs, reverse=True))
        self.assertTrue(all(0 <= p <= 1 for p in probs))
        self.assertEqual(preds[0]["label"], str(preds[0]["index"]))

    def test_image_answer_labels_and_probabilities(self):
        # The shipped Fashion-MNIST model carries its class names: each
        # answer names the model, labels every index with its class, and
        # gives probabilities as printf's %.9g would (the worker formats
        # them without printf), so they sum to 1 over all ten classes.
        classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                   "Shirt", "Sneaker", "Bag", "Ankle boot"]
        for seed in range(3):
            img = png(28, 28, lambda x, y: (x * (7 + seed) + y * (3 + 2 * seed)) % 256)
            st, _, data = self.s.request("POST", "/function/fashion?top_k=10", img,
                                         {"Content-Type": "image/png"})
            self.assertEqual(st, 200, data)
            got = json.loads(data)
            self.assertEqual(got["model_name"], os.path.join(SRC, "models", "fashion-mnist.kiln"))
            preds = got["predictions"]
            self.assertEqual(sorted(p["index"] for p in preds), list(range(10)))
            for p in preds:
                self.assertEqual(p["label"], classes[p["index"]])
            self.assertAlmostEqual(sum(p["probability"] for p in preds), 1.0, delta=1e-5)
            for text in re.findall(rb'"probability":([^}]*)}', data):
                self.assertEqual(text.decode(), "%.9g" % float(text))

    def test_multipart_upload_matches_raw_image(self):
        img = png(28, 28, lambda x, y: (x * 9 + y * 3) % 256)
        st, _, raw = self.s.request("POST", "/function/mnist?top_k=10", img,
                                    {"Content-Type": "image/png"})
        self.assertEqual(st, 200, raw)
        b = "kiln-boundary-7"
        body = (("--%s\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
                 "--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d.png\"\r\n"
                 "Content-Type: image/png\r\n\r\n" % (b, b)).encode() + img
                + ("\r\n--%s--\r\n" % b).encode())
        st, _, multi = self.s.request("POST", "/function/mnist?top_k=10", body,
                                      {"Content-Type": "multipart/form-data; boundary=" + b})
        self.assertEqual(st, 200, multi)
        self.assertEqual(json.loads(multi)["predictions"], json.loads(raw)["predictions"])
        for bad_ct, bad_body in (("multipart/form-data", body),
                                 ("multipart/form-data; boundary=zz", body),
                                 ("multipart/form-data; boundary=" + b, body[:60])):
            st, _, data = self.s.request("POST", "/function/mnist", bad_body,
                                         {"Content-Type": bad_ct})
            self.assertEqual(st, 400, (bad_ct, data))

    def test_bad_inputs_are_4xx_and_worker_survives(self):
        good = {"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32",
                            "data": [0.0] * 784}]}
        bad = [
            {"inputs": [{"shape": [1, 1, 28, 27], "datatype": "FP32", "data": [0.0] * 756}]},
            {"inputs": [{"shape": [1, 1, 28, 28], "datatype": "INT8", "data": [0] * 784}]},
            {"inputs": [{"shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 783}]},
            {"inputs": [{"shape": [1, 1, 28, 28], "datatype": "FP32", "data": ["x"] * 784}]},
            {"inputs": [{"shape": [1000, 1, 28, 28], "datatype": "FP32", "data": [0.0]}]},
            {"inputs": [{"shape": [-1, 1, 28, 28], "datatype": "FP32", "data": [0.0]}]},
            {"inputs": []},
            {"nothing": 1},
            [[[[[[[[[[[[1]]]]]]]]]]]],
        ]
        for b in bad:
            st, body = self.infer(b)
            self.assertTrue(400 <= st < 500, (b if len(str(b)) < 100 else str(b)[:100], st))
            self.assertIn("error", body)
        for raw, ct in ((b"{not json", "application/json"), (b"\xff\xd8\xff\xe0junk", "image/jpeg"),
                        (b"\x89PNG\r\n\x1a\nbroken", "image/png"), (b"", "application/json")):
            st, h, data = self.s.request("POST", "/v2/models/mnist/infer", raw, {"Content-Type": ct})
            self.assertTrue(400 <= st < 500, (raw, st))
            self.assertIn("error", json.loads(data))
        st, body = self.infer(good)
        self.assertEqual(st, 200, body)

    def test_missing_model_is_404_with_reason(self):
        st, h, data = self.s.request("POST", "/function/missing", b"{}")
        self.assertEqual(st, 404, data)
        self.assertIn("no-such-model", json.loads(data)["error"])
        self.assertEqual(self.s.request("GET", "/healthz")[0], 200)


if __name__ == "__main__":
    unittest.main(verbosity=2)
