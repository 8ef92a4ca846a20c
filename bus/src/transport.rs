//! The [`Bus`] trait: what AgentTier needs from a message bus, and nothing more.
//!
//! Semantics follow core NATS, so the in-process implementation and the NATS
//! one are interchangeable: subjects are dot-separated tokens, `*` matches one
//! token and `>` the rest; a queue group delivers each message to one member;
//! a request to a subject nobody listens on fails at once with
//! [`Error::NoResponders`]; delivery is at most once.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use futures::stream::BoxStream;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Header carrying the wire version of a message's JSON body.
pub const WIRE_HEADER: &str = "Agenttier-Wire";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Nobody is subscribed to the request's subject.
    #[error("no responders")]
    NoResponders,
    /// A responder may exist but did not answer in time.
    #[error("request timed out")]
    TimedOut,
    /// The connection to the bus is gone or unusable.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// A subject that is not a valid NATS subject.
    #[error("invalid subject {0:?}")]
    InvalidSubject(String),
    /// A header NATS cannot carry (the name is given).
    #[error("invalid header {0:?}")]
    InvalidHeader(String),
    /// Headers and payload together exceed the largest message the bus carries.
    #[error("message too large: {0}")]
    TooLarge(String),
    #[error("invalid message: {0}")]
    Decode(#[from] serde_json::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Message headers, in order; names are case-sensitive as in NATS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.insert(name, value);
        self
    }

    /// Sets `name`, replacing any earlier value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        self.0.retain(|(n, _)| *n != name);
        self.0.push((name, value.into()));
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

#[derive(Debug, Clone)]
pub struct Message {
    pub subject: String,
    /// Where a reply goes, for requests.
    pub reply: Option<String>,
    pub headers: Headers,
    pub payload: Bytes,
}

impl Message {
    /// Decodes the JSON body.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_slice(&self.payload)?)
    }
}

/// A live subscription; dropping it unsubscribes.
pub struct Subscription {
    inner: BoxStream<'static, Message>,
}

impl Subscription {
    pub fn new(inner: BoxStream<'static, Message>) -> Self {
        Self { inner }
    }
}

impl Stream for Subscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Subscription")
    }
}

#[async_trait::async_trait]
pub trait Bus: Send + Sync + 'static {
    async fn publish(&self, subject: String, headers: Headers, payload: Bytes) -> Result<()>;

    async fn subscribe(&self, subject: String) -> Result<Subscription>;

    async fn queue_subscribe(&self, subject: String, group: String) -> Result<Subscription>;

    /// Sends a request and waits for the first reply.
    async fn request(
        &self,
        subject: String,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message>;

    /// Returns once everything published before has reached the server.
    async fn flush(&self) -> Result<()>;

    /// Whether the bus is reachable right now (for readiness and 503s).
    fn is_connected(&self) -> bool;
}

fn json_headers() -> Headers {
    Headers::new().with(WIRE_HEADER, crate::msg::WIRE_VERSION.to_string())
}

/// Sends `req` as JSON and decodes the JSON reply.
pub async fn request_json<Req: Serialize, Resp: DeserializeOwned>(
    bus: &dyn Bus,
    subject: String,
    req: &Req,
    timeout: Duration,
) -> Result<Resp> {
    let payload = Bytes::from(serde_json::to_vec(req)?);
    let reply = bus
        .request(subject, json_headers(), payload, timeout)
        .await?;
    reply.json()
}

/// Publishes `body` as JSON on `subject`.
pub async fn publish_json<T: Serialize>(bus: &dyn Bus, subject: String, body: &T) -> Result<()> {
    let payload = Bytes::from(serde_json::to_vec(body)?);
    bus.publish(subject, json_headers(), payload).await
}

/// Answers a request with a JSON body; a message without a reply subject is
/// ignored (it was published, not requested).
pub async fn respond_json<T: Serialize>(bus: &dyn Bus, msg: &Message, body: &T) -> Result<()> {
    respond_encoded(bus, msg, Bytes::from(serde_json::to_vec(body)?)).await
}

/// As [`respond_json`], for a body already encoded as JSON.
pub async fn respond_encoded(bus: &dyn Bus, msg: &Message, json: Bytes) -> Result<()> {
    let Some(reply) = &msg.reply else {
        return Ok(());
    };
    bus.publish(reply.clone(), json_headers(), json).await
}

/// Whether `subject` matches the subscription `pattern` (`*` one token, `>` the rest).
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut pat = pattern.split('.');
    let mut sub = subject.split('.');
    loop {
        match (pat.next(), sub.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(p), Some(s)) if p == s => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The largest message (headers and payload) the in-process bus carries: the
/// default `max_payload` of nats-server, so `up` fails where NATS would.
pub const MAX_MESSAGE_SIZE: usize = 1024 * 1024;

/// Header names are visible ASCII without `:`, values have no CR or LF, as
/// NATS requires (async-nats panics on anything else).
pub fn validate_headers(headers: &Headers) -> Result<()> {
    for (name, value) in headers.iter() {
        if name.is_empty()
            || name.contains(|c: char| !c.is_ascii_graphic() || c == ':')
            || value.contains(['\r', '\n'])
        {
            return Err(Error::InvalidHeader(name.to_string()));
        }
    }
    Ok(())
}

/// The size NATS counts against `max_payload`: headers as on the wire, then the payload.
pub fn message_size(headers: &Headers, payload: &[u8]) -> usize {
    let headers = if headers.is_empty() {
        0
    } else {
        // "NATS/1.0\r\n", "name: value\r\n" each, "\r\n"
        10 + headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 4)
            .sum::<usize>()
            + 2
    };
    headers + payload.len()
}

/// A subject to publish on: non-empty tokens, no wildcards, no whitespace.
pub fn validate_subject(subject: &str, allow_wildcards: bool) -> Result<()> {
    // One pass over the bytes: every publish checks its subject.
    let space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\x0B' | b'\x0C' | b'\r');
    let mut tokens = subject.split('.').peekable();
    let mut ok = !subject.is_empty();
    while ok && let Some(t) = tokens.next() {
        ok = match t {
            "" => false,
            "*" => allow_wildcards,
            ">" => allow_wildcards && tokens.peek().is_none(),
            _ => {
                !t.bytes().any(|b| b == b'*' || b == b'>' || space(b))
                    && (t.is_ascii() || !t.contains(char::is_whitespace))
            }
        };
    }
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidSubject(subject.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_nats() {
        assert!(subject_matches("a.*.c", "a.b.c"));
        assert!(!subject_matches("a.*.c", "a.b.d"));
        assert!(subject_matches("a.>", "a.b.c"));
        assert!(!subject_matches("a.>", "a"));
        assert!(!subject_matches("a.b", "a.b.c"));
        assert!(subject_matches("a.b.c", "a.b.c"));
        assert!(!subject_matches("a.b.c", "a.b.cd"));
        assert!(subject_matches(">", "a"));
        assert!(!subject_matches("*", "a.b"));
    }

    #[test]
    fn subjects_are_validated() {
        assert!(validate_subject("a.b", false).is_ok());
        assert!(validate_subject("a.*", false).is_err());
        assert!(validate_subject("a.*", true).is_ok());
        assert!(validate_subject("a.>.b", true).is_err());
        assert!(validate_subject("a..b", false).is_err());
        assert!(validate_subject("a b", false).is_err());
        assert!(validate_subject("", false).is_err());
        assert!(validate_subject("a.b.", false).is_err());
        assert!(validate_subject(".a", false).is_err());
        assert!(validate_subject("a.>", true).is_ok());
        assert!(validate_subject("a.>", false).is_err());
        assert!(validate_subject("a.b*.c", true).is_err());
        assert!(validate_subject("a.b>", true).is_err());
        assert!(validate_subject("a.\tb", false).is_err());
        assert!(validate_subject("a.b\u{0B}", false).is_err());
        assert!(validate_subject("a.b\u{2003}c", false).is_err());
        assert!(validate_subject("a.é.c", false).is_ok());
        assert!(validate_subject(".", false).is_err());
        assert!(validate_subject("*", true).is_ok());
        assert!(validate_subject(">", true).is_ok());
        assert!(validate_subject("a.*.>", true).is_ok());
        assert!(validate_subject("a.**", true).is_err());
        assert!(validate_subject("a.>>", true).is_err());
        assert!(validate_subject("a.*b", true).is_err());
        assert!(validate_subject("a.>.", true).is_err());
    }

    #[test]
    fn headers_are_validated() {
        assert!(validate_headers(&Headers::new().with("X-Ok", "a b: c")).is_ok());
        assert!(validate_headers(&Headers::new().with("X Bad", "v")).is_err());
        assert!(validate_headers(&Headers::new().with("X:Bad", "v")).is_err());
        assert!(validate_headers(&Headers::new().with("", "v")).is_err());
        assert!(validate_headers(&Headers::new().with("X-Ok", "a\r\nb")).is_err());
    }
}
