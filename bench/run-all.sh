#!/usr/bin/env bash
# Runs kiln's benchmark study on this machine and writes
# bench/results/<date>-<cpu>/: JSON, CSV, PNG and summary.md.
#
#   bench/run-all.sh [--quick] [--no-peers] [--kiln PATH] [--out DIR] [--url URL]
#
#   --quick   under 3 minutes: kiln bench kernels --quick, the smoke
#             scenario, and shortened runs of the first thesis load and of
#             scale-to-zero; no peers
#   --no-peers  skip bench/peers/run (ONNX Runtime, PyTorch)
#   --kiln    the kiln binary (default: build/rel, else build a release)
#   --out     results directory (default bench/results/<date>-<cpu>)
#   --url     load an already running server instead of starting one
#
# What runs depends on what this kiln has: `kiln bench` (kernels, cold
# starts) when the command exists; the load scenarios against a `kiln serve`
# it starts on a free loopback port (--port 0) with bench/serve.yaml (thesis scenarios
# only for the predict functions the server lists). Without `kiln serve`, the
# smoke scenario runs against tests/integration/load_target.py so the
# pipeline (kiln load, plots, report) still runs; its numbers are the
# stand-in's, and the report says so. Plots need python3-matplotlib
# (scripts/deps --bench).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

quick=0
peers=1
kiln=""
out=""
url=""
while [[ $# -gt 0 ]]; do
  case $1 in
  --quick) quick=1 ;;
  --no-peers) peers=0 ;;
  --kiln) kiln=$2; shift ;;
  --out) out=$2; shift ;;
  --url) url=$2; shift ;;
  -h | --help) sed -n '2,23p' "$0"; exit 0 ;;
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
# The server binary: the same kiln unless KILN_SERVE_BIN names another.
serve_kiln=${KILN_SERVE_BIN:-$kiln}

cpu=$(awk -F: '/^model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ *//')
[[ -n $cpu ]] || cpu=$(uname -m)
slug=$(echo "$cpu" | tr 'A-Z' 'a-z' | sed 's/([^)]*)//g; s/[^a-z0-9]\+/-/g; s/^-//; s/-$//' | cut -c1-40)
[[ -n $out ]] || out=bench/results/$(date -u +%Y%m%d-%H%M)-$slug
mkdir -p "$out"
out=$(realpath "$out")
log "results in $out"

has() { "$kiln" "$@" --help >/dev/null 2>&1; }
notes=()

# ---- kernels, cold starts, peers -------------------------------------------
if has bench; then
  log "kiln bench kernels$([[ $quick == 1 ]] && echo ' --quick')"
  if "$kiln" bench kernels --json $([[ $quick == 1 ]] && echo --quick) >"$out/kernels.json" \
    2>"$out/kernels.log"; then :; else notes+=("kiln bench kernels failed: see kernels.log"); fi
  if "$kiln" bench cold --help >/dev/null 2>&1; then
    for m in lenet-mnist resnet50; do
      "$kiln" bench cold "models/$m.yaml" --repeat $((quick ? 3 : 10)) --json \
        >"$out/cold-$m.json" 2>>"$out/cold.log" || notes+=("kiln bench cold $m failed: see cold.log")
    done
  else
    notes+=("cold starts of models: this kiln has no 'bench cold' yet (the load scenarios' cold column measures them through the server)")
  fi
else
  notes+=("kernels and cold starts: this kiln has no 'bench' command")
fi
if [[ -x bench/peers/run && $quick == 0 && $peers == 1 ]]; then
  log "peers (bench/peers/run)"
  bench/peers/run --results "$out/peers" >"$out/peers.log" 2>&1 ||
    notes+=("peers failed: see peers.log")
elif [[ -x bench/peers/run ]]; then
  notes+=("peers (ONNX Runtime, PyTorch): not in this run (--quick or --no-peers); bench/peers/run runs them alone")
fi

# ---- the server -------------------------------------------------------------
pids=()
data=""
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ -n $data ]] && rm -rf "$data"
  return 0
}
trap cleanup EXIT

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
elif "$serve_kiln" serve --help >/dev/null 2>&1; then
  data=$(mktemp -d)
  # The predict functions' models: the thesis's three architectures with
  # seeded random weights (latency does not depend on the weights' values).
  mkdir -p "$data/models"
  for p in mnist:lenet-mnist cifar10:cifar10-cnn resnet50:resnet50; do
    "$kiln" import "models/${p#*:}.yaml" -o "$data/models/${p%%:*}.kiln" --seed 1 \
      >>"$out/import.log" 2>&1 || notes+=("kiln import models/${p#*:}.yaml failed: see import.log")
  done
  "$serve_kiln" serve --config bench/serve.yaml --port 0 --data-dir "$data" \
    >"$out/serve.out" 2>"$out/serve.log" &
  server_pid=$!
  pids+=("$server_pid")
  for _ in $(seq 100); do
    url=$(sed -n 's/.*listening on \(http:\/\/[0-9.]*:[0-9]*\).*/\1/p' "$out/serve.out" | head -1)
    [[ -n $url ]] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.2
  done
  if [[ -n $url ]] && wait_ready "$url" "$server_pid"; then
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
  local sampler="" t0 t1
  # kiln serve samples itself (server.sample in bench/serve.yaml); other
  # servers (the stand-in) are sampled from outside by sample_proc.py.
  if [[ -n $server_pid && ! -f $data/cpu.csv ]]; then
    $py bench/sample_proc.py "$server_pid" "$dir/cpu.csv" &
    sampler=$!
    pids+=("$sampler")
  fi
  log "scenario $name"
  t0=$(date +%s.%N)
  if "$kiln" load --url "$url" --scenario "bench/scenarios/$name.yaml" --out "$dir" --quiet \
    "$@" >"$dir/summary.txt" 2>"$dir/load.log"; then :; else
    notes+=("scenario $name failed: see $name/load.log")
  fi
  t1=$(date +%s.%N)
  [[ -n $sampler ]] && kill "$sampler" 2>/dev/null || true
  if [[ -z $sampler && -n $data && -f $data/cpu.csv ]]; then
    sleep 1.1 # the sample that covers the scenario's last second
    awk -F, -v t0="$t0" -v t1="$t1" 'NR == 1 || ($1 >= t0 && $1 <= t1 + 1.05)' \
      "$data/cpu.csv" >"$dir/cpu.csv"
  fi
  if $py -c 'import matplotlib' 2>/dev/null; then
    $py bench/plot.py "$dir" >/dev/null || notes+=("plots of $name failed")
  fi
}

# probe NAME PAYLOAD: one prediction must answer 200 (a missing model fails
# here, not as a thousand timeouts).
probe() {
  $py - "$url/function/$1" "bench/scenarios/payloads/$2" <<'EOF'
import sys, urllib.request
req = urllib.request.Request(sys.argv[1], data=open(sys.argv[2], "rb").read(),
                             headers={"Content-Type": "image/png"})
try:
    with urllib.request.urlopen(req, timeout=60) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception as e:
    print(e, file=sys.stderr)
    sys.exit(1)
EOF
}
ok=" "
if [[ $standin == 0 ]]; then
  for fp in mnist:digit28.png cifar10:rgb32.png resnet50:rgb224.png; do
    f=${fp%%:*}
    if [[ " $functions " != *" $f "* ]]; then
      notes+=("the server has no function $f")
    elif err=$(probe "$f" "${fp#*:}" 2>&1 | tail -1 | cut -c1-160); then
      ok+="$f "
    else
      notes+=("function $f did not answer a prediction (${err:-no 200}): scenarios that use it are skipped")
    fi
  done
fi

if [[ $quick == 1 ]]; then
  run_scenario smoke
  if [[ $ok == *" mnist cifar10 resnet50 "* ]]; then
    run_scenario thesis-5-500 --duration-scale 0.3
  elif [[ $ok == *" mnist cifar10 "* ]]; then
    run_scenario thesis-5-500 --duration-scale 0.3 --requests mnist,cifar10
  fi
  if [[ $ok == *" mnist cifar10 "* ]]; then
    run_scenario scale-to-zero --duration-scale 0.5
  elif [[ $standin == 0 ]]; then
    run_scenario scale-to-zero-echo --duration-scale 0.5
  fi
else
  run_scenario smoke
  run_scenario open-loop-echo
  [[ $standin == 0 ]] && run_scenario scale-to-zero-echo
  if [[ $ok == *" mnist cifar10 resnet50 "* ]]; then
    for s in thesis-5-500 thesis-13-1100 thesis-20-1800 thesis-2-2100; do run_scenario $s; done
  elif [[ $ok == *" mnist cifar10 "* ]]; then
    for s in thesis-5-500 thesis-13-1100 thesis-20-1800 thesis-2-2100; do
      run_scenario $s --requests mnist,cifar10
    done
  fi
  [[ $ok == *" mnist cifar10 "* ]] && run_scenario scale-to-zero
fi
if [[ $ok != *" mnist cifar10 resnet50 "* && $ok == *" mnist cifar10 "* && $standin == 0 ]]; then
  notes+=("thesis scenarios ran without their resnet50 requests (kiln load --requests mnist,cifar10)")
elif [[ $ok != *" mnist cifar10 "* ]]; then
  notes+=("thesis and scale-to-zero scenarios skipped: they need mnist and cifar10 predict functions that answer")
fi
true

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
