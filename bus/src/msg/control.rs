use serde::{Deserialize, Serialize};

use crate::model::{AgentConfigure, Phase, Principal};

/// Requests that carry nothing but the caller: `stop`, `resume`, `status`,
/// `installlog`, `invokes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimpleRequest {
    pub caller: Principal,
    /// `invokes` only: answer about this invoke alone (a resume checking
    /// that the caller may see it), not the recent list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoke_id: Option<String>,
}

/// `sbx.<ns>.<name>.cancel`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelRequest {
    pub caller: Principal,
    pub invoke_id: String,
}

/// The actor's live view (`status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReply {
    pub phase: Phase,
    pub inflight: u32,
    pub limit: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_configure: Option<AgentConfigure>,
}

/// `node.<node>.heartbeat`, every second from every executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    pub node: String,
    pub sandboxes: u32,
    /// Unix milliseconds.
    pub at: u64,
}

/// `events.<ns>.<name>`: what happened to a sandbox, in the audit vocabulary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleEvent {
    /// RFC 3339.
    pub timestamp: String,
    /// `SandboxCreated`, `AgentConfigured`, `AgentInvokeStarted`, ...
    pub event_type: String,
    pub namespace: String,
    pub sandbox_name: String,
    /// The caller's `sub`.
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoke_id: Option<String>,
    #[serde(default)]
    pub details: serde_json::Value,
}

impl LifecycleEvent {
    /// An event happening now.
    pub fn now(event_type: &str, namespace: &str, sandbox_name: &str, actor: &str) -> Self {
        Self {
            timestamp: crate::model::now_rfc3339(),
            event_type: event_type.to_string(),
            namespace: namespace.to_string(),
            sandbox_name: sandbox_name.to_string(),
            actor: actor.to_string(),
            invoke_id: None,
            details: serde_json::Value::Object(Default::default()),
        }
    }
}
