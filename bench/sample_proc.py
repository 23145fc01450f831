#!/usr/bin/env python3
"""Samples a server process and its descendants (the workers) from /proc
once a second into the CPU CSV that bench/plot.py and bench/report.py read,
for servers that do not write it themselves:

  ts,function,worker_pid,cpu_pct,rss_kb

  ts          Unix seconds of the sample
  function    the function the process serves; "server" for the server
              itself, "worker" when its command line does not say
  worker_pid  process id
  cpu_pct     CPU time used since the previous sample / wall time, in percent
              of one core (200 = two cores busy), as top and the thesis count
  rss_kb      resident set size in KiB

usage: sample_proc.py PID OUT.csv [--interval S]   (stops when PID exits)
"""
import os
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                s = f.read()
        except OSError:
            continue
        ppid = int(s[s.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def descendants(root):
    kids = children_map()
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def uptime():
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def stat(pid):
    """(cpu ticks, rss KiB, function, age in seconds) or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return None
    fields = s[s.rindex(")") + 2:].split()
    ticks = int(fields[11]) + int(fields[12])
    rss = int(fields[21]) * PAGE_KB
    args = [a.decode(errors="replace") for a in argv if a]
    function = "worker"
    if "serve" in args[1:2]:
        function = "server"
    for i, a in enumerate(args):
        if a in ("--function", "-f") and i + 1 < len(args):
            function = args[i + 1]
        elif a.startswith("--function="):
            function = a.split("=", 1)[1]
    age = uptime() - int(fields[19]) / TICK
    return ticks, rss, function, age


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    root, path = int(sys.argv[1]), sys.argv[2]
    interval = float(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[3] == "--interval" else 1.0
    prev = {}
    for pid in descendants(root):
        st = stat(pid)
        if st:
            prev[pid] = st[0]
    with open(path, "w") as out:
        out.write("ts,function,worker_pid,cpu_pct,rss_kb\n")
        last = time.monotonic()
        while os.path.exists("/proc/%d" % root):
            time.sleep(interval)
            now = time.monotonic()
            wall = now - last
            last = now
            ts = time.time()
            seen = {}
            for pid in descendants(root):
                st = stat(pid)
                if st is None:
                    continue
                ticks, rss, function, age = st
                seen[pid] = ticks
                # A process new since the last sample: its CPU since it started.
                span = wall if pid in prev else max(min(age, wall), 1e-3)
                cpu = (ticks - prev.get(pid, 0)) / TICK / span * 100
                out.write("%.3f,%s,%d,%.1f,%d\n" % (ts, function, pid, cpu, rss))
            prev = seen
            out.flush()


if __name__ == "__main__":
    main()
