"""Starts a real `agenttier up` for the v0.8 client compatibility tests."""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _binary() -> str:
    path = os.environ.get("AGENTTIER_BIN") or str(ROOT / "target" / "debug" / "agenttier")
    if not Path(path).exists():
        pytest.fail(f"agenttier binary not found at {path}; build it (cargo build) or set AGENTTIER_BIN")
    return path


class Server:
    def __init__(self) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="agenttier-compat-")
        self.key = "atk_" + secrets.token_hex(24)
        manifests = Path(self.dir.name) / "manifests"
        manifests.mkdir()
        (manifests / "capped.yaml").write_text(
            "apiVersion: agenttier.io/v1alpha1\n"
            "kind: ClusterSandboxTemplate\n"
            "metadata: {name: capped}\n"
            "spec:\n  mode: agent\n  agent: {maxConcurrentInvokes: 1}\n"
        )
        env = dict(os.environ, AGENTTIER_BOOTSTRAP_API_KEY=self.key, AGENTTIER_LOG="warn")
        self.log = open(Path(self.dir.name) / "server.log", "wb")
        self.proc = subprocess.Popen(
            [_binary(), "up", "--listen", "127.0.0.1:0", "--data-dir",
             str(Path(self.dir.name) / "data"), "--manifests", str(manifests)],
            stdout=subprocess.PIPE, stderr=self.log, env=env,
        )
        deadline = time.monotonic() + 60
        self.url = ""
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                break
            if line.startswith("agenttier: listening on "):
                self.url = line.split("listening on ", 1)[1].strip()
                break
        if not self.url:
            self.stop()
            pytest.fail("agenttier up did not start: " + Path(self.dir.name, "server.log").read_text())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        self.dir.cleanup()


@pytest.fixture(scope="session")
def server():
    s = Server()
    yield s
    s.stop()
