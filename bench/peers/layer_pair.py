#!/usr/bin/python3
"""kiln's layers against ONNX Runtime's nodes, run by run: pair.py's two
live sessions taking turns, with kiln's per-layer profile
(kiln_session_profile) and ORT's profiler (ort_pair.js PREFIX) on, so each
round gives both sides' time per conv layer for two runs milliseconds
apart. Where whole-model ratios say only how far apart the two are, this
says in which layers.

    /usr/bin/python3 bench/peers/layer_pair.py [--model resnet50] [--threads 1]
        [--rounds 40] [--burst 4] [--kiln FILE.kiln] [--preload] [--top 15]
        [--lib build/rel/libkiln.so] [--dir bench/peers/out] [--json]

A round is a burst of runs on each side (the order swapped every round);
the burst's last run is the one compared. kiln's conv layers and ORT's
Conv nodes (after its fusions and NCHWc rewrite) are paired by their
parameter count and output size (match_convs()); where they do not pair
up, the tool says so and stops. Prints, per group of layers (the first part of kiln's layer
name: conv1, layer1, ...) and for all of them, the two sides' median time
per run and the median of the per-round ratios (below 1: kiln is faster),
then the layers where kiln loses the most time. ORT's profile adds a
little to its time: compare groups with each other more than with 1.
Standard library only; ORT comes from bench/peers/setup.
"""

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pair  # noqa: E402

LAYER_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p,
                            ctypes.c_char_p, ctypes.c_int64, ctypes.c_int64)


def ort_runs(events):
    """Per model run (in order), the list of (op, name, ms) of its nodes in
    the order they started, from an ORT profile's events."""
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    nodes = sorted((e for e in events
                    if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")),
                   key=lambda e: e["ts"])
    out, i = [], 0
    for r in runs:
        end = r["ts"] + r["dur"]
        got = []
        while i < len(nodes) and nodes[i]["ts"] < r["ts"]:
            i += 1
        while i < len(nodes) and nodes[i]["ts"] <= end:
            e = nodes[i]
            args = e.get("args", {})
            got.append((args.get("op_name", ""), e["name"][:-len("_kernel_time")], e["dur"] / 1e3,
                        int(args.get("parameter_size", 0)) // 4,
                        int(args.get("output_size", 0)) // 4))
            i += 1
        out.append(got)
    return out


def match_convs(kiln_layers, ort_nodes):
    """Index pairs (kiln layer, ORT node) of the convs of one run: each of
    kiln's conv layers (kiln_layers: (op, params, output floats) in layer
    order) with the first ORT Conv node not yet taken that has the same
    parameters (weights and bias) and output size. The two do not run a
    block's convs in the same order (ORT runs ResNet50's projection
    shortcut before conv3 and adds into conv3; kiln the other way round);
    where two convs have the same shapes, the one kiln runs first takes
    the one ORT runs first. None when a conv finds no partner or ORT has
    convs left over."""
    free = [i for i, n in enumerate(ort_nodes) if n[0] in ("Conv", "FusedConv")]
    pairs = []
    for ki, (op, params, out) in enumerate(kiln_layers):
        if not op.startswith("Conv"):
            continue
        oi = next((i for i in free if ort_nodes[i][3] == params and ort_nodes[i][4] == out), None)
        if oi is None:
            return None
        free.remove(oi)
        pairs.append((ki, oi))
    return pairs if pairs and not free else None


def group_of(name):
    """A layer's group: the first part of its name ("/layer1/layer1.0/..." -> layer1)."""
    parts = [p for p in name.split("/") if p]
    return parts[0] if parts else name


def summarise(names, rounds_k, rounds_o, pairs):
    """Per group and overall: medians of each side's time per run and of
    the per-round kiln / ORT ratio; and per layer."""
    groups = {}
    for ki, _ in pairs:
        groups.setdefault(group_of(names[ki]), []).append(ki)
    groups["all convs"] = [ki for ki, _ in pairs]
    ort_of = dict(pairs)
    rows = []
    for g, layers in groups.items():
        ks = [sum(rk[i] for i in layers) for rk in rounds_k]
        os_ = [sum(ro[ort_of[i]][2] for i in layers) for ro in rounds_o]
        ratios = [a / b for a, b in zip(ks, os_) if b > 0]
        rows.append({"group": g, "layers": len(layers), "kiln_ms": statistics.median(ks),
                     "ort_ms": statistics.median(os_), "ratio": statistics.median(ratios),
                     "ratio_q1": pair.quantile(ratios, 0.25),
                     "ratio_q3": pair.quantile(ratios, 0.75)})
    per_layer = []
    for ki, oi in pairs:
        ks = [rk[ki] for rk in rounds_k]
        os_ = [ro[oi][2] for ro in rounds_o]
        per_layer.append({"layer": names[ki], "kiln_ms": statistics.median(ks),
                          "ort_ms": statistics.median(os_),
                          "ratio": statistics.median([a / b for a, b in zip(ks, os_) if b > 0])})
    per_layer.sort(key=lambda r: r["ort_ms"] - r["kiln_ms"])
    return rows, per_layer


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--burst", type=int, default=4)
    ap.add_argument("--kiln", default="", help="FILE.kiln for kiln to open (default: import the ONNX)")
    ap.add_argument("--preload", action="store_true")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--dir", default=os.path.join(HERE, "out"))
    ap.add_argument("--lib", default=os.path.join(pair.ROOT, "build", "rel", "libkiln.so"))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.rounds < 2 or a.burst < 1 or a.threads < 1:
        sys.exit("layer_pair.py: --rounds >= 2, --burst >= 1, --threads >= 1")
    try:
        manifest = json.load(open(os.path.join(a.dir, "manifest.json")))
    except OSError as e:
        sys.exit("layer_pair.py: %s (run bench/peers/setup and export_models.py)" % e)
    item = {m["name"]: m for m in manifest["models"]}.get(a.model)
    if not item:
        sys.exit("layer_pair.py: no model %s in %s" % (a.model, a.dir))
    onnx = os.path.join(a.dir, item["onnx"])
    lib = pair.load_lib(a.lib, "layer_pair.py")
    lib.kiln_session_layer_ns.restype = ctypes.c_uint64
    lib.kiln_session_layer_ns.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.kiln_session_layers.argtypes = [ctypes.c_void_p, LAYER_FN, ctypes.c_void_p]
    lib.kiln_session_profile.argtypes = [ctypes.c_void_p, ctypes.c_int]

    k = pair.Kiln(lib, a.kiln or onnx, a.threads, a.preload)
    names, layers = [], []

    def on_layer(ctx, name, op, shape, params, flops):
        names.append(name.decode())
        out = 1
        for d in shape.decode().split("x"):
            out *= int(d) if d.isdigit() else 1
        layers.append((op.decode(), params, out))

    cb = LAYER_FN(on_layer)
    lib.kiln_session_layers(k.sess, cb, None)
    tmp = tempfile.mkdtemp(prefix="kiln-layer-pair-")
    dims = item["input_shape"]
    try:
        o = pair.Ort(onnx, a.threads, item["input_name"], dims, os.path.join(tmp, "ort"))
    except RuntimeError as e:
        sys.exit("layer_pair.py: %s" % e)
    rounds_k, n_ort, prof = [], 0, ""
    try:
        k.run(2)
        o.run(2)
        n_ort += 2
        for r in range(a.rounds):
            for side in (("k", "o") if r % 2 == 0 else ("o", "k")):
                time.sleep(0.01)
                if side == "k":
                    k.run(a.burst - 1)
                    lib.kiln_session_profile(k.sess, 0)
                    lib.kiln_session_profile(k.sess, 1)
                    k.run(1)
                    rounds_k.append([lib.kiln_session_layer_ns(k.sess, i) / 1e6
                                     for i in range(len(names))])
                    lib.kiln_session_profile(k.sess, 0)
                else:
                    o.run(a.burst)
                    n_ort += a.burst
            if sys.stderr.isatty():
                print("\rround %d/%d" % (r + 1, a.rounds), end="", file=sys.stderr)
        if sys.stderr.isatty():
            print(file=sys.stderr)
    finally:
        k.close()
        prof = o.close()
    try:
        events = json.load(open(prof))
    except (OSError, ValueError) as e:
        sys.exit("layer_pair.py: no ORT profile (%s)" % e)
    finally:
        for f in os.listdir(tmp):
            os.remove(os.path.join(tmp, f))
        os.rmdir(tmp)
    runs = ort_runs(events)
    if len(runs) != n_ort:
        sys.exit("layer_pair.py: ORT's profile has %d runs, %d were made" % (len(runs), n_ort))
    # each round's ORT burst's last run: runs after the 2 warm-up ones
    rounds_o = [runs[2 + a.burst * (r + 1) - 1] for r in range(a.rounds)]
    pairs = match_convs(layers, rounds_o[0])
    if pairs is None:
        sys.exit("layer_pair.py: kiln's %d conv layers and ORT's %d Conv nodes do not pair up by "
                 "parameters and output size" % (sum(op.startswith("Conv") for op, _, _ in layers),
                                                  sum(n[0] in ("Conv", "FusedConv")
                                                      for n in rounds_o[0])))
    rows, per_layer = summarise(names, rounds_k, rounds_o, pairs)
    if a.json:
        print(json.dumps({"model": a.model, "threads": a.threads, "rounds": a.rounds,
                          "groups": rows, "layers": per_layer}))
        return
    print("%s, %d thread(s), %d rounds: kiln's conv layers against ORT's Conv nodes"
          % (a.model, a.threads, a.rounds))
    print("| group | layers | kiln ms | ORT ms | kiln/ORT per round: median (quartiles) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| %s | %d | %.3f | %.3f | **%.3f** (%.3f-%.3f) |" % (
            r["group"], r["layers"], r["kiln_ms"], r["ort_ms"], r["ratio"], r["ratio_q1"],
            r["ratio_q3"]))
    print("\nwhere kiln loses the most (median ms per run):")
    for r in per_layer[:a.top]:
        if r["kiln_ms"] <= r["ort_ms"]:
            break
        print("  %-48s kiln %.3f  ORT %.3f  ratio %.3f" % (r["layer"], r["kiln_ms"], r["ort_ms"],
                                                          r["ratio"]))


if __name__ == "__main__":
    main()
