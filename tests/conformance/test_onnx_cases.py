#!/usr/bin/env python3
"""kiln against the ONNX cases in tests/data/onnx (models with seeded weights
and outputs computed by torch in float64): each case runs through
`kiln run`, and its output must be within the case's relative L2 error. A
case that uses something kiln does not support (an operator, a mode, a
non-constant weight) is skipped with kiln's message, and counted. Exit 77
(skip) when the data directory is absent."""
import gzip
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
DATA = os.environ.get("KILN_ONNX_CASES", os.path.join(SRC, "tests/data/onnx"))


def write_npy(path, shape, raw):
    dims = ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "")
    hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }" % dims
    hdr += " " * (63 - (10 + len(hdr)) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode() + raw)


def read_npy_floats(path):
    with open(path, "rb") as f:
        b = f.read()
    hl = struct.unpack("<H", b[8:10])[0]
    data = b[10 + hl:]
    return struct.unpack("<%df" % (len(data) // 4), data)


def main():
    manifest = os.path.join(DATA, "manifest.json")
    if not os.path.exists(manifest):
        print("SKIP: %s not found (the ONNX cases ship in tests/data/onnx)" % manifest)
        return 77
    with open(manifest) as f:
        cases = json.load(f)["cases"]
    tmp = tempfile.mkdtemp(prefix="kiln-cases-")
    passed = failed = skipped = 0
    try:
        for case in cases:
            name = case["name"]
            model = os.path.join(DATA, case["model"]["file"])
            if case["model"].get("compression") == "gzip":
                plain = os.path.join(tmp, name + ".onnx")
                with gzip.open(model, "rb") as src, open(plain, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                model = plain
            args = [KILN, "run", model]
            for i, inp in enumerate(case["inputs"]):
                with open(os.path.join(DATA, inp["file"]), "rb") as f:
                    raw = f.read()
                x = os.path.join(tmp, "%s.in%d.npy" % (name, i))
                write_npy(x, inp["shape"], raw)
                args += ["--input", x]
            y = os.path.join(tmp, name + ".out.npy")
            r = subprocess.run(args + ["--output", y], capture_output=True, text=True,
                               timeout=300)
            if r.returncode != 0:
                msg = r.stderr.strip()
                if "unsupported" in msg:
                    skipped += 1
                    print("SKIP %-28s %s" % (name, msg))
                else:
                    failed += 1
                    print("FAIL %-28s %s" % (name, msg))
                continue
            got = read_npy_floats(y)
            out = case["outputs"][0]
            with open(os.path.join(DATA, out["file"]), "rb") as f:
                raw = f.read()
            want = struct.unpack("<%df" % (len(raw) // 4), raw)
            if len(got) != len(want):
                failed += 1
                print("FAIL %-28s %d values, expected %d" % (name, len(got), len(want)))
                continue
            num = sum((a - b) ** 2 for a, b in zip(got, want))
            den = sum(b * b for b in want) or 1.0
            err = math.sqrt(num / den)
            tol = case["tolerance"]["rel_l2"]
            ok = err <= tol
            passed += ok
            failed += not ok
            print("%s %-28s rel_l2 %.2e (tolerance %.0e) ops %s"
                  % ("PASS" if ok else "FAIL", name, err, tol, ",".join(case["ops"])))
    finally:
        shutil.rmtree(tmp)
    print("\n%d passed, %d failed, %d skipped (of %d cases)"
          % (passed, failed, skipped, len(cases)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
