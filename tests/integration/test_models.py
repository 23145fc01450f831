#!/usr/bin/env python3
"""Model files end to end through the kiln binary: YAML and ONNX import,
.kiln round trips (plain and compressed), any batch size, corrupt files,
unsupported operators, and predict on a real JPEG."""
import json
import math
import os
import random
import shutil
import struct
import subprocess
import tempfile
import unittest

KILN = os.environ.get("KILN_BIN", "build/src/cli/kiln")
SRC = os.environ.get("KILN_SOURCE_DIR", ".")
TESTDATA = "/usr/share/libonnx-testdata/data"
# darknet's sample photo: Debian's package if installed, else the copy
# scripts/deps unpacked (KILN_PHOTOS, set by tests/meson.build).
DOG = next((p for p in ("/usr/share/darknet/data/dog.jpg",
                        os.path.join(os.environ.get("KILN_PHOTOS", "datasets/photos"), "dog.jpg"))
            if os.path.exists(p)), "/usr/share/darknet/data/dog.jpg")


def kiln(*args, timeout=300):
    return subprocess.run([KILN, *args], capture_output=True, timeout=timeout)


def write_npy(path, shape, values):
    dims = ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "")
    hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }" % dims
    hdr += " " * (63 - (10 + len(hdr)) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode())
        f.write(struct.pack("<%df" % len(values), *values))


def read_npy(path):
    with open(path, "rb") as f:
        b = f.read()
    hl = struct.unpack("<H", b[8:10])[0]
    hdr = b[10:10 + hl].decode()
    shape = tuple(int(x) for x in hdr.split("(")[1].split(")")[0].split(",") if x.strip())
    data = b[10 + hl:]
    return shape, list(struct.unpack("<%df" % (len(data) // 4), data)), data


class Models(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-models-")
        cls.lenet = os.path.join(cls.tmp, "lenet.kiln")
        r = kiln("import", os.path.join(SRC, "models/lenet-mnist.yaml"), "-o", cls.lenet)
        assert r.returncode == 0, r.stderr
        rnd = random.Random(7)
        cls.image = [rnd.random() for _ in range(784)]
        cls.x1 = os.path.join(cls.tmp, "x1.npy")
        write_npy(cls.x1, (1, 1, 28, 28), cls.image)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp)

    def path(self, name):
        return os.path.join(self.tmp, name)

    def run_model(self, model, x, name):
        out = self.path(name)
        r = kiln("run", model, "--input", x, "--output", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        return read_npy(out)

    def test_inspect_reports_fused_layers_params_and_arena(self):
        r = kiln("inspect", os.path.join(SRC, "models/cifar10-cnn.yaml"), "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        info = json.loads(r.stdout)
        ops = [layer["op"] for layer in info["layers"]]
        # conv + batch norm + relu become one layer each; the first conv
        # (the direct conv, 3 input channels) also pools as it stores
        self.assertEqual(ops.count("Conv+relu") + ops.count("Conv+relu+maxpool"), 3)
        self.assertEqual(ops[:2], ["Conv+relu+maxpool", "MaxPool (in its conv)"])
        self.assertNotIn("BatchNormalization", ops)
        self.assertGreater(info["arena_bytes"], 0)
        self.assertEqual(info["outputs"][0]["shape"], [1, 10])
        self.assertIn("airplane", info["meta"]["labels"])

    def test_resnet50_yaml_is_fused_and_its_arena_small(self):
        r = kiln("inspect", os.path.join(SRC, "models/resnet50.yaml"), "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        info = json.loads(r.stdout)
        ops = [layer["op"] for layer in info["layers"]]
        self.assertEqual(ops.count("Conv+add+relu"), 16)  # one per bottleneck
        # the stem (the stride-2 direct conv) pools 3x3/2 as it stores: its
        # 112x112 output, the largest activation, is never written
        self.assertEqual(ops[:2], ["Conv+relu+maxpool", "MaxPool (in its conv)"])
        self.assertEqual(info["layer_count"], 58)
        self.assertAlmostEqual(info["flops"] / 1e9, 8.18, places=1)
        self.assertLess(info["arena_bytes"], 20 << 20)

    def test_yaml_and_kiln_file_give_identical_bytes(self):
        _, _, a = self.run_model(os.path.join(SRC, "models/lenet-mnist.yaml"), self.x1, "a.npy")
        _, _, b = self.run_model(self.lenet, self.x1, "b.npy")
        self.assertEqual(a, b)

    def test_compressed_file_equals_plain_and_expands_back(self):
        z = self.path("lenet.z.kiln")
        self.assertEqual(kiln("import", self.lenet, "-o", z, "--compress").returncode, 0)
        self.assertLess(os.path.getsize(z), os.path.getsize(self.lenet))
        _, _, a = self.run_model(self.lenet, self.x1, "p.npy")
        _, _, b = self.run_model(z, self.x1, "z.npy")
        self.assertEqual(a, b)
        back = self.path("lenet.back.kiln")
        self.assertEqual(kiln("import", z, "-o", back).returncode, 0)
        with open(back, "rb") as f1, open(self.lenet, "rb") as f2:
            self.assertEqual(f1.read(), f2.read())

    def test_any_batch_size_gives_each_image_its_own_answer(self):
        _, one, _ = self.run_model(self.lenet, self.x1, "one.npy")
        rnd = random.Random(8)
        other = [rnd.random() for _ in range(784)]
        x3 = self.path("x3.npy")
        write_npy(x3, (3, 1, 28, 28), self.image + other + self.image)
        shape, three, _ = self.run_model(self.lenet, x3, "three.npy")
        self.assertEqual(shape, (3, 10))
        for k in range(10):
            self.assertAlmostEqual(three[k], one[k], places=5)
            self.assertAlmostEqual(three[20 + k], one[k], places=5)
        self.assertNotAlmostEqual(sum(abs(three[10 + k] - one[k]) for k in range(10)), 0, 4)

    def test_truncated_and_flipped_files_are_clean_errors(self):
        with open(self.lenet, "rb") as f:
            good = f.read()
        bad = self.path("bad.kiln")
        cuts = sorted(set([0, 1, 8, 63, 64, 100, 200, 4095, 4096, len(good) // 2, len(good) - 1]))
        for cut in cuts:
            with open(bad, "wb") as f:
                f.write(good[:cut])
            r = kiln("inspect", bad)
            self.assertEqual(r.returncode, 1, "cut at %d: %s" % (cut, r.stderr))
            self.assertEqual(len(r.stderr.strip().splitlines()), 1)
        rnd = random.Random(3)
        for _ in range(20):
            data = bytearray(good)
            i = rnd.randrange(0, 4096 + 64)
            if data[i] == 0 and 200 < i:
                continue  # padding
            data[i] ^= 0x40
            with open(bad, "wb") as f:
                f.write(data)
            r = kiln("inspect", bad)
            self.assertEqual(r.returncode, 1, "flip at %d: %s" % (i, r.stderr))
            self.assertIn(b"kiln inspect:", r.stderr)

    def test_predict_prints_labelled_top_k(self):
        if not os.path.exists(DOG):
            self.skipTest("no %s (darknet's data)" % DOG)
        r = kiln("predict", self.lenet, DOG, "--top", "3", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        top = json.loads(r.stdout)[0]["top"]
        self.assertEqual(len(top), 3)
        self.assertEqual(top[0]["label"], str(top[0]["class"]))
        probs = [t["probability"] for t in top]
        self.assertEqual(probs, sorted(probs, reverse=True))
        r = kiln("predict", self.lenet, self.x1)
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"x1.npy", r.stderr)


@unittest.skipUnless(os.path.isdir(TESTDATA), "libonnx-testdata is not installed")
class Onnx(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="kiln-onnx-")

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def test_onnx_and_its_kiln_file_give_identical_bytes(self):
        model = os.path.join(TESTDATA, "pytorch-converted/test_BatchNorm2d_eval/model.onnx")
        r = kiln("inspect", model, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        shape = json.loads(r.stdout)["inputs"][0]["shape"]
        n = math.prod(shape)
        x = os.path.join(self.tmp, "x.npy")
        write_npy(x, shape, [random.Random(1).uniform(-2, 2) for _ in range(n)])
        k = os.path.join(self.tmp, "m.kiln")
        self.assertEqual(kiln("import", model, "-o", k).returncode, 0)
        outs = []
        for m in (model, k):
            out = os.path.join(self.tmp, "y.npy")
            r = kiln("run", m, "--input", x, "--output", out)
            self.assertEqual(r.returncode, 0, r.stderr)
            outs.append(read_npy(out)[2])
        self.assertEqual(outs[0], outs[1])

    def test_unsupported_operator_is_named_with_its_node(self):
        model = os.path.join(TESTDATA, "pytorch-converted/test_PReLU_2d/model.onnx")
        if not os.path.exists(model):
            self.skipTest("test_PReLU_2d is not in this libonnx-testdata")
        r = kiln("import", model, "-o", os.path.join(self.tmp, "p.kiln"))
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"(PRelu): unsupported operator", r.stderr)
        self.assertIn(b"node '", r.stderr)

    def test_garbage_onnx_is_a_clean_error(self):
        bad = os.path.join(self.tmp, "bad.onnx")
        with open(bad, "wb") as f:
            f.write(b"\x0a\xff\xff\xff\xff\x0f" + os.urandom(64))
        r = kiln("inspect", bad)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1)


if __name__ == "__main__":
    unittest.main(verbosity=2)
