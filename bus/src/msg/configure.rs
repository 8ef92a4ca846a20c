use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::Principal;

/// One file of a configure, without its bytes (they follow as chunks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileMeta {
    /// As the client sent it (validated by the actor).
    pub path: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

/// `sbx.<ns>.<name>.configure`: the manifest of a configure.
///
/// If accepted, the router sends every file's bytes as raw chunks on
/// `cfg.<id>.upload` (headers [`super::FILE_HEADER`], [`super::OFFSET_HEADER`]),
/// each acknowledged, and follows `cfg.<id>.events`, which ends with `result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigureRequest {
    pub configure_id: String,
    pub caller: Principal,
    pub files: Vec<FileMeta>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// [`configure_hash`] of the request as the client sent it.
    pub hash: String,
}

/// The configure limits (SPEC §2.3); beyond them is 413, decided by the
/// sandbox's actor in check order (after mode and phase).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigureLimits {
    pub files: usize,
    pub file_bytes: u64,
    pub total_bytes: u64,
}

pub const CONFIGURE_LIMITS: ConfigureLimits = ConfigureLimits {
    files: 200,
    file_bytes: 32 * 1024 * 1024,
    total_bytes: 128 * 1024 * 1024,
};

impl ConfigureLimits {
    /// Why `files` is too large, if it is.
    pub fn check(&self, files: &[FileMeta]) -> Result<(), String> {
        if files.len() > self.files {
            return Err(format!(
                "{} files; at most {} per configure",
                files.len(),
                self.files
            ));
        }
        let mut total = 0u64;
        for (i, f) in files.iter().enumerate() {
            if f.size > self.file_bytes {
                return Err(format!(
                    "files[{i}] ({:?}) is {} bytes; at most {} per file",
                    f.path, f.size, self.file_bytes
                ));
            }
            total += f.size;
        }
        if total > self.total_bytes {
            return Err(format!(
                "the files add up to {total} bytes; at most {}",
                self.total_bytes
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigureAccepted {
    /// Same hash as the last successful configure: nothing to upload or run;
    /// the `result` event follows at once.
    pub skipped: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadAck {
    pub received: u64,
}

/// `installCommandHash` (SPEC §2.3): SHA-256 over each install argument
/// followed by 0x00, then the files sorted by path, each `path 0x00 body 0x00`,
/// where body is the `contentBase64` text when given, else `content`.
pub fn configure_hash<'a>(
    install: &[String],
    files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> String {
    let mut h = Sha256::new();
    for arg in install {
        h.update(arg.as_bytes());
        h.update([0u8]);
    }
    let mut files: Vec<_> = files.into_iter().collect();
    files.sort_by(|a, b| a.0.cmp(b.0));
    for (path, body) in files {
        h.update(path.as_bytes());
        h.update([0u8]);
        h.update(body);
        h.update([0u8]);
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metas(sizes: &[u64]) -> Vec<FileMeta> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, s)| FileMeta {
                path: format!("/workspace/{i}"),
                size: *s,
                mode: None,
            })
            .collect()
    }

    #[test]
    fn limits_count_files_sizes_and_total() {
        let small = ConfigureLimits {
            files: 3,
            file_bytes: 8,
            total_bytes: 12,
        };
        assert!(small.check(&metas(&[0, 0, 0, 0])).is_err());
        assert!(small.check(&metas(&[0, 0, 0])).is_ok());
        let e = small.check(&metas(&[1, 9])).unwrap_err();
        assert!(e.starts_with("files[1] (\"/workspace/1\")"), "{e}");
        assert!(small.check(&metas(&[8])).is_ok());
        assert!(small.check(&metas(&[8, 5])).is_err());
        assert!(small.check(&metas(&[8, 4])).is_ok());
        assert_eq!(CONFIGURE_LIMITS.files, 200);
    }

    #[test]
    fn hash_is_order_independent_and_separated() {
        let a = configure_hash(
            &["pip".into(), "install".into()],
            [("/workspace/b", &b"2"[..]), ("/workspace/a", &b"1"[..])],
        );
        let b = configure_hash(
            &["pip".into(), "install".into()],
            [("/workspace/a", &b"1"[..]), ("/workspace/b", &b"2"[..])],
        );
        assert_eq!(a, b);
        // Separators matter: moving a byte across the boundary changes the hash.
        let c = configure_hash(&["pipinstall".into()], [("/workspace/a", &b"1"[..])]);
        let d = configure_hash(
            &["pip".into(), "install".into()],
            [("/workspace/a", &b"1"[..])],
        );
        assert_ne!(c, d);
        assert_eq!(a.len(), 64);
        // The empty configure hashes the empty input.
        assert_eq!(
            configure_hash(&[], []),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
