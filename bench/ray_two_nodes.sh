#!/usr/bin/env bash
# The README's multi-node guide on one host: a head node and a worker node as two `ray start` processes (two
# raylets), Terrace camera c0 pinned to the head and c1 to the worker by custom resources, then
# `run --engine ray --ray-address HEAD:PORT`. Stops both nodes at the end.
# Usage: bash bench/ray_two_nodes.sh [FRAMES] [OUT]
set -euo pipefail
FRAMES=${1:-60}
OUT=${2:-/tmp/mcsa_ray_two_nodes}
PORT=${RAY_PORT:-6391}
TMP=${RAY_TMP:-/tmp/ray_mcsa_two_nodes}
HEAD=$(hostname -I | cut -d" " -f1):$PORT
cd "$(dirname "$0")/.."
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}  # `ray start --head` turns token authentication on (~/.ray/auth_token)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
cleanup() { ray stop --force >/dev/null 2>&1 || true; }
trap cleanup EXIT
ray start --head --port="$PORT" --num-cpus=1 --resources='{"site_head": 1}' --include-dashboard=false \
  --temp-dir="$TMP" --disable-usage-stats
ray start --address="$HEAD" --num-cpus=1 --resources='{"entrance": 1}' --disable-usage-stats
CFG=$(mktemp --suffix=.yaml)
sed -e 's|^\(    source: .*terrace1-c0.mp4\)$|\1\n    resources: {site_head: 1}|' \
    -e 's|^\(    source: .*terrace1-c1.mp4\)$|\1\n    resources: {entrance: 1}|' configs/epfl_terrace.yaml > "$CFG"
grep -A1 "source:" "$CFG"
rm -rf "$OUT"
python3 run_pipeline.py run --config "$CFG" --engine ray --ray-address "$HEAD" --max-frames "$FRAMES" \
  --output "$OUT" --no-progress
python3 - "$HEAD" <<'PY'
import sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
nodes = [n for n in ray.nodes() if n["Alive"]]
print(f"{len(nodes)} alive nodes:", ", ".join(
    f"{n['NodeID'][:8]} {sorted(k for k in n['Resources'] if k in ('site_head', 'entrance'))}" for n in nodes))
PY
