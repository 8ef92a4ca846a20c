//! The [`Bus`] over a real NATS connection (async-nats).

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use crate::transport::{
    Bus as BusTrait, Error, Headers, Message, Result, Subscription, validate_headers,
    validate_subject,
};

/// Options for connecting; the defaults suit a service.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub name: String,
    /// How often the client pings; also how fast a dead server is noticed.
    pub ping_interval: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            name: "agenttier".into(),
            ping_interval: Duration::from_secs(2),
        }
    }
}

/// How long [`flush`](BusTrait::flush) waits for the server's answer.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct Bus {
    client: async_nats::Client,
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(e.to_string())
}

impl Bus {
    /// Connects, retrying in the background after the first success; fails
    /// when the first attempt does, so a wrong URL is reported at startup.
    pub async fn connect(url: &str, opts: ConnectOptions) -> Result<Self> {
        let client = async_nats::ConnectOptions::new()
            .name(opts.name)
            .ping_interval(opts.ping_interval)
            .connection_timeout(Duration::from_secs(5))
            .subscription_capacity(65_536)
            .connect(url)
            .await
            .map_err(unavailable)?;
        Ok(Self { client })
    }

    pub fn from_client(client: async_nats::Client) -> Self {
        Self { client }
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }
}

fn to_nats(headers: &Headers) -> async_nats::HeaderMap {
    let mut map = async_nats::HeaderMap::new();
    for (k, v) in headers.iter() {
        map.insert(k, v);
    }
    map
}

fn from_nats(msg: async_nats::Message) -> Message {
    let mut headers = Headers::new();
    if let Some(h) = &msg.headers {
        for (name, values) in h.iter() {
            if let Some(v) = values.first() {
                headers.insert(name.to_string(), v.as_str());
            }
        }
    }
    Message {
        subject: msg.subject.to_string(),
        reply: msg.reply.map(|r| r.to_string()),
        headers,
        payload: msg.payload,
    }
}

#[async_trait::async_trait]
impl BusTrait for Bus {
    async fn publish(&self, subject: String, headers: Headers, payload: Bytes) -> Result<()> {
        use async_nats::PublishErrorKind as K;
        validate_subject(&subject, false)?;
        validate_headers(&headers)?;
        let r = if headers.is_empty() {
            self.client.publish(subject, payload).await
        } else {
            self.client
                .publish_with_headers(subject, to_nats(&headers), payload)
                .await
        };
        r.map_err(|e| match e.kind() {
            K::MaxPayloadExceeded => Error::TooLarge(e.to_string()),
            K::InvalidSubject => Error::InvalidSubject(e.to_string()),
            K::Send => unavailable(e),
        })
    }

    async fn subscribe(&self, subject: String) -> Result<Subscription> {
        validate_subject(&subject, true)?;
        let sub = self.client.subscribe(subject).await.map_err(unavailable)?;
        Ok(Subscription::new(sub.map(from_nats).boxed()))
    }

    async fn queue_subscribe(&self, subject: String, group: String) -> Result<Subscription> {
        validate_subject(&subject, true)?;
        let sub = self
            .client
            .queue_subscribe(subject, group)
            .await
            .map_err(unavailable)?;
        Ok(Subscription::new(sub.map(from_nats).boxed()))
    }

    async fn request(
        &self,
        subject: String,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message> {
        use async_nats::RequestErrorKind as K;
        validate_subject(&subject, false)?;
        validate_headers(&headers)?;
        let req = async_nats::Request::new()
            .payload(payload)
            .headers(to_nats(&headers))
            .timeout(Some(timeout));
        match self.client.send_request(subject, req).await {
            Ok(m) => Ok(from_nats(m)),
            Err(e) => Err(match e.kind() {
                K::NoResponders => Error::NoResponders,
                K::TimedOut => Error::TimedOut,
                K::InvalidSubject => Error::InvalidSubject(e.to_string()),
                K::MaxPayloadExceeded => Error::TooLarge(e.to_string()),
                K::Other => unavailable(e),
            }),
        }
    }

    async fn flush(&self) -> Result<()> {
        // async-nats' flush only empties the client's write buffer. A message
        // to ourselves comes back only after the server has processed all
        // this connection sent before it (the PING/PONG other clients use is
        // not exposed), so subscriptions are in place once this returns.
        let inbox = self.client.new_inbox();
        let mut echo = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(unavailable)?;
        self.client
            .publish(inbox, Bytes::new())
            .await
            .map_err(unavailable)?;
        self.client.flush().await.map_err(unavailable)?;
        match tokio::time::timeout(FLUSH_TIMEOUT, echo.next()).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(unavailable("connection closed during flush")),
            Err(_) => Err(Error::TimedOut),
        }
    }

    fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}
