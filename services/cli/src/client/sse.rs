//! Server-Sent Events, read as they arrive.
//!
//! Only complete events (ended by a blank line) are returned: an event cut
//! off by a dropped connection is never half-shown, and the resume API sends
//! it again.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};

/// One event. `data` is the raw text (JSON for AgentTier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: Option<String>,
    /// The `event:` field, `message` when absent.
    pub name: String,
    pub data: String,
}

impl Event {
    /// `id` as the sequence number AgentTier puts there.
    pub fn seq(&self) -> Option<u64> {
        self.id.as_deref().and_then(|s| s.trim().parse().ok())
    }

    /// `data` as JSON; `Null` when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or(serde_json::Value::Null)
    }
}

/// Incremental parser of `text/event-stream` bytes.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
    id: Option<String>,
    name: Option<String>,
    data: Option<String>,
}

impl Parser {
    /// Feeds `bytes`; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Event> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(n) = self.buf[start..].iter().position(|b| *b == b'\n') {
            let end = start + n;
            let mut line = &self.buf[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = String::from_utf8_lossy(line).into_owned();
            start = end + 1;
            if let Some(e) = self.line(&line) {
                out.push(e);
            }
        }
        self.buf.drain(..start);
        out
    }

    fn line(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            let data = self.data.take();
            let name = self.name.take();
            // The id persists in the SSE model, but AgentTier sends one per
            // event; taking it keeps a stale id off an event without one.
            let id = self.id.take();
            return data.map(|data| Event {
                id,
                name: name.unwrap_or_else(|| "message".into()),
                data,
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "id" => self.id = Some(value.to_string()),
            "event" => self.name = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            _ => {}
        }
        None
    }
}

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// An open event-stream response.
pub struct EventStream {
    body: Body,
    parser: Parser,
    ready: VecDeque<Event>,
    idle: Duration,
}

impl EventStream {
    /// `idle`: how long without a byte (the server sends a keepalive every
    /// 15 s) before the connection counts as lost.
    pub fn new(resp: reqwest::Response, idle: Duration) -> Self {
        Self {
            body: Box::pin(resp.bytes_stream()),
            parser: Parser::default(),
            ready: VecDeque::new(),
            idle,
        }
    }

    /// The next event; `Ok(None)` at the end of the body, `Err` with the
    /// cause when the connection broke or went silent.
    pub async fn next(&mut self) -> Result<Option<Event>, String> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Ok(Some(e));
            }
            match tokio::time::timeout(self.idle, self.body.next()).await {
                Err(_) => return Err(format!("no data for {}s", self.idle.as_secs())),
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => return Err(super::http::root_cause(&e)),
                Ok(Some(Ok(chunk))) => self.ready.extend(self.parser.push(chunk.as_ref())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(chunks: &[&str]) -> Vec<Event> {
        let mut p = Parser::default();
        chunks.iter().flat_map(|c| p.push(c.as_bytes())).collect()
    }

    #[test]
    fn events_across_chunk_boundaries() {
        let got = parse(&[
            "id: 1\nevent: lo",
            "g\ndata: {\"a\":1}\n",
            "\n: keepalive\n\nid: 2\r\n",
            "data: x\r\n\r\n",
        ]);
        assert_eq!(
            got,
            vec![
                Event {
                    id: Some("1".into()),
                    name: "log".into(),
                    data: "{\"a\":1}".into()
                },
                Event {
                    id: Some("2".into()),
                    name: "message".into(),
                    data: "x".into()
                },
            ]
        );
        assert_eq!(got[0].seq(), Some(1));
        assert_eq!(got[0].json()["a"], 1);
    }

    #[test]
    fn multi_line_data_and_comments() {
        let got = parse(&[": hi\nevent: e\ndata: a\ndata:b\n\n"]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data, "a\nb");
    }

    #[test]
    fn incomplete_events_are_not_returned() {
        assert!(parse(&["id: 3\nevent: log\ndata: {}\n"]).is_empty());
        // An event with no data is not an event.
        assert!(parse(&["event: x\n\n"]).is_empty());
    }
}
