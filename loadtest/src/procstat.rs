//! CPU time and memory of the processes under test, from `/proc/<pid>/stat`
//! and `/proc/<pid>/status`, read before and after each measurement.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::args::Pid;

/// Clock ticks per second of `utime`/`stime` (`USER_HZ`, 100 on Linux).
const TICKS_PER_S: f64 = 100.0;

/// One reading of one process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reading {
    /// utime + stime, in ticks.
    pub cpu: u64,
    /// cutime + cstime: children it has waited for (sandboxed processes).
    pub children_cpu: u64,
    pub rss_kib: u64,
    /// `VmHWM`: the peak resident set so far.
    pub peak_rss_kib: u64,
}

/// Reads `pid` now; `None` when it is gone or unreadable.
pub fn read(pid: u32) -> Option<Reading> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces and parentheses:
    // state is field 3, utime 14 .. cstime 17.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<u64> = rest
        .split(' ')
        .skip(11)
        .take(4)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    if f.len() < 4 {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Some(Reading {
        cpu: f[0] + f[1],
        children_cpu: f[2] + f[3],
        rss_kib: kib("VmRSS:"),
        peak_rss_kib: kib("VmHWM:"),
    })
}

/// What one process used during a measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub label: String,
    pub pid: u32,
    /// CPU seconds of the process itself (user + system).
    pub cpu_s: f64,
    /// CPU seconds of children it waited for (the sandboxed processes).
    pub children_cpu_s: f64,
    /// CPU seconds per wall second (1.0 = one core busy).
    pub cores: f64,
    pub rss_kib: u64,
    pub rss_delta_kib: i64,
    pub peak_rss_kib: u64,
}

/// Readings of every process under test (and the harness itself).
#[derive(Debug, Clone)]
pub struct Snapshot {
    at: Instant,
    readings: Vec<(String, u32, Option<Reading>)>,
}

/// The harness's own process, reported beside the processes under test:
/// on a small machine the client competes with the server for the cores.
pub fn with_self(pids: &[Pid]) -> Vec<Pid> {
    let mut all = pids.to_vec();
    all.push(Pid {
        label: "loadtest (this client)".into(),
        pid: std::process::id(),
    });
    all
}

pub fn snapshot(pids: &[Pid]) -> Snapshot {
    Snapshot {
        at: Instant::now(),
        readings: pids
            .iter()
            .map(|p| (p.label.clone(), p.pid, read(p.pid)))
            .collect(),
    }
}

/// What each process used since `before`.
pub fn since(before: &Snapshot) -> Vec<Usage> {
    let wall = before.at.elapsed().as_secs_f64().max(1e-9);
    before
        .readings
        .iter()
        .filter_map(|(label, pid, b)| {
            let (b, a) = (b.as_ref()?, read(*pid)?);
            let cpu_s = a.cpu.saturating_sub(b.cpu) as f64 / TICKS_PER_S;
            Some(Usage {
                label: label.clone(),
                pid: *pid,
                cpu_s,
                children_cpu_s: a.children_cpu.saturating_sub(b.children_cpu) as f64 / TICKS_PER_S,
                cores: cpu_s / wall,
                rss_kib: a.rss_kib,
                rss_delta_kib: a.rss_kib as i64 - b.rss_kib as i64,
                peak_rss_kib: a.peak_rss_kib,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let r = read(std::process::id()).expect("this process is readable");
        assert!(r.rss_kib > 0 && r.peak_rss_kib >= r.rss_kib);
        assert!(read(u32::MAX).is_none());
    }
}
