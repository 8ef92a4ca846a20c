#!/usr/bin/env bash
# Runs the whole test suite: unit, conformance and end-to-end tests over real
# processes (a real nats-server, routers, executors, bubblewrap sandboxes).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh --test
export AGENTTIER_NATS_SERVER="$PWD/.venv/bin/nats-server"
cargo build --workspace --quiet
status=0
cargo test --workspace --no-fail-fast "$@" || status=$?
# Existing clients, unchanged: the published v0.8 Python SDK against `agenttier up`.
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
AGENTTIER_BIN="$target_dir/debug/agenttier" .venv-compat/bin/python -m pytest -q tests/compat || status=$?
# This repository's Python SDK (sdk/python) against `agenttier up`.
AGENTTIER_BIN="$target_dir/debug/agenttier" .venv/bin/python -m pytest -q sdk/python/tests || status=$?
exit $status
