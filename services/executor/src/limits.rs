//! The resource limits a sandboxed run starts under, set without an extra
//! `exec`. bwrap is started with `--info-fd` and `--block-fd`: it names the
//! sandbox's first process on the first descriptor and holds that process,
//! before anything of the sandbox runs, until a byte arrives on the second.
//! In between the executor sets the limits on it with `prlimit(2)`;
//! everything the sandbox starts inherits them. (Wrapping bwrap in the
//! `prlimit` program cost an `exec` per run: ~1 ms at c=1 and a tenth of the
//! executor's profile at c=64.)
//!
//! The process is never released without its limits: when they cannot be
//! set, or the spawn is given up half-way (its future dropped), its whole
//! process group is killed before the hold is let go (bwrap goes on when
//! the descriptor closes, not only when a byte arrives).
//!
//! The two descriptors bwrap inherits must not reach any other child: they
//! are inheritable only while [`SPAWN`] is held, and every spawn of the
//! executor takes it ([`spawn`]).

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::signal::{Signal, killpg};
use rustix::process::{Resource, Rlimit};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

/// Held around every spawn of the executor: a child started while another
/// spawn's descriptors are inheritable would get a copy of them.
static SPAWN: Mutex<()> = Mutex::new(());

/// How long bwrap may take to name the sandbox's first process.
const INFO_TIMEOUT: Duration = Duration::from_secs(30);
/// What bwrap writes on `--info-fd` is a small JSON object.
const INFO_MAX: usize = 64 * 1024;

/// One limit: soft and hard alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub resource: Resource,
    pub value: u64,
}

/// Spawns `cmd` with [`SPAWN`] held (for children that get no limits:
/// runs without isolation, and helpers such as `stty`).
pub fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    let _held = SPAWN.lock().unwrap_or_else(|p| p.into_inner());
    cmd.spawn()
}

/// The two pipes between the executor and a held bwrap.
pub struct Gate {
    /// Ours: where bwrap writes its info.
    info: OwnedFd,
    /// Ours: a byte (or its closing) lets the sandbox go on.
    release: OwnedFd,
    /// bwrap's ends, inherited by the child.
    info_child: OwnedFd,
    block_child: OwnedFd,
}

impl Gate {
    pub fn new() -> std::io::Result<Self> {
        let (info, info_child) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let (block_child, release) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        Ok(Self {
            info,
            release,
            info_child,
            block_child,
        })
    }

    /// The arguments that tell bwrap about the gate.
    pub fn bwrap_args(&self) -> [String; 4] {
        [
            "--info-fd".into(),
            self.info_child.as_raw_fd().to_string(),
            "--block-fd".into(),
            self.block_child.as_raw_fd().to_string(),
        ]
    }

    /// Spawns `cmd` (bwrap with [`Gate::bwrap_args`], in its own process
    /// group), sets `limits` on the process bwrap names, and releases it.
    /// On any failure the process group is killed first.
    pub async fn spawn(self, cmd: &mut Command, limits: &[Limit]) -> std::io::Result<Child> {
        let Gate {
            info,
            release,
            info_child,
            block_child,
        } = self;
        let child = {
            let _held = SPAWN.lock().unwrap_or_else(|p| p.into_inner());
            // Moved in after the lock, so dropped before it on every path:
            // the next spawn must not get them.
            let ends = [info_child, block_child];
            let spawned = ends
                .iter()
                .try_for_each(|fd| fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty())).map(drop))
                .map_err(std::io::Error::from)
                .and_then(|()| cmd.spawn());
            drop(ends);
            spawned?
        };
        // From here until it is let go, anything that ends this (an error,
        // or this future dropped) kills the group before the hold is gone.
        let held = Held {
            pgid: child.id().and_then(|p| i32::try_from(p).ok()),
            release: Some(release),
        };
        let pid = match tokio::time::timeout(INFO_TIMEOUT, child_pid(info)).await {
            Ok(pid) => pid?,
            Err(_) => {
                return Err(std::io::Error::other(
                    "bwrap did not name the sandbox's process in time",
                ));
            }
        };
        set(pid, limits)?;
        held.let_go()?;
        Ok(child)
    }
}

/// A process group whose sandbox is held: dropped without [`Held::let_go`],
/// it kills the group first and only then closes the hold (whose closing
/// alone would let the sandbox go on).
struct Held {
    pgid: Option<i32>,
    release: Option<OwnedFd>,
}

impl Held {
    fn let_go(mut self) -> std::io::Result<()> {
        match self.release.take() {
            Some(fd) => std::fs::File::from(fd).write_all(b"1"),
            None => Ok(()),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(fd) = self.release.take() {
            if let Some(pgid) = self.pgid {
                let _ = killpg(nix::unistd::Pid::from_raw(pgid), Signal::SIGKILL);
            }
            drop(fd);
        }
    }
}

/// The `child-pid` bwrap writes on its info descriptor.
async fn child_pid(info: OwnedFd) -> std::io::Result<i32> {
    #[derive(serde::Deserialize)]
    struct Info {
        #[serde(rename = "child-pid")]
        child_pid: i32,
    }
    let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(info)?;
    let mut buf = Vec::with_capacity(256);
    loop {
        if rx.read_buf(&mut buf).await? == 0 {
            return Err(std::io::Error::other(
                "bwrap ended before naming the sandbox's process",
            ));
        }
        match serde_json::from_slice::<Info>(&buf) {
            Ok(info) => return Ok(info.child_pid),
            Err(e) if e.is_eof() && buf.len() < INFO_MAX => continue,
            Err(e) => return Err(std::io::Error::other(format!("bwrap's info: {e}"))),
        }
    }
}

/// Sets `limits` on `pid`, each at most the executor's own hard limit
/// (which the process inherited): raising one needs a privilege the
/// executor may not have, and a run is never started with more anyway.
fn set(pid: i32, limits: &[Limit]) -> std::io::Result<()> {
    let pid = rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| std::io::Error::other("bwrap named process 0"))?;
    for l in limits {
        let value = match rustix::process::getrlimit(l.resource).maximum {
            Some(hard) => l.value.min(hard),
            None => l.value,
        };
        let both = Rlimit {
            current: Some(value),
            maximum: Some(value),
        };
        rustix::process::prlimit(Some(pid), l.resource, both)?;
    }
    Ok(())
}

/// Kills what an earlier executor on `data_dir` left behind: bwrap
/// processes that bind a directory under it. One killed in bwrap's first
/// moments can leave the sandbox's first process waiting forever for a
/// bwrap that died writing to `--info-fd` (it never ran the command); every
/// other sandbox dies with its executor (`--die-with-parent`). Called
/// before this executor starts any: whatever matches is a leftover.
pub fn sweep_leftovers(data_dir: &std::path::Path) -> usize {
    let under = format!("{}/", data_dir.display());
    let mut killed = 0;
    for pid in crate::runtime::proc_pids() {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let mut args = cmdline.split(|b| *b == 0).map(String::from_utf8_lossy);
        let is_bwrap = args.next().is_some_and(|a| {
            std::path::Path::new(a.as_ref()).file_name() == Some("bwrap".as_ref())
        });
        if is_bwrap
            && args.any(|a| a.starts_with(&under))
            && let Ok(pid) = i32::try_from(pid)
            && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).is_ok()
        {
            killed += 1;
        }
    }
    if killed > 0 {
        tracing::warn!(
            killed,
            "killed sandbox processes an earlier executor left behind"
        );
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Vec<Limit> {
        vec![
            Limit {
                resource: Resource::Nofile,
                value: 321,
            },
            Limit {
                resource: Resource::Core,
                value: 0,
            },
        ]
    }

    /// A gate and a stand-in for bwrap: it starts the "sandbox" (a
    /// subshell that waits on the block descriptor, then writes its
    /// open-files limit to `mark`), says `info` on the info descriptor (`$!`
    /// is the subshell), and waits for it, as bwrap waits for its child.
    struct Fake {
        _dir: tempfile::TempDir,
        mark: std::path::PathBuf,
        gate: Gate,
        cmd: Command,
    }

    fn fake(info: &str) -> Fake {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mark = dir.path().join("limit");
        let gate = Gate::new().unwrap_or_else(|e| panic!("{e}"));
        let [_, i, _, b] = gate.bwrap_args();
        let script = format!(
            "( exec {i}>&-; head -c1 <&{b} >/dev/null; exec {b}<&-; ulimit -n > {mark} ) & \
             exec {b}<&-; printf '%s' \"{info}\" >&{i}; exec {i}>&-; wait",
            mark = mark.display()
        );
        // bash: dash takes only one-digit descriptors in redirections.
        let mut cmd = Command::new("/bin/bash");
        cmd.arg("-c")
            .arg(script)
            .process_group(0)
            .kill_on_drop(true);
        Fake {
            _dir: dir,
            mark,
            gate,
            cmd,
        }
    }

    /// What the "sandbox" of a fake that names it writes, once spawned
    /// through the gate with `limits`.
    async fn open_files_limit(limits: &[Limit]) -> String {
        let Fake {
            _dir,
            mark,
            gate,
            mut cmd,
        } = fake(r#"{\"child-pid\": $!}"#);
        let mut child = gate
            .spawn(&mut cmd, limits)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(child.wait().await.is_ok_and(|s| s.success()));
        let limit = std::fs::read_to_string(&mark).unwrap_or_else(|e| panic!("{e}"));
        limit.trim().to_string()
    }

    #[tokio::test]
    async fn the_named_process_goes_on_only_with_its_limits() {
        assert_eq!(open_files_limit(&limits()).await, "321");
    }

    #[tokio::test]
    async fn a_limit_above_the_executors_own_is_lowered_to_it() {
        // Beyond any hard limit (and the kernel's `nr_open`): refused
        // outright if asked for as is.
        let huge = [Limit {
            resource: Resource::Nofile,
            value: u64::MAX - 1,
        }];
        let ours = rustix::process::getrlimit(Resource::Nofile)
            .maximum
            .map_or("unlimited".to_string(), |n| n.to_string());
        assert_eq!(open_files_limit(&huge).await, ours);
    }

    #[tokio::test]
    async fn a_spawn_given_up_while_held_never_lets_the_process_go_on() {
        // Names the process only after 5 s: the caller gives up before.
        let Fake {
            _dir,
            mark,
            gate,
            mut cmd,
        } = fake(r#"$(sleep 5){\"child-pid\": $!}"#);
        let limits = limits();
        let spawn = gate.spawn(&mut cmd, &limits);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), spawn)
                .await
                .is_err()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!mark.exists(), "went on without its limits");
    }

    #[tokio::test]
    async fn a_process_whose_limits_cannot_be_set_never_goes_on() {
        for info in [
            r#"{\"child-pid\": 0}"#,          // not a process
            r#"{\"child-pid\": 2147483646}"#, // nobody's
            r#"{\"child\": 1}"#,              // not what bwrap says
            "",                               // nothing at all
        ] {
            let Fake {
                _dir,
                mark,
                gate,
                mut cmd,
            } = fake(info);
            assert!(gate.spawn(&mut cmd, &limits()).await.is_err(), "{info}");
            // Its process group was killed before the hold was let go: the
            // "sandbox" never writes the mark.
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(!mark.exists(), "{info}: went on without its limits");
        }
    }

    #[tokio::test]
    async fn leftovers_under_the_data_directory_are_swept_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let bin = dir.path().join("bwrap");
        std::fs::copy("/bin/bash", &bin).unwrap_or_else(|e| panic!("{e}"));
        let data = dir.path().join("data");
        // Looks like a held sandbox of this data directory, and like one of
        // another; each waits on its stdin, with no process of its own.
        let held = |bind: std::path::PathBuf| {
            Command::new(&bin)
                .args(["-c", "read -r _", "--bind"])
                .arg(bind)
                .arg("/workspace")
                .stdin(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let mut ours = held(data.join("sandboxes/default/a/workspace"));
        let mut other = held(dir.path().join("elsewhere/workspace"));
        assert_eq!(sweep_leftovers(&data), 1);
        let status = tokio::time::timeout(Duration::from_secs(10), ours.wait())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert!(other.try_wait().unwrap_or_else(|e| panic!("{e}")).is_none());
    }
}
