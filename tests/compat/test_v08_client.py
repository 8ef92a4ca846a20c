"""The published AgentTier v0.8 Python SDK (PyPI `agenttier==0.8.1`),
unchanged, against this server: what an existing client sees must work.

The v0.8.1 package's CLI cannot be exercised: it fails while building its
argument parser (`-o/--output` is declared twice) before sending anything, on
every Python version.
"""

from __future__ import annotations

import threading

import pytest
from agenttier import AgentTierClient, APIKeyAuth
from agenttier.exceptions import APIError, ConflictError, NotFoundError

AGENT = b"import sys\nprint(f\"hello {sys.stdin.read()}\")\n"


@pytest.fixture
def client(server):
    with AgentTierClient(server.url, auth=APIKeyAuth(server.key)) as c:
        yield c


def _agent(client, name, template="langgraph-agent"):
    sbx = client.create_sandbox(template, name)
    sbx.wait_until_running(timeout=30, poll_interval=0.2)
    return sbx


def test_sdk_quickstart_configure_and_invoke(client):
    sbx = _agent(client, "compat-quickstart")
    assert sbx.id == "compat-quickstart"
    logs = []
    result = sbx.agent.configure(
        files=[("/workspace/agent.py", AGENT)],
        entrypoint=["python", "/workspace/agent.py"],
        on_log=lambda stream, line: logs.append((stream, line)),
    )
    assert result.install_exit_code == 0
    assert result.entrypoint == ["python", "/workspace/agent.py"]
    assert not result.skipped
    assert ("stdout", "[configure] uploading /workspace/agent.py") in logs

    out = sbx.agent.invoke("world")
    assert (out.stdout, out.exit_code, out.reason) == ("hello world", 0, "completed")
    assert out.invoke_id.startswith("inv-") and len(out.invoke_id) == 28

    again = sbx.agent.configure(files=[("/workspace/agent.py", AGENT)], entrypoint=["python", "/workspace/agent.py"])
    assert again.skipped
    assert again.install_command_hash == result.install_command_hash


def test_sdk_reads_sandboxes_templates_and_identity(client):
    _agent(client, "compat-listed")
    summaries = {s.sandbox_id: s for s in client.list_sandboxes()}
    assert summaries["compat-listed"].status == "Running"
    assert summaries["compat-listed"].template_ref == "langgraph-agent"
    assert client.get_sandbox("compat-listed").name == "compat-listed"
    names = {t.name for t in client.list_templates()}
    assert {"langgraph-agent", "python-agent", "general-coding"} <= names
    assert client.get_template("langgraph-agent").name == "langgraph-agent"
    me = client.current_user()
    assert me.is_admin and me.sub


def test_sdk_maps_errors_to_its_exceptions(client):
    with pytest.raises(NotFoundError):
        client.get_sandbox("compat-missing")
    sbx = _agent(client, "compat-errors")
    with pytest.raises(APIError) as e:
        sbx.agent.invoke("x")  # nothing configured yet
    assert e.value.status_code == 424
    sbx.stop()
    with pytest.raises(ConflictError):
        sbx.agent.invoke("x")


def test_sdk_invoke_stream_and_cancel(client):
    sbx = _agent(client, "compat-cancel")
    sbx.agent.configure(
        files=[("/workspace/slow.py", b"import time\nprint('started', flush=True)\ntime.sleep(120)\n")],
        entrypoint=["python", "/workspace/slow.py"],
    )
    events = []
    started = threading.Event()

    def consume():
        for ev in sbx.agent.invoke_stream():
            events.append(ev)
            if ev.event == "log":
                started.set()

    t = threading.Thread(target=consume)
    t.start()
    assert started.wait(20), events
    invoke_id = events[0].data["invokeId"]
    sbx.agent.invoke_cancel(invoke_id)
    t.join(20)
    assert not t.is_alive()
    assert events[-1].event == "exit"
    assert events[-1].data["reason"] == "canceled"


def test_sdk_sees_429_when_the_cap_is_full(client):
    sbx = _agent(client, "compat-capped", template="capped")
    sbx.agent.configure(
        files=[("/workspace/slow.py", b"import time\nprint('x', flush=True)\ntime.sleep(60)\n")],
        entrypoint=["python", "/workspace/slow.py"],
    )
    stream = sbx.agent.invoke_stream()
    first = next(stream)
    assert first.event == "start"
    with pytest.raises(APIError) as e:
        sbx.agent.invoke("y")
    assert e.value.status_code == 429
    sbx.agent.invoke_cancel(first.data["invokeId"])
    assert [ev.event for ev in stream][-1] == "exit"


def test_sdk_exec_in_code_and_agent_sandboxes(client):
    code = _agent(client, "compat-code", template="general-coding")
    out = code.exec("echo 'Hello from AgentTier!'")
    assert (out.stdout, out.stderr, out.exit_code) == ("Hello from AgentTier!\n", "", 0)
    out = code.exec("echo oops >&2; exit 7")
    assert (out.stdout, out.stderr, out.exit_code) == ("", "oops\n", 7)
    assert code.exec("pwd").stdout == "/workspace\n"
    agent = _agent(client, "compat-exec-agent")
    assert agent.exec("printf agent").stdout == "agent"
    code.stop()
    with pytest.raises(ConflictError):
        code.exec("true")


def test_sdk_files_write_read_list(client, tmp_path):
    sbx = _agent(client, "compat-files", template="general-coding")
    sbx.files.write("/workspace/hello.py", "print('works!')")
    assert sbx.files.read("/workspace/hello.py") == b"print('works!')"
    blob = bytes(range(256)) * (3 * 4096 + 7)  # 3 MiB and a bit, binary
    sbx.files.write("/workspace/data/blob.bin", blob)
    assert sbx.files.read("/workspace/data/blob.bin") == blob
    dest = tmp_path / "blob.bin"
    assert sbx.files.download("/workspace/data/blob.bin", str(dest)) == len(blob)
    assert dest.read_bytes() == blob

    entries = {e.name: e for e in sbx.files.list()}
    assert set(entries) == {"hello.py", "data"}
    assert entries["data"].is_dir and entries["data"].mode.startswith("d")
    hello = entries["hello.py"]
    assert (hello.size, hello.is_dir, hello.mode) == (15, False, "-rw-r--r--")
    assert isinstance(hello.modified_at, int) and hello.modified_at > 1_600_000_000
    [blob_entry] = sbx.files.list("/workspace/data")
    assert (blob_entry.name, blob_entry.size) == ("blob.bin", len(blob))

    assert sbx.exec("cat hello.py").stdout == "print('works!')"
    with pytest.raises(NotFoundError):
        sbx.files.read("/workspace/missing.txt")
    with pytest.raises(NotFoundError):
        sbx.files.list("/workspace/missing")
    with pytest.raises(APIError) as bad:
        sbx.files.read("/etc/passwd")
    assert bad.value.status_code == 400
