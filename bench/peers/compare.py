#!/usr/bin/python3
"""Joins benchmark records from kiln and its peers and prints a markdown
table of times and ratios (base / peer: below 1 means the base is faster).

    /usr/bin/python3 bench/peers/compare.py [--base kiln] [--metric p90_ms]
        [--format md|json] FILE...

Each FILE (or - for stdin) holds records as JSON lines, a JSON array, or a
JSON object with a "results" (or "models"/"layers") array; lines that are
not JSON objects are ignored. A record is
  {"tool"|"peer": "kiln"|"onnxruntime"|"pytorch"|...,
   "model"|"layer": NAME, "threads": N, "batch": B,
   "median_ms": ..., "p90_ms": ..., "gflops": ...}
and records join on (model or layer, threads, batch). A layer record may
give its shape (cin, h, w, cout, kh, stride, pad) instead of a name; the
name is then conv_<cin>x<h>x<w>_<cout>_k<kh>s<stride>p<pad>. When every
layer of a model's set carries "count" (occurrences in the model), a total
row sums count x time per tool over the layers all tools measured.
The last record for a key wins. Only the standard library is used.
"""

import argparse
import json
import sys

METRICS = ("median_ms", "p90_ms", "min_ms")


def layer_key(r):
    if r.get("layer"):
        return r["layer"]
    try:
        return "conv_{cin}x{h}x{w}_{cout}_k{kh}s{stride}p{pad}".format(**r)
    except KeyError:
        return None


def normalize(r):
    """(tool, kind, name, threads, batch) for a record, or None if it is
    not a timing record."""
    if not isinstance(r, dict):
        return None
    tool = r.get("tool") or r.get("peer")
    if "model" in r and isinstance(r["model"], str):
        kind, name = "model", r["model"]
    elif "layer" in r or "cin" in r:
        kind, name = "layer", layer_key(r)
    else:
        return None
    if not tool or not name or "threads" not in r:
        return None
    return tool, kind, name, int(r["threads"]), int(r.get("batch", 1))


def records_from_text(text):
    text = text.strip()
    if not text:
        return []
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict):
        for k in ("results", "models", "layers"):
            if isinstance(doc.get(k), list):
                return [dict(x, **({"tool": doc["tool"]} if "tool" in doc and isinstance(x, dict)
                                   and "tool" not in x and "peer" not in x else {}))
                        for x in doc[k]]
        return [doc]
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def join(records, metric):
    """{(kind, name, threads, batch): {tool: record}} and the tool order
    (first seen first)."""
    table, tools = {}, []
    for r in records:
        k = normalize(r)
        if k is None or not isinstance(r.get(metric), (int, float)):
            continue
        tool, key = k[0], k[1:]
        if tool not in tools:
            tools.append(tool)
        table.setdefault(key, {})[tool] = r
    return table, tools


def fmt_ms(x):
    return "—" if x is None else (f"{x:.3f}" if x < 10 else f"{x:.1f}")


def fmt_ratio(a, b):
    if a is None or b is None or b <= 0:
        return "—"
    return f"{a / b:.2f}"


def rows(table, tools, base, metric):
    """Rows of [kind, name, threads, batch, {tool: value}], models first,
    then layers, then per (threads, batch) a count-weighted layer total."""
    keys = sorted(table, key=lambda k: (k[0] != "model", k[2], k[3], k[1]))
    out = []
    for k in keys:
        out.append([k[0], k[1], k[2], k[3], {t: table[k][t][metric] for t in table[k]}])
    groups = {}
    for k in keys:
        if k[0] == "layer":
            groups.setdefault((k[2], k[3]), []).append(k)
    for (th, b), ks in sorted(groups.items()):
        common = [k for k in ks if all(t in table[k] for t in tools)]
        if len(common) < 2 or not all(
                isinstance(table[k][t].get("count"), int) for k in common for t in tools):
            continue
        tot = {t: sum(table[k][t][metric] * table[k][t]["count"] for k in common) for t in tools}
        out.append(["total", f"{len(common)} layers x count", th, b, tot])
    return out


def markdown(rs, tools, base, metric):
    peers = [t for t in tools if t != base]
    head = ["", "name", "threads", "batch"] + [f"{t} {metric}" for t in [base] + peers]
    head += [f"{base}/{p}" for p in peers]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for kind, name, th, b, v in rs:
        cells = [kind, name, str(th), str(b)] + [fmt_ms(v.get(t)) for t in [base] + peers]
        cells += [fmt_ratio(v.get(base), v.get(p)) for p in peers]
        if kind == "total":
            cells = [f"**{c}**" if c != "—" else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--base", default="kiln", help="tool in the numerator of the ratios")
    ap.add_argument("--metric", default="p90_ms", choices=METRICS)
    ap.add_argument("--format", default="md", choices=["md", "json"])
    args = ap.parse_args(argv)
    recs = []
    for fn in args.files:
        try:
            text = sys.stdin.read() if fn == "-" else open(fn).read()
        except OSError as e:
            print(f"compare: {fn}: {e.strerror}", file=sys.stderr)
            return 1
        recs += records_from_text(text)
    table, tools = join(recs, args.metric)
    if args.base not in tools:
        print(f"compare: no records from base tool {args.base!r} (have: {', '.join(tools) or 'none'})",
              file=sys.stderr)
        return 1
    tools = [args.base] + [t for t in tools if t != args.base]
    rs = rows(table, tools, args.base, args.metric)
    if args.format == "json":
        for kind, name, th, b, v in rs:
            rec = {"kind": kind, "name": name, "threads": th, "batch": b, "metric": args.metric,
                   "values": v}
            rec["ratios"] = {p: round(v[args.base] / v[p], 4) for p in tools[1:]
                             if v.get(args.base) is not None and v.get(p)}
            print(json.dumps(rec))
    else:
        print(markdown(rs, tools, args.base, args.metric))
    return 0


if __name__ == "__main__":
    sys.exit(main())
