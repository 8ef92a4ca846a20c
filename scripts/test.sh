#!/usr/bin/env bash
# Runs the whole test suite: unit, conformance and end-to-end tests over real
# processes (a real nats-server, routers, executors, bubblewrap sandboxes).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh --test
export AGENTTIER_NATS_SERVER="$PWD/.venv/bin/nats-server"
cargo build --workspace --quiet
cargo test --workspace --no-fail-fast "$@"
