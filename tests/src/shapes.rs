//! The two shapes of a whole AgentTier a scenario runs against: `agenttier
//! up` alone ([`Embedded`]), and NATS with a controller, one executor and two
//! routers ([`Distributed`]).

use std::path::PathBuf;

use tempfile::TempDir;

use crate::NatsServer;
use crate::process::{Proc, random_api_key};

/// How long a run outlives its last client in the harness (30 s by default;
/// short here so abandonment can be tested, yet longer than the 5 s between
/// a router's `attached` messages).
pub const CLIENT_GRACE: &str = "8s";
/// How long after an invoke ends its own `inv.<id>.replay` is answered in the
/// harness (10 s by default; short here, so most resumes of finished runs go
/// through the sandbox's `replay` subject, as they do in production).
pub const REPLAY_TAIL: &str = "2s";
/// The workspace quota the harness runs executors with, in MiB (small, so a
/// disk-fill probe meets it quickly).
pub const SANDBOX_DISK_MIB: &str = "256";

/// A whole AgentTier, whatever its shape, as a scenario sees it.
pub trait System: Send + Sync {
    /// Which shape this is (for messages).
    fn shape(&self) -> &'static str;
    /// The base URL (`http://127.0.0.1:PORT`) of every router.
    fn urls(&self) -> Vec<String>;
    /// The admin API key every router accepts.
    fn admin_key(&self) -> &str;
    /// The processes serving HTTP (routers, or `agenttier up`), as
    /// [`urls`](Self::urls) lists them.
    fn router_pids(&self) -> Vec<u32>;
    /// Restarts what hosts the sandboxes, on the same data directory:
    /// `agenttier up` as a whole, or the executor. Blocks until it is back
    /// (the routers of the embedded shape may have moved: read
    /// [`urls`](Self::urls) again).
    fn restart_host(&mut self);
}

/// Templates the harness adds to the built-in ones.
const MANIFESTS: &str = "\
apiVersion: agenttier.io/v1alpha1
kind: ClusterSandboxTemplate
metadata:
  name: capped
spec:
  description: An agent sandbox admitting two invokes at a time
  mode: agent
  agent:
    maxConcurrentInvokes: 2
---
apiVersion: agenttier.io/v1alpha1
kind: ClusterSandboxTemplate
metadata:
  name: limited
spec:
  description: An agent sandbox with small output and idle limits
  mode: agent
  agent:
    maxOutputBytes: 100000
    idleInvokeTimeout: 2s
    defaultInvokeTimeout: 6s
---
apiVersion: agenttier.io/v1alpha1
kind: ClusterSandboxTemplate
metadata:
  name: cap5
spec:
  description: An agent sandbox admitting five invokes at a time
  mode: agent
  agent:
    maxConcurrentInvokes: 5
---
apiVersion: agenttier.io/v1alpha1
kind: ClusterSandboxTemplate
metadata:
  name: bigout
spec:
  description: An agent sandbox allowing 2 GiB of output per run
  mode: agent
  agent:
    maxOutputBytes: 2147483648
";

/// A temp directory holding `manifests/` (the harness's templates),
/// `logs/`, and the data directories.
struct Dirs {
    root: TempDir,
}

impl Dirs {
    fn new() -> Self {
        let root = tempfile::Builder::new()
            .prefix("agenttier-e2e-")
            .tempdir()
            .expect("create a temp dir for the system");
        let d = Self { root };
        for sub in ["manifests", "logs", "data"] {
            std::fs::create_dir_all(d.root.path().join(sub))
                .expect("create the system's directories");
        }
        std::fs::write(d.manifests().join("harness.yaml"), MANIFESTS).expect("write the manifests");
        d
    }

    fn manifests(&self) -> PathBuf {
        self.root.path().join("manifests")
    }

    fn logs(&self) -> PathBuf {
        self.root.path().join("logs")
    }

    fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }
}

fn arg(s: impl AsRef<std::ffi::OsStr>) -> String {
    s.as_ref().to_string_lossy().into_owned()
}

/// `agenttier up`: the whole system in one process.
pub struct Embedded {
    proc: Proc,
    key: String,
    _dirs: Dirs,
}

impl Embedded {
    pub fn start() -> Self {
        let dirs = Dirs::new();
        let key = random_api_key();
        let args = vec![
            arg("up"),
            arg("--listen"),
            arg("127.0.0.1:0"),
            arg("--data-dir"),
            arg(dirs.data()),
            arg("--manifests"),
            arg(dirs.manifests()),
            arg("--client-grace"),
            arg(CLIENT_GRACE),
            arg("--replay-tail"),
            arg(REPLAY_TAIL),
            arg("--sandbox-max-disk-mib"),
            arg(SANDBOX_DISK_MIB),
        ];
        let env = vec![("AGENTTIER_BOOTSTRAP_API_KEY".to_string(), key.clone())];
        let proc = Proc::start("up", &args, &env, &dirs.logs(), true);
        Self {
            proc,
            key,
            _dirs: dirs,
        }
    }

    pub fn url(&self) -> String {
        self.proc.url()
    }

    /// Terminates `up` and starts it again on the same data directory.
    pub fn restart(&mut self) {
        self.proc.restart();
    }
}

impl System for Embedded {
    fn shape(&self) -> &'static str {
        "embedded"
    }

    fn urls(&self) -> Vec<String> {
        vec![self.url()]
    }

    fn router_pids(&self) -> Vec<u32> {
        vec![self.proc.pid()]
    }

    fn admin_key(&self) -> &str {
        &self.key
    }

    fn restart_host(&mut self) {
        self.restart();
    }
}

/// A `nats-server`, a controller, one executor (`node-1`) and two routers
/// (three at `AGENTTIER_FAULT_SCALE=full`).
pub struct Distributed {
    // Dropped in this order: routers and services before NATS.
    routers: Vec<Proc>,
    executor: Proc,
    controller: Proc,
    nats: NatsServer,
    key: String,
    _dirs: Dirs,
}

impl Distributed {
    pub fn start() -> Self {
        let nats = NatsServer::start();
        let dirs = Dirs::new();
        let key = random_api_key();
        let url = nats.url();
        let logs = dirs.logs();
        let env = vec![("AGENTTIER_BOOTSTRAP_API_KEY".to_string(), key.clone())];
        // The routers first: each opens (or creates) the KV bucket before it
        // prints its address, so the others never race to create it.
        let router = |name: &str| {
            let args = vec![
                arg("router"),
                arg("--nats"),
                arg(&url),
                arg("--listen"),
                arg("127.0.0.1:0"),
            ];
            Proc::start(name, &args, &env, &logs, true)
        };
        let mut routers = vec![router("router-a"), router("router-b")];
        if crate::process::full_scale() {
            // The burst and crash cycles spread over three replicas.
            routers.push(router("router-c"));
        }
        let controller = Proc::start(
            "controller",
            &[
                arg("controller"),
                arg("--nats"),
                arg(&url),
                arg("--manifests"),
                arg(dirs.manifests()),
            ],
            &[],
            &logs,
            false,
        );
        let executor = Proc::start(
            "executor",
            &[
                arg("executor"),
                arg("--nats"),
                arg(&url),
                arg("--node"),
                arg("node-1"),
                arg("--data-dir"),
                arg(dirs.data()),
                arg("--client-grace"),
                arg(CLIENT_GRACE),
                arg("--replay-tail"),
                arg(REPLAY_TAIL),
                arg("--sandbox-max-disk-mib"),
                arg(SANDBOX_DISK_MIB),
            ],
            &[],
            &logs,
            false,
        );
        Self {
            routers,
            executor,
            controller,
            nats,
            key,
            _dirs: dirs,
        }
    }

    pub fn nats(&self) -> &NatsServer {
        &self.nats
    }

    pub fn controller(&mut self) -> &mut Proc {
        &mut self.controller
    }

    /// Terminates the executor and starts it again on its data directory.
    pub fn nats_mut(&mut self) -> &mut NatsServer {
        &mut self.nats
    }

    pub fn executor(&mut self) -> &mut Proc {
        &mut self.executor
    }

    /// Router `i` (0 or 1), as [`System::urls`] lists them.
    pub fn router(&mut self, i: usize) -> &mut Proc {
        &mut self.routers[i]
    }

    pub fn restart_executor(&mut self) {
        self.executor.restart();
    }
}

impl System for Distributed {
    fn shape(&self) -> &'static str {
        "distributed"
    }

    fn urls(&self) -> Vec<String> {
        self.routers.iter().map(Proc::url).collect()
    }

    fn router_pids(&self) -> Vec<u32> {
        self.routers.iter().map(Proc::pid).collect()
    }

    fn admin_key(&self) -> &str {
        &self.key
    }

    fn restart_host(&mut self) {
        self.restart_executor();
    }
}

impl Drop for Distributed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- nats-server log -----\n{}", self.nats.log());
        }
    }
}
