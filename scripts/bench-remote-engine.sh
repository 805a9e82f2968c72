#!/usr/bin/env bash
# Voice-to-voice through a remote engine vs the in-process cascade, on this machine: starts
# llama.cpp's own server (`run.py engine`: llama-server, built once by ./dev.sh install) with the
# project's GGUF (same model, 2 threads, one slot of 2048 tokens like the cascade's llm.context_tokens,
# its prompt cache warmed with the agent's system prompt), runs `run.py bench` against an agent whose brain is `openai` (whisper local,
# the LLM over HTTP), then the same bench with the in-process cascade. Everything stays inside a
# loopback-only network namespace. Usage: scripts/bench-remote-engine.sh [TURNS] (default 5).
# Results: artifacts/bench-remote/{openai,cascade}/ and the medians printed by each run.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BENCH_REMOTE_ENGINE_NETNS:-}" ]; then
  export BENCH_REMOTE_ENGINE_NETNS=1 HF_HUB_OFFLINE=1
  exec ./scripts/loopback.sh "$0" "$@"
fi
TURNS="${1:-5}"
PY=.venv/bin/python
PORT=8765
mkdir -p artifacts/bench-remote
"$PY" run.py engine --port "$PORT" --parallel 1 --context 2048 --threads 2 > artifacts/bench-remote/llama-server.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 240); do  # ready once the engine has warmed its slot and printed the settings
  grep -q "point the agent at it" artifacts/bench-remote/llama-server.log 2>/dev/null && break
  kill -0 "$SERVER" 2>/dev/null || { cat artifacts/bench-remote/llama-server.log; exit 1; }
  sleep 0.5
done
echo "== brain.kind = openai (llama-server at 127.0.0.1:$PORT)"
"$PY" run.py bench --turns "$TURNS" --out artifacts/bench-remote/openai \
  --set brain.kind=openai --set openai.base_url="http://127.0.0.1:$PORT"
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
echo "== brain.kind = cascade (in-process llama.cpp)"
"$PY" run.py bench --turns "$TURNS" --out artifacts/bench-remote/cascade
