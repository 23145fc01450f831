#!/usr/bin/python3
"""Plots one `kiln load --out DIR` run (Debian's python3-matplotlib; no
pandas needed). Reads DIR/requests.csv, DIR/timeline.csv and, when present,
DIR/cpu.csv (ts,function,worker_pid,cpu_pct,rss_kb[,pss_kb]: written by
kiln serve's sampler, see bench/README.md),
and writes PNGs into DIR (or --png-dir):

  cold_warm_hist.png   response times of cold and warm starts (log x axis),
                       like the thesis's Figure 4
  latency_vus.png      p50/p90/p95/p99 per second and VUs over time
  workers.png          workers per function over time (cpu.csv, else the
                       distinct X-Kiln-Worker values answering each second)
  cpu_per_worker.png   CPU % of each worker process over time (cpu.csv)

usage: plot.py DIR [--png-dir D] [--title T]
"""
import argparse
import csv
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


# cpu.csv rows that are not workers: the server itself and its zygote.
NOT_WORKERS = ("server", "zygote")


def read_csv(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def log_bins(lo_ms, hi_ms, n=50):
    lo = max(lo_ms, 1e-3)
    hi = max(hi_ms, lo * 1.01)
    a, b = math.log10(lo), math.log10(hi)
    return [10 ** (a + (b - a) * i / n) for i in range(n + 1)]


def plot_hist(rows, out, title):
    cold = [int(r["latency_us"]) / 1e3 for r in rows if r["start"] == "cold" and not r["error"]]
    warm = [int(r["latency_us"]) / 1e3 for r in rows if r["start"] == "warm" and not r["error"]]
    other = [int(r["latency_us"]) / 1e3 for r in rows if not r["start"] and not r["error"]]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    every = cold + warm + other
    if every:
        bins = log_bins(min(every), max(every))
        for values, label, color in ((warm, "warm", "tab:blue"), (cold, "cold", "tab:red"),
                                     (other, "no X-Kiln-Start", "tab:gray")):
            if values:
                avg = sum(values) / len(values)
                ax.hist(values, bins=bins, alpha=0.6, color=color,
                        label="%s: %d, avg %.2f ms" % (label, len(values), avg))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no responses", ha="center", transform=ax.transAxes)
    ax.set_xlabel("response time (ms, log scale)")
    ax.set_ylabel("requests (log scale)")
    ax.set_title("%s: cold vs warm starts" % title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_latency_vus(timeline, out, title):
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 2]})
    t = [float(r["t_s"]) for r in timeline]
    for key, label in (("p50_ms", "p50"), ("p90_ms", "p90"), ("p95_ms", "p95"),
                       ("p99_ms", "p99")):
        ax.plot(t, [float(r[key]) if int(r["reqs"]) else float("nan") for r in timeline],
                label=label)
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms, log scale)")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("%s: latency percentiles per second, VUs and throughput" % title)
    ax2.plot(t, [int(r["vus"]) for r in timeline], color="black", label="VUs")
    ax2.set_ylabel("VUs")
    ax2.set_xlabel("time (s)")
    ax3 = ax2.twinx()
    ax3.bar(t, [float(r["rps"]) for r in timeline], width=0.8, alpha=0.25, color="tab:green",
            label="req/s")
    errors = [int(r["errors"]) for r in timeline]
    if any(errors):
        ax3.bar(t, errors, width=0.8, alpha=0.6, color="tab:red", label="errors/s")
    ax3.set_ylabel("req/s")
    h1, l1 = ax2.get_legend_handles_labels()
    h2, l2 = ax3.get_legend_handles_labels()
    ax2.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def workers_over_time(cpu, rows, t0):
    """{function: [(t, count)]}: from the CPU samples when there are some
    (worker processes alive), else from the responses (workers answering)."""
    series = {}
    if cpu:
        # Every sample time counts, so a function with no worker left
        # (scaled to zero) drops to 0 instead of keeping its last value.
        times = sorted({round(float(r["ts"]) - t0) for r in cpu})
        fns = sorted({r["function"] for r in cpu if r["function"] not in NOT_WORKERS})
        by = {}
        for r in cpu:
            if r["function"] in NOT_WORKERS:
                continue
            key = (round(float(r["ts"]) - t0), r["function"])
            by.setdefault(key, set()).add(r["worker_pid"])
        for fn in fns:
            series[fn] = [(t, len(by.get((t, fn), ()))) for t in times]
        return series, "worker processes alive (cpu.csv)"
    by = {}
    for r in rows:
        if not r["worker"]:
            continue
        key = (int(float(r["t_start"]) - t0), r["function"])
        by.setdefault(key, set()).add(r["worker"])
    for (t, fn), ws in sorted(by.items()):
        series.setdefault(fn, []).append((t, len(ws)))
    return series, "distinct workers answering (X-Kiln-Worker)"


def plot_workers(cpu, rows, t0, out, title):
    series, what = workers_over_time(cpu, rows, t0)
    fig, ax = plt.subplots(figsize=(9, 4))
    for fn, pts in sorted(series.items()):
        ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", label=fn)
    if not series:
        ax.text(0.5, 0.5, "no worker information", ha="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=8)
    ax.set_ylim(bottom=0, top=max([p[1] for pts in series.values() for p in pts] + [1]) + 0.5)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("workers")
    ax.set_title("%s: %s" % (title, what))
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_cpu(cpu, t0, out, title):
    fig, ax = plt.subplots(figsize=(9, 4.5))
    by = {}
    for r in cpu:
        by.setdefault((r["function"], r["worker_pid"]), []).append(
            (float(r["ts"]) - t0, float(r["cpu_pct"])))
    total = {}
    for r in cpu:
        t = round(float(r["ts"]) - t0)
        total[t] = total.get(t, 0.0) + float(r["cpu_pct"])
    for (fn, pid), pts in sorted(by.items()):
        ax.plot([p[0] for p in pts], [p[1] for p in pts], linewidth=1,
                label="%s %s" % (fn, pid))
    if total:
        ts = sorted(total)
        ax.plot(ts, [total[t] for t in ts], color="black", linewidth=2, label="total")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("CPU (% of one core)")
    ax.set_ylim(bottom=0)
    if len(by) <= 12:
        ax.legend(fontsize=7)
    ax.set_title("%s: CPU per process" % title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--png-dir")
    ap.add_argument("--title")
    a = ap.parse_args()
    rows = read_csv(os.path.join(a.dir, "requests.csv"))
    timeline = read_csv(os.path.join(a.dir, "timeline.csv"))
    cpu = read_csv(os.path.join(a.dir, "cpu.csv"))
    if not rows and not timeline:
        print("plot.py: %s has no requests.csv or timeline.csv" % a.dir, file=sys.stderr)
        return 1
    out = a.png_dir or a.dir
    os.makedirs(out, exist_ok=True)
    title = a.title or os.path.basename(os.path.normpath(a.dir))
    t0 = min((float(r["scheduled"]) for r in rows), default=0.0)
    written = []
    plot_hist(rows, os.path.join(out, "cold_warm_hist.png"), title)
    written.append("cold_warm_hist.png")
    if timeline:
        plot_latency_vus(timeline, os.path.join(out, "latency_vus.png"), title)
        written.append("latency_vus.png")
    plot_workers(cpu, rows, t0, os.path.join(out, "workers.png"), title)
    written.append("workers.png")
    if cpu:
        plot_cpu(cpu, t0, os.path.join(out, "cpu_per_worker.png"), title)
        written.append("cpu_per_worker.png")
    print("plot.py: wrote %s in %s" % (", ".join(written), out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
