#!/usr/bin/env python3
"""Memory of warm workers: N warm ResNet50 workers' total PSS against one's.

A worker maps its .kiln model read-only and shared (MAP_SHARED), so N
workers of one model should hold one copy of the weights in the page cache
and each its own activation arena and scratch: PSS (proportional set size:
a page shared by k processes counts 1/k in each) summed over the workers
grows by the private part only.

    python3 bench/mem_bench.py [--kiln build/rel/src/cli/kiln] [--workers 4] [--json]

Starts `kiln serve` twice on an ephemeral port (1 warm worker, then N),
runs enough predictions that every worker has served some, then reads each
worker's /proc/PID/smaps_rollup. Prints one line per configuration and the
ratio (target: N=4 total <= 1.5x one worker's PSS).

The zygote (the process workers are forked from) is counted with the
workers: it preloads the model into huge pages that its workers share
(kiln_model_preload), so part of the shared copy's PSS is charged to it.
"""
import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import kilnserver  # noqa: E402

CONFIG = """
server:
  listen: 127.0.0.1:0
  auth: false
functions:
  - {name: resnet50, kind: predict, model: %s, min_warm: %d, max_workers: %d,
     concurrency: 1, threads: 1, timeout: 60s, memory_limit: 1GiB, idle_timeout: 10m}
"""


def rollup(pid):
    """{field: KiB} from /proc/PID/smaps_rollup."""
    out = {}
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[-1] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    return out


def zygote_pid(server_pid):
    """The server's `kiln worker --zygote` child, or None."""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == server_pid and b"--zygote" in cmd:
            return int(d)
    return None


def ready_workers(s):
    _, body = s.json("GET", "/v1/functions")
    f = next(f for f in body["functions"] if f["name"] == "resnet50")
    return f["workers"]


def measure(kiln, model, n, image, rounds):
    kilnserver.KILN = kiln
    s = kilnserver.Server(CONFIG % (model, n, n))
    try:
        deadline = time.monotonic() + 120
        while ready_workers(s).get("idle", 0) < n:
            if time.monotonic() > deadline:
                raise RuntimeError("%d workers did not become ready: %s" % (n, s.stderr()))
            time.sleep(0.1)
        seen = set()

        def one(_):
            st, h, body = s.request("POST", "/function/resnet50", image,
                                    {"Content-Type": "image/png"}, timeout=120)
            if st != 200:
                raise RuntimeError("predict: %d %r" % (st, body[:200]))
            return int(h["x-kiln-worker"])
        # n at once, so each of the n workers takes one; repeated so that
        # every worker has run (arena, scratch, BLAS buffers touched).
        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            for _ in range(rounds):
                seen.update(ex.map(one, range(n)))
                if len(seen) >= n and _ >= 1:
                    break
        if len(seen) != n:
            raise RuntimeError("expected %d distinct workers, saw %d" % (n, len(seen)))
        per = {pid: rollup(pid) for pid in sorted(seen)}
        z = zygote_pid(s.proc.pid)
        zy = rollup(z) if z else {}
        total = {k: sum(r.get(k, 0) for r in list(per.values()) + [zy])
                 for k in ("Pss", "Rss", "Pss_Anon", "Pss_File", "Private_Dirty", "Shared_Clean")}
        return {"workers": n, "pids": sorted(seen), "per_worker_pss_kb": [r["Pss"] for r in per.values()],
                "zygote_pss_kb": zy.get("Pss", 0),
                "total_kb": total}
    finally:
        s.stop()
        s.cleanup()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", default=os.path.join(ROOT, "build/rel/src/cli/kiln"))
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="kiln-mem-")
    model = os.path.join(tmp, "resnet50.kiln")
    subprocess.run([a.kiln, "import", os.path.join(ROOT, "models/resnet50.yaml"), "-o", model,
                    "--seed", "1"], check=True, capture_output=True)
    with open(os.path.join(ROOT, "bench/scenarios/payloads/rgb224.png"), "rb") as f:
        image = f.read()
    one = measure(a.kiln, model, 1, image, a.rounds)
    many = measure(a.kiln, model, a.workers, image, a.rounds)
    ratio = many["total_kb"]["Pss"] / one["total_kb"]["Pss"]
    model_mb = os.path.getsize(model) / 2**20
    os.unlink(model)
    os.rmdir(tmp)
    if a.json:
        print(json.dumps({"model_mb": model_mb, "one": one, "many": many, "ratio": ratio}, indent=2))
        return
    print("model file %.1f MiB" % model_mb)
    for r in (one, many):
        t = r["total_kb"]
        print("%d warm ResNet50 worker%s + zygote: PSS total %.1f MiB (per worker %s MiB, zygote "
              "%.1f; anon %.1f, file %.1f), RSS total %.1f MiB" % (
                  r["workers"], "" if r["workers"] == 1 else "s", t["Pss"] / 1024,
                  "/".join("%.1f" % (p / 1024) for p in r["per_worker_pss_kb"]),
                  r["zygote_pss_kb"] / 1024,
                  t["Pss_Anon"] / 1024, t["Pss_File"] / 1024, t["Rss"] / 1024))
    print("PSS of %d workers / PSS of 1 (each with the zygote): %.2fx (target <= 1.5x)"
          % (a.workers, ratio))


if __name__ == "__main__":
    main()
