#!/usr/bin/python3
"""Times PyTorch (CPU) on the models and conv layers export_models.py wrote,
printing one JSON object per line, the same shape as ort_bench.js:
  {"peer":"pytorch", "model"|"layer":..., "threads":N, "batch":B,
   "median_ms":..., "p90_ms":..., "gflops":..., ...}

    /usr/bin/python3 bench/peers/torch_bench.py [--dir bench/peers/out]
        [--threads 1,2] [--batch 1] [--warmup 5] [--runs 20]
        [--models all|none|NAME,...] [--layers all|none|NAME,...]
        [--layer-runs 10] [--mode eager|jit]

Each thread count N is torch.set_num_threads(N) (intra-op; inter-op is 1).
--mode eager runs the nn.Module under torch.inference_mode(); --mode jit
traces it, freezes it and applies torch.jit.optimize_for_inference (BN
folded into conv, as kiln does); its records say "pytorch-jit".
The model's batch-1 output is checked against the exported reference first
(rel_l2 in the record).
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import export_models  # noqa: E402


def percentile(sorted_t, p):
    """Nearest-rank percentile, as in ort_bench.js."""
    import math
    i = min(len(sorted_t) - 1, max(0, math.ceil(p / 100 * len(sorted_t)) - 1))
    return sorted_t[i]


def time_fn(fn, x, warmup, runs):
    for _ in range(warmup):
        fn(x)
    t = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(x)
        t.append((time.perf_counter() - t0) * 1e3)
    t.sort()
    return percentile(t, 50), percentile(t, 90), t[0]


def prepare(module, x, mode):
    module = module.eval()
    if mode == "jit":
        with torch.inference_mode():
            traced = torch.jit.trace(module, x)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced))
    return module


def select(items, spec, what):
    if spec == "none":
        return []
    if spec == "all":
        return items
    want = spec.split(",")
    names = {i["name"] for i in items}
    for w in want:
        if w not in names:
            sys.exit(f"torch_bench: no {what} named {w} in the manifest")
    return [i for i in items if i["name"] in want]


def record(peer, kind, item, threads, batch, med, p90, mn, runs, extra=None):
    flops = item["flops"] * batch
    rec = {"peer": peer, "version": torch.__version__, kind: item["name"],
           "threads": threads, "batch": batch}
    rec.update(extra or {})
    rec.update({"median_ms": round(med, 3), "p90_ms": round(p90, 3), "min_ms": round(mn, 3),
                "gflops": round(flops / (med * 1e6), 2), "flops": flops, "runs": runs})
    if kind == "layer":
        rec["count"] = item["count"]
    print(json.dumps(rec), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=os.path.join(HERE, "out"))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batch", default="1")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--models", default="all")
    ap.add_argument("--layers", default="none")
    ap.add_argument("--layer-warmup", type=int, default=3)
    ap.add_argument("--layer-runs", type=int, default=10)
    ap.add_argument("--mode", choices=["eager", "jit"], default="eager")
    args = ap.parse_args()
    mpath = os.path.join(args.dir, "manifest.json")
    if not os.path.exists(mpath):
        sys.exit(f"torch_bench: {mpath} missing; run bench/peers/export_models.py first")
    with open(mpath) as f:
        man = json.load(f)
    torch.set_num_interop_threads(1)
    peer = "pytorch" if args.mode == "eager" else "pytorch-jit"
    threads = [int(s) for s in args.threads.split(",")]
    batches = [int(s) for s in args.batch.split(",")]
    models = select(man["models"], args.models, "model")
    layers = select(man.get("layers", []), args.layers, "layer")

    built = {}
    for m in models:
        ctor = export_models.MODELS[m["name"]][0]
        net = ctor()
        net.load_state_dict(torch.load(os.path.join(args.dir, m["state_dict"])))
        built[m["name"]] = net.eval()
    gen = torch.Generator().manual_seed(12345)
    convs = {}
    for l in layers:
        c = nn.Conv2d(l["cin"], l["cout"], l["kh"], l["stride"], l["pad"], bias=True)
        convs[l["name"]] = c.eval()

    for th in threads:
        torch.set_num_threads(th)
        for b in batches:
            for m in models:
                net = built[m["name"]]
                extra = {}
                x = torch.from_numpy(np.load(os.path.join(args.dir, m["input"])))
                fn = prepare(net, x.repeat(b, 1, 1, 1), args.mode)
                with torch.inference_mode():
                    if b == 1:
                        want = np.load(os.path.join(args.dir, m["output"]))
                        got = fn(x).numpy()
                        extra["rel_l2"] = float("%.2e" % (np.linalg.norm(got - want) /
                                                          max(np.linalg.norm(want), 1e-30)))
                    xb = torch.randn(b, *m["input_shape"][1:], generator=gen)
                    med, p90, mn = time_fn(fn, xb, args.warmup, max(1, args.runs))
                record(peer, "model", m, th, b, med, p90, mn, args.runs, extra)
            for l in layers:
                xb = torch.randn(b, l["cin"], l["h"], l["w"], generator=gen)
                fn = prepare(convs[l["name"]], xb, args.mode)
                with torch.inference_mode():
                    med, p90, mn = time_fn(fn, xb, args.layer_warmup, max(1, args.layer_runs))
                record(peer, "layer", l, th, b, med, p90, mn, args.layer_runs)


if __name__ == "__main__":
    main()
