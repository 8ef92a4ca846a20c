//! The filesystem side of the file API: every operation confined to one
//! sandbox's workspace, race-free.
//!
//! Paths are checked as configure checks them ([`relative_path`]: absolute,
//! under `/workspace`, no `..`, no NUL) and then resolved by the kernel
//! relative to an open descriptor of the workspace with `openat2`
//! (`RESOLVE_BENEATH`), so a symlink can never lead out of it — not even one
//! a sandbox process swaps in between a check and a use. Reads, listings and
//! deletes follow symlinks that stay inside the workspace; writes, like
//! configure, refuse any symlinked directory on the way and replace (never
//! write through) a symlink in the last place. Everything here is blocking:
//! callers run it on a blocking thread.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use agenttier_bus::msg::{FileEntry, FileList, FileWritten, Rejection};
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::configure::relative_path;
use crate::runtime::WORKSPACE;

/// Why a file operation failed, in the API's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// 400 `invalid_path`: the message names the path.
    Invalid(String),
    /// 404 `file_not_found`.
    NotFound(String),
    /// 409 `directory_not_empty`.
    NotEmpty(String),
    /// 500 `file_error`: the filesystem failed (disk full, ...).
    Io(String),
}

impl From<Error> for Rejection {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid(m) => Rejection::new(400, "invalid_path").message(m),
            Error::NotFound(m) => Rejection::new(404, "file_not_found").message(m),
            Error::NotEmpty(m) => Rejection::new(409, "directory_not_empty").message(m),
            Error::Io(m) => Rejection::new(500, "file_error").message(m),
        }
    }
}

/// A path the client named, validated: `rel` is relative to the workspace
/// (empty for the workspace itself), `shown` the normalized absolute form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub rel: PathBuf,
    pub shown: String,
}

impl Target {
    /// Validates `path`; `allow_root` admits `/workspace` itself (listing).
    pub fn parse(path: &str, allow_root: bool) -> Result<Self, Error> {
        if path.trim_end_matches('/') == WORKSPACE {
            return if allow_root {
                Ok(Self {
                    rel: PathBuf::new(),
                    shown: WORKSPACE.into(),
                })
            } else {
                Err(Error::Invalid(format!(
                    "{path:?} names the workspace itself, not a file"
                )))
            };
        }
        let rel = relative_path(path).map_err(|why| Error::Invalid(format!("{path:?} {why}")))?;
        Ok(Self {
            shown: Path::new(WORKSPACE).join(&rel).display().to_string(),
            rel,
        })
    }

    fn name(&self) -> &OsStr {
        self.rel.file_name().unwrap_or_default()
    }

    fn parent(&self) -> &Path {
        self.rel.parent().unwrap_or(Path::new(""))
    }
}

fn shown(rel: &Path) -> String {
    Path::new(WORKSPACE).join(rel).display().to_string()
}

/// The error for `errno` met while resolving `rel` (shown in the message).
fn resolve_error(e: Errno, rel: &Path) -> Error {
    let p = shown(rel);
    match e {
        Errno::ENOENT => Error::NotFound(format!("no such file or directory: {p}")),
        Errno::EXDEV => Error::Invalid(format!(
            "{p:?} leads outside {WORKSPACE} (through a symlink)"
        )),
        Errno::ELOOP => Error::Invalid(format!(
            "{p:?} goes through a symlink, which is not followed here"
        )),
        Errno::ENOTDIR => Error::Invalid(format!("{p:?}: a part of it is a file, not a directory")),
        Errno::EISDIR => Error::Invalid(format!("{p:?} is a directory")),
        Errno::EACCES | Errno::EPERM => Error::Invalid(format!("{p:?}: permission denied")),
        other => Error::Io(format!("{p}: {}", other.desc())),
    }
}

fn io_error(e: Errno, what: &str) -> Error {
    Error::Io(format!("{what}: {}", e.desc()))
}

/// An open workspace directory, the root of every resolution.
pub struct Workspace {
    dir: OwnedFd,
}

impl Workspace {
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let f = File::open(dir).map_err(|e| Error::Io(format!("workspace: {e}")))?;
        Ok(Self { dir: f.into() })
    }

    /// Opens `rel` beneath the workspace, following only symlinks that
    /// stay inside it.
    fn open_beneath(&self, rel: &Path, flags: OFlag) -> Result<OwnedFd, Error> {
        let path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        openat2(self.dir.as_fd(), path, how).map_err(|e| resolve_error(e, rel))
    }

    /// Opens (and with `create`, makes) each directory of `rel` in turn,
    /// refusing symlinks and files on the way, as configure does.
    fn walk_strict(&self, rel: &Path, create: bool) -> Result<OwnedFd, Error> {
        let mut cur = self
            .dir
            .try_clone()
            .map_err(|e| Error::Io(format!("workspace: {e}")))?;
        let mut at = PathBuf::new();
        for c in rel.components() {
            let Component::Normal(name) = c else {
                return Err(Error::Invalid(format!(
                    "{:?} is not a plain path",
                    shown(rel)
                )));
            };
            at.push(name);
            if create {
                match mkdirat(cur.as_fd(), name, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(resolve_error(e, &at)),
                }
            }
            let how = OpenHow::new()
                .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
                .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
            cur = openat2(cur.as_fd(), name, how).map_err(|e| match e {
                Errno::ENOTDIR => {
                    Error::Invalid(format!("{} is a file, not a directory", shown(&at)))
                }
                Errno::ELOOP => Error::Invalid(format!("goes through the symlink {}", shown(&at))),
                other => resolve_error(other, &at),
            })?;
        }
        Ok(cur)
    }

    /// The entries of the directory `t`, sorted by name.
    pub fn list(&self, t: &Target) -> Result<FileList, Error> {
        let fd = self.open_beneath(&t.rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        let mut dir = nix::dir::Dir::from_fd(fd).map_err(|e| io_error(e, &t.shown))?;
        let mut names: Vec<Vec<u8>> = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(|e| io_error(e, &t.shown))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(name.to_vec());
            }
        }
        names.sort();
        let truncated = names.len() > FileList::MAX_ENTRIES;
        names.truncate(FileList::MAX_ENTRIES);
        let mut entries = Vec::with_capacity(names.len());
        for name in names {
            let name = OsStr::from_bytes(&name);
            // Gone since the listing: skip it, as `ls` does.
            let Ok(st) = fstatat(dir.as_fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            else {
                continue;
            };
            entries.push(entry(name, &st));
        }
        Ok(FileList {
            path: t.shown.clone(),
            entries,
            truncated,
        })
    }

    /// Opens the regular file `t` for reading; returns it and its size.
    pub fn open_read(&self, t: &Target) -> Result<(File, u64), Error> {
        // O_NONBLOCK: opening a FIFO planted in the workspace must not hang.
        let fd = self.open_beneath(&t.rel, OFlag::O_RDONLY | OFlag::O_NONBLOCK)?;
        let st = fstat(fd.as_fd()).map_err(|e| io_error(e, &t.shown))?;
        match file_type(&st) {
            SFlag::S_IFREG => Ok((File::from(fd), st.st_size.max(0) as u64)),
            SFlag::S_IFDIR => Err(Error::Invalid(format!(
                "{:?} is a directory; list it with GET /files/?path={}",
                t.shown, t.shown
            ))),
            _ => Err(Error::Invalid(format!(
                "{:?} is not a regular file",
                t.shown
            ))),
        }
    }

    /// Checks, before any upload, that `t` could be written (the commit
    /// checks again, race-free).
    pub fn check_write(&self, root: &Path, t: &Target) -> Result<(), Error> {
        crate::configure::check_in_workspace(root, &t.rel)
            .map_err(|why| Error::Invalid(format!("{:?} {why}", t.shown)))
    }

    /// Moves the staged file `staged` (a file in the directory `staging`)
    /// into place at `t`, making parent directories. Replacing a file keeps
    /// its permissions; a new file is `0644`.
    pub fn commit(
        &self,
        t: &Target,
        staging: &Path,
        staged: &str,
        bytes: u64,
    ) -> Result<FileWritten, Error> {
        let parent = self.walk_strict(t.parent(), true)?;
        let mode = match fstatat(
            parent.as_fd(),
            t.name(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) if file_type(&st) == SFlag::S_IFDIR => {
                return Err(Error::Invalid(format!(
                    "{:?} is an existing directory",
                    t.shown
                )));
            }
            Ok(st) if file_type(&st) == SFlag::S_IFREG => st.st_mode & 0o7777,
            _ => 0o644,
        };
        let staging_dir = File::open(staging).map_err(|e| Error::Io(format!("staging: {e}")))?;
        let staged_file =
            File::open(staging.join(staged)).map_err(|e| Error::Io(format!("staging: {e}")))?;
        fchmod(staged_file.as_fd(), Mode::from_bits_truncate(mode))
            .map_err(|e| io_error(e, "staging"))?;
        renameat(staging_dir.as_fd(), staged, parent.as_fd(), t.name())
            .map_err(|e| resolve_error(e, &t.rel))?;
        Ok(FileWritten {
            path: t.shown.clone(),
            bytes,
        })
    }

    /// Deletes the file (or symlink, or empty directory) `t`.
    pub fn delete(&self, t: &Target) -> Result<(), Error> {
        if t.rel.as_os_str().is_empty() {
            return Err(Error::Invalid(
                "the workspace itself cannot be deleted".into(),
            ));
        }
        let parent = self.open_beneath(t.parent(), OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        let st = fstatat(
            parent.as_fd(),
            t.name(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| resolve_error(e, &t.rel))?;
        let flag = if file_type(&st) == SFlag::S_IFDIR {
            UnlinkatFlags::RemoveDir
        } else {
            UnlinkatFlags::NoRemoveDir
        };
        unlinkat(parent.as_fd(), t.name(), flag).map_err(|e| match e {
            Errno::ENOTEMPTY | Errno::EEXIST => {
                Error::NotEmpty(format!("{:?} is a directory that is not empty", t.shown))
            }
            other => resolve_error(other, &t.rel),
        })
    }
}

fn file_type(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

fn entry(name: &OsStr, st: &FileStat) -> FileEntry {
    FileEntry {
        name: name.to_string_lossy().into_owned(),
        size: st.st_size.max(0) as u64,
        is_dir: file_type(st) == SFlag::S_IFDIR,
        mode: mode_string(st.st_mode),
        modified_at: st.st_mtime,
    }
}

/// `st_mode` as `ls -l` prints it: `-rw-r--r--`, `drwxr-sr-x`, `-rwsr-xr-T`.
pub fn mode_string(mode: u32) -> String {
    let kind = match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFDIR => 'd',
        SFlag::S_IFLNK => 'l',
        SFlag::S_IFCHR => 'c',
        SFlag::S_IFBLK => 'b',
        SFlag::S_IFIFO => 'p',
        SFlag::S_IFSOCK => 's',
        _ => '-',
    };
    let mut s = String::with_capacity(10);
    s.push(kind);
    // (read, write, exec, special bit, letter when exec, letter when not)
    for (shift, special, set, unset) in [
        (6, 0o4000, 's', 'S'),
        (3, 0o2000, 's', 'S'),
        (0, 0o1000, 't', 'T'),
    ] {
        let bits = (mode >> shift) & 0o7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let exec = bits & 1 != 0;
        s.push(match (mode & special != 0, exec) {
            (true, true) => set,
            (true, false) => unset,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn ws() -> (tempfile::TempDir, PathBuf, Workspace) {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = d.path().join("workspace");
        std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("{e}"));
        let w = Workspace::open(&root).unwrap_or_else(|e| panic!("{e:?}"));
        (d, root, w)
    }

    fn t(p: &str) -> Target {
        Target::parse(p, true).unwrap_or_else(|e| panic!("{p}: {e:?}"))
    }

    fn invalid(r: Result<impl std::fmt::Debug, Error>) -> String {
        match r {
            Err(Error::Invalid(m)) => m,
            other => panic!("expected 400, got {other:?}"),
        }
    }

    /// Stages `data` under `dir/staging` and commits it to `path`.
    fn write(dir: &Path, w: &Workspace, path: &str, data: &[u8]) -> Result<FileWritten, Error> {
        let staging = dir.join("staging");
        std::fs::create_dir_all(&staging).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(staging.join("data"), data).unwrap_or_else(|e| panic!("{e}"));
        w.commit(&t(path), &staging, "data", data.len() as u64)
    }

    #[test]
    fn paths_are_confined_like_configure() {
        assert_eq!(t("/workspace/").rel, PathBuf::new());
        assert_eq!(t("/workspace/a/./b").shown, "/workspace/a/b");
        for bad in [
            "/etc/passwd",
            "/workspace/../etc",
            "/workspace/a/../../b",
            "workspace/a",
            "/workspacex",
            "/workspace/a\0",
        ] {
            assert!(Target::parse(bad, true).is_err(), "{bad:?} accepted");
        }
        assert!(Target::parse("/workspace", false).is_err());
    }

    #[test]
    fn write_read_list_delete() {
        let (d, root, w) = ws();
        let got = write(d.path(), &w, "/workspace/a/b/c.txt", b"hello")
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((got.path.as_str(), got.bytes), ("/workspace/a/b/c.txt", 5));
        assert_eq!(
            std::fs::read(root.join("a/b/c.txt")).ok(),
            Some(b"hello".to_vec())
        );
        let (mut f, size) = w
            .open_read(&t("/workspace/a/b/c.txt"))
            .unwrap_or_else(|e| panic!("{e:?}"));
        let mut s = String::new();
        std::io::Read::read_to_string(&mut f, &mut s).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((s.as_str(), size), ("hello", 5));
        let l = w
            .list(&t("/workspace/a"))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(l.entries.len(), 1);
        assert_eq!(l.entries[0].name, "b");
        assert!(l.entries[0].is_dir);
        assert!(l.entries[0].mode.starts_with('d'), "{:?}", l.entries[0]);
        let l = w
            .list(&t("/workspace/a/b"))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(l.entries[0].mode, "-rw-r--r--");
        assert!(l.entries[0].modified_at > 1_600_000_000);
        assert_eq!(
            w.delete(&t("/workspace/a/b")),
            Err(Error::NotEmpty(
                "\"/workspace/a/b\" is a directory that is not empty".into()
            ))
        );
        assert_eq!(w.delete(&t("/workspace/a/b/c.txt")), Ok(()));
        assert!(matches!(
            w.delete(&t("/workspace/a/b/c.txt")),
            Err(Error::NotFound(_))
        ));
        assert_eq!(w.delete(&t("/workspace/a/b")), Ok(()));
        assert!(matches!(
            w.open_read(&t("/workspace/nope")),
            Err(Error::NotFound(_))
        ));
        invalid(w.delete(&t("/workspace")));
    }

    #[test]
    fn replacing_a_file_keeps_its_mode() {
        let (d, root, w) = ws();
        std::fs::write(root.join("run.sh"), "old").unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("{e}"));
        write(d.path(), &w, "/workspace/run.sh", b"new").unwrap_or_else(|e| panic!("{e:?}"));
        let meta = std::fs::metadata(root.join("run.sh")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
    }

    #[test]
    fn symlinks_never_lead_out() {
        let (d, root, w) = ws();
        let outside = d.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(outside.join("secret"), "s").unwrap_or_else(|e| panic!("{e}"));
        symlink(&outside, root.join("out")).unwrap_or_else(|e| panic!("{e}"));
        symlink(outside.join("secret"), root.join("secret-link")).unwrap_or_else(|e| panic!("{e}"));
        symlink("../outside/secret", root.join("rel-link")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(root.join("in")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(root.join("in/ok.txt"), "ok").unwrap_or_else(|e| panic!("{e}"));
        symlink("in/ok.txt", root.join("inside-link")).unwrap_or_else(|e| panic!("{e}"));
        symlink("in", root.join("in-dir-link")).unwrap_or_else(|e| panic!("{e}"));

        for p in [
            "/workspace/out/secret",
            "/workspace/secret-link",
            "/workspace/rel-link",
        ] {
            let m = invalid(w.open_read(&t(p)));
            assert!(m.contains("outside /workspace"), "{p}: {m}");
        }
        invalid(w.list(&t("/workspace/out")));
        invalid(w.delete(&t("/workspace/out/secret")));
        let m = invalid(write(d.path(), &w, "/workspace/out/new", b"x"));
        assert!(m.contains("/workspace/out"), "{m}");
        assert!(!outside.join("new").exists());
        // A symlink in the last place is replaced, never written through.
        write(d.path(), &w, "/workspace/secret-link", b"mine").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            std::fs::read_to_string(outside.join("secret"))
                .ok()
                .as_deref(),
            Some("s")
        );
        assert!(
            !std::fs::symlink_metadata(root.join("secret-link"))
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(true)
        );
        // Inside the workspace, symlinks are followed for reads and listings.
        assert!(w.open_read(&t("/workspace/inside-link")).is_ok());
        assert_eq!(
            w.list(&t("/workspace/in-dir-link"))
                .map(|l| l.entries.len())
                .ok(),
            Some(1)
        );
        // Deleting a symlink removes the link, not its target.
        assert_eq!(w.delete(&t("/workspace/out")), Ok(()));
        assert!(outside.join("secret").exists());
    }

    #[test]
    fn directories_and_fifos_are_not_read() {
        let (_d, root, w) = ws();
        std::fs::create_dir_all(root.join("dir")).unwrap_or_else(|e| panic!("{e}"));
        let m = invalid(w.open_read(&t("/workspace/dir")));
        assert!(m.contains("is a directory"), "{m}");
        let ok = std::process::Command::new("mkfifo")
            .arg(root.join("fifo"))
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            invalid(w.open_read(&t("/workspace/fifo")));
        }
        std::fs::write(root.join("file"), "x").unwrap_or_else(|e| panic!("{e}"));
        invalid(w.list(&t("/workspace/file")));
    }

    #[test]
    fn modes_print_like_ls() {
        assert_eq!(mode_string(0o100644), "-rw-r--r--");
        assert_eq!(mode_string(0o040755), "drwxr-xr-x");
        assert_eq!(mode_string(0o120777), "lrwxrwxrwx");
        assert_eq!(mode_string(0o104755), "-rwsr-xr-x");
        assert_eq!(mode_string(0o102644), "-rw-r-Sr--");
        assert_eq!(mode_string(0o041777), "drwxrwxrwt");
        assert_eq!(mode_string(0o010600), "prw-------");
    }
}
