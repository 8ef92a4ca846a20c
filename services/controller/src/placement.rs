//! Placement: every unplaced sandbox goes to the live executor hosting the
//! fewest sandboxes. An executor is live when its heartbeat was heard within
//! the liveness window.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agenttier_bus::Bus;
use agenttier_bus::model::{Phase, Sandbox};
use agenttier_bus::msg::Heartbeat;
use agenttier_bus::store::{self, Store, WatchEvent};
use agenttier_bus::subject::Subjects;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::Error;

#[derive(Default)]
struct View {
    /// key → node (None while unplaced) and phase.
    sandboxes: HashMap<String, (Option<String>, Phase)>,
    /// node → last heartbeat.
    nodes: HashMap<String, Instant>,
}

impl View {
    fn live_nodes(&self, window: Duration) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .nodes
            .iter()
            .filter(|(_, t)| t.elapsed() < window)
            .map(|(n, _)| n.as_str())
            .collect();
        v.sort();
        v
    }

    /// The live node with the fewest sandboxes (ties: by name).
    fn pick(&self, window: Duration) -> Option<String> {
        let load = |n: &str| {
            self.sandboxes
                .values()
                .filter(|(node, _)| node.as_deref() == Some(n))
                .count()
        };
        self.live_nodes(window)
            .into_iter()
            .min_by_key(|n| (load(n), n.to_string()))
            .map(str::to_string)
    }
}

pub async fn run(
    bus: Arc<dyn Bus>,
    store: Arc<dyn Store>,
    subjects: Subjects,
    shutdown: CancellationToken,
    window: Duration,
) -> Result<(), Error> {
    let mut beats = bus.subscribe(subjects.all_heartbeats()).await?;
    let mut watch = store.watch(Sandbox::KEY_PREFIX).await?;
    let mut view = View::default();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            m = beats.next() => {
                if let Some(hb) = m.and_then(|m| m.json::<Heartbeat>().ok()) {
                    let new = !view.nodes.contains_key(&hb.node);
                    view.nodes.insert(hb.node.clone(), Instant::now());
                    if new {
                        tracing::info!(node = %hb.node, "executor joined");
                        place_pending(store.as_ref(), &mut view, window).await;
                    }
                }
            }
            ev = watch.next() => match ev {
                Some(WatchEvent::Put { key, entry }) => {
                    if let Ok(s) = entry.decode::<Sandbox>(&key) {
                        view.sandboxes.insert(key, (s.status.node, s.status.phase));
                        place_pending(store.as_ref(), &mut view, window).await;
                    }
                }
                Some(WatchEvent::Delete { key }) => { view.sandboxes.remove(&key); }
                Some(WatchEvent::Synced) => {}
                None => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    watch = store.watch(Sandbox::KEY_PREFIX).await?;
                }
            },
            _ = tick.tick() => place_pending(store.as_ref(), &mut view, window).await,
        }
    }
}

async fn place_pending(store: &dyn Store, view: &mut View, window: Duration) {
    let pending: Vec<(String, Phase)> = view
        .sandboxes
        .iter()
        .filter(|(_, (node, _))| node.is_none())
        .map(|(k, (_, p))| (k.clone(), *p))
        .collect();
    for (key, phase) in pending {
        if phase == Phase::Deleting {
            // Never placed: nothing runs anywhere, the record can go.
            if let Err(e) = store.delete(&key).await {
                tracing::warn!(error = %e, "deleting unplaced {key} failed");
            }
            continue;
        }
        let Some(node) = view.pick(window) else {
            return;
        };
        let placed = store::modify::<Sandbox, _>(store, &key, |s| {
            if s.status.node.is_some() {
                return false;
            }
            s.status.node = Some(node.clone());
            s.status.message = format!("placed on {node}");
            true
        })
        .await;
        match placed {
            Ok(Some((s, _))) => {
                view.sandboxes.insert(key, (s.status.node, s.status.phase));
            }
            Ok(None) => {
                view.sandboxes.remove(&key);
            }
            Err(e) => tracing::warn!(error = %e, "placing {key} failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_least_loaded_live_node() {
        let mut v = View::default();
        assert_eq!(v.pick(Duration::from_secs(3)), None);
        v.nodes.insert("a".into(), Instant::now());
        v.nodes.insert("b".into(), Instant::now());
        v.sandboxes
            .insert("s1".into(), (Some("a".into()), Phase::Running));
        assert_eq!(v.pick(Duration::from_secs(3)).as_deref(), Some("b"));
        v.sandboxes
            .insert("s2".into(), (Some("b".into()), Phase::Running));
        assert_eq!(v.pick(Duration::from_secs(3)).as_deref(), Some("a"));
        // A silent node is not live.
        v.nodes
            .insert("c".into(), Instant::now() - Duration::from_secs(10));
        assert_ne!(v.pick(Duration::from_secs(3)).as_deref(), Some("c"));
    }
}
