"""A small Server-Sent Events parser (WHATWG rules) over raw bytes.

Lines are split on CR, LF and CRLF only, on bytes: httpx's ``iter_lines`` also splits
on U+2028, U+0085 and other ``str.splitlines`` separators, which JSON encoders leave
unescaped inside strings, so a log line containing one would be cut in two.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, Iterable, Iterator
from collections.abc import AsyncIterator
from dataclasses import dataclass

__all__ = ["ServerSentEvent", "LineSplitter", "SSEDecoder", "iter_sse", "aiter_sse"]

_EOL = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event.

    Attributes:
        event: the ``event:`` name, ``"message"`` when none was given.
        data: the ``data:`` lines joined with ``\\n``.
        id: this event's own ``id:`` value, or ``None`` when the event had none.
        retry: the ``retry:`` value in milliseconds, if the event carried one.
    """

    event: str
    data: str
    id: str | None = None
    retry: int | None = None


class LineSplitter:
    """Splits a byte stream into lines at CR, LF or CRLF (also across chunk borders)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skip_lf = False
        self._scanned = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        """Adds a chunk; returns the lines it completed, without their terminators."""
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        self._buf += chunk
        lines: list[bytes] = []
        pos = 0
        last: re.Match[bytes] | None = None
        for match in _EOL.finditer(self._buf, self._scanned):
            lines.append(bytes(self._buf[pos : match.start()]))
            pos = match.end()
            last = match
        if last is not None and last.group() == b"\r" and last.end() == len(self._buf):
            self._skip_lf = True  # a CRLF may be split across two chunks
        del self._buf[:pos]
        self._scanned = len(self._buf)
        return lines

    def flush(self) -> list[bytes]:
        """Returns the unterminated rest, if any (at the end of the stream)."""
        rest = bytes(self._buf)
        self._buf.clear()
        self._scanned = 0
        return [rest] if rest else []


class SSEDecoder:
    """Turns lines into events: ``id:``, ``event:``, multi-line ``data:``, ``retry:`` and
    ``:`` comments (keepalives), dispatching on a blank line. An event without any
    ``data:`` line is not dispatched (as the WHATWG rules say)."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._retry: int | None = None
        self.last_event_id: str | None = None

    def decode(self, line: str) -> ServerSentEvent | None:
        """Feeds one line; returns an event when the line completes one."""
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\x00" not in value:
                self._id = value
                self.last_event_id = value
        elif name == "retry":
            if value.isdigit():
                self._retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        event: ServerSentEvent | None = None
        if self._data:
            event = ServerSentEvent(
                event=self._event or "message",
                data="\n".join(self._data),
                id=self._id,
                retry=self._retry,
            )
        self._event = ""
        self._data = []
        self._id = None
        self._retry = None
        return event


def _decode_lines(lines: list[bytes], decoder: SSEDecoder) -> Iterator[ServerSentEvent]:
    for raw in lines:
        event = decoder.decode(raw.decode("utf-8", errors="replace"))
        if event is not None:
            yield event


def iter_sse(chunks: Iterable[bytes]) -> Iterator[ServerSentEvent]:
    """Yields the events of a byte stream. An event cut off by the end of the stream
    (no blank line after it) is discarded, never half-delivered."""
    splitter = LineSplitter()
    decoder = SSEDecoder()
    for chunk in chunks:
        yield from _decode_lines(splitter.feed(chunk), decoder)


async def aiter_sse(chunks: AsyncIterable[bytes]) -> AsyncIterator[ServerSentEvent]:
    """The async twin of :func:`iter_sse`."""
    splitter = LineSplitter()
    decoder = SSEDecoder()
    async for chunk in chunks:
        for event in _decode_lines(splitter.feed(chunk), decoder):
            yield event
