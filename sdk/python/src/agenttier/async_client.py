"""The asynchronous client: :class:`AsyncAgentTierClient`, :class:`AsyncSandbox` and
its ``files`` and ``agent`` parts, with the same surface as the sync client (every
call is awaited; streams are ``async for``). Requests are built and parsed in
``_core``; this module only sends them (``client.py`` is its twin, and documents
each method in full)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from agenttier import _core
from agenttier._core import ConfigureFile, Duration, InvokePayload, ResumePolicy
from agenttier._sse import aiter_sse
from agenttier.auth import AuthProvider, resolve_auth
from agenttier.exceptions import AgentTierError, SandboxTimeoutError
from agenttier.models import (
    ConfigureResult,
    CurrentUser,
    ExecResult,
    FileEntry,
    InvokeEvent,
    InvokeInfo,
    InvokeResult,
    SandboxSummary,
    Template,
    WriteResult,
)

__all__ = ["AsyncAgentTierClient", "AsyncSandbox", "AsyncFilesAPI", "AsyncAgentAPI", "AsyncInvokeStream"]

T = TypeVar("T")


class AsyncAgentTierClient:
    """An asynchronous client for the AgentTier API; arguments as
    :class:`agenttier.AgentTierClient` (``transport`` is an
    :class:`httpx.AsyncBaseTransport`).

    Use it as an async context manager, or await :meth:`aclose`::

        async with AsyncAgentTierClient() as client:
            sandbox = await client.create_sandbox("langgraph-agent", "demo-agent")
    """

    def __init__(
        self,
        api_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
        *,
        auth: AuthProvider | None = None,
        verify: bool | str = True,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
        resume: ResumePolicy | None = None,
    ) -> None:
        self.api_url = _core.resolve_api_url(api_url)
        self.timeout = timeout
        self.resume_policy = resume or ResumePolicy()
        self._http = httpx.AsyncClient(
            base_url=self.api_url + _core.API_PREFIX,
            auth=resolve_auth(api_key, auth),
            timeout=httpx.Timeout(timeout),
            headers={"User-Agent": _core.USER_AGENT, **dict(headers or {})},
            verify=verify,
            transport=transport,
        )

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> AsyncAgentTierClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the connections."""
        await self._http.aclose()

    #: Same as :meth:`aclose`.
    close = aclose

    def __repr__(self) -> str:
        return f"AsyncAgentTierClient(api_url={self.api_url!r})"

    # -- I/O -------------------------------------------------------------------------

    async def _call(self, call: _core.Call[T]) -> T:
        request = self._http.build_request(call.request.method, call.request.path, **call.request.kwargs())
        try:
            response = await self._http.send(request)
        except httpx.TransportError as error:
            raise _core.connection_error(error) from error
        _core.raise_for_response(response)
        return call.parse(response)

    async def _open_stream(self, spec: _core.Request) -> httpx.Response:
        request = self._http.build_request(spec.method, spec.path, **spec.kwargs())
        try:
            response = await self._http.send(request, stream=True)
        except httpx.TransportError as error:
            raise _core.connection_error(error) from error
        if response.status_code >= 400:
            try:
                await response.aread()
            except httpx.TransportError:
                pass
            finally:
                await response.aclose()
            _core.raise_for_response(response)
        return response

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Sends a request to any route under ``/api/v1``; returns its JSON body."""
        return await self._call(_core.raw_call(method, path, params=params, json=json, content=content,
                                               headers=headers))

    # -- sandboxes -----------------------------------------------------------------

    async def create_sandbox(
        self,
        template: str,
        name: str,
        namespace: str = "default",
        timeout: str | None = None,
        idle_timeout: str | None = None,
        storage_size: str | None = None,
        *,
        mode: str | None = None,
        template_kind: str = "ClusterSandboxTemplate",
        template_namespace: str | None = None,
        image: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> AsyncSandbox:
        """Creates a sandbox from a template (see :meth:`AgentTierClient.create_sandbox`)."""
        summary = await self._call(_core.create_sandbox(
            template, name, namespace, mode=mode, template_kind=template_kind,
            template_namespace=template_namespace, image=image, env=env, timeout=timeout,
            idle_timeout=idle_timeout, storage_size=storage_size,
        ))
        return AsyncSandbox(self, summary)

    async def get_sandbox(self, sandbox_id: str, namespace: str | None = None) -> AsyncSandbox:
        """Returns the handle of an existing sandbox. Raises :class:`NotFoundError`."""
        return AsyncSandbox(self, await self._call(_core.get_sandbox(sandbox_id, namespace)))

    async def list_sandboxes(
        self, namespace: str | None = None, status: str | None = None
    ) -> list[SandboxSummary]:
        """Lists the caller's sandboxes, optionally by namespace and/or phase."""
        return await self._call(_core.list_sandboxes(namespace, status))

    def sandbox(self, summary: SandboxSummary) -> AsyncSandbox:
        """The handle for a :class:`SandboxSummary` from :meth:`list_sandboxes`."""
        return AsyncSandbox(self, summary)

    # -- templates, identity --------------------------------------------------------

    async def list_templates(self, namespace: str | None = None) -> list[Template]:
        """Lists the templates."""
        return await self._call(_core.list_templates(namespace))

    async def get_template(self, name: str, namespace: str | None = None) -> Template:
        """Returns one template. Raises :class:`NotFoundError` when unknown."""
        return await self._call(_core.get_template(name, namespace))

    async def current_user(self) -> CurrentUser:
        """Returns the caller as the server sees it."""
        return await self._call(_core.current_user())


class AsyncSandbox:
    """A handle to one sandbox (async); see :class:`agenttier.Sandbox`."""

    def __init__(self, client: AsyncAgentTierClient, info: SandboxSummary) -> None:
        self._client = client
        self.info = info
        self.files = AsyncFilesAPI(self)
        self.agent = AsyncAgentAPI(self)

    @property
    def id(self) -> str:
        """The sandbox's id (its name)."""
        return self.info.sandbox_id

    @property
    def name(self) -> str:
        """The sandbox's name."""
        return self.info.name

    @property
    def namespace(self) -> str:
        """The sandbox's namespace."""
        return self.info.namespace

    @property
    def client(self) -> AsyncAgentTierClient:
        """The client this handle uses."""
        return self._client

    def __repr__(self) -> str:
        return f"AsyncSandbox(id={self.id!r}, namespace={self.namespace!r}, status={self.info.status!r})"

    async def status(self) -> SandboxSummary:
        """Fetches the sandbox's current state (also kept in :attr:`info`)."""
        self.info = await self._client._call(_core.get_sandbox(self.id, self.namespace))
        return self.info

    async def wait_until_running(self, timeout: float = 120, poll_interval: float = 0.5) -> SandboxSummary:
        """Polls until ``Running``. Raises :class:`SandboxTimeoutError` or
        :class:`SandboxErrorState`."""
        deadline = time.monotonic() + timeout
        while True:
            if _core.check_running(await self.status()):
                return self.info
            if time.monotonic() + poll_interval > deadline:
                raise SandboxTimeoutError(
                    f"sandbox {self.id} did not reach Running within {timeout:g}s "
                    f"(last phase: {self.info.status})"
                )
            await asyncio.sleep(poll_interval)

    async def stop(self) -> None:
        """Stops the sandbox (``/workspace`` is kept)."""
        await self._client._call(_core.sandbox_action(self.id, self.namespace, "stop"))

    async def resume(self) -> None:
        """Resumes a stopped sandbox."""
        await self._client._call(_core.sandbox_action(self.id, self.namespace, "resume"))

    async def delete(self) -> None:
        """Deletes the sandbox and its workspace."""
        await self._client._call(_core.delete_sandbox(self.id, self.namespace))

    #: The v0.8 SDK's name for :meth:`delete`.
    terminate = delete

    async def exec(
        self, command: str | Sequence[str], timeout: float = 30, *, stdin: str | None = None
    ) -> ExecResult:
        """Runs a command (a shell string or an argv list) and waits for it."""
        return await self._client._call(_core.exec_command(
            self.id, self.namespace, command, timeout, stdin, self._client.timeout))


class AsyncFilesAPI:
    """A sandbox's files (async); see :class:`agenttier.client.FilesAPI`."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sandbox = sandbox

    async def _call(self, call: _core.Call[T]) -> T:
        return await self._sandbox._client._call(call)

    async def list(self, path: str = "/workspace") -> list[FileEntry]:
        """Lists a directory."""
        return await self._call(_core.files_list(self._sandbox.id, self._sandbox.namespace, path))

    async def read(self, path: str) -> bytes:
        """Returns a file's bytes."""
        return await self._call(_core.files_read(self._sandbox.id, self._sandbox.namespace, path))

    async def read_text(self, path: str, encoding: str = "utf-8") -> str:
        """Returns a file decoded as text."""
        return (await self.read(path)).decode(encoding)

    async def write(self, path: str, data: bytes | str) -> WriteResult:
        """Creates or replaces a file."""
        return await self._call(_core.files_write(self._sandbox.id, self._sandbox.namespace, path, data))

    async def upload(self, path: str, source: str | os.PathLike[str]) -> WriteResult:
        """Uploads the local file ``source`` to ``path``."""
        return await self.write(path, Path(source).read_bytes())

    async def download(self, path: str, destination: str | os.PathLike[str]) -> int:
        """Saves a file to a local path; returns its size."""
        data = await self.read(path)
        Path(destination).write_bytes(data)
        return len(data)

    async def delete(self, path: str) -> None:
        """Deletes a file."""
        await self._call(_core.files_delete(self._sandbox.id, self._sandbox.namespace, path))


class AsyncAgentAPI:
    """A sandbox's agent mode (async); see :class:`agenttier.client.AgentAPI`."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sandbox = sandbox

    async def configure(
        self,
        files: Sequence[ConfigureFile] | None = None,
        install_command: str | Sequence[str] | None = None,
        entrypoint: str | Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        on_log: Callable[[str, str], None] | None = None,
        timeout: float | None = None,
    ) -> ConfigureResult:
        """Uploads files, runs an install command and sets the entrypoint (see
        :meth:`agenttier.client.AgentAPI.configure`). ``on_log`` is a plain callable."""
        spec = _core.configure_request(self._sandbox.id, self._sandbox.namespace, files, install_command,
                                       entrypoint, env, self._sandbox._client.timeout, timeout)
        reader = _core.ConfigureStream(on_log)
        response = await self._sandbox._client._open_stream(spec)
        try:
            async for sse in aiter_sse(response.aiter_bytes()):
                reader.add(sse)
        except httpx.TransportError as error:
            raise _core.connection_error(error, "configure stream") from error
        finally:
            await response.aclose()
        return reader.finish()

    async def invoke(
        self,
        payload: InvokePayload = None,
        *,
        prompt: str | None = None,
        invoke_timeout: Duration | None = None,
        timeout: float | None = None,
        detach: bool = False,
        idempotency_key: str | None = None,
        on_event: Callable[[InvokeEvent], None] | None = None,
    ) -> InvokeResult:
        """Runs the entrypoint once and returns its result (see
        :meth:`agenttier.client.AgentAPI.invoke`)."""
        collector = _core.InvokeCollector()
        async with self.invoke_stream(payload, prompt=prompt, invoke_timeout=invoke_timeout,
                                      timeout=timeout, detach=detach,
                                      idempotency_key=idempotency_key) as stream:
            async for event in stream:
                if on_event is not None:
                    on_event(event)
                collector.add(event)
        return collector.result()

    def invoke_stream(
        self,
        payload: InvokePayload = None,
        *,
        prompt: str | None = None,
        invoke_timeout: Duration | None = None,
        timeout: float | None = None,
        detach: bool = False,
        idempotency_key: str | None = None,
    ) -> AsyncInvokeStream:
        """Starts a run and returns its events for ``async for``, resumed after a
        dropped connection (see :meth:`agenttier.client.AgentAPI.invoke_stream`)."""
        spec = _core.invoke_request(self._sandbox.id, self._sandbox.namespace, payload, prompt,
                                    invoke_timeout, detach, idempotency_key, self._sandbox._client.timeout,
                                    timeout)
        return AsyncInvokeStream(self._sandbox, spec, timeout=timeout)

    def attach(self, invoke_id: str, after: int | None = None, *, timeout: float | None = None) -> AsyncInvokeStream:
        """Follows an existing invoke from the event after ``after``."""
        spec = _core.events_request(self._sandbox.id, self._sandbox.namespace, invoke_id, after,
                                    self._sandbox._client.timeout, timeout)
        return AsyncInvokeStream(self._sandbox, spec, timeout=timeout, invoke_id=invoke_id, after=after)

    async def invoke_cancel(self, invoke_id: str) -> None:
        """Cancels a run. Raises :class:`NotFoundError` for an unknown invoke."""
        await self._sandbox._client._call(
            _core.invoke_cancel(self._sandbox.id, self._sandbox.namespace, invoke_id))

    async def list_invokes(self) -> list[InvokeInfo]:
        """Running and recently finished invokes of this sandbox."""
        return await self._sandbox._client._call(_core.list_invokes(self._sandbox.id, self._sandbox.namespace))

    async def install_log(self) -> str:
        """The output of the last install that ran."""
        return await self._sandbox._client._call(_core.install_log(self._sandbox.id, self._sandbox.namespace))


class AsyncInvokeStream(AsyncIterator[InvokeEvent]):
    """The events of one invoke for ``async for``, resumed transparently after a
    dropped connection; see :class:`agenttier.client.InvokeStream`."""

    def __init__(
        self,
        sandbox: AsyncSandbox,
        first: _core.Request,
        *,
        timeout: float | None,
        invoke_id: str | None = None,
        after: int | None = None,
    ) -> None:
        self._sandbox = sandbox
        self._first = first
        client = sandbox._client
        self._state = _core.InvokeStreamState(sandbox.id, sandbox.namespace, client.resume_policy,
                                              client.timeout, timeout, invoke_id=invoke_id, after=after,
                                              retry=first if first.method == "POST" else None)
        self._events: AsyncGenerator[InvokeEvent, None] | None = None

    @property
    def invoke_id(self) -> str | None:
        """The run's id, once known."""
        return self._state.invoke_id

    @property
    def last_event_id(self) -> int | None:
        """The id of the last event delivered."""
        return self._state.last_event_id

    @property
    def finished(self) -> bool:
        """True once the ``exit`` event has been delivered."""
        return self._state.finished

    @property
    def resumes(self) -> int:
        """How many times the stream reconnected."""
        return self._state.resumes

    async def _run(self) -> AsyncGenerator[InvokeEvent, None]:
        client = self._sandbox._client
        state = self._state
        spec, resuming = self._first, False
        while True:
            try:
                response = await client._open_stream(spec)
            except AgentTierError as error:
                await asyncio.sleep(state.on_open_error(error, resuming=resuming))
                spec, resuming = state.resume_request(), True
                continue
            dropped: BaseException | None = None
            try:
                async for sse in aiter_sse(response.aiter_bytes()):
                    event = state.on_event(sse)
                    if event is not None:
                        yield event
                    if state.finished:
                        return
                    if state.reconnect:
                        break
            except httpx.TransportError as error:
                dropped = error
            finally:
                await response.aclose()
            await asyncio.sleep(state.on_drop(dropped))
            spec, resuming = state.resume_request(), True

    def __aiter__(self) -> AsyncInvokeStream:
        return self

    async def __anext__(self) -> InvokeEvent:
        if self._events is None:
            self._events = self._run()
        return await self._events.__anext__()

    async def __aenter__(self) -> AsyncInvokeStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the connection (the run goes on on the server; see :meth:`cancel`)."""
        if self._events is not None:
            await self._events.aclose()

    async def cancel(self) -> None:
        """Cancels the run (after its ``start`` event has been read)."""
        if self._state.invoke_id is None:
            raise RuntimeError("the invoke id is not known yet: read the start event first")
        await self._sandbox.agent.invoke_cancel(self._state.invoke_id)
