//! Relayed events as a Server-Sent Events response, written by hand so that
//! every event already waiting goes out in one body frame: a client that
//! keeps up gets each event as it happens, one that is behind gets them in
//! batches instead of one frame (and one chunk header) per line.
//!
//! Each event is `id: <seq>`, `event: <kind>`, `data: <compact JSON>`, and
//! a blank line; `: keepalive` after a silence of the keepalive interval.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;

use crate::relay::{Relayed, Sequenced as _};

/// At most this many events, or about this many bytes, in one frame.
const FRAME_EVENTS: usize = 256;
const FRAME_BYTES: usize = 256 * 1024;

/// The response streaming `rx` until it closes.
pub(crate) fn sse(rx: mpsc::Receiver<Relayed>, keepalive: Duration) -> Response {
    let mut res = Response::new(Body::from_stream(frames(rx, keepalive)));
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}

fn frames(
    rx: mpsc::Receiver<Relayed>,
    keepalive: Duration,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    futures::stream::unfold(rx, move |mut rx| async move {
        let first = match tokio::time::timeout(keepalive, rx.recv()).await {
            Err(_) => return Some((Ok(Bytes::from_static(b": keepalive\n\n")), rx)),
            Ok(None) => return None,
            Ok(Some(e)) => e,
        };
        let mut buf = Vec::with_capacity(first.size().max(512));
        write_event(&mut buf, &first);
        for _ in 1..FRAME_EVENTS {
            if buf.len() >= FRAME_BYTES {
                break;
            }
            match rx.try_recv() {
                Ok(e) => write_event(&mut buf, &e),
                Err(_) => break,
            }
        }
        Some((Ok(Bytes::from(buf)), rx))
    })
}

fn write_event(buf: &mut Vec<u8>, e: &Relayed) {
    use std::io::Write as _;
    buf.reserve(e.size());
    let _ = write!(buf, "id: {}\nevent: {}\ndata: ", e.seq(), e.name());
    e.write_data_json(buf);
    buf.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use agenttier_bus::msg::{Event, EventKind, LogData};
    use futures::StreamExt;

    fn log(seq: u64, data: &str) -> Event {
        Event {
            seq,
            kind: EventKind::Log(LogData {
                stream: "stdout".into(),
                data: data.into(),
                encoding: None,
                partial: false,
            }),
        }
    }

    #[test]
    fn a_line_passed_through_is_written_as_a_decoded_one() {
        let e = log(5, "x\ty \"z\" é \u{1}");
        let through = Relayed::decode(&Bytes::from(e.to_json())).unwrap();
        assert!(matches!(through, Relayed::Log { seq: 5, .. }));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write_event(&mut a, &through);
        write_event(&mut b, &Relayed::Event(e));
        assert_eq!(String::from_utf8(a).unwrap(), String::from_utf8(b).unwrap());
    }

    #[tokio::test]
    async fn waiting_events_share_a_frame_and_silence_gets_a_keepalive() {
        let (tx, rx) = mpsc::channel(16);
        for i in 1..=3 {
            tx.send(log(i, "a\nb \"q\"").into()).await.unwrap();
        }
        let mut s = Box::pin(frames(rx, Duration::from_millis(50)));
        let first = s.next().await.unwrap().unwrap();
        assert_eq!(
            std::str::from_utf8(&first).unwrap(),
            "id: 1\nevent: log\ndata: {\"stream\":\"stdout\",\"data\":\"a\\nb \\\"q\\\"\"}\n\n\
             id: 2\nevent: log\ndata: {\"stream\":\"stdout\",\"data\":\"a\\nb \\\"q\\\"\"}\n\n\
             id: 3\nevent: log\ndata: {\"stream\":\"stdout\",\"data\":\"a\\nb \\\"q\\\"\"}\n\n"
        );
        assert_eq!(&s.next().await.unwrap().unwrap()[..], b": keepalive\n\n");
        drop(tx);
        assert!(s.next().await.is_none(), "the stream ends with the channel");
    }
}
