//! The `agenttier` binary as real processes, in the two shapes the
//! end-to-end tests run against.
//!
//! A [`Proc`] is one child process: its stdout and stderr go to a log file in
//! a temp directory (read for the `listening on` line), and the log is printed
//! when a test panics, so a failure shows what the servers said. [`Embedded`]
//! is `agenttier up`; [`Distributed`] is a real `nats-server`, a controller,
//! one executor and two routers. Both implement [`System`], so a scenario is
//! written once and run against each.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub use crate::shapes::{Distributed, Embedded, System};

/// Environment variable naming the `agenttier` binary to run.
pub const BINARY_ENV: &str = "AGENTTIER_BIN";

/// How long a server may take to print its `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`Proc::terminate`] waits after SIGTERM before SIGKILL.
const TERM_TIMEOUT: Duration = Duration::from_secs(10);
const LISTENING: &str = "agenttier: listening on http://";
/// How much of each log a failing test prints.
const LOG_TAIL_LINES: usize = 150;

/// The `agenttier` binary: `$AGENTTIER_BIN` as it is, else `agenttier` in
/// the profile directory of the test executable (`target/debug/deps/..`),
/// first brought up to date with `cargo build`. Panics, saying how to build
/// it, when it is missing.
pub fn agenttier_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(locate).clone()
}

fn locate() -> PathBuf {
    let path = match std::env::var_os(BINARY_ENV) {
        Some(p) => PathBuf::from(p),
        None => {
            let exe = std::env::current_exe().expect("the test executable's path");
            let deps = exe.parent().expect("the test executable's directory");
            let profile_dir = deps.parent().unwrap_or(deps);
            build(profile_dir);
            profile_dir.join("agenttier")
        }
    };
    if !path.is_file() {
        panic!(
            "the agenttier binary is not at {}: build it first (`cargo build -p agenttier-cli`) \
             or set {BINARY_ENV} to it",
            path.display()
        );
    }
    path
}

/// Builds `agenttier` into `profile_dir` (a no-op when it is fresh).
///
/// `cargo test --workspace` builds another package's binaries only for that
/// package's own integration tests, so without this a test run would
/// silently use whatever `agenttier` an earlier `cargo build` left behind.
/// Cargo does not hold its build lock while tests run, so this cannot
/// deadlock. Skipped (the binary is used as found) when the layout is not
/// `<target-dir>/<profile>/deps`, e.g. with `--target <triple>`.
fn build(profile_dir: &Path) {
    let Some(target_dir) = profile_dir
        .parent()
        .filter(|t| t.join("CACHEDIR.TAG").is_file())
    else {
        return;
    };
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => return,
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    // Cargo gives the test process this package's variables; build scripts
    // that watch them (ring watches CARGO_MANIFEST_DIR) would otherwise
    // rebuild half the tree here, and again at the next plain `cargo build`.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_BIN_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "OUT_DIR",
            ]
            .contains(&k.as_ref())
        {
            cmd.env_remove(k.as_ref());
        }
    }
    let out = cmd
        .args([
            "build",
            "--quiet",
            "-p",
            "agenttier-cli",
            "--bin",
            "agenttier",
            "--profile",
            profile,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .arg("--manifest-path")
        .arg(&manifest)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("running {cargo:?} to build agenttier: {e}; or set {BINARY_ENV}")
        });
    if !out.status.success() {
        panic!(
            "`cargo build -p agenttier-cli` failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A fresh random admin key, in the format the router mints.
pub fn random_api_key() -> String {
    format!("atk_{}", hex::encode(rand::random::<[u8; 24]>()))
}

/// One running `agenttier` process; SIGKILLed when dropped.
pub struct Proc {
    name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Child,
    log: PathBuf,
    addr: Option<String>,
}

impl Proc {
    /// Starts `agenttier <args>` with `env` (and no other `AGENTTIER_*`
    /// variable from the test's environment). When `listens`, waits for the
    /// `listening on` line. `log_dir` holds the log, named after `name`.
    pub fn start(
        name: &str,
        args: &[String],
        env: &[(String, String)],
        log_dir: &Path,
        listens: bool,
    ) -> Self {
        let log = log_dir.join(format!("{name}.log"));
        let (child, addr) = spawn(name, args, env, &log, listens);
        Self {
            name: name.to_string(),
            args: args.to_vec(),
            env: env.to_vec(),
            child,
            log,
            addr,
        }
    }

    /// `http://ADDR` it listens on (servers that listen only).
    pub fn url(&self) -> String {
        let addr = self
            .addr
            .as_deref()
            .unwrap_or_else(|| panic!("{} does not listen", self.name));
        format!("http://{addr}")
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process (and its restarts) wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then SIGKILL if it has not exited within 10 s.
    pub fn terminate(&mut self) {
        if !self.is_running() {
            return;
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + TERM_TIMEOUT;
        while Instant::now() < deadline {
            if !self.is_running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "{} did not exit within {TERM_TIMEOUT:?} of SIGTERM; killing it",
            self.name
        );
        self.kill();
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Terminates the process and starts it again with the same arguments
    /// (a listening server may come back on another port).
    pub fn restart(&mut self) {
        self.terminate();
        let (child, addr) = spawn(
            &self.name,
            &self.args,
            &self.env,
            &self.log,
            self.addr.is_some(),
        );
        self.child = child;
        self.addr = addr;
    }

    /// Prints the end of the log to stderr (the test harness shows it for a
    /// failed test).
    pub fn print_log_tail(&self) {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(LOG_TAIL_LINES);
        eprintln!(
            "----- {} log (last {} lines) -----",
            self.name,
            lines.len() - from
        );
        for line in &lines[from..] {
            eprintln!("{line}");
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        self.sweep_sandboxes();
        if std::thread::panicking() {
            self.print_log_tail();
        }
    }
}

impl Proc {
    /// Kills the sandboxes a killed executor can leave behind under its
    /// `--data-dir`: a bwrap killed in its first moments (by
    /// `--die-with-parent`, as its executor died) can leave the sandbox's
    /// first process waiting forever for it. An executor starting on the
    /// same directory sweeps these itself; a test's directory has no next
    /// start, so the test's teardown does, with the executor's own sweep.
    fn sweep_sandboxes(&self) {
        let dir = self.args.iter().position(|a| a == "--data-dir");
        if let Some(dir) = dir.and_then(|i| self.args.get(i + 1)) {
            agenttier_executor::sweep_leftovers(Path::new(dir));
        }
    }
}

fn spawn(
    name: &str,
    args: &[String],
    env: &[(String, String)],
    log: &Path,
    listens: bool,
) -> (Child, Option<String>) {
    let stderr = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("open the log {}: {e}", log.display()));
    let mut cmd = Command::new(agenttier_binary());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AGENTTIER_") {
            cmd.env_remove(k);
        }
    }
    // Plain logs: they are read by people in a failed test's output.
    cmd.env("NO_COLOR", "1");
    cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name} ({}): {e}", agenttier_binary().display()));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    let out = Arc::new(Mutex::new(
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open the log {}: {e}", log.display())),
    ));
    std::thread::spawn(move || copy_stdout(stdout, out, tx));
    if !listens {
        return (child, None);
    }
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(addr) => return (child, Some(addr)),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().ok();
                panic!(
                    "{name} exited ({status:?}) before listening; its log:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() > deadline => {
                let _ = child.kill();
                panic!(
                    "{name} did not print `{LISTENING}` within {START_TIMEOUT:?}; its log:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
}

/// Copies the child's stdout into its log, sending the address of the first
/// `listening on` line; ends at EOF (which drops `tx`).
fn copy_stdout(stdout: std::process::ChildStdout, log: Arc<Mutex<File>>, tx: mpsc::Sender<String>) {
    let mut sent = false;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Ok(mut f) = log.lock() {
            let _ = writeln!(f, "{line}");
        }
        if !sent && let Some(addr) = line.trim().strip_prefix(LISTENING) {
            let _ = tx.send(addr.trim().to_string());
            sent = true;
        }
    }
}

/// The bound on one end-to-end scenario (startup not included).
pub const SCENARIO_TIMEOUT: Duration = Duration::from_secs(90);

/// Whether `AGENTTIER_FAULT_SCALE=full` asks for the fault tests at full size.
pub fn full_scale() -> bool {
    std::env::var("AGENTTIER_FAULT_SCALE").as_deref() == Ok("full")
}

/// Runs `fut`, panicking if it takes longer than [`SCENARIO_TIMEOUT`] (ten
/// times that at full scale).
pub async fn bounded_scenario<F: std::future::Future>(fut: F) -> F::Output {
    let limit = if full_scale() {
        SCENARIO_TIMEOUT * 10
    } else {
        SCENARIO_TIMEOUT
    };
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("scenario did not finish within {limit:?}"),
    }
}

/// For each `async fn scenario(sys: &mut dyn System)`, a module of that name
/// with two tests, `embedded` and `distributed`, each starting its own
/// system, waiting until it is ready and running the scenario bounded by
/// [`SCENARIO_TIMEOUT`].
#[macro_export]
macro_rules! e2e_scenarios {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                let mut sys = $crate::process::Embedded::start();
                $crate::client::wait_ready(&sys).await;
                $crate::process::bounded_scenario(super::$name(&mut sys)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn distributed() {
                let mut sys = $crate::process::Distributed::start();
                $crate::client::wait_ready(&sys).await;
                $crate::process::bounded_scenario(super::$name(&mut sys)).await;
            }
        }
    )*};
}

/// Waits up to `timeout` for every host process whose command line contains
/// `marker` to be gone; returns those still there (empty: all gone).
pub async fn left_after(marker: &str, timeout: std::time::Duration) -> Vec<(u32, String)> {
    if crate::wait_for(timeout, || async { processes_with(marker).is_empty() }).await {
        Vec::new()
    } else {
        processes_with(marker)
    }
}

/// Host processes whose command line contains `marker` (pid, command line).
/// Sandboxed processes are visible here too: their PID namespace is a child
/// of the host's.
pub fn processes_with(marker: &str) -> Vec<(u32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    dir.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            (pid != me && cmdline.contains(marker)).then(|| (pid, cmdline.trim().to_string()))
        })
        .collect()
}
