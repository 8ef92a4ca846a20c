//! Configure: confine paths to the workspace, receive the uploaded files,
//! put them in place, run the install, report.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use agenttier_bus::msg::{EventKind, FILE_HEADER, FileMeta, LogData, OFFSET_HEADER, UploadAck};
use agenttier_bus::{Bus, Subscription};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::events::EventLog;
use crate::run::{Limits, run};
use crate::runtime::{Runtime, Spec, WORKSPACE};
use crate::state::Dirs;

/// A stalled upload fails after this long without a chunk.
const UPLOAD_IDLE: Duration = Duration::from_secs(30);
const INSTALL_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The path under the workspace for an absolute `/workspace/...` path, or
/// why it is refused. Never touches the filesystem.
pub fn relative_path(path: &str) -> Result<PathBuf, String> {
    if path.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    let rest = path
        .strip_prefix(WORKSPACE)
        .filter(|r| r.starts_with('/'))
        .ok_or_else(|| format!("must be an absolute path inside {WORKSPACE}/"))?;
    let mut rel = PathBuf::new();
    for c in Path::new(rest).components() {
        match c {
            Component::Normal(n) => rel.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err("contains a '..' component".into()),
            Component::Prefix(_) => return Err("is not a POSIX path".into()),
        }
    }
    if rel.as_os_str().is_empty() {
        return Err("names the workspace itself, not a file".into());
    }
    Ok(rel)
}

/// Refuses paths whose existing directories are symlinks or files: writing
/// through them could leave the workspace.
pub fn check_in_workspace(workspace: &Path, rel: &Path) -> Result<(), String> {
    let mut at = workspace.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for (i, c) in parts.iter().enumerate() {
        at.push(c);
        let last = i + 1 == parts.len();
        match std::fs::symlink_metadata(&at) {
            Err(_) => return Ok(()),
            Ok(m) if m.file_type().is_symlink() && !last => {
                return Err(format!(
                    "goes through the symlink {}",
                    shown(workspace, &at)
                ));
            }
            Ok(m) if !last && !m.is_dir() => {
                return Err(format!(
                    "{} is a file, not a directory",
                    shown(workspace, &at)
                ));
            }
            Ok(m) if last && m.is_dir() => return Err("is an existing directory".into()),
            Ok(_) => {}
        }
    }
    Ok(())
}

fn shown(workspace: &Path, p: &Path) -> String {
    Path::new(WORKSPACE)
        .join(p.strip_prefix(workspace).unwrap_or(p))
        .display()
        .to_string()
}

/// Validates every file of a configure; the error names the entry.
pub fn validate_files(workspace: &Path, files: &[FileMeta]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let rel = relative_path(&f.path)
            .and_then(|rel| check_in_workspace(workspace, &rel).map(|_| rel))
            .map_err(|why| format!("files[{i}] ({:?}) {why}", f.path))?;
        if out.contains(&rel) {
            return Err(format!("files[{i}] ({:?}) appears twice", f.path));
        }
        out.push(rel);
    }
    Ok(out)
}

/// Receives every file's chunks into `staging/<index>`; acknowledges each.
pub async fn receive(
    bus: &dyn Bus,
    mut uploads: Subscription,
    files: &[FileMeta],
    staging: &Path,
) -> Result<(), String> {
    tokio::fs::create_dir_all(staging)
        .await
        .map_err(|e| format!("staging: {e}"))?;
    let mut got = vec![0u64; files.len()];
    let mut seen = vec![false; files.len()];
    let mut handles: Vec<Option<tokio::fs::File>> = (0..files.len()).map(|_| None).collect();
    while !seen.iter().all(|s| *s) || got.iter().zip(files).any(|(g, f)| *g < f.size) {
        let msg = match tokio::time::timeout(UPLOAD_IDLE, uploads.next()).await {
            Ok(Some(m)) => m,
            Ok(None) => return Err("upload subscription ended".into()),
            Err(_) => return Err("upload stalled: no data for 30 s".into()),
        };
        let index: usize = msg
            .headers
            .get(FILE_HEADER)
            .and_then(|v| v.parse().ok())
            .unwrap_or(usize::MAX);
        let offset: u64 = msg
            .headers
            .get(OFFSET_HEADER)
            .and_then(|v| v.parse().ok())
            .unwrap_or(u64::MAX);
        let Some(meta) = files.get(index) else {
            return Err(format!("chunk for unknown file index {index}"));
        };
        if offset != got[index] || got[index] + msg.payload.len() as u64 > meta.size {
            return Err(format!(
                "chunk for {} at offset {offset} does not follow {}",
                meta.path, got[index]
            ));
        }
        if handles[index].is_none() {
            let f = tokio::fs::File::create(staging.join(index.to_string()))
                .await
                .map_err(|e| format!("staging {}: {e}", meta.path))?;
            handles[index] = Some(f);
        }
        if let Some(f) = handles[index].as_mut() {
            f.write_all(&msg.payload)
                .await
                .map_err(|e| format!("staging {}: {e}", meta.path))?;
        }
        got[index] += msg.payload.len() as u64;
        seen[index] = true;
        let _ = agenttier_bus::respond_json(
            bus,
            &msg,
            &UploadAck {
                received: got[index],
            },
        )
        .await;
    }
    for f in handles.iter_mut().flatten() {
        f.flush().await.map_err(|e| format!("staging: {e}"))?;
    }
    Ok(())
}

/// Moves staged files into the workspace, re-checking each path just before.
pub fn install_files(
    workspace: &Path,
    staging: &Path,
    files: &[FileMeta],
    rels: &[PathBuf],
) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    for (i, (meta, rel)) in files.iter().zip(rels).enumerate() {
        let bad = |why: String| format!("files[{i}] ({:?}) {why}", meta.path);
        check_in_workspace(workspace, rel).map_err(bad)?;
        let target = workspace.join(rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| bad(e.to_string()))?;
        }
        // The parents were just made from real directories only; check again
        // that nothing swapped one for a symlink in between.
        check_in_workspace(workspace, rel).map_err(bad)?;
        let src = staging.join(i.to_string());
        std::fs::set_permissions(
            &src,
            std::fs::Permissions::from_mode(meta.mode.unwrap_or(0o644) & 0o7777),
        )
        .map_err(|e| bad(e.to_string()))?;
        std::fs::rename(&src, &target).map_err(|e| bad(e.to_string()))?;
    }
    Ok(())
}

/// Runs the install command, streaming its output; returns its exit code
/// (`-1` when it could not run or was stopped) and its output.
pub async fn run_install(
    rt: &Runtime,
    dirs: &Dirs,
    argv: &[String],
    env: &std::collections::BTreeMap<String, String>,
    network: bool,
    cancel: CancellationToken,
    log: &EventLog,
) -> (i32, Option<String>, Vec<u8>) {
    let workspace = dirs.workspace();
    let spec = Spec {
        workspace: &workspace,
        argv,
        env,
        network,
        cwd: WORKSPACE,
    };
    let (_tx, rx) = mpsc::channel(1);
    drop(_tx);
    let limits = Limits {
        timeout: INSTALL_TIMEOUT,
        idle_timeout: None,
        max_output_bytes: 256 * 1024 * 1024,
        cancel,
        abandoned: CancellationToken::new(),
    };
    let out = run(rt, &spec, rx, &limits, log, true).await;
    (out.exit_code, out.message, out.captured)
}

pub async fn say(log: &EventLog, line: String) {
    log.emit(EventKind::Log(LogData {
        stream: "stdout".into(),
        data: line,
        encoding: None,
        partial: false,
    }))
    .await;
}

/// A shell-like rendering of argv for the log line.
pub fn render_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_confined() {
        assert_eq!(
            relative_path("/workspace/agent.py").unwrap(),
            PathBuf::from("agent.py")
        );
        assert_eq!(
            relative_path("/workspace/a/./b").unwrap(),
            PathBuf::from("a/b")
        );
        for bad in [
            "agent.py",
            "/etc/passwd",
            "/workspace",
            "/workspace/",
            "/workspacex/a",
            "/workspace/../etc/passwd",
            "/workspace/a/../../b",
            "/workspace/a\0b",
        ] {
            assert!(relative_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn symlinked_directories_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let ws = d.path().join("ws");
        std::fs::create_dir_all(ws.join("real")).unwrap();
        std::os::unix::fs::symlink("/etc", ws.join("link")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", ws.join("file-link")).unwrap();
        assert!(check_in_workspace(&ws, Path::new("real/a.py")).is_ok());
        assert!(check_in_workspace(&ws, Path::new("new/dir/a.py")).is_ok());
        let e = check_in_workspace(&ws, Path::new("link/passwd")).unwrap_err();
        assert!(e.contains("/workspace/link"), "{e}");
        // A symlink as the last component is replaced, never written through.
        assert!(check_in_workspace(&ws, Path::new("file-link")).is_ok());
        assert!(check_in_workspace(&ws, Path::new("real")).is_err());
    }

    #[test]
    fn argv_renders_like_a_shell() {
        let a = [
            "pip".to_string(),
            "install".into(),
            "-r".into(),
            "/workspace/req s.txt".into(),
        ];
        assert_eq!(render_argv(&a), "pip install -r '/workspace/req s.txt'");
    }
}
