#!/usr/bin/python3
"""Exports the benchmark models to ONNX with seeded random weights.

    /usr/bin/python3 bench/peers/export_models.py [--out DIR] [--opsets 13,9,17]
                                                  [--models resnet50,lenet-mnist,cifar10-cnn]

Writes into DIR (default bench/peers/out/):
  <model>.onnx                 opset 13, batch dimension symbolic ("N")
  <model>.op<K>.onnx           the same model at other opsets (--opsets)
  <model>.pt                   the torch state dict (torch_bench.py loads it)
  <model>.input.npy            one batch-1 input, float32
  <model>.output.npy           torch's output for it (eval mode)
  layers/<layer>.onnx          each distinct ResNet50 conv shape as a
                               single Conv (+bias) model
  manifest.json                shapes, FLOPs, file names (see README.md)

Weights are random (torch.manual_seed), nothing is downloaded. BatchNorm
layers get random affine parameters and statistics accumulated on random
data (nets.calibrate_bn), so BN folding is not a no-op.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nets  # noqa: E402

import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

MODELS = {
    # name: (constructor, input shape at batch 1)
    "resnet50": (nets.resnet50, (1, 3, 224, 224)),
    "lenet-mnist": (nets.LeNet, (1, 1, 28, 28)),
    "cifar10-cnn": (nets.CifarCNN, (1, 3, 32, 32)),
    "mobilenetv2": (nets.mobilenetv2, (1, 3, 224, 224)),
}


def layer_name(cin, h, w, cout, kh, stride, pad):
    """The join key for a conv shape, shared with `kiln bench kernels`:
    conv_<cin>x<h>x<w>_<cout>_k<k>s<stride>p<pad> (input C x H x W)."""
    return f"conv_{cin}x{h}x{w}_{cout}_k{kh}s{stride}p{pad}"


def export_model(name, out, opsets, seed):
    ctor, shape = MODELS[name]
    torch.manual_seed(seed)
    model = ctor().eval()
    nets.calibrate_bn(model, shape)
    x = torch.randn(*shape)
    with torch.no_grad():
        y = model(x)
    files = {}
    for op in opsets:
        fn = f"{name}.onnx" if op == 13 else f"{name}.op{op}.onnx"
        torch.onnx.export(model, x, os.path.join(out, fn), opset_version=op,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "N"}, "output": {0: "N"}},
                          do_constant_folding=True)
        onnx.checker.check_model(os.path.join(out, fn))
        files[str(op)] = fn
    torch.save(model.state_dict(), os.path.join(out, f"{name}.pt"))
    np.save(os.path.join(out, f"{name}.input.npy"), x.numpy().astype(np.float32))
    np.save(os.path.join(out, f"{name}.output.npy"), y.numpy().astype(np.float32))
    entry = {
        "name": name,
        "onnx": files.get("13") or files[str(opsets[0])],
        "onnx_opsets": files,
        "state_dict": f"{name}.pt",
        "input_name": "input",
        "output_name": "output",
        "input_shape": list(shape),
        "output_shape": list(y.shape),
        "input": f"{name}.input.npy",
        "output": f"{name}.output.npy",
        "flops": nets.count_flops(model, x),
    }
    return model, x, entry


def conv_model(cin, h, w, cout, k, stride, pad, rng):
    """A single Conv with bias (what a conv becomes after BN folding), He
    initialised, batch dimension symbolic."""
    oh = (h + 2 * pad - k) // stride + 1
    ow = (w + 2 * pad - k) // stride + 1
    wt = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)
    b = (rng.standard_normal(cout) * 0.1).astype(np.float32)
    node = helper.make_node("Conv", ["input", "W", "B"], ["output"], kernel_shape=[k, k],
                            strides=[stride, stride], pads=[pad, pad, pad, pad],
                            dilations=[1, 1], group=1)
    graph = helper.make_graph(
        [node], "conv",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", cin, h, w])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", cout, oh, ow])],
        [numpy_helper.from_array(wt, "W"), numpy_helper.from_array(b, "B")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                          producer_name="kiln-bench-peers")
    m.ir_version = 7
    onnx.checker.check_model(m)
    return m, oh, ow


def export_layers(model, x, out, seed):
    """Each distinct conv shape of ResNet50 (batch 1), with how often it
    occurs and the modules it stands for."""
    os.makedirs(os.path.join(out, "layers"), exist_ok=True)
    rng = np.random.default_rng(seed)
    layers = {}
    for mod_name, shp, m in nets.conv_layers(model, x):
        assert m.groups == 1 and m.dilation == (1, 1)
        cin, h, w = shp[1], shp[2], shp[3]
        k, stride, pad = m.kernel_size[0], m.stride[0], m.padding[0]
        key = layer_name(cin, h, w, m.out_channels, k, stride, pad)
        if key in layers:
            layers[key]["count"] += 1
            layers[key]["modules"].append(mod_name)
            continue
        cm, oh, ow = conv_model(cin, h, w, m.out_channels, k, stride, pad, rng)
        fn = os.path.join("layers", key + ".onnx")
        onnx.save(cm, os.path.join(out, fn))
        layers[key] = {
            "name": key, "onnx": fn, "input_name": "input", "output_name": "output",
            "cin": cin, "h": h, "w": w, "cout": m.out_channels, "kh": k, "kw": k,
            "stride": stride, "pad": pad, "dilation": 1, "groups": 1, "oh": oh, "ow": ow,
            "input_shape": [1, cin, h, w], "output_shape": [1, m.out_channels, oh, ow],
            "flops": 2 * m.out_channels * oh * ow * cin * k * k,
            "count": 1, "modules": [mod_name],
        }
    return list(layers.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    ap.add_argument("--opsets", default="13", help="comma list, e.g. 13,9,17 (13 is the default file)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-layers", action="store_true", help="skip the single-conv ResNet50 layers")
    args = ap.parse_args()
    opsets = [int(s) for s in args.opsets.split(",") if s]
    names = [s for s in args.models.split(",") if s]
    for n in names:
        if n not in MODELS:
            ap.error(f"unknown model {n!r} (have: {', '.join(MODELS)})")
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

    manifest = {"seed": args.seed, "torch": torch.__version__, "onnx": onnx.__version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "models": [], "layers": []}
    for n in names:
        t0 = time.time()
        model, x, entry = export_model(n, args.out, opsets, args.seed)
        manifest["models"].append(entry)
        print(f"{n}: {entry['flops'] / 1e9:.3f} GFLOP, exported in {time.time() - t0:.1f} s",
              file=sys.stderr)
        if n == "resnet50" and not args.no_layers:
            manifest["layers"] = export_layers(model, x, args.out, args.seed)
            print(f"resnet50: {len(manifest['layers'])} distinct conv shapes", file=sys.stderr)
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
