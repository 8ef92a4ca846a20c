#!/usr/bin/env bash
# A/B of two commits, as the "Fixed at" tables of docs/performance.md were
# measured: each commit's `agenttier` built in release, then ROUNDS rounds in
# which each binary in turn gets a fresh `agenttier up` (its own data
# directory, the capped template of scripts/bench.sh) and one harness run.
# Prints, per round and row, the server's CPU (`up`), the rate, p50 and p99
# (and MB/s for streams); the raw reports stay under target/ab/.
#
#   scripts/ab.sh BASE NEW ROUNDS LOADTEST_ARGS...
#   scripts/ab.sh b3637db 80a37d0 3 --concurrency 50 --burst 20000 throttle
#   scripts/ab.sh HEAD~1 HEAD 5 --stream-mib 64 --requests 6 stream
#
# The harness itself is this checkout's (`--no-floors`), the same for both.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 4 ]; then
    sed -n '2,13p' "$0" >&2
    exit 2
fi
BASE=$1 NEW=$2 ROUNDS=$3
shift 3

AB=$PWD/target/ab
mkdir -p "$AB/bin"
# One target directory for both builds: dependencies compile once.
export CARGO_TARGET_DIR=$AB/target

# build REV: prints the path of REV's release `agenttier`, building it once.
build() {
    local hash src
    hash=$(git rev-parse --short=12 "$1^{commit}")
    if [ ! -x "$AB/bin/agenttier-$hash" ]; then
        src=$AB/src-$hash
        rm -rf "$src" && mkdir -p "$src"
        git archive "$hash" | tar -x -C "$src"
        echo "ab: building $1 ($hash)" >&2
        (cd "$src" && cargo build --release --quiet --bin agenttier)
        cp "$CARGO_TARGET_DIR/release/agenttier" "$AB/bin/agenttier-$hash"
        rm -rf "$src"
    fi
    echo "$AB/bin/agenttier-$hash"
}
A=$(build "$BASE")
B=$(build "$NEW")
cargo build --release --quiet --bin agenttier-loadtest --target-dir target
L=$PWD/target/release/agenttier-loadtest

WORK=$(mktemp -d)
UP_PID=
cleanup() {
    if [ -n "$UP_PID" ]; then kill "$UP_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/manifests"
sed -n '/^cat >"$WORK\/manifests\/bench.yaml"/,/^EOF$/p' scripts/bench.sh | sed '1d;$d' \
    >"$WORK/manifests/bench.yaml"
KEY="atk_$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"

for round in $(seq "$ROUNDS"); do
    for side in base new; do
        bin=$A
        [ $side = new ] && bin=$B
        rm -rf "$WORK/data" && mkdir -p "$WORK/data"
        AGENTTIER_BOOTSTRAP_API_KEY=$KEY "$bin" up --listen 127.0.0.1:0 \
            --data-dir "$WORK/data" --manifests "$WORK/manifests" >"$WORK/up.log" 2>&1 &
        UP_PID=$!
        url=
        for _ in $(seq 300); do
            url=$(grep -m1 -o 'http://127\.0\.0\.1:[0-9]*' "$WORK/up.log" || true)
            if [ -n "$url" ] && curl -fs -o /dev/null -H "X-API-Key: $KEY" \
                "$url/api/v1/templates/capped"; then break; fi
            sleep 0.1
        done
        json=$AB/$side-$round.json
        "$L" --url "$url" --api-key "$KEY" --no-floors --quiet --pid "up=$UP_PID" \
            --json "$json" "$@" >/dev/null
        kill "$UP_PID" && wait "$UP_PID" 2>/dev/null || true
        UP_PID=
        python3 - "$json" "$side" "$round" <<'PY'
import json, sys
path, side, rnd = sys.argv[1:]
for row in json.load(open(path))["rows"]:
    up = next((p["cpu_s"] for p in row["procs"] if p["label"] == "up"), float("nan"))
    mb = row["extra"].get("mb_per_s")
    errors = sum(row["errors"].values())
    print(f"round {rnd} {side:4} {row['scenario']} {row['case']}: up {up:.2f} cpu-s, "
          f"{row['per_s']:.0f}/s, p50 {row['latency']['p50_ms']:.2f} ms, "
          f"p99 {row['latency']['p99_ms']:.2f} ms"
          + (f", {mb:.0f} MB/s" if mb else "") + (f", {errors} errors" if errors else ""))
PY
    done
done
