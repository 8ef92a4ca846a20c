"""The async client against a real `agenttier up`: the same behaviour as the sync one."""

from __future__ import annotations

import asyncio

import pytest

import agenttier
from agenttier import (
    APIError,
    AsyncAgentTierClient,
    AuthenticationError,
    AuthorizationError,
    ConcurrencyLimitError,
    ConflictError,
    ExitEvent,
    LogEvent,
    NotFoundError,
    SandboxPhase,
    StartEvent,
)
from _support import (
    BINARY,
    COUNTER,
    ENTRY,
    HELLO,
    HELLO_TEXT,
    SLEEPER,
    AsyncDroppingTransport,
    skip_if_not_built,
    summarize,
)


async def agent(client: AsyncAgentTierClient, name: str, code: bytes = HELLO, template: str = "langgraph-agent"):
    sb = await client.create_sandbox(template, name)
    await sb.wait_until_running(timeout=30, poll_interval=0.1)
    await sb.agent.configure(files=[("/workspace/agent.py", code)], entrypoint=ENTRY)
    return sb


async def test_seed_quickstart(aclient, name):
    sb = await aclient.create_sandbox(template="langgraph-agent", name=name)
    assert (sb.id, sb.namespace, sb.info.status) == (name, "default", "Creating")
    info = await sb.wait_until_running()
    assert info.phase is SandboxPhase.RUNNING
    result = await sb.agent.configure(
        files=[{"path": "/workspace/agent.py", "content": HELLO_TEXT}],
        entrypoint=["python", "/workspace/agent.py"],
    )
    assert result.install_exit_code == 0 and not result.skipped and result.entrypoint == ENTRY
    out = await sb.agent.invoke("world")
    assert (out.stdout, out.exit_code, out.reason) == ("hello world", 0, "completed")
    assert out.invoke_id.startswith("inv-")


async def test_configure_is_idempotent_and_streams_logs(aclient, name):
    sb = await aclient.create_sandbox("langgraph-agent", name)
    await sb.wait_until_running(poll_interval=0.1)
    logs: list[tuple[str, str]] = []
    files = [("/workspace/agent.py", HELLO), ("/workspace/blob.bin", b"\xfe\x00")]
    first = await sb.agent.configure(files=files, install_command=["sh", "-c", "echo step"], entrypoint=ENTRY,
                                     on_log=lambda s, line: logs.append((s, line)))
    assert not first.skipped and ("stdout", "step") in logs
    assert ("stdout", "[configure] uploading /workspace/blob.bin") in logs
    again = await sb.agent.configure(files=files, install_command=["sh", "-c", "echo step"], entrypoint=ENTRY)
    assert again.skipped and again.install_command_hash == first.install_command_hash
    assert (await sb.agent.install_log()).strip() == "step"


async def test_invoke_with_prompt_and_dict_payload(aclient, name):
    sb = await agent(aclient, name, b'import sys\nprint(sys.argv[1:], sys.stdin.read())\n')
    assert (await sb.agent.invoke(prompt="hi")).stdout == "['--prompt=hi'] hi"
    assert (await sb.agent.invoke({"prompt": "summarize this PR"})).stdout == '[] {"prompt": "summarize this PR"}'
    assert (await sb.agent.invoke([1, 2])).stdout == "[] [1, 2]"


async def test_invoke_stream_and_cancel(aclient, name):
    sb = await agent(aclient, name, SLEEPER)
    events = []
    async with sb.agent.invoke_stream() as stream:
        async for event in stream:
            events.append(event)
            if isinstance(event, LogEvent) and event.text == "ready":
                await sb.agent.invoke_cancel(stream.invoke_id)
    assert isinstance(events[0], StartEvent)
    assert isinstance(events[-1], ExitEvent) and events[-1].reason == "canceled" and events[-1].exit_code == -1
    assert stream.finished


async def test_stream_resumes_after_dropped_connections(server, name):
    transport = AsyncDroppingTransport(drops=[2, 5, 1], rewind=3)
    async with AsyncAgentTierClient(server.url, server.key, transport=transport) as c:
        sb = await agent(c, name, COUNTER)
        stream = sb.agent.invoke_stream()
        events = [e async for e in stream]
    assert stream.resumes == 3
    assert [e.id for e in events] == list(range(1, len(events) + 1)), summarize(events)
    assert [e.text for e in events if isinstance(e, LogEvent)] == [f"line {i}" for i in range(30)]
    assert isinstance(events[-1], ExitEvent) and events[-1].exit_code == 0
    # Last ids seen 2, 5, 5 (the third connection brought only a duplicate), minus the rewind.
    assert transport.resume_headers == ["0", "2", "2"]


async def test_drop_before_start_retries_with_the_idempotency_key(server, name):
    transport = AsyncDroppingTransport(drops=[0, 0])
    async with AsyncAgentTierClient(server.url, server.key, transport=transport) as c:
        sb = await agent(c, name)
        out = await sb.agent.invoke("once", idempotency_key="my-key-1")
        assert out.stdout == "hello once"
        assert len(await sb.agent.list_invokes()) == 1
    assert transport.invoke_keys == ["my-key-1"] * 3


async def test_binary_output_is_decoded_from_base64(aclient, name):
    sb = await agent(aclient, name, BINARY)
    out = await sb.agent.invoke()
    assert out.stdout_bytes == b"ok\xff\xfe\nplain" and out.stdout == "ok\ufffd\ufffd\nplain"
    assert out.stderr_bytes == b"\x80err"


async def test_concurrent_invokes_and_the_cap(aclient, name):
    sb = await agent(aclient, name + "-four")  # langgraph-agent: 4 at a time
    results = await asyncio.gather(*(sb.agent.invoke(str(i)) for i in range(4)))
    assert sorted(r.stdout for r in results) == [f"hello {i}" for i in range(4)]

    capped = await agent(aclient, name, SLEEPER, template="capped")
    async with capped.agent.invoke_stream() as running:
        assert isinstance(await running.__anext__(), StartEvent)
        with pytest.raises(ConcurrencyLimitError) as e:
            await capped.agent.invoke("second")
        await running.cancel()
        assert [ev async for ev in running][-1].reason == "canceled"
    assert e.value.retry_after >= 1 and e.value.limit == 1 and e.value.inflight == 1


async def test_errors(server, aclient, name):
    async with AsyncAgentTierClient(server.url, "atk_wrong") as bad:
        with pytest.raises(AuthenticationError) as e401:
            await bad.current_user()
    assert e401.value.code == "invalid_api_key"

    minted = await aclient.request("POST", "/user/api-keys", json={"sub": f"async-{name}"})
    async with AsyncAgentTierClient(server.url, minted["key"]) as user:
        with pytest.raises(AuthorizationError):
            await user.request("POST", "/user/api-keys", json={"sub": "someone-else"})

    with pytest.raises(NotFoundError):
        await aclient.get_sandbox("no-such-sandbox")

    with pytest.raises(APIError) as e400:
        await aclient.create_sandbox("langgraph-agent", "-bad-")
    assert e400.value.status_code == 400

    sb = await agent(aclient, name)
    with pytest.raises(ConflictError):
        await aclient.create_sandbox("langgraph-agent", name)
    await sb.stop()
    with pytest.raises(ConflictError) as e409:
        await sb.agent.invoke("x")
    assert e409.value.code == "invalid_phase"
    await sb.resume()
    await sb.wait_until_running(timeout=30, poll_interval=0.1)
    assert (await sb.agent.invoke("back")).stdout == "hello back"


async def test_listing_and_identity(aclient, name):
    sb = await aclient.create_sandbox("general-coding", name)
    await sb.wait_until_running(poll_interval=0.1)
    assert name in {s.sandbox_id for s in await aclient.list_sandboxes(namespace="default")}
    assert (await aclient.get_sandbox(name)).info.mode == "code"
    assert "capped" in {t.name for t in await aclient.list_templates()}
    assert (await aclient.get_template("general-coding")).mode == "code"
    assert (await aclient.current_user()).is_admin
    await sb.delete()


async def test_exec_and_files(aclient, name):
    sb = await aclient.create_sandbox("general-coding", name)
    await sb.wait_until_running(poll_interval=0.1)
    try:
        out = await sb.exec(["sh", "-c", "echo async; exit 2"])
    except agenttier.AgentTierError as error:
        skip_if_not_built(error)
        raise
    assert (out.stdout, out.exit_code) == ("async\n", 2)
    try:
        await sb.files.write("/workspace/x.txt", "data")
    except agenttier.AgentTierError as error:
        skip_if_not_built(error)
        raise
    assert await sb.files.read("x.txt") == b"data"
    assert "x.txt" in {e.name for e in await sb.files.list()}
    await sb.files.delete("x.txt")
    with pytest.raises(NotFoundError):
        await sb.files.read("x.txt")
