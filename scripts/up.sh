#!/usr/bin/env bash
# Runs the whole system in one process (`agenttier up`), building it first.
# Extra arguments go to `agenttier up` (e.g. --listen, --data-dir, --manifests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
exec cargo run --quiet --bin agenttier -- up "$@"
