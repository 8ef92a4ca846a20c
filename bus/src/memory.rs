//! The in-process [`Bus`]: the same semantics as core NATS inside one process,
//! for `agenttier up` and for tests.
//!
//! Like NATS, a subscriber whose buffer is full loses messages (it is a slow
//! consumer); anything that must not be lost carries sequence numbers and has
//! a replay path, on both implementations. Unlike NATS, the reply to a
//! request goes to its requester alone (no subscription is made for it), so
//! a subscriber to `_INBOX.>` would not see it; nothing in one process
//! subscribes there.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use crate::transport::{
    Bus as BusTrait, Error, Headers, MAX_MESSAGE_SIZE, Message, Result, Subscription, message_size,
    subject_matches, validate_headers, validate_subject,
};

/// Where replies to requests are published, as NATS names its inboxes.
const INBOX_PREFIX: &str = "_INBOX.";

/// Messages a subscriber may have queued before it counts as slow and loses them.
const SUBSCRIBER_CAPACITY: usize = 65_536;

#[derive(Clone, Default)]
pub struct Bus {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Subscriptions by the literal part of their pattern (the tokens before
    /// the first wildcard), so a publish looks at a handful of buckets, not
    /// at every subscription.
    subs: Mutex<HashMap<String, Vec<Sub>>>,
    /// Requests waiting for their reply, by inbox: the first message
    /// published to one goes straight to its requester, with no
    /// subscription made and matched for it.
    waiting: Mutex<HashMap<String, oneshot::Sender<Message>>>,
    next_id: AtomicU64,
}

/// Forgets a request's inbox when the request ends, answered or not.
struct Waiting<'a> {
    inbox: &'a str,
    inner: &'a Inner,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Ok(mut waiting) = self.inner.waiting.lock() {
            waiting.remove(self.inbox);
        }
    }
}

/// The tokens of `pattern` before its first wildcard, joined.
fn literal_prefix(pattern: &str) -> String {
    pattern
        .split('.')
        .take_while(|t| *t != "*" && *t != ">")
        .collect::<Vec<_>>()
        .join(".")
}

struct Sub {
    id: u64,
    pattern: String,
    group: Option<String>,
    tx: mpsc::Sender<Message>,
}

/// Removes the subscription from the registry when the stream is dropped.
struct Unsubscribe {
    id: u64,
    key: String,
    inner: Arc<Inner>,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        if let Ok(mut subs) = self.inner.subs.lock()
            && let Some(bucket) = subs.get_mut(&self.key)
        {
            bucket.retain(|s| s.id != self.id);
            if bucket.is_empty() {
                subs.remove(&self.key);
            }
        }
    }
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    fn add(&self, pattern: String, group: Option<String>) -> Result<Subscription> {
        validate_subject(&pattern, true)?;
        let (tx, rx) = mpsc::channel(SUBSCRIBER_CAPACITY);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let key = literal_prefix(&pattern);
        self.inner
            .subs
            .lock()
            .expect("bus registry poisoned")
            .entry(key.clone())
            .or_default()
            .push(Sub {
                id,
                pattern,
                group,
                tx,
            });
        let guard = Unsubscribe {
            id,
            key,
            inner: self.inner.clone(),
        };
        let stream = ReceiverStream::new(rx).map(move |m| {
            let _keep = &guard;
            m
        });
        Ok(Subscription::new(stream.boxed()))
    }

    /// What NATS would refuse before sending.
    fn check(subject: &str, headers: &Headers, payload: &[u8]) -> Result<()> {
        validate_subject(subject, false)?;
        validate_headers(headers)?;
        let size = message_size(headers, payload);
        if size > MAX_MESSAGE_SIZE {
            return Err(Error::TooLarge(format!(
                "{size} bytes, the limit is {MAX_MESSAGE_SIZE}"
            )));
        }
        Ok(())
    }

    /// Delivers `msg`; returns how many subscribers it reached.
    fn deliver(&self, msg: Message) -> usize {
        let subs = self.inner.subs.lock().expect("bus registry poisoned");
        let mut delivered = 0;
        // Queue groups: one member each, chosen at random as nats-server does.
        let mut groups: Vec<(&str, Vec<&Sub>)> = Vec::new();
        // The buckets a match can be in: each run of leading tokens ("" too).
        let subject = msg.subject.as_str();
        let prefixes = std::iter::once("")
            .chain(subject.match_indices('.').map(|(i, _)| &subject[..i]))
            .chain(std::iter::once(subject));
        let candidates = prefixes.filter_map(|p| subs.get(p)).flatten();
        for sub in candidates.filter(|s| subject_matches(&s.pattern, &msg.subject)) {
            if sub.tx.is_closed() {
                continue;
            }
            match &sub.group {
                None => {
                    delivered += 1;
                    if sub.tx.try_send(msg.clone()).is_err() {
                        tracing::warn!(subject = %msg.subject, "slow consumer: message dropped");
                    }
                }
                Some(g) => match groups.iter_mut().find(|(name, _)| name == g) {
                    Some((_, members)) => members.push(sub),
                    None => groups.push((g, vec![sub])),
                },
            }
        }
        for (_, members) in groups {
            delivered += 1;
            let pick = members[rand::random_range(0..members.len())];
            if pick.tx.try_send(msg.clone()).is_err() {
                tracing::warn!(subject = %msg.subject, "slow consumer: message dropped");
            }
        }
        delivered
    }
}

#[async_trait::async_trait]
impl BusTrait for Bus {
    async fn publish(&self, subject: String, headers: Headers, payload: Bytes) -> Result<()> {
        Self::check(&subject, &headers, &payload)?;
        let msg = Message {
            subject,
            reply: None,
            headers,
            payload,
        };
        let requester = if msg.subject.starts_with(INBOX_PREFIX) {
            let mut waiting = self.inner.waiting.lock().expect("bus registry poisoned");
            waiting.remove(&msg.subject)
        } else {
            None
        };
        match requester {
            // A requester that has just timed out drops it, as NATS would.
            Some(tx) => drop(tx.send(msg)),
            None => drop(self.deliver(msg)),
        }
        Ok(())
    }

    async fn subscribe(&self, subject: String) -> Result<Subscription> {
        self.add(subject, None)
    }

    async fn queue_subscribe(&self, subject: String, group: String) -> Result<Subscription> {
        self.add(subject, Some(group))
    }

    async fn request(
        &self,
        subject: String,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message> {
        Self::check(&subject, &headers, &payload)?;
        let inbox = format!("{INBOX_PREFIX}{:032x}", rand::random::<u128>());
        let (tx, reply) = oneshot::channel();
        self.inner
            .waiting
            .lock()
            .expect("bus registry poisoned")
            .insert(inbox.clone(), tx);
        let _forget = Waiting {
            inbox: &inbox,
            inner: &self.inner,
        };
        let reached = self.deliver(Message {
            subject,
            reply: Some(inbox.clone()),
            headers,
            payload,
        });
        if reached == 0 {
            return Err(Error::NoResponders);
        }
        match tokio::time::timeout(timeout, reply).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(Error::Unavailable("bus closed".into())),
            Err(_) => Err(Error::TimedOut),
        }
    }

    async fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn is_connected(&self) -> bool {
        true
    }
}
