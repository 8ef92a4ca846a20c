//! The local runtime: a sandbox's processes under bubblewrap.
//!
//! Each process tree gets the host read-only, the sandbox's workspace at
//! `/workspace`, a private `/tmp`, new PID/IPC/UTS namespaces, no network
//! unless the template allows it, an unprivileged uid, and dies with the
//! executor. The executor's data directory is hidden, so one sandbox never
//! sees another's workspace. Every run is its own process group, which is how
//! cancel, timeouts and stop reach the whole tree.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use rustix::process::Resource;

use crate::limits::{Gate, Limit};

/// Where a sandbox's workspace appears inside it.
pub const WORKSPACE: &str = "/workspace";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Isolation {
    /// bubblewrap namespaces (the default).
    Bwrap,
    /// No isolation at all: processes run as the executor's user on the host.
    None,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "bubblewrap (bwrap) is not usable: {0}. Install it (Debian: apt-get install bubblewrap), \
         or start with --isolation none to run sandboxes WITHOUT isolation"
    )]
    BwrapMissing(String),
}

/// What to run, where.
pub struct Spec<'a> {
    pub workspace: &'a Path,
    pub argv: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    pub network: bool,
    /// Working directory inside the sandbox (absolute, under /workspace).
    pub cwd: &'a str,
}

/// Per-run caps on the whole process tree, enforced by a watchdog (and, for
/// processes, by `RLIMIT_NPROC` as the hard stop).
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub max_processes: u32,
    pub max_memory_bytes: u64,
    /// What a workspace may hold on disk.
    pub max_disk_bytes: u64,
}

/// The size of a sandbox's private `/tmp` (a tmpfs: it lives in memory).
const TMP_BYTES: u64 = 512 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Runtime {
    caps: Caps,
    isolation: Isolation,
    /// `--ro-bind`/`--symlink` arguments for the host view ([`crate::hostview`]).
    host_args: Vec<String>,
    path: String,
    /// This uid's processes, counted at most [`NPROC_RECOUNT`] ago.
    uid_processes: Arc<Fresh<u64>>,
    sampler: Arc<Sampler>,
    meter: Arc<crate::disk::Meter>,
    /// Whether bwrap takes `--size` (0.8 and later): `/tmp` is then bounded.
    tmp_size: bool,
}

impl Runtime {
    /// Checks that the isolation asked for works here.
    pub async fn new(
        isolation: Isolation,
        data_dir: &Path,
        extra_ro: &[PathBuf],
        caps: Caps,
    ) -> Result<Self, Error> {
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
        let rt = Self {
            caps,
            isolation,
            host_args: crate::hostview::args(&path, extra_ro, &[data_dir.to_path_buf()]),
            path,
            uid_processes: Arc::new(Fresh::new(NPROC_RECOUNT)),
            sampler: Default::default(),
            meter: Arc::new(crate::disk::Meter::new(caps.max_disk_bytes)),
            tmp_size: isolation == Isolation::Bwrap && bwrap_takes_size(),
        };
        if isolation == Isolation::Bwrap {
            if !rt.tmp_size {
                tracing::warn!("this bwrap has no --size: a sandbox's /tmp is not bounded");
            }
            // A run as every run starts: under its limits, held and released.
            let argv = ["true".to_string()];
            let env = BTreeMap::new();
            let spec = Spec {
                workspace: data_dir,
                argv: &argv,
                env: &env,
                network: false,
                cwd: WORKSPACE,
            };
            let failed = |e: std::io::Error| Error::BwrapMissing(e.to_string());
            let mut launch = rt.command(&spec).map_err(failed)?;
            launch.cmd.stdin(Stdio::null()).stdout(Stdio::null());
            let probe = launch
                .spawn()
                .await
                .map_err(failed)?
                .wait_with_output()
                .await
                .map_err(failed)?;
            if !probe.status.success() {
                return Err(Error::BwrapMissing(
                    String::from_utf8_lossy(&probe.stderr).trim().to_string(),
                ));
            }
        } else {
            tracing::warn!(
                "ISOLATION IS OFF (--isolation none): sandbox processes run as this user on the \
                 host, can read and write anything it can, reach the network and outlive runs \
                 that detach. Use only for development on a machine without bubblewrap."
            );
        }
        Ok(rt)
    }

    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    pub fn caps(&self) -> Caps {
        self.caps
    }

    /// What the run watchdogs measure process groups with.
    pub fn sampler(&self) -> Arc<Sampler> {
        self.sampler.clone()
    }

    /// What the run watchdogs measure workspaces with.
    pub fn meter(&self) -> Arc<crate::disk::Meter> {
        self.meter.clone()
    }

    fn bwrap_args(&self, workspace: &Path, network: bool, cwd: &str) -> Vec<String> {
        let mut a: Vec<String> = [
            "--die-with-parent",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-user",
            "--uid",
            "1000",
            "--gid",
            "1000",
            "--hostname",
            "sandbox",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if !network {
            a.push("--unshare-net".into());
        }
        a.extend(self.host_args.iter().cloned());
        a.extend(["--dev", "/dev", "--proc", "/proc"].map(String::from));
        if self.tmp_size {
            a.extend(["--size".into(), TMP_BYTES.to_string()]);
        }
        a.extend(["--tmpfs", "/tmp", "--bind"].map(String::from));
        a.push(workspace.display().to_string());
        a.push(WORKSPACE.into());
        a.extend(["--chdir".into(), cwd.into()]);
        a
    }

    /// A command for `spec`, in its own process group, with piped stdio;
    /// under bubblewrap it starts held, and [`Launch::spawn`] releases it
    /// under its limits.
    pub fn command(&self, spec: &Spec<'_>) -> std::io::Result<Launch> {
        let mut gate = None;
        let mut cmd = match self.isolation {
            Isolation::Bwrap => {
                let g = Gate::new()?;
                let mut c = tokio::process::Command::new(which("bwrap"));
                c.args(self.bwrap_args(spec.workspace, spec.network, spec.cwd));
                c.args(g.bwrap_args());
                c.arg("--");
                c.args(spec.argv);
                gate = Some((g, self.limits()));
                c
            }
            Isolation::None => {
                // Without a mount namespace there is no /workspace: point
                // arguments and the working directory at the real directory.
                let real = |s: &str| match s.strip_prefix(WORKSPACE) {
                    Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                        format!("{}{rest}", spec.workspace.display())
                    }
                    _ => s.to_string(),
                };
                let mut c = tokio::process::Command::new(real(&spec.argv[0]));
                c.args(spec.argv[1..].iter().map(|a| real(a)));
                c.current_dir(real(spec.cwd));
                c
            }
        };
        cmd.env_clear()
            .env("PATH", &self.path)
            .env("HOME", WORKSPACE)
            .env("LANG", "C.UTF-8")
            .env("PYTHONUNBUFFERED", "1")
            .envs(spec.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        Ok(Launch { cmd, gate })
    }
}

/// A sandboxed command, ready to start.
pub struct Launch {
    /// Stdio may still be changed (a terminal's PTY).
    pub cmd: tokio::process::Command,
    gate: Option<(Gate, Vec<Limit>)>,
}

impl Launch {
    /// Starts it; under bubblewrap, returns once its first process holds
    /// its limits and has been let go.
    pub async fn spawn(mut self) -> std::io::Result<tokio::process::Child> {
        match self.gate {
            Some((gate, limits)) => gate.spawn(&mut self.cmd, &limits).await,
            None => crate::limits::spawn(&mut self.cmd),
        }
    }
}

/// Signals every process of the run's process group.
pub fn signal_tree(pgid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pgid) {
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

impl Runtime {
    /// Asks a run to stop: SIGTERM to its processes. Under bubblewrap the
    /// group leader is bwrap itself, which would die at once and take the
    /// whole PID namespace with it, so it is spared: the sandboxed processes
    /// get their grace period, and the SIGKILL that follows takes everything.
    pub fn terminate(&self, pgid: u32) {
        match self.isolation {
            Isolation::None => signal_tree(pgid, Signal::SIGTERM),
            Isolation::Bwrap => {
                let others: Vec<u32> = group_members(pgid)
                    .into_iter()
                    .filter(|p| *p != pgid)
                    .collect();
                // bwrap and its PID-1 helper only: the command has not started
                // (a cancel right after `start`), so there is no one to give a
                // grace period to; end it now rather than at the SIGKILL.
                if others.len() <= 1 {
                    signal_tree(pgid, Signal::SIGKILL);
                    return;
                }
                for pid in others {
                    if let Ok(pid) = i32::try_from(pid) {
                        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
                    }
                }
            }
        }
    }
}

impl Runtime {
    /// The limits a run starts under (inherited by everything it starts):
    /// open files, the size of any one file written, no core dumps, and
    /// processes. `RLIMIT_NPROC` counts every process of the real uid, and
    /// sandboxed processes run as the executor's uid: the limit is what that
    /// uid runs now plus the run's own budget. "Now" is a count at most
    /// [`NPROC_RECOUNT`] old: a scan of `/proc` costs about as much as the
    /// rest of a spawn, and the limit is shared with every other process of
    /// the uid anyway (the watchdog holds each run to its own budget).
    fn limits(&self) -> Vec<Limit> {
        const NOFILE: u64 = 4096;
        const FSIZE: u64 = 4 * 1024 * 1024 * 1024;
        let nproc =
            self.uid_processes.with(uid_processes, |n| *n) + u64::from(self.caps.max_processes);
        [
            (Resource::Nproc, nproc),
            (Resource::Nofile, NOFILE),
            (Resource::Fsize, FSIZE),
            (Resource::Core, 0),
        ]
        .map(|(resource, value)| Limit { resource, value })
        .to_vec()
    }
}

/// How old the count of the executor's uid's processes may be.
const NPROC_RECOUNT: std::time::Duration = std::time::Duration::from_millis(250);

/// The processes of this process's real uid (from `/proc`).
fn uid_processes() -> u64 {
    let me = nix::unistd::getuid().as_raw();
    proc_pids()
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}"))
                .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == me)
        })
        .count() as u64
}

/// A value recomputed when it is older than its maximum age.
#[derive(Debug)]
struct Fresh<T> {
    max_age: std::time::Duration,
    last: std::sync::Mutex<Option<(std::time::Instant, T)>>,
}

impl<T> Fresh<T> {
    fn new(max_age: std::time::Duration) -> Self {
        Self {
            max_age,
            last: std::sync::Mutex::new(None),
        }
    }

    /// `read` of the value, after `compute` if the last one is too old.
    fn with<R>(&self, compute: impl FnOnce() -> T, read: impl FnOnce(&T) -> R) -> R {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= self.max_age)
        {
            *last = Some((std::time::Instant::now(), compute()));
        }
        let (_, value) = last.as_ref().expect("just computed");
        read(value)
    }
}

/// What a run's process group holds right now.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub processes: u32,
    pub memory_bytes: u64,
}

/// The process groups of the host, from one pass over `/proc` shared by
/// every run's watchdog: a pass per run per tick costs O(runs × host
/// processes), which at 64 concurrent runs was most of the executor's CPU.
#[derive(Debug)]
pub struct Sampler {
    groups: Fresh<Groups>,
}

impl Default for Sampler {
    fn default() -> Self {
        Self {
            groups: Fresh::new(GROUPS_MAX_AGE),
        }
    }
}

/// Process group → its processes.
type Groups = HashMap<u32, Vec<u32>>;

/// How old the shared pass may be (under the watchdog's period).
const GROUPS_MAX_AGE: std::time::Duration = std::time::Duration::from_millis(200);

impl Sampler {
    /// Processes and memory of the process group `pgid`. Memory is the sum
    /// of each process's proportional set size (shared pages split among
    /// their sharers), so a tree of forks is not counted many times over.
    pub fn usage(&self, pgid: u32) -> Usage {
        let members = self.groups.with(process_groups, |groups| {
            groups.get(&pgid).cloned().unwrap_or_default()
        });
        Usage {
            processes: members.len() as u32,
            memory_bytes: members.iter().map(|pid| pss_kib(*pid) * 1024).sum(),
        }
    }
}

/// Every process of the host by process group.
fn process_groups() -> Groups {
    let mut groups = Groups::new();
    for pid in proc_pids() {
        if let Some(pgrp) = pgrp_of(pid) {
            groups.entry(pgrp).or_default().push(pid);
        }
    }
    groups
}

pub(crate) fn proc_pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
}

/// The process group of `pid` (from `/proc/<pid>/stat`).
fn pgrp_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command, which may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(2)?.parse().ok()
}

/// The proportional set size of `pid`, in KiB (0 when it is gone).
fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
}

/// The processes whose process group is `pgid`, now.
fn group_members(pgid: u32) -> Vec<u32> {
    proc_pids()
        .filter(|pid| pgrp_of(*pid) == Some(pgid))
        .collect()
}

/// Whether the `bwrap` on `PATH` knows `--size`.
fn bwrap_takes_size() -> bool {
    std::process::Command::new(which("bwrap"))
        .arg("--help")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--size"))
}

/// `bin` as an absolute path found on the executor's `PATH`. Spawning by
/// absolute path (with the child's own `PATH` set) lets std use
/// `posix_spawn` instead of `fork`, whose cost grows with the executor's
/// memory. Looked up once per binary.
fn which(bin: &'static str) -> PathBuf {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static FOUND: OnceLock<Mutex<HashMap<&'static str, PathBuf>>> = OnceLock::new();
    let found = FOUND.get_or_init(Default::default);
    let mut found = found.lock().unwrap_or_else(|p| p.into_inner());
    found
        .entry(bin)
        .or_insert_with(|| {
            std::env::var_os("PATH")
                .and_then(|p| {
                    std::env::split_paths(&p)
                        .map(|d| d.join(bin))
                        .find(|p| p.is_file())
                })
                .unwrap_or_else(|| PathBuf::from(bin))
        })
        .clone()
}
