use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::template::{AgentSpec, NetworkSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Code,
    Agent,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Code => "code",
            Mode::Agent => "agent",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Phase {
    #[default]
    Creating,
    Running,
    Stopped,
    Error,
    Deleting,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Creating => "Creating",
            Phase::Running => "Running",
            Phase::Stopped => "Stopped",
            Phase::Error => "Error",
            Phase::Deleting => "Deleting",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateRef {
    pub name: String,
    #[serde(default = "TemplateRef::default_kind")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl TemplateRef {
    pub const CLUSTER: &'static str = "ClusterSandboxTemplate";
    pub const NAMESPACED: &'static str = "SandboxTemplate";

    fn default_kind() -> String {
        Self::CLUSTER.to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    pub sub: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub display_name: String,
}

/// What the last configure left active, as `GET /sandboxes/{id}` shows it
/// (and as the configure `result` reports it). v0.8 clients parse
/// `entrypoint` as a list and `installExitCode` as an integer, so neither is
/// ever null: no entrypoint is `[]`, no install is `0`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AgentConfigure {
    pub last_configured_at: String,
    pub install_command_hash: String,
    pub entrypoint: Vec<String>,
    pub install_exit_code: i32,
    pub max_concurrent_invokes: u32,
    pub default_invoke_timeout_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SandboxStatus {
    pub phase: Phase,
    #[serde(default)]
    pub message: String,
    /// The executor node hosting the sandbox, once placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_configure: Option<AgentConfigure>,
}

/// A sandbox as stored under `sandboxes.<ns>.<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sandbox {
    pub name: String,
    pub namespace: String,
    pub mode: Mode,
    pub template_ref: TemplateRef,
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The template's agent settings, resolved when the sandbox was created.
    #[serde(default)]
    pub agent: AgentSpec,
    #[serde(default)]
    pub network: NetworkSpec,
    pub created_at: String,
    pub created_by: Owner,
    #[serde(default)]
    pub status: SandboxStatus,
}

impl Sandbox {
    /// The store key of a sandbox.
    pub fn key(namespace: &str, name: &str) -> String {
        format!("sandboxes.{namespace}.{name}")
    }

    pub const KEY_PREFIX: &'static str = "sandboxes.";
}
