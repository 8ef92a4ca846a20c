//! Code-mode admissions (exec, files): the same sandbox actor, checked
//! 404 → 409 phase in both modes.

use std::time::Duration;

use actix::prelude::*;
use agenttier_bus::model::{Phase, Principal, now_unix_ms};
use agenttier_bus::msg::Rejection;
use tokio_util::sync::CancellationToken;

use super::{RunPlan, SandboxActor};

/// Code mode (exec, files): 404 → 409 phase, in both modes.
fn check_code(actor: &SandboxActor, caller: &Principal) -> Result<(), Rejection> {
    if !caller.may_access(&actor.record.created_by.sub) {
        return Err(Rejection::not_found());
    }
    if actor.phase != Phase::Running {
        return Err(Rejection::new(409, "invalid_phase")
            .message(format!("sandbox is {}, not Running", actor.phase.as_str()))
            .field("phase", actor.phase.as_str()));
    }
    Ok(())
}

/// Admission of one exec: the plan of its run.
#[derive(Message)]
#[rtype(result = "Result<RunPlan, Rejection>")]
pub struct AdmitExec {
    pub caller: Principal,
    pub exec_id: String,
    pub argv: Vec<String>,
    pub timeout: Duration,
}

impl Handler<AdmitExec> for SandboxActor {
    type Result = Result<RunPlan, Rejection>;

    fn handle(&mut self, m: AdmitExec, _: &mut Context<Self>) -> Self::Result {
        check_code(self, &m.caller)?;
        if self.execs.contains_key(&m.exec_id) {
            return Err(Rejection::new(409, "duplicate_exec_id"));
        }
        let cancel = CancellationToken::new();
        self.execs.insert(m.exec_id, cancel.clone());
        Ok(RunPlan {
            argv: m.argv,
            env: self.env(),
            cwd: crate::runtime::WORKSPACE.to_string(),
            network: self.record.network.allow_egress,
            timeout: m.timeout,
            idle_timeout: None,
            max_output_bytes: self.record.agent.max_output_bytes(),
            cancel,
            started_at: now_unix_ms(),
        })
    }
}

/// An exec has ended and its process tree is gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ExecEnded(pub String);

impl Handler<ExecEnded> for SandboxActor {
    type Result = ();

    fn handle(&mut self, m: ExecEnded, _: &mut Context<Self>) {
        self.execs.remove(&m.0);
    }
}

/// Admission of a file operation: 404 → 409 phase.
#[derive(Message)]
#[rtype(result = "Result<(), Rejection>")]
pub struct AdmitFiles(pub Principal);

impl Handler<AdmitFiles> for SandboxActor {
    type Result = Result<(), Rejection>;

    fn handle(&mut self, m: AdmitFiles, _: &mut Context<Self>) -> Self::Result {
        check_code(self, &m.0)
    }
}
