//! Finished invokes kept on disk for their retention, so a restarted
//! executor can still replay them (and its actor still knows who may see
//! them).
//!
//! When an invoke ends, its newest retained events (up to 4 MiB of the JSON
//! already published) are written to `<sandbox>/runs/<invokeId>.json` with
//! who started it and how it ended; the file goes when the retention does. On hosting a
//! sandbox the executor reloads the files still within their retention.
//! Runs that were still going when the executor died are not on disk: they
//! died with it, and their clients were told `executor_lost`.

use std::path::PathBuf;
use std::sync::Arc;
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

/// What the file says besides the events.
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

fn runs_dir(dirs: &Dirs) -> PathBuf {
    dirs.root.join("runs")
}

/// Writes the finished run's file (atomically) and removes it when the
/// retention is over.
pub async fn save(dirs: &Dirs, header: Header, log: &EventLog) {
    let dir = runs_dir(dirs);
    let path = dir.join(format!("{}.json", header.invoke_id));
    let mut body = match serde_json::to_vec(&header) {
        Ok(b) => b,
        Err(_) => return,
    };
    // `{...header` + `,"replay":` + the dump + `}`: the events stay as published.
    body.pop();
    body.extend_from_slice(b",\"replay\":");
    body.extend_from_slice(&log.dump(KEPT_BYTES));
    body.push(b'}');
    let target = path.clone();
    let written = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        let tmp = target.with_extension("json.tmp");
        std::fs::write(&tmp, &body)?;
        std::fs::rename(&tmp, &target)
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        tracing::warn!(path = %path.display(), "could not keep a finished run on disk");
        return;
    }
    remove_later(path, RETENTION);
}

fn remove_later(path: PathBuf, after: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        let _ = tokio::fs::remove_file(&path).await;
    });
}

/// Reloads the sandbox's finished runs still within their retention: their
/// replay is served again and the actor remembers them. Older files go.
pub async fn restore(node: &Arc<Node>, sbx: &Arc<Hosted>) {
    let dir = runs_dir(&sbx.dirs);
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
        match serde_json::from_slice::<Saved>(&bytes) {
            Ok(s) if path.extension().is_some_and(|e| e == "json") => saved_runs.push((s, path)),
            // A half-written temp file, or something unreadable.
            _ => {
                let _ = tokio::fs::remove_file(&path).await;
            }
        }
    }
    // Oldest first, as the actor remembers them.
    saved_runs.sort_by_key(|(s, _)| s.header.ended_at);
    for (saved, path) in saved_runs {
        let age = Duration::from_millis(now_unix_ms().saturating_sub(saved.header.ended_at));
        let Some(left) = RETENTION.checked_sub(age) else {
            let _ = tokio::fs::remove_file(&path).await;
            continue;
        };
        let id = saved.header.invoke_id.clone();
        let log = EventLog::restore(
            node.bus.clone(),
            node.subjects.invoke_events(&id),
            &node.retention,
            saved.replay,
        );
        let done = tokio_util::sync::CancellationToken::new();
        done.cancel();
        if let Err(e) = log
            .serve_replay_for(node.subjects.invoke_replay(&id), done, left)
            .await
        {
            tracing::warn!(error = %e, "replay of {id} unavailable after restart");
            continue;
        }
        let _ = sbx
            .handle
            .ask(Remember {
                invoke_id: id,
                owner: saved.header.owner,
                started_at: saved.header.started_at,
                reason: saved.header.reason,
                age,
            })
            .await;
        remove_later(path, left);
    }
}
