"""Everything the sync and async clients share: how each call is built and parsed,
the configure/invoke stream state machines and the resume policy. The clients only
move bytes (see ``client.py`` and ``async_client.py``).
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar, Union
from urllib.parse import quote

import httpx

from agenttier._sse import ServerSentEvent
from agenttier._version import __version__
from agenttier.exceptions import (
    AgentTierError,
    APIConnectionError,
    APIError,
    ConfigureError,
    InvokeError,
    SandboxErrorState,
    StreamInterruptedError,
    error_from_response,
)
from agenttier.models import (
    ConfigureResult,
    CurrentUser,
    ExecResult,
    ExitEvent,
    FileEntry,
    GapEvent,
    InvokeEvent,
    InvokeInfo,
    InvokeResult,
    LogEvent,
    SandboxPhase,
    SandboxSummary,
    StartEvent,
    Template,
    WriteResult,
    decode_log_data,
    invoke_event_from,
)
T = TypeVar("T")

DEFAULT_API_URL = "http://127.0.0.1:8080"
API_PREFIX = "/api/v1"
USER_AGENT = f"agenttier-python-sdk/{__version__}"
SSE_ACCEPT = {"Accept": "text/event-stream"}
#: Seconds a streaming read may wait: the server sends a keepalive every 15 s.
MIN_STREAM_READ_TIMEOUT = 60.0
#: Upload limit per file, as the server enforces it (413 beyond).
MAX_FILE_BYTES = 32 * 1024 * 1024

#: A file for ``configure``: ``(remote_path, local_path | bytes | str)`` or a dict
#: ``{"path", "content" | "contentBase64", "mode"?}``.
ConfigureFile = Union[
    tuple[str, Union[str, bytes, bytearray, "os.PathLike[str]"]], Mapping[str, Any]
]
#: An invoke payload: ``None`` (empty stdin), ``bytes``, ``str`` or a JSON-able dict/list.
InvokePayload = Union[bytes, bytearray, memoryview, str, Mapping[str, Any], list[Any], None]
#: A duration: ``"30s"``, ``"5m"``, seconds as a number, or a ``timedelta``.
Duration = Union[str, int, float, timedelta]


# ---------------------------------------------------------------------------
# Configuration


def resolve_api_url(api_url: str | None) -> str:
    """The origin to talk to: ``api_url``, else ``AGENTTIER_API_URL``, else the default;
    a trailing ``/`` or ``/api/v1`` is dropped."""
    url = (api_url or os.environ.get("AGENTTIER_API_URL") or DEFAULT_API_URL).strip()
    url = url.rstrip("/")
    if url.endswith(API_PREFIX):
        url = url[: -len(API_PREFIX)]
    return url


def stream_timeout(base: float | None, read: float | None = None) -> httpx.Timeout:
    """The timeout of a streaming request: ``base`` for connect/write/pool, ``read`` (or
    at least :data:`MIN_STREAM_READ_TIMEOUT`) between two reads."""
    if read is None:
        read = None if base is None else max(base, MIN_STREAM_READ_TIMEOUT)
    return httpx.Timeout(base, read=read)


def format_duration(value: Duration) -> str:
    """A duration as the server reads it (``"30s"``); strings pass through."""
    if isinstance(value, str):
        return value
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return f"{math.ceil(seconds)}s"


# ---------------------------------------------------------------------------
# Requests and calls


@dataclass
class Request:
    """One HTTP request, relative to ``/api/v1``."""

    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: httpx.Timeout | None = None

    def kwargs(self) -> dict[str, Any]:
        """Arguments for ``httpx.Client.build_request``."""
        out: dict[str, Any] = {"params": self.params or None, "headers": self.headers or None}
        if self.json is not None:
            out["json"] = self.json
        elif self.content is not None:
            out["content"] = self.content
        if self.timeout is not None:
            out["timeout"] = self.timeout
        return out


@dataclass
class Call(Generic[T]):
    """A request and how to read its (successful) response."""

    request: Request
    parse: Callable[[httpx.Response], T]


def raise_for_response(response: httpx.Response) -> None:
    """Raises the SDK error for a non-2xx response whose body has been read."""
    if response.status_code < 400:
        return
    raise error_from_response(
        response.status_code, response.headers, response.content, response.reason_phrase
    )


def connection_error(error: httpx.TransportError, what: str = "request") -> APIConnectionError:
    """Wraps an httpx transport error."""
    url = ""
    try:
        url = f" to {error.request.url}"
    except RuntimeError:
        pass
    return APIConnectionError(f"{what}{url} failed: {type(error).__name__}: {error}")


def _json(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _none(response: httpx.Response) -> None:
    return None


def _sandbox_path(sandbox_id: str, suffix: str = "") -> str:
    if not sandbox_id:
        raise ValueError("sandbox_id must be a non-empty string")
    return f"/sandboxes/{quote(sandbox_id, safe='')}{suffix}"


def _ns(namespace: str | None) -> dict[str, str]:
    return {"namespace": namespace} if namespace else {}


def workspace_path(path: str) -> str:
    """An absolute sandbox path: relative paths are taken relative to ``/workspace``."""
    if not path or not path.strip():
        raise ValueError("path must be a non-empty string")
    return path if path.startswith("/") else "/workspace/" + path


def _file_route(sandbox_id: str, path: str) -> str:
    absolute = workspace_path(path)
    stripped = absolute.lstrip("/")
    if not stripped:
        raise ValueError("path must name a file")
    return _sandbox_path(sandbox_id, "/files/" + quote(stripped, safe="/"))


# Sandboxes ------------------------------------------------------------------


def create_sandbox(
    template: str,
    name: str,
    namespace: str = "default",
    *,
    mode: str | None = None,
    template_kind: str = "ClusterSandboxTemplate",
    template_namespace: str | None = None,
    image: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: str | None = None,
    idle_timeout: str | None = None,
    storage_size: str | None = None,
) -> Call[SandboxSummary]:
    """``POST /sandboxes``."""
    if not template:
        raise ValueError("template must be a non-empty string")
    if not name:
        raise ValueError("name must be a non-empty string")
    ref: dict[str, Any] = {"name": template, "kind": template_kind}
    if template_namespace:
        ref["namespace"] = template_namespace
    body: dict[str, Any] = {"name": name, "namespace": namespace or "default", "templateRef": ref}
    if mode:
        body["mode"] = mode
    if image:
        body["image"] = image
    if env:
        body["env"] = dict(env)
    if timeout:
        body["timeout"] = timeout
    if idle_timeout:
        body["idleTimeout"] = idle_timeout
    if storage_size:
        body["storage"] = {"size": storage_size}
    return Call(
        Request("POST", "/sandboxes", json=body),
        lambda r: SandboxSummary.from_dict(_json(r), name=name, namespace=namespace or "default"),
    )


def get_sandbox(sandbox_id: str, namespace: str | None = None) -> Call[SandboxSummary]:
    """``GET /sandboxes/{id}``."""
    return Call(
        Request("GET", _sandbox_path(sandbox_id), params=_ns(namespace)),
        lambda r: SandboxSummary.from_dict(_json(r), name=sandbox_id, namespace=namespace or "default"),
    )


def list_sandboxes(namespace: str | None = None, status: str | None = None) -> Call[list[SandboxSummary]]:
    """``GET /sandboxes``."""
    params = _ns(namespace)
    if status:
        params["status"] = status
    return Call(
        Request("GET", "/sandboxes", params=params),
        lambda r: [SandboxSummary.from_dict(s) for s in ((_json(r) or {}).get("sandboxes") or [])],
    )


def sandbox_action(sandbox_id: str, namespace: str | None, action: str) -> Call[None]:
    """``POST /sandboxes/{id}/stop`` or ``/resume``."""
    return Call(Request("POST", _sandbox_path(sandbox_id, "/" + action), params=_ns(namespace)), _none)


def delete_sandbox(sandbox_id: str, namespace: str | None) -> Call[None]:
    """``DELETE /sandboxes/{id}``."""
    return Call(Request("DELETE", _sandbox_path(sandbox_id), params=_ns(namespace)), _none)


def check_running(summary: SandboxSummary) -> bool:
    """True when ``Running``; raises :class:`SandboxErrorState` on ``Error``."""
    if summary.phase is SandboxPhase.RUNNING:
        return True
    if summary.phase is SandboxPhase.ERROR:
        raise SandboxErrorState(summary.message or f"sandbox {summary.sandbox_id} entered the Error phase")
    return False


# Templates, identity ----------------------------------------------------------


def list_templates(namespace: str | None = None) -> Call[list[Template]]:
    """``GET /templates``."""
    return Call(
        Request("GET", "/templates", params=_ns(namespace)),
        lambda r: [Template.from_dict(t) for t in ((_json(r) or {}).get("templates") or [])],
    )


def get_template(name: str, namespace: str | None = None) -> Call[Template]:
    """``GET /templates/{name}``."""
    if not name:
        raise ValueError("name must be a non-empty string")
    return Call(
        Request("GET", f"/templates/{quote(name, safe='')}", params=_ns(namespace)),
        lambda r: Template.from_dict(_json(r)),
    )


def current_user() -> Call[CurrentUser]:
    """``GET /user/me``."""
    return Call(Request("GET", "/user/me"), lambda r: CurrentUser.from_dict(_json(r)))


def raw_call(
    method: str,
    path: str,
    *,
    params: Mapping[str, str] | None = None,
    json: Any = None,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> Call[Any]:
    """Any route under ``/api/v1``; the answer is its JSON (``None`` when empty)."""
    if not path.startswith("/"):
        path = "/" + path
    return Call(
        Request(method.upper(), path, params=dict(params or {}), json=json, content=content,
                headers=dict(headers or {})),
        _json,
    )


# Code mode --------------------------------------------------------------------


def exec_command(
    sandbox_id: str,
    namespace: str | None,
    command: str | Sequence[str],
    timeout: float,
    stdin: str | None,
    base_timeout: float | None,
) -> Call[ExecResult]:
    """``POST /sandboxes/{id}/exec``."""
    if isinstance(command, str):
        if not command:
            raise ValueError("command must be non-empty")
        cmd: str | list[str] = command
    else:
        cmd = [str(arg) for arg in command]
        if not cmd:
            raise ValueError("command must be non-empty")
    body: dict[str, Any] = {"command": cmd, "timeout": int(math.ceil(timeout))}
    if stdin is not None:
        body["stdin"] = stdin
    http_timeout = httpx.Timeout(base_timeout, read=float(timeout) + 10.0)
    return Call(
        Request("POST", _sandbox_path(sandbox_id, "/exec"), params=_ns(namespace), json=body,
                timeout=http_timeout),
        lambda r: ExecResult.from_dict(_json(r)),
    )


def files_list(sandbox_id: str, namespace: str | None, path: str) -> Call[list[FileEntry]]:
    """``GET /sandboxes/{id}/files/?path=``."""
    params = _ns(namespace)
    params["path"] = workspace_path(path)
    return Call(
        Request("GET", _sandbox_path(sandbox_id, "/files/"), params=params),
        lambda r: [FileEntry.from_dict(e) for e in ((_json(r) or {}).get("entries") or [])],
    )


def files_read(sandbox_id: str, namespace: str | None, path: str) -> Call[bytes]:
    """``GET /sandboxes/{id}/files/{path}``."""
    return Call(Request("GET", _file_route(sandbox_id, path), params=_ns(namespace)), lambda r: r.content)


def _write_result(path: str, size: int) -> Callable[[httpx.Response], WriteResult]:
    def parse(response: httpx.Response) -> WriteResult:
        body = _json(response)
        body = body if isinstance(body, dict) else {}
        written = body.get("bytes")
        answered = body.get("path")
        return WriteResult(
            path=answered if isinstance(answered, str) else path,
            bytes=written if isinstance(written, int) else size,
        )

    return parse


def files_write(sandbox_id: str, namespace: str | None, path: str, data: bytes | str) -> Call[WriteResult]:
    """``PUT /sandboxes/{id}/files/{path}``."""
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if len(payload) > MAX_FILE_BYTES:
        raise ValueError(f"{len(payload)} bytes is over the {MAX_FILE_BYTES}-byte limit per file")
    return Call(
        Request("PUT", _file_route(sandbox_id, path), params=_ns(namespace), content=payload,
                headers={"Content-Type": "application/octet-stream"}),
        _write_result(workspace_path(path), len(payload)),
    )


def files_delete(sandbox_id: str, namespace: str | None, path: str) -> Call[None]:
    """``DELETE /sandboxes/{id}/files/{path}``."""
    return Call(Request("DELETE", _file_route(sandbox_id, path), params=_ns(namespace)), _none)


# Agent mode -------------------------------------------------------------------


def _file_entry_for_bytes(path: str, raw: bytes) -> dict[str, Any]:
    try:
        return {"path": path, "content": raw.decode("utf-8")}
    except UnicodeDecodeError:
        import base64

        return {"path": path, "contentBase64": base64.b64encode(raw).decode("ascii")}


def configure_file_entry(item: ConfigureFile) -> dict[str, Any]:
    """One ``files`` entry of a configure body.

    * ``{"path", "content" | "contentBase64", ...}`` is sent as given (``bytes`` as
      ``content`` become text, or ``contentBase64`` when not UTF-8).
    * ``(remote, source)``: ``source`` is a local file when it is an ``os.PathLike`` or
      a ``str`` naming an existing file; ``bytes`` are the content (UTF-8 text as
      ``content``, anything else as ``contentBase64``); a ``str`` that is not an
      existing file but contains a newline is the content itself. Any other ``str`` is
      a missing local file (:class:`FileNotFoundError`).
    """
    if isinstance(item, Mapping):
        entry = dict(item)
        if not isinstance(entry.get("path"), str) or not entry["path"]:
            raise ValueError(f"configure file {item!r} needs a 'path'")
        content = entry.get("content")
        if isinstance(content, (bytes, bytearray, memoryview)):
            del entry["content"]
            entry.update(_file_entry_for_bytes(entry["path"], bytes(content)))
        return entry
    if not isinstance(item, tuple) or len(item) != 2:
        raise TypeError(
            "configure files are (remote_path, local_path | bytes | str) tuples or "
            f"{{'path', 'content'}} dicts, not {item!r}"
        )
    remote, source = item
    if not isinstance(remote, str) or not remote:
        raise ValueError(f"configure file {item!r} needs a remote path")
    if isinstance(source, (bytes, bytearray, memoryview)):
        raw = bytes(source)
    elif isinstance(source, os.PathLike):
        raw = Path(source).read_bytes()
    elif isinstance(source, str):
        if os.path.isfile(source):
            raw = Path(source).read_bytes()
        elif "\n" in source:
            return {"path": remote, "content": source}
        else:
            raise FileNotFoundError(
                f"local file {source!r} (for {remote}) not found; to send text instead, "
                "pass bytes or a {'path', 'content'} dict"
            )
    else:
        raise TypeError(f"cannot upload {type(source).__name__} for {remote}")
    if len(raw) > MAX_FILE_BYTES:
        raise ValueError(f"{remote}: {len(raw)} bytes is over the {MAX_FILE_BYTES}-byte limit per file")
    return _file_entry_for_bytes(remote, raw)


def _argv(value: str | Sequence[str], what: str) -> list[str]:
    if isinstance(value, str):
        import shlex

        return shlex.split(value)
    argv = [str(a) for a in value]
    if not argv:
        raise ValueError(f"{what} must not be empty")
    return argv


def configure_request(
    sandbox_id: str,
    namespace: str | None,
    files: Sequence[ConfigureFile] | None,
    install_command: str | Sequence[str] | None,
    entrypoint: str | Sequence[str] | None,
    env: Mapping[str, str] | None,
    base_timeout: float | None,
    timeout: float | None,
) -> Request:
    """``POST /sandboxes/{id}/configure`` (a stream). ``install_command`` and
    ``entrypoint`` may be argv lists or strings split like a shell."""
    body: dict[str, Any] = {}
    if files:
        body["files"] = [configure_file_entry(f) for f in files]
    if install_command is not None:
        body["installCommand"] = _argv(install_command, "install_command")
    if entrypoint is not None:
        body["entrypoint"] = _argv(entrypoint, "entrypoint")
    if env:
        body["env"] = {str(k): str(v) for k, v in env.items()}
    if not body:
        raise ValueError("configure needs at least one of files, install_command, entrypoint or env")
    return Request(
        "POST",
        _sandbox_path(sandbox_id, "/configure"),
        params=_ns(namespace),
        json=body,
        headers=dict(SSE_ACCEPT),
        timeout=stream_timeout(base_timeout, timeout),
    )


def encode_invoke_body(payload: InvokePayload) -> tuple[bytes, str]:
    """The stdin bytes and ``Content-Type`` for an invoke payload."""
    if payload is None:
        return b"", "application/octet-stream"
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload), "application/octet-stream"
    if isinstance(payload, str):
        return payload.encode("utf-8"), "text/plain; charset=utf-8"
    if isinstance(payload, (Mapping, list)):
        return json.dumps(payload).encode("utf-8"), "application/json"
    raise TypeError(f"invoke payload must be bytes, str, dict, list or None, not {type(payload).__name__}")


def invoke_request(
    sandbox_id: str,
    namespace: str | None,
    payload: InvokePayload,
    prompt: str | None,
    invoke_timeout: Duration | None,
    detach: bool,
    idempotency_key: str | None,
    base_timeout: float | None,
    timeout: float | None,
) -> Request:
    """``POST /sandboxes/{id}/invoke`` (a stream). Without ``idempotency_key`` a fresh
    one is made, so that a retry after a connection lost before ``start`` attaches to
    the same run instead of starting another."""
    body, content_type = encode_invoke_body(payload)
    params = _ns(namespace)
    if prompt is not None:
        params["prompt"] = prompt
    if invoke_timeout is not None:
        params["timeout"] = format_duration(invoke_timeout)
    if detach:
        params["detach"] = "true"
    headers = {"Content-Type": content_type, **SSE_ACCEPT,
               "Idempotency-Key": idempotency_key or f"sdk-{secrets.token_hex(16)}"}
    return Request(
        "POST",
        _sandbox_path(sandbox_id, "/invoke"),
        params=params,
        content=body,
        headers=headers,
        timeout=stream_timeout(base_timeout, timeout),
    )


def events_request(
    sandbox_id: str,
    namespace: str | None,
    invoke_id: str,
    after: int | None,
    base_timeout: float | None,
    timeout: float | None,
) -> Request:
    """``GET /sandboxes/{id}/invokes/{invokeId}/events`` with ``Last-Event-ID``."""
    headers = dict(SSE_ACCEPT)
    if after is not None:
        headers["Last-Event-ID"] = str(after)
    return Request(
        "GET",
        _sandbox_path(sandbox_id, f"/invokes/{quote(invoke_id, safe='')}/events"),
        params=_ns(namespace),
        headers=headers,
        timeout=stream_timeout(base_timeout, timeout),
    )


def invoke_cancel(sandbox_id: str, namespace: str | None, invoke_id: str) -> Call[None]:
    """``POST /sandboxes/{id}/invoke/cancel``."""
    if not invoke_id:
        raise ValueError("invoke_id must be a non-empty string")
    return Call(
        Request("POST", _sandbox_path(sandbox_id, "/invoke/cancel"), params=_ns(namespace),
                json={"invokeId": invoke_id}),
        _none,
    )


def list_invokes(sandbox_id: str, namespace: str | None) -> Call[list[InvokeInfo]]:
    """``GET /sandboxes/{id}/invokes``."""
    return Call(
        Request("GET", _sandbox_path(sandbox_id, "/invokes"), params=_ns(namespace)),
        lambda r: [InvokeInfo.from_dict(i) for i in ((_json(r) or {}).get("invokes") or [])],
    )


def install_log(sandbox_id: str, namespace: str | None) -> Call[str]:
    """``GET /sandboxes/{id}/configure/install-log``."""
    return Call(
        Request("GET", _sandbox_path(sandbox_id, "/configure/install-log"), params=_ns(namespace)),
        lambda r: str((_json(r) or {}).get("log") or ""),
    )


# ---------------------------------------------------------------------------
# Streams


def event_data(sse: ServerSentEvent) -> dict[str, Any]:
    """An event's data as a dict: a JSON object as is, any other JSON value or text
    under ``"data"``."""
    try:
        value = json.loads(sse.data)
    except ValueError:
        return {"data": sse.data}
    return value if isinstance(value, dict) else {"data": value}


class ConfigureStream:
    """Reads a configure stream: ``log`` events go to ``on_log(stream, line)``, an
    ``error`` is remembered, the last ``result`` wins."""

    def __init__(self, on_log: Callable[[str, str], None] | None) -> None:
        self.on_log = on_log
        self.logs: list[tuple[str, str]] = []
        self.error: dict[str, Any] | None = None
        self.result: dict[str, Any] | None = None

    def add(self, sse: ServerSentEvent) -> None:
        """Feeds one event."""
        data = event_data(sse)
        if sse.event == "log":
            text, _, _ = decode_log_data(data)
            named = data.get("stream")
            stream = named if isinstance(named, str) and named else "stdout"
            self.logs.append((stream, text))
            if self.on_log is not None:
                self.on_log(stream, text)
        elif sse.event == "error":
            if self.error is None:
                self.error = data
        elif sse.event == "result":
            self.result = data

    def finish(self) -> ConfigureResult:
        """The result; raises :class:`ConfigureError` after an ``error`` event or when
        the stream ended without a ``result``."""
        result = ConfigureResult.from_dict(self.result, self.logs) if self.result is not None else None
        if self.error is not None:
            phase = self.error.get("phase") if isinstance(self.error.get("phase"), str) else None
            message = self.error.get("message") or "unknown error"
            raise ConfigureError(f"configure failed during {phase or 'unknown'}: {message}",
                                 phase=phase, result=result)
        if result is None:
            raise ConfigureError("configure stream ended without a result event")
        return result


@dataclass
class ResumePolicy:
    """How an invoke stream resumes after a dropped connection: at most
    ``max_attempts`` reconnects in a row without receiving an event, waiting
    ``base_delay * 2**n`` seconds (at most ``max_delay``) before each."""

    max_attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 4.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before reconnect number ``attempt`` (1-based)."""
        return float(min(self.max_delay, self.base_delay * (2 ** max(0, attempt - 1))))


def _retryable(error: AgentTierError) -> bool:
    if isinstance(error, APIConnectionError):
        return True
    return isinstance(error, APIError) and error.status_code in (429, 500, 502, 503, 504)


class InvokeStreamState:
    """The resumable invoke stream, without I/O.

    It turns SSE events into typed events, drops any event whose id it has already
    delivered, and, when the connection drops (or the router sends its
    ``router_shutdown`` exit), says how long to wait and which request resumes the
    stream from the last id seen. Before the ``start`` event (no invoke id yet) the
    resume is the original ``POST /invoke`` again, with its ``Idempotency-Key``: the
    server attaches it to the run the first one started.
    """

    def __init__(
        self,
        sandbox_id: str,
        namespace: str | None,
        policy: ResumePolicy,
        base_timeout: float | None,
        read_timeout: float | None,
        invoke_id: str | None = None,
        after: int | None = None,
        retry: Request | None = None,
    ) -> None:
        self.sandbox_id = sandbox_id
        self.namespace = namespace
        self.policy = policy
        self.base_timeout = base_timeout
        self.read_timeout = read_timeout
        self.invoke_id = invoke_id
        self.last_event_id = after
        self.finished = False
        self.reconnect = False
        self.resumes = 0
        self._attempts = 0
        self._retry = retry if retry is not None and "Idempotency-Key" in retry.headers else None

    def on_event(self, sse: ServerSentEvent) -> InvokeEvent | None:
        """The typed event to deliver, or ``None`` for a duplicate (or a router-shutdown
        exit, after which :attr:`reconnect` is set)."""
        seq: int | None = None
        if sse.id is not None:
            try:
                seq = int(sse.id)
            except ValueError:
                seq = None
        if sse.event == "exit" and event_data(sse).get("cause") == "router_shutdown":
            # The router went away (it repeats the id of the last event it delivered);
            # the run may go on: resume from the last id seen.
            self.reconnect = True
            return None
        if seq is not None and self.last_event_id is not None and seq <= self.last_event_id:
            return None
        event = invoke_event_from(sse.event, event_data(sse), seq)
        if seq is not None:
            self.last_event_id = seq
        self._attempts = 0
        if isinstance(event, StartEvent) and event.invoke_id:
            self.invoke_id = event.invoke_id
        elif isinstance(event, ExitEvent):
            self.finished = True
            if not self.invoke_id and event.invoke_id:
                self.invoke_id = event.invoke_id
        return event

    def _interrupted(self, why: str) -> StreamInterruptedError:
        return StreamInterruptedError(
            f"invoke stream interrupted ({why})"
            + (f"; reattach with attach({self.invoke_id!r}, after={self.last_event_id})"
               if self.invoke_id else ""),
            invoke_id=self.invoke_id,
            last_event_id=self.last_event_id,
        )

    def on_drop(self, error: BaseException | None) -> float:
        """The connection ended before ``exit``: seconds to wait before resuming, or
        raises :class:`StreamInterruptedError` when it cannot be resumed."""
        self.reconnect = False
        why = f"{type(error).__name__}: {error}" if error is not None else "the stream ended before exit"
        if self.invoke_id is None and self._retry is None:
            raise self._interrupted(why + "; no start event was received, so it cannot be resumed")
        self._attempts += 1
        if self._attempts > self.policy.max_attempts:
            raise self._interrupted(f"{why}; gave up after {self.policy.max_attempts} attempts")
        self.resumes += 1
        return self.policy.delay(self._attempts)

    def on_open_error(self, error: AgentTierError, *, resuming: bool) -> float:
        """Opening a stream failed: re-raises it for the first request; for a resume,
        returns the delay before trying again (connection errors, 429, 5xx) or raises."""
        if not resuming:
            raise error
        if not _retryable(error):
            raise self._interrupted(f"resume refused: {error}") from error
        delay = self.on_drop(error)
        if error.retry_after:
            delay = max(delay, min(float(error.retry_after), self.policy.max_delay))
        return delay

    def resume_request(self) -> Request:
        """The request that continues the stream after the last id seen."""
        if self.invoke_id is None:
            assert self._retry is not None
            return self._retry
        return events_request(self.sandbox_id, self.namespace, self.invoke_id, self.last_event_id,
                              self.base_timeout, self.read_timeout)


class InvokeCollector:
    """Accumulates invoke events into an :class:`InvokeResult`."""

    def __init__(self) -> None:
        self.invoke_id = ""
        self.started_at: int | None = None
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.exit: ExitEvent | None = None
        self.gaps: list[tuple[int, int]] = []

    def add(self, event: InvokeEvent) -> None:
        """Feeds one event; raises :class:`InvokeError` on an ``error`` event."""
        if isinstance(event, StartEvent):
            self.invoke_id = event.invoke_id or self.invoke_id
            self.started_at = event.started_at
        elif isinstance(event, LogEvent):
            (self.err if event.stream == "stderr" else self.out).append(event.raw)
        elif isinstance(event, ExitEvent):
            self.exit = event
            self.invoke_id = self.invoke_id or event.invoke_id
        elif isinstance(event, GapEvent):
            self.gaps.append((event.from_seq, event.to_seq))
        elif event.event == "error":
            raise InvokeError(f"invoke failed: {event.data.get('message', 'unknown error')}")

    def result(self) -> InvokeResult:
        """The result (``exit_code`` -1 and ``reason`` ``error`` if no exit was seen)."""
        out = b"\n".join(self.out)
        err = b"\n".join(self.err)
        exit_event = self.exit
        return InvokeResult(
            invoke_id=self.invoke_id,
            exit_code=exit_event.exit_code if exit_event else -1,
            duration_ms=exit_event.duration_ms if exit_event else 0,
            reason=exit_event.reason if exit_event else "error",
            stdout=out.decode("utf-8", errors="replace"),
            stderr=err.decode("utf-8", errors="replace"),
            cause=exit_event.cause if exit_event else None,
            message=exit_event.message if exit_event else None,
            stdout_bytes=out,
            stderr_bytes=err,
            started_at=self.started_at,
            gaps=self.gaps,
        )
