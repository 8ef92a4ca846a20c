//! One conformance suite for the `Store` trait, run against the redb file
//! store and against NATS JetStream KV. Each scenario is written once over an
//! `Arc<dyn Store>`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use agenttier_bus::nats;
use agenttier_bus::store::{self, Entry, Error, FileStore, NatsKvStore, Store, WatchEvent};
use agenttier_tests::{NatsServer, bounded};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use tempfile::TempDir;

struct Fixture {
    store: Arc<dyn Store>,
    _dir: Option<TempDir>,
    _server: Option<NatsServer>,
}

fn file_fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FileStore::open(&dir.path().join("state.redb")).expect("open file store");
    Fixture {
        store: Arc::new(store),
        _dir: Some(dir),
        _server: None,
    }
}

async fn open_kv(server: &NatsServer) -> NatsKvStore {
    let bus = nats::Bus::connect(&server.url(), nats::ConnectOptions::default())
        .await
        .expect("connect");
    NatsKvStore::open(bus.client().clone(), "agenttier_conformance")
        .await
        .expect("open bucket")
}

async fn nats_kv_fixture() -> Fixture {
    let server = NatsServer::start();
    Fixture {
        store: Arc::new(open_kv(&server).await),
        _dir: None,
        _server: Some(server),
    }
}

macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod file {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let f = super::file_fixture();
                    super::bounded(super::$scenario(f.store.clone())).await;
                }
            )*
        }
        mod nats_kv {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::bounded(async {
                        let f = super::nats_kv_fixture().await;
                        super::$scenario(f.store.clone()).await;
                    })
                    .await;
                }
            )*
        }
    };
}

conformance!(
    get_of_missing_key_returns_none,
    create_then_get_returns_value_and_revision,
    create_of_existing_key_fails_with_exists,
    update_with_current_revision_returns_higher_revision,
    update_with_stale_revision_fails_with_conflict,
    update_of_deleted_or_missing_key_fails_with_conflict,
    put_writes_whatever_is_there,
    delete_removes_key_and_deleting_missing_key_is_ok,
    create_after_delete_succeeds,
    list_returns_live_keys_under_prefix_sorted,
    watch_sends_current_entries_then_changes_under_prefix_in_order,
    watch_of_an_empty_prefix_is_synced_at_once,
    modify_under_concurrent_writers_loses_no_update,
    invalid_keys_and_prefixes_are_rejected,
    revisions_strictly_increase_per_key,
);

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn value(store: &dyn Store, key: &str) -> Option<String> {
    let e = store.get(key).await.expect("get")?;
    Some(String::from_utf8(e.value.to_vec()).expect("utf-8"))
}

async fn next_event(w: &mut BoxStream<'static, WatchEvent>) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("no watch event within 5 s")
        .expect("watch ended")
}

async fn get_of_missing_key_returns_none(s: Arc<dyn Store>) {
    assert_eq!(s.get("sandboxes.ns.missing").await.unwrap(), None);
}

async fn create_then_get_returns_value_and_revision(s: Arc<dyn Store>) {
    let rev = s.create("sandboxes.ns.a", b("v1")).await.unwrap();
    assert!(rev > 0);
    let entry = s.get("sandboxes.ns.a").await.unwrap();
    assert_eq!(
        entry,
        Some(Entry {
            value: b("v1"),
            revision: rev
        })
    );
}

async fn create_of_existing_key_fails_with_exists(s: Arc<dyn Store>) {
    s.create("sandboxes.ns.a", b("first")).await.unwrap();
    let err = s.create("sandboxes.ns.a", b("second")).await.unwrap_err();
    assert!(
        matches!(err, Error::Exists(ref k) if k == "sandboxes.ns.a"),
        "{err:?}"
    );
    assert_eq!(value(&*s, "sandboxes.ns.a").await.as_deref(), Some("first"));
}

async fn update_with_current_revision_returns_higher_revision(s: Arc<dyn Store>) {
    let r1 = s.create("k.a", b("v1")).await.unwrap();
    let r2 = s.update("k.a", b("v2"), r1).await.unwrap();
    assert!(r2 > r1, "{r2} > {r1}");
    let e = s.get("k.a").await.unwrap().unwrap();
    assert_eq!((e.value, e.revision), (b("v2"), r2));
}

async fn update_with_stale_revision_fails_with_conflict(s: Arc<dyn Store>) {
    let r1 = s.create("k.a", b("v1")).await.unwrap();
    s.update("k.a", b("v2"), r1).await.unwrap();
    let err = s.update("k.a", b("v3"), r1).await.unwrap_err();
    assert!(
        matches!(err, Error::Conflict(ref k) if k == "k.a"),
        "{err:?}"
    );
    assert_eq!(value(&*s, "k.a").await.as_deref(), Some("v2"));
}

async fn update_of_deleted_or_missing_key_fails_with_conflict(s: Arc<dyn Store>) {
    let r1 = s.create("k.a", b("v1")).await.unwrap();
    s.delete("k.a").await.unwrap();
    let err = s.update("k.a", b("v2"), r1).await.unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "deleted: {err:?}");
    assert_eq!(s.get("k.a").await.unwrap(), None);

    for rev in [0, 1, r1 + 100] {
        let err = s.update("k.never", b("v"), rev).await.unwrap_err();
        assert!(
            matches!(err, Error::Conflict(_)),
            "missing, revision {rev}: {err:?}"
        );
    }
    assert_eq!(s.get("k.never").await.unwrap(), None);
}

async fn put_writes_whatever_is_there(s: Arc<dyn Store>) {
    let r1 = s.put("k.a", b("v1")).await.unwrap();
    let r2 = s.put("k.a", b("v2")).await.unwrap();
    assert!(r2 > r1);
    assert_eq!(value(&*s, "k.a").await.as_deref(), Some("v2"));
    s.delete("k.a").await.unwrap();
    let r3 = s.put("k.a", b("v3")).await.unwrap();
    assert!(r3 > r2);
    assert_eq!(value(&*s, "k.a").await.as_deref(), Some("v3"));
}

async fn delete_removes_key_and_deleting_missing_key_is_ok(s: Arc<dyn Store>) {
    s.create("k.a", b("v1")).await.unwrap();
    s.delete("k.a").await.unwrap();
    assert_eq!(s.get("k.a").await.unwrap(), None);
    s.delete("k.a").await.expect("deleting twice");
    s.delete("k.never")
        .await
        .expect("deleting a key that never existed");
    assert_eq!(s.get("k.never").await.unwrap(), None);
}

async fn create_after_delete_succeeds(s: Arc<dyn Store>) {
    let r1 = s.create("k.a", b("v1")).await.unwrap();
    s.delete("k.a").await.unwrap();
    let r2 = s.create("k.a", b("v2")).await.expect("create after delete");
    assert!(r2 > r1);
    assert_eq!(value(&*s, "k.a").await.as_deref(), Some("v2"));
    let err = s.create("k.a", b("v3")).await.unwrap_err();
    assert!(matches!(err, Error::Exists(_)), "{err:?}");
}

async fn list_returns_live_keys_under_prefix_sorted(s: Arc<dyn Store>) {
    for key in [
        "sandboxes.ns.c",
        "sandboxes.ns.a",
        "sandboxes.other.b",
        "sandboxesx.a",
        "templates.cluster.x",
        "sandboxes.ns.gone",
    ] {
        s.put(key, b(key)).await.unwrap();
    }
    s.delete("sandboxes.ns.gone").await.unwrap();

    let keys = |list: Vec<(String, Entry)>| list.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(
        keys(s.list("sandboxes.").await.unwrap()),
        ["sandboxes.ns.a", "sandboxes.ns.c", "sandboxes.other.b"]
    );
    assert_eq!(
        keys(s.list("sandboxes.ns.").await.unwrap()),
        ["sandboxes.ns.a", "sandboxes.ns.c"]
    );
    assert!(s.list("nothing.").await.unwrap().is_empty());
    assert_eq!(
        keys(s.list("").await.unwrap()),
        [
            "sandboxes.ns.a",
            "sandboxes.ns.c",
            "sandboxes.other.b",
            "sandboxesx.a",
            "templates.cluster.x"
        ]
    );
    for (key, entry) in s.list("sandboxes.").await.unwrap() {
        assert_eq!(entry.value, b(&key));
        assert_eq!(s.get(&key).await.unwrap(), Some(entry));
    }
}

async fn watch_of_an_empty_prefix_is_synced_at_once(s: Arc<dyn Store>) {
    s.put("e.other.1", b("not under the prefix")).await.unwrap();
    let mut w = s.watch("e.x.").await.unwrap();
    assert_eq!(next_event(&mut w).await, WatchEvent::Synced);
    let rev = s.put("e.x.1", b("one")).await.unwrap();
    assert_eq!(
        next_event(&mut w).await,
        WatchEvent::Put {
            key: "e.x.1".into(),
            entry: Entry {
                value: b("one"),
                revision: rev,
            },
        }
    );
}

async fn watch_sends_current_entries_then_changes_under_prefix_in_order(s: Arc<dyn Store>) {
    let r1 = s.put("w.x.1", b("one")).await.unwrap();
    let r2 = s.put("w.x.2", b("two")).await.unwrap();
    s.put("w.y.1", b("other prefix")).await.unwrap();
    s.put("w.x.gone", b("deleted before the watch"))
        .await
        .unwrap();
    s.delete("w.x.gone").await.unwrap();

    let mut w = s.watch("w.x.").await.unwrap();
    let mut initial = BTreeMap::new();
    for _ in 0..2 {
        match next_event(&mut w).await {
            WatchEvent::Put { key, entry } => initial.insert(key, entry),
            other => panic!("expected the current entries first, got {other:?}"),
        };
    }
    let want = BTreeMap::from([
        (
            "w.x.1".to_string(),
            Entry {
                value: b("one"),
                revision: r1,
            },
        ),
        (
            "w.x.2".to_string(),
            Entry {
                value: b("two"),
                revision: r2,
            },
        ),
    ]);
    assert_eq!(initial, want);
    assert_eq!(
        next_event(&mut w).await,
        WatchEvent::Synced,
        "the snapshot ends with Synced"
    );

    let r3 = s.put("w.x.3", b("three")).await.unwrap();
    let r4 = s.update("w.x.1", b("one again"), r1).await.unwrap();
    s.put("w.y.2", b("other prefix")).await.unwrap();
    s.delete("w.x.never").await.unwrap();
    s.delete("w.x.2").await.unwrap();
    let r5 = s.create("w.x.4", b("four")).await.unwrap();

    let expected = [
        WatchEvent::Put {
            key: "w.x.3".into(),
            entry: Entry {
                value: b("three"),
                revision: r3,
            },
        },
        WatchEvent::Put {
            key: "w.x.1".into(),
            entry: Entry {
                value: b("one again"),
                revision: r4,
            },
        },
        WatchEvent::Delete {
            key: "w.x.2".into(),
        },
        WatchEvent::Put {
            key: "w.x.4".into(),
            entry: Entry {
                value: b("four"),
                revision: r5,
            },
        },
    ];
    for want in expected {
        assert_eq!(next_event(&mut w).await, want);
    }
    let extra = tokio::time::timeout(Duration::from_millis(300), w.next()).await;
    assert!(extra.is_err(), "unexpected event {extra:?}");
}

async fn modify_under_concurrent_writers_loses_no_update(s: Arc<dyn Store>) {
    const TASKS: u64 = 8;
    const EACH: u64 = 25;
    s.create("counters.c", store::to_bytes(&0u64))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                for _ in 0..EACH {
                    let before = s.get("counters.c").await.unwrap().unwrap().revision;
                    let written = store::modify::<u64, _>(&*s, "counters.c", |n| {
                        *n += 1;
                        true
                    })
                    .await
                    .expect("modify");
                    let (_, rev) = written.expect("the key exists");
                    assert!(rev > before, "the revision written, not the one read");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let (n, _) = store::get_json::<u64>(&*s, "counters.c")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, TASKS * EACH);

    // `f` returning false writes nothing; a missing key is None.
    let rev = s.get("counters.c").await.unwrap().unwrap().revision;
    let left = store::modify::<u64, _>(&*s, "counters.c", |_| false)
        .await
        .unwrap();
    assert_eq!(
        left,
        Some((TASKS * EACH, rev)),
        "the value left, at its revision"
    );
    assert_eq!(s.get("counters.c").await.unwrap().unwrap().revision, rev);
    let missing = store::modify::<u64, _>(&*s, "counters.none", |_| true)
        .await
        .unwrap();
    assert_eq!(missing, None);
}

async fn invalid_keys_and_prefixes_are_rejected(s: Arc<dyn Store>) {
    let invalid = |r: Result<(), Error>, what: &str| {
        assert!(matches!(r, Err(Error::InvalidKey(_))), "{what}: {r:?}");
    };
    for key in [
        "", "a..b", ".a", "a.", "a b", "a/b", "a*", "a.>", "a.*.b", "ä", "a:b",
    ] {
        invalid(s.get(key).await.map(drop), &format!("get {key:?}"));
        invalid(
            s.create(key, b("v")).await.map(drop),
            &format!("create {key:?}"),
        );
        invalid(
            s.update(key, b("v"), 1).await.map(drop),
            &format!("update {key:?}"),
        );
        invalid(s.put(key, b("v")).await.map(drop), &format!("put {key:?}"));
        invalid(s.delete(key).await, &format!("delete {key:?}"));
    }
    for prefix in ["a", "a..", ".", "a b.", "a.>", "*."] {
        invalid(s.list(prefix).await.map(drop), &format!("list {prefix:?}"));
        invalid(
            s.watch(prefix).await.map(drop),
            &format!("watch {prefix:?}"),
        );
    }
    // Every allowed character works.
    s.put("Aa-_=09.x", b("ok")).await.unwrap();
    assert_eq!(value(&*s, "Aa-_=09.x").await.as_deref(), Some("ok"));
}

async fn revisions_strictly_increase_per_key(s: Arc<dyn Store>) {
    let mut last = s.create("k.a", b("0")).await.unwrap();
    for i in 1..=10 {
        let rev = if i % 2 == 0 {
            s.put("k.a", b(&i.to_string())).await.unwrap()
        } else {
            s.update("k.a", b(&i.to_string()), last).await.unwrap()
        };
        // Writes to another key in between must not confuse the per-key order.
        s.put("k.b", b(&i.to_string())).await.unwrap();
        assert!(rev > last, "write {i}: {rev} after {last}");
        last = rev;
    }
    s.delete("k.a").await.unwrap();
    let rev = s.create("k.a", b("again")).await.unwrap();
    assert!(rev > last, "re-create: {rev} after {last}");
}

/// File store only: entries survive closing and reopening the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_keeps_entries_across_reopen() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let rev = {
            let s = FileStore::open(&path).unwrap();
            s.create("k.a", b("kept")).await.unwrap()
        };
        let s = FileStore::open(&path).unwrap();
        let e = s.get("k.a").await.unwrap().unwrap();
        assert_eq!((e.value, e.revision), (b("kept"), rev));
        assert!(s.put("k.b", b("next")).await.unwrap() > rev);
    })
    .await;
}

/// NATS KV only: entries survive a crash of the server (same store dir).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_kv_store_keeps_entries_across_server_restart() {
    bounded(async {
        let mut server = NatsServer::start();
        let rev = open_kv(&server)
            .await
            .create("k.a", b("kept"))
            .await
            .unwrap();
        server.restart();
        let s = open_kv(&server).await;
        let e = s.get("k.a").await.unwrap().unwrap();
        assert_eq!((e.value, e.revision), (b("kept"), rev));
    })
    .await;
}
