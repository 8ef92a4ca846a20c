//! Every subject AgentTier uses, built in one place (SPEC §4, `docs/bus.md`).
//!
//! Tokens are DNS-1123 labels or generated ids, so they never contain dots or
//! wildcards; callers validate names before building subjects from them.

/// A request verb addressed to a sandbox's owning actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Invoke,
    Configure,
    Cancel,
    Exec,
    Files,
    Stop,
    Resume,
    Status,
    InstallLog,
    Invokes,
    Terminal,
    Replay,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Invoke => "invoke",
            Verb::Configure => "configure",
            Verb::Cancel => "cancel",
            Verb::Exec => "exec",
            Verb::Files => "files",
            Verb::Stop => "stop",
            Verb::Resume => "resume",
            Verb::Status => "status",
            Verb::InstallLog => "installlog",
            Verb::Invokes => "invokes",
            Verb::Terminal => "terminal",
            Verb::Replay => "replay",
        }
    }

    pub fn parse(s: &str) -> Option<Verb> {
        Some(match s {
            "invoke" => Verb::Invoke,
            "configure" => Verb::Configure,
            "cancel" => Verb::Cancel,
            "exec" => Verb::Exec,
            "files" => Verb::Files,
            "stop" => Verb::Stop,
            "resume" => Verb::Resume,
            "status" => Verb::Status,
            "installlog" => Verb::InstallLog,
            "invokes" => Verb::Invokes,
            "terminal" => Verb::Terminal,
            "replay" => Verb::Replay,
            _ => return None,
        })
    }
}

/// Subject builder for one deployment's prefix (default `agenttier`).
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
}

impl Default for Subjects {
    fn default() -> Self {
        Self::new("agenttier")
    }
}

impl Subjects {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<p>.sbx.<ns>.<name>.<verb>`: a request to the sandbox's actor.
    pub fn sandbox(&self, ns: &str, name: &str, verb: Verb) -> String {
        format!("{}.sbx.{ns}.{name}.{}", self.prefix, verb.as_str())
    }

    /// `<p>.sbx.<ns>.<name>.*`: everything addressed to one sandbox.
    pub fn sandbox_all(&self, ns: &str, name: &str) -> String {
        format!("{}.sbx.{ns}.{name}.*", self.prefix)
    }

    /// `<p>.inv.<id>.events`: every event of an invoke, with `seq`.
    pub fn invoke_events(&self, invoke_id: &str) -> String {
        format!("{}.inv.{invoke_id}.events", self.prefix)
    }

    /// `<p>.inv.<id>.replay`: request the retained events after a `seq`.
    pub fn invoke_replay(&self, invoke_id: &str) -> String {
        format!("{}.inv.{invoke_id}.replay", self.prefix)
    }

    /// `<p>.inv.<id>.stdin`: acknowledged stdin chunks after the first.
    pub fn invoke_stdin(&self, invoke_id: &str) -> String {
        format!("{}.inv.{invoke_id}.stdin", self.prefix)
    }

    /// `<p>.inv.<id>.attached`: a router still relays this invoke to a client.
    pub fn invoke_attached(&self, invoke_id: &str) -> String {
        format!("{}.inv.{invoke_id}.attached", self.prefix)
    }

    /// `<p>.cfg.<id>.events`: the log and result of one configure.
    pub fn configure_events(&self, configure_id: &str) -> String {
        format!("{}.cfg.{configure_id}.events", self.prefix)
    }

    /// `<p>.cfg.<id>.replay`: the retained events of one configure after a `seq`.
    pub fn configure_replay(&self, configure_id: &str) -> String {
        format!("{}.cfg.{configure_id}.replay", self.prefix)
    }

    /// `<p>.cfg.<id>.upload`: acknowledged file chunks of one configure.
    pub fn configure_upload(&self, configure_id: &str) -> String {
        format!("{}.cfg.{configure_id}.upload", self.prefix)
    }

    /// `<p>.exec.<id>.events`: every event of an exec run, with `seq`.
    pub fn exec_events(&self, exec_id: &str) -> String {
        format!("{}.exec.{exec_id}.events", self.prefix)
    }

    /// `<p>.exec.<id>.replay`: the retained events of an exec after a `seq`.
    pub fn exec_replay(&self, exec_id: &str) -> String {
        format!("{}.exec.{exec_id}.replay", self.prefix)
    }

    /// `<p>.exec.<id>.stdin`: acknowledged stdin chunks of an exec after the first.
    pub fn exec_stdin(&self, exec_id: &str) -> String {
        format!("{}.exec.{exec_id}.stdin", self.prefix)
    }

    /// `<p>.exec.<id>.attached`: a router still waits for this exec.
    pub fn exec_attached(&self, exec_id: &str) -> String {
        format!("{}.exec.{exec_id}.attached", self.prefix)
    }

    /// `<p>.xfer.<id>.upload`: acknowledged chunks of a file being written.
    pub fn transfer_upload(&self, transfer_id: &str) -> String {
        format!("{}.xfer.{transfer_id}.upload", self.prefix)
    }

    /// `<p>.xfer.<id>.download`: pulls of the next chunk of a file being read.
    pub fn transfer_download(&self, transfer_id: &str) -> String {
        format!("{}.xfer.{transfer_id}.download", self.prefix)
    }

    /// `<p>.term.<id>.events`: the output and exit of a terminal session.
    pub fn terminal_events(&self, session_id: &str) -> String {
        format!("{}.term.{session_id}.events", self.prefix)
    }

    /// `<p>.term.<id>.replay`: the retained events of a session after a `seq`.
    pub fn terminal_replay(&self, session_id: &str) -> String {
        format!("{}.term.{session_id}.replay", self.prefix)
    }

    /// `<p>.term.<id>.input`: keystrokes, resizes and the close of a session.
    pub fn terminal_input(&self, session_id: &str) -> String {
        format!("{}.term.{session_id}.input", self.prefix)
    }

    /// `<p>.term.<id>.attached`: a router still bridges this session.
    pub fn terminal_attached(&self, session_id: &str) -> String {
        format!("{}.term.{session_id}.attached", self.prefix)
    }

    /// `<p>.events.<ns>.<name>`: lifecycle and agent events of a sandbox.
    pub fn sandbox_events(&self, ns: &str, name: &str) -> String {
        format!("{}.events.{ns}.{name}", self.prefix)
    }

    /// `<p>.events.>`: what integrations subscribe to.
    pub fn all_sandbox_events(&self) -> String {
        format!("{}.events.>", self.prefix)
    }

    /// `<p>.node.<node>.heartbeat`: executor liveness.
    pub fn heartbeat(&self, node: &str) -> String {
        format!("{}.node.{node}.heartbeat", self.prefix)
    }

    pub fn all_heartbeats(&self) -> String {
        format!("{}.node.*.heartbeat", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_follow_the_spec() {
        let s = Subjects::default();
        assert_eq!(
            s.sandbox("default", "demo", Verb::Invoke),
            "agenttier.sbx.default.demo.invoke"
        );
        assert_eq!(s.invoke_events("inv-1"), "agenttier.inv.inv-1.events");
        assert_eq!(s.sandbox_events("ns", "a"), "agenttier.events.ns.a");
        assert_eq!(s.heartbeat("n1"), "agenttier.node.n1.heartbeat");
        assert_eq!(s.exec_events("exec-1"), "agenttier.exec.exec-1.events");
        assert_eq!(s.transfer_upload("xfer-1"), "agenttier.xfer.xfer-1.upload");
    }

    #[test]
    fn verbs_round_trip() {
        for v in [
            Verb::Invoke,
            Verb::Configure,
            Verb::Cancel,
            Verb::Exec,
            Verb::Files,
            Verb::Stop,
            Verb::Resume,
            Verb::Status,
            Verb::InstallLog,
            Verb::Invokes,
            Verb::Terminal,
            Verb::Replay,
        ] {
            assert_eq!(Verb::parse(v.as_str()), Some(v));
        }
    }
}
