//! A one-line progress display on stderr, redrawn with `\r` a few times a
//! second, shown only when stderr is a terminal (so logs and CI stay clean).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counts finished requests; the display (if any) stops when dropped.
pub(crate) struct Progress {
    pub done: Arc<AtomicU64>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// `total` requests, or a run of `duration`, under `label`.
    pub fn start(
        label: String,
        total: Option<u64>,
        duration: Option<Duration>,
        quiet: bool,
    ) -> Self {
        let done = Arc::new(AtomicU64::new(0));
        let task = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let done = done.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let n = done.load(Ordering::Relaxed);
                    let t = start.elapsed().as_secs_f64();
                    let of = match (total, duration) {
                        (Some(total), _) => format!("{n}/{total} {}", bar(n as f64 / total as f64)),
                        (None, Some(d)) => format!("{n} {}", bar(t / d.as_secs_f64())),
                        (None, None) => n.to_string(),
                    };
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "\r\x1b[2K{label}: {of} {t:.1}s");
                    let _ = err.flush();
                }
            })
        });
        Self { done, task }
    }
}

fn bar(fraction: f64) -> String {
    const WIDTH: usize = 24;
    let filled = ((fraction.clamp(0.0, 1.0)) * WIDTH as f64) as usize;
    format!("[{}{}]", "#".repeat(filled), " ".repeat(WIDTH - filled))
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}
