#!/usr/bin/env bash
# Quick start: `./dev.sh serve` starts the agent; `./dev.sh test` runs the whole test suite.
# Both install what they need first (a virtualenv in .venv, the pinned packages, the model files).
# `./dev.sh engine` starts llama.cpp's own server with the project's GGUF on 127.0.0.1 (for
# brain.kind = openai), building it once from the pinned llama.cpp sources on first use.
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
PY="$VENV/bin/python"

system_packages() {
  # Debian's Chromium for the browser end-to-end test (Playwright drives the system binary; it
  # never downloads a browser); cmake, Ninja and g++ build llama-server for the engine tests;
  # HAProxy is the load balancer of the scale-out test (deploy/haproxy.cfg).
  local want=()
  command -v chromium >/dev/null || want+=(chromium)
  command -v cmake >/dev/null || want+=(cmake)
  command -v ninja >/dev/null || want+=(ninja-build)
  command -v g++ >/dev/null || want+=(g++)
  command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || want+=(haproxy)
  [ ${#want[@]} = 0 ] && return 0
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  echo "== installing Debian packages: ${want[*]}"
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${want[@]}"; }; then
    echo "could not install ${want[*]} with apt-get; the browser, engine and balancer tests need them" >&2
    [ "${CI:-}" = "true" ] && exit 1
  fi
}

install() {
  # `install engine`: llama-server must build (the tests and `./dev.sh engine` need it); otherwise
  # a failed build is a warning and the in-process cascade still serves.
  local need_engine="${1:-}"
  if [ ! -x "$PY" ]; then
    python3 -m venv "$VENV"
  fi
  # llama.cpp's build for this CPU: native, or on a CPU with AMX without its AMX kernels, which
  # crash in these VMs (agent/runtime/llama_cpu.py); llama-cpp-python's build reads CMAKE_ARGS.
  local cmake_args
  cmake_args=$(python3 agent/runtime/llama_cpu.py)
  # The stamp holds the hash of the requirement files and those arguments: reinstall only when they change.
  local want have=""
  want=$(cat requirements.txt requirements-test.txt constraints.txt <(echo "$cmake_args") | sha256sum | cut -d' ' -f1)
  [ -f "$VENV/.installed" ] && have=$(cat "$VENV/.installed")
  if [ "$want" != "$have" ]; then
    echo "== installing Python packages (the first time builds llama-cpp-python: ~15 min on 2 cores)"
    "$PY" -m pip install --quiet --upgrade pip
    # torch first, from the local CPU wheel; the constraint keeps later installs from replacing it
    "$PY" -m pip install --quiet torch==2.13.0
    CMAKE_ARGS="$cmake_args" "$PY" -m pip install --quiet -c constraints.txt -r requirements.txt -r requirements-test.txt
    if [ -n "$cmake_args" ] && "$PY" -c 'import sys, llama_cpp; from agent.runtime.llama_cpu import built_with_amx
sys.exit(0 if built_with_amx(llama_cpp.llama_print_system_info().decode()) else 1)'; then
      echo "== rebuilding llama-cpp-python without AMX kernels (~15 min on 2 cores)"
      CMAKE_ARGS="$cmake_args" "$PY" -m pip install --quiet --no-cache-dir --force-reinstall --no-deps \
        "$(grep -m1 '^llama-cpp-python==' requirements.txt)"
    fi
    echo "$want" > "$VENV/.installed"
  fi
  echo "== model files"
  "$PY" run.py models
  echo "== llama-server (built once from the pinned llama.cpp sources: ~7 min on 2 cores)"
  if ! "$PY" run.py engine --build-only; then
    [ "$need_engine" = engine ] && exit 1
    echo "llama-server could not be built; the agent serves with its in-process cascade" >&2
  fi
}

cmd="${1:-serve}"
shift || true
case "$cmd" in
  install)
    install "$@" ;;
  serve)
    install
    exec "$PY" run.py serve "$@" ;;
  test)
    system_packages
    install engine
    exec ./scripts/run-tests.sh "$@" ;;
  engine)
    # a local server bound to 127.0.0.1, not inside loopback.sh (an agent outside that namespace could not reach it)
    install engine
    exec "$PY" run.py engine "$@" ;;
  bench)
    install
    exec ./scripts/loopback.sh "$PY" run.py bench "$@" ;;
  *)
    echo "usage: ./dev.sh [serve|test|bench|engine|install] [args...]" >&2
    exit 2 ;;
esac
