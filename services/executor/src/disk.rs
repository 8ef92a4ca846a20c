//! How much a workspace holds on disk, for the workspace quota.
//!
//! There is no filesystem quota to lean on here (no project quotas, no
//! loop devices without privileges), so the run watchdog measures the
//! workspace while runs are going and stops a run that took it past the
//! limit, or adds to it while it is past it (`disk_limit`). Measuring walks
//! the tree: O(files), twice a second per sandbox at most, shared by its
//! concurrent runs.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How old a shared measurement of a workspace may be.
pub const MAX_AGE: Duration = Duration::from_millis(500);

/// Bytes allocated on disk under `dir` (files, directories, symlinks
/// themselves; never following a link), counted in 512-byte blocks as `du`
/// does. Entries that vanish while walking are skipped.
pub fn usage(dir: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            total += meta.blocks() * 512;
            if meta.is_dir() {
                pending.push(e.path());
            }
        }
    }
    total
}

/// Recent measurements by workspace, so concurrent runs of one sandbox walk
/// it once. A workspace found over `quota` is remembered until it is
/// measured again (a run on it starts from that figure: one that only
/// removes files is not adding to it).
#[derive(Debug)]
pub struct Meter {
    quota: u64,
    last: Mutex<HashMap<PathBuf, (Instant, u64)>>,
}

impl Meter {
    pub fn new(quota: u64) -> Self {
        Self {
            quota,
            last: Mutex::default(),
        }
    }

    /// The last measurement of the workspace, if any is remembered (no walk).
    pub fn known(&self, dir: &Path) -> Option<u64> {
        self.lock().get(dir).map(|(_, n)| *n)
    }

    /// The workspace's usage, measured at most [`MAX_AGE`] ago and not
    /// before `since` (a run is judged on what it could have changed).
    pub fn usage(&self, dir: &Path, since: Instant) -> u64 {
        if let Some((at, n)) = self.lock().get(dir)
            && at.elapsed() < MAX_AGE
            && *at >= since
        {
            return *n;
        }
        let n = usage(dir);
        let mut last = self.lock();
        last.retain(|_, (at, n)| at.elapsed() < MAX_AGE * 60 || *n > self.quota);
        last.insert(dir.to_path_buf(), (Instant::now(), n));
        n
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, (Instant, u64)>> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_nested_files_and_not_what_links_point_at() {
        let dir = tempfile::tempdir().unwrap();
        let big = tempfile::tempdir().unwrap();
        std::fs::write(big.path().join("elsewhere"), vec![1u8; 4 << 20]).unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/one"), vec![1u8; 1 << 20]).unwrap();
        std::fs::write(dir.path().join("two"), vec![1u8; 1 << 20]).unwrap();
        std::os::unix::fs::symlink(big.path(), dir.path().join("link")).unwrap();
        let n = usage(dir.path());
        assert!((2 << 20..3 << 20).contains(&n), "{n}");
        let meter = Meter::new(u64::MAX);
        let start = Instant::now();
        assert_eq!(meter.usage(dir.path(), start), n);
        std::fs::write(dir.path().join("three"), vec![1u8; 1 << 20]).unwrap();
        assert_eq!(
            meter.usage(dir.path(), start),
            n,
            "a fresh measurement is reused"
        );
        assert!(
            meter.usage(dir.path(), Instant::now()) > n,
            "but not one older than the run asking"
        );
    }

    #[test]
    fn a_workspace_over_the_quota_is_remembered_one_under_it_for_a_while() {
        let over = tempfile::tempdir().unwrap();
        let under = tempfile::tempdir().unwrap();
        std::fs::write(over.path().join("big"), vec![1u8; 1 << 20]).unwrap();
        let meter = Meter::new(512 * 1024);
        let now = Instant::now();
        assert_eq!(meter.known(over.path()), None);
        let big = meter.usage(over.path(), now);
        let small = meter.usage(under.path(), now);
        assert_eq!(meter.known(over.path()), Some(big));
        assert_eq!(meter.known(under.path()), Some(small));
        // Both measured long ago: only the one over the quota is kept.
        let long_ago = Instant::now().checked_sub(MAX_AGE * 61);
        if let Some(at) = long_ago {
            for (_, (t, _)) in meter.lock().iter_mut() {
                *t = at;
            }
            let third = tempfile::tempdir().unwrap();
            meter.usage(third.path(), now);
            assert_eq!(meter.known(over.path()), Some(big));
            assert_eq!(meter.known(under.path()), None);
        }
    }
}
