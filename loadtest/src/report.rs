//! The report: rows of measurements (ours and the floors'), the machine,
//! the targets; printed as a terminal table or Markdown, saved as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::args::Args;
use crate::procstat::Usage;
use crate::stats::{Recorder, Summary, summarize};
use crate::targets::{Ratio, Target};

/// One measured level of one scenario, or of a floor (`floor:spawn`, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub scenario: String,
    /// `c=64`, `rate=200/s`, `lines 64 MiB`, ...
    pub case: String,
    pub concurrency: usize,
    /// Requests that passed every check.
    pub ok: u64,
    /// Failed requests by kind (`http_503`, `missing_exit`, ...).
    pub errors: BTreeMap<String, u64>,
    pub wall_s: f64,
    /// Successful requests per second of wall time.
    pub per_s: f64,
    pub latency: Summary,
    pub ttfb: Option<Summary>,
    /// Scenario-specific figures (`mb_per_s`, `lines_per_s`, ...).
    pub extra: BTreeMap<String, f64>,
    pub procs: Vec<Usage>,
}

impl Row {
    pub fn new(
        scenario: &str,
        case: &str,
        concurrency: usize,
        mut rec: Recorder,
        wall: Duration,
    ) -> Self {
        let wall_s = wall.as_secs_f64();
        Self {
            scenario: scenario.into(),
            case: case.into(),
            concurrency,
            ok: rec.ok(),
            errors: std::mem::take(&mut rec.errors),
            wall_s,
            per_s: if wall_s > 0.0 {
                rec.ok() as f64 / wall_s
            } else {
                0.0
            },
            latency: summarize(&mut rec.latencies),
            ttfb: (!rec.ttfb.is_empty()).then(|| summarize(&mut rec.ttfb)),
            extra: BTreeMap::new(),
            procs: Vec::new(),
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn with(mut self, key: &str, value: f64) -> Self {
        self.extra.insert(key.into(), value);
        self
    }

    pub fn is_floor(&self) -> bool {
        self.scenario.starts_with("floor:")
    }
}

/// Where the run happened.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub memory_total: String,
}

impl Machine {
    pub fn here() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let field = |text: &str, key: &str| {
            text.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default()
        };
        Self {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: field(&read("/proc/cpuinfo"), "model name"),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            memory_total: field(&read("/proc/meminfo"), "MemTotal"),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub label: String,
    pub urls: Vec<String>,
    pub machine: Machine,
    pub rows: Vec<Row>,
    pub targets: Vec<Target>,
    /// Our rows as multiples of the floors at the same concurrency.
    pub ratios: Vec<Ratio>,
    /// Scenarios skipped or cut short, floors not measured, and why.
    pub notes: Vec<String>,
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn rate(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

const HEAD: [&str; 12] = [
    "scenario", "case", "c", "ok", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms", "ttfb p50",
    "req/s", "notes",
];

impl Report {
    pub fn new(args: &Args) -> Self {
        Self {
            label: args.label.clone(),
            urls: args.urls.clone(),
            machine: Machine::here(),
            ..Self::default()
        }
    }

    /// The row of `scenario` and `case`, if measured.
    pub fn row(&self, scenario: &str, case: &str) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.scenario == scenario && r.case == case)
    }

    fn cells(r: &Row) -> Vec<String> {
        let errors = if r.errors.is_empty() {
            "0".to_string()
        } else {
            r.errors
                .iter()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut notes: Vec<String> = r
            .extra
            .iter()
            .map(|(k, v)| format!("{k}={}", rate(*v)))
            .collect();
        for p in r.procs.iter().filter(|p| p.cpu_s + p.children_cpu_s > 0.0) {
            notes.push(format!(
                "{}: {:.2}+{:.2} cpu-s, rss {} MiB",
                p.label,
                p.cpu_s,
                p.children_cpu_s,
                p.rss_kib / 1024
            ));
        }
        vec![
            r.scenario.clone(),
            r.case.clone(),
            r.concurrency.to_string(),
            r.ok.to_string(),
            errors,
            ms(r.latency.p50_ms),
            ms(r.latency.p90_ms),
            ms(r.latency.p99_ms),
            ms(r.latency.max_ms),
            r.ttfb.as_ref().map_or("-".into(), |t| ms(t.p50_ms)),
            rate(r.per_s),
            notes.join("; "),
        ]
    }

    /// A table for the terminal, then the targets and notes.
    pub fn table(&self) -> String {
        let rows: Vec<Vec<String>> = std::iter::once(HEAD.map(String::from).to_vec())
            .chain(self.rows.iter().map(Self::cells))
            .collect();
        let width: Vec<usize> = (0..HEAD.len() - 1)
            .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
            .collect();
        let mut out = format!("{} ({})\n", self.label, self.urls.join(", "));
        for r in &rows {
            for (i, w) in width.iter().enumerate() {
                let _ = write!(out, "{:>w$}  ", r[i], w = *w);
            }
            let _ = writeln!(out, "{}", r[HEAD.len() - 1]);
        }
        for x in &self.ratios {
            let _ = writeln!(
                out,
                "{} vs {}: p50 x{:.2}, p99 x{:.2}, rate x{:.2}",
                x.ours, x.floor, x.p50_x, x.p99_x, x.rate_x
            );
        }
        for t in &self.targets {
            let _ = writeln!(
                out,
                "{} {}: {}",
                if t.met { "MET   " } else { "MISSED" },
                t.name,
                t.detail
            );
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        out
    }

    /// The rows, targets and notes as Markdown.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "| {} |\n|{}\n",
            HEAD.join(" | "),
            " --- |".repeat(HEAD.len())
        );
        for r in &self.rows {
            let _ = writeln!(out, "| {} |", Self::cells(r).join(" | "));
        }
        if !self.ratios.is_empty() {
            out.push_str(
                "\n| ours | floor | p50 × | p99 × | rate × |\n| --- | --- | --- | --- | --- |\n",
            );
            for x in &self.ratios {
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.2} | {:.2} | {:.2} |",
                    x.ours, x.floor, x.p50_x, x.p99_x, x.rate_x
                );
            }
        }
        if !self.targets.is_empty() {
            out.push_str(
                "\n| target | bound | measured | ratio | met |\n| --- | --- | --- | --- | --- |\n",
            );
            for t in &self.targets {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.2} | {} |",
                    t.name,
                    t.bound,
                    t.measured,
                    t.ratio,
                    if t.met { "met" } else { "**missed**" }
                );
            }
        }
        for n in &self.notes {
            let _ = writeln!(out, "\n- {n}");
        }
        out
    }
}
