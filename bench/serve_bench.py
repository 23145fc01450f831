#!/usr/bin/env python3
"""Benchmarks kiln serve's warm path and cold starts on this machine.

    python3 bench/serve_bench.py [--kiln build/rel/src/cli/kiln] [--seconds 5] [--cold 10]
                                 [--exec] [--json OUT.json] [--concurrency N] [--max-batch B]
                                 [--conns 1,8,16,32] [--wrk-only]

Warm path: the shipped MNIST classifier (models/mnist.kiln) answering a
28x28 PNG digit over HTTP keep-alive, driven by wrk (Debian package wrk;
`scripts/deps --bench`) and by `kiln load`. Server overhead is the HTTP
latency `kiln load` measured minus the exec time the server reports for
the same request (X-Kiln-Exec-Us: dispatch to the worker until its result,
so the overhead is HTTP parsing, routing, scheduling and the response, on
both sides of the socket). The model's compute alone is `kiln bench model`.

Cold start: MNIST and ResNet50 (models/resnet50.yaml, seeded weights)
functions scaled to zero (idle_timeout 50ms), one request each time after
the worker has exited: request arrival to response, measured by a client
on a new connection, against the same client's warm latency.

wrk runs also report the CPU time (user + system, from /proc) that the
server, its zygote and its workers spent per request: on a shared machine
it varies less than the throughput does. --concurrency sets the mnist and
echo functions' in-flight invocations per worker (and with it the rounds a
worker batches, up to --max-batch).

Prints one line per measurement; --json also writes them. Uses ephemeral
ports only.
"""
import argparse
import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import kilnserver  # noqa: E402

DIGIT = os.path.join(ROOT, "bench/scenarios/payloads/digit28.png")
PHOTO = os.path.join(ROOT, "bench/scenarios/payloads/rgb224.png")


def config(zygote, mnist, resnet, preload=None, concurrency=None, max_batch=None):
    extra = ""
    if concurrency is not None:
        extra += ", concurrency: %d" % concurrency
    if max_batch is not None:
        extra += ", max_batch: %d" % max_batch
    return """
server:
  listen: 127.0.0.1:0
  auth: false
  zygote: %s%s
  limits: {max_connections: 4096}
functions:
  - {name: echo, kind: echo, min_warm: 1, max_workers: 1, queue_limit: 1024%s}
  - {name: mnist, kind: predict, model: %s, min_warm: 2, max_workers: 2, queue_limit: 1024%s}
  - {name: cold-mnist, kind: predict, model: %s, max_workers: 1, idle_timeout: 50ms}
  - {name: resnet50, kind: predict, model: %s, min_warm: 1, max_workers: 1, timeout: 60s,
     memory_limit: 1GiB}
  - {name: cold-resnet50, kind: predict, model: %s, max_workers: 1, idle_timeout: 50ms,
     timeout: 60s, memory_limit: 1GiB}
""" % ("true" if zygote else "false",
       "\n  zygote_preload: %s" % preload if preload is not None else "", extra, mnist, extra,
       mnist, resnet, resnet)


def pct(values, p):
    """Linear interpolation between closest ranks (as numpy and k6)."""
    v = sorted(values)
    if not v:
        return float("nan")
    k = (len(v) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def workers(s, name):
    _, body = s.json("GET", "/v1/functions")
    f = next(f for f in body["functions"] if f["name"] == name)
    return f["workers"]


def wait_ready(s, name, n, timeout=120):
    deadline = time.monotonic() + timeout
    while workers(s, name).get("idle", 0) < n:
        if time.monotonic() > deadline:
            raise RuntimeError("%s: %d workers not ready: %s" % (name, n, s.stderr()))
        time.sleep(0.05)


def timed(s, name, body, ctype):
    t0 = time.perf_counter()
    st, h, data = s.request("POST", "/function/" + name, body, {"Content-Type": ctype},
                            timeout=120)
    ms = (time.perf_counter() - t0) * 1e3
    if st != 200:
        raise RuntimeError("%s: status %d %r" % (name, st, data[:200]))
    return ms, h


def cold_starts(s, name, body, ctype, n):
    total, init = [], []
    for _ in range(n):
        deadline = time.monotonic() + 30
        while sum(workers(s, name).values()) and time.monotonic() < deadline:
            time.sleep(0.02)
        ms, h = timed(s, name, body, ctype)
        if h.get("x-kiln-start") != "cold":
            raise RuntimeError("%s: expected a cold start, got %s" % (name, h.get("x-kiln-start")))
        total.append(ms)
        init.append(int(h["x-kiln-init-us"]) / 1e3)
    return total, init


def warm_client_ms(s, name, body, ctype, n):
    """The same client's latency on a warm worker (new connection each)."""
    out = []
    for _ in range(n):
        ms, h = timed(s, name, body, ctype)
        if h.get("x-kiln-start") == "warm":
            out.append(ms)
    return out


def cpu_ticks(pid):
    """CPU clock ticks (user + system) of pid and all its descendants."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open("/proc/%d/stat" % p) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            with open("/proc/%d/task/%d/children" % (p, p)) as f:
                todo += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return total


def wrk(url, seconds, conns, body_file=None, ctype=None, pid=None):
    args = ["wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds, "--latency"]
    script = None
    if body_file:
        fd, script = tempfile.mkstemp(suffix=".lua")
        with os.fdopen(fd, "w") as f:
            f.write('wrk.method = "POST"\nlocal f = io.open(%s, "rb")\nwrk.body = f:read("*a")\n'
                    'f:close()\nwrk.headers["Content-Type"] = "%s"\n' % (json.dumps(body_file), ctype))
        args += ["-s", script]
    try:
        t0 = cpu_ticks(pid) if pid else 0
        out = subprocess.run(args + [url], capture_output=True, text=True, timeout=seconds + 60)
        t1 = cpu_ticks(pid) if pid else 0
    finally:
        if script:
            os.unlink(script)
    text = out.stdout
    n = re.search(r"(\d+) requests in", text)
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not m:
        raise RuntimeError("wrk: %s %s" % (text, out.stderr))

    def p(q):
        m = re.search(r"\s%s%%\s+([\d.]+)(us|ms|s)\b" % q, text)
        v = float(m.group(1))
        return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errs = re.search(r"Socket errors: (.*)", text)
    cpu_us = (t1 - t0) * 1e6 / os.sysconf("SC_CLK_TCK") / int(n.group(1)) if pid and n else None
    return {"rps": float(m.group(1)), "p50_ms": p(50), "p99_ms": p(99), "cpu_us_per_req": cpu_us,
            "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errs.group(1).strip() if errs else ""}


def kiln_load(kiln, url, tmp, vus, seconds, path, body_file, ctype):
    """Runs kiln load with `vus` closed-loop VUs; latency, exec and overhead
    percentiles over the 200 responses, from requests.csv."""
    scen = os.path.join(tmp, "warm.yaml")
    with open(scen, "w") as f:
        f.write("name: warm\nstart_vus: %d\nstages: [{target: %d, duration: %ds}]\n"
                "keep_alive: true\nrequests:\n"
                "  - {name: f, path: %s, headers: {Content-Type: %s}, body_file: %s}\n"
                % (vus, vus, seconds, path, ctype, body_file))
    out = os.path.join(tmp, "load-%d" % vus)
    r = subprocess.run([kiln, "load", "--url", url, "--scenario", scen, "--out", out, "--quiet"],
                       capture_output=True, text=True, timeout=seconds + 120)
    if r.returncode:
        raise RuntimeError("kiln load: %s" % r.stderr)
    with open(os.path.join(out, "requests.csv"), newline="") as f:
        rows = [row for row in csv.DictReader(f) if row["status"] == "200" and row["exec_us"]]
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    shutil.rmtree(out, ignore_errors=True)
    lat = [int(x["latency_us"]) for x in rows]
    ex = [int(x["exec_us"]) for x in rows]
    ov = [int(x["latency_us"]) - int(x["exec_us"]) for x in rows]
    # Without the time spent waiting for a free worker (X-Kiln-Queue-Us):
    # with more VUs than workers, the wait is queueing, not overhead.
    ovq = [int(x["latency_us"]) - int(x["exec_us"]) - int(x["queue_us"] or 0) for x in rows]
    qu = [int(x["queue_us"] or 0) for x in rows]
    return {"vus": vus, "requests": summary["metrics"]["http_reqs"]["count"],
            "rps": summary["metrics"]["http_reqs"]["rate"],
            "failed": summary["metrics"]["http_req_failed"]["passes"],
            "p50_us": pct(lat, 50), "p99_us": pct(lat, 99),
            "exec_p50_us": pct(ex, 50), "overhead_p50_us": pct(ov, 50),
            "overhead_p99_us": pct(ov, 99), "queue_p50_us": pct(qu, 50),
            "overhead_minus_queue_p50_us": pct(ovq, 50),
            "overhead_minus_queue_p99_us": pct(ovq, 99)}


def bench_model(kiln, model):
    r = subprocess.run([kiln, "bench", "model", model, "--threads", "1", "--runs", "100",
                        "--json"], capture_output=True, text=True, timeout=600)
    try:
        j = json.loads(r.stdout)
    except ValueError:
        return None
    return j.get("median_ms")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kiln", default=os.path.join(ROOT, "build/rel/src/cli/kiln"))
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--cold", type=int, default=10)
    ap.add_argument("--exec", action="store_true", help="cold starts without the zygote too")
    ap.add_argument("--json", help="write the results as JSON here")
    ap.add_argument("--zygote-preload", metavar="SIZE",
                    help="server.zygote_preload (e.g. 1GiB: the zygote preloads the models into "
                         "huge pages its workers share; default: the server's, 0 = off)")
    ap.add_argument("--concurrency", type=int,
                    help="concurrency of the mnist and echo functions (default: the server's, 1)")
    ap.add_argument("--max-batch", type=int, help="their max_batch (default: the server's)")
    ap.add_argument("--conns", default="1,8",
                    help="wrk connection counts for the MNIST runs (default 1,8)")
    ap.add_argument("--wrk-only", action="store_true",
                    help="only the wrk runs: no kiln load, no cold starts")
    a = ap.parse_args()
    kiln = os.path.abspath(a.kiln)
    kilnserver.KILN = kiln
    have_wrk = shutil.which("wrk") is not None
    tmp = tempfile.mkdtemp(prefix="kiln-serve-bench-")
    results = {"load_average": os.getloadavg(), "cores": os.cpu_count()}
    try:
        mnist = os.path.join(ROOT, "models/mnist.kiln")
        resnet = os.path.join(tmp, "resnet50.kiln")
        subprocess.run([kiln, "import", os.path.join(ROOT, "models/resnet50.yaml"), "-o", resnet,
                        "--seed", "1"], check=True, capture_output=True)
        digit = open(DIGIT, "rb").read()
        photo = open(PHOTO, "rb").read()
        compute = {} if a.wrk_only else {"mnist": bench_model(kiln, mnist),
                                         "resnet50": bench_model(kiln, resnet)}
        results["compute_p50_ms"] = compute
        for name, ms in compute.items():
            if ms is not None:
                print("compute alone  %-9s kiln bench model --threads 1: p50 %.3f ms" % (name, ms))
        for zygote in ((True, False) if a.exec else (True,)):
            label = "zygote" if zygote else "exec"
            s = kilnserver.Server(config(zygote, mnist, resnet, a.zygote_preload,
                                         a.concurrency, a.max_batch))
            try:
                base = "http://%s:%d" % (s.host, s.port)
                wait_ready(s, "mnist", 2)
                wait_ready(s, "resnet50", 1)
                if zygote:
                    timed(s, "mnist", digit, "image/png")  # first runs: arena, caches
                    timed(s, "resnet50", photo, "image/png")
                    for vus in (() if a.wrk_only else (1, 8)):
                        r = kiln_load(kiln, base, tmp, vus, a.seconds, "/function/mnist", DIGIT,
                                      "image/png")
                        results["kiln_load_mnist_%dvu" % vus] = r
                        print("warm mnist     kiln load %d VU%s %ds: %.0f req/s, p50 %.0f us, "
                              "p99 %.0f us; exec p50 %.0f us; overhead (latency - exec) p50 %.0f "
                              "us, p99 %.0f us; queue p50 %.0f us; latency - exec - queue p50 %.0f "
                              "us, p99 %.0f us; failed %d"
                              % (vus, "" if vus == 1 else "s", a.seconds, r["rps"], r["p50_us"],
                                 r["p99_us"], r["exec_p50_us"], r["overhead_p50_us"],
                                 r["overhead_p99_us"], r["queue_p50_us"],
                                 r["overhead_minus_queue_p50_us"],
                                 r["overhead_minus_queue_p99_us"], r["failed"]))
                    if have_wrk:
                        for what, path, body, ct, c in [
                                ("mnist", "/function/mnist", DIGIT, "image/png", int(c))
                                for c in a.conns.split(",")] + [
                                ("echo", "/function/echo", os.path.join(ROOT,
                                 "bench/scenarios/payloads/echo.json"), "application/json", 8),
                                ("healthz", "/healthz", None, None, 8)]:
                            r = wrk(base + path, a.seconds, c, body, ct, s.proc.pid)
                            results["wrk_%s_c%d" % (what, c)] = r
                            print("warm %-9s wrk -t1 -c%d -d%ds: %.0f req/s, p50 %.3f ms, "
                                  "p99 %.3f ms, CPU %.1f us/request (server + workers), "
                                  "non-2xx %d %s"
                                  % (what, c, a.seconds, r["rps"], r["p50_ms"], r["p99_ms"],
                                     r["cpu_us_per_req"] or float("nan"), r["non_2xx"],
                                     r["socket_errors"]))
                    else:
                        print("wrk not installed (scripts/deps --bench): wrk runs skipped")
                for name, warm_name, body in (() if a.wrk_only or not a.cold else (
                        ("cold-mnist", "mnist", digit), ("cold-resnet50", "resnet50", photo))):
                    total, init = cold_starts(s, name, body, "image/png", a.cold)
                    warm = warm_client_ms(s, warm_name, body, "image/png", a.cold)
                    r = {"n": len(total), "p50_ms": statistics.median(total), "min_ms": min(total),
                         "max_ms": max(total), "init_p50_ms": statistics.median(init),
                         "warm_p50_ms": statistics.median(warm),
                         "cold_minus_warm_p50_ms": statistics.median(total) -
                         statistics.median(warm)}
                    results["%s_%s" % (name, label)] = r
                    print("cold start %-13s (%s): arrival->response p50 %.1f ms (min %.1f, max "
                          "%.1f), worker init p50 %.1f ms; warm p50 %.1f ms (same client); cold - "
                          "warm %.1f ms (target <= 20), n=%d"
                          % (name, label, r["p50_ms"], r["min_ms"], r["max_ms"],
                             r["init_p50_ms"], r["warm_p50_ms"], r["cold_minus_warm_p50_ms"],
                             r["n"]))
            finally:
                s.stop()
                s.cleanup()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["load_average_after"] = os.getloadavg()
    print("load average before %.2f, after %.2f (%d cores)"
          % (results["load_average"][0], results["load_average_after"][0], results["cores"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
