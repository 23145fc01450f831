#!/usr/bin/python3
"""kiln against ONNX Runtime round by round: one kiln session (libkiln
through ctypes) and one ORT session (bench/peers/ort_pair.js) live side by
side and take turns, the order swapped every round, with a pause between
turns so that neither's threads still spin when the other starts (ORT's
pool threads spin for tens of ms after a run: with pauses of 2 or 20 ms
kiln's LeNet at 2 threads took 0.96-0.99 ms a run, with 50-200 ms
0.51-0.54, as alone). A turn
is a burst of back-to-back runs (enough for about 30 ms, at least 3), of
which the first only warms the caches the other side's turn took over;
the turn's time is the median of the rest, the single-stream latency
kiln bench model and ort_bench.js measure. On machines whose speed
changes from minute to minute, two turns tens of milliseconds apart see
nearly the same machine, so the median of the per-round ratios says how
the two compare where separate benchmark runs disagree by 30% from one
try to the next.

    /usr/bin/python3 bench/peers/pair.py [--models resnet50,...] [--threads 1,2]
        [--rounds 40] [--warmup 3] [--burst N] [--pause-ms 100]
        [--lib build/rel/libkiln.so] [--kiln NAME=FILE.kiln] [--preload] [--json]

Models are bench/peers/out's (bench/peers/setup, export_models.py); kiln
imports the same .onnx in process, or opens FILE.kiln for NAME (--preload:
its weights in huge pages first, as kiln serve's zygote_preload). Both get
the same input. Prints per model and thread count the two medians and p90s
and the paired kiln/ORT ratio: its median and quartiles, and the p90 of
kiln's runs over the p90 of ORT's (below 1: kiln is faster). Only the
standard library is used; ONNX Runtime comes from bench/peers/setup.
"""

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
MAX_DIMS = 8


class IoInfo(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("ndim", ctypes.c_int),
                ("dims", ctypes.c_int64 * MAX_DIMS)]


class SessionOptions(ctypes.Structure):
    _fields_ = [("threads", ctypes.c_int), ("batch", ctypes.c_int)]


def quantile(xs, q):
    """The q-quantile of xs by linear interpolation between order statistics."""
    s = sorted(xs)
    if not s:
        raise ValueError("no values")
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def paired_summary(kiln_ms, ort_ms):
    """Statistics of runs taken in pairs: kiln_ms[i] and ort_ms[i] ran
    back to back. The ratio is kiln / ORT (below 1: kiln is faster)."""
    if len(kiln_ms) != len(ort_ms) or not kiln_ms:
        raise ValueError("need the same number (> 0) of kiln and ORT runs")
    ratios = [k / o for k, o in zip(kiln_ms, ort_ms)]
    return {
        "rounds": len(ratios),
        "kiln_median_ms": round(statistics.median(kiln_ms), 4),
        "kiln_p90_ms": round(quantile(kiln_ms, 0.9), 4),
        "ort_median_ms": round(statistics.median(ort_ms), 4),
        "ort_p90_ms": round(quantile(ort_ms, 0.9), 4),
        "ratio_median": round(statistics.median(ratios), 4),
        "ratio_q1": round(quantile(ratios, 0.25), 4),
        "ratio_q3": round(quantile(ratios, 0.75), 4),
        "ratio_p90": round(quantile(kiln_ms, 0.9) / quantile(ort_ms, 0.9), 4),
        "kiln_faster_rounds": sum(1 for r in ratios if r < 1),
    }


class Kiln:
    """One kiln session through libkiln's C API."""

    def __init__(self, lib, path, threads, preload):
        self.lib = lib
        L = lib
        L.kiln_last_error.restype = ctypes.c_char_p
        self.model = ctypes.c_void_p()
        if path.endswith(".kiln"):
            if preload:
                self.check(L.kiln_model_preload(path.encode(), ctypes.c_size_t(0)), "preload")
            self.check(L.kiln_model_open(path.encode(), 1, ctypes.byref(self.model)), "open")
        else:
            self.check(L.kiln_model_import_onnx(path.encode(), ctypes.byref(self.model)), "import")
        opts = SessionOptions(threads, 0)
        self.sess = ctypes.c_void_p()
        self.check(L.kiln_session_create(self.model, ctypes.byref(opts), ctypes.byref(self.sess)),
                   "session")
        self.inputs, self.outputs = [], []
        for get, keep in ((L.kiln_session_input, self.inputs),
                          (L.kiln_session_output, self.outputs)):
            info = IoInfo()
            self.check(get(self.sess, 0, ctypes.byref(info)), "shape")
            n = 1
            for d in info.dims[:info.ndim]:
                n *= d
            keep.append((list(info.dims[:info.ndim]), (ctypes.c_float * n)()))
        x = self.inputs[0][1]
        for i in range(len(x)):
            x[i] = ((i * 7919) % 255) / 255 - 0.5
        self.in_ptrs = (ctypes.c_void_p * 1)(ctypes.addressof(x))
        self.out_ptrs = (ctypes.c_void_p * 1)(ctypes.addressof(self.outputs[0][1]))

    def check(self, status, what):
        if status != 0:
            raise RuntimeError("kiln %s: %s" % (what, self.lib.kiln_last_error().decode()))

    def run(self, n=1):
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            st = self.lib.kiln_session_run(self.sess, self.in_ptrs, self.out_ptrs)
            out.append((time.perf_counter() - t0) * 1e3)
            self.check(st, "run")
        return out

    def close(self):
        self.lib.kiln_session_free(self.sess)
        self.lib.kiln_model_free(self.model)


class Ort:
    """One ONNX Runtime session in a node process (ort_pair.js); with
    profile_prefix, ORT's profiler on (layer_pair.py)."""

    def __init__(self, onnx, threads, input_name, dims, profile_prefix=None):
        self.p = subprocess.Popen(
            ["node", os.path.join(HERE, "ort_pair.js"), onnx, str(threads), input_name,
             ",".join(str(d) for d in dims)] + ([profile_prefix] if profile_prefix else []),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        line = self.p.stdout.readline().strip()
        if line != "ready":
            self.p.kill()
            raise RuntimeError("ort_pair.js did not start (said %r)" % line)

    def run(self, n=1):
        self.p.stdin.write("run %d\n" % n)
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError("ort_pair.js exited")
        return [float(x) for x in line.split()]

    def close(self):
        """Ends the session; returns what ort_pair.js said last (the
        profile's file name with a profile prefix, else "")."""
        try:
            self.p.stdin.write("quit\n")
            self.p.stdin.close()
        except OSError:
            pass
        last = self.p.stdout.read().strip()
        self.p.wait(timeout=30)
        return last


def load_lib(path, tool):
    """libkiln through ctypes, or exit with a one-line reason naming tool."""
    # OpenBLAS starts its threads as it loads, and an idle one spins for
    # about 0.1 s before it sleeps (through the other side's runs): read at
    # load only, as kiln bench model sets it.
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        sys.exit("%s: cannot load libkiln (%s); build it or give --lib" % (tool, e))
    lib.kiln_model_preload.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    return lib


def turn_ms(runs):
    """A turn's time: the median of its runs after the first (which warms
    the caches), or the one run of a burst of 1."""
    return statistics.median(runs[1:] if len(runs) > 1 else runs)


def measure(lib, item, onnx, kiln_path, threads, a):
    dims = item["input_shape"]
    k = Kiln(lib, kiln_path or onnx, threads, a.preload)
    if k.inputs[0][0] != dims:
        raise RuntimeError("%s: kiln's input is %s, the ONNX model's %s"
                           % (item["name"], k.inputs[0][0], dims))
    o = Ort(onnx, threads, item["input_name"], dims)
    try:
        for _ in range(a.warmup):
            one = max(k.run()[0], o.run()[0])
        burst = a.burst or max(3, min(50, int(30.0 / max(one, 0.01)) + 1))
        kiln_ms, ort_ms = [], []
        for r in range(a.rounds):
            order = (k, o) if r % 2 == 0 else (o, k)
            got = {}
            for side in order:
                time.sleep(a.pause_ms / 1e3)
                got[side] = turn_ms(side.run(burst))
            kiln_ms.append(got[k])
            ort_ms.append(got[o])
            if sys.stderr.isatty():
                print("\r%s, %d thread(s): round %d/%d" % (item["name"], threads, r + 1,
                                                         a.rounds), end="", file=sys.stderr)
        if sys.stderr.isatty():
            print(file=sys.stderr)
    finally:
        o.close()
        k.close()
    rec = {"tool": "kiln", "peer": "onnxruntime", "model": item["name"], "threads": threads,
           "batch": dims[0], "paired": True, "burst": burst}
    rec.update(paired_summary(kiln_ms, ort_ms))
    return rec


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="resnet50")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--burst", type=int, default=0,
                    help="runs per turn (default: enough for about 30 ms, 3 to 50)")
    ap.add_argument("--pause-ms", type=float, default=100.0)
    ap.add_argument("--dir", default=os.path.join(HERE, "out"))
    ap.add_argument("--lib", default=os.path.join(ROOT, "build", "rel", "libkiln.so"))
    ap.add_argument("--kiln", action="append", default=[],
                    help="NAME=FILE.kiln: kiln opens this file for model NAME")
    ap.add_argument("--preload", action="store_true")
    ap.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    a = ap.parse_args()
    if a.rounds < 1 or a.warmup < 1 or a.burst < 0 or a.pause_ms < 0:
        sys.exit("pair.py: --rounds >= 1, --warmup >= 1, --burst >= 0, --pause-ms >= 0")
    try:
        manifest = json.load(open(os.path.join(a.dir, "manifest.json")))
    except OSError as e:
        sys.exit("pair.py: %s (run bench/peers/setup and export_models.py)" % e)
    lib = load_lib(a.lib, "pair.py")
    kiln_files = dict(kv.split("=", 1) for kv in a.kiln)
    by_name = {m["name"]: m for m in manifest["models"]}
    rows = []
    for name in a.models.split(","):
        if name not in by_name:
            sys.exit("pair.py: no model %s in %s" % (name, a.dir))
        item = by_name[name]
        for t in (int(x) for x in a.threads.split(",")):
            rec = measure(lib, item, os.path.join(a.dir, item["onnx"]), kiln_files.get(name), t, a)
            rows.append(rec)
            if a.json:
                print(json.dumps(rec), flush=True)
    if not a.json:
        print("| model | threads | kiln p50 / p90 ms | ORT p50 / p90 ms | kiln/ORT per round: "
              "median (quartiles) | p90 / p90 | kiln faster |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print("| %s | %d | %.2f / %.2f | %.2f / %.2f | **%.3f** (%.3f-%.3f) | %.3f | %d of %d |"
                  % (r["model"], r["threads"], r["kiln_median_ms"], r["kiln_p90_ms"],
                     r["ort_median_ms"], r["ort_p90_ms"], r["ratio_median"], r["ratio_q1"],
                     r["ratio_q3"], r["ratio_p90"], r["kiln_faster_rounds"], r["rounds"]))


if __name__ == "__main__":
    main()
