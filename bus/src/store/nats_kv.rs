//! The store on NATS JetStream KV (a bucket with history 1).

use std::collections::HashSet;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use async_nats::jetstream::consumer::push;
use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::kv;

use super::{Entry, Error, Result, Store, WatchEvent, validate_key, validate_prefix};

/// KV gets in flight at once while listing.
const LIST_CONCURRENCY: usize = 32;

#[derive(Clone)]
pub struct NatsKvStore {
    kv: kv::Store,
    client: async_nats::Client,
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(e.to_string())
}

impl NatsKvStore {
    /// Opens the bucket, creating it if needed.
    pub async fn open(client: async_nats::Client, bucket: &str) -> Result<Self> {
        let js = async_nats::jetstream::new(client.clone());
        let kv = match js.get_key_value(bucket).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: bucket.to_string(),
                    history: 1,
                    ..Default::default()
                })
                .await
                .map_err(unavailable)?,
        };
        Ok(Self { kv, client })
    }
}

fn is_live(op: kv::Operation) -> bool {
    matches!(op, kv::Operation::Put)
}

/// A delete or purge marker: one KV writes (`KV-Operation: DEL|PURGE`), or
/// one the server writes when a key's TTL ends (`Nats-Marker-Reason`).
fn is_delete(headers: Option<&async_nats::HeaderMap>) -> bool {
    headers.is_some_and(|h| {
        h.get("KV-Operation").is_some_and(|op| op.as_str() != "PUT")
            || h.get("Nats-Marker-Reason").is_some()
    })
}

#[async_trait::async_trait]
impl Store for NatsKvStore {
    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        validate_key(key)?;
        let e = self.kv.entry(key).await.map_err(unavailable)?;
        Ok(e.filter(|e| is_live(e.operation)).map(|e| Entry {
            value: e.value,
            revision: e.revision,
        }))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, Entry)>> {
        validate_prefix(prefix)?;
        // The stream's per-subject counts name the keys without a consumer
        // (`kv.keys()` makes one per call, and a busy router runs out of them).
        let filter = format!("{}{prefix}>", self.kv.prefix);
        let subjects: Vec<(String, usize)> = self
            .kv
            .stream
            .info_with_subjects(filter)
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)?;
        let keys: Vec<String> = subjects
            .into_iter()
            .filter_map(|(subject, _)| {
                subject
                    .strip_prefix(self.kv.prefix.as_str())
                    .map(str::to_string)
            })
            .collect();
        // Gets overlap (a round trip each, not one after the other); a key
        // deleted meanwhile is left out.
        let mut out: Vec<(String, Entry)> = futures::stream::iter(keys)
            .map(|key| async move { Ok(self.get(&key).await?.map(|entry| (key, entry))) })
            .buffered(LIST_CONCURRENCY)
            .try_filter_map(|found| async move { Ok(found) })
            .try_collect()
            .await?;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<u64> {
        validate_key(key)?;
        self.kv
            .create(key, value)
            .await
            .map_err(|e| match e.kind() {
                kv::CreateErrorKind::AlreadyExists => Error::Exists(key.to_string()),
                _ => unavailable(e),
            })
    }

    async fn update(&self, key: &str, value: Bytes, revision: u64) -> Result<u64> {
        validate_key(key)?;
        // To JetStream, expected revision 0 means "must not exist": a create,
        // where the trait wants a conflict (no key has revision 0).
        if revision == 0 {
            return Err(Error::Conflict(key.to_string()));
        }
        self.kv
            .update(key, value, revision)
            .await
            .map_err(|e| match e.kind() {
                kv::UpdateErrorKind::WrongLastRevision => Error::Conflict(key.to_string()),
                _ => unavailable(e),
            })
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<u64> {
        validate_key(key)?;
        self.kv.put(key, value).await.map_err(unavailable)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        self.kv.delete(key).await.map_err(unavailable)
    }

    async fn watch(&self, prefix: &str) -> Result<BoxStream<'static, WatchEvent>> {
        validate_prefix(prefix)?;
        // The consumer async-nats's `watch_with_history` makes (an ordered
        // push consumer, last message per key), read here so the count of
        // pending messages at its creation says when the snapshot is over:
        // `Watch` keeps that to itself, and an empty prefix sends nothing.
        let consumer = self
            .kv
            .stream
            .create_consumer(push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                description: Some("agenttier store watch".to_string()),
                filter_subject: format!("{}{prefix}>", self.kv.prefix),
                deliver_policy: DeliverPolicy::LastPerSubject,
                replay_policy: ReplayPolicy::Instant,
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        let synced_at_start = consumer.cached_info().num_pending == 0;
        let mut synced = synced_at_start;
        let messages = consumer.messages().await.map_err(unavailable)?;
        let key_prefix = self.kv.prefix.clone();
        // JetStream keeps delete markers, and deleting a missing key writes
        // one: pass on a delete only for a key this watch has shown as put, so
        // the first events are the live entries, as the trait says.
        let mut live = HashSet::new();
        let events = messages.flat_map(move |m| {
            let mut out = Vec::with_capacity(2);
            match m {
                Ok(m) => {
                    let info = m.info().ok().map(|i| (i.stream_sequence, i.pending));
                    let key = m
                        .subject
                        .strip_prefix(key_prefix.as_str())
                        .map(str::to_string);
                    if let (Some((revision, pending)), Some(key)) = (info, key) {
                        if is_delete(m.headers.as_ref()) {
                            if live.remove(&key) {
                                out.push(WatchEvent::Delete { key });
                            }
                        } else {
                            live.insert(key.clone());
                            let entry = Entry {
                                value: m.payload.clone(),
                                revision,
                            };
                            out.push(WatchEvent::Put { key, entry });
                        }
                        if !synced && pending == 0 {
                            synced = true;
                            out.push(WatchEvent::Synced);
                        }
                    }
                }
                // The ordered consumer recreates itself after a gap or a
                // reconnect and goes on from the last message it delivered.
                Err(e) => tracing::debug!(error = %e, "store watch"),
            }
            futures::stream::iter(out)
        });
        let first = if synced_at_start {
            vec![WatchEvent::Synced]
        } else {
            Vec::new()
        };
        Ok(futures::stream::iter(first).chain(events).boxed())
    }
}
