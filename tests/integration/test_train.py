#!/usr/bin/env python3
"""kiln train and kiln eval end to end on a small IDX data set the test
writes: training learns, eval reports consistent numbers, checkpoints
resume, and broken inputs are one-line errors."""
import gzip
import json
import os
import random
import shutil
import struct
import subprocess
import tempfile
import unittest
import zlib

KILN = os.environ.get("KILN_BIN", "build/src/cli/kiln")

ARCH = """name: tiny
input: {channels: 1, height: 8, width: 8}
layers:
  - {type: conv, filters: 4, kernel: 3, pad: 1}
  - {type: batchnorm}
  - {type: relu}
  - {type: maxpool, size: 2}
  - {type: dense, units: 3}
"""


def kiln(*args, timeout=120):
    return subprocess.run([KILN, *args], capture_output=True, text=True, timeout=timeout)


def idx(dims, payload):
    return struct.pack(">BBBB", 0, 0, 8, len(dims)) + b"".join(
        struct.pack(">I", d) for d in dims) + payload


def make_set(n, seed):
    """Three classes: a bright bar on the left, in the middle, on the right."""
    rnd = random.Random(seed)
    images, labels = bytearray(), bytearray()
    for _ in range(n):
        c = rnd.randrange(3)
        for y in range(8):
            for x in range(8):
                v = rnd.randrange(60)
                if c * 3 <= x < c * 3 + 2:
                    v += 150
                images.append(v)
        labels.append(c)
    return bytes(images), bytes(labels)


class Train(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="kiln-train-")
        cls.data = os.path.join(cls.dir, "data")
        os.makedirs(cls.data)
        for name, n, seed, gz in (("train", 600, 1, True), ("t10k", 150, 2, False)):
            img, lab = make_set(n, seed)
            opener = gzip.open if gz else open
            suffix = ".gz" if gz else ""
            with opener(os.path.join(cls.data, name + "-images-idx3-ubyte" + suffix), "wb") as f:
                f.write(idx((n, 8, 8), img))
            with opener(os.path.join(cls.data, name + "-labels-idx1-ubyte" + suffix), "wb") as f:
                f.write(idx((n,), lab))
        cls.arch = os.path.join(cls.dir, "tiny.yaml")
        with open(cls.arch, "w") as f:
            f.write(ARCH)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir)

    def train(self, out, *extra):
        return kiln("train", "--arch", self.arch, "--data", self.data, "--batch", "32",
                    "--optimizer", "adam", "--lr", "0.01", "-o", out, *extra)

    def test_train_then_eval(self):
        out = os.path.join(self.dir, "m.kiln")
        r = self.train(out, "--epochs", "3")
        self.assertEqual(r.returncode, 0, r.stderr)
        # not a terminal: plain progress lines, no carriage returns
        self.assertNotIn("\r", r.stderr)
        self.assertIn("epoch 3/3", r.stderr)
        self.assertIn("samples/s", r.stderr)
        self.assertTrue(os.path.exists(out + ".ckpt"))
        e = kiln("eval", out, "--data", self.data, "--json")
        self.assertEqual(e.returncode, 0, e.stderr)
        j = json.loads(e.stdout)
        self.assertEqual(j["count"], 150)
        self.assertGreater(j["accuracy"], 0.9)
        conf = j["confusion"]
        self.assertEqual(len(conf), 3)
        self.assertEqual(sum(map(sum, conf)), 150)
        self.assertEqual(sum(conf[i][i] for i in range(3)), j["correct"])
        self.assertEqual(sum(p["count"] for p in j["per_class"]), 150)
        text = kiln("eval", out, "--data", self.data)
        self.assertEqual(text.returncode, 0)
        self.assertIn("confusion", text.stdout)
        self.assertIn("%.2f%%" % (100 * j["accuracy"]), text.stdout)

    def test_same_seed_same_model_and_resume_continues(self):
        a, b, c = (os.path.join(self.dir, n) for n in ("a.kiln", "b.kiln", "c.kiln"))
        self.assertEqual(self.train(a, "--epochs", "2", "--seed", "5").returncode, 0)
        self.assertEqual(self.train(b, "--epochs", "2", "--seed", "5").returncode, 0)
        with open(a, "rb") as fa, open(b, "rb") as fb:
            self.assertEqual(fa.read(), fb.read())
        # one epoch, then resume for the second: the same model as two at once
        self.assertEqual(self.train(c, "--epochs", "1", "--seed", "5").returncode, 0)
        r = kiln("train", "--resume", c + ".ckpt", "--data", self.data, "--batch", "32",
                 "--optimizer", "adam", "--lr", "0.01", "--epochs", "2", "-o", c)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("epoch 2/2", r.stderr)
        self.assertNotIn("epoch 1/2", r.stderr)
        ea = json.loads(kiln("eval", a, "--data", self.data, "--json").stdout)
        ec = json.loads(kiln("eval", c, "--data", self.data, "--json").stdout)
        self.assertEqual(ea["confusion"], ec["confusion"])
        self.assertAlmostEqual(ea["loss"], ec["loss"], places=6)

    def test_errors_are_one_line(self):
        bad = os.path.join(self.dir, "bad")
        os.makedirs(bad, exist_ok=True)
        src = os.path.join(self.data, "t10k-images-idx3-ubyte")
        with open(src, "rb") as f:
            raw = f.read()
        for n in ("train", "t10k"):
            with open(os.path.join(bad, n + "-images-idx3-ubyte"), "wb") as f:
                f.write(raw[:-100])  # truncated
            shutil.copy(os.path.join(self.data, "t10k-labels-idx1-ubyte"),
                        os.path.join(bad, n + "-labels-idx1-ubyte"))
        r = self.train(os.path.join(self.dir, "x.kiln"), "--epochs", "1")
        self.assertEqual(r.returncode, 0)
        r = kiln("train", "--arch", self.arch, "--data", bad, "-o", os.path.join(self.dir, "y"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("truncated", r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1)
        # a model file with a flipped byte
        m = os.path.join(self.dir, "x.kiln")
        with open(m, "r+b") as f:
            f.seek(100)
            ch = f.read(1)
            f.seek(100)
            f.write(bytes([ch[0] ^ 0xFF]))
        r = kiln("eval", m, "--data", self.data)
        self.assertEqual(r.returncode, 1)
        self.assertIn("checksum", r.stderr)
        # usage errors
        self.assertEqual(kiln("train", "--data", self.data).returncode, 2)
        self.assertEqual(kiln("train", "--arch", self.arch, "--data", self.data, "-o", m,
                              "--epochs", "0").returncode, 2)
        self.assertEqual(kiln("train", "--help").returncode, 0)
        # an architecture whose input does not match the data
        arch2 = os.path.join(self.dir, "wrong.yaml")
        with open(arch2, "w") as f:
            f.write(ARCH.replace("height: 8", "height: 9"))
        r = kiln("train", "--arch", arch2, "--data", self.data, "-o", m)
        self.assertEqual(r.returncode, 1)
        self.assertIn("architecture takes", r.stderr)


# A residual backbone (basic block, bottleneck with a strided projection)
# built for 224x224 and trained at the data's size (global average pooling).
RESNET = """name: res-head
input: {name: image, shape: [1, 3, 224, 224]}
layers:
  - {type: conv, filters: 8, kernel: 3, stride: 2, pad: 1, bn: true, act: relu}
  - {type: basic, filters: 8}
  - {type: bottleneck, mid: 8, out: 16, stride: 2}
  - {type: gap}
  - {type: flatten}
  - {type: dense, units: 3}
  - {type: softmax}
"""


def png_rgb(width, height, pixel):
    raw = b"".join(b"\x00" + b"".join(bytes(pixel(x, y)) for x in range(width))
                   for y in range(height))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


class Transfer(unittest.TestCase):
    """kiln train --init B.kiln --freeze backbone on a class-per-folder set."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="kiln-transfer-")
        cls.data = os.path.join(cls.dir, "images")
        rnd = random.Random(3)
        for split, n in (("train", 20), ("test", 8)):
            for c, name in enumerate(("red", "green", "blue")):
                d = os.path.join(cls.data, split, name)
                os.makedirs(d)
                for i in range(n):
                    def px(x, y, c=c):
                        return [rnd.randrange(100) + (130 if ch == c else 0) for ch in range(3)]
                    with open(os.path.join(d, "%d.png" % i), "wb") as f:
                        f.write(png_rgb(12, 12, px))
        cls.arch = os.path.join(cls.dir, "res-head.yaml")
        with open(cls.arch, "w") as f:
            f.write(RESNET)
        # seeded weights stand in for a pretrained backbone
        cls.init = os.path.join(cls.dir, "backbone.kiln")
        r = kiln("import", cls.arch, "-o", cls.init, "--seed", "4")
        assert r.returncode == 0, r.stderr

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir)

    def test_frozen_backbone_head_learns(self):
        out = os.path.join(self.dir, "head.kiln")
        r = kiln("train", "--arch", self.arch, "--init", self.init, "--freeze", "backbone",
                 "--data", self.data, "--size", "12", "--epochs", "20", "--batch", "10",
                 "--optimizer", "adam", "--lr", "0.02", "-o", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        # 7 conv (batch norm folded in by kiln import: 7 identity batch norms) + the head
        self.assertIn("init: 15 layers from", r.stderr)
        self.assertIn("features: 84 images through the frozen backbone once", r.stderr)
        self.assertIn("51 parameters", r.stderr)  # the head only: 16 x 3 + 3
        e = kiln("eval", out, "--data", self.data, "--size", "12", "--json")
        self.assertEqual(e.returncode, 0, e.stderr)
        self.assertGreater(json.loads(e.stdout)["accuracy"], 0.7)  # chance: 1/3
        # resuming keeps the backbone frozen
        r = kiln("train", "--resume", out + ".ckpt", "--data", self.data, "--size", "12",
                 "--epochs", "21", "--batch", "10", "-o", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("51 parameters", r.stderr)

    def test_errors(self):
        out = os.path.join(self.dir, "x.kiln")
        r = kiln("train", "--arch", self.arch, "--freeze", "everything", "--data", self.data,
                 "-o", out)
        self.assertEqual(r.returncode, 2)
        no_head = os.path.join(self.dir, "no-head.yaml")
        with open(no_head, "w") as f:
            f.write("input: {channels: 3, height: 12, width: 12}\nlayers:\n"
                    "  - {type: conv, filters: 3, kernel: 12}\n  - {type: flatten}\n")
        r = kiln("train", "--arch", no_head, "--freeze", "backbone", "--data", self.data,
                 "--size", "12", "-o", out)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no dense head", r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1)
        r = kiln("train", "--arch", self.arch, "--init", os.path.join(self.dir, "nope.kiln"),
                 "--data", self.data, "--size", "12", "-o", out)
        self.assertEqual(r.returncode, 1)
        self.assertIn("nope.kiln", r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1)


if __name__ == "__main__":
    unittest.main()
