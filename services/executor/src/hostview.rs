//! What of the host a sandbox sees: system directories read-only, and
//! nothing else of the host's files.
//!
//! A sandboxed process runs as uid 1000 in a user namespace that maps it to
//! the executor's own uid, so whatever file it can see, it can read as that
//! user. The view is therefore an allow-list: the OS (`/usr`, `/etc`, `/opt`
//! and the `/bin`-style links), the directories on the executor's `PATH`
//! (so `python` resolves as on the host), and what the operator adds; host
//! secrets under `/etc` are masked.

use std::path::{Path, PathBuf};

/// Top-level directories every sandbox gets, read-only, when they exist.
const SYSTEM_DIRS: &[&str] = &["/usr", "/etc", "/opt"];
/// Top-level entries that are links into `/usr` on merged-usr systems.
const SYSTEM_LINKS: &[&str] = &["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];
/// Host files and directories a sandbox must never read.
const MASKED: &[&str] = &[
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/ssh",
    "/etc/ssl/private",
];

/// bwrap arguments recreating the view; `path` is the executor's `PATH`,
/// `extra` the operator's additional read-only directories, `hidden` host
/// directories (the executor's data) covered by an empty tmpfs when the view
/// would otherwise show them.
pub fn args(path: &str, extra: &[PathBuf], hidden: &[PathBuf]) -> Vec<String> {
    let mut a = Vec::new();
    for link in SYSTEM_LINKS {
        match std::fs::symlink_metadata(link) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(link) {
                    a.extend([
                        "--symlink".into(),
                        target.display().to_string(),
                        link.to_string(),
                    ]);
                }
            }
            Ok(m) if m.is_dir() => ro_bind(&mut a, Path::new(link)),
            _ => {}
        }
    }
    let mut dirs: Vec<PathBuf> = SYSTEM_DIRS.iter().map(PathBuf::from).collect();
    dirs.extend(path_roots(path));
    dirs.extend(extra.iter().cloned());
    dirs.sort();
    dirs.dedup();
    // A directory inside another one already bound needs no bind of its own.
    let mut bound: Vec<PathBuf> = Vec::new();
    for d in dirs {
        if d.is_dir() && !bound.iter().any(|b| d.starts_with(b)) {
            ro_bind(&mut a, &d);
            bound.push(d);
        }
    }
    for h in hidden
        .iter()
        .filter(|h| bound.iter().any(|b| h.starts_with(b)))
    {
        a.extend(["--tmpfs".into(), h.display().to_string()]);
    }
    for m in MASKED {
        let p = Path::new(m);
        match std::fs::symlink_metadata(p) {
            Ok(meta) if meta.is_dir() => a.extend(["--tmpfs".into(), m.to_string()]),
            Ok(_) => a.extend(["--ro-bind".into(), "/dev/null".into(), m.to_string()]),
            Err(_) => {}
        }
    }
    a
}

fn ro_bind(a: &mut Vec<String>, p: &Path) {
    let s = p.display().to_string();
    a.extend(["--ro-bind".into(), s.clone(), s]);
}

/// The directories `PATH` entries need: the entry itself, or for tool
/// managers that put shims or `bin` inside their own tree (pyenv, cargo,
/// nvm, a virtualenv), that tree, since the shims run code from it.
fn path_roots(path: &str) -> Vec<PathBuf> {
    path.split(':')
        .filter(|e| e.starts_with('/'))
        .map(PathBuf::from)
        .filter(|p| !["/usr", "/bin", "/sbin"].iter().any(|s| p.starts_with(s)))
        .map(|p| match p.file_name().and_then(|n| n.to_str()) {
            Some("shims" | "bin") => {
                let parent = p.parent().map(Path::to_path_buf).unwrap_or(p.clone());
                // Stop at the tool's root, never a whole home or `/`.
                if parent
                    .parent()
                    .is_some_and(|g| g == Path::new("/") || g == Path::new("/home"))
                {
                    p
                } else {
                    tool_root(&parent)
                }
            }
            _ => p,
        })
        .collect()
}

/// `~/.pyenv/plugins/x` belongs to `~/.pyenv`: climb while the parent is a
/// plugin or version directory of the same tool.
fn tool_root(dir: &Path) -> PathBuf {
    let mut d = dir.to_path_buf();
    while let Some(parent) = d.parent() {
        let name = parent.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if matches!(name, "plugins" | "versions") {
            match parent.parent() {
                Some(root) => d = root.to_path_buf(),
                None => break,
            }
        } else {
            break;
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_entries_bring_their_tool_trees() {
        let roots = path_roots(
            "/root/.cargo/bin:/root/.pyenv/plugins/pyenv-virtualenv/shims:/root/.pyenv/shims:\
             /root/.pyenv/bin:/usr/local/bin:/usr/bin:/bin:/opt/tool/bin:relative",
        );
        assert_eq!(
            roots,
            [
                "/root/.cargo",
                "/root/.pyenv",
                "/root/.pyenv",
                "/root/.pyenv",
                "/opt/tool"
            ]
            .map(PathBuf::from)
        );
        // A bin directly in a home is bound alone, never the whole home.
        assert_eq!(path_roots("/home/bin"), [PathBuf::from("/home/bin")]);
        assert_eq!(
            path_roots("/home/alice/bin"),
            [PathBuf::from("/home/alice/bin")]
        );
    }

    #[test]
    fn secrets_are_masked_and_the_host_is_not_bound_whole() {
        let a = args(
            "/usr/bin",
            &[],
            &[PathBuf::from("/opt/data"), PathBuf::from("/srv/data")],
        )
        .join(" ");
        assert!(a.contains("--tmpfs /opt/data"), "{a}");
        assert!(
            !a.contains("/srv/data"),
            "not in the view, nothing to hide: {a}"
        );
        assert!(a.contains("--ro-bind /usr /usr"), "{a}");
        assert!(!a.contains("--ro-bind / /"), "{a}");
        if Path::new("/etc/shadow").exists() {
            assert!(a.contains("--ro-bind /dev/null /etc/shadow"), "{a}");
        }
    }
}
