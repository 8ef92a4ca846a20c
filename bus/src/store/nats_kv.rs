//! The store on NATS JetStream KV (a bucket with history 1).

use std::collections::HashSet;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use async_nats::jetstream::kv;

use super::{Entry, Error, Result, Store, WatchEvent, validate_key, validate_prefix};

/// KV gets in flight at once while listing.
const LIST_CONCURRENCY: usize = 32;

#[derive(Clone)]
pub struct NatsKvStore {
    kv: kv::Store,
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(e.to_string())
}

impl NatsKvStore {
    /// Opens the bucket, creating it if needed.
    pub async fn open(client: async_nats::Client, bucket: &str) -> Result<Self> {
        let js = async_nats::jetstream::new(client);
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
        Ok(Self { kv })
    }
}

fn is_live(op: kv::Operation) -> bool {
    matches!(op, kv::Operation::Put)
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
        let filter = if prefix.is_empty() {
            ">".to_string()
        } else {
            format!("{prefix}>")
        };
        let w = self
            .kv
            .watch_with_history(filter)
            .await
            .map_err(unavailable)?;
        // JetStream keeps delete markers, and deleting a missing key writes
        // one: pass on a delete only for a key this watch has shown as put, so
        // the first events are the live entries, as the trait says.
        let mut live = HashSet::new();
        Ok(w.filter_map(move |e| {
            let event = e.ok().and_then(|e| {
                if is_live(e.operation) {
                    live.insert(e.key.clone());
                    Some(WatchEvent::Put {
                        key: e.key,
                        entry: Entry {
                            value: e.value,
                            revision: e.revision,
                        },
                    })
                } else {
                    live.remove(&e.key)
                        .then_some(WatchEvent::Delete { key: e.key })
                }
            });
            futures::future::ready(event)
        })
        .boxed())
    }
}
