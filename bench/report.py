#!/usr/bin/python3
"""Renders a results directory of bench/run-all.sh as markdown: the thesis's
Table 3 columns (load, average cold start, average warm start, total CPU,
per-worker CPU, requests, failed) with kiln's measured values beside the
thesis's published ones, then a table of every scenario that ran.

Each scenario is a subdirectory holding `kiln load --out` files
(summary.json, requests.csv) and optionally cpu.csv
(ts,function,worker_pid,cpu_pct,rss_kb[,pss_kb]). CPU columns follow the thesis:
the peak over the run, in percent of one core; "total" sums every process of
the server (itself and its workers) per sample, "worker N" is the N-th
busiest worker process by its own peak.

usage: report.py RESULTS_DIR [--out FILE.md]
"""
import argparse
import csv
import json
import os
import sys

# The thesis (shared seeds: "Performance Evaluation of Serverless Functions
# under Varied Loads", Table 3 and section 6.3): k6 ramping VUs against
# Knative on a master and three worker nodes, 10 cores in all.
THESIS = [
    # load, scenario, avg cold, avg warm, total CPU, worker 1, 2, 3, requests, failed
    ("5-500", "thesis-5-500", "23.5 s", "3.22 ms", "392.38%", "201.9%", "103.41%", "59.23%",
     "287,092", "0"),
    ("13-1100", "thesis-13-1100", "24.7 s", "2.61 ms", "657.60%", "260.46%", "135.24%",
     "234.23%", "787,052", "0"),
    ("20-1800", "thesis-20-1800", "24.4 s", "4.9 ms", "997.90%", "426.22%", "266.66%", "268.38%",
     "727,016", "0.02% (99.98% served)"),
    ("2-2100", "thesis-2-2100", "39.98 s", "12 ms", "1023.78%", "485.62%", "174.59%", "286.28%",
     "872,218", "1,082 interrupted iterations"),
]


def fmt_ms(ms):
    if ms is None:
        return "-"
    if ms >= 1000:
        return "%.2f s" % (ms / 1000)
    if ms >= 1:
        return "%.2f ms" % ms
    return "%.0f µs" % (ms * 1000)


def load_dir(path):
    try:
        with open(os.path.join(path, "summary.json")) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return None
    cpu = []
    cpu_path = os.path.join(path, "cpu.csv")
    if os.path.exists(cpu_path):
        with open(cpu_path, newline="") as f:
            cpu = list(csv.DictReader(f))
    return summary, cpu


def cpu_columns(cpu):
    """(total peak, [worker peaks, busiest first]) in % of one core."""
    if not cpu:
        return None, []
    total, peak = {}, {}
    for r in cpu:
        ts = round(float(r["ts"]))
        pct = float(r["cpu_pct"])
        total[ts] = total.get(ts, 0.0) + pct
        if r["function"] not in ("server", "zygote"):
            key = (r["function"], r["worker_pid"])
            peak[key] = max(peak.get(key, 0.0), pct)
    return max(total.values()), sorted(peak.values(), reverse=True)


def pct(v):
    return "-" if v is None else "%.1f%%" % v


def vus_range(summary):
    return "peak %d VUs" % summary["metrics"]["vus"]["max"]


def kiln_row(load, summary, cpu):
    m, k = summary["metrics"], summary["kiln"]
    total, workers = cpu_columns(cpu)
    w = [pct(workers[i]) if i < len(workers) else ("-" if cpu else "-") for i in range(3)]
    cold = k["cold"]["avg"] if k["cold"]["count"] else None
    warm = k["warm"]["avg"] if k["warm"]["count"] else None
    n = m["http_reqs"]["count"]
    failed = m["http_req_failed"]["passes"]
    fail_text = "%d (%.2f%%)" % (failed, 100.0 * failed / n) if n else "0"
    if m["interrupted_iterations"]["count"]:
        fail_text += ", %d interrupted" % m["interrupted_iterations"]["count"]
    used = sorted(name for name, r in k["requests"].items() if r["count"])
    return "| %s | kiln, %s, %s | %s (%d) | %s (%d) | %s | %s | %s | %s | %s | %s |" % (
        load, vus_range(summary), "+".join(used) or "no requests", fmt_ms(cold), k["cold"]["count"], fmt_ms(warm),
        k["warm"]["count"], pct(total), w[0], w[1], w[2], "{:,}".format(n), fail_text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results")
    ap.add_argument("--out")
    a = ap.parse_args()
    runs = {}
    for name in sorted(os.listdir(a.results)):
        d = os.path.join(a.results, name)
        if os.path.isdir(d):
            got = load_dir(d)
            if got:
                runs[name] = got
    lines = []
    meta = os.path.join(a.results, "machine.json")
    if os.path.exists(meta):
        with open(meta) as f:
            info = json.load(f)
        lines.append("Machine: %s, %s cores; target: %s." % (
            info.get("cpu", "?"), info.get("cores", "?"), info.get("target", "?")))
        lines.append("")
    lines.append("### Table 3, thesis vs kiln")
    lines.append("")
    lines.append("The thesis ran each load on a 10-core, 3-worker-node Knative cluster; kiln "
                 "runs the same shapes with VUs divided by 10 on this one machine "
                 "(bench/scenarios/thesis-*.yaml). Cold and warm: average response time of "
                 "requests that started a worker vs found one (count in brackets). CPU: peak, "
                 "% of one core; the thesis's workers are nodes, kiln's are worker processes.")
    lines.append("")
    lines.append("| Load (VUs) | system | avg cold start | avg warm start | total CPU | worker 1 "
                 "| worker 2 | worker 3 | requests | failed |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for load, scen, cold, warm, total, w1, w2, w3, reqs, failed in THESIS:
        lines.append("| %s | thesis (k6, Knative, 10 cores) | %s | %s | %s | %s | %s | %s | %s | "
                     "%s |" % (load, cold, warm, total, w1, w2, w3, reqs, failed))
        if scen in runs:
            lines.append(kiln_row(load, *runs[scen]))
        else:
            lines.append("| %s | kiln | not run | | | | | | | |" % load)
    lines.append("")
    lines.append("### Every scenario")
    lines.append("")
    lines.append("| scenario | executor | duration | requests | req/s | failed | cold (avg) "
                 "| warm (avg) | p50 | p90 | p95 | p99 | max |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, (s, _cpu) in runs.items():
        m, k = s["metrics"], s["kiln"]
        d = m["http_req_duration"]
        lines.append("| %s | %s | %.0f s | %s | %.1f | %d | %d (%s) | %d (%s) | %s | %s | %s | %s "
                     "| %s |" % (
                         name, s["executor"], s["duration_s"],
                         "{:,}".format(m["http_reqs"]["count"]), m["http_reqs"]["rate"],
                         m["http_req_failed"]["passes"], k["cold"]["count"],
                         fmt_ms(k["cold"]["avg"]) if k["cold"]["count"] else "-",
                         k["warm"]["count"],
                         fmt_ms(k["warm"]["avg"]) if k["warm"]["count"] else "-",
                         fmt_ms(d["med"]), fmt_ms(d["p(90)"]), fmt_ms(d["p(95)"]),
                         fmt_ms(d["p(99)"]), fmt_ms(d["max"])))
    text = "\n".join(lines) + "\n"
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
