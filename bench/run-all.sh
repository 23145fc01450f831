#!/usr/bin/env bash
# Runs kiln's benchmark study on this machine and writes
# bench/results/<date>-<cpu>/: JSON, CSV, PNG and summary.md.
#
#   bench/run-all.sh [--quick] [--kiln PATH] [--out DIR] [--url URL]
#
#   --quick   under 3 minutes: short kernels run, the smoke scenario, the
#             first thesis load and scale-to-zero, shortened
#   --kiln    the kiln binary (default: build/rel, else build a release)
#   --out     results directory (default bench/results/<date>-<cpu>)
#   --url     load an already running server instead of starting one
#
# What runs depends on what this kiln has: `kiln bench` (kernels, cold
# starts) when the command exists; the load scenarios against a `kiln serve`
# it starts on a free loopback port with bench/serve.yaml (thesis scenarios
# only for the predict functions the server lists). Without `kiln serve`, the
# smoke scenario runs against tests/integration/load_target.py so the
# pipeline (kiln load, plots, report) still runs; its numbers are the
# stand-in's, and the report says so. Plots need python3-matplotlib
# (scripts/deps --bench).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

quick=0
kiln=""
out=""
url=""
while [[ $# -gt 0 ]]; do
  case $1 in
  --quick) quick=1 ;;
  --kiln) kiln=$2; shift ;;
  --out) out=$2; shift ;;
  --url) url=$2; shift ;;
  -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
  *) echo "run-all.sh: unknown option $1 (--help)" >&2; exit 2 ;;
  esac
  shift
done

py=/usr/bin/python3
[[ -x $py ]] || py=python3
log() { echo "run-all: $*" >&2; }

if [[ -z $kiln ]]; then
  kiln=build/rel/src/cli/kiln
  if [[ ! -x $kiln ]]; then
    log "building kiln (release) in build/rel"
    [[ -f build/rel/build.ninja ]] || meson setup build/rel --buildtype=release >/dev/null
    ninja -C build/rel -j2 >/dev/null
  fi
fi
kiln=$(realpath "$kiln")

cpu=$(awk -F: '/^model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ *//')
[[ -n $cpu ]] || cpu=$(uname -m)
slug=$(echo "$cpu" | tr 'A-Z' 'a-z' | sed 's/([^)]*)//g; s/[^a-z0-9]\+/-/g; s/^-//; s/-$//' | cut -c1-40)
[[ -n $out ]] || out=bench/results/$(date -u +%Y%m%d-%H%M)-$slug
mkdir -p "$out"
out=$(realpath "$out")
log "results in $out"

has() { "$kiln" "$@" --help >/dev/null 2>&1; }
notes=()

# ---- kernels and cold starts (kiln bench) ----------------------------------
if has bench; then
  log "kiln bench kernels"
  if "$kiln" bench kernels --json >"$out/kernels.json" 2>"$out/kernels.log"; then :; else
    notes+=("kiln bench kernels failed: see kernels.log"); fi
  for m in mnist resnet50; do
    "$kiln" bench cold "$m" --repeat $((quick ? 3 : 10)) --json >"$out/cold-$m.json" \
      2>>"$out/cold.log" || notes+=("kiln bench cold $m failed: see cold.log")
  done
else
  notes+=("kernels and cold starts: this kiln has no 'bench' command yet")
fi
if [[ -x bench/peers/run.sh ]]; then
  log "peers (bench/peers/run.sh)"
  bench/peers/run.sh $([[ $quick == 1 ]] && echo --quick) --out "$out/peers" \
    >"$out/peers.log" 2>&1 || notes+=("peers failed: see peers.log")
fi

# ---- the server -------------------------------------------------------------
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() {
  $py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_ready URL PID: polls URL/healthz for up to 20 s while PID lives.
wait_ready() {
  for _ in $(seq 100); do
    kill -0 "$2" 2>/dev/null || return 1
    $py - "$1" <<'EOF' && return 0
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1] + "/healthz", timeout=1)
except Exception:
    sys.exit(1)
EOF
    sleep 0.2
  done
  return 1
}

server_pid=""
target=""
if [[ -n $url ]]; then
  target="kiln serve at $url (started elsewhere)"
elif has serve; then
  port=$(free_port)
  url=http://127.0.0.1:$port
  data=$(mktemp -d)
  "$kiln" serve --config bench/serve.yaml --listen "127.0.0.1:$port" --data-dir "$data" \
    >"$out/serve.log" 2>&1 &
  server_pid=$!
  pids+=("$server_pid")
  if wait_ready "$url" "$server_pid"; then
    target="kiln serve (bench/serve.yaml)"
  else
    notes+=("kiln serve did not become ready: see serve.log")
    url=""
  fi
fi
if [[ -z $url ]]; then
  port_file=$(mktemp)
  $py tests/integration/load_target.py --delay-ms 1 --cold-delay-ms 20 >"$port_file" &
  server_pid=$!
  pids+=("$server_pid")
  for _ in $(seq 50); do [[ -s $port_file ]] && break; sleep 0.1; done
  url=http://127.0.0.1:$(cat "$port_file")
  target="STAND-IN: tests/integration/load_target.py (no kiln serve in this build)"
  notes+=("no kiln serve: load numbers are from the Python stand-in target, not from kiln")
  standin=1
fi
standin=${standin:-0}
log "target: $target"

# The predict functions the server has (thesis scenarios need all three).
functions=$($py - "$url" <<'EOF' || true
import json, sys, urllib.request
try:
    fs = json.load(urllib.request.urlopen(sys.argv[1] + "/system/functions", timeout=5))
    print(" ".join(f.get("name", "") for f in fs))
except Exception:
    pass
EOF
)

# ---- load scenarios ---------------------------------------------------------
# run_scenario NAME [kiln load options...]
run_scenario() {
  local name=$1
  shift
  local dir=$out/$name
  mkdir -p "$dir"
  local sampler=""
  if [[ -n $server_pid ]]; then
    $py bench/sample_proc.py "$server_pid" "$dir/cpu.csv" &
    sampler=$!
    pids+=("$sampler")
  fi
  log "scenario $name"
  if "$kiln" load --url "$url" --scenario "bench/scenarios/$name.yaml" --out "$dir" --quiet \
    "$@" >"$dir/summary.txt" 2>"$dir/load.log"; then :; else
    notes+=("scenario $name failed: see $name/load.log")
  fi
  [[ -n $sampler ]] && kill "$sampler" 2>/dev/null || true
  if $py -c 'import matplotlib' 2>/dev/null; then
    $py bench/plot.py "$dir" >/dev/null || notes+=("plots of $name failed")
  fi
}

have_models=1
for f in mnist cifar10 resnet50; do [[ " $functions " == *" $f "* ]] || have_models=0; done

if [[ $quick == 1 ]]; then
  run_scenario smoke
  if [[ $have_models == 1 && $standin == 0 ]]; then
    run_scenario thesis-5-500 --duration-scale 0.4
    run_scenario scale-to-zero --duration-scale 0.5
  fi
else
  run_scenario smoke
  run_scenario open-loop-echo
  if [[ $have_models == 1 && $standin == 0 ]]; then
    for s in thesis-5-500 thesis-13-1100 thesis-20-1800 thesis-2-2100 scale-to-zero; do
      run_scenario $s
    done
  fi
fi
if [[ $have_models == 0 ]]; then
  notes+=("thesis and scale-to-zero scenarios skipped: the server lists no mnist, cifar10 and resnet50 functions (has: ${functions:-none})")
fi

# ---- report -------------------------------------------------------------------
$py - "$out/machine.json" "$cpu" "$target" "$kiln" "$quick" <<'EOF'
import json, os, subprocess, sys, time
path, cpu, target, kiln, quick = sys.argv[1:]
def run(*a):
    try:
        return subprocess.run(a, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception:
        return ""
json.dump({"cpu": cpu, "cores": os.cpu_count(), "target": target, "quick": quick == "1",
           "kiln": run(kiln, "--version"), "commit": run("git", "rev-parse", "--short", "HEAD"),
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
          open(path, "w"), indent=2)
EOF
{
  echo "# kiln benchmark: $(date -u +%Y-%m-%d), $cpu"
  echo
  echo "Command: \`bench/run-all.sh$([[ $quick == 1 ]] && echo ' --quick')\`. Target: $target."
  echo
  $py bench/report.py "$out"
  if [[ ${#notes[@]} -gt 0 ]]; then
    echo
    echo "### Notes"
    echo
    for n in "${notes[@]}"; do echo "- $n"; done
  fi
} >"$out/summary.md"
log "wrote $out/summary.md"
cat "$out/summary.md"
