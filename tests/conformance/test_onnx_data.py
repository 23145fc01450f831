"""The ONNX conformance data in tests/data/onnx is intact and says what it
claims: every file's size and sha256 match the manifest, tensor sizes match
their shapes, gzip'ed models expand to their stated size, and the cases
whose every operand is a graph input are recomputed here from the inputs
(standard library only) and agree with the stored expected outputs.
The test that runs kiln on the data lives with the ONNX importer."""

import gzip
import hashlib
import json
import math
import os
import struct
import unittest

SRC = os.environ.get("KILN_SOURCE_DIR",
                     os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DATA = os.path.join(SRC, "tests", "data", "onnx")


def load_manifest():
    with open(os.path.join(DATA, "manifest.json")) as f:
        return json.load(f)


def read(f):
    with open(os.path.join(DATA, f["file"]), "rb") as fh:
        return fh.read()


def floats(t):
    raw = read(t)
    return list(struct.unpack("<%df" % (len(raw) // 4), raw))


def prod(shape):
    return math.prod(shape) if shape else 1


def rel_l2(got, want):
    num = sum((g - w) ** 2 for g, w in zip(got, want))
    den = sum(w * w for w in want)
    return math.sqrt(num / max(den, 1e-30))


def strides(shape):
    s, acc = [], 1
    for d in reversed(shape):
        s.insert(0, acc)
        acc *= d
    return s


def concat(arrays, shapes, axis):
    axis %= len(shapes[0])
    outer = prod(shapes[0][:axis])
    out = []
    for o in range(outer):
        for a, s in zip(arrays, shapes):
            inner = prod(s[axis:])
            out += a[o * inner:(o + 1) * inner]
    return out


def matmul2d(a, b, m, k, n, trans_a=False):
    out = []
    for i in range(m):
        for j in range(n):
            acc = 0.0
            for p in range(k):
                av = a[p * m + i] if trans_a else a[i * k + p]
                acc += av * b[p * n + j]
            out.append(acc)
    return out


def softmax_rows(x, rows, cols):
    out = []
    for r in range(rows):
        row = x[r * cols:(r + 1) * cols]
        mx = max(row)
        e = [math.exp(v - mx) for v in row]
        s = sum(e)
        out += [v / s for v in e]
    return out


class OnnxDataTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.man = load_manifest()
        cls.cases = {c["name"]: c for c in cls.man["cases"]}

    def test_files_match_manifest(self):
        self.assertGreaterEqual(len(self.cases), 30)
        total = 0
        for c in self.man["cases"]:
            for t in [c["model"]] + c["inputs"] + c["outputs"]:
                raw = read(t)
                total += len(raw)
                self.assertEqual(len(raw), t["bytes"], t["file"])
                self.assertEqual(hashlib.sha256(raw).hexdigest(), t["sha256"], t["file"])
            for t in c["inputs"] + c["outputs"]:
                self.assertEqual(t["dtype"], "float32")
                self.assertEqual(t["bytes"], 4 * prod(t["shape"]), t["file"])
                self.assertTrue(all(math.isfinite(v) for v in floats(t)), t["file"])
            if c["model"].get("compression") == "gzip":
                self.assertEqual(len(gzip.decompress(read(c["model"]))),
                                 c["model"]["uncompressed_bytes"])
            self.assertGreater(c["tolerance"]["rel_l2"], 0)
        self.assertLess(total, 3 * 1024 * 1024, "conformance data should stay small")
        print(f"{len(self.cases)} cases, {total} bytes, checksums OK")

    def check(self, name, got):
        c = self.cases[name]
        want = floats(c["outputs"][0])
        self.assertEqual(len(got), len(want), name)
        self.assertLess(rel_l2(got, want), 1e-6, name)

    def test_concat_recomputed(self):
        for name, axis in (("concat-channels", 1), ("concat-axis0", 0), ("concat-negaxis", -1)):
            c = self.cases[name]
            self.check(name, concat([floats(t) for t in c["inputs"]],
                                    [t["shape"] for t in c["inputs"]], axis))

    def test_matmul_and_gemm_recomputed(self):
        c = self.cases["matmul-2d"]
        (m, k), (_, n) = c["inputs"][0]["shape"], c["inputs"][1]["shape"]
        self.check("matmul-2d", matmul2d(floats(c["inputs"][0]), floats(c["inputs"][1]), m, k, n))
        c = self.cases["gemm-transa-fullbias"]  # Y = A' B + C, A is [K, M]
        (k, m), (_, n) = c["inputs"][0]["shape"], c["inputs"][1]["shape"]
        y = matmul2d(floats(c["inputs"][0]), floats(c["inputs"][1]), m, k, n, trans_a=True)
        self.check("gemm-transa-fullbias", [a + b for a, b in zip(y, floats(c["inputs"][2]))])

    def test_softmax_recomputed(self):
        c = self.cases["softmax-lastaxis"]
        s = c["inputs"][0]["shape"]
        self.check("softmax-lastaxis", softmax_rows(floats(c["inputs"][0]), prod(s[:-1]), s[-1]))
        c = self.cases["softmax-op11-axis1"]  # opset 11: coerced to 2-D at the axis
        s = c["inputs"][0]["shape"]
        self.check("softmax-op11-axis1", softmax_rows(floats(c["inputs"][0]), s[0], prod(s[1:])))
        c = self.cases["softmax-axis1"]  # opset 13: over axis 1 alone
        s = c["inputs"][0]["shape"]
        x = floats(c["inputs"][0])
        n, ch, inner = s[0], s[1], prod(s[2:])
        out = [0.0] * len(x)
        for b in range(n):
            for i in range(inner):
                idx = [b * ch * inner + j * inner + i for j in range(ch)]
                col = softmax_rows([x[t] for t in idx], 1, ch)
                for t, v in zip(idx, col):
                    out[t] = v
        self.check("softmax-axis1", out)
        # The two axis-1 cases share an input but differ in meaning.
        self.assertGreater(rel_l2(floats(self.cases["softmax-axis1"]["outputs"][0]),
                                  floats(self.cases["softmax-op11-axis1"]["outputs"][0])), 1e-2)


if __name__ == "__main__":
    unittest.main(verbosity=2)
