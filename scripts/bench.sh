#!/usr/bin/env bash
# Benchmarks AgentTier with agenttier-loadtest, in both shapes, on this machine:
#   1. embedded: `agenttier up` alone;
#   2. distributed: a nats-server, 2 routers, 1 executor, 1 controller.
# Every server listens on a free port on 127.0.0.1 and is stopped on exit
# (by PID). A nats-server for the NATS floor runs throughout. The results and
# the machine description replace the generated part of docs/performance.md
# (between its bench markers); the charts go to docs/performance-*.svg.
#
# Usage: scripts/bench.sh [--quick] [extra agenttier-loadtest flags...]
#   --quick   small counts, for trying the script (not for docs numbers)
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
if [ "${1:-}" = "--quick" ]; then QUICK=1; shift; fi
EXTRA=("$@")

command -v bwrap >/dev/null 2>&1 || scripts/ensure-deps.sh
[ -x .venv/bin/nats-server ] || scripts/ensure-deps.sh --test
NATS_SERVER="$PWD/.venv/bin/nats-server"

cargo build --release --bin agenttier --bin agenttier-loadtest
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
A="$target_dir/release/agenttier"
L="$target_dir/release/agenttier-loadtest"

WORK=$(mktemp -d -t agenttier-bench.XXXXXX)
OUT="$WORK/results"
mkdir -p "$OUT" "$WORK/manifests"
PIDS=()

stop() { # stop PID...: SIGTERM, then SIGKILL after 10 s
    local p
    for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "$@"; do
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
}
cleanup() {
    if [ ${#PIDS[@]} -gt 0 ]; then stop "${PIDS[@]}"; fi
    # Keep the servers' logs and the raw results (not the data directories).
    local keep
    keep="$target_dir/bench/$(date +%Y%m%d-%H%M%S)"
    mkdir -p "$keep"
    cp -r "$WORK"/*.log "$OUT" "$keep/" 2>/dev/null || true
    echo "bench: logs and raw results are in $keep" >&2
    rm -rf "$WORK"
}
trap cleanup EXIT

# The capped template `throttle` needs: the API cannot create templates.
cat >"$WORK/manifests/bench.yaml" <<'EOF'
apiVersion: agenttier.io/v1alpha1
kind: ClusterSandboxTemplate
metadata:
  name: capped
spec:
  description: Two invokes at a time, for the throttle scenario
  mode: agent
  agent:
    maxConcurrentInvokes: 2
EOF

KEY="atk_$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"

# wait_line FILE PREFIX: prints what follows PREFIX on the first matching line.
wait_line() {
    for _ in $(seq 300); do
        if grep -q "$2" "$1" 2>/dev/null; then
            grep -m1 "$2" "$1" | sed "s|.*$2||" | tr -d '\r '
            return 0
        fi
        sleep 0.1
    done
    echo "bench: no '$2' in $1 within 30 s:" >&2
    tail -20 "$1" >&2
    return 1
}

# start NAME CMD...: starts a server in the background, logging to $WORK/NAME.log.
start() {
    local name=$1
    shift
    "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    LAST_PID=$!
}

# wait_ready URL: until the router serves the capped template (the
# controller has published the templates).
wait_ready() {
    for _ in $(seq 300); do
        if curl -fs -o /dev/null -H "X-API-Key: $KEY" "$1/api/v1/templates/capped"; then return 0; fi
        sleep 0.1
    done
    echo "bench: $1 not ready within 30 s" >&2
    return 1
}

start nats-server "$NATS_SERVER" -a 127.0.0.1 -p -1 -js -sd "$WORK/nats"
NATS_PID=$LAST_PID
NATS_URL="nats://$(wait_line "$WORK/nats-server.log" 'Listening for client connections on ')"

if [ $QUICK = 1 ]; then
    SIZES=(--requests 100 --stream-mib 4 --burst 200 --idle 200)
    RACE=(--requests 2 --concurrency 2)
else
    SIZES=(--idle 10000)
    RACE=(--requests 8 --concurrency 4)
fi
loadtest() { # loadtest NAME ARGS...: one harness run, its table on stdout
    local name=$1
    shift
    echo "bench: $name" >&2
    "$L" --api-key "$KEY" --nats "$NATS_URL" --label "$name" \
        --json "$OUT/$name.json" --markdown "$OUT/$name.md" "$@" ${EXTRA[@]+"${EXTRA[@]}"} |
        tee "$OUT/$name.txt"
}

# 1. Embedded.
export AGENTTIER_BOOTSTRAP_API_KEY="$KEY"
start up "$A" up --listen 127.0.0.1:0 --data-dir "$WORK/embedded" --manifests "$WORK/manifests"
UP=$LAST_PID
URL="http://$(wait_line "$WORK/up.log" 'agenttier: listening on http://')"
wait_ready "$URL"
loadtest embedded --url "$URL" --pid "up=$UP" --executor-pid "$UP" \
    --svg docs/performance-embedded.svg standard "${SIZES[@]}"
loadtest embedded-cancel-at-start --url "$URL" --pid "up=$UP" \
    --cancel-after 0ms cancel "${RACE[@]}"
stop "$UP"

# 2. Distributed: 2 routers, 1 executor, 1 controller on the same NATS.
N=(--nats "$NATS_URL" --kv-bucket bench)
start router-a "$A" router "${N[@]}" --listen 127.0.0.1:0
RA=$LAST_PID
URL_A="http://$(wait_line "$WORK/router-a.log" 'agenttier: listening on http://')"
start router-b "$A" router "${N[@]}" --listen 127.0.0.1:0
RB=$LAST_PID
URL_B="http://$(wait_line "$WORK/router-b.log" 'agenttier: listening on http://')"
unset AGENTTIER_BOOTSTRAP_API_KEY
start controller "$A" controller "${N[@]}" --manifests "$WORK/manifests"
CT=$LAST_PID
start executor "$A" executor "${N[@]}" --node node-1 --data-dir "$WORK/node-1"
EX=$LAST_PID
wait_ready "$URL_A"
wait_ready "$URL_B"
PROCS=(--pid "router-a=$RA" --pid "router-b=$RB" --pid "executor=$EX"
    --pid "controller=$CT" --pid "nats-server=$NATS_PID")
loadtest distributed --url "$URL_A" --url "$URL_B" "${PROCS[@]}" --executor-pid "$EX" \
    --svg docs/performance-distributed.svg standard "${SIZES[@]}"
stop "$RA" "$RB" "$CT" "$EX"

# 3. The generated part of docs/performance.md.
{
    echo "Generated by \`scripts/bench.sh$([ $QUICK = 1 ] && echo ' --quick')${EXTRA[*]:+ ${EXTRA[*]}}\`" \
        "on $(date -u '+%Y-%m-%d %H:%M UTC') at commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- services bus || echo ' (with uncommitted changes to services/bus)')."
    echo
    echo "### Machine"
    echo
    echo '```'
    echo "nproc: $(nproc)"
    echo "cpu:   $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "kernel: $(uname -sr)"
    free -h
    echo "nats-server: $("$NATS_SERVER" --version)"
    echo '```'
    for run in embedded embedded-cancel-at-start distributed; do
        echo
        echo "### $run"
        echo
        case $run in
        embedded) echo '![embedded invoke latency](performance-embedded.svg)' && echo ;;
        distributed) echo '![distributed invoke latency](performance-distributed.svg)' && echo ;;
        esac
        cat "$OUT/$run.md"
    done
} >"$OUT/generated.md"

python3 - "$OUT/generated.md" docs/performance.md <<'EOF'
import sys, pathlib
generated, doc = pathlib.Path(sys.argv[1]).read_text(), pathlib.Path(sys.argv[2])
begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
text = doc.read_text() if doc.exists() else f"# Performance\n\n{begin}\n{end}\n"
if begin not in text or end not in text:
    text += f"\n{begin}\n{end}\n"
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
doc.write_text(f"{head}{begin}\n{generated}\n{end}{tail}")
EOF
echo "bench: wrote docs/performance.md" >&2
