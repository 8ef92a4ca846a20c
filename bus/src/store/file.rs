//! The embedded store: one redb file under the data directory.
//!
//! Revisions come from one store-wide counter, so they only ever grow. Writes
//! and watch registration share one lock, which makes "snapshot, then every
//! change after" exact.

use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::{Entry, Error, Result, Store, WatchEvent, validate_key, validate_prefix};

/// key → (revision, value)
const ENTRIES: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("entries");
/// "revision" → last revision handed out
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    watchers: Mutex<Vec<(String, mpsc::UnboundedSender<WatchEvent>)>>,
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(e.to_string())
}

enum Write {
    Create,
    Update(u64),
    Put,
    Delete,
}

impl FileStore {
    /// Opens (or creates) the database file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::create(path).map_err(unavailable)?;
        let tx = db.begin_write().map_err(unavailable)?;
        tx.open_table(ENTRIES).map_err(unavailable)?;
        tx.open_table(META).map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                watchers: Mutex::new(Vec::new()),
            }),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(unavailable)?
    }

    async fn write(&self, key: &str, value: Option<Bytes>, how: Write) -> Result<u64> {
        validate_key(key)?;
        let key = key.to_string();
        self.blocking(move |inner| {
            // Held across the commit and the notification, so watchers see
            // changes in revision order and watch() snapshots are exact.
            let mut watchers = inner.watchers.lock().map_err(unavailable)?;
            let tx = inner.db.begin_write().map_err(unavailable)?;
            let revision;
            {
                let mut entries = tx.open_table(ENTRIES).map_err(unavailable)?;
                let mut meta = tx.open_table(META).map_err(unavailable)?;
                let current = entries
                    .get(key.as_str())
                    .map_err(unavailable)?
                    .map(|v| v.value().0);
                match (&how, current) {
                    (Write::Create, Some(_)) => return Err(Error::Exists(key)),
                    (Write::Update(want), Some(have)) if *want != have => {
                        return Err(Error::Conflict(key));
                    }
                    (Write::Update(_), None) => return Err(Error::Conflict(key)),
                    (Write::Delete, None) => return Ok(0),
                    _ => {}
                }
                let last = meta
                    .get("revision")
                    .map_err(unavailable)?
                    .map(|v| v.value());
                revision = last.unwrap_or(0) + 1;
                meta.insert("revision", revision).map_err(unavailable)?;
                match &value {
                    Some(v) => {
                        entries
                            .insert(key.as_str(), (revision, v.as_ref()))
                            .map_err(unavailable)?;
                    }
                    None => {
                        entries.remove(key.as_str()).map_err(unavailable)?;
                    }
                }
            }
            tx.commit().map_err(unavailable)?;
            let event = match value {
                Some(value) => WatchEvent::Put {
                    key: key.clone(),
                    entry: Entry { value, revision },
                },
                None => WatchEvent::Delete { key: key.clone() },
            };
            watchers.retain(|(prefix, tx)| {
                !key.starts_with(prefix.as_str()) || tx.send(event.clone()).is_ok()
            });
            Ok(revision)
        })
        .await
    }

    fn scan(inner: &Inner, prefix: &str) -> Result<Vec<(String, Entry)>> {
        let tx = inner.db.begin_read().map_err(unavailable)?;
        let entries = tx.open_table(ENTRIES).map_err(unavailable)?;
        let mut out = Vec::new();
        for item in entries.range(prefix..).map_err(unavailable)? {
            let (k, v) = item.map_err(unavailable)?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            let (revision, value) = v.value();
            out.push((
                key.to_string(),
                Entry {
                    value: Bytes::copy_from_slice(value),
                    revision,
                },
            ));
        }
        Ok(out)
    }
}

#[async_trait::async_trait]
impl Store for FileStore {
    /// On the caller's thread: a point read of a committed snapshot takes
    /// microseconds and never waits for a writer (redb is MVCC), while the
    /// hop to the blocking pool and back cost more than the read on every
    /// request that resolves a sandbox. Writes and scans stay off it.
    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        validate_key(key)?;
        let tx = self.inner.db.begin_read().map_err(unavailable)?;
        let entries = tx.open_table(ENTRIES).map_err(unavailable)?;
        Ok(entries.get(key).map_err(unavailable)?.map(|v| {
            let (revision, value) = v.value();
            Entry {
                value: Bytes::copy_from_slice(value),
                revision,
            }
        }))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, Entry)>> {
        validate_prefix(prefix)?;
        let prefix = prefix.to_string();
        self.blocking(move |inner| Self::scan(inner, &prefix)).await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<u64> {
        self.write(key, Some(value), Write::Create).await
    }

    async fn update(&self, key: &str, value: Bytes, revision: u64) -> Result<u64> {
        self.write(key, Some(value), Write::Update(revision)).await
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<u64> {
        self.write(key, Some(value), Write::Put).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.write(key, None, Write::Delete).await.map(|_| ())
    }

    async fn watch(&self, prefix: &str) -> Result<BoxStream<'static, WatchEvent>> {
        validate_prefix(prefix)?;
        let prefix = prefix.to_string();
        let rx = self
            .blocking(move |inner| {
                let mut watchers = inner.watchers.lock().map_err(unavailable)?;
                let (tx, rx) = mpsc::unbounded_channel();
                for (key, entry) in Self::scan(inner, &prefix)? {
                    let _ = tx.send(WatchEvent::Put { key, entry });
                }
                let _ = tx.send(WatchEvent::Synced);
                watchers.push((prefix, tx));
                Ok(rx)
            })
            .await?;
        Ok(UnboundedReceiverStream::new(rx).boxed())
    }
}
