#!/usr/bin/python3
"""Generates kiln's ONNX conformance data: small models with seeded weights,
their inputs, and expected outputs, so the conformance suite can check
kiln against PyTorch without PyTorch installed.

    /usr/bin/python3 tests/data/onnx/generate.py [--out tests/data/onnx]

Needs Debian's python3-torch, python3-onnx and python3-numpy (the set-up in
bench/peers/setup); the tests that read the data need none of them.
Output, per case, in <out>/<case>/:
  model.onnx (or model.onnx.gz when it is over 256 KiB; gzip, mtime 0)
  input_<i>.bin, output_<i>.bin   float32, little-endian, C order
and <out>/manifest.json describing every case (see README.md).

Expected outputs are computed in float64 (the torch model converted with
.double(), or NumPy in float64) from the float32 inputs and weights, then
rounded to float32, so they are the exact answer to float32 precision, not
one implementation's rounding. Running the script twice gives the same
bytes.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "bench", "peers"))
import nets  # noqa: E402

SEED = 0
GZIP_OVER = 256 * 1024
# Dense weights larger than this are a seeded random sequence of TILE_PERIOD
# values repeated: the period is prime, so no row or column of the matrix
# equals another (a transposed or mis-strided read still gives a wrong
# answer), and the file compresses to a few KiB instead of megabytes.
TILE_OVER = 65536
TILE_PERIOD = 4099


def tile_large_weights(model, gen):
    for m in model.modules():
        if isinstance(m, nn.Linear) and m.weight.numel() > TILE_OVER:
            bound = 1.0 / np.sqrt(m.in_features) * np.sqrt(3.0)
            base = (torch.rand(TILE_PERIOD, generator=gen) * 2 - 1) * bound
            reps = -(-m.weight.numel() // TILE_PERIOD)
            with torch.no_grad():
                m.weight.copy_(base.repeat(reps)[:m.weight.numel()].view_as(m.weight))


class Writer:
    def __init__(self, out):
        self.out = out
        self.cases = []

    def _file(self, case, fn, data):
        path = os.path.join(self.out, case, fn)
        with open(path, "wb") as f:
            f.write(data)
        return {"file": f"{case}/{fn}", "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest()}

    def add(self, name, model, inputs, outputs, reference, description, rel_l2=1e-4, extra=None):
        """model: onnx.ModelProto; inputs/outputs: lists of (name, float32 array)."""
        d = os.path.join(self.out, name)
        os.makedirs(d, exist_ok=True)
        onnx.checker.check_model(model)
        raw = model.SerializeToString()
        entry = {"name": name, "description": description, "reference": reference,
                 "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                 "ops": sorted({n.op_type for n in model.graph.node})}
        if len(raw) > GZIP_OVER:
            buf = io.BytesIO()
            with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as g:
                g.write(raw)
            entry["model"] = self._file(name, "model.onnx.gz", buf.getvalue())
            entry["model"]["compression"] = "gzip"
            entry["model"]["uncompressed_bytes"] = len(raw)
        else:
            entry["model"] = self._file(name, "model.onnx", raw)
        for kind, items in (("inputs", inputs), ("outputs", outputs)):
            entry[kind] = []
            for i, (tname, arr) in enumerate(items):
                arr = np.ascontiguousarray(arr, dtype="<f4")
                f = self._file(name, f"{kind[:-1]}_{i}.bin", arr.tobytes())
                entry[kind].append(dict(name=tname, shape=list(arr.shape), dtype="float32", **f))
        entry["tolerance"] = {"rel_l2": rel_l2}
        entry.update(extra or {})
        self.cases.append(entry)


def f32(a):
    return np.asarray(a, dtype=np.float32)


def export_torch(w, name, model, x, description, opset=13, rel_l2=1e-4, extra=None):
    """Exports a float32 torch model at a fixed input shape; the expected
    output is the float64 copy's. TrainingMode.PRESERVE keeps
    BatchNormalization nodes (in inference form) instead of letting the
    exporter fold them into the convs: folding is kiln's job to test."""
    model = model.eval()
    buf = io.BytesIO()
    torch.onnx.export(model, x, buf, opset_version=opset, input_names=["input"],
                      output_names=["output"], do_constant_folding=True,
                      training=torch.onnx.TrainingMode.PRESERVE)
    m = onnx.load_from_string(buf.getvalue())
    m.producer_version = ""  # keep the bytes independent of the torch build
    with torch.no_grad():
        y = model.double()(x.double()).numpy()
    model.float()
    w.add(name, m, [("input", x.numpy())], [("output", f32(y))], "torch-float64",
          description, rel_l2, extra)


def onnx_model(nodes, inputs, outputs, inits=(), opset=13):
    g = helper.make_graph(
        nodes, "case",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(a.shape)) for n, a in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(a.shape)) for n, a in outputs],
        list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                          producer_name="kiln-conformance")
    m.ir_version = 8 if opset >= 15 else 7 if opset >= 12 else 4
    return m


def op_case(w, name, nodes, inputs, outputs, description, inits=(), opset=13, reference="numpy-float64"):
    w.add(name, onnx_model(nodes, inputs, outputs, inits, opset), inputs, outputs, reference,
          description)


def softmax_ref(x, axis):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def gen_models(w, rng, gen):
    torch.manual_seed(SEED)
    lenet = nets.LeNet()
    tile_large_weights(lenet, gen)
    x = torch.rand(2, 1, 28, 28, generator=gen)
    desc = ("LeNet for MNIST: conv5x5x32 (pad 2)-relu-maxpool2-conv5x5x64 (pad 2)-relu-maxpool2-"
            "fc1024-relu-fc10; fc1's weights are a prime-period tiled random sequence")
    for op in (13, 9, 17):
        export_torch(w, "lenet-mnist" if op == 13 else f"lenet-mnist-op{op}", lenet, x, desc, op)

    torch.manual_seed(SEED + 1)
    cnn = nets.CifarCNN()
    tile_large_weights(cnn, gen)
    nets.calibrate_bn(cnn, (1, 3, 32, 32))
    x = torch.randn(2, 3, 32, 32, generator=gen)
    export_torch(w, "cifar10-cnn", cnn, x,
                 "CIFAR-10 CNN: 3 x [conv3x3 (pad 1)-BN-relu-maxpool2] 32/64/128 - fc256-relu-fc10;"
                 " BN with non-trivial statistics; fc1 tiled as in lenet-mnist")

    torch.manual_seed(SEED + 2)
    blk = nets.calibrate_bn(nets.ResidualBlock(16, 16), (1, 16, 8, 8))
    x = torch.randn(2, 16, 8, 8, generator=gen)
    export_torch(w, "residual-block", blk, x,
                 "ResNet basic block, identity shortcut: conv3x3-BN-relu-conv3x3-BN + x, relu")
    torch.manual_seed(SEED + 3)
    blk = nets.calibrate_bn(nets.ResidualBlock(16, 32, 2), (1, 16, 9, 9))
    x = torch.randn(1, 16, 9, 9, generator=gen)
    for op in (13, 9, 17):
        export_torch(w, "residual-block-down" if op == 13 else f"residual-block-down-op{op}", blk, x,
                     "ResNet basic block, stride 2, projection shortcut (conv1x1/2 + BN), odd 9x9 input",
                     op)


def gen_ops(w, rng):
    r = lambda *s: f32(rng.standard_normal(s))  # noqa: E731

    # Gemm: Y = alpha * A' B' + beta * C
    a, b, c = r(3, 5), r(4, 5), r(4)
    y = 0.5 * a.astype(np.float64) @ b.T.astype(np.float64) + 2.0 * c
    op_case(w, "gemm-transb-bias", [helper.make_node("Gemm", ["A", "B", "C"], ["Y"], alpha=0.5, beta=2.0, transB=1)],
            [("A", a)], [("Y", f32(y))], "Gemm transB=1, alpha 0.5, beta 2, bias [N] broadcast (B, C initializers)",
            [numpy_helper.from_array(b, "B"), numpy_helper.from_array(c, "C")])
    a, b, c = r(6, 2), r(6, 3), r(2, 3)
    y = a.T.astype(np.float64) @ b + c
    op_case(w, "gemm-transa-fullbias", [helper.make_node("Gemm", ["A", "B", "C"], ["Y"], transA=1)],
            [("A", a), ("B", b), ("C", c)], [("Y", f32(y))], "Gemm transA=1, all three as inputs, C [M,N]")
    a, b = r(1, 37), r(37, 11)
    op_case(w, "gemm-gemv-nobias", [helper.make_node("Gemm", ["A", "B"], ["Y"])],
            [("A", a)], [("Y", f32(a.astype(np.float64) @ b))], "Gemm batch 1 (a GEMV), no C, odd sizes",
            [numpy_helper.from_array(b, "B")], opset=11)

    a, b = r(3, 4), r(4, 5)
    op_case(w, "matmul-2d", [helper.make_node("MatMul", ["A", "B"], ["Y"])],
            [("A", a), ("B", b)], [("Y", f32(a.astype(np.float64) @ b))], "MatMul 2-D x 2-D")
    a, b = r(2, 3, 4), r(4, 5)
    op_case(w, "matmul-batched", [helper.make_node("MatMul", ["A", "B"], ["Y"])],
            [("A", a)], [("Y", f32(np.matmul(a.astype(np.float64), b)))],
            "MatMul 3-D x 2-D initializer (broadcast over the batch)", [numpy_helper.from_array(b, "B")])

    x = r(2, 3, 5) * 4
    op_case(w, "softmax-lastaxis", [helper.make_node("Softmax", ["X"], ["Y"], axis=-1)],
            [("X", x)], [("Y", f32(softmax_ref(x, -1)))], "Softmax opset 13, axis -1")
    x = r(2, 3, 4) * 4
    op_case(w, "softmax-axis1", [helper.make_node("Softmax", ["X"], ["Y"], axis=1)],
            [("X", x)], [("Y", f32(softmax_ref(x, 1)))], "Softmax opset 13, axis 1 of 3 (a single axis)")
    x2 = x.reshape(2, 12)
    op_case(w, "softmax-op11-axis1", [helper.make_node("Softmax", ["X"], ["Y"], axis=1)],
            [("X", x)], [("Y", f32(softmax_ref(x2, 1).reshape(x.shape)))],
            "Softmax opset 11, axis 1: input coerced to 2-D [2, 12], softmax over all 12", opset=11)
    x = f32([[1000.0, 1001.0, 999.0, -1000.0]])
    op_case(w, "softmax-large", [helper.make_node("Softmax", ["X"], ["Y"], axis=-1)],
            [("X", x)], [("Y", f32(softmax_ref(x, -1)))], "Softmax of large values (needs max subtraction)")

    a, b, c = r(2, 2, 3, 3), r(2, 3, 3, 3), r(2, 1, 3, 3)
    op_case(w, "concat-channels", [helper.make_node("Concat", ["A", "B", "C"], ["Y"], axis=1)],
            [("A", a), ("B", b), ("C", c)], [("Y", np.concatenate([a, b, c], 1))],
            "Concat of three NCHW tensors on channels (2+3+1)")
    a, b = r(1, 4, 5), r(3, 4, 5)
    op_case(w, "concat-axis0", [helper.make_node("Concat", ["A", "B"], ["Y"], axis=0)],
            [("A", a), ("B", b)], [("Y", np.concatenate([a, b], 0))], "Concat on axis 0")
    a, b = r(2, 3, 4, 2), r(2, 3, 4, 3)
    op_case(w, "concat-negaxis", [helper.make_node("Concat", ["A", "B"], ["Y"], axis=-1)],
            [("A", a), ("B", b)], [("Y", np.concatenate([a, b], -1))], "Concat on axis -1 (innermost)")

    x = r(1, 2, 3, 4)
    pads = [0, 0, 1, 2, 0, 1, 0, 3]  # begins (N,C,H,W) then ends
    npp = list(zip(pads[:4], pads[4:]))
    y = np.pad(x, npp, mode="constant", constant_values=0.5)
    op_case(w, "pad-constant", [helper.make_node("Pad", ["X", "pads", "value"], ["Y"], mode="constant")],
            [("X", x)], [("Y", y)], "Pad opset 13, constant 0.5, asymmetric pads given as initializers",
            [numpy_helper.from_array(np.array(pads, np.int64), "pads"),
             numpy_helper.from_array(np.array(0.5, np.float32), "value")])
    y = np.pad(x, npp, mode="constant")
    op_case(w, "pad-op9-attr", [helper.make_node("Pad", ["X"], ["Y"], mode="constant", pads=pads, value=0.0)],
            [("X", x)], [("Y", y)], "Pad opset 9: pads and value as attributes", opset=9)
    pads_r = [0, 0, 2, 1, 0, 0, 1, 3]
    npr = list(zip(pads_r[:4], pads_r[4:]))
    for mode in ("reflect", "edge"):
        op_case(w, f"pad-{mode}", [helper.make_node("Pad", ["X", "pads"], ["Y"], mode=mode)],
                [("X", x)], [("Y", np.pad(x, npr, mode=mode))], f"Pad opset 13, mode {mode}",
                [numpy_helper.from_array(np.array(pads_r, np.int64), "pads")])


def conv_ref(x, wt, b, stride, pads, dil, groups):
    """Conv in float64 through torch: pads = [top, left, bottom, right]."""
    xt = F.pad(torch.from_numpy(x).double(), (pads[1], pads[3], pads[0], pads[2]))
    return F.conv2d(xt, torch.from_numpy(wt).double(),
                    None if b is None else torch.from_numpy(b).double(),
                    stride, 0, dil, groups).numpy()


def gen_convpool(w, rng):
    r = lambda *s: f32(rng.standard_normal(s))  # noqa: E731
    specs = [
        # name, cin, h, w, cout, k, stride, pads (t,l,b,r), dilation, groups, description
        ("conv-depthwise3x3", 8, 9, 11, 8, 3, 1, (1, 1, 1, 1), 1, 8, "depthwise 3x3 pad 1, odd H/W"),
        ("conv-depthwise3x3-s2", 5, 10, 7, 5, 3, 2, (1, 1, 1, 1), 1, 5, "depthwise 3x3 stride 2"),
        ("conv-grouped-dilated", 6, 12, 12, 4, 3, 2, (2, 2, 2, 2), 2, 2, "groups 2, dilation 2, stride 2"),
        ("conv-asym-pad", 3, 8, 9, 5, 3, 1, (0, 1, 2, 0), 1, 1, "asymmetric pads t0 l1 b2 r0"),
        ("conv-7x7s2-stem", 3, 23, 23, 4, 7, 2, (3, 3, 3, 3), 1, 1, "ResNet stem shape, small"),
        ("conv-1x1-s2", 7, 9, 9, 5, 1, 2, (0, 0, 0, 0), 1, 1, "1x1 stride 2 projection"),
    ]
    for name, cin, h, wd, cout, k, s, p, d, g, desc in specs:
        x, wt, b = r(2, cin, h, wd), r(cout, cin // g, k, k) * 0.3, r(cout)
        y = conv_ref(x, wt, b, s, p, d, g)
        node = helper.make_node("Conv", ["X", "W", "B"], ["Y"], kernel_shape=[k, k], strides=[s, s],
                                pads=[p[0], p[1], p[2], p[3]], dilations=[d, d], group=g)
        op_case(w, name, [node], [("X", x)], [("Y", f32(y))], "Conv " + desc,
                [numpy_helper.from_array(wt, "W"), numpy_helper.from_array(b, "B")],
                reference="torch-float64")

    x = r(1, 3, 7, 7)
    y = F.max_pool2d(torch.from_numpy(x), 2, 2, ceil_mode=True).numpy()
    op_case(w, "maxpool-ceil", [helper.make_node("MaxPool", ["X"], ["Y"], kernel_shape=[2, 2],
                                                   strides=[2, 2], ceil_mode=1)],
            [("X", x)], [("Y", y)], "MaxPool 2x2/2 ceil_mode on 7x7 (partial last window)",
            reference="torch-float64")
    x = r(1, 4, 9, 9)
    y = F.max_pool2d(torch.from_numpy(x), 3, 2, 1).numpy()
    op_case(w, "maxpool-3x3s2p1", [helper.make_node("MaxPool", ["X"], ["Y"], kernel_shape=[3, 3],
                                                      strides=[2, 2], pads=[1, 1, 1, 1])],
            [("X", x)], [("Y", y)], "MaxPool 3x3/2 pad 1 (ResNet's), padding never wins",
            reference="torch-float64")
    x = r(2, 3, 6, 7)
    for inc in (0, 1):
        y = F.avg_pool2d(torch.from_numpy(x).double(), 3, 2, 1, count_include_pad=bool(inc)).numpy()
        op_case(w, f"avgpool-pad-include{inc}",
                [helper.make_node("AveragePool", ["X"], ["Y"], kernel_shape=[3, 3], strides=[2, 2],
                                  pads=[1, 1, 1, 1], count_include_pad=inc)],
                [("X", x)], [("Y", f32(y))], f"AveragePool 3x3/2 pad 1, count_include_pad={inc}",
                reference="torch-float64")
    x = r(2, 5, 7, 3)
    op_case(w, "globalaveragepool", [helper.make_node("GlobalAveragePool", ["X"], ["Y"])],
            [("X", x)], [("Y", f32(x.astype(np.float64).mean(axis=(2, 3), keepdims=True)))],
            "GlobalAveragePool on 7x3")
    op_case(w, "globalmaxpool", [helper.make_node("GlobalMaxPool", ["X"], ["Y"])],
            [("X", x)], [("Y", x.max(axis=(2, 3), keepdims=True))], "GlobalMaxPool on 7x3")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=HERE)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(SEED)
    gen = torch.Generator().manual_seed(SEED)
    w = Writer(args.out)
    # Start clean: remove only the case directories a previous run wrote.
    old = os.path.join(args.out, "manifest.json")
    if os.path.exists(old):
        with open(old) as f:
            for c in json.load(f).get("cases", []):
                shutil.rmtree(os.path.join(args.out, c["name"]), ignore_errors=True)
    gen_models(w, rng, gen)
    gen_ops(w, rng)
    gen_convpool(w, rng)
    manifest = {
        "format": 1,
        "generator": "tests/data/onnx/generate.py",
        "command": "/usr/bin/python3 tests/data/onnx/generate.py",
        "seed": SEED,
        "torch": torch.__version__.split("+")[0],
        "onnx": onnx.__version__,
        "layout": "float32 little-endian, C order (row-major), shapes in 'shape'",
        "cases": w.cases,
    }
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    total = sum(c["model"]["bytes"] + sum(t["bytes"] for t in c["inputs"] + c["outputs"]) for c in w.cases)
    print(f"{len(w.cases)} cases, {total / 1024:.0f} KiB", file=sys.stderr)


if __name__ == "__main__":
    main()
