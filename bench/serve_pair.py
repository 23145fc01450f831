#!/usr/bin/env python3
"""Paired serving A/B: two kiln binaries serve the shipped MNIST model at once
(each its own `kiln serve` on 127.0.0.1 with the shipped function settings:
2 warm workers, concurrency 8, max_batch 8), and wrk loads one, then the
other, round after round. The machines this project runs on change speed
from minute to minute by more than most changes gain; runs of the two
binaries seconds apart see nearly the same machine, so the median of the
per-round ratios says which is faster where separate runs cannot.

  python3 bench/serve_pair.py A_KILN B_KILN [--rounds 8] [--conns 32] [--seconds 3]
                             [--concurrency 8[,8]]

--concurrency CA,CB gives A and B their own concurrency (and max_batch, set
equal), so one binary given twice compares two settings.

Prints each round's req/s and B/A, then the medians and the server + worker
CPU per request (wrk: Debian package wrk)."""
import argparse
import os
import statistics
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import kilnserver  # noqa: E402
import serve_bench  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--concurrency", default="8",
                    help="concurrency = max_batch of A[,B] (default 8 for both, as shipped)")
    a = ap.parse_args()
    conc = [int(c) for c in a.concurrency.split(",")]
    conc = (conc + conc)[:2] if len(conc) == 1 else conc
    cfg = """
server:
  listen: 127.0.0.1:0
  auth: false
  limits: {max_connections: 4096}
functions:
  - {name: mnist, kind: predict, model: %s, min_warm: 2, max_workers: 2, queue_limit: 1024,
     concurrency: %d, max_batch: %d}
"""
    servers = []
    try:
        for kiln, c in zip((a.a, a.b), conc):
            kilnserver.KILN = os.path.abspath(kiln)
            s = kilnserver.Server(cfg % (os.path.join(ROOT, "models/mnist.kiln"), c, c))
            servers.append(s)
            serve_bench.wait_ready(s, "mnist", 2)
            serve_bench.timed(s, "mnist", open(serve_bench.DIGIT, "rb").read(), "image/png")
        rps, cpu, ratio = ([], []), ([], []), []
        for r in range(a.rounds):
            got = {}
            for i in ((0, 1) if r % 2 == 0 else (1, 0)):
                s = servers[i]
                got[i] = serve_bench.wrk("http://%s:%d/function/mnist" % (s.host, s.port),
                                         a.seconds, a.conns, serve_bench.DIGIT, "image/png",
                                         s.proc.pid)
                rps[i].append(got[i]["rps"])
                cpu[i].append(got[i]["cpu_us_per_req"] or 0.0)
            ratio.append(got[1]["rps"] / got[0]["rps"])
            print("round %d: A %.0f req/s, B %.0f req/s, B/A %.3f"
                  % (r + 1, got[0]["rps"], got[1]["rps"], ratio[-1]), flush=True)
        print("A median %.0f req/s (%.0f-%.0f), B median %.0f req/s (%.0f-%.0f); "
              "paired B/A median %.3f" % (statistics.median(rps[0]), min(rps[0]), max(rps[0]),
                                          statistics.median(rps[1]), min(rps[1]), max(rps[1]),
                                          statistics.median(ratio)))
        print("CPU per request (server + workers): A median %.1f us, B median %.1f us"
              % (statistics.median(cpu[0]), statistics.median(cpu[1])))
    finally:
        for s in servers:
            s.stop()
            s.cleanup()


if __name__ == "__main__":
    main()
