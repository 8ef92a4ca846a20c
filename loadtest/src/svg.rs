//! The chart: invoke latency percentiles (p50, p90, p99) by concurrency,
//! on a log scale, with the spawn floors' p50 and p99 dashed beside them.
//! Hand-written SVG: a few polylines need no plotting library.

use std::fmt::Write as _;

use crate::report::{Report, Row};

const W: f64 = 720.0;
const H: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

/// Which figure of a row a series plots.
type Pick = fn(&Row) -> f64;

struct Series<'a> {
    label: String,
    color: &'a str,
    dashed: bool,
    points: Vec<(usize, f64)>,
}

fn closed_loop<'a>(r: &'a Report, scenario: &str) -> Vec<&'a Row> {
    r.rows
        .iter()
        .filter(|x| x.scenario == scenario && x.case.starts_with("c=") && x.ok > 0)
        .collect()
}

pub fn chart(r: &Report) -> String {
    let ours = closed_loop(r, "invoke");
    let mut levels: Vec<usize> = ours.iter().map(|x| x.concurrency).collect();
    levels.sort_unstable();
    levels.dedup();
    let mut series = Vec::new();
    let pick: [(&str, Pick, &str); 3] = [
        ("p50", |x| x.latency.p50_ms, "#1f77b4"),
        ("p90", |x| x.latency.p90_ms, "#2ca02c"),
        ("p99", |x| x.latency.p99_ms, "#d62728"),
    ];
    for (name, f, color) in pick {
        series.push(Series {
            label: format!("invoke {name}"),
            color,
            dashed: false,
            points: ours.iter().map(|x| (x.concurrency, f(x))).collect(),
        });
    }
    for (floor, color) in [("floor:spawn", "#7f7f7f"), ("floor:spawn-bwrap", "#ff7f0e")] {
        let rows = closed_loop(r, floor);
        for (name, f) in [("p50", pick[0].1), ("p99", pick[2].1)] {
            let points: Vec<(usize, f64)> = rows
                .iter()
                .filter(|x| levels.contains(&x.concurrency))
                .map(|x| (x.concurrency, f(x)))
                .collect();
            if !points.is_empty() {
                series.push(Series {
                    label: format!("{} {name}", floor.trim_start_matches("floor:")),
                    color,
                    dashed: true,
                    points,
                });
            }
        }
    }
    let values = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo > hi {
        (0.1, 10.0)
    } else {
        (lo.max(0.001), hi.max(lo * 1.01))
    };
    let (ylo, yhi) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let x_of = |c: usize| {
        let i = levels.iter().position(|l| *l == c).unwrap_or(0) as f64;
        LEFT + if levels.len() > 1 {
            i * plot_w / (levels.len() - 1) as f64
        } else {
            plot_w / 2.0
        }
    };
    let y_of = |v: f64| TOP + plot_h * (1.0 - (v.max(10f64.powf(ylo)).log10() - ylo) / (yhi - ylo));

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="22" font-size="14">Invoke latency by concurrency ({}), log scale</text>"#,
        escape(&r.label)
    );
    let mut e = ylo;
    while e <= yhi {
        let y = y_of(10f64.powf(e));
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{} ms</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
            10f64.powf(e)
        );
        e += 1.0;
    }
    for &c in &levels {
        let x = x_of(c);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{}" stroke="#eee"/><text x="{x:.1}" y="{}" text-anchor="middle">{c}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 18.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">concurrency</text>"#,
        LEFT + plot_w / 2.0,
        H - 10.0
    );
    for (i, se) in series.iter().enumerate() {
        let pts: Vec<String> = se
            .points
            .iter()
            .map(|(c, v)| format!("{:.1},{:.1}", x_of(*c), y_of(*v)))
            .collect();
        let dash = if se.dashed {
            r#" stroke-dasharray="5,4""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
            pts.join(" "),
            se.color
        );
        for p in &pts {
            let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(
                s,
                r#"<circle cx="{x}" cy="{y}" r="3" fill="{}"/>"#,
                se.color
            );
        }
        let ly = TOP + 10.0 + i as f64 * 18.0;
        let lx = W - RIGHT + 15.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            lx + 24.0,
            se.color,
            lx + 30.0,
            ly + 4.0,
            escape(&se.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Summary;

    fn row(scenario: &str, c: usize, p50: f64) -> Row {
        Row {
            scenario: scenario.into(),
            case: format!("c={c}"),
            concurrency: c,
            ok: 1,
            latency: Summary {
                count: 1,
                p50_ms: p50,
                p90_ms: p50 * 2.0,
                p99_ms: p50 * 3.0,
                max_ms: p50 * 4.0,
                mean_ms: p50,
            },
            ..Row::default()
        }
    }

    #[test]
    fn decades_are_evenly_spaced_and_series_drawn() {
        let report = Report {
            rows: vec![
                row("invoke", 1, 7.0),
                row("invoke", 64, 300.0),
                row("floor:spawn", 1, 0.5),
                row("floor:spawn", 64, 20.0),
            ],
            ..Report::default()
        };
        let svg = chart(&report);
        let grid: Vec<f64> = svg
            .lines()
            .filter(|l| l.contains(" ms</text>"))
            .filter_map(|l| l.split("y1=\"").nth(1)?.split('"').next()?.parse().ok())
            .collect();
        assert!(grid.len() >= 3, "{svg}");
        let steps: Vec<f64> = grid.windows(2).map(|w| w[0] - w[1]).collect();
        assert!(
            steps.iter().all(|s| (s - steps[0]).abs() < 0.2),
            "{steps:?}"
        );
        assert_eq!(
            svg.matches("<polyline").count(),
            5,
            "p50/p90/p99 and the floor's p50/p99"
        );
    }
}
