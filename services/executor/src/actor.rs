//! The sandbox actor: the single owner of one sandbox's live state.
//!
//! It decides, from memory and in the SPEC's check order, whether an invoke
//! or a configure may start, so the concurrency cap is exact however many
//! routers send requests. It does no I/O but small local file writes: runs
//! and uploads happen in tokio tasks that report back with messages.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use agenttier_bus::model::{
    AgentConfigure, Mode, Phase, Principal, Sandbox, now_rfc3339, now_unix_ms,
};
use agenttier_bus::msg::{ExitReason, Rejection};
use tokio_util::sync::CancellationToken;

use crate::events::EventLog;
use crate::state::{AgentState, Dirs};

mod code;
mod history;

pub use code::{AdmitExec, AdmitFiles, ExecEnded};
use history::{Finished, History, LISTED, REMEMBERED};

/// Largest stdin of one invoke (SPEC §2.3).
pub const MAX_STDIN_BYTES: u64 = 16 * 1024 * 1024;

/// What a run needs, decided at admission.
#[derive(Debug, Clone)]
pub struct RunPlan {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: String,
    pub network: bool,
    pub timeout: Duration,
    pub idle_timeout: Option<Duration>,
    pub max_output_bytes: u64,
    pub cancel: CancellationToken,
    pub started_at: u64,
}

/// How a configure proceeds once accepted.
#[derive(Debug, Clone)]
pub struct ConfigurePlan {
    pub skipped: bool,
    /// Fires when the sandbox stops or goes away mid-install.
    pub cancel: CancellationToken,
    /// Each file's path under the workspace, validated.
    pub paths: Vec<std::path::PathBuf>,
    pub network: bool,
    pub env: BTreeMap<String, String>,
    /// The status to report when skipped.
    pub current: AgentConfigure,
}

struct Running {
    owner: String,
    started_at: u64,
    cancel: CancellationToken,
    log: EventLog,
}

pub struct SandboxActor {
    record: Sandbox,
    phase: Phase,
    dirs: Dirs,
    agent: AgentState,
    /// The cancel token of the configure that is installing, if any.
    configuring: Option<CancellationToken>,
    running: HashMap<String, Running>,
    history: History,
    /// (caller, Idempotency-Key) → (invoke id, started at, when).
    idempotency: HashMap<(String, String), (String, u64, std::time::Instant)>,
    /// Exec runs (code mode): not counted against the invoke cap, but
    /// killed with everything else on stop and delete.
    execs: HashMap<String, CancellationToken>,
    /// Called with the new `agentConfigure` whenever it changes.
    on_configured: Arc<dyn Fn(AgentConfigure) + Send + Sync>,
}

impl SandboxActor {
    pub fn new(
        record: Sandbox,
        dirs: Dirs,
        on_configured: Arc<dyn Fn(AgentConfigure) + Send + Sync>,
    ) -> Self {
        let agent = dirs.load_agent();
        let phase = match record.status.phase {
            Phase::Stopped => Phase::Stopped,
            Phase::Deleting => Phase::Deleting,
            _ => Phase::Running,
        };
        Self {
            record,
            phase,
            dirs,
            agent,
            configuring: None,
            running: HashMap::new(),
            history: History::default(),
            idempotency: HashMap::new(),
            execs: HashMap::new(),
            on_configured,
        }
    }

    fn limit(&self) -> u32 {
        self.record.agent.max_concurrent_invokes()
    }

    fn entrypoint(&self) -> Option<Vec<String>> {
        self.agent
            .entrypoint
            .clone()
            .or_else(|| self.record.agent.entrypoint.clone())
    }

    fn agent_configure(&self) -> AgentConfigure {
        AgentConfigure {
            last_configured_at: self.agent.last_configured_at.clone().unwrap_or_default(),
            // The hash of the configuration in force; the exit code of the last attempt.
            install_command_hash: self
                .agent
                .hash
                .clone()
                .unwrap_or_else(|| self.agent.last_hash.clone()),
            entrypoint: self.entrypoint().unwrap_or_default(),
            install_exit_code: self.agent.install_exit_code.unwrap_or(0),
            max_concurrent_invokes: self.limit(),
            default_invoke_timeout_seconds: self.record.agent.default_invoke_timeout().as_secs(),
        }
    }

    /// 404 → 400 mode → 409 phase: the checks configure and invoke share.
    fn check_common(&self, caller: &Principal, what: &str) -> Result<(), Rejection> {
        if !caller.may_access(&self.record.created_by.sub) {
            return Err(Rejection::not_found());
        }
        if self.record.mode != Mode::Agent {
            return Err(Rejection::wrong_mode(what));
        }
        if self.phase != Phase::Running {
            return Err(Rejection::new(409, "invalid_phase")
                .message(format!("sandbox is {}, not Running", self.phase.as_str()))
                .field("phase", self.phase.as_str()));
        }
        Ok(())
    }

    fn env(&self) -> BTreeMap<String, String> {
        let mut env = self.record.env.clone();
        env.extend(self.record.agent.env.clone());
        env.extend(self.agent.env.clone());
        env
    }

    fn cancel_all(&mut self) {
        for r in self.running.values() {
            r.cancel.cancel();
        }
        for c in self.execs.values() {
            c.cancel();
        }
        if let Some(c) = &self.configuring {
            c.cancel();
        }
    }
}

impl Actor for SandboxActor {
    type Context = Context<Self>;
}

impl actix::Supervised for SandboxActor {}

/// How long an `Idempotency-Key` keeps pointing at its invoke.
const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(10 * 60);

/// Admission of one invoke.
#[derive(Message)]
#[rtype(result = "Result<Admission, Rejection>")]
pub struct Admit {
    pub caller: Principal,
    pub invoke_id: String,
    pub prompt: Option<String>,
    pub timeout: Option<Duration>,
    pub stdin_len: u64,
    pub idempotency_key: Option<String>,
    /// Where the run's events will go: replayable through the actor while
    /// the run is remembered.
    pub log: EventLog,
}

/// A new run to start, or the run an earlier request with the same
/// `Idempotency-Key` started.
#[derive(Debug)]
pub enum Admission {
    Run(RunPlan),
    Existing { invoke_id: String, started_at: u64 },
}

impl Handler<Admit> for SandboxActor {
    type Result = Result<Admission, Rejection>;

    fn handle(&mut self, m: Admit, _: &mut Context<Self>) -> Self::Result {
        self.check_common(&m.caller, "invoke")?;
        self.idempotency
            .retain(|_, (_, _, at)| at.elapsed() < IDEMPOTENCY_WINDOW);
        let idem = m.idempotency_key.map(|k| (m.caller.sub.clone(), k));
        if let Some((invoke_id, started_at, _)) =
            idem.as_ref().and_then(|k| self.idempotency.get(k))
        {
            return Ok(Admission::Existing {
                invoke_id: invoke_id.clone(),
                started_at: *started_at,
            });
        }
        if self.configuring.is_some() {
            return Err(Rejection::new(409, "configure_in_progress")
                .message("a configure is installing; retry when it finishes")
                .retry_after(2));
        }
        let Some(mut argv) = self.entrypoint().filter(|a| !a.is_empty()) else {
            return Err(Rejection::new(424, "no_entrypoint")
                .message("no entrypoint is configured: call POST /configure first"));
        };
        let inflight = self.running.len() as u32;
        if inflight >= self.limit() {
            return Err(Rejection::new(429, "concurrency_exceeded")
                .message(format!(
                    "sandbox already runs {inflight} invokes, its limit is {}",
                    self.limit()
                ))
                .field("inflight", inflight)
                .field("limit", self.limit())
                .retry_after(1));
        }
        if m.stdin_len > MAX_STDIN_BYTES {
            return Err(Rejection::new(413, "payload_too_large")
                .message(format!("invoke body is limited to {MAX_STDIN_BYTES} bytes")));
        }
        if self.running.contains_key(&m.invoke_id) {
            return Err(Rejection::new(409, "duplicate_invoke_id"));
        }
        if let Some(p) = &m.prompt {
            argv.push(format!("--prompt={p}"));
        }
        let max = self.record.agent.default_invoke_timeout();
        let cancel = CancellationToken::new();
        let started_at = now_unix_ms();
        if let Some(k) = idem {
            self.idempotency.insert(
                k,
                (m.invoke_id.clone(), started_at, std::time::Instant::now()),
            );
        }
        self.running.insert(
            m.invoke_id,
            Running {
                owner: m.caller.sub,
                started_at,
                cancel: cancel.clone(),
                log: m.log,
            },
        );
        Ok(Admission::Run(RunPlan {
            argv,
            env: self.env(),
            cwd: self
                .record
                .agent
                .working_dir
                .clone()
                .unwrap_or_else(|| crate::runtime::WORKSPACE.to_string()),
            network: self.record.network.allow_egress,
            timeout: m.timeout.map_or(max, |t| t.min(max)),
            idle_timeout: self.record.agent.idle_invoke_timeout(),
            max_output_bytes: self.record.agent.max_output_bytes(),
            cancel,
            started_at,
        }))
    }
}

/// A run has ended and its process tree is gone: the slot is free.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RunEnded {
    pub invoke_id: String,
    pub reason: ExitReason,
}

impl Handler<RunEnded> for SandboxActor {
    type Result = ();

    fn handle(&mut self, m: RunEnded, _: &mut Context<Self>) {
        if let Some(r) = self.running.remove(&m.invoke_id) {
            self.history.remember(Finished {
                id: m.invoke_id,
                owner: r.owner,
                started_at: r.started_at,
                reason: m.reason,
                ended: std::time::Instant::now(),
                log: r.log,
            });
        }
    }
}

/// A finished invoke from before this executor started, reloaded from disk
/// ([`crate::persist`]), `age` after it ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Remember {
    pub invoke_id: String,
    pub owner: String,
    pub started_at: u64,
    pub reason: ExitReason,
    pub age: Duration,
    pub log: EventLog,
}

impl Handler<Remember> for SandboxActor {
    type Result = ();

    fn handle(&mut self, m: Remember, _: &mut Context<Self>) {
        let known =
            self.running.contains_key(&m.invoke_id) || self.history.get(&m.invoke_id).is_some();
        if !known {
            let now = std::time::Instant::now();
            self.history.remember(Finished {
                id: m.invoke_id,
                owner: m.owner,
                started_at: m.started_at,
                reason: m.reason,
                ended: now.checked_sub(m.age).unwrap_or(now),
                log: m.log,
            });
        }
    }
}

#[derive(Message)]
#[rtype(result = "Result<(), Rejection>")]
pub struct Cancel {
    pub caller: Principal,
    pub invoke_id: String,
}

impl Handler<Cancel> for SandboxActor {
    type Result = Result<(), Rejection>;

    fn handle(&mut self, m: Cancel, _: &mut Context<Self>) -> Self::Result {
        let unknown = || Rejection::new(404, "invoke_not_found").message("invoke not found");
        if !m.caller.may_access(&self.record.created_by.sub) {
            return Err(Rejection::not_found());
        }
        if let Some(r) = self.running.get(&m.invoke_id) {
            if !m.caller.may_access(&r.owner) {
                return Err(unknown());
            }
            r.cancel.cancel();
            return Ok(());
        }
        match self.history.get(&m.invoke_id) {
            // Canceling what already ended changes nothing, and says so calmly.
            Some(f) if m.caller.may_access(&f.owner) => Ok(()),
            _ => Err(unknown()),
        }
    }
}

/// The event log of one of the sandbox's invokes, running or remembered,
/// for a caller who may see it (`sbx.<ns>.<name>.replay`).
#[derive(Message)]
#[rtype(result = "Result<EventLog, Rejection>")]
pub struct ReplayOf {
    pub caller: Principal,
    pub invoke_id: String,
}

impl Handler<ReplayOf> for SandboxActor {
    type Result = Result<EventLog, Rejection>;

    fn handle(&mut self, m: ReplayOf, _: &mut Context<Self>) -> Self::Result {
        if !m.caller.may_access(&self.record.created_by.sub) {
            return Err(Rejection::not_found());
        }
        self.history.expire();
        let found = match self.running.get(&m.invoke_id) {
            Some(r) => Some((&r.owner, &r.log)),
            None => self.history.get(&m.invoke_id).map(|f| (&f.owner, &f.log)),
        };
        match found {
            Some((owner, log)) if m.caller.may_access(owner) => Ok(log.clone()),
            // As the router words it: an invoke id is no capability.
            _ => Err(Rejection::new(404, "not_found").message("invoke not found")),
        }
    }
}

/// Forgets the finished invokes past their retention (the executor sends
/// it now and then, so an idle sandbox lets go of their events too).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Expire;

impl Handler<Expire> for SandboxActor {
    type Result = ();

    fn handle(&mut self, _: Expire, _: &mut Context<Self>) {
        self.history.expire();
    }
}

#[derive(Message)]
#[rtype(result = "Result<ConfigurePlan, Rejection>")]
pub struct BeginConfigure {
    pub caller: Principal,
    pub files: Vec<agenttier_bus::msg::FileMeta>,
    pub hash: String,
    pub entrypoint: Option<Vec<String>>,
    pub env: Option<BTreeMap<String, String>>,
}

impl Handler<BeginConfigure> for SandboxActor {
    type Result = Result<ConfigurePlan, Rejection>;

    fn handle(&mut self, m: BeginConfigure, _: &mut Context<Self>) -> Self::Result {
        self.check_common(&m.caller, "configure")?;
        if self.configuring.is_some() {
            return Err(Rejection::new(409, "configure_in_progress")
                .message("another configure is running")
                .retry_after(2));
        }
        agenttier_bus::msg::CONFIGURE_LIMITS
            .check(&m.files)
            .map_err(|why| Rejection::new(413, "payload_too_large").message(why))?;
        let paths = crate::configure::validate_files(&self.dirs.workspace(), &m.files)
            .map_err(|why| Rejection::new(400, "invalid_path").message(why))?;
        let skipped = self.agent.hash.as_deref() == Some(m.hash.as_str());
        let cancel = CancellationToken::new();
        if skipped {
            // Nothing is written or run; a new entrypoint or env still takes effect.
            let ep = m
                .entrypoint
                .filter(|e| Some(e) != self.agent.entrypoint.as_ref());
            let env = m.env.filter(|e| *e != self.agent.env);
            let changed = ep.is_some() || env.is_some();
            if let Some(ep) = ep {
                self.agent.entrypoint = Some(ep);
            }
            if let Some(env) = env {
                self.agent.env = env;
            }
            if changed {
                self.persist();
            }
        } else {
            self.configuring = Some(cancel.clone());
        }
        Ok(ConfigurePlan {
            skipped,
            cancel,
            paths,
            network: self.record.network.allow_egress,
            env: self.env(),
            current: self.agent_configure(),
        })
    }
}

/// The outcome of an accepted, not skipped, configure; answers the status.
#[derive(Message)]
#[rtype(result = "AgentConfigure")]
pub struct EndConfigure {
    pub hash: String,
    /// `None` when the files phase failed before any install.
    pub install_exit_code: Option<i32>,
    pub files_ok: bool,
    pub entrypoint: Option<Vec<String>>,
    pub env: Option<BTreeMap<String, String>>,
}

impl Handler<EndConfigure> for SandboxActor {
    type Result = MessageResult<EndConfigure>;

    fn handle(&mut self, m: EndConfigure, _: &mut Context<Self>) -> Self::Result {
        self.configuring = None;
        let ok = m.files_ok && m.install_exit_code.is_none_or(|c| c == 0);
        self.agent.last_configured_at = Some(now_rfc3339());
        self.agent.last_hash = m.hash.clone();
        self.agent.install_exit_code = m.install_exit_code;
        if ok {
            self.agent.hash = Some(m.hash);
            if let Some(ep) = m.entrypoint {
                self.agent.entrypoint = Some(ep);
            }
            if let Some(env) = m.env {
                self.agent.env = env;
            }
        }
        self.persist();
        MessageResult(self.agent_configure())
    }
}

impl SandboxActor {
    fn persist(&self) {
        if let Err(e) = self.dirs.save_agent(&self.agent) {
            tracing::error!(error = %e, sandbox = %self.record.name, "saving agent state failed");
        }
        (self.on_configured)(self.agent_configure());
    }
}

/// Stop or resume; `Ok` carries the JSON body.
#[derive(Message)]
#[rtype(result = "Result<serde_json::Value, Rejection>")]
pub struct SetPhase {
    pub caller: Principal,
    pub stop: bool,
}

impl Handler<SetPhase> for SandboxActor {
    type Result = Result<serde_json::Value, Rejection>;

    fn handle(&mut self, m: SetPhase, _: &mut Context<Self>) -> Self::Result {
        if !m.caller.may_access(&self.record.created_by.sub) {
            return Err(Rejection::not_found());
        }
        let (from, to, word) = if m.stop {
            (Phase::Running, Phase::Stopped, "stopping")
        } else {
            (Phase::Stopped, Phase::Running, "resuming")
        };
        if self.phase != from {
            return Err(Rejection::new(409, "invalid_phase")
                .message(format!("sandbox is {}", self.phase.as_str()))
                .field("phase", self.phase.as_str()));
        }
        if m.stop {
            self.cancel_all();
        }
        self.phase = to;
        Ok(serde_json::json!({ "status": word }))
    }
}

/// The record changed in the store (or the sandbox is going away).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Update(pub Sandbox);

impl Handler<Update> for SandboxActor {
    type Result = ();

    fn handle(&mut self, m: Update, _: &mut Context<Self>) {
        if m.0.status.phase == Phase::Deleting {
            self.phase = Phase::Deleting;
            self.cancel_all();
        }
        self.record = m.0;
    }
}

/// Ends every run (executor shutdown, record gone).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CancelAll;

impl Handler<CancelAll> for SandboxActor {
    type Result = ();

    fn handle(&mut self, _: CancelAll, _: &mut Context<Self>) {
        self.cancel_all();
    }
}

/// Read-only questions.
#[derive(Message)]
#[rtype(result = "Result<serde_json::Value, Rejection>")]
pub enum Query {
    InstallLog(Principal),
    /// The running and recently finished invokes; with an id, that one only.
    Invokes(Principal, Option<String>),
    Status(Principal),
}

impl Handler<Query> for SandboxActor {
    type Result = Result<serde_json::Value, Rejection>;

    fn handle(&mut self, q: Query, _: &mut Context<Self>) -> Self::Result {
        let (Query::InstallLog(c) | Query::Invokes(c, _) | Query::Status(c)) = &q;
        if !c.may_access(&self.record.created_by.sub) {
            return Err(Rejection::not_found());
        }
        Ok(match q {
            Query::InstallLog(_) => serde_json::json!({ "log": self.dirs.read_install_log() }),
            Query::Invokes(c, only) => {
                let listed = if only.is_some() { REMEMBERED } else { LISTED };
                let running = self
                    .running
                    .iter()
                    .map(|(id, r)| (id, &r.owner, r.started_at, "running"));
                let done = self
                    .history
                    .newest()
                    .take(listed)
                    .map(|f| (&f.id, &f.owner, f.started_at, f.state()));
                let invokes: Vec<_> = running
                    .chain(done)
                    .filter(|(id, _, _, _)| only.as_ref().is_none_or(|o| o == *id))
                    .filter(|(_, owner, _, _)| c.may_access(owner))
                    .map(|(id, owner, started_at, state)| {
                        serde_json::json!({"invokeId": id, "startedAt": started_at, "state": state, "startedBy": owner})
                    })
                    .collect();
                serde_json::json!({ "invokes": invokes })
            }
            Query::Status(_) => serde_json::json!({
                "phase": self.phase,
                "inflight": self.running.len(),
                "limit": self.limit(),
                "agentConfigure": self.agent_configure(),
            }),
        })
    }
}

/// How many runs and installs the actor still has (for shutdown and delete).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Inflight;

impl Handler<Inflight> for SandboxActor {
    type Result = usize;

    fn handle(&mut self, _: Inflight, _: &mut Context<Self>) -> usize {
        self.running.len() + self.execs.len() + usize::from(self.configuring.is_some())
    }
}

/// Async access to an actor, for code that must not see actix.
#[derive(Clone)]
pub struct Handle {
    addr: Addr<SandboxActor>,
}

fn gone() -> Rejection {
    Rejection::new(503, "sandbox_unavailable")
        .message("the sandbox's actor is restarting")
        .retry_after(1)
}

impl Handle {
    pub fn new(addr: Addr<SandboxActor>) -> Self {
        Self { addr }
    }

    pub fn is_alive(&self) -> bool {
        self.addr.connected()
    }

    pub async fn ask<M>(&self, m: M) -> Result<M::Result, Rejection>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        SandboxActor: Handler<M>,
    {
        self.addr.send(m).await.map_err(|_| gone())
    }

    pub fn tell<M>(&self, m: M)
    where
        M: Message + Send + 'static,
        M::Result: Send,
        SandboxActor: Handler<M>,
    {
        self.addr.do_send(m);
    }
}
