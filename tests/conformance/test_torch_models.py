#!/usr/bin/env python3
"""kiln against PyTorch on whole networks: the seeded-random ResNet50 (BN
in eval mode with non-trivial statistics), LeNet and the CIFAR-10 CNN that
bench/peers/export_models.py exports to ONNX (opsets 9, 13, 17) with
torch's own output for one input. Each model runs at batch 1 and at batch
4 (the input four times), and must match torch to a relative L2 error
below 1e-4; the .kiln file made from the ONNX model must give the same
bytes as the ONNX model. The models are exported with torch
(bench/peers/export_models.py) when absent; exit 77 (skip) only when
python3-torch is not installed (scripts/deps installs it)."""
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile

KILN = os.environ.get("KILN_BIN", "build/src/cli/kiln")
SRC = os.environ.get("KILN_SOURCE_DIR", ".")
# bench/peers' exports when they are there, else the test's own (made once,
# in the build directory, by export_models() below).
OUT = os.environ.get("KILN_PEER_MODELS") or os.path.join(SRC, "bench/peers/out")
if not os.path.exists(os.path.join(OUT, "resnet50.onnx")) and os.environ.get("KILN_TORCH_EXPORTS"):
    OUT = os.environ["KILN_TORCH_EXPORTS"]


def read_npy(path):
    with open(path, "rb") as f:
        b = f.read()
    major = b[6]
    if major == 1:
        hl = struct.unpack("<H", b[8:10])[0]
        start = 10
    else:
        hl = struct.unpack("<I", b[8:12])[0]
        start = 12
    hdr = b[start:start + hl].decode()
    shape = tuple(int(x) for x in hdr.split("(")[1].split(")")[0].split(",") if x.strip())
    return shape, b[start + hl:]


def write_npy(path, shape, raw):
    dims = ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "")
    hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }" % dims
    hdr += " " * (63 - (10 + len(hdr)) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode() + raw)


def rel_l2(a, b):
    num = sum((x - y) ** 2 for x, y in zip(a, b))
    den = sum(y * y for y in b) or 1.0
    return math.sqrt(num / den)


def floats(raw):
    return struct.unpack("<%df" % (len(raw) // 4), raw)


def kiln(*args):
    return subprocess.run([KILN, *args], capture_output=True, text=True, timeout=600)


def export_models():
    """Exports the models with torch when it is installed (scripts/deps
    installs it); returns False when it cannot."""
    probe = subprocess.run(["/usr/bin/python3", "-c", "import torch, onnx"], capture_output=True)
    if probe.returncode != 0:
        return False
    script = os.path.join(SRC, "bench/peers/export_models.py")
    r = subprocess.run(["/usr/bin/python3", script, "--out", OUT, "--opsets", "13,9,17", "--no-layers"],
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        print("export_models.py failed:\n" + r.stdout + r.stderr)
        sys.exit(1)
    return True


def main():
    if not os.path.exists(os.path.join(OUT, "resnet50.onnx")) and not export_models():
        print("SKIP: %s has no exported models and python3-torch is not installed" % OUT)
        return 77
    tmp = tempfile.mkdtemp(prefix="kiln-torch-")
    failed = 0
    try:
        for name in ("lenet-mnist", "cifar10-cnn", "resnet50"):
            shape, x_raw = read_npy(os.path.join(OUT, name + ".input.npy"))
            _, want_raw = read_npy(os.path.join(OUT, name + ".output.npy"))
            want = floats(want_raw)
            x1 = os.path.join(tmp, "x1.npy")
            x4 = os.path.join(tmp, "x4.npy")
            write_npy(x1, shape, x_raw)
            write_npy(x4, (4,) + shape[1:], x_raw * 4)
            for variant in ("", ".op9", ".op17"):
                onnx = os.path.join(OUT, name + variant + ".onnx")
                if not os.path.exists(onnx):
                    continue
                kfile = os.path.join(tmp, name + variant + ".kiln")
                r = kiln("import", onnx, "-o", kfile)
                if r.returncode:
                    print("FAIL %s%s import: %s" % (name, variant, r.stderr.strip()))
                    failed += 1
                    continue
                outs = {}
                for label, model, x in (("onnx b1", onnx, x1), ("kiln b1", kfile, x1),
                                        ("kiln b4", kfile, x4)):
                    y = os.path.join(tmp, "y.npy")
                    r = kiln("run", model, "--input", x, "--output", y)
                    if r.returncode:
                        print("FAIL %s%s %s: %s" % (name, variant, label, r.stderr.strip()))
                        failed += 1
                        break
                    outs[label] = read_npy(y)[1]
                else:
                    errs = [rel_l2(floats(outs["kiln b1"]), want)]
                    got4 = floats(outs["kiln b4"])
                    n = len(want)
                    errs += [rel_l2(got4[i * n:(i + 1) * n], want) for i in range(4)]
                    same = outs["onnx b1"] == outs["kiln b1"]
                    ok = max(errs) < 1e-4 and same
                    failed += not ok
                    print("%s %-20s rel_l2 batch 1 %.2e, batch 4 max %.2e; .kiln == .onnx: %s"
                          % ("PASS" if ok else "FAIL", name + variant, errs[0], max(errs[1:]),
                             same))
    finally:
        shutil.rmtree(tmp)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
