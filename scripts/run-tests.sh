#!/usr/bin/env bash
# The whole test suite, offline, inside a loopback-only network namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p artifacts
exec ./scripts/loopback.sh .venv/bin/python -m pytest "$@"
