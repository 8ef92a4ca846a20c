"""The synchronous client: :class:`AgentTierClient`, :class:`Sandbox` and its
``files`` and ``agent`` parts. Requests are built and parsed in ``_core``; this
module only sends them (``async_client.py`` is its twin)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from agenttier import _core
from agenttier._core import ConfigureFile, Duration, InvokePayload, ResumePolicy
from agenttier._sse import iter_sse
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
    SandboxPhase,
    SandboxSummary,
    Template,
    WriteResult,
)

__all__ = ["AgentTierClient", "Sandbox", "FilesAPI", "AgentAPI", "InvokeStream"]

T = TypeVar("T")


class AgentTierClient:
    """A synchronous client for the AgentTier API.

    Args:
        api_url: the server's origin, e.g. ``http://127.0.0.1:8080`` (``/api/v1`` is
            added). Defaults to ``AGENTTIER_API_URL``, else ``http://127.0.0.1:8080``.
        api_key: an API key (``atk_...``). Defaults to ``AGENTTIER_API_KEY``.
        timeout: seconds for connecting and for each read of a plain request. Streams
            (configure, invoke) wait at least 60 s between reads; the server sends a
            keepalive every 15 s.
        auth: instead of ``api_key``, an :class:`~agenttier.auth.AuthProvider` (as in
            the v0.8 SDK), e.g. ``BearerTokenAuth(token)``.
        verify: TLS verification, as httpx takes it.
        transport: an httpx transport to send requests through (tests, proxies).
        headers: extra headers for every request.
        resume: how invoke streams resume after a dropped connection.

    Use it as a context manager, or call :meth:`close`::

        with AgentTierClient() as client:
            sandbox = client.create_sandbox("langgraph-agent", "demo-agent")
    """

    def __init__(
        self,
        api_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
        *,
        auth: AuthProvider | None = None,
        verify: bool | str = True,
        transport: httpx.BaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
        resume: ResumePolicy | None = None,
    ) -> None:
        self.api_url = _core.resolve_api_url(api_url)
        self.timeout = timeout
        self.resume_policy = resume or ResumePolicy()
        self._http = httpx.Client(
            base_url=self.api_url + _core.API_PREFIX,
            auth=resolve_auth(api_key, auth),
            timeout=httpx.Timeout(timeout),
            headers={"User-Agent": _core.USER_AGENT, **dict(headers or {})},
            verify=verify,
            transport=transport,
        )

    # -- lifecycle -----------------------------------------------------------------

    def __enter__(self) -> AgentTierClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connections."""
        self._http.close()

    def __repr__(self) -> str:
        return f"AgentTierClient(api_url={self.api_url!r})"

    # -- I/O -------------------------------------------------------------------------

    def _call(self, call: _core.Call[T]) -> T:
        request = self._http.build_request(call.request.method, call.request.path, **call.request.kwargs())
        try:
            response = self._http.send(request)
        except httpx.TransportError as error:
            raise _core.connection_error(error) from error
        _core.raise_for_response(response)
        return call.parse(response)

    def _open_stream(self, spec: _core.Request) -> httpx.Response:
        request = self._http.build_request(spec.method, spec.path, **spec.kwargs())
        try:
            response = self._http.send(request, stream=True)
        except httpx.TransportError as error:
            raise _core.connection_error(error) from error
        if response.status_code >= 400:
            try:
                response.read()
            except httpx.TransportError:
                pass
            finally:
                response.close()
            _core.raise_for_response(response)
        return response

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Sends a request to any route under ``/api/v1`` (e.g. ``"/user/api-keys"``)
        and returns its JSON body (``None`` when empty). Errors raise as everywhere."""
        return self._call(_core.raw_call(method, path, params=params, json=json, content=content,
                                         headers=headers))

    # -- sandboxes -----------------------------------------------------------------

    def create_sandbox(
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
    ) -> Sandbox:
        """Creates a sandbox from a template and returns its handle (``Creating``; see
        :meth:`Sandbox.wait_until_running`).

        Args:
            template: the template's name (``langgraph-agent``, ``general-coding``, ...).
            name: the sandbox's name, a DNS-1123 label; it is also its id.
            namespace: the namespace, ``default`` unless given.
            timeout, idle_timeout, storage_size: accepted for v0.8 compatibility.
            mode: ``agent`` or ``code``; the template's mode when omitted.
            template_kind: ``ClusterSandboxTemplate`` or ``SandboxTemplate``.
            template_namespace: the namespace of a ``SandboxTemplate``.
            image, env: override the template's image, add environment variables.

        Raises:
            APIError: 400, an invalid name or field. NotFoundError: unknown template.
            ConflictError: the name is taken. PolicyViolationError: a policy refused it.
        """
        summary = self._call(_core.create_sandbox(
            template, name, namespace, mode=mode, template_kind=template_kind,
            template_namespace=template_namespace, image=image, env=env, timeout=timeout,
            idle_timeout=idle_timeout, storage_size=storage_size,
        ))
        return Sandbox(self, summary)

    def get_sandbox(self, sandbox_id: str, namespace: str | None = None) -> Sandbox:
        """Returns the handle of an existing sandbox (its name). Without ``namespace``
        the server looks in ``default`` first, then among the caller's sandboxes.

        Raises:
            NotFoundError: no such sandbox, or not the caller's.
        """
        return Sandbox(self, self._call(_core.get_sandbox(sandbox_id, namespace)))

    def list_sandboxes(self, namespace: str | None = None, status: str | None = None) -> list[SandboxSummary]:
        """Lists the caller's sandboxes (an admin's: everyone's), optionally only those
        of a namespace and/or phase (``Running``, ``Stopped``, ...)."""
        return self._call(_core.list_sandboxes(namespace, status))

    def sandbox(self, summary: SandboxSummary) -> Sandbox:
        """The handle for a :class:`SandboxSummary` from :meth:`list_sandboxes`."""
        return Sandbox(self, summary)

    # -- templates, identity --------------------------------------------------------

    def list_templates(self, namespace: str | None = None) -> list[Template]:
        """Lists the templates (cluster-wide, and those of ``namespace`` when given)."""
        return self._call(_core.list_templates(namespace))

    def get_template(self, name: str, namespace: str | None = None) -> Template:
        """Returns one template. Raises :class:`NotFoundError` when unknown."""
        return self._call(_core.get_template(name, namespace))

    def current_user(self) -> CurrentUser:
        """Returns the caller as the server sees it (``GET /user/me``)."""
        return self._call(_core.current_user())


class Sandbox:
    """A handle to one sandbox. ``files`` is its file API and ``agent`` its agent API.

    Attributes:
        info: the sandbox as last fetched (by create, get, list or :meth:`status`).
    """

    def __init__(self, client: AgentTierClient, info: SandboxSummary) -> None:
        self._client = client
        self.info = info
        self.files = FilesAPI(self)
        self.agent = AgentAPI(self)

    @property
    def id(self) -> str:
        """The sandbox's id (its name), used in every route."""
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
    def client(self) -> AgentTierClient:
        """The client this handle uses."""
        return self._client

    def __repr__(self) -> str:
        return f"Sandbox(id={self.id!r}, namespace={self.namespace!r}, status={self.info.status!r})"

    # -- state ---------------------------------------------------------------------

    def status(self) -> SandboxSummary:
        """Fetches the sandbox's current state (also kept in :attr:`info`)."""
        self.info = self._client._call(_core.get_sandbox(self.id, self.namespace))
        return self.info

    @property
    def phase(self) -> SandboxPhase:
        """Fetches the state and returns its phase."""
        return self.status().phase

    def wait_until_running(self, timeout: float = 120, poll_interval: float = 0.5) -> SandboxSummary:
        """Polls until the sandbox is ``Running`` and returns its state.

        Raises:
            SandboxTimeoutError: not ``Running`` within ``timeout`` seconds.
            SandboxErrorState: the sandbox entered ``Error``.
        """
        deadline = time.monotonic() + timeout
        while True:
            if _core.check_running(self.status()):
                return self.info
            if time.monotonic() + poll_interval > deadline:
                raise SandboxTimeoutError(
                    f"sandbox {self.id} did not reach Running within {timeout:g}s "
                    f"(last phase: {self.info.status})"
                )
            time.sleep(poll_interval)

    # -- lifecycle -------------------------------------------------------------------

    def stop(self) -> None:
        """Stops the sandbox: its processes are killed (running invokes end
        ``canceled``), ``/workspace`` is kept. Raises :class:`ConflictError` unless
        ``Running``."""
        self._client._call(_core.sandbox_action(self.id, self.namespace, "stop"))

    def resume(self) -> None:
        """Resumes a stopped sandbox. Raises :class:`ConflictError` unless ``Stopped``."""
        self._client._call(_core.sandbox_action(self.id, self.namespace, "resume"))

    def delete(self) -> None:
        """Deletes the sandbox and its workspace (running invokes are canceled)."""
        self._client._call(_core.delete_sandbox(self.id, self.namespace))

    #: The v0.8 SDK's name for :meth:`delete`.
    terminate = delete

    # -- code mode -------------------------------------------------------------------

    def exec(self, command: str | Sequence[str], timeout: float = 30, *, stdin: str | None = None) -> ExecResult:
        """Runs a command in the sandbox and waits for it.

        Args:
            command: a shell string (``"ls -l | wc -l"``) or an argv list.
            timeout: seconds the command may run (the server kills it after).
            stdin: text for the command's standard input.
        """
        return self._client._call(_core.exec_command(
            self.id, self.namespace, command, timeout, stdin, self._client.timeout))


class FilesAPI:
    """A sandbox's files, confined to ``/workspace``. Paths are absolute
    (``/workspace/a.txt``) or relative to ``/workspace`` (``a.txt``)."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    def _call(self, call: _core.Call[T]) -> T:
        return self._sandbox._client._call(call)

    def list(self, path: str = "/workspace") -> list[FileEntry]:
        """Lists a directory. Raises :class:`NotFoundError` when it does not exist."""
        return self._call(_core.files_list(self._sandbox.id, self._sandbox.namespace, path))

    def read(self, path: str) -> bytes:
        """Returns a file's bytes."""
        return self._call(_core.files_read(self._sandbox.id, self._sandbox.namespace, path))

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        """Returns a file decoded as text."""
        return self.read(path).decode(encoding)

    def write(self, path: str, data: bytes | str) -> WriteResult:
        """Creates or replaces a file (``str`` is written as UTF-8); parent
        directories are created."""
        return self._call(_core.files_write(self._sandbox.id, self._sandbox.namespace, path, data))

    def upload(self, path: str, source: str | os.PathLike[str]) -> WriteResult:
        """Uploads the local file ``source`` to ``path``."""
        return self.write(path, Path(source).read_bytes())

    def download(self, path: str, destination: str | os.PathLike[str]) -> int:
        """Saves a file to the local path ``destination``; returns its size."""
        data = self.read(path)
        Path(destination).write_bytes(data)
        return len(data)

    def delete(self, path: str) -> None:
        """Deletes a file."""
        self._call(_core.files_delete(self._sandbox.id, self._sandbox.namespace, path))


class AgentAPI:
    """A sandbox's agent mode: configure once, invoke many times."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    def configure(
        self,
        files: Sequence[ConfigureFile] | None = None,
        install_command: str | Sequence[str] | None = None,
        entrypoint: str | Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        on_log: Callable[[str, str], None] | None = None,
        timeout: float | None = None,
    ) -> ConfigureResult:
        """Uploads files, runs an install command and sets the entrypoint.

        Re-sending the same files and install command is a no-op on the server
        (``result.skipped``). A failing install is not raised: check
        ``result.install_exit_code``.

        Args:
            files: ``(remote_path, local_path | bytes | str)`` tuples or
                ``{"path", "content" | "contentBase64"}`` dicts. Bytes that are not
                UTF-8 are sent as ``contentBase64``. A ``str`` source is a local file
                path (as in the v0.8 SDK) unless no such file exists and it contains a
                newline, in which case it is the content.
            install_command: argv (or a string split like a shell), run in /workspace.
            entrypoint: argv (or a string split like a shell) that invokes run.
            env: environment variables for the install and the invokes.
            on_log: called as ``on_log(stream, line)`` for each line of progress and
                install output, as it arrives.
            timeout: seconds a read may wait (default: at least 60; keepalives come
                every 15 s).

        Raises:
            ConfigureError: files could not be written, or the install could not start
                or timed out. APIError: 400 (bad path, code-mode sandbox), 413.
            ConflictError: not ``Running``, or another configure is running.
        """
        spec = _core.configure_request(self._sandbox.id, self._sandbox.namespace, files, install_command,
                                       entrypoint, env, self._sandbox._client.timeout, timeout)
        reader = _core.ConfigureStream(on_log)
        response = self._sandbox._client._open_stream(spec)
        try:
            for sse in iter_sse(response.iter_bytes()):
                reader.add(sse)
        except httpx.TransportError as error:
            raise _core.connection_error(error, "configure stream") from error
        finally:
            response.close()
        return reader.finish()

    def invoke(
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
        """Runs the entrypoint once and returns its result (a non-zero exit is not an
        error: check ``result.exit_code``). Same arguments as :meth:`invoke_stream`;
        ``on_event`` sees every event as it arrives.

        Raises:
            ConflictError: not ``Running``, or a configure is running.
            ConcurrencyLimitError: the sandbox's invoke cap is reached (``retry_after``).
            APIError: 400 (code-mode sandbox, bad timeout), 413, 424 (no entrypoint).
            StreamInterruptedError: the connection dropped and could not be resumed.
        """
        collector = _core.InvokeCollector()
        with self.invoke_stream(payload, prompt=prompt, invoke_timeout=invoke_timeout, timeout=timeout,
                                detach=detach, idempotency_key=idempotency_key) as stream:
            for event in stream:
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
    ) -> InvokeStream:
        """Starts a run and returns its events as they come: :class:`StartEvent`,
        :class:`LogEvent` per output line, then :class:`ExitEvent` (and
        :class:`GapEvent` if the server dropped some). The request is sent when
        iteration starts (or on ``with``).

        If the connection drops, the stream resumes from the last event id on its own
        (``GET .../invokes/{id}/events``), never delivering an event twice.

        Args:
            payload: the entrypoint's stdin: ``bytes``, ``str`` (UTF-8) or a dict/list
                (sent as JSON).
            prompt: adds ``--prompt=<text>`` to the argv (and is the stdin when there
                is no payload).
            invoke_timeout: lowers the run's time limit (``"30s"``, ``"5m"``, seconds).
            timeout: seconds a read may wait (default: at least 60).
            detach: keep the run going to its timeout even with no client attached.
            idempotency_key: a retry with the same key (within 10 minutes) attaches to
                the same run instead of starting another. One is made when not given,
                and used to recover from a connection lost before the ``start`` event.
        """
        spec = _core.invoke_request(self._sandbox.id, self._sandbox.namespace, payload, prompt,
                                    invoke_timeout, detach, idempotency_key, self._sandbox._client.timeout,
                                    timeout)
        return InvokeStream(self._sandbox, spec, timeout=timeout)

    def attach(self, invoke_id: str, after: int | None = None, *, timeout: float | None = None) -> InvokeStream:
        """Follows an invoke started elsewhere (or earlier), from the event after
        ``after`` (from the first event when ``None``), resuming like
        :meth:`invoke_stream`."""
        spec = _core.events_request(self._sandbox.id, self._sandbox.namespace, invoke_id, after,
                                    self._sandbox._client.timeout, timeout)
        return InvokeStream(self._sandbox, spec, timeout=timeout, invoke_id=invoke_id, after=after)

    def invoke_cancel(self, invoke_id: str) -> None:
        """Cancels a run: its stream ends with ``exit`` ``reason="canceled"``.

        Raises:
            NotFoundError: unknown invoke, or not the caller's.
        """
        self._sandbox._client._call(_core.invoke_cancel(self._sandbox.id, self._sandbox.namespace, invoke_id))

    def list_invokes(self) -> list[InvokeInfo]:
        """Running and recently finished invokes of this sandbox."""
        return self._sandbox._client._call(_core.list_invokes(self._sandbox.id, self._sandbox.namespace))

    def install_log(self) -> str:
        """The output of the last install that ran (its last 64 KiB)."""
        return self._sandbox._client._call(_core.install_log(self._sandbox.id, self._sandbox.namespace))


class InvokeStream(Iterator[InvokeEvent]):
    """The events of one invoke, resumed transparently after a dropped connection.

    Iterate over it; use it as a context manager (or call :meth:`close`) to release
    the connection early. :attr:`invoke_id` is known once the ``start`` event has been
    read; :meth:`cancel` cancels the run.
    """

    def __init__(
        self,
        sandbox: Sandbox,
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
        self._events: Generator[InvokeEvent, None, None] | None = None

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

    def _run(self) -> Generator[InvokeEvent, None, None]:
        client = self._sandbox._client
        state = self._state
        spec, resuming = self._first, False
        while True:
            try:
                response = client._open_stream(spec)
            except AgentTierError as error:
                time.sleep(state.on_open_error(error, resuming=resuming))
                spec, resuming = state.resume_request(), True
                continue
            dropped: BaseException | None = None
            try:
                for sse in iter_sse(response.iter_bytes()):
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
                response.close()
            time.sleep(state.on_drop(dropped))
            spec, resuming = state.resume_request(), True

    def __iter__(self) -> InvokeStream:
        return self

    def __next__(self) -> InvokeEvent:
        if self._events is None:
            self._events = self._run()
        return next(self._events)

    def __enter__(self) -> InvokeStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection (the run goes on on the server; see :meth:`cancel`)."""
        if self._events is not None:
            self._events.close()

    def cancel(self) -> None:
        """Cancels the run (after its ``start`` event has been read); keep iterating to
        see its ``exit``."""
        if self._state.invoke_id is None:
            raise RuntimeError("the invoke id is not known yet: read the start event first")
        self._sandbox.agent.invoke_cancel(self._state.invoke_id)
