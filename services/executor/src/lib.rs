//! `agenttier-executor`: the node-local owner of sandboxes.
//!
//! Hosts one supervised actix actor per sandbox placed on this node (see
//! [`actor`]), answers the sandbox's bus subjects, runs entrypoints and
//! installs under the local runtime ([`runtime`]), and publishes heartbeats.
//! It is not the control plane: placement and templates belong to the
//! controller, HTTP to the router.

pub mod actor;
mod code;
mod configure;
mod disk;
mod events;
mod files;
mod hostview;
mod launch;
mod limits;
mod listener;
pub mod output;
mod persist;
mod run;
pub mod runtime;
mod state;
mod system;
mod terminal;

pub use limits::sweep_leftovers;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agenttier_bus::model::{Phase, Sandbox, now_rfc3339, now_unix_ms, parse_duration};
use agenttier_bus::msg::{Heartbeat, LifecycleEvent};
use agenttier_bus::store::{self, Store, WatchEvent};
use agenttier_bus::subject::Subjects;
use agenttier_bus::{Bus, Headers};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::actor::{Handle, SandboxActor};
use crate::listener::Hosted;
pub use crate::runtime::Isolation;
use crate::state::Dirs;

#[derive(Debug, Clone, clap::Args)]
#[group(id = "executor")]
pub struct Args {
    /// This node's name (a DNS-1123 label), unique among executors.
    #[arg(long = "node", env = "AGENTTIER_NODE", default_value = "node-1")]
    pub node: String,
    /// Where workspaces and per-sandbox state live.
    #[arg(long, env = "AGENTTIER_DATA_DIR", default_value = "./agenttier-data")]
    pub data_dir: PathBuf,
    /// `bwrap` (default) or `none` (no isolation at all; development only).
    #[arg(long, env = "AGENTTIER_ISOLATION", value_enum, default_value = "bwrap")]
    pub isolation: Isolation,
    /// More host directories sandboxes may read (besides /usr, /etc, /opt
    /// and the directories on PATH), comma-separated.
    #[arg(
        long = "sandbox-ro-bind",
        env = "AGENTTIER_SANDBOX_RO_BINDS",
        value_delimiter = ','
    )]
    pub sandbox_ro_binds: Vec<PathBuf>,
    /// Most processes one run (its whole tree) may have at once.
    #[arg(long, env = "AGENTTIER_SANDBOX_MAX_PROCESSES", default_value_t = 256)]
    pub sandbox_max_processes: u32,
    /// Most resident memory one run (its whole tree) may use, in MiB.
    #[arg(long, env = "AGENTTIER_SANDBOX_MAX_MEMORY_MIB", default_value_t = 1024)]
    pub sandbox_max_memory_mib: u64,
    /// Most disk a sandbox's workspace may hold, in MiB; a run that takes it
    /// past this is stopped (`disk_limit`).
    #[arg(long, env = "AGENTTIER_SANDBOX_MAX_DISK_MIB", default_value_t = 10240)]
    pub sandbox_max_disk_mib: u64,
    /// How long a run survives with no client attached (unless detached).
    #[arg(long, env = "AGENTTIER_CLIENT_GRACE", default_value = "30s", value_parser = duration_arg)]
    pub client_grace: Duration,
    /// Event JSON kept for replay across all runs, in MiB (each run also
    /// keeps at most 32 MiB); past it the oldest runs' oldest events go.
    #[arg(long, env = "AGENTTIER_RETAINED_EVENTS_MIB", default_value_t = 256)]
    pub retained_events_mib: usize,
    /// How long after a run (invoke, exec, configure, terminal) ends its own
    /// `replay` subject is still answered; for the rest of the retention an
    /// invoke's events are replayed on its sandbox's subject (a subscription
    /// per finished run cost ~8 KiB and a NATS subscription each).
    #[arg(long, env = "AGENTTIER_REPLAY_TAIL", default_value = "10s", value_parser = duration_arg)]
    pub replay_tail: Duration,
}

pub fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).ok_or_else(|| format!("{s:?} is not a duration like 30s or 5m"))
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Runtime(#[from] runtime::Error),
    #[error("node name {0:?} is not a DNS-1123 label")]
    InvalidNode(String),
    #[error("state store: {0}")]
    Store(#[from] store::Error),
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("actor system: {0}")]
    Actors(String),
}

/// What every task of this executor shares.
pub(crate) struct Node {
    pub bus: Arc<dyn Bus>,
    pub store: Arc<dyn Store>,
    pub subjects: Subjects,
    pub runtime: runtime::Runtime,
    pub name: String,
    pub data_dir: PathBuf,
    pub client_grace: Duration,
    /// How long after a run's end its own `replay` subject is answered.
    pub replay_tail: Duration,
    /// Bounds the retained events of all runs together.
    pub retention: Arc<events::Budget>,
}

impl Node {
    pub async fn set_phase(&self, ns: &str, name: &str, phase: Phase) {
        listener::write_phase(self.store.as_ref(), ns, name, phase).await;
    }

    /// Marks the sandbox `Error` with a message saying why.
    async fn set_error(&self, sbx: &Sandbox, message: String) {
        let key = Sandbox::key(&sbx.namespace, &sbx.name);
        let r = store::modify::<Sandbox, _>(self.store.as_ref(), &key, |s| {
            let changed = s.status.phase != Phase::Error || s.status.message != message;
            s.status.phase = Phase::Error;
            s.status.message = message.clone();
            changed
        })
        .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "recording the error of {key} failed");
        }
    }

    /// Records activity on the sandbox, at most once a minute (a store write
    /// per invoke would cost more than the invoke).
    pub fn touch(self: &Arc<Self>, sbx: &Hosted) {
        use std::sync::atomic::Ordering;
        let now = now_unix_ms();
        let last = sbx.last_touch_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < 60_000
            || sbx
                .last_touch_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let (store, key) = (self.store.clone(), Sandbox::key(&sbx.namespace, &sbx.name));
        tokio::spawn(async move {
            let _ = store::modify::<Sandbox, _>(store.as_ref(), &key, |s| {
                s.status.last_activity_at = Some(now_rfc3339());
                true
            })
            .await;
        });
    }

    /// Publishes a lifecycle event on `events.<ns>.<name>`.
    pub async fn lifecycle(
        &self,
        sbx: &Hosted,
        event_type: &str,
        actor: &str,
        invoke_id: Option<&str>,
        details: serde_json::Value,
    ) {
        let ev = LifecycleEvent {
            invoke_id: invoke_id.map(str::to_string),
            details,
            ..LifecycleEvent::now(event_type, &sbx.namespace, &sbx.name, actor)
        };
        let subject = self.subjects.sandbox_events(&sbx.namespace, &sbx.name);
        let _ = agenttier_bus::publish_json(self.bus.as_ref(), subject, &ev).await;
    }
}

struct Entry {
    hosted: Arc<Hosted>,
    stop: CancellationToken,
}

/// Runs the executor until `shutdown`; then stops every run (SIGTERM, SIGKILL
/// after the grace) and returns.
pub async fn run(
    args: Args,
    bus: Arc<dyn Bus>,
    store: Arc<dyn Store>,
    subjects: Subjects,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    if !agenttier_bus::model::is_dns_label(&args.node) {
        return Err(Error::InvalidNode(args.node));
    }
    let data_err = |source| Error::DataDir {
        path: args.data_dir.clone(),
        source,
    };
    std::fs::create_dir_all(args.data_dir.join("sandboxes")).map_err(data_err)?;
    // Absolute, so bind mounts and the host view never depend on the cwd.
    let data_dir = std::fs::canonicalize(&args.data_dir).map_err(data_err)?;
    let sandboxes_dir = data_dir.join("sandboxes");
    let caps = runtime::Caps {
        max_processes: args.sandbox_max_processes.max(1),
        max_memory_bytes: args.sandbox_max_memory_mib.saturating_mul(1024 * 1024),
        max_disk_bytes: args.sandbox_max_disk_mib.saturating_mul(1024 * 1024),
    };
    limits::sweep_leftovers(&sandboxes_dir);
    let runtime =
        runtime::Runtime::new(args.isolation, &sandboxes_dir, &args.sandbox_ro_binds, caps).await?;
    let actors = system::Actors::start(2).map_err(Error::Actors)?;
    let node = Arc::new(Node {
        bus,
        store,
        subjects,
        runtime,
        name: args.node.clone(),
        data_dir,
        client_grace: args.client_grace,
        replay_tail: args.replay_tail,
        retention: events::Budget::new(args.retained_events_mib.saturating_mul(1024 * 1024)),
    });
    let mut hosted: HashMap<String, Entry> = HashMap::new();
    let mut watch = node.store.watch(Sandbox::KEY_PREFIX).await?;
    let mut beat = tokio::time::interval(Duration::from_secs(1));
    let mut expire = tokio::time::interval(Duration::from_secs(60));
    tracing::info!(node = %node.name, isolation = ?args.isolation, "executor started");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = beat.tick() => {
                heartbeat(&node, hosted.len()).await;
                revive(&node, &actors, &mut hosted).await;
            }
            _ = expire.tick() => {
                for e in hosted.values() {
                    e.hosted.handle.tell(actor::Expire);
                }
            }
            ev = watch.next() => match ev {
                Some(WatchEvent::Put { key, entry }) => match entry.decode::<Sandbox>(&key) {
                    Ok(sbx) => reconcile(&node, &actors, &mut hosted, sbx).await,
                    Err(e) => tracing::warn!(error = %e, "skipping unreadable record"),
                },
                Some(WatchEvent::Synced) => {}
                Some(WatchEvent::Delete { key }) => {
                    if let Some(e) = hosted.remove(&key) {
                        e.stop.cancel();
                        e.hosted.handle.tell(actor::CancelAll);
                    }
                }
                None => {
                    tracing::warn!("store watch ended; re-watching");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    watch = node.store.watch(Sandbox::KEY_PREFIX).await?;
                }
            },
        }
    }
    tracing::info!("executor stopping: ending every run");
    for e in hosted.values() {
        e.hosted.handle.tell(actor::CancelAll);
    }
    let deadline = tokio::time::Instant::now() + run::KILL_GRACE + Duration::from_secs(2);
    for e in hosted.values() {
        while tokio::time::Instant::now() < deadline
            && e.hosted.handle.ask(actor::Inflight).await.unwrap_or(0) > 0
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        e.stop.cancel();
    }
    actors.stop();
    Ok(())
}

async fn heartbeat(node: &Node, sandboxes: usize) {
    let hb = Heartbeat {
        node: node.name.clone(),
        sandboxes: sandboxes as u32,
        at: now_unix_ms(),
    };
    let payload = bytes::Bytes::from(serde_json::to_vec(&hb).unwrap_or_default());
    let _ = node
        .bus
        .publish(node.subjects.heartbeat(&node.name), Headers::new(), payload)
        .await;
}

/// Brings back actors that died (a panic in a handler ends an actor for good).
async fn revive(node: &Arc<Node>, actors: &system::Actors, hosted: &mut HashMap<String, Entry>) {
    let dead: Vec<String> = hosted
        .iter()
        .filter(|(_, e)| !e.hosted.handle.is_alive())
        .map(|(k, _)| k.clone())
        .collect();
    for key in dead {
        tracing::error!(sandbox = %key, "sandbox actor died; a new one takes over");
        if let Some(e) = hosted.remove(&key) {
            e.stop.cancel();
        }
        match store::get_json::<Sandbox>(node.store.as_ref(), &key).await {
            Ok(Some((sbx, _))) => reconcile(node, actors, hosted, sbx).await,
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "re-reading {key} failed"),
        }
    }
}

async fn reconcile(
    node: &Arc<Node>,
    actors: &system::Actors,
    hosted: &mut HashMap<String, Entry>,
    sbx: Sandbox,
) {
    let key = Sandbox::key(&sbx.namespace, &sbx.name);
    if sbx.status.node.as_deref() != Some(node.name.as_str()) {
        // Not ours (or no longer): let go of it without touching its files.
        if let Some(e) = hosted.remove(&key) {
            e.stop.cancel();
        }
        return;
    }
    if sbx.status.phase == Phase::Deleting {
        let entry = hosted.remove(&key);
        let node = node.clone();
        tokio::spawn(finalize_delete(node, sbx, entry));
        return;
    }
    if let Some(e) = hosted.get(&key) {
        e.hosted.handle.tell(actor::Update(sbx));
        return;
    }
    let dirs = Dirs::new(&node.data_dir, &sbx.namespace, &sbx.name);
    if let Err(e) = dirs.create() {
        tracing::error!(error = %e, sandbox = %key, "cannot create workspace");
        node.set_error(&sbx, format!("cannot create the workspace: {e}"))
            .await;
        return;
    }
    let store = node.store.clone();
    let (ns, name) = (sbx.namespace.clone(), sbx.name.clone());
    let rt = tokio::runtime::Handle::current();
    let on_configured: Arc<dyn Fn(agenttier_bus::model::AgentConfigure) + Send + Sync> =
        Arc::new(move |ac| {
            let (store, ns, name) = (store.clone(), ns.clone(), name.clone());
            rt.spawn(async move {
                let r =
                    store::modify::<Sandbox, _>(store.as_ref(), &Sandbox::key(&ns, &name), |s| {
                        s.status.agent_configure = Some(ac.clone());
                        s.status.last_activity_at = Some(now_rfc3339());
                        true
                    })
                    .await;
                if let Err(e) = r {
                    tracing::warn!(error = %e, "recording agentConfigure of {ns}/{name} failed");
                }
            });
        });
    let phase = sbx.status.phase;
    let (record, actor_dirs) = (sbx.clone(), dirs.clone());
    let addr = actors.start_actor(move || SandboxActor::new(record, actor_dirs, on_configured));
    let hosted_sbx = Arc::new(Hosted {
        namespace: sbx.namespace.clone(),
        name: sbx.name.clone(),
        runs: persist::Journal::new(&dirs),
        dirs,
        handle: Handle::new(addr),
        last_touch_ms: Default::default(),
    });
    let sub = match node
        .bus
        .subscribe(node.subjects.sandbox_all(&sbx.namespace, &sbx.name))
        .await
    {
        Ok(s) => s,
        Err(e) => {
            // The actor goes with its last address; the next change of the
            // record (or a resume) tries again.
            tracing::error!(error = %e, sandbox = %key, "cannot subscribe");
            node.set_error(&sbx, format!("cannot subscribe to its subjects: {e}"))
                .await;
            return;
        }
    };
    persist::restore(node, &hosted_sbx).await;
    let stop = CancellationToken::new();
    tokio::spawn(listener::serve(
        node.clone(),
        hosted_sbx.clone(),
        sub,
        stop.clone(),
    ));
    hosted.insert(
        key,
        Entry {
            hosted: hosted_sbx,
            stop,
        },
    );
    if matches!(phase, Phase::Creating | Phase::Error) {
        node.set_phase(&sbx.namespace, &sbx.name, Phase::Running)
            .await;
    }
}

/// Cancels the sandbox's runs, waits for them, removes its files and record.
async fn finalize_delete(node: Arc<Node>, sbx: Sandbox, entry: Option<Entry>) {
    if let Some(e) = &entry {
        e.hosted.handle.tell(actor::Update(sbx.clone()));
        let deadline = tokio::time::Instant::now() + run::KILL_GRACE + Duration::from_secs(2);
        while tokio::time::Instant::now() < deadline
            && e.hosted.handle.ask(actor::Inflight).await.unwrap_or(0) > 0
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        e.stop.cancel();
    }
    let dirs = Dirs::new(&node.data_dir, &sbx.namespace, &sbx.name);
    if let Err(e) = dirs.remove() {
        tracing::error!(error = %e, "removing workspace of {}/{} failed", sbx.namespace, sbx.name);
    }
    let key = Sandbox::key(&sbx.namespace, &sbx.name);
    if let Err(e) = node.store.delete(&key).await {
        tracing::error!(error = %e, "deleting record {key} failed");
    }
    let ev = LifecycleEvent::now("SandboxDeleted", &sbx.namespace, &sbx.name, "");
    let subject = node.subjects.sandbox_events(&sbx.namespace, &sbx.name);
    let _ = agenttier_bus::publish_json(node.bus.as_ref(), subject, &ev).await;
}
