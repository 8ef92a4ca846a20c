//! The router's copy of the sandbox records, kept by one store watch.
//!
//! Every request resolves its sandbox, and GET and list read records: on
//! NATS each was a JetStream KV get (a list, one per sandbox). Here they are
//! memory reads, with these rules for what a client can see:
//!
//! - A record this router has not seen yet (created through another router a
//!   moment ago, or by this one, while the watch brings it) is read from the
//!   store: a miss never means "not found".
//! - A change this router makes to a record it holds (delete) is in its copy
//!   when the request returns, so a client that stays on one router reads
//!   its writes.
//! - Anything else (a phase the executor moved, a record changed through
//!   another router) arrives with the watch, normally well under a
//!   millisecond after the write. Where a stale phase would change an
//!   answer (nobody answers the sandbox's subject: its executor is down, or
//!   the sandbox is stopped or gone), the caller reads the record from the
//!   store again ([`Records::fresh`]).
//! - Until the watch has sent its snapshot, and after it breaks until it is
//!   back, every read goes to the store.
//!
//! Only the watch adds records to the copy or removes them; a read from the
//! store, or this router's own write, only brings a record the copy holds up
//! to a later revision. So one racing a delete cannot put back a record the watch has removed (no
//! later event would take it out again), and a copy rebuilt after the watch
//! broke holds exactly the new snapshot.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::{CancellationToken, DropGuard};

use agenttier_bus::model::Sandbox;
use agenttier_bus::store::{self, Store, WatchEvent};

/// How long to wait before watching again after the watch broke.
const REWATCH_DELAY: Duration = Duration::from_millis(500);

pub(crate) struct Records {
    store: Arc<dyn Store>,
    view: Arc<RwLock<View>>,
    /// Ends the watch task with the router.
    _watch: DropGuard,
}

#[derive(Default)]
struct View {
    /// The watch has sent its snapshot and is still running.
    synced: bool,
    by_key: BTreeMap<String, Cached>,
}

struct Cached {
    revision: u64,
    sandbox: Arc<Sandbox>,
}

impl View {
    /// Keeps `sandbox` at `revision` unless a later revision of `key` is
    /// already here (the watch's puts).
    fn keep(&mut self, key: &str, revision: u64, sandbox: Arc<Sandbox>) {
        if self.by_key.get(key).is_none_or(|c| c.revision < revision) {
            self.by_key
                .insert(key.to_string(), Cached { revision, sandbox });
        }
    }

    /// Brings a record the copy holds up to `revision` (a read from the
    /// store, or this router's write); a record it does not hold stays out.
    fn refresh(&mut self, key: &str, revision: u64, sandbox: Arc<Sandbox>) {
        if let Some(c) = self.by_key.get_mut(key)
            && c.revision < revision
        {
            *c = Cached { revision, sandbox };
        }
    }

    /// Forgets everything: the watch broke, and what it missed is unknown.
    fn reset(&mut self) {
        self.synced = false;
        self.by_key.clear();
    }
}

impl Records {
    /// Starts the watch (a task that ends when this is dropped).
    pub(crate) fn start(store: Arc<dyn Store>) -> Self {
        let view = Arc::new(RwLock::new(View::default()));
        let stop = CancellationToken::new();
        tokio::spawn(watch(store.clone(), view.clone(), stop.clone()));
        Self {
            store,
            view,
            _watch: stop.drop_guard(),
        }
    }

    fn view(&self) -> std::sync::RwLockReadGuard<'_, View> {
        // A panic while holding the lock leaves a view that is still whole
        // (every change is one map operation).
        self.view.read().unwrap_or_else(|e| e.into_inner())
    }

    fn view_mut(&self) -> std::sync::RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The record under `key`: this router's copy, or the store's when it
    /// has none.
    pub(crate) async fn get(&self, key: &str) -> store::Result<Option<Arc<Sandbox>>> {
        match self.held(key) {
            Some(s) => Ok(Some(s)),
            None => self.fresh(key).await,
        }
    }

    /// The record under `key` if the copy (synced) holds it; no store read.
    pub(crate) fn held(&self, key: &str) -> Option<Arc<Sandbox>> {
        let view = self.view();
        view.synced
            .then(|| view.by_key.get(key).map(|c| c.sandbox.clone()))
            .flatten()
    }

    /// The record under `key` as the store has it now (and this router's copy
    /// of it, if it holds one, brought up to it).
    pub(crate) async fn fresh(&self, key: &str) -> store::Result<Option<Arc<Sandbox>>> {
        let Some(entry) = self.store.get(key).await? else {
            return Ok(None);
        };
        let sandbox = Arc::new(entry.decode::<Sandbox>(key)?);
        self.view_mut()
            .refresh(key, entry.revision, sandbox.clone());
        Ok(Some(sandbox))
    }

    /// A record this router wrote at `revision`: the copy holds it from now
    /// if it held the record before (see the module's note).
    pub(crate) fn wrote(&self, key: &str, revision: u64, sandbox: Sandbox) {
        self.view_mut().refresh(key, revision, Arc::new(sandbox));
    }

    /// Every readable record under `prefix` (a prefix of
    /// [`Sandbox::KEY_PREFIX`] ending with a dot), sorted by key.
    pub(crate) async fn list(&self, prefix: &str) -> store::Result<Vec<Arc<Sandbox>>> {
        self.scan(prefix, |_| true, false).await
    }

    /// The records named `name`, in any namespace. Like [`Self::list`], from
    /// the copy when it is synced; `fresh` asks the store.
    pub(crate) async fn named(&self, name: &str, fresh: bool) -> store::Result<Vec<Arc<Sandbox>>> {
        let named = |key: &str| key.strip_suffix(name).is_some_and(|k| k.ends_with('.'));
        self.scan(Sandbox::KEY_PREFIX, named, fresh).await
    }

    /// The records under `prefix` whose key passes `keep` (checked before
    /// decoding what the store returns).
    async fn scan(
        &self,
        prefix: &str,
        keep: impl Fn(&str) -> bool,
        fresh: bool,
    ) -> store::Result<Vec<Arc<Sandbox>>> {
        if !fresh {
            let view = self.view();
            if view.synced {
                return Ok(view
                    .by_key
                    .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .filter(|(k, _)| keep(k))
                    .map(|(_, c)| c.sandbox.clone())
                    .collect());
            }
        }
        let mut out = Vec::new();
        for (key, entry) in self.store.list(prefix).await? {
            if !keep(&key) {
                continue;
            }
            match entry.decode::<Sandbox>(&key) {
                Ok(s) => out.push(Arc::new(s)),
                Err(e) => tracing::warn!(error = %e, "skipping unreadable sandbox record"),
            }
        }
        Ok(out)
    }
}

/// Keeps `view` equal to the store's records, watching again when the watch
/// ends (the view is reset meanwhile, so reads go to the store).
async fn watch(store: Arc<dyn Store>, view: Arc<RwLock<View>>, stop: CancellationToken) {
    loop {
        let started = tokio::select! {
            _ = stop.cancelled() => return,
            w = store.watch(Sandbox::KEY_PREFIX) => w,
        };
        match started {
            Ok(mut events) => loop {
                let event = tokio::select! {
                    _ = stop.cancelled() => return,
                    e = events.next() => e,
                };
                let Some(event) = event else {
                    tracing::warn!(
                        "sandbox record watch ended; reading from the store until it is back"
                    );
                    break;
                };
                apply(&view, event);
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch sandbox records; reading from the store")
            }
        }
        view.write().unwrap_or_else(|e| e.into_inner()).reset();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(REWATCH_DELAY) => {}
        }
    }
}

/// One watch event into `view`; a record is decoded before taking the lock.
fn apply(view: &RwLock<View>, event: WatchEvent) {
    let lock = || view.write().unwrap_or_else(|e| e.into_inner());
    match event {
        WatchEvent::Put { key, entry } => match entry.decode::<Sandbox>(&key) {
            Ok(s) => lock().keep(&key, entry.revision, Arc::new(s)),
            Err(e) => {
                tracing::warn!(error = %e, "skipping unreadable sandbox record");
                lock().by_key.remove(&key);
            }
        },
        WatchEvent::Delete { key } => {
            lock().by_key.remove(&key);
        }
        WatchEvent::Synced => lock().synced = true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agenttier_bus::store::Entry;

    fn entry(s: &Sandbox, revision: u64) -> Entry {
        Entry {
            value: store::to_bytes(s),
            revision,
        }
    }

    fn sandbox(ns: &str, name: &str, message: &str) -> Sandbox {
        let mut s = crate::resolve::tests::sandbox(ns, name, "u1");
        s.status.message = message.into();
        s
    }

    fn put(v: &RwLock<View>, key: &str, entry: Entry) {
        let key = key.to_string();
        apply(v, WatchEvent::Put { key, entry });
    }

    fn message(v: &RwLock<View>, key: &str) -> String {
        v.read().unwrap().by_key[key].sandbox.status.message.clone()
    }

    #[test]
    fn an_older_revision_never_replaces_a_newer_one() {
        let v = RwLock::new(View::default());
        let key = Sandbox::key("default", "a");
        put(&v, &key, entry(&sandbox("default", "a", "new"), 7));
        put(&v, &key, entry(&sandbox("default", "a", "old"), 5));
        assert_eq!(message(&v, &key), "new");
        put(&v, &key, entry(&sandbox("default", "a", "newer"), 9));
        assert_eq!(message(&v, &key), "newer");
    }

    #[test]
    fn an_unreadable_record_is_dropped_not_kept_stale() {
        let v = RwLock::new(View::default());
        let key = Sandbox::key("default", "a");
        put(&v, &key, entry(&sandbox("default", "a", "x"), 1));
        let junk = Entry {
            value: bytes::Bytes::from_static(b"{not json"),
            revision: 2,
        };
        put(&v, &key, junk);
        assert!(!v.read().unwrap().by_key.contains_key(&key));
    }

    /// A synced copy with no watch behind it: it lags behind every write.
    fn lagging(store: Arc<dyn Store>) -> Records {
        let view = View {
            synced: true,
            ..View::default()
        };
        Records {
            store,
            view: Arc::new(RwLock::new(view)),
            _watch: CancellationToken::new().drop_guard(),
        }
    }

    fn names(v: &[Arc<Sandbox>]) -> Vec<String> {
        v.iter()
            .map(|s| format!("{}/{}", s.namespace, s.name))
            .collect()
    }

    #[tokio::test]
    async fn a_lagging_copy_reads_the_store_for_what_it_lacks_and_never_grows_from_it() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(store::FileStore::open(&dir.path().join("state.redb")).unwrap());
        let records = lagging(store.clone());
        let create = |ns: &'static str, name: &'static str, message: &'static str| {
            let store = store.clone();
            async move {
                let s = sandbox(ns, name, message);
                store
                    .create(&Sandbox::key(ns, name), store::to_bytes(&s))
                    .await
                    .unwrap()
            }
        };

        // Created elsewhere: not in the copy, yet found; the copy stays as
        // the watch left it (empty), so a read racing a delete could not
        // put a record back.
        let key = Sandbox::key("default", "a");
        let rev = create("default", "a", "v1").await;
        let got = records
            .get(&key)
            .await
            .unwrap()
            .expect("read from the store");
        assert_eq!(got.status.message, "v1");
        assert!(records.list(Sandbox::KEY_PREFIX).await.unwrap().is_empty());

        // A record the copy holds: kept until the watch says otherwise;
        // `fresh` reads the store's and brings the copy up to it, never back.
        records
            .view_mut()
            .keep(&key, rev, Arc::new(sandbox("default", "a", "v1")));
        let rev = store
            .update(&key, store::to_bytes(&sandbox("default", "a", "v2")), rev)
            .await
            .unwrap();
        let message = |s: Option<Arc<Sandbox>>| s.unwrap().status.message.clone();
        assert_eq!(message(records.get(&key).await.unwrap()), "v1");
        assert_eq!(message(records.fresh(&key).await.unwrap()), "v2");
        assert_eq!(message(records.get(&key).await.unwrap()), "v2");
        records
            .view_mut()
            .refresh(&key, rev - 1, Arc::new(sandbox("default", "a", "old")));
        assert_eq!(message(records.get(&key).await.unwrap()), "v2");

        // By name: only what the copy holds, or all the store has; `ab` is
        // not `b`.
        create("team", "ab", "").await;
        create("team", "b", "").await;
        create("default", "b", "").await;
        assert!(records.named("b", false).await.unwrap().is_empty());
        assert_eq!(
            names(&records.named("b", true).await.unwrap()),
            ["default/b", "team/b"]
        );

        // Deleted elsewhere: `fresh` says so; the copy keeps the record
        // until the watch's delete.
        store.delete(&key).await.unwrap();
        assert!(records.fresh(&key).await.unwrap().is_none());
        assert_eq!(
            names(&records.list(Sandbox::KEY_PREFIX).await.unwrap()),
            ["default/a"]
        );
    }

    #[tokio::test]
    async fn reads_follow_the_store_through_the_watch() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(store::FileStore::open(&dir.path().join("state.redb")).unwrap());
        let key = Sandbox::key("team", "a");
        store
            .create(&key, store::to_bytes(&sandbox("team", "a", "first")))
            .await
            .unwrap();
        let records = Records::start(store.clone());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !records.view().synced {
            assert!(tokio::time::Instant::now() < deadline, "never synced");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let got = records.get(&key).await.unwrap().unwrap();
        assert_eq!(got.status.message, "first");

        // A write by someone else reaches the copy through the watch.
        store
            .put(&key, store::to_bytes(&sandbox("team", "a", "second")))
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let listed = records.list("sandboxes.team.").await.unwrap();
            if listed.first().map(|s| s.status.message.as_str()) == Some("second") {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the watch never delivered the put"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        // A new record is found at once (from the store until the watch
        // brings it).
        let other = Sandbox::key("team", "b");
        store
            .create(&other, store::to_bytes(&sandbox("team", "b", "new")))
            .await
            .unwrap();
        assert_eq!(records.get(&other).await.unwrap().unwrap().name, "b");

        // A delete leaves the copy; list stops at the prefix's end.
        store.delete(&key).await.unwrap();
        store
            .create(
                &Sandbox::key("teamx", "c"),
                store::to_bytes(&sandbox("teamx", "c", "")),
            )
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let names: Vec<String> = records
                .list("sandboxes.team.")
                .await
                .unwrap()
                .iter()
                .map(|s| s.name.clone())
                .collect();
            if names == ["b"] {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "still listed: {names:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(records.get(&key).await.unwrap().is_none());
    }
}
