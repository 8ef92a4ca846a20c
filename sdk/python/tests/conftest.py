"""Starts one real `agenttier up` for the whole SDK test session.

The binary is `$AGENTTIER_BIN`, else `<repo>/target/debug/agenttier`. The server
listens on a free port (`--listen 127.0.0.1:0`; its address is read from the
`agenttier: listening on http://ADDR` line), keeps its state in a temporary
directory and loads one extra template, `capped` (agent mode, one invoke at a time).
"""

from __future__ import annotations

import itertools
import os
import secrets
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agenttier import AgentTierClient, AsyncAgentTierClient

REPO = Path(__file__).resolve().parents[3]

CAPPED_TEMPLATE = """\
apiVersion: agenttier.io/v1alpha1
kind: ClusterSandboxTemplate
metadata:
  name: capped
spec:
  mode: agent
  agent:
    maxConcurrentInvokes: 1
"""


def _binary() -> Path:
    path = Path(os.environ.get("AGENTTIER_BIN") or REPO / "target" / "debug" / "agenttier")
    if not path.is_file():
        pytest.exit(f"agenttier binary not found at {path}: run `cargo build --bin agenttier` "
                    "or set AGENTTIER_BIN", returncode=2)
    return path


class Server:
    """A running `agenttier up` and its admin key."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="agenttier-sdk-")
        root = Path(self._dir.name)
        (root / "manifests").mkdir()
        (root / "manifests" / "capped.yaml").write_text(CAPPED_TEMPLATE)
        self.key = "atk_" + secrets.token_hex(24)
        self.log_path = root / "server.log"
        self._log = open(self.log_path, "wb")
        env = dict(os.environ, AGENTTIER_BOOTSTRAP_API_KEY=self.key, AGENTTIER_LOG="warn")
        env.pop("AGENTTIER_API_KEY", None)
        self.proc = subprocess.Popen(
            [str(_binary()), "up", "--listen", "127.0.0.1:0", "--data-dir", str(root / "data"),
             "--manifests", str(root / "manifests")],
            stdout=subprocess.PIPE, stderr=self._log, env=env,
        )
        self.url = self._read_address(timeout=60)

    def _read_address(self, timeout: float) -> str:
        found: list[str] = []
        assert self.proc.stdout is not None
        stdout = self.proc.stdout

        def read() -> None:
            for raw in stdout:
                line = raw.decode(errors="replace").strip()
                if line.startswith("agenttier: listening on "):
                    found.append(line.split("listening on ", 1)[1].strip())
                    break
            # keep draining so the server never blocks on a full pipe
            for _ in stdout:
                pass

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not found and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.02)
        if not found:
            self.stop()
            raise RuntimeError("agenttier up did not start:\n" + self.log_path.read_text(errors="replace"))
        return found[0]

    def stop(self) -> None:
        """Stops the server and removes its state."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self._dir.cleanup()


_running: list[Server] = []


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    s = Server()
    _running.append(s)
    try:
        yield s
    finally:
        _running.remove(s)
        s.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a failure, shows the end of the server's log next to the traceback."""
    report = yield
    if report.failed and _running:
        lines = _running[0].log_path.read_text(errors="replace").splitlines()[-40:]
        report.sections.append(("agenttier server log (last 40 lines)", "\n".join(lines)))
    return report


_names = itertools.count(1)


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """A fresh sandbox name for this test (a DNS-1123 label)."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())
    base = "-".join(part for part in base.split("-") if part)[:40].strip("-")
    return f"{base}-{next(_names)}"


@pytest.fixture
def client(server: Server) -> Iterator[AgentTierClient]:
    with AgentTierClient(server.url, server.key) as c:
        yield c


@pytest.fixture
async def aclient(server: Server) -> AsyncIterator[AsyncAgentTierClient]:
    async with AsyncAgentTierClient(server.url, server.key) as c:
        yield c
