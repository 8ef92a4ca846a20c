"""Exceptions raised by the AgentTier SDK.

Every exception derives from :class:`AgentTierError`. Errors answered by the
server carry the HTTP ``status_code``, the machine ``code`` (the body's
``error`` field), the parsed ``body`` and, when the server sent one,
``retry_after`` (seconds, from the ``Retry-After`` header).

Hierarchy::

    AgentTierError
    ├── AuthenticationError          401
    ├── AuthorizationError           403
    │   └── PolicyViolationError     403 {"error": "policy_violation"}
    ├── NotFoundError                404
    ├── ConflictError                409
    ├── APIError                     any other status
    │   └── ConcurrencyLimitError    429
    ├── APIConnectionError           the server could not be reached
    ├── StreamInterruptedError       an invoke stream dropped and could not be resumed
    ├── ConfigureError               the configure stream reported an error
    ├── InvokeError                  the invoke stream reported an error
    ├── SandboxTimeoutError          wait_until_running timed out
    └── SandboxErrorState            the sandbox entered the Error phase
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from collections.abc import Mapping
from typing import Any

__all__ = [
    "AgentTierError",
    "AuthenticationError",
    "AuthorizationError",
    "PolicyViolationError",
    "NotFoundError",
    "ConflictError",
    "APIError",
    "ConcurrencyLimitError",
    "APIConnectionError",
    "StreamInterruptedError",
    "ConfigureError",
    "InvokeError",
    "SandboxTimeoutError",
    "SandboxErrorState",
    "error_from_response",
]


class AgentTierError(Exception):
    """Base class of every error raised by this SDK.

    Attributes:
        message: the human-readable message (also ``str(error)``).
        status_code: the HTTP status, for errors answered by the server.
        code: the server's machine code (the body's ``error`` field), if any.
        body: the parsed response body (JSON, else text, else ``None``).
        retry_after: seconds to wait before retrying, from ``Retry-After``.
    """

    def __init__(
        self,
        message: str = "",
        *,
        status_code: int | None = None,
        code: str | None = None,
        body: Any = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.body = body
        self.retry_after = retry_after


class AuthenticationError(AgentTierError):
    """The server refused the credentials (401): missing, unknown, revoked or expired."""


class AuthorizationError(AgentTierError):
    """The caller may not do this (403)."""


class PolicyViolationError(AuthorizationError):
    """A governance policy refused the request (403 ``policy_violation``).

    Attributes:
        violations: the server's list of ``{"code", "message"}`` dicts.
    """

    def __init__(
        self,
        message: str,
        violations: list[dict[str, Any]] | None = None,
        *,
        status_code: int | None = 403,
        code: str | None = "policy_violation",
        body: Any = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(
            message, status_code=status_code, code=code, body=body, retry_after=retry_after
        )
        self.violations: list[dict[str, Any]] = list(violations or [])


class NotFoundError(AgentTierError):
    """The resource does not exist, or is not the caller's (404)."""


class ConflictError(AgentTierError):
    """The resource's state does not allow the operation (409), e.g. a stopped sandbox,
    a name already taken, or a configure in progress (then ``retry_after`` is set)."""


class APIError(AgentTierError):
    """Any other error status (400, 413, 424, 5xx, ...). ``str()`` is ``"<status>: <message>"``."""

    def __init__(
        self,
        status_code: int,
        message: str,
        body: Any = None,
        *,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(
            message, status_code=status_code, code=code, body=body, retry_after=retry_after
        )

    def __str__(self) -> str:
        return f"{self.status_code}: {self.message}"


class ConcurrencyLimitError(APIError):
    """The sandbox already runs as many invokes as its template allows (429).

    A subclass of :class:`APIError`, so code written for the v0.8 SDK (which raised
    ``APIError(429, ...)``) keeps working.

    Attributes:
        retry_after: whole seconds to wait before retrying (at least 1).
        inflight: invokes running when the request was refused, if the server said.
        limit: the sandbox's cap, if the server said.
    """

    retry_after: int

    def __init__(
        self,
        message: str,
        *,
        retry_after: int = 1,
        inflight: int | None = None,
        limit: int | None = None,
        body: Any = None,
        code: str | None = "concurrency_exceeded",
    ) -> None:
        super().__init__(429, message, body, code=code, retry_after=max(1, retry_after))
        self.inflight = inflight
        self.limit = limit


class APIConnectionError(AgentTierError):
    """The server could not be reached or the connection failed (the httpx error is the
    ``__cause__``)."""


class StreamInterruptedError(AgentTierError):
    """An invoke stream dropped and could not be resumed within the retry budget.

    Attributes:
        invoke_id: the invoke, when its ``start`` event had been seen (it may still run:
            reattach later with ``sandbox.agent.attach(invoke_id, after=last_event_id)``).
        last_event_id: the id of the last event delivered.
    """

    def __init__(
        self, message: str, *, invoke_id: str | None = None, last_event_id: int | None = None
    ) -> None:
        super().__init__(message)
        self.invoke_id = invoke_id
        self.last_event_id = last_event_id


class ConfigureError(AgentTierError, RuntimeError):
    """The configure stream reported an ``error`` event (files could not be written, or
    the install could not start or timed out), or ended without a result.

    Also a :class:`RuntimeError`, as the v0.8 SDK raised one.

    Attributes:
        phase: ``"files"`` or ``"install"`` (or ``None`` when the stream just ended).
        result: the ``result`` the server sent after the error, if any.
    """

    def __init__(self, message: str, *, phase: str | None = None, result: Any = None) -> None:
        super().__init__(message)
        self.phase = phase
        self.result = result


class InvokeError(AgentTierError, RuntimeError):
    """The invoke stream carried an ``error`` event (this server never sends one; older
    servers did). Also a :class:`RuntimeError`, as the v0.8 SDK raised one."""


class SandboxTimeoutError(AgentTierError, TimeoutError):
    """``wait_until_running`` gave up before the sandbox was ``Running``."""


class SandboxErrorState(AgentTierError):
    """The sandbox entered the ``Error`` phase while it was being waited for."""


def _parse_body(content: bytes) -> Any:
    if not content:
        return None
    try:
        return json.loads(content)
    except ValueError:
        return content.decode("utf-8", errors="replace")


def parse_retry_after(value: str | None) -> int | None:
    """Turns a ``Retry-After`` header (seconds or an HTTP date) into whole seconds."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0, math.ceil(float(value)))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0, math.ceil(when.timestamp() - time.time()))


def _optional_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def error_from_response(
    status_code: int, headers: Mapping[str, str], content: bytes, reason: str = ""
) -> AgentTierError:
    """Builds the exception for an error response.

    The message is the body's ``message``, else its ``error``, else the text body, else
    the reason phrase.
    """
    body = _parse_body(content)
    code: str | None = None
    message = ""
    if isinstance(body, dict):
        if isinstance(body.get("error"), str) and body["error"]:
            code = body["error"]
        if isinstance(body.get("message"), str) and body["message"]:
            message = body["message"]
        elif code:
            message = code
    elif isinstance(body, str) and body.strip():
        message = body.strip()
    if not message:
        message = reason or f"request failed with status {status_code}"
    retry_after = parse_retry_after(headers.get("retry-after"))
    common: dict[str, Any] = {
        "status_code": status_code,
        "code": code,
        "body": body,
        "retry_after": retry_after,
    }
    if status_code == 401:
        return AuthenticationError(message, **common)
    if status_code == 403:
        if code == "policy_violation":
            violations = body.get("violations") if isinstance(body, dict) else None
            return PolicyViolationError(
                message,
                [v for v in violations if isinstance(v, dict)] if isinstance(violations, list) else [],
                **common,
            )
        return AuthorizationError(message, **common)
    if status_code == 404:
        return NotFoundError(message, **common)
    if status_code == 409:
        return ConflictError(message, **common)
    if status_code == 429:
        fields = body if isinstance(body, dict) else {}
        return ConcurrencyLimitError(
            message,
            retry_after=retry_after if retry_after is not None else 1,
            inflight=_optional_int(fields.get("inflight")),
            limit=_optional_int(fields.get("limit")),
            body=body,
            code=code,
        )
    return APIError(status_code, message, body, code=code, retry_after=retry_after)
