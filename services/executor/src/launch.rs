//! Launching an admitted run (an invoke or an exec): what must be listening
//! on the bus before the request is acknowledged, and the run itself with
//! its numbered `start` and `exit`.

use std::future::Future;
use std::sync::Arc;

use agenttier_bus::msg::{EventKind, ExitData, ExitReason, StartData};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Node;
use crate::actor::RunPlan;
use crate::events::EventLog;
use crate::listener::{Hosted, receive_stdin, watch_attached};
use crate::run::{Limits, Outcome, run};
use crate::runtime::Spec;

/// The subjects of one run (its events go where its [`EventLog`] publishes).
pub(crate) struct Subjects {
    pub replay: String,
    /// How long after the end `replay` is still answered (the tail; an
    /// invoke's finished events stay replayable on its sandbox's subject).
    pub replay_for: std::time::Duration,
    pub stdin: String,
    /// `None` for a detached run: nobody needs to stay attached.
    pub attached: Option<String>,
}

/// A run whose subjects are served; acknowledge the request, then [`Launched::run`].
pub(crate) struct Launched {
    id: String,
    log: EventLog,
    /// Fires when the run has ended; replay is served for `replay_for` after.
    done: CancellationToken,
    stdin: mpsc::Receiver<Bytes>,
    abandoned: CancellationToken,
    /// Who started it, when the finished run is to be kept on disk.
    kept_for: Option<String>,
}

/// Subscribes everything the run (whose events go to `log`) needs before
/// anyone is told it started: replay, stdin beyond the `first` bytes (`total`
/// in all), attachment.
pub(crate) async fn prepare(
    node: &Arc<Node>,
    id: &str,
    log: EventLog,
    s: Subjects,
    first: Bytes,
    total: u64,
) -> Launched {
    let bus = node.bus.clone();
    let done = CancellationToken::new();
    if let Err(e) = log.serve_replay(s.replay, done.clone(), s.replay_for).await {
        tracing::warn!(error = %e, "replay unavailable for {id}");
    }

    // Stdin: the inline part, then acknowledged chunks; EOF after the last.
    let inline = first.len() as u64;
    let (stdin_tx, stdin) = mpsc::channel::<Bytes>(16);
    if !first.is_empty() {
        let _ = stdin_tx.try_send(first);
    }
    if total > inline {
        match bus.subscribe(s.stdin).await {
            Ok(sub) => {
                tokio::spawn(receive_stdin(node.clone(), sub, inline, total, stdin_tx));
            }
            Err(e) => tracing::warn!(error = %e, "stdin subscription failed for {id}"),
        }
    }

    let abandoned = CancellationToken::new();
    if let Some(subject) = s.attached {
        match bus.subscribe(subject).await {
            Ok(sub) => {
                tokio::spawn(watch_attached(
                    bus.clone(),
                    sub,
                    node.client_grace,
                    abandoned.clone(),
                    done.clone(),
                    Some(log.clone()),
                ));
            }
            Err(e) => tracing::warn!(error = %e, "attached subscription failed for {id}"),
        }
    }
    Launched {
        id: id.to_string(),
        log,
        done,
        stdin,
        abandoned,
        kept_for: None,
    }
}

impl Launched {
    /// Keeps the finished run on disk ([`crate::persist`]) under `owner`.
    pub fn kept_for(mut self, owner: String) -> Self {
        self.kept_for = Some(owner);
        self
    }

    /// Runs `plan` in the sandbox: `start`, the output, then `release` (the
    /// slot is free, or its release queued ahead of anything a client can
    /// send, before anyone can see the end), then `exit`. A kept run
    /// is on disk before its `exit` is published, so a client that saw the
    /// end can replay it after an executor restart.
    pub async fn run<F, Fut>(self, node: &Node, sbx: &Hosted, plan: &RunPlan, release: F) -> Outcome
    where
        F: FnOnce(ExitReason) -> Fut,
        Fut: Future<Output = ()>,
    {
        let Launched {
            id,
            log,
            done,
            stdin,
            abandoned,
            kept_for,
        } = self;
        log.emit(EventKind::Start(StartData {
            invoke_id: id.clone(),
            started_at: plan.started_at,
        }))
        .await;
        let workspace = sbx.dirs.workspace();
        let spec = Spec {
            workspace: &workspace,
            argv: &plan.argv,
            env: &plan.env,
            network: plan.network,
            cwd: &plan.cwd,
        };
        let limits = Limits {
            timeout: plan.timeout,
            idle_timeout: plan.idle_timeout,
            max_output_bytes: plan.max_output_bytes,
            cancel: plan.cancel.clone(),
            abandoned,
        };
        let out = run(&node.runtime, &spec, stdin, &limits, &log, false).await;
        release(out.reason).await;
        let (_, exit) = log.record(EventKind::Exit(ExitData {
            invoke_id: id.clone(),
            exit_code: out.exit_code,
            duration_ms: out.duration.as_millis() as u64,
            reason: out.reason,
            cause: out.cause.clone(),
            message: out.message.clone(),
        }));
        if let Some(owner) = kept_for {
            let header = crate::persist::Header {
                invoke_id: id,
                owner,
                started_at: plan.started_at,
                reason: out.reason,
                ended_at: agenttier_bus::model::now_unix_ms(),
            };
            crate::persist::save(&sbx.runs, header, &log).await;
        }
        log.publish(exit).await;
        done.cancel();
        out
    }
}
