//! The config file `agenttier login` writes: `{"api_url", "api_key"}` (the
//! v0.8 CLI's names), mode 0600, at `$AGENTTIER_CONFIG`, else
//! `$XDG_CONFIG_HOME/agenttier/config.json`, else
//! `~/.config/agenttier/config.json`.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::{Error, Result};

#[derive(Debug, Default, Deserialize)]
pub struct File {
    #[serde(default)]
    pub api_url: Option<String>,
    #[serde(default)]
    pub api_key: Option<String>,
}

/// Where the config file is: `explicit` (the flag or `AGENTTIER_CONFIG`),
/// else the XDG location; `None` without a home directory.
pub fn path(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit.filter(|p| !p.as_os_str().is_empty()) {
        return Some(p.to_path_buf());
    }
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(x) = var("XDG_CONFIG_HOME") {
        return Some(PathBuf::from(x).join("agenttier").join("config.json"));
    }
    var("HOME").map(|h| PathBuf::from(h).join(".config/agenttier/config.json"))
}

/// The file's settings; empty when it does not exist.
pub fn read(path: &Path) -> Result<File> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(File::default()),
        Err(e) => return Err(Error::Failed(format!("reading {}: {e}", path.display()))),
    };
    serde_json::from_str(&text).map_err(|e| {
        Error::Failed(format!(
            "the config file {} is not valid: {e}",
            path.display()
        ))
    })
}

/// Saves `url` and `key` into the file, keeping any other keys it holds.
/// The file is replaced atomically and is never readable by others, not
/// even for a moment.
pub fn save(path: &Path, url: &str, key: &str) -> Result<()> {
    let fail =
        |what: &str, e: std::io::Error| Error::Failed(format!("{what} {}: {e}", path.display()));
    let mut doc = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Map<String, Value>>(&t).ok())
        .unwrap_or_default();
    doc.insert("api_url".into(), Value::String(url.into()));
    doc.insert("api_key".into(), Value::String(key.into()));
    let text = serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n";

    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| fail("creating the directory of", e))?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| fail("writing", e))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| fail("writing", e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail("writing", e)
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn saved_settings_read_back_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/config.json");
        assert!(read(&p).unwrap().api_url.is_none());
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, r#"{"api_url":"http://old","theme":"dark"}"#).unwrap();
        save(&p, "http://h:1", "atk_x").unwrap();
        let f = read(&p).unwrap();
        assert_eq!(f.api_url.as_deref(), Some("http://h:1"));
        assert_eq!(f.api_key.as_deref(), Some("atk_x"));
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let kept: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(kept["theme"], "dark");
    }

    #[test]
    fn explicit_path_wins() {
        assert_eq!(
            path(Some(Path::new("/x/c.json"))),
            Some(PathBuf::from("/x/c.json"))
        );
    }
}
