//! Finished invokes kept on disk for their retention, so a restarted
//! executor can still replay them (and its actor still knows who may see
//! them).
//!
//! When an invoke ends, its newest retained events (up to 4 MiB of the JSON
//! already published) are appended, with who started it and how it ended,
//! as one line of `<sandbox>/runs/<minute>.ndjson`: one segment per minute
//! of end time, removed whole once the retention of its last run is over.
//! Appending to an existing file costs an `open` and a `write`; a file per
//! run cost an inode (~0.3 ms of ext4 CPU on the path to every `exit`). On hosting a sandbox
//! the executor reloads the runs still within their retention. Runs that
//! were still going when the executor died are not on disk: they died with
//! it, and their clients were told `executor_lost`.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agenttier_bus::model::now_unix_ms;
use agenttier_bus::msg::{ExitReason, ReplayReply};
use serde::{Deserialize, Serialize};

use crate::Node;
use crate::actor::Remember;
use crate::events::{EventLog, RETENTION};
use crate::listener::Hosted;
use crate::state::Dirs;

/// Event JSON kept on disk per run: the newest events (a resume after a
/// restart gets a `gap` for anything older).
const KEPT_BYTES: usize = 4 * 1024 * 1024;
/// The span of end times one segment holds.
const SEGMENT_MS: u64 = 60_000;
/// Records up to this size are written on the caller's thread (a `write`
/// to the page cache); bigger ones on the blocking pool.
const INLINE_BYTES: usize = 64 * 1024;

/// What the record says besides the events.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    pub invoke_id: String,
    pub owner: String,
    pub started_at: u64,
    pub reason: ExitReason,
    /// Unix ms.
    pub ended_at: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Saved {
    #[serde(flatten)]
    header: Header,
    replay: ReplayReply,
}

/// One sandbox's segments, and the newest one written to. Each append opens
/// the segment and closes it again: an executor hosting thousands of
/// sandboxes must not hold a descriptor for each.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    newest: Mutex<Option<u64>>,
}

impl Journal {
    pub fn new(dirs: &Dirs) -> Arc<Self> {
        Arc::new(Self {
            dir: dirs.root.join("runs"),
            newest: Mutex::new(None),
        })
    }

    fn segment_path(&self, segment: u64) -> PathBuf {
        self.dir.join(format!("{segment}.ndjson"))
    }

    /// Appends one record to the segment of `ended_at`, scheduling the
    /// segment's removal when this process first writes to it.
    fn append(&self, ended_at: u64, line: &[u8]) -> std::io::Result<()> {
        let segment = ended_at / SEGMENT_MS;
        // Held across the write: records never interleave.
        let mut newest = self.newest.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.segment_path(segment);
        if *newest != Some(segment) {
            std::fs::create_dir_all(&self.dir)?;
        }
        let mut file = File::options().create(true).append(true).open(&path)?;
        // Each record starts a line of its own: one torn by a crash is
        // skipped on reload without taking the next with it.
        file.write_all(line)?;
        if *newest != Some(segment) {
            // A record of an older minute, written late, schedules that
            // segment's removal again: a second timer is harmless.
            remove_later(path, segment_left(segment));
            *newest = Some(newest.map_or(segment, |n| n.max(segment)));
        }
        Ok(())
    }
}

/// How long the runs of `segment` stay retained from now: until the
/// retention of a run that ended at the very end of its minute is over.
fn segment_left(segment: u64) -> Duration {
    let last_end = segment.saturating_add(1).saturating_mul(SEGMENT_MS);
    let expires = last_end.saturating_add(RETENTION.as_millis() as u64);
    Duration::from_millis(expires.saturating_sub(now_unix_ms()))
        .min(RETENTION + Duration::from_millis(SEGMENT_MS))
}

/// Appends the finished run to the sandbox's journal. Errors are logged:
/// the run itself is over either way.
pub async fn save(journal: &Arc<Journal>, header: Header, log: &EventLog) {
    let mut line = b"\n".to_vec();
    if serde_json::to_writer(&mut line, &header).is_err() {
        return;
    }
    // `{...header` + `,"replay":` + the dump + `}`: the events stay as published.
    line.pop();
    line.extend_from_slice(b",\"replay\":");
    line.extend_from_slice(&log.dump(KEPT_BYTES));
    line.push(b'}');
    let ended_at = header.ended_at;
    let written = if line.len() <= INLINE_BYTES {
        journal.append(ended_at, &line)
    } else {
        let journal = journal.clone();
        tokio::task::spawn_blocking(move || journal.append(ended_at, &line))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    };
    if let Err(e) = written {
        tracing::warn!(error = %e, dir = %journal.dir.display(), invoke_id = %header.invoke_id,
            "could not keep a finished run on disk");
    }
}

fn remove_later(path: PathBuf, after: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        let _ = tokio::fs::remove_file(&path).await;
    });
}

/// The records of one file: a segment's lines, or a whole file in the
/// one-file-per-run layout of earlier versions.
fn records(path: &Path, bytes: &[u8]) -> Vec<Saved> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("ndjson") => bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(|l| serde_json::from_slice(l).ok())
            .collect(),
        Some("json") => serde_json::from_slice(bytes).into_iter().collect(),
        _ => Vec::new(),
    }
}

/// Reloads the sandbox's finished runs still within their retention: their
/// the actor remembers them, and replays them on the sandbox's subject. Files with nothing
/// retained go.
pub async fn restore(node: &Arc<Node>, sbx: &Arc<Hosted>) {
    let dir = sbx.runs.dir.clone();
    let files = tokio::task::spawn_blocking(move || {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| e.path())
            .filter_map(|p| Some((std::fs::read(&p).ok()?, p)))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let mut saved_runs = Vec::new();
    for (bytes, path) in files {
        let runs = records(&path, &bytes);
        let newest = runs.iter().map(|s| s.header.ended_at).max();
        // A segment goes with the end of its minute (this process may still
        // append to it); a file of the older layout with its one run.
        let segment = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|_| path.extension().is_some_and(|e| e == "ndjson"));
        let left = newest.and_then(|end| match segment {
            Some(segment) => Some(segment_left(segment)).filter(|l| !l.is_zero()),
            None => RETENTION.checked_sub(Duration::from_millis(now_unix_ms().saturating_sub(end))),
        });
        match left {
            Some(left) => remove_later(path, left),
            // Nothing retained: unreadable, a half-written temp file, or old.
            None => {
                let _ = tokio::fs::remove_file(&path).await;
            }
        }
        saved_runs.extend(runs);
    }
    // Oldest first, as the actor remembers them.
    saved_runs.sort_by_key(|s| s.header.ended_at);
    for saved in saved_runs {
        let age = Duration::from_millis(now_unix_ms().saturating_sub(saved.header.ended_at));
        if age > RETENTION {
            continue;
        }
        let id = saved.header.invoke_id.clone();
        let log = EventLog::restore(
            node.bus.clone(),
            node.subjects.invoke_events(&id),
            &node.retention,
            saved.replay,
        );
        let _ = sbx
            .handle
            .ask(Remember {
                invoke_id: id,
                owner: saved.header.owner,
                started_at: saved.header.started_at,
                reason: saved.header.reason,
                age,
                log,
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_record_costs_only_itself() {
        let good = |id: &str| {
            format!(
                "{{\"invokeId\":\"{id}\",\"owner\":\"u\",\"startedAt\":1,\"reason\":\"completed\",\
                 \"endedAt\":2,\"replay\":{{\"events\":[],\"finished\":true,\"firstRetained\":1}}}}"
            )
        };
        let torn = &good("inv-b")[..40];
        let file = format!("\n{}\n{torn}\n{}", good("inv-a"), good("inv-c"));
        let ids: Vec<_> = records(Path::new("7.ndjson"), file.as_bytes())
            .into_iter()
            .map(|s| s.header.invoke_id)
            .collect();
        assert_eq!(ids, ["inv-a", "inv-c"]);
        let old = records(Path::new("inv-a.json"), good("inv-a").as_bytes());
        assert_eq!(
            old.len(),
            1,
            "one-file-per-run records of earlier versions load"
        );
        assert!(records(Path::new("inv-a.json.tmp"), good("inv-a").as_bytes()).is_empty());
    }

    #[test]
    fn a_segment_is_kept_until_the_retention_of_its_last_minute_is_over() {
        let now = now_unix_ms() / SEGMENT_MS;
        let current = segment_left(now);
        assert!(current >= RETENTION && current <= RETENTION + Duration::from_secs(60));
        let previous = segment_left(now - 1);
        assert!(previous > RETENTION - Duration::from_secs(60) && previous <= RETENTION);
        assert_eq!(segment_left(now - 12), Duration::ZERO, "long over");
        assert_eq!(
            segment_left(u64::MAX),
            RETENTION + Duration::from_secs(60),
            "a nonsense name neither overflows nor outlives a real minute"
        );
    }

    #[tokio::test]
    async fn runs_of_one_minute_share_a_segment() {
        let root = tempfile::tempdir().unwrap();
        let journal = Journal::new(&Dirs {
            root: root.path().to_path_buf(),
        });
        let minute = now_unix_ms() / SEGMENT_MS;
        journal
            .append(minute * SEGMENT_MS + 1, b"\n{\"a\":1}")
            .unwrap();
        journal
            .append(minute * SEGMENT_MS + 2, b"\n{\"b\":2}")
            .unwrap();
        journal
            .append((minute + 1) * SEGMENT_MS, b"\n{\"c\":3}")
            .unwrap();
        let first = std::fs::read_to_string(journal.segment_path(minute)).unwrap();
        assert_eq!(first, "\n{\"a\":1}\n{\"b\":2}");
        let next = std::fs::read_to_string(journal.segment_path(minute + 1)).unwrap();
        assert_eq!(next, "\n{\"c\":3}");
    }
}
