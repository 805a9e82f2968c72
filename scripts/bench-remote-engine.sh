#!/usr/bin/env bash
# Voice-to-voice through a remote engine vs the in-process cascade, on this machine: starts
# llama-cpp-python's OpenAI-compatible server with the project's GGUF (same model, same 2 threads
# as llm.threads), runs `run.py bench` against an agent whose brain is `openai` (whisper local,
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
GGUF=$("$PY" -c "
from agent.brains.llama_chat import LLM_GGUF
from agent.runtime.model_files import ensure_files, resolve_cache_dir
print(ensure_files((LLM_GGUF,), resolve_cache_dir(''), progress=False)[LLM_GGUF.relpath])")
PORT=8765
mkdir -p artifacts/bench-remote
"$PY" -m llama_cpp.server --model "$GGUF" --host 127.0.0.1 --port "$PORT" --n_threads 2 --n_threads_batch 2 \
  --n_ctx 2048 --verbose "${LLAMA_VERBOSE:-False}" > artifacts/bench-remote/llama-server.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 240); do
  "$PY" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/v1/models', timeout=1)" 2>/dev/null && break
  sleep 0.5
done
echo "== brain.kind = openai (llama_cpp.server at 127.0.0.1:$PORT)"
"$PY" run.py bench --turns "$TURNS" --out artifacts/bench-remote/openai \
  --set brain.kind=openai --set openai.base_url="http://127.0.0.1:$PORT"
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
echo "== brain.kind = cascade (in-process llama.cpp)"
"$PY" run.py bench --turns "$TURNS" --out artifacts/bench-remote/cascade
