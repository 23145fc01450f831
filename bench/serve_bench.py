#!/usr/bin/env python3
"""Benchmarks kiln serve on this machine: cold starts (zygote and exec) and the
warm path with wrk over keep-alive HTTP.

    python3 bench/serve_bench.py [--kiln build/release/src/cli/kiln] [--seconds 5]

Prints one line per measurement. Needs wrk (Debian package wrk) for the warm
path. Uses ephemeral ports only.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import kilnserver  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def config(zygote, model):
    return """
server:
  listen: 127.0.0.1:0
  zygote: %s
  limits: {max_connections: 4096}
functions:
  - {name: echo, kind: echo, min_warm: 1, max_workers: 1, concurrency: 1}
  - {name: cold-echo, kind: echo, max_workers: 1, idle_timeout: 50ms}
  - {name: mnist, kind: predict, model: %s, min_warm: 1, max_workers: 1}
  - {name: cold-mnist, kind: predict, model: %s, max_workers: 1, idle_timeout: 50ms}
""" % ("true" if zygote else "false", model, model)


def workers(s, name):
    _, body = s.json("GET", "/v1/functions")
    f = next(f for f in body["functions"] if f["name"] == name)
    return sum(f["workers"][k] for k in ("starting", "idle", "busy", "stopping"))


def cold_starts(s, name, body, ctype, n):
    total, init = [], []
    for _ in range(n):
        deadline = time.monotonic() + 10
        while workers(s, name) and time.monotonic() < deadline:
            time.sleep(0.02)
        t0 = time.perf_counter()
        st, h, _ = s.request("POST", "/function/" + name, body, {"Content-Type": ctype})
        total.append((time.perf_counter() - t0) * 1e3)
        if st != 200 or h.get("x-kiln-start") != "cold":
            raise RuntimeError("%s: status %d start %s" % (name, st, h.get("x-kiln-start")))
        init.append(int(h["x-kiln-init-us"]) / 1e3)
    return total, init


def warm_exec_ms(s, name, body, ctype, n=50):
    ex = []
    for _ in range(n):
        st, h, _ = s.request("POST", "/function/" + name, body, {"Content-Type": ctype})
        ex.append(int(h["x-kiln-exec-us"]) / 1e3)
    return statistics.median(ex)


def wrk(url, seconds, conns, body=None, ctype=None):
    script = None
    args = ["wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds, "--latency"]
    if body is not None:
        fd, script = tempfile.mkstemp(suffix=".lua")
        with os.fdopen(fd, "w") as f:
            f.write('wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "%s"\n'
                    % (json.dumps(body.decode()), ctype))
        args += ["-s", script]
    try:
        out = subprocess.run(args + [url], capture_output=True, text=True, timeout=seconds + 60)
    finally:
        if script:
            os.unlink(script)
    text = out.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))

    def pct(p):
        m = re.search(r"\s%s%%\s+([\d.]+)(us|ms|s)" % p, text)
        v = float(m.group(1))
        return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return rps, pct(50), pct(99), int(errors.group(1)) if errors else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", default=os.path.join(ROOT, "build/release/src/cli/kiln"))
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--cold", type=int, default=10)
    a = ap.parse_args()
    kilnserver.KILN = a.kiln
    tmp = tempfile.mkdtemp(prefix="kiln-bench-")
    model = os.path.join(tmp, "lenet.kiln")
    subprocess.run([a.kiln, "import", os.path.join(ROOT, "models/lenet-mnist.yaml"), "-o", model],
                   check=True, capture_output=True)
    digit = json.dumps({"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32",
                                    "data": [((i * 7) % 13) / 13 for i in range(784)]}]}).encode()
    for zygote in (True, False):
        s = kilnserver.Server(config(zygote, model))
        try:
            label = "zygote" if zygote else "exec"
            for name, body, ct in (("cold-echo", b"x", "text/plain"),
                                   ("cold-mnist", digit, "application/json")):
                total, init = cold_starts(s, name, body, ct, a.cold)
                print("cold start %-10s (%s): arrival->response p50 %.1f ms (min %.1f, max %.1f), "
                      "worker init p50 %.1f ms, n=%d"
                      % (name, label, statistics.median(total), min(total), max(total),
                         statistics.median(init), len(total)))
            if zygote:
                print("warm mnist exec (server-side dispatch->result) p50 %.3f ms"
                      % warm_exec_ms(s, "mnist", digit, "application/json"))
                base = "http://%s:%d" % (s.host, s.port)
                for what, url, body, ct, c in (
                        ("GET /healthz", base + "/healthz", None, None, 8),
                        ("POST /function/echo", base + "/function/echo", b"hello", "text/plain", 8),
                        ("POST /v2/models/.../infer mnist", base + "/function/mnist", digit,
                         "application/json", 4)):
                    rps, p50, p99, bad = wrk(url, a.seconds, c, body, ct)
                    print("warm %-32s wrk -t1 -c%d -d%ds: %.0f req/s, p50 %.3f ms, p99 %.3f ms, "
                          "non-2xx %d" % (what, c, a.seconds, rps, p50, p99, bad))
        finally:
            s.stop()
            s.cleanup()


if __name__ == "__main__":
    main()
