#!/usr/bin/env python3
"""The models shipped in models/ open, and `kiln serve` with its built-in
config serves them: real Fashion-MNIST test images through the
fashion-mnist function, and the mnist function answering on digits."""
import gzip
import json
import os
import struct
import subprocess
import sys
import unittest
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kilnserver import KILN, Server  # noqa: E402

SRC = os.environ.get("KILN_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
FMNIST = "/usr/share/datasets/fashion-mnist"  # Debian dataset-fashion-mnist (scripts/deps)


def png_gray(pixels, w, h):
    raw = b"".join(b"\x00" + pixels[y * w:(y + 1) * w] for y in range(h))

    def chunk(t, b):
        return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def fashion_test_images(n):
    with gzip.open(os.path.join(FMNIST, "t10k-images-idx3-ubyte.gz")) as f:
        img = f.read(16 + 784 * n)
    with gzip.open(os.path.join(FMNIST, "t10k-labels-idx1-ubyte.gz")) as f:
        lab = f.read(8 + n)
    return [(img[16 + i * 784:16 + (i + 1) * 784], lab[8 + i]) for i in range(n)]


class ShippedModels(unittest.TestCase):
    def test_every_shipped_model_opens(self):
        models = sorted(m for m in os.listdir(os.path.join(SRC, "models")) if m.endswith(".kiln"))
        self.assertIn("mnist.kiln", models)
        self.assertIn("fashion-mnist.kiln", models)
        for m in models:
            r = subprocess.run([KILN, "inspect", os.path.join(SRC, "models", m), "--json"],
                               capture_output=True, timeout=120)
            self.assertEqual(r.returncode, 0, "%s: %s" % (m, r.stderr.decode()))
            json.loads(r.stdout)

    def test_default_config_serves_the_shipped_classifiers(self):
        with Server(cwd=SRC) as s:
            samples = fashion_test_images(50)
            right = 0
            for pixels, label in samples:
                status, h, body = s.request("POST", "/function/fashion-mnist?top_k=1",
                                            png_gray(pixels, 28, 28), {"Content-Type": "image/png"})
                self.assertEqual(status, 200, body)
                self.assertIn(h["x-kiln-start"], ("cold", "warm"))
                top = json.loads(body)["predictions"][0]
                right += top["index"] == label
            # 91.85% on all 10,000 test images (models/README.md); 50 of them
            # at >= 80% leaves room for sampling, not for a broken model.
            self.assertGreaterEqual(right, 40, "%d/50 right" % right)
            pixels, _ = samples[0]
            status, _, body = s.request("POST", "/function/mnist", png_gray(pixels, 28, 28),
                                        {"Content-Type": "image/png"})
            self.assertEqual(status, 200, body)
            preds = json.loads(body)["predictions"]
            self.assertEqual(len(preds), 5)
            self.assertTrue(all(isinstance(p["label"], str) and p["label"] for p in preds), preds)


if __name__ == "__main__":
    unittest.main(verbosity=2)
