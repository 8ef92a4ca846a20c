//! Samples, errors by kind, and percentiles over a sorted `Vec` (exact,
//! nearest rank; the runs here are small enough not to need a histogram).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One request that passed every check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// From sending the request to its answer being complete (for an
    /// invoke: the `exit` event; for cancel: from the cancel request).
    pub latency: Duration,
    /// From sending to the first byte of the answer's body (invoke: the
    /// first event), when that means something for the scenario.
    pub ttfb: Option<Duration>,
}

impl Sample {
    pub fn new(latency: Duration) -> Self {
        Self {
            latency,
            ttfb: None,
        }
    }

    /// The same sample, started `by` earlier (open loop: time spent
    /// waiting for a slot counts).
    pub fn delayed(self, by: Duration) -> Self {
        Self {
            latency: self.latency + by,
            ttfb: self.ttfb.map(|t| t + by),
        }
    }
}

/// Why a request did not count as a success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// An HTTP status other than the one expected.
    Http(u16),
    /// Connect, reset, or a body that broke off.
    Transport,
    /// No answer within `--request-timeout`.
    Timeout,
    /// The stream ended without an `exit` event.
    MissingExit,
    /// More than one `exit`.
    DuplicateExit,
    /// Events after the `exit`.
    AfterExit,
    /// The first event was not `start`.
    MissingStart,
    /// `exit` with another reason or exit code than the scenario expects.
    WrongExit,
    /// Output (lines, bytes, digest, echoed body) not what was written.
    WrongOutput,
    /// `id:` not 1, 2, 3, ... without holes.
    Sequence,
    /// A `gap` event: the server lost events.
    Gap,
    /// An event or body that does not parse.
    BadEvent,
    /// A failure outside the server (a floor's spawn failed, ...).
    Local,
}

impl ErrorKind {
    /// The key errors are counted under (`http_429`, `missing_exit`, ...).
    pub fn key(&self) -> String {
        match self {
            ErrorKind::Http(s) => format!("http_{s}"),
            other => {
                let s = format!("{other:?}");
                let mut out = String::new();
                for (i, c) in s.chars().enumerate() {
                    if c.is_uppercase() && i > 0 {
                        out.push('_');
                    }
                    out.push(c.to_ascii_lowercase());
                }
                out
            }
        }
    }

    pub fn from_reqwest(e: &reqwest::Error) -> Self {
        if e.is_timeout() {
            ErrorKind::Timeout
        } else {
            ErrorKind::Transport
        }
    }
}

/// What one worker (or a whole level) saw.
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    pub latencies: Vec<Duration>,
    pub ttfb: Vec<Duration>,
    pub errors: BTreeMap<String, u64>,
}

impl Recorder {
    pub fn record(&mut self, r: Result<Sample, ErrorKind>) {
        match r {
            Ok(s) => {
                self.latencies.push(s.latency);
                if let Some(t) = s.ttfb {
                    self.ttfb.push(t);
                }
            }
            Err(e) => *self.errors.entry(e.key()).or_default() += 1,
        }
    }

    pub fn merge(&mut self, other: Recorder) {
        self.latencies.extend(other.latencies);
        self.ttfb.extend(other.ttfb);
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }

    pub fn ok(&self) -> u64 {
        self.latencies.len() as u64
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Percentiles of a set of durations, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// Sorts `v` and summarizes it (all zeros when empty).
pub fn summarize(v: &mut [Duration]) -> Summary {
    if v.is_empty() {
        return Summary::default();
    }
    v.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let total: Duration = v.iter().sum();
    Summary {
        count: v.len() as u64,
        p50_ms: ms(percentile(v, 50.0)),
        p90_ms: ms(percentile(v, 90.0)),
        p99_ms: ms(percentile(v, 99.0)),
        max_ms: ms(v[v.len() - 1]),
        mean_ms: ms(total) / v.len() as f64,
    }
}

/// Nearest-rank percentile of sorted, non-empty `v`.
pub fn percentile(v: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let s = summarize(&mut v);
        assert_eq!(s.count, 100);
        assert_eq!(s.p50_ms, 50.0);
        assert_eq!(s.p90_ms, 90.0);
        assert_eq!(s.p99_ms, 99.0);
        assert_eq!(s.max_ms, 100.0);
        assert_eq!(s.mean_ms, 50.5);
        assert_eq!(summarize(&mut []), Summary::default());
    }

    #[test]
    fn error_keys_are_snake_case() {
        assert_eq!(ErrorKind::Http(429).key(), "http_429");
        assert_eq!(ErrorKind::MissingExit.key(), "missing_exit");
        assert_eq!(ErrorKind::Gap.key(), "gap");
    }
}
