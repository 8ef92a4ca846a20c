//! One run of a process tree: stdin in, output out as numbered events,
//! limits enforced, exactly one end reported.
//!
//! Used by invokes and by configure installs. The task owns the child; the
//! only ways out are the child exiting or the task killing the whole tree.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agenttier_bus::msg::{EventKind, ExitReason, LogData};
use bytes::Bytes;
use nix::sys::signal::Signal;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::events::EventLog;
use crate::output::{LineSplitter, encode_owned};
use crate::runtime::{self, Runtime, Spec};

/// Between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(10);
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How often the process, memory and disk caps are checked.
const WATCHDOG: Duration = Duration::from_millis(250);

/// Limits and signals of one run.
pub struct Limits {
    pub timeout: Duration,
    pub idle_timeout: Option<Duration>,
    pub max_output_bytes: u64,
    pub cancel: CancellationToken,
    /// Fires when no client has been attached for the grace period.
    pub abandoned: CancellationToken,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub exit_code: i32,
    pub reason: ExitReason,
    pub cause: Option<String>,
    pub message: Option<String>,
    pub duration: Duration,
    /// Every output byte, when asked for (the install log).
    pub captured: Vec<u8>,
}

enum Out {
    /// The lines of one read of a stream, each with whether it is partial
    /// (no newline after it).
    Lines(&'static str, Vec<(Vec<u8>, bool)>),
    /// The read that took the run's output past its cap.
    OverCap,
    Done,
}

/// What the pumps have read, shared with the run's loop. The loop is woken
/// for lines and for the cap, not for every read: a writer's 4-8 KiB
/// writes would otherwise wake it several times for each 64 KiB piece of
/// a long line.
struct Progress {
    started: tokio::time::Instant,
    cap: u64,
    bytes: AtomicU64,
    /// When the last output arrived, in µs after `started`.
    last_micros: AtomicU64,
}

impl Progress {
    fn new(cap: u64) -> Self {
        Self {
            started: tokio::time::Instant::now(),
            cap,
            bytes: AtomicU64::new(0),
            last_micros: AtomicU64::new(0),
        }
    }

    /// Counts a read of `n` bytes; true for the read that passes the cap.
    fn read(&self, n: u64) -> bool {
        let micros = self.started.elapsed().as_micros() as u64;
        self.last_micros.fetch_max(micros, Ordering::Relaxed);
        let total = self.bytes.fetch_add(n, Ordering::Relaxed) + n;
        total > self.cap && total - n <= self.cap
    }

    /// When the last output arrived (the start while there was none).
    fn last_output(&self) -> tokio::time::Instant {
        self.started + Duration::from_micros(self.last_micros.load(Ordering::Relaxed))
    }
}

/// The most one read of a run's pipe takes.
const READ_BYTES: usize = 64 * 1024;

async fn pump(
    mut r: impl AsyncRead + Unpin,
    stream: &'static str,
    tx: mpsc::Sender<Out>,
    progress: Arc<Progress>,
) {
    // Most runs write little: start small (two full-size zeroed buffers per
    // run showed in the invoke profile) and grow once a read fills it.
    let mut buf = vec![0u8; 4 * 1024];
    let mut split = LineSplitter::default();
    let mut lines = Vec::new();
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if n == buf.len() && n < READ_BYTES {
            buf.resize(READ_BYTES, 0);
        }
        if progress.read(n as u64) && tx.send(Out::OverCap).await.is_err() {
            return;
        }
        split.push_marked(&buf[..n], &mut lines);
        if !lines.is_empty()
            && tx
                .send(Out::Lines(stream, std::mem::take(&mut lines)))
                .await
                .is_err()
        {
            return;
        }
    }
    if let Some(l) = split.finish() {
        let _ = tx.send(Out::Lines(stream, vec![(l, true)])).await;
    }
    let _ = tx.send(Out::Done).await;
}

/// Runs `spec`, feeding `stdin` then closing it, publishing a `log` event per
/// line. Kills the tree on cancel, timeouts, abandonment and the output cap.
pub async fn run(
    rt: &Runtime,
    spec: &Spec<'_>,
    mut stdin: mpsc::Receiver<Bytes>,
    limits: &Limits,
    log: &EventLog,
    capture: bool,
) -> Outcome {
    let started = Instant::now();
    // What the workspace holds as this run starts, when it was last found
    // over the quota (measured again now: a configure may have written to
    // it since): a run that does not add to it goes on.
    let mut disk_seen = rt.meter().known(spec.workspace);
    if disk_seen.is_some_and(|n| n > rt.caps().max_disk_bytes) {
        let (meter, workspace) = (rt.meter(), spec.workspace.to_path_buf());
        disk_seen = tokio::task::spawn_blocking(move || meter.usage(&workspace, started))
            .await
            .ok();
    }
    let launched = match rt.command(spec) {
        Ok(launch) => launch.spawn().await,
        Err(e) => Err(e),
    };
    let mut child = match launched {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                exit_code: -1,
                reason: ExitReason::Error,
                cause: Some("start_failed".into()),
                message: Some(format!("could not start {:?}: {e}", spec.argv[0])),
                duration: started.elapsed(),
                captured: Vec::new(),
            };
        }
    };
    let pgid = child.id().unwrap_or(0);
    // A message is one read (at most 64 KiB): while the loop holds the
    // output back, the pumps stop reading once about 2 MiB waits, and the
    // writer then blocks on its full pipe.
    let (tx, mut rx) = mpsc::channel::<Out>(32);
    let progress = Arc::new(Progress::new(limits.max_output_bytes));
    if let Some(out) = child.stdout.take() {
        tokio::spawn(pump(out, "stdout", tx.clone(), progress.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(pump(err, "stderr", tx.clone(), progress.clone()));
    }
    drop(tx);
    if let Some(mut w) = child.stdin.take() {
        tokio::spawn(async move {
            while let Some(chunk) = stdin.recv().await {
                if w.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            let _ = w.shutdown().await;
        });
    }

    let mut end: Option<(ExitReason, &'static str, String)> = None;
    let mut over_cap = false;
    let mut open_streams = 2;
    let mut captured = Vec::new();
    let deadline = tokio::time::Instant::now() + limits.timeout;
    let mut last_output = tokio::time::Instant::now();
    let mut beat = tokio::time::interval(HEARTBEAT);
    // The first look after one period: a run that ends sooner (most invokes)
    // never pays for a scan of the host's processes.
    let mut watchdog = tokio::time::interval_at(tokio::time::Instant::now() + WATCHDOG, WATCHDOG);
    let caps = rt.caps();
    let mut status = None;
    let mut killed_at: Option<tokio::time::Instant> = None;
    loop {
        // A client behind by more than the flow-control window holds the
        // output back (the pipes fill and the writer blocks); that is not
        // idleness. A run being stopped is never held back.
        let paused = end.is_none() && log.paused();
        if paused {
            last_output = tokio::time::Instant::now();
        }
        let output_seen = progress.last_output();
        let idle_at = limits
            .idle_timeout
            .map(|d| last_output.max(output_seen) + d);
        let kill_at = killed_at.map(|t| t + KILL_GRACE);
        tokio::select! {
            _ = log.next_delivery(), if paused => {}
            out = rx.recv(), if open_streams > 0 && !paused => match out {
                // Past the output cap nothing more goes out, not even lines
                // already read from the pipe.
                Some(Out::Lines(..)) if over_cap => {}
                Some(Out::Lines(stream, lines)) => {
                    for (bytes, partial) in lines {
                        if capture {
                            captured.extend_from_slice(&bytes);
                            if !partial {
                                captured.push(b'\n');
                            }
                        }
                        let (data, encoding) = encode_owned(bytes);
                        log.emit(EventKind::Log(LogData { stream: stream.into(), data, encoding, partial })).await;
                    }
                }
                Some(Out::OverCap) => {
                    over_cap = true;
                    if end.is_none() {
                        let msg = format!("output limit of {} bytes reached; the run was stopped", limits.max_output_bytes);
                        log.emit(EventKind::Log(LogData { stream: "stderr".into(), data: format!("[agenttier] {msg}"), encoding: None, partial: false })).await;
                        end = Some((ExitReason::Error, "output_limit", msg));
                        runtime::signal_tree(pgid, Signal::SIGKILL);
                    }
                }
                Some(Out::Done) | None => open_streams -= 1,
            },
            s = child.wait(), if status.is_none() => {
                status = Some(s);
                // Whatever the leader left behind in its group goes with it.
                runtime::signal_tree(pgid, Signal::SIGKILL);
            }
            _ = beat.tick() => log.heartbeat().await,
            _ = watchdog.tick(), if end.is_none() && status.is_none() => {
                let (sampler, meter, workspace) = (rt.sampler(), rt.meter(), spec.workspace.to_path_buf());
                let (u, disk) = tokio::task::spawn_blocking(move || (sampler.usage(pgid), meter.usage(&workspace, started)))
                    .await
                    .unwrap_or_default();
                // Over the quota, a run is stopped when the workspace grew
                // since its last look (or the last measurement before it);
                // with nothing to compare to, at once.
                let grew = disk_seen.is_none_or(|seen| disk > seen);
                disk_seen = Some(disk);
                let over = if disk > caps.max_disk_bytes && grew {
                    Some(("disk_limit", format!("the workspace holds more than {} bytes", caps.max_disk_bytes)))
                } else if u.processes >= caps.max_processes {
                    Some(("pids_limit", format!("the run reached its limit of {} processes", caps.max_processes)))
                } else if u.memory_bytes > caps.max_memory_bytes {
                    Some(("memory_limit", format!("the run used more than {} bytes of memory", caps.max_memory_bytes)))
                } else {
                    None
                };
                if let Some((cause, msg)) = over {
                    log.emit(EventKind::Log(LogData { stream: "stderr".into(), data: format!("[agenttier] {msg}; the run was stopped"), encoding: None, partial: false })).await;
                    end = Some((ExitReason::Error, cause, msg));
                    runtime::signal_tree(pgid, Signal::SIGKILL);
                }
            }
            _ = limits.cancel.cancelled(), if end.is_none() => {
                end = Some((ExitReason::Canceled, "", "canceled by request".into()));
                rt.terminate(pgid);
                killed_at = Some(tokio::time::Instant::now());
            }
            _ = limits.abandoned.cancelled(), if end.is_none() => {
                end = Some((ExitReason::Canceled, "client_gone", "no client attached for the grace period".into()));
                rt.terminate(pgid);
                killed_at = Some(tokio::time::Instant::now());
            }
            _ = tokio::time::sleep_until(deadline), if end.is_none() => {
                end = Some((ExitReason::Timeout, "max", format!("run exceeded its {}s limit", limits.timeout.as_secs())));
                rt.terminate(pgid);
                killed_at = Some(tokio::time::Instant::now());
            }
            // Output read while this waited moves the deadline (set again
            // by the next turn of the loop).
            _ = sleep_until_opt(idle_at), if end.is_none() && idle_at.is_some() => {
                if progress.last_output() == output_seen {
                    end = Some((ExitReason::Timeout, "idle", "no output for the idle timeout".into()));
                    rt.terminate(pgid);
                    killed_at = Some(tokio::time::Instant::now());
                }
            }
            _ = sleep_until_opt(kill_at), if kill_at.is_some() => {
                runtime::signal_tree(pgid, Signal::SIGKILL);
                killed_at = None;
            }
        }
        if status.is_some() && open_streams == 0 {
            break;
        }
    }
    let duration = started.elapsed();
    match end {
        Some((reason, cause, message)) => Outcome {
            exit_code: -1,
            reason,
            cause: (!cause.is_empty()).then(|| cause.to_string()),
            message: Some(message),
            duration,
            captured,
        },
        None => {
            let code = match status {
                Some(Ok(s)) => exit_code(s),
                _ => -1,
            };
            Outcome {
                exit_code: code,
                reason: ExitReason::Completed,
                cause: None,
                message: None,
                duration,
                captured,
            }
        }
    }
}

async fn sleep_until_opt(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// The exit code, or 128 + signal for a process killed by a signal (as shells report it).
fn exit_code(s: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    s.code()
        .or_else(|| s.signal().map(|n| 128 + n))
        .unwrap_or(-1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_that_passes_the_cap_is_reported_once() {
        let p = Progress::new(10);
        assert!(!p.read(4));
        assert!(!p.read(6), "at the cap is not past it");
        assert!(p.read(1));
        assert!(!p.read(100), "only the first read past it");
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_output_is_when_a_read_arrived() {
        let p = Progress::new(u64::MAX);
        assert_eq!(p.last_output(), p.started);
        tokio::time::advance(Duration::from_millis(1500)).await;
        p.read(1);
        assert_eq!(p.last_output(), p.started + Duration::from_millis(1500));
    }
}
