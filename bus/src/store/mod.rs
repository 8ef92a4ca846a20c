//! The state store: a small consistent key-value interface with revisions,
//! implemented on an embedded file database ([`FileStore`]) and on NATS
//! JetStream KV ([`NatsKvStore`]); one conformance suite covers both.
//!
//! Keys are dot-separated tokens (`sandboxes.<ns>.<name>`); a prefix for
//! `list` and `watch` ends with a dot. Values are JSON documents.

mod file;
mod nats_kv;

pub use file::FileStore;
pub use nats_kv::NatsKvStore;

use bytes::Bytes;
use futures::stream::BoxStream;
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("key {0:?} already exists")]
    Exists(String),
    #[error("key {0:?} changed since it was read")]
    Conflict(String),
    #[error("key {0:?} not found")]
    NotFound(String),
    #[error("invalid key {0:?}")]
    InvalidKey(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("invalid document under {key:?}: {source}")]
    Decode {
        key: String,
        source: serde_json::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Bytes,
    /// Increases on every write to the key; compare-and-set takes it.
    pub revision: u64,
}

impl Entry {
    pub fn decode<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        serde_json::from_slice(&self.value).map_err(|source| Error::Decode {
            key: key.to_string(),
            source,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put {
        key: String,
        entry: Entry,
    },
    Delete {
        key: String,
    },
    /// Sent once, after the entries that were current when the watch began:
    /// from here on the watcher's view is the store's, each change later.
    Synced,
}

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<Entry>>;

    /// Every key under `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<(String, Entry)>>;

    /// Writes `key` only if it does not exist; [`Error::Exists`] otherwise.
    async fn create(&self, key: &str, value: Bytes) -> Result<u64>;

    /// Writes `key` only if its revision is still `revision`;
    /// [`Error::Conflict`] otherwise (also when it was deleted).
    async fn update(&self, key: &str, value: Bytes, revision: u64) -> Result<u64>;

    /// Writes `key` whatever is there.
    async fn put(&self, key: &str, value: Bytes) -> Result<u64>;

    /// Removes `key`; removing a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// The current entries under `prefix` (as `Put`), then [`WatchEvent::Synced`],
    /// then every change after, in revision order.
    async fn watch(&self, prefix: &str) -> Result<BoxStream<'static, WatchEvent>>;
}

/// Typed helpers over any [`Store`].
pub async fn get_json<T: DeserializeOwned>(
    store: &dyn Store,
    key: &str,
) -> Result<Option<(T, u64)>> {
    match store.get(key).await? {
        Some(e) => Ok(Some((e.decode(key)?, e.revision))),
        None => Ok(None),
    }
}

pub fn to_bytes<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("models serialize"))
}

/// Reads `key`, applies `f`, and writes back with compare-and-set, retrying
/// on conflicts. `f` returning `false` leaves the key as it is. Returns the
/// value written (or left) with its revision, or `None` when the key does
/// not exist.
pub async fn modify<T, F>(store: &dyn Store, key: &str, mut f: F) -> Result<Option<(T, u64)>>
where
    T: Serialize + DeserializeOwned,
    F: FnMut(&mut T) -> bool,
{
    for _ in 0..64 {
        let Some((mut value, rev)) = get_json::<T>(store, key).await? else {
            return Ok(None);
        };
        if !f(&mut value) {
            return Ok(Some((value, rev)));
        }
        match store.update(key, to_bytes(&value), rev).await {
            Ok(written) => return Ok(Some((value, written))),
            Err(Error::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::Conflict(key.to_string()))
}

/// Keys are non-empty dot-separated tokens of `[-_=a-zA-Z0-9]`, as NATS KV allows.
pub fn validate_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.split('.').all(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'=')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidKey(key.to_string()))
    }
}

/// A prefix is empty or a valid key followed by a dot.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    match prefix.strip_suffix('.') {
        Some(p) => validate_key(p),
        None if prefix.is_empty() => Ok(()),
        None => Err(Error::InvalidKey(prefix.to_string())),
    }
}
