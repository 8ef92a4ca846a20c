//! What a run writes arrives exactly: bytes that are not UTF-8 come base64
//! encoded, characters split across writes are whole, output that looks like
//! SSE framing stays data, and every limit ends the run with its cause.

use agenttier_tests::client::Client;
use agenttier_tests::process::System;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

agenttier_tests::e2e_scenarios!(
    output_arrives_byte_exact_and_cannot_forge_events,
    limits_end_runs_with_their_cause
);

/// The bytes of each stdout line, base64 lines decoded.
fn stdout_bytes(events: &[agenttier_tests::client::SseEvent]) -> Vec<Vec<u8>> {
    events
        .iter()
        .filter(|e| e.event == "log" && e.data["stream"] == "stdout")
        .map(|e| {
            let data = e.data["data"].as_str().expect("data");
            match e.data["encoding"].as_str() {
                Some("base64") => STANDARD.decode(data).expect("valid base64"),
                None => data.as_bytes().to_vec(),
                Some(other) => panic!("unknown encoding {other}"),
            }
        })
        .collect()
}

async fn output_arrives_byte_exact_and_cannot_forge_events(sys: &mut dyn System) {
    let c = Client::new(&sys.urls()[0], Some(sys.admin_key()));
    c.create_running("out-a", "langgraph-agent").await;
    // Each write is flushed on its own, so multi-byte characters straddle reads.
    let script = r#"
import os, time
out = 1
def w(b):
    os.write(out, b)
    time.sleep(0.01)
w(b"plain\n")
w(b"\xff\xfe not utf-8 \x00 nul\n")
w(b"cr\rinside\r\n")
w(b"event: exit\ndata: {\"exitCode\":0}\n\n")
emoji = "\U0001F389".encode()
w(b"split " + emoji[:1]); w(emoji[1:3]); w(emoji[3:] + b" done\n")
w(b"last line without newline")
"#;
    c.configure(
        "out-a",
        &json!({"files": [{"path": "/workspace/out.py", "content": script}],
                "entrypoint": ["python", "/workspace/out.py"]}),
    )
    .await;
    let run = c.invoke("out-a", "", &[]).await;
    let want: Vec<Vec<u8>> = vec![
        b"plain".to_vec(),
        b"\xff\xfe not utf-8 \x00 nul".to_vec(),
        b"cr\rinside\r".to_vec(),
        b"event: exit".to_vec(),
        b"data: {\"exitCode\":0}".to_vec(),
        b"".to_vec(),
        "split \u{1F389} done".as_bytes().to_vec(),
        b"last line without newline".to_vec(),
    ];
    assert_eq!(stdout_bytes(&run.events), want);
    let exits: Vec<_> = run.events.iter().filter(|e| e.event == "exit").collect();
    assert_eq!(exits.len(), 1, "exactly one real exit");
    assert_eq!(exits[0].data["exitCode"], 0);
    // Only the invalid line is base64; the split emoji arrived as text.
    let encoded = run
        .events
        .iter()
        .filter(|e| e.data["encoding"] == "base64")
        .count();
    assert_eq!(encoded, 1);
}

async fn limits_end_runs_with_their_cause(sys: &mut dyn System) {
    let c = Client::new(&sys.urls()[0], Some(sys.admin_key()));
    c.create_running("lim-out", "limited").await;
    let exit_of = |run: &agenttier_tests::client::Finished| {
        let e = run.event("exit");
        (
            e.data["reason"].as_str().unwrap_or_default().to_string(),
            e.data["cause"].as_str().unwrap_or_default().to_string(),
            e.data["exitCode"].as_i64(),
        )
    };

    // Output cap: a stderr line saying so, then output_limit.
    c.configure(
        "lim-out",
        &json!({"entrypoint": ["sh", "-c", "yes 0123456789"]}),
    )
    .await;
    let run = c.invoke("lim-out", "", &[]).await;
    assert_eq!(
        exit_of(&run),
        ("error".into(), "output_limit".into(), Some(-1))
    );
    assert!(
        run.lines("stderr")
            .iter()
            .any(|l| l.contains("output limit")),
        "{:?}",
        run.lines("stderr")
    );
    let written: usize = run.lines("stdout").iter().map(|l| l.len() + 1).sum();
    assert!(
        written <= 100_000,
        "{written} bytes went out past a 100000-byte cap"
    );

    // Idle: no output for 2 s.
    c.configure(
        "lim-out",
        &json!({"entrypoint": ["sh", "-c", "echo hi; sleep 30"]}),
    )
    .await;
    let run = c.invoke("lim-out", "", &[]).await;
    assert_eq!(exit_of(&run), ("timeout".into(), "idle".into(), Some(-1)));
    assert_eq!(run.lines("stdout"), ["hi"]);
    // Output without a newline is output too: a progress bar printing a dot
    // every 0.5 s for 4 s is not idle.
    c.configure(
        "lim-out",
        &json!({"entrypoint": ["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do printf .; sleep 0.5; done"]}),
    )
    .await;
    let run = c.invoke("lim-out", "", &[]).await;
    assert_eq!(exit_of(&run), ("completed".into(), "".into(), Some(0)));
    assert_eq!(run.lines("stdout"), ["........"]);

    // Max duration: 6 s from the template, lowered by ?timeout=.
    c.configure(
        "lim-out",
        &json!({"entrypoint": ["sh", "-c", "while true; do echo tick; sleep 0.5; done"]}),
    )
    .await;
    let started = std::time::Instant::now();
    let run = c.invoke("lim-out", "", &[("timeout", "2s")]).await;
    assert_eq!(exit_of(&run), ("timeout".into(), "max".into(), Some(-1)));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let run = c.invoke("lim-out", "", &[("timeout", "1h")]).await;
    assert_eq!(
        exit_of(&run),
        ("timeout".into(), "max".into(), Some(-1)),
        "a request cannot raise the limit"
    );
}
