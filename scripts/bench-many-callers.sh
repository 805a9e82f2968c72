#!/usr/bin/env bash
# K callers asking at the same moment (`run.py bench --concurrency K --together --turns R`) on the
# two setups of one 2-core machine, one after the other, with each process's memory (PSS, peak):
#   1. the agent + llama-server (`run.py engine --parallel K`, slots warmed), brain.kind = openai
#   2. the in-process cascade (llm.slots = K)
# Everything stays inside a loopback-only network namespace. Usage:
#   [ENGINE_THREADS=2] scripts/bench-many-callers.sh [K] [ROUNDS] [SETUPS]   (default 4 2 "engine cascade")
# Results: artifacts/bench-many/<setup>-c<K>/together-c<K>.json (+ memory.json) and the tables printed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BENCH_MANY_NETNS:-}" ]; then
  export BENCH_MANY_NETNS=1 HF_HUB_OFFLINE=1
  exec ./scripts/loopback.sh "$0" "$@"
fi
K="${1:-4}"
ROUNDS="${2:-2}"
SETUPS="${3:-engine cascade}"
PY=.venv/bin/python
PORT=8765
OUT=artifacts/bench-many
mkdir -p "$OUT"

for setup in $SETUPS; do
  dir="$OUT/$setup-c$K"
  mkdir -p "$dir"
  extra=()
  server=""
  if [ "$setup" = engine ]; then
    "$PY" run.py engine --port "$PORT" --parallel "$K" --context $((2048 * K)) --threads "${ENGINE_THREADS:-2}" > "$dir/llama-server.log" 2>&1 &
    server=$!
    for _ in $(seq 1 240); do  # ready once the engine has warmed its slots and printed the settings
      grep -q "point the agent at it" "$dir/llama-server.log" 2>/dev/null && break
      kill -0 "$server" 2>/dev/null || { cat "$dir/llama-server.log"; exit 1; }
      sleep 0.5
    done
    extra=(--set brain.kind=openai --set openai.base_url="http://127.0.0.1:$PORT")
  else
    extra=(--set llm.slots="$K")
  fi
  "$PY" scripts/peak_memory.py "$dir/memory.json" "run.py bench" "llama-server" "run.py engine" &
  sampler=$!
  echo "== $setup: $K callers at once, $ROUNDS rounds"
  "$PY" run.py bench --concurrency "$K" --together --turns "$ROUNDS" --out "$dir" "${extra[@]}"
  kill -TERM "$sampler"; wait "$sampler" 2>/dev/null || true
  cat "$dir/memory.json"
  if [ -n "$server" ]; then kill "$server"; wait "$server" 2>/dev/null || true; fi
done
