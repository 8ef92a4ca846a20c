//! Volume: a run writing far more than any buffer, delivered byte-exact
//! (digest against the entrypoint's own), with and without the output cap,
//! at bounded router memory. 32 MiB by default; 1 GiB with
//! `AGENTTIER_FAULT_SCALE=full`.

use agenttier_tests::client::Client;
use agenttier_tests::process::{System, full_scale};
use serde_json::json;
use sha2::{Digest, Sha256};

agenttier_tests::e2e_scenarios!(large_output_arrives_exactly_and_the_cap_cuts_it);

/// Writes `total` bytes as numbered 1000-byte lines and prints the SHA-256
/// of everything it wrote to stderr at the end.
const WRITER: &str = r#"
import hashlib, sys
total = int(sys.argv[1])
h = hashlib.sha256()
out = sys.stdout.buffer
i = 0
written = 0
while written < total:
    line = b"%010d " % i + b"x" * 988 + b"\n"
    out.write(line)
    h.update(line)
    written += len(line)
    i += 1
out.flush()
print(h.hexdigest(), file=sys.stderr)
"#;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn large_output_arrives_exactly_and_the_cap_cuts_it(sys: &mut dyn System) {
    let total: u64 = if full_scale() { 1 << 30 } else { 32 << 20 };
    let c = Client::new(&sys.urls()[0], Some(sys.admin_key()));
    let router = sys.router_pids()[0];
    for (name, template) in [("vol-big", "bigout"), ("vol-capped", "langgraph-agent")] {
        c.create_running(name, template).await;
        c.configure(
            name,
            &json!({"files": [{"path": "/workspace/w.py", "content": WRITER}],
                    "entrypoint": ["python", "/workspace/w.py", total.to_string()]}),
        )
        .await;
    }

    // Uncapped (2 GiB allowed): every byte, in order, digest equal.
    let baseline = rss_kib(router);
    let mut peak = baseline;
    let mut s = c.invoke_stream("vol-big", "", &[]).await.stream();
    let mut h = Sha256::new();
    let mut got = 0u64;
    let mut digest = String::new();
    let mut exits = 0;
    let mut n = 0u64;
    while let Some(e) = s.next().await {
        match e.event.as_str() {
            "log" if e.data["stream"] == "stdout" => {
                let line = e.data["data"].as_str().expect("text line");
                h.update(line.as_bytes());
                h.update(b"\n");
                got += line.len() as u64 + 1;
                n += 1;
                if n.is_multiple_of(4096) {
                    peak = peak.max(rss_kib(router));
                }
            }
            "log" => digest = e.data["data"].as_str().unwrap_or_default().to_string(),
            "exit" => {
                exits += 1;
                assert_eq!(e.data["exitCode"], 0, "{e:?}");
            }
            "start" => {}
            other => panic!("unexpected {other}: {e:?}"),
        }
    }
    assert_eq!(exits, 1);
    assert!(got >= total, "{got} of {total} bytes");
    assert_eq!(hex::encode(h.finalize()), digest, "byte-exact");
    if sys.shape() == "distributed" {
        let grew = peak.saturating_sub(baseline) / 1024;
        assert!(grew <= 64, "router grew {grew} MiB relaying {total} bytes");
    }

    // Capped at the default 256 MiB: cut with output_limit, nothing past it.
    let cap: u64 = 256 << 20;
    let run = c.invoke("vol-capped", "", &[]).await;
    let out: u64 = run.lines("stdout").iter().map(|l| l.len() as u64 + 1).sum();
    let exit = run.event("exit");
    if total > cap {
        assert_eq!(exit.data["cause"], "output_limit", "{exit:?}");
        assert!(out <= cap, "{out} bytes past a {cap}-byte cap");
    } else {
        assert_eq!(exit.data["exitCode"], 0, "{exit:?}");
        assert_eq!(out, run.lines("stdout").len() as u64 * 1000);
    }
}
