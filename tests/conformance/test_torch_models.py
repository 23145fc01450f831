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
import json
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
MODELS = ("lenet-mnist", "cifar10-cnn", "resnet50", "mobilenetv2")


def have_all(d):
    return all(os.path.exists(os.path.join(d, m + ".onnx")) for m in MODELS)


OUT = os.environ.get("KILN_PEER_MODELS") or os.path.join(SRC, "bench/peers/out")
if not have_all(OUT) and os.environ.get("KILN_TORCH_EXPORTS"):
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


TORCH_TOP5 = r"""
import sys, torch
sys.path.insert(0, sys.argv[1])
import nets
import torchvision.transforms.functional as F
from torchvision.io import read_image
m = nets.resnet50()
m.load_state_dict(torch.load(sys.argv[2]))
m.eval()
img = read_image(sys.argv[3]).float() / 255
img = F.center_crop(F.resize(img, 256), 224)
img = F.normalize(img, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
with torch.no_grad():
    p = torch.softmax(m(img[None]), 1)[0]
v, i = p.topk(5)
print(" ".join("%d:%.6f" % (a, b) for a, b in zip(i.tolist(), v.tolist())))
"""


def photo(name):
    for d in ("/usr/share/darknet/data", os.environ.get("KILN_PHOTOS", "datasets/photos")):
        if os.path.exists(os.path.join(d, name)):
            return os.path.join(d, name)
    return None


def dog_top5(tmp):
    """`kiln predict` on darknet's dog.jpg with the imported ResNet50 and
    ImageNet's class names prints a labelled top-5; it must agree with
    torch on the same photo (resize 256, centre crop 224, ImageNet mean/std):
    the same top-1 and at least 4 of the same top-5 classes (the two resize
    and JPEG implementations differ slightly). Returns failures."""
    dog, names = photo("dog.jpg"), photo("imagenet.shortnames.list")
    if not dog or not names:
        print("FAIL dog.jpg top-5: darknet's photos are missing (scripts/deps fetches them)")
        return 1
    labels = os.path.join(tmp, "imagenet1k.txt")
    with open(names) as f, open(labels, "w") as g:
        g.writelines(f.readlines()[:1000])
    model = os.path.join(tmp, "resnet50-labelled.kiln")
    r = kiln("import", os.path.join(OUT, "resnet50.onnx"), "-o", model, "--labels", labels,
             "--meta", "resize=256", "--meta", "mean=0.485,0.456,0.406",
             "--meta", "std=0.229,0.224,0.225")
    if r.returncode:
        print("FAIL dog.jpg top-5: import: " + r.stderr.strip())
        return 1
    r = kiln("predict", model, dog, "--top", "5", "--json")
    if r.returncode:
        print("FAIL dog.jpg top-5: predict: " + r.stderr.strip())
        return 1
    top = json.loads(r.stdout)[0]["top"]
    with open(labels) as f:
        names = [line.rstrip("\n") for line in f]
    t = subprocess.run(["/usr/bin/python3", "-c", TORCH_TOP5, os.path.join(SRC, "bench/peers"),
                        os.path.join(OUT, "resnet50.pt"), dog],
                       capture_output=True, text=True, timeout=300)
    if t.returncode:
        print("FAIL dog.jpg top-5: torch: " + t.stderr.strip()[-500:])
        return 1
    want = [(int(a), float(b)) for a, b in (x.split(":") for x in t.stdout.split())]
    got = [(e["class"], e["probability"]) for e in top]
    labelled = len(top) == 5 and all(e["label"] == names[e["class"]] for e in top)
    ordered = all(got[i][1] >= got[i + 1][1] for i in range(len(got) - 1))
    same = got[0][0] == want[0][0] and len({c for c, _ in got} & {c for c, _ in want}) >= 4
    ok = labelled and ordered and same
    print("%s dog.jpg top-5 kiln %s; torch %s" % (
        "PASS" if ok else "FAIL",
        ", ".join("%s %.3f" % (e["label"], e["probability"]) for e in top),
        ", ".join("%s %.3f" % (names[c], p) for c, p in want)))
    return 0 if ok else 1


def main():
    if not have_all(OUT) and not export_models():
        print("SKIP: %s has no exported models and python3-torch is not installed" % OUT)
        return 77
    tmp = tempfile.mkdtemp(prefix="kiln-torch-")
    failed = 0
    try:
        for name in MODELS:
            if not os.path.exists(os.path.join(OUT, name + ".onnx")):
                print("FAIL %s: not exported in %s" % (name, OUT))
                failed += 1
                continue
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
        failed += dog_top5(tmp)
    finally:
        shutil.rmtree(tmp)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
