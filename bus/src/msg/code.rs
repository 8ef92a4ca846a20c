//! Code mode (SPEC §2.4): exec runs and the file API.
//!
//! An exec is a run like an invoke: its events (`start`, `log`…, `exit`)
//! are published on `exec.<id>.events` with `seq`, retained for replay, and
//! kept alive by `exec.<id>.attached`. The router either relays them as SSE
//! or collects them into one JSON reply, so no reply ever has to carry the
//! whole output. File bodies travel as acknowledged raw chunks of at most
//! [`super::CHUNK_BYTES`] on `xfer.<id>.upload` (writes) and
//! `xfer.<id>.download` (reads).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::model::Principal;

/// Largest stdin of one exec (the same as an invoke's).
pub const EXEC_MAX_STDIN_BYTES: u64 = 16 * 1024 * 1024;
/// The timeout of an exec that does not ask for one, in seconds.
pub const EXEC_DEFAULT_TIMEOUT_SECS: u64 = 30;
/// The longest timeout an exec may ask for, in seconds.
pub const EXEC_MAX_TIMEOUT_SECS: u64 = 3600;
/// Largest file a `PUT /files/...` may write.
pub const FILE_MAX_BYTES: u64 = 32 * 1024 * 1024;

/// `sbx.<ns>.<name>.exec`: run one command in the sandbox.
///
/// The router picks `execId` and subscribes to `exec.<id>.events` before it
/// sends this. Stdin up to [`super::CHUNK_BYTES`] travels here; the rest
/// follows as acknowledged raw chunks on `exec.<id>.stdin`, exactly like an
/// invoke's stdin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecRequest {
    pub exec_id: String,
    pub caller: Principal,
    /// What to run: a shell string arrives as `["sh", "-c", <string>]`.
    pub argv: Vec<String>,
    pub timeout_ms: u64,
    /// Total stdin length.
    pub stdin_len: u64,
    #[serde(with = "super::b64")]
    pub stdin: Bytes,
}

/// The answer to an accepted [`ExecRequest`]; the `start` event carries the
/// same values (its `invokeId` field holds the exec id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecAccepted {
    pub exec_id: String,
    /// Unix milliseconds.
    pub started_at: u64,
}

/// `sbx.<ns>.<name>.files`: one operation of the file API on `path`, an
/// absolute path as the client sent it (the executor confines it to
/// `/workspace` and answers 400 `invalid_path` otherwise).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FilesRequest {
    pub caller: Principal,
    pub path: String,
    #[serde(flatten)]
    pub op: FilesOp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum FilesOp {
    /// List a directory → `Reply<FileList>`.
    List,
    /// Read a file → `Reply<ReadStart>`; the rest of a larger file is pulled
    /// from `xfer.<transferId>.download`.
    #[serde(rename_all = "camelCase")]
    Read { transfer_id: String },
    /// Write a file of `size` bytes → `Reply<{}>`; the bytes follow as raw
    /// chunks on `xfer.<transferId>.upload`, each answered `Reply<WriteAck>`.
    #[serde(rename_all = "camelCase")]
    Write { transfer_id: String, size: u64 },
    /// Delete a file or an empty directory → `Reply<{}>`.
    Delete,
}

/// One directory entry, in the shape v0.8 clients read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    pub is_dir: bool,
    /// `ls -l` style: `-rw-r--r--`, `drwxr-xr-x`, `lrwxrwxrwx`.
    pub mode: String,
    /// Unix seconds.
    pub modified_at: i64,
}

/// The listing of one directory, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileList {
    /// The directory, normalized (`/workspace/a/b`).
    pub path: String,
    pub entries: Vec<FileEntry>,
    /// More entries exist than fit in one message ([`FileList::MAX_ENTRIES`]).
    #[serde(default)]
    pub truncated: bool,
}

impl FileList {
    /// At most this many entries in one listing (the reply stays far below
    /// the 1 MiB message cap even with 255-byte names).
    pub const MAX_ENTRIES: usize = 2000;
}

/// The answer to a read: the file's size and its first bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadStart {
    /// The file's size when it was opened.
    pub size: u64,
    /// The first bytes, at most [`super::CHUNK_BYTES`].
    #[serde(with = "super::b64")]
    pub data: Bytes,
    /// Whether `data` is the whole file; else pull the rest from
    /// `xfer.<id>.download`.
    pub eof: bool,
}

/// The answer to one upload chunk of a write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteAck {
    /// Bytes received so far.
    pub received: u64,
    /// Set on the last chunk's answer: the file is in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written: Option<FileWritten>,
}

/// A completed write: the HTTP 201 body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileWritten {
    pub path: String,
    pub bytes: u64,
}

/// `sbx.<ns>.<name>.terminal`: open an interactive shell on a PTY.
///
/// The router picks `sessionId` and subscribes to `term.<id>.events` first.
/// The session's output comes as `log` events (raw PTY bytes, every one
/// `partial`), then one `exit`; input, resizes and the close go as
/// [`TerminalInput`] requests on `term.<id>.input`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminalRequest {
    pub session_id: String,
    pub caller: Principal,
    pub cols: u16,
    pub rows: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminalAccepted {
    pub session_id: String,
    /// Unix milliseconds.
    pub started_at: u64,
}

/// `term.<id>.input`: one thing for the session → `Reply<{}>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum TerminalInput {
    /// Bytes typed (UTF-8 text), written to the PTY as they are.
    Input { data: String },
    /// The client's window changed size.
    Resize { cols: u16, rows: u16 },
    /// The client is gone: end the session now.
    Close,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn files_requests_are_flat_and_tagged() {
        let r = FilesRequest {
            caller: Principal {
                sub: "u".into(),
                ..Default::default()
            },
            path: "/workspace/a".into(),
            op: FilesOp::Write {
                transfer_id: "xfer-1".into(),
                size: 3,
            },
        };
        let v = serde_json::to_value(&r).unwrap_or_default();
        assert_eq!(v["op"], "write");
        assert_eq!(v["transferId"], "xfer-1");
        assert_eq!(v["size"], 3);
        assert_eq!(v["path"], "/workspace/a");
        assert_eq!(serde_json::from_value::<FilesRequest>(v).ok(), Some(r));
        let list: FilesRequest = serde_json::from_value(
            json!({"caller": {"sub": "u"}, "path": "/workspace", "op": "list"}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(list.op, FilesOp::List);
    }

    #[test]
    fn entries_have_the_v08_shape() {
        let e = FileEntry {
            name: "a.txt".into(),
            size: 3,
            is_dir: false,
            mode: "-rw-r--r--".into(),
            modified_at: 1_795_000_000,
        };
        assert_eq!(
            serde_json::to_value(&e).unwrap_or_default(),
            json!({"name": "a.txt", "size": 3, "isDir": false, "mode": "-rw-r--r--", "modifiedAt": 1_795_000_000})
        );
    }
}
