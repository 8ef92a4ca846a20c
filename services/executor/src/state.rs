//! What a sandbox keeps across executor restarts, beside its workspace.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The agent configuration in force (`agent.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentState {
    pub entrypoint: Option<Vec<String>>,
    /// Hash of the last successful configure.
    pub hash: Option<String>,
    /// Hash of the last configure, successful or not.
    #[serde(default)]
    pub last_hash: String,
    pub install_exit_code: Option<i32>,
    pub last_configured_at: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// The directories of one sandbox on this node.
#[derive(Debug, Clone)]
pub struct Dirs {
    pub root: PathBuf,
}

/// The install log keeps its last 64 KiB.
pub const INSTALL_LOG_BYTES: usize = 64 * 1024;

impl Dirs {
    pub fn new(data_dir: &Path, ns: &str, name: &str) -> Self {
        Self {
            root: data_dir.join("sandboxes").join(ns).join(name),
        }
    }

    pub fn workspace(&self) -> PathBuf {
        self.root.join("workspace")
    }

    fn agent_file(&self) -> PathBuf {
        self.root.join("agent.json")
    }

    fn install_log_file(&self) -> PathBuf {
        self.root.join("install.log")
    }

    /// A private directory for a configure's uploads, outside the workspace.
    pub fn staging(&self, configure_id: &str) -> PathBuf {
        self.root.join("staging").join(configure_id)
    }

    pub fn create(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(self.workspace())
    }

    pub fn load_agent(&self) -> AgentState {
        std::fs::read(self.agent_file())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Writes `agent.json` atomically (temp file, fsync, rename).
    pub fn save_agent(&self, state: &AgentState) -> std::io::Result<()> {
        let tmp = self.root.join("agent.json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(tmp, self.agent_file())
    }

    pub fn read_install_log(&self) -> String {
        std::fs::read(self.install_log_file())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Replaces the install log with the last 64 KiB of `log`.
    pub fn write_install_log(&self, log: &[u8]) -> std::io::Result<()> {
        let mut start = log.len().saturating_sub(INSTALL_LOG_BYTES);
        while start < log.len() && (log[start] & 0xC0) == 0x80 {
            start += 1;
        }
        std::fs::write(self.install_log_file(), &log[start..])
    }

    pub fn remove(&self) -> std::io::Result<()> {
        match std::fs::remove_dir_all(&self.root) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }
}
