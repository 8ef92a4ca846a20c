"""Shared test material: agents, and httpx transports that cut SSE responses short
(real connections to the real server underneath, nothing mocked)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
import time
from typing import Any

import httpx
import pytest

from agenttier import APIError, NotFoundError

HELLO = b'import sys\nprint(f"hello {sys.stdin.read()}")\n'
HELLO_TEXT = 'import sys\nprint(f"hello {sys.stdin.read()}")\n'
ENTRY = ["python", "/workspace/agent.py"]

#: Prints "ready", then sleeps: something to cancel, or to hold the only slot.
SLEEPER = b'import time\nprint("ready", flush=True)\ntime.sleep(60)\n'

#: Prints `line 0` .. `line 29`, a little apart, so drops land mid-run.
COUNTER = b'import time\nfor i in range(30):\n    print(f"line {i}", flush=True)\n    time.sleep(0.02)\n'

#: Writes bytes that are not UTF-8 on both streams.
BINARY = (b'import sys\nsys.stdout.buffer.write(b"ok\\xff\\xfe\\n")\nsys.stdout.buffer.write(b"plain\\n")\n'
          b'sys.stderr.buffer.write(b"\\x80err\\n")\n')

ROUTES_NOT_BUILT = ("endpoint_not_supported", "not_implemented", "method_not_allowed")


def skip_if_not_built(error: Exception) -> None:
    """Skips the test when the server does not have the code-mode routes yet."""
    if isinstance(error, (NotFoundError, APIError)) and (
        error.code in ROUTES_NOT_BUILT or error.status_code in (405, 501)
    ):
        pytest.skip(f"server has no code-mode route yet ({error.status_code} {error.code}): "
                    "SPEC 2.4 exec/files are being built (issue #4)")


def _is_event_stream(request: httpx.Request) -> bool:
    return request.headers.get("accept") == "text/event-stream" and (
        request.url.path.endswith("/invoke") or request.url.path.endswith("/events"))


def _is_event(block: bytes) -> bool:
    """A complete SSE block that is an event (not only comments such as keepalives)."""
    return any(line and not line.startswith(b":") for line in block.split(b"\n"))


def _cut(events_before_drop: int) -> Callable[[bytes, list[bytes]], tuple[list[bytes], bool]]:
    """Splits incoming bytes into pieces to pass on; after `events_before_drop` whole
    events, passes half of the next one and reports the drop."""
    state = {"seen": 0, "buf": b""}

    def feed(chunk: bytes, out: list[bytes]) -> tuple[list[bytes], bool]:
        state["buf"] += chunk
        while True:
            end = state["buf"].find(b"\n\n")
            if end < 0:
                return out, False
            block, state["buf"] = state["buf"][: end + 2], state["buf"][end + 2:]
            if _is_event(block):
                if state["seen"] == events_before_drop:
                    out.append(block[: max(1, len(block) // 2)])
                    return out, True
                state["seen"] += 1
            out.append(block)

    return feed


class _DroppingStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, events_before_drop: int) -> None:
        self._inner = inner
        self._feed = _cut(events_before_drop)

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            out, dropped = self._feed(chunk, [])
            yield from out
            if dropped:
                raise httpx.ReadError("connection dropped by the test transport")

    def close(self) -> None:
        self._inner.close()


class _AsyncDroppingStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, events_before_drop: int) -> None:
        self._inner = inner
        self._feed = _cut(events_before_drop)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            out, dropped = self._feed(chunk, [])
            for piece in out:
                yield piece
            if dropped:
                raise httpx.ReadError("connection dropped by the test transport")

    async def aclose(self) -> None:
        await self._inner.aclose()


class _DropPlan:
    """What to do to event streams: `drops[i]` is how many events the i-th stream
    response delivers before its connection is cut (the rest are left alone);
    `rewind` is subtracted from each resume's Last-Event-ID so the server replays
    events the client already has."""

    def __init__(self, drops: list[int], rewind: int) -> None:
        self.drops = list(drops)
        self.rewind = rewind
        self.stream_requests: list[httpx.Request] = []

    def before(self, request: httpx.Request) -> None:
        if not _is_event_stream(request):
            return
        self.stream_requests.append(request)
        last = request.headers.get("last-event-id")
        if self.rewind and last is not None:
            request.headers["Last-Event-ID"] = str(max(0, int(last) - self.rewind))

    def take(self, request: httpx.Request, response: httpx.Response) -> int | None:
        if _is_event_stream(request) and response.status_code == 200 and self.drops:
            return self.drops.pop(0)
        return None

    @property
    def invoke_keys(self) -> list[str | None]:
        """The Idempotency-Key of each POST /invoke."""
        return [r.headers.get("idempotency-key") for r in self.stream_requests if r.method == "POST"]

    @property
    def resume_headers(self) -> list[str | None]:
        """The Last-Event-ID each resume request carried (after any rewind)."""
        return [r.headers.get("last-event-id") for r in self.stream_requests if r.method == "GET"]


class DroppingTransport(httpx.BaseTransport, _DropPlan):
    """A real HTTP transport that cuts invoke event streams as planned."""

    def __init__(self, drops: list[int], rewind: int = 0) -> None:
        _DropPlan.__init__(self, drops, rewind)
        self._inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.before(request)
        response = self._inner.handle_request(request)
        n = self.take(request, response)
        if n is None:
            return response
        assert isinstance(response.stream, httpx.SyncByteStream)
        return httpx.Response(response.status_code, headers=response.headers,
                              stream=_DroppingStream(response.stream, n), extensions=response.extensions)

    def close(self) -> None:
        self._inner.close()


class AsyncDroppingTransport(httpx.AsyncBaseTransport, _DropPlan):
    """The async twin of :class:`DroppingTransport`."""

    def __init__(self, drops: list[int], rewind: int = 0) -> None:
        _DropPlan.__init__(self, drops, rewind)
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.before(request)
        response = await self._inner.handle_async_request(request)
        n = self.take(request, response)
        if n is None:
            return response
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(response.status_code, headers=response.headers,
                              stream=_AsyncDroppingStream(response.stream, n), extensions=response.extensions)

    async def aclose(self) -> None:
        await self._inner.aclose()


def eventually(check: Callable[[], bool], timeout: float = 15.0, interval: float = 0.05) -> bool:
    """Polls `check` until it is true or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


def summarize(events: list[Any]) -> list[tuple[str, int | None]]:
    """(event name, id) pairs, for readable assertion failures."""
    return [(e.event, e.id) for e in events]
