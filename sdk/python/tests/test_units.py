"""Pure functions, no server: the SSE parser, error mapping, request bodies."""

from __future__ import annotations

import json

import pytest

from agenttier import (
    APIError,
    AuthorizationError,
    ConcurrencyLimitError,
    ExitEvent,
    LogEvent,
    PolicyViolationError,
    StartEvent,
)
from agenttier._core import (
    InvokeStreamState,
    ResumePolicy,
    configure_file_entry,
    encode_invoke_body,
    format_duration,
    resolve_api_url,
)
from agenttier._sse import LineSplitter, iter_sse
from agenttier.exceptions import StreamInterruptedError, error_from_response


def sse(data: bytes, chunk: int = 0) -> list:
    chunks = [data[i:i + chunk] for i in range(0, len(data), chunk)] if chunk else [data]
    return list(iter_sse(chunks))


@pytest.mark.parametrize("chunk", [0, 1, 2, 3, 7])
def test_sse_fields_comments_crlf_and_multiline(chunk):
    body = (b": keepalive\r\n\r\n"
            b"id: 1\r\nevent: start\r\ndata: {\"invokeId\":\"inv-1\"}\r\n\r\n"
            b": keepalive\n\n"
            b"id:2\nevent: log\ndata: line one\ndata:line two\n\n"
            b"data: no name\r\r"
            b"event: lost\ndata: cut off")
    events = sse(body, chunk)
    assert [(e.event, e.id, e.data) for e in events] == [
        ("start", "1", '{"invokeId":"inv-1"}'),
        ("log", "2", "line one\nline two"),
        ("message", None, "no name"),
    ]


def test_sse_keeps_unicode_line_separators_inside_data():
    payload = json.dumps({"data": "a\u2028b\x85c"}, ensure_ascii=False).encode()
    [event] = sse(b"event: log\ndata: " + payload + b"\n\n", 0)
    assert json.loads(event.data)["data"] == "a\u2028b\x85c"


def test_line_splitter_handles_cr_at_chunk_end():
    s = LineSplitter()
    assert s.feed(b"a\r") == [b"a"]
    assert s.feed(b"\nb\n") == [b"b"]
    assert s.feed(b"c") == [] and s.flush() == [b"c"]


def test_stream_state_drops_duplicates_and_resumes_from_last_id():
    state = InvokeStreamState("sb", "default", ResumePolicy(max_attempts=2, base_delay=0.1), 30.0, None)
    body = (b'id: 1\nevent: start\ndata: {"invokeId":"inv-x"}\n\n'
            b'id: 2\nevent: log\ndata: {"stream":"stdout","data":"aGk=","encoding":"base64"}\n\n')
    events = [state.on_event(e) for e in sse(body)]
    assert isinstance(events[0], StartEvent) and isinstance(events[1], LogEvent)
    assert events[1].text == "hi" and events[1].raw == b"hi"
    assert state.on_drop(None) == pytest.approx(0.1)
    request = state.resume_request()
    assert request.path == "/sandboxes/sb/invokes/inv-x/events"
    assert request.headers["Last-Event-ID"] == "2" and request.params == {"namespace": "default"}
    replay = [state.on_event(e) for e in sse(body + b'id: 3\nevent: exit\ndata: {"exitCode":0}\n\n')]
    assert replay[:2] == [None, None] and isinstance(replay[2], ExitEvent) and state.finished
    # the budget counts reconnects without progress
    fresh = InvokeStreamState("sb", None, ResumePolicy(max_attempts=1), 30.0, None, invoke_id="inv-y")
    fresh.on_drop(None)
    with pytest.raises(StreamInterruptedError):
        fresh.on_drop(None)


def test_router_shutdown_exit_triggers_a_resume():
    state = InvokeStreamState("sb", None, ResumePolicy(), 30.0, None, invoke_id="inv-z", after=4)
    [event] = sse(b'id: 4\nevent: exit\ndata: {"reason":"error","cause":"router_shutdown","exitCode":-1}\n\n')
    assert state.on_event(event) is None and state.reconnect and not state.finished


def test_error_mapping_prefers_message_and_reads_429_fields():
    err = error_from_response(429, {"retry-after": "3"},
                              b'{"error":"concurrency_exceeded","inflight":2,"limit":2,"message":"busy"}')
    assert isinstance(err, ConcurrencyLimitError) and isinstance(err, APIError)
    assert (err.retry_after, err.inflight, err.limit, err.message) == (3, 2, 2, "busy")
    assert str(err) == "429: busy"
    err = error_from_response(429, {}, b"")
    assert isinstance(err, ConcurrencyLimitError) and err.retry_after == 1
    policy = error_from_response(403, {}, json.dumps({
        "error": "policy_violation", "message": "denied",
        "violations": [{"code": "template_not_allowed", "message": "no"}]}).encode())
    assert isinstance(policy, PolicyViolationError) and isinstance(policy, AuthorizationError)
    assert policy.violations == [{"code": "template_not_allowed", "message": "no"}]
    assert str(error_from_response(400, {}, b'{"error":"invalid_request"}')) == "400: invalid_request"
    assert str(error_from_response(502, {}, b"bad gateway\n")) == "502: bad gateway"


def test_request_bodies():
    assert configure_file_entry(("/workspace/a", b"text")) == {"path": "/workspace/a", "content": "text"}
    assert configure_file_entry(("/workspace/b", b"\xff")) == {"path": "/workspace/b", "contentBase64": "/w=="}
    assert configure_file_entry({"path": "/workspace/c", "content": b"\xff", "mode": "0755"}) == {
        "path": "/workspace/c", "contentBase64": "/w==", "mode": "0755"}
    assert configure_file_entry(("/workspace/d", "inline\n")) == {"path": "/workspace/d", "content": "inline\n"}
    assert encode_invoke_body({"a": 1}) == (b'{"a": 1}', "application/json")
    assert encode_invoke_body("é") == ("é".encode(), "text/plain; charset=utf-8")
    assert encode_invoke_body(None) == (b"", "application/octet-stream")
    assert format_duration(90) == "90s" and format_duration("5m") == "5m"
    assert resolve_api_url("http://h:1/api/v1/") == "http://h:1"
