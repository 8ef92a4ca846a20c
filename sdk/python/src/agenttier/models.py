"""Typed views of the server's responses and stream events.

Every model keeps the JSON it was built from in ``raw``, so fields the server adds
later are never lost. Unknown fields are ignored; missing optional fields are
``None`` (or an empty list).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

__all__ = [
    "SandboxPhase",
    "CreatedBy",
    "AgentConfigureStatus",
    "SandboxSummary",
    "Template",
    "CurrentUser",
    "ExecResult",
    "CommandResult",
    "FileEntry",
    "WriteResult",
    "ConfigureResult",
    "InvokeInfo",
    "InvokeEvent",
    "StartEvent",
    "LogEvent",
    "ExitEvent",
    "GapEvent",
    "ErrorEvent",
    "InvokeResult",
    "parse_time",
]


def parse_time(value: Any) -> datetime | None:
    """Parses an RFC 3339 timestamp (``Z`` and nanoseconds included); ``None`` if it is not one."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text[-1] in "Zz":
        text = text[:-1] + "+00:00"
    match = re.match(r"^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(.*)$", text)
    if match:
        fraction = match.group(2)
        text = match.group(1) + (("." + (fraction + "000000")[:6]) if fraction else "") + match.group(3)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _str(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return default
    return default


def _opt_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _str_list(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class SandboxPhase(str, Enum):
    """A sandbox's lifecycle phase. Values the SDK does not know read as ``UNKNOWN``."""

    CREATING = "Creating"
    RUNNING = "Running"
    STOPPED = "Stopped"
    ERROR = "Error"
    DELETING = "Deleting"
    UNKNOWN = "Unknown"

    @classmethod
    def parse(cls, value: Any) -> SandboxPhase:
        """The phase named by ``value``, or ``UNKNOWN``."""
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN


@dataclass
class CreatedBy:
    """Who created a sandbox."""

    email: str | None = None
    display_name: str | None = None

    @classmethod
    def from_dict(cls, data: Any) -> CreatedBy | None:
        """Builds it from ``createdBy``; ``None`` when absent."""
        if not isinstance(data, dict):
            return None
        return cls(email=_opt_str(data.get("email")), display_name=_opt_str(data.get("displayName")))


@dataclass
class AgentConfigureStatus:
    """The agent configuration in force (``agentConfigure`` of a sandbox)."""

    last_configured_at: datetime | None = None
    install_command_hash: str | None = None
    entrypoint: list[str] = field(default_factory=list)
    install_exit_code: int = 0
    max_concurrent_invokes: int | None = None
    default_invoke_timeout_seconds: int | None = None

    @classmethod
    def from_dict(cls, data: Any) -> AgentConfigureStatus | None:
        """Builds it from ``agentConfigure``; ``None`` before the first configure."""
        if not isinstance(data, dict):
            return None
        return cls(
            last_configured_at=parse_time(data.get("lastConfiguredAt")),
            install_command_hash=_opt_str(data.get("installCommandHash")),
            entrypoint=_str_list(data.get("entrypoint")),
            install_exit_code=_int(data.get("installExitCode")),
            max_concurrent_invokes=_opt_int(data.get("maxConcurrentInvokes")),
            default_invoke_timeout_seconds=_opt_int(data.get("defaultInvokeTimeoutSeconds")),
        )


@dataclass
class SandboxSummary:
    """A sandbox as ``GET /sandboxes/{id}`` (or the list, or the create answer) shows it.

    ``created_at`` and ``last_activity_at`` are the server's RFC 3339 strings (as in
    the v0.8 SDK); ``created_at_datetime`` parses the first.
    """

    sandbox_id: str
    name: str
    namespace: str
    status: str
    mode: str | None = None
    template_ref: str | None = None
    image: str | None = None
    created_at: str | None = None
    last_activity_at: str | None = None
    created_by: CreatedBy | None = None
    message: str | None = None
    agent_configure: AgentConfigureStatus | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def phase(self) -> SandboxPhase:
        """``status`` as a :class:`SandboxPhase`."""
        return SandboxPhase.parse(self.status)

    @property
    def created_at_datetime(self) -> datetime | None:
        """``created_at`` parsed."""
        return parse_time(self.created_at)

    @classmethod
    def from_dict(cls, data: Any, *, name: str = "", namespace: str = "default") -> SandboxSummary:
        """Builds it from a sandbox JSON object (``name``/``namespace`` fill gaps)."""
        data = _dict(data)
        template_ref = data.get("templateRef")
        if isinstance(template_ref, dict):
            template_ref = template_ref.get("name")
        sandbox_id = _str(data.get("sandboxId")) or _str(data.get("name")) or name
        return cls(
            sandbox_id=sandbox_id,
            name=_str(data.get("name")) or sandbox_id,
            namespace=_str(data.get("namespace")) or namespace,
            status=_str(data.get("status"), "Unknown"),
            mode=_opt_str(data.get("mode")),
            template_ref=_opt_str(template_ref),
            image=_opt_str(data.get("image")),
            created_at=_opt_str(data.get("createdAt")),
            last_activity_at=_opt_str(data.get("lastActivityAt")),
            created_by=CreatedBy.from_dict(data.get("createdBy")),
            message=_opt_str(data.get("message")),
            agent_configure=AgentConfigureStatus.from_dict(data.get("agentConfigure")),
            raw=data,
        )


@dataclass
class Template:
    """A sandbox template (``GET /templates``)."""

    name: str
    kind: str | None = None
    description: str | None = None
    mode: str | None = None
    image: str | None = None
    namespace: str | None = None
    spec: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: Any) -> Template:
        """Builds it from a template JSON object."""
        data = _dict(data)
        spec = data.get("spec")
        return cls(
            name=_str(data.get("name")),
            kind=_opt_str(data.get("kind")),
            description=_opt_str(data.get("description")),
            mode=_opt_str(data.get("mode")),
            image=_opt_str(data.get("image")),
            namespace=_opt_str(data.get("namespace")),
            spec=spec if isinstance(spec, dict) else None,
            raw=data,
        )


@dataclass
class CurrentUser:
    """The caller as the server sees it (``GET /user/me``)."""

    sub: str
    email: str | None = None
    name: str | None = None
    groups: list[str] = field(default_factory=list)
    is_admin: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: Any) -> CurrentUser:
        """Builds it from ``GET /user/me``."""
        data = _dict(data)
        return cls(
            sub=_str(data.get("sub")),
            email=_opt_str(data.get("email")),
            name=_opt_str(data.get("name")),
            groups=_str_list(data.get("groups")),
            is_admin=bool(data.get("isAdmin", False)),
            raw=data,
        )


@dataclass
class ExecResult:
    """The outcome of ``sandbox.exec()``."""

    stdout: str
    stderr: str
    exit_code: int
    duration_ms: int | None = None
    timed_out: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: Any) -> ExecResult:
        """Builds it from the exec response."""
        data = _dict(data)
        return cls(
            stdout=_str(data.get("stdout")),
            stderr=_str(data.get("stderr")),
            exit_code=_int(data.get("exitCode"), -1),
            duration_ms=_opt_int(data.get("durationMs")),
            timed_out=bool(data.get("timedOut", False)),
            raw=data,
        )


#: The v0.8 SDK's name for :class:`ExecResult`.
CommandResult = ExecResult


@dataclass
class FileEntry:
    """One entry of a directory listing. ``mode`` is what the server sends (an ``ls -l``
    string such as ``-rw-r--r--``); ``modified_at`` is Unix seconds."""

    name: str
    size: int = 0
    is_dir: bool = False
    mode: str | int | None = None
    modified_at: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: Any) -> FileEntry:
        """Builds it from one ``entries`` item."""
        data = _dict(data)
        mode = data.get("mode")
        return cls(
            name=_str(data.get("name")),
            size=_int(data.get("size")),
            is_dir=bool(data.get("isDir", False)),
            mode=mode if isinstance(mode, (str, int)) and not isinstance(mode, bool) else None,
            modified_at=_opt_int(data.get("modifiedAt")),
            raw=data,
        )


@dataclass
class WriteResult:
    """The answer to ``files.write()``: the absolute path and the bytes written."""

    path: str
    bytes: int


@dataclass
class ConfigureResult:
    """The ``result`` of a configure (the configuration in force afterwards).

    ``install_exit_code`` is that of the install that ran (0 when none ran); a failed
    install is reported here, not raised. ``logs`` holds the ``(stream, line)`` pairs
    the configure streamed.
    """

    last_configured_at: datetime | None = None
    install_command_hash: str | None = None
    entrypoint: list[str] = field(default_factory=list)
    install_exit_code: int = 0
    skipped: bool = False
    logs: list[tuple[str, str]] = field(default_factory=list, repr=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: Any, logs: list[tuple[str, str]] | None = None) -> ConfigureResult:
        """Builds it from the ``result`` event's data."""
        data = _dict(data)
        return cls(
            last_configured_at=parse_time(data.get("lastConfiguredAt")),
            install_command_hash=_opt_str(data.get("installCommandHash")),
            entrypoint=_str_list(data.get("entrypoint")),
            install_exit_code=_int(data.get("installExitCode")),
            skipped=bool(data.get("skipped", False)),
            logs=list(logs or []),
            raw=data,
        )


@dataclass
class InvokeInfo:
    """A running or recently finished invoke (``GET /sandboxes/{id}/invokes``)."""

    invoke_id: str
    started_at: int | None = None
    state: str | None = None
    started_by: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: Any) -> InvokeInfo:
        """Builds it from one ``invokes`` item."""
        data = _dict(data)
        return cls(
            invoke_id=_str(data.get("invokeId")),
            started_at=_opt_int(data.get("startedAt")),
            state=_opt_str(data.get("state")),
            started_by=_opt_str(data.get("startedBy")),
            raw=data,
        )


# ---------------------------------------------------------------------------
# Invoke stream events


@dataclass(kw_only=True)
class InvokeEvent:
    """One event of an invoke stream.

    ``event`` is the SSE event name and ``data`` its JSON payload (as in the v0.8 SDK);
    ``id`` is the event's sequence number (1, 2, 3, ... per invoke). Known names come
    as the subclasses :class:`StartEvent`, :class:`LogEvent`, :class:`ExitEvent`,
    :class:`GapEvent` and :class:`ErrorEvent`; any other name as this class.
    """

    event: str
    data: dict[str, Any] = field(default_factory=dict)
    id: int | None = None


@dataclass(kw_only=True)
class StartEvent(InvokeEvent):
    """The run started. ``started_at`` is Unix milliseconds."""

    event: str = "start"
    invoke_id: str = ""
    started_at: int | None = None


@dataclass(kw_only=True)
class LogEvent(InvokeEvent):
    """One line of output, its newline removed.

    ``raw`` is the exact bytes of the line (base64-decoded when the server sent
    ``"encoding": "base64"`` for output that is not valid UTF-8); ``text`` is ``raw``
    decoded as UTF-8 with invalid bytes replaced by U+FFFD.
    """

    event: str = "log"
    stream: str = "stdout"
    text: str = ""
    raw: bytes = b""
    encoding: str | None = None

    @property
    def line(self) -> str:
        """Alias of ``text``."""
        return self.text


@dataclass(kw_only=True)
class ExitEvent(InvokeEvent):
    """The run ended: ``reason`` is ``completed`` (any exit code), ``canceled``,
    ``timeout`` or ``error`` (then ``exit_code`` is -1 and ``cause`` may say why)."""

    event: str = "exit"
    invoke_id: str = ""
    exit_code: int = -1
    duration_ms: int = 0
    reason: str = "completed"
    cause: str | None = None
    message: str | None = None


@dataclass(kw_only=True)
class GapEvent(InvokeEvent):
    """Events ``from_seq`` to ``to_seq`` (inclusive) are no longer retained by the server
    and were skipped; nothing is lost silently."""

    event: str = "gap"
    from_seq: int = 0
    to_seq: int = 0


@dataclass(kw_only=True)
class ErrorEvent(InvokeEvent):
    """An ``error`` event (older servers; this server ends runs with an ``exit``)."""

    event: str = "error"
    message: str = ""


def decode_log_data(data: dict[str, Any]) -> tuple[str, bytes, str | None]:
    """Returns ``(text, raw_bytes, encoding)`` of a ``log`` event's data."""
    payload = _str(data.get("data"))
    encoding = _opt_str(data.get("encoding"))
    if encoding == "base64":
        try:
            raw = base64.b64decode(payload, validate=False)
        except (binascii.Error, ValueError):
            raw = payload.encode("utf-8")
        return raw.decode("utf-8", errors="replace"), raw, encoding
    return payload, payload.encode("utf-8", errors="surrogatepass"), encoding


def invoke_event_from(name: str, data: dict[str, Any], seq: int | None) -> InvokeEvent:
    """Builds the typed event for an SSE event name and its JSON data."""
    if name == "start":
        return StartEvent(
            data=data,
            id=seq,
            invoke_id=_str(data.get("invokeId")),
            started_at=_opt_int(data.get("startedAt")),
        )
    if name == "log":
        text, raw, encoding = decode_log_data(data)
        return LogEvent(
            data=data,
            id=seq,
            stream=_str(data.get("stream"), "stdout") or "stdout",
            text=text,
            raw=raw,
            encoding=encoding,
        )
    if name == "exit":
        return ExitEvent(
            data=data,
            id=seq,
            invoke_id=_str(data.get("invokeId")),
            exit_code=_int(data.get("exitCode"), -1),
            duration_ms=_int(data.get("durationMs")),
            reason=_str(data.get("reason"), "completed") or "completed",
            cause=_opt_str(data.get("cause")),
            message=_opt_str(data.get("message")),
        )
    if name == "gap":
        return GapEvent(
            data=data,
            id=seq,
            from_seq=_int(data.get("from")),
            to_seq=_int(data.get("to")),
        )
    if name == "error":
        return ErrorEvent(data=data, id=seq, message=_str(data.get("message"), "unknown error"))
    return InvokeEvent(event=name, data=data, id=seq)


@dataclass
class InvokeResult:
    """The outcome of ``sandbox.agent.invoke()``.

    ``stdout``/``stderr`` are the run's lines joined with ``\\n`` (so without a trailing
    newline), decoded as UTF-8 with invalid bytes replaced; ``stdout_bytes`` and
    ``stderr_bytes`` are the exact bytes, joined the same way.
    """

    invoke_id: str
    exit_code: int
    duration_ms: int
    reason: str = "completed"
    stdout: str = ""
    stderr: str = ""
    cause: str | None = None
    message: str | None = None
    stdout_bytes: bytes = field(default=b"", repr=False)
    stderr_bytes: bytes = field(default=b"", repr=False)
    started_at: int | None = None
    gaps: list[tuple[int, int]] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        """True when the entrypoint ran to completion and exited 0."""
        return self.reason == "completed" and self.exit_code == 0
