"""The sync client against a real `agenttier up`."""

from __future__ import annotations

from pathlib import Path

import pytest

import agenttier
from agenttier import (
    AgentTierClient,
    APIError,
    AuthenticationError,
    AuthorizationError,
    ConcurrencyLimitError,
    ConflictError,
    ExitEvent,
    GapEvent,
    LogEvent,
    NotFoundError,
    SandboxPhase,
    StartEvent,
    StreamInterruptedError,
)
from _support import (
    BINARY,
    COUNTER,
    ENTRY,
    HELLO,
    HELLO_TEXT,
    SLEEPER,
    DroppingTransport,
    eventually,
    skip_if_not_built,
    summarize,
)


def agent(client: AgentTierClient, name: str, code: bytes = HELLO, template: str = "langgraph-agent"):
    sb = client.create_sandbox(template, name)
    sb.wait_until_running(timeout=30, poll_interval=0.1)
    sb.agent.configure(files=[("/workspace/agent.py", code)], entrypoint=ENTRY)
    return sb


# -- quickstart, configure, invoke ----------------------------------------------------


def test_seed_quickstart(client, name):
    sb = client.create_sandbox(template="langgraph-agent", name=name)
    assert (sb.id, sb.name, sb.namespace) == (name, name, "default")
    assert sb.info.status == "Creating" and sb.info.mode == "agent"
    info = sb.wait_until_running()
    assert info.phase is SandboxPhase.RUNNING

    result = sb.agent.configure(
        files=[{"path": "/workspace/agent.py", "content": HELLO_TEXT}],
        entrypoint=["python", "/workspace/agent.py"],
    )
    assert result.install_exit_code == 0 and not result.skipped
    assert result.entrypoint == ENTRY and len(result.install_command_hash or "") == 64
    assert result.last_configured_at is not None

    out = sb.agent.invoke("world")
    assert (out.stdout, out.stderr, out.exit_code, out.reason) == ("hello world", "", 0, "completed")
    assert out.ok and out.invoke_id.startswith("inv-") and len(out.invoke_id) == 28
    assert out.stdout_bytes == b"hello world"


def test_configure_is_idempotent_and_streams_logs(client, name, tmp_path: Path):
    sb = client.create_sandbox("langgraph-agent", name)
    sb.wait_until_running(poll_interval=0.1)
    local = tmp_path / "agent.py"
    local.write_bytes(HELLO)
    logs: list[tuple[str, str]] = []
    files = [("/workspace/agent.py", str(local)), ("/workspace/blob.bin", b"\x00\xff\x10"),
             ("/workspace/notes.txt", "two\nlines\n")]
    first = sb.agent.configure(files=files, install_command="sh -c 'echo installing; echo warn >&2'",
                               entrypoint=ENTRY, on_log=lambda s, line: logs.append((s, line)))
    assert not first.skipped and first.install_exit_code == 0
    assert ("stdout", "[configure] uploading /workspace/agent.py") in logs
    assert ("stdout", "installing") in logs and ("stderr", "warn") in logs
    assert any(line.startswith("[configure] running install:") for _, line in logs)
    assert first.logs == logs
    assert "installing" in sb.agent.install_log()

    again_logs: list[tuple[str, str]] = []
    again = sb.agent.configure(files=files, install_command=["sh", "-c", "echo installing; echo warn >&2"],
                               entrypoint=ENTRY, on_log=lambda s, line: again_logs.append((s, line)))
    assert again.skipped and again.install_command_hash == first.install_command_hash
    assert not any("installing" == line for _, line in again_logs)

    # The non-UTF-8 file went as contentBase64 and arrived intact.
    sb.agent.configure(files=[("/workspace/agent.py",
                               b"print(open('/workspace/blob.bin','rb').read().hex())\n")])
    assert sb.agent.invoke().stdout == "00ff10"
    status = sb.status()
    assert status.agent_configure is not None and status.agent_configure.entrypoint == ENTRY


def test_failed_install_is_reported_not_raised(client, name):
    sb = agent(client, name)
    lines: list[tuple[str, str]] = []
    result = sb.agent.configure(install_command=["sh", "-c", "echo boom >&2; exit 3"],
                                entrypoint=["python", "/nonexistent.py"],
                                on_log=lambda s, line: lines.append((s, line)))
    assert result.install_exit_code == 3
    assert ("stderr", "boom") in lines
    # the previous entrypoint stays active
    assert sb.agent.invoke("still").stdout == "hello still"


def test_configure_file_sources_are_checked(client, name):
    sb = client.create_sandbox("langgraph-agent", name)
    with pytest.raises(FileNotFoundError):
        sb.agent.configure(files=[("/workspace/a.py", "./no-such-file.py")])
    with pytest.raises(ValueError):
        sb.agent.configure()


def test_invoke_with_prompt_and_dict_payload(client, name):
    sb = agent(client, name, b'import sys\nprint(sys.argv[1:], sys.stdin.read())\n')
    assert sb.agent.invoke(prompt="summarize this PR").stdout == "['--prompt=summarize this PR'] summarize this PR"
    assert sb.agent.invoke({"prompt": "summarize this PR"}).stdout == '[] {"prompt": "summarize this PR"}'
    assert sb.agent.invoke(b"raw", prompt="p").stdout == "['--prompt=p'] raw"
    failing = sb.agent.configure(files=[("/workspace/agent.py", b"import sys\nsys.exit(7)\n")])
    assert failing.install_exit_code == 0
    out = sb.agent.invoke()
    assert (out.exit_code, out.reason, out.ok) == (7, "completed", False)


def test_invoke_stream_and_cancel(client, name):
    sb = agent(client, name, SLEEPER)
    events = []
    with sb.agent.invoke_stream() as stream:
        for event in stream:
            events.append(event)
            if isinstance(event, LogEvent) and event.text == "ready":
                stream.cancel()
    assert isinstance(events[0], StartEvent) and events[0].invoke_id == stream.invoke_id
    exit_event = events[-1]
    assert isinstance(exit_event, ExitEvent)
    assert (exit_event.reason, exit_event.exit_code) == ("canceled", -1)
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    sb.agent.invoke_cancel(stream.invoke_id)  # already canceled: 204 again
    with pytest.raises(NotFoundError):
        sb.agent.invoke_cancel("inv-" + "0" * 24)
    assert any(i.invoke_id == stream.invoke_id for i in sb.agent.list_invokes())


def test_invoke_cancel_from_another_handle(client, name):
    sb = agent(client, name, SLEEPER)
    stream = sb.agent.invoke_stream("x")
    first = next(stream)
    assert isinstance(first, StartEvent)
    client.get_sandbox(name).agent.invoke_cancel(first.invoke_id)
    rest = list(stream)
    assert isinstance(rest[-1], ExitEvent) and rest[-1].reason == "canceled"


def test_stream_resumes_after_dropped_connections(server, name):
    transport = DroppingTransport(drops=[3, 4], rewind=2)
    with AgentTierClient(server.url, server.key, transport=transport) as c:
        sb = agent(c, name, COUNTER)
        stream = sb.agent.invoke_stream()
        events = list(stream)
    assert stream.resumes == 2
    ids = [e.id for e in events]
    assert ids == list(range(1, len(events) + 1)), summarize(events)
    assert isinstance(events[0], StartEvent) and isinstance(events[-1], ExitEvent)
    assert not any(isinstance(e, GapEvent) for e in events)
    assert [e.text for e in events if isinstance(e, LogEvent)] == [f"line {i}" for i in range(30)]
    assert events[-1].reason == "completed" and events[-1].exit_code == 0
    # Each resume asked for the events after the last one delivered (minus the rewind,
    # which made the server send duplicates that the client dropped).
    assert transport.resume_headers == ["1", "3"]


def test_invoke_result_survives_a_drop_after_the_run_ended(server, name):
    transport = DroppingTransport(drops=[1])
    with AgentTierClient(server.url, server.key, transport=transport) as c:
        sb = agent(c, name)
        out = sb.agent.invoke("again")
    assert (out.stdout, out.exit_code) == ("hello again", 0)


def test_drop_before_start_retries_with_the_idempotency_key(server, name):
    transport = DroppingTransport(drops=[0])
    with AgentTierClient(server.url, server.key, transport=transport) as c:
        sb = agent(c, name)
        out = sb.agent.invoke("once")
        assert (out.stdout, out.exit_code) == ("hello once", 0)
        assert [i.invoke_id for i in sb.agent.list_invokes()] == [out.invoke_id]  # one run, not two
    keys = transport.invoke_keys
    assert len(keys) == 2 and keys[0] == keys[1] and keys[0].startswith("sdk-")


def test_resume_gives_up_after_its_budget_then_attach_finishes(server, client, name):
    transport = DroppingTransport(drops=[1, 0, 0, 0])
    policy = agenttier.ResumePolicy(max_attempts=3, base_delay=0.01)
    with AgentTierClient(server.url, server.key, transport=transport, resume=policy) as c:
        sb = agent(c, name)
        with pytest.raises(StreamInterruptedError) as e:
            list(sb.agent.invoke_stream("late"))
    err = e.value
    assert err.invoke_id and err.last_event_id == 1 and "attach(" in str(err)
    rest = list(client.get_sandbox(name).agent.attach(err.invoke_id, after=err.last_event_id))
    assert [(ev.event, ev.id) for ev in rest] == [("log", 2), ("exit", 3)]
    assert rest[0].text == "hello late"


def test_attach_replays_a_finished_invoke(client, name):
    sb = agent(client, name)
    out = sb.agent.invoke("world")
    events = list(sb.agent.attach(out.invoke_id, after=1))
    assert [e.event for e in events] == ["log", "exit"] and events[0].id == 2
    assert events[0].text == "hello world"


def test_binary_output_is_decoded_from_base64(client, name):
    sb = agent(client, name, BINARY)
    out = sb.agent.invoke()
    assert out.stdout_bytes == b"ok\xff\xfe\nplain"
    assert out.stdout == "ok\ufffd\ufffd\nplain"
    assert out.stderr_bytes == b"\x80err" and out.stderr == "\ufffderr"
    logs = [e for e in sb.agent.invoke_stream() if isinstance(e, LogEvent)]
    first = next(e for e in logs if e.stream == "stdout")
    assert first.encoding == "base64" and first.raw == b"ok\xff\xfe"


# -- sandboxes, templates, identity ----------------------------------------------------


def test_sandboxes_templates_and_identity(client, name):
    sb = client.create_sandbox("general-coding", name)
    info = sb.wait_until_running(timeout=30, poll_interval=0.1)
    assert info.mode == "code" and info.template_ref == "general-coding"
    assert info.created_by is not None and info.created_by.email == "admin@localhost"
    assert info.created_at_datetime is not None
    listed = {s.sandbox_id: s for s in client.list_sandboxes(status="Running")}
    assert listed[name].namespace == "default"
    assert client.sandbox(listed[name]).id == name
    assert client.get_sandbox(name).name == name
    templates = {t.name: t for t in client.list_templates()}
    assert {"langgraph-agent", "python-agent", "general-coding", "capped"} <= set(templates)
    assert templates["capped"].mode == "agent"
    assert client.get_template("capped").spec["agent"]["maxConcurrentInvokes"] == 1
    me = client.current_user()
    assert me.is_admin and me.sub == "admin" and me.groups == []

    sb.stop()
    assert eventually(lambda: sb.status().status == "Stopped")
    assert name in {s.sandbox_id for s in client.list_sandboxes(status="stopped")}
    sb.resume()
    assert sb.wait_until_running(timeout=30, poll_interval=0.1).phase is SandboxPhase.RUNNING
    sb.delete()

    def gone() -> bool:
        try:
            sb.status()
        except NotFoundError:
            return True
        return False

    assert eventually(gone)


def test_env_fallbacks(server, monkeypatch):
    monkeypatch.setenv("AGENTTIER_API_URL", server.url + "/api/v1/")
    monkeypatch.setenv("AGENTTIER_API_KEY", server.key)
    with AgentTierClient() as c:
        assert c.api_url == server.url
        assert c.current_user().is_admin
    monkeypatch.delenv("AGENTTIER_API_URL")
    with AgentTierClient() as c:
        assert c.api_url == "http://127.0.0.1:8080"


# -- errors ------------------------------------------------------------------------------


def test_401_authentication_error(server, monkeypatch):
    with AgentTierClient(server.url, "atk_wrong") as c:
        with pytest.raises(AuthenticationError) as e:
            c.current_user()
    assert (e.value.status_code, e.value.code) == (401, "invalid_api_key")
    monkeypatch.delenv("AGENTTIER_API_KEY", raising=False)
    monkeypatch.delenv("AGENTTIER_TOKEN", raising=False)
    with AgentTierClient(server.url) as c:
        with pytest.raises(AuthenticationError) as e:
            c.list_sandboxes()
    assert e.value.code == "missing_authorization"


def test_403_authorization_error_and_ownership(server, client, name):
    minted = client.request("POST", "/user/api-keys", json={"sub": f"user-{name}", "email": "u@example.com"})
    client.create_sandbox("langgraph-agent", name)
    with AgentTierClient(server.url, minted["key"]) as user:
        with pytest.raises(AuthorizationError) as e:
            user.request("POST", "/user/api-keys", json={"sub": "someone-else"})
        assert e.value.status_code == 403 and e.value.code == "forbidden"
        with pytest.raises(NotFoundError):
            user.get_sandbox(name)  # not theirs: 404, as if it did not exist
        assert not user.current_user().is_admin


def test_404_not_found(client):
    with pytest.raises(NotFoundError) as e:
        client.get_sandbox("no-such-sandbox")
    assert e.value.code == "not_found" and str(e.value) == "sandbox not found"
    with pytest.raises(NotFoundError) as e:
        client.get_template("no-such-template")
    assert e.value.code == "template_not_found"


def test_409_conflicts(client, name):
    sb = agent(client, name)
    with pytest.raises(ConflictError) as e:
        client.create_sandbox("langgraph-agent", name)
    assert e.value.code == "already_exists"
    sb.stop()
    with pytest.raises(ConflictError) as e:
        sb.agent.invoke("x")
    assert e.value.code == "invalid_phase" and e.value.status_code == 409
    with pytest.raises(ConflictError):
        sb.stop()


def test_429_concurrency_limit(client, name):
    sb = agent(client, name, SLEEPER, template="capped")
    with sb.agent.invoke_stream() as running:
        assert isinstance(next(running), StartEvent)
        with pytest.raises(ConcurrencyLimitError) as e:
            sb.agent.invoke("second")
        running.cancel()
        assert list(running)[-1].reason == "canceled"
    err = e.value
    assert isinstance(err, APIError) and err.status_code == 429 and err.code == "concurrency_exceeded"
    assert isinstance(err.retry_after, int) and err.retry_after >= 1
    assert (err.inflight, err.limit) == (1, 1)
    sb.agent.configure(files=[("/workspace/agent.py", HELLO)])
    assert sb.agent.invoke("after").stdout == "hello after"  # the slot is free again


def test_400_and_424_api_errors(client, name):
    with pytest.raises(APIError) as e:
        client.create_sandbox("langgraph-agent", "Not_A_Label")
    assert e.value.status_code == 400 and e.value.code == "invalid_request"
    assert str(e.value).startswith("400: name")
    sb = client.create_sandbox("langgraph-agent", name)
    sb.wait_until_running(poll_interval=0.1)
    with pytest.raises(APIError) as e:
        sb.agent.invoke("x")
    assert e.value.status_code == 424 and "configure" in e.value.message
    with pytest.raises(APIError) as e:
        sb.agent.invoke("x", invoke_timeout="soon")
    assert e.value.status_code == 400 and e.value.code == "invalid_timeout"
    code = client.create_sandbox("general-coding", name + "-code")
    code.wait_until_running(poll_interval=0.1)
    with pytest.raises(APIError) as e:
        code.agent.configure(entrypoint=ENTRY)
    assert e.value.code == "invalid_mode" and "mode: agent" in str(e.value)  # message, not the code


# -- code mode (exec, files): skipped until the server has the routes ------------------


def test_exec(client, name):
    sb = client.create_sandbox("general-coding", name)
    sb.wait_until_running(poll_interval=0.1)
    try:
        out = sb.exec("echo hello; echo oops >&2; exit 3")
    except agenttier.AgentTierError as error:
        skip_if_not_built(error)
        raise
    assert (out.stdout, out.stderr, out.exit_code, out.timed_out) == ("hello\n", "oops\n", 3, False)
    assert sb.exec(["python", "-c", "import sys; print(sys.stdin.read().upper())"], stdin="abc").stdout == "ABC\n"
    slow = sb.exec("sleep 5", timeout=1)
    assert slow.timed_out


def test_files(client, name):
    sb = client.create_sandbox("general-coding", name)
    sb.wait_until_running(poll_interval=0.1)
    try:
        written = sb.files.write("/workspace/dir/a.txt", "hi")
    except agenttier.AgentTierError as error:
        skip_if_not_built(error)
        raise
    assert (written.path, written.bytes) == ("/workspace/dir/a.txt", 2)
    sb.files.write("dir/b.bin", b"\x00\xff")
    entries = {e.name: e for e in sb.files.list("/workspace/dir")}
    assert set(entries) == {"a.txt", "b.bin"}
    assert entries["a.txt"].size == 2 and not entries["a.txt"].is_dir
    assert any(e.name == "dir" and e.is_dir for e in sb.files.list())
    assert sb.files.read("/workspace/dir/a.txt") == b"hi"
    assert sb.files.read("/workspace/dir/b.bin") == b"\x00\xff"
    sb.files.delete("/workspace/dir/a.txt")
    with pytest.raises(NotFoundError):
        sb.files.read("/workspace/dir/a.txt")
    with pytest.raises(APIError) as e:
        sb.files.read("/etc/passwd")
    assert e.value.status_code in (400, 403, 404)
