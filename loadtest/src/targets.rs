//! The targets of issue #5, judged from a report, and our figures as
//! ratios to the floors measured in the same run.
//!
//! A target counts as met only when its row passed every check: a fast
//! answer that was wrong measures nothing.

use serde::{Deserialize, Serialize};

use crate::report::{Report, Row};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub name: String,
    /// The bound, e.g. `≤ 1.23 ms` (floor + allowance) or `≥ 250 MB/s`.
    pub bound: String,
    pub measured: String,
    /// measured ÷ bound: a `≤` target is met at 1.0 or below, a `≥` target
    /// at 1.0 or above.
    pub ratio: f64,
    pub met: bool,
    pub detail: String,
}

fn find<'a>(r: &'a Report, scenario: &str, concurrency: usize) -> Option<&'a Row> {
    r.rows
        .iter()
        .find(|x| x.scenario == scenario && x.case == format!("c={concurrency}"))
}

fn errors_note(row: &Row) -> String {
    match row.error_count() {
        0 => String::new(),
        n => format!(" ({n} failed checks: not met)"),
    }
}

/// `measured ≤ bound` (`at_most`) or `measured ≥ bound`.
fn judge(
    name: &str,
    row: &Row,
    measured: f64,
    bound: f64,
    at_most: bool,
    unit: &str,
    how: String,
) -> Target {
    let ratio = if bound > 0.0 {
        measured / bound
    } else {
        f64::INFINITY
    };
    let ok = if at_most {
        measured <= bound
    } else {
        measured >= bound
    };
    let met = ok && row.error_count() == 0 && row.ok > 0;
    let sign = if at_most { "≤" } else { "≥" };
    Target {
        name: name.into(),
        bound: format!("{sign} {bound:.2} {unit}"),
        measured: format!("{measured:.2} {unit}"),
        ratio,
        met,
        detail: format!(
            "{measured:.2} {unit} vs {sign} {bound:.2} {unit} ({how}){}",
            errors_note(row)
        ),
    }
}

/// Every target this report has the rows for.
pub fn evaluate(r: &Report) -> Vec<Target> {
    let mut out = Vec::new();
    for (floor, tag) in [
        ("floor:spawn", ""),
        ("floor:spawn-bwrap", " [vs the bwrap spawn floor]"),
    ] {
        if let (Some(ours), Some(f)) = (find(r, "invoke", 1), find(r, floor, 1)) {
            out.push(judge(
                &format!("invoke c=1 p50 ≤ spawn p50 + 0.5 ms{tag}"),
                ours,
                ours.latency.p50_ms,
                f.latency.p50_ms + 0.5,
                true,
                "ms",
                format!("floor p50 {:.2} ms", f.latency.p50_ms),
            ));
            out.push(judge(
                &format!("invoke c=1 p99 ≤ spawn p99 + 2 ms{tag}"),
                ours,
                ours.latency.p99_ms,
                f.latency.p99_ms + 2.0,
                true,
                "ms",
                format!("floor p99 {:.2} ms", f.latency.p99_ms),
            ));
        }
        if let (Some(ours), Some(f)) = (find(r, "invoke", 64), find(r, floor, 64)) {
            out.push(judge(
                &format!("invokes/s at c=64 ≥ 80% of spawns/s{tag}"),
                ours,
                ours.per_s,
                0.8 * f.per_s,
                false,
                "/s",
                format!("floor {:.0} spawns/s", f.per_s),
            ));
        }
    }
    for row in r.rows.iter().filter(|x| x.scenario == "stream") {
        if let Some(v) = row
            .extra
            .get("mb_per_s")
            .filter(|_| row.case.starts_with("raw"))
        {
            out.push(judge(
                "stream raw stdout ≥ 250 MB/s",
                row,
                *v,
                250.0,
                false,
                "MB/s",
                row.case.clone(),
            ));
        }
        if let Some(v) = row
            .extra
            .get("lines_per_s")
            .filter(|_| row.case.starts_with("lines"))
        {
            out.push(judge(
                "stream ≥ 300,000 lines/s",
                row,
                *v,
                300_000.0,
                false,
                "lines/s",
                row.case.clone(),
            ));
        }
    }
    if let Some(row) = find(r, "api:get", 50) {
        out.push(judge(
            "GET sandbox at c=50 ≥ 20,000 req/s",
            row,
            row.per_s,
            20_000.0,
            false,
            "/s",
            "c=50".into(),
        ));
        out.push(judge(
            "GET sandbox at c=50 p99 ≤ 5 ms",
            row,
            row.latency.p99_ms,
            5.0,
            true,
            "ms",
            "c=50".into(),
        ));
    }
    for row in r.rows.iter().filter(|x| x.scenario == "throttle") {
        out.push(judge(
            &format!("429 p99 ≤ 5 ms ({})", row.case),
            row,
            row.latency.p99_ms,
            5.0,
            true,
            "ms",
            format!("{} requests", row.ok),
        ));
    }
    for row in r.rows.iter().filter(|x| x.scenario == "cancel") {
        out.push(judge(
            "cancel → exit p99 ≤ 50 ms",
            row,
            row.latency.p99_ms,
            50.0,
            true,
            "ms",
            row.case.clone(),
        ));
    }
    for row in r.rows.iter().filter(|x| x.scenario == "idle:create") {
        if let Some(v) = row.extra.get("rss_per_sandbox_kib") {
            out.push(judge(
                "executor memory ≤ 20 KiB per idle sandbox",
                row,
                *v,
                20.0,
                true,
                "KiB",
                row.case.clone(),
            ));
        }
        out.push(judge(
            "sandbox create rate ≥ 500/s",
            row,
            row.per_s,
            500.0,
            false,
            "/s",
            row.case.clone(),
        ));
    }
    out
}

/// Our rows beside the floor of the same concurrency: how many times the
/// floor's p50, p99 and rate ours is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    pub ours: String,
    pub floor: String,
    pub p50_x: f64,
    pub p99_x: f64,
    pub rate_x: f64,
}

pub fn ratios(r: &Report) -> Vec<Ratio> {
    let pairs = [
        ("invoke", "floor:spawn"),
        ("invoke", "floor:spawn-bwrap"),
        ("api:get", "floor:http"),
        ("api:get", "floor:nats"),
        ("invoke", "floor:nats"),
        ("invoke", "floor:http"),
        ("throttle", "floor:http"),
    ];
    let mut out = Vec::new();
    for (ours, floor) in pairs {
        for o in r.rows.iter().filter(|x| x.scenario == ours) {
            if let Some(f) = r
                .rows
                .iter()
                .find(|f| f.scenario == floor && f.case == o.case)
            {
                let x = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
                out.push(Ratio {
                    ours: format!("{} {}", o.scenario, o.case),
                    floor: format!("{} {}", f.scenario, f.case),
                    p50_x: x(o.latency.p50_ms, f.latency.p50_ms),
                    p99_x: x(o.latency.p99_ms, f.latency.p99_ms),
                    rate_x: x(o.per_s, f.per_s),
                });
            }
        }
    }
    for o in r.rows.iter().filter(|x| x.scenario == "stream") {
        if let Some(f) = r
            .rows
            .iter()
            .find(|f| f.scenario == "floor:stream" && f.case == o.case)
        {
            let mb = |row: &Row| row.extra.get("mb_per_s").copied().unwrap_or(0.0);
            out.push(Ratio {
                ours: format!("stream {}", o.case),
                floor: format!("floor:stream {}", f.case),
                p50_x: if f.latency.p50_ms > 0.0 {
                    o.latency.p50_ms / f.latency.p50_ms
                } else {
                    0.0
                },
                p99_x: 0.0,
                rate_x: if mb(f) > 0.0 { mb(o) / mb(f) } else { 0.0 },
            });
        }
    }
    out
}
