//! Admission of configure and invoke (SPEC §2.3): every status of the check
//! order with its body, the invoke query parameters, path confinement, and
//! the concurrency cap held exactly across routers.

use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agenttier_tests::client::{Client, Reply, Streamed, finish, router_pair};
use agenttier_tests::process::{System, random_api_key};
use agenttier_tests::wait_for;
use serde_json::json;

agenttier_tests::e2e_scenarios!(every_status_of_the_check_order, cap_is_exact_across_routers);

const MIB: usize = 1024 * 1024;

/// An integer `Retry-After` of at least one second.
#[track_caller]
fn assert_retry_after(r: &Reply) {
    let v = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {r:?}"));
    let secs: u64 = v
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After {v:?} is not an integer"));
    assert!(secs >= 1, "Retry-After {secs} < 1");
}

#[track_caller]
fn assert_concurrency_exceeded(r: &Reply, limit: u64) {
    assert_eq!(r.status, 429, "{r:?}");
    assert_retry_after(r);
    assert_eq!(r.error(), "concurrency_exceeded", "{r:?}");
    assert_eq!(r.body["inflight"], limit, "{r:?}");
    assert_eq!(r.body["limit"], limit, "{r:?}");
}

/// `n` random bytes (the kernel's generator: fast in a debug build).
fn urandom(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    std::fs::File::open("/dev/urandom")
        .and_then(|f| f.take(n as u64).read_to_end(&mut out))
        .expect("read /dev/urandom");
    out
}

/// The lowercase hex SHA-256 of `data`, by the host's `sha256sum` (what the
/// sandbox runs too).
fn host_sha256(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sha256sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(data)
        .expect("feed sha256sum");
    let out = child.wait_with_output().expect("sha256sum output");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

async fn refused(
    c: &Client,
    name: &str,
    body: impl Into<reqwest::Body>,
    query: &[(&str, &str)],
) -> Reply {
    c.invoke_stream(name, body, query).await.refused()
}

async fn every_status_of_the_check_order(sys: &mut dyn System) {
    let (c, _) = router_pair(sys);
    for (name, template) in [
        ("chk-agent", "langgraph-agent"),
        ("chk-code", "general-coding"),
        ("chk-stop", "langgraph-agent"),
        ("chk-capped", "capped"),
    ] {
        c.create_sandbox(name, template).await.expect(201);
    }
    for name in ["chk-agent", "chk-code", "chk-stop", "chk-capped"] {
        c.wait_running(name).await;
    }

    // 401 comes first, even for a sandbox that does not exist.
    let anon = c.with_key(None);
    for name in ["chk-agent", "chk-nope"] {
        let r = refused(&anon, name, "x", &[]).await;
        assert_eq!(
            (r.status.as_u16(), r.body.clone()),
            (401, json!({"error": "missing_authorization"}))
        );
    }
    let wrong = c.with_key(Some(&random_api_key()));
    let r = refused(&wrong, "chk-agent", "x", &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.body.clone()),
        (401, json!({"error": "invalid_api_key"}))
    );
    assert_eq!(r.header("content-type"), Some("application/json"));

    // 404: unknown, or another user's (before the mode check).
    assert_eq!(refused(&c, "chk-nope", "x", &[]).await.status, 404);
    let user_b = c.with_key(Some(&c.mint_user_key("user-b", "b@example.com").await));
    for name in ["chk-agent", "chk-code"] {
        assert_eq!(
            refused(&user_b, name, "x", &[]).await.status,
            404,
            "user-b invoking {name}"
        );
        assert_eq!(
            user_b.get_sandbox(name).await.status,
            404,
            "user-b reading {name}"
        );
        let r = user_b
            .configure_stream(name, &json!({"entrypoint": ["true"]}))
            .await
            .refused();
        assert_eq!(r.status, 404, "user-b configuring {name}");
    }

    // 400: a code-mode sandbox, for invoke and configure.
    let r = refused(&c, "chk-code", "x", &[]).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.message().contains("mode: agent"), "{r:?}");
    let r = c
        .configure_stream("chk-code", &json!({"entrypoint": ["true"]}))
        .await
        .refused();
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.message().contains("mode: agent"), "{r:?}");

    // 409: stopped (before 424: chk-stop has no entrypoint either).
    let r = c.stop("chk-stop").await.expect(200);
    assert_eq!(r.body, json!({"status": "stopping"}));
    c.wait_status("chk-stop", "Stopped").await;
    assert_eq!(refused(&c, "chk-stop", "x", &[]).await.status, 409);
    let r = c
        .configure_stream("chk-stop", &json!({"entrypoint": ["true"]}))
        .await
        .refused();
    assert_eq!(r.status, 409, "{r:?}");

    // Resumed, it is Running again (and still unconfigured: 424 below).
    let r = c.resume("chk-stop").await.expect(200);
    assert_eq!(r.body, json!({"status": "resuming"}));
    c.wait_running("chk-stop").await;
    assert_eq!(refused(&c, "chk-stop", "x", &[]).await.status, 424);

    // 424: no entrypoint yet.
    let r = refused(&c, "chk-agent", "x", &[]).await;
    assert_eq!(r.status, 424, "{r:?}");
    assert!(!r.error().is_empty(), "{r:?}");
    assert!(r.message().contains("POST /configure"), "{r:?}");

    // Configure keeps every path inside /workspace and names the bad entry.
    for bad in [
        "/etc/evil.txt",
        "/workspace/../escape.txt",
        "relative/x.txt",
    ] {
        let body = json!({"files": [{"path": "/workspace/ok.txt", "content": "ok"}, {"path": bad, "content": "a"}]});
        let r = c.configure_stream("chk-agent", &body).await.refused();
        assert_eq!(r.status, 400, "{bad}: {r:?}");
        assert!(
            r.message().contains(bad),
            "the message names {bad:?}: {r:?}"
        );
    }

    // prompt= appends --prompt=<text>, and is the stdin when the body is empty.
    let echo = r#"for a in "$@"; do echo "argv=$a"; done; echo "stdin=$(cat)""#;
    c.configure(
        "chk-agent",
        &json!({"entrypoint": ["sh", "-c", echo, "sh"]}),
    )
    .await;
    let inv = c
        .invoke("chk-agent", "", &[("prompt", "hello there")])
        .await;
    assert_eq!(
        inv.lines("stdout"),
        ["argv=--prompt=hello there", "stdin=hello there"]
    );
    let inv = c.invoke("chk-agent", "payload", &[("prompt", "p")]).await;
    assert_eq!(inv.lines("stdout"), ["argv=--prompt=p", "stdin=payload"]);
    let inv = c.invoke("chk-agent", "just stdin", &[]).await;
    assert_eq!(inv.lines("stdout"), ["stdin=just stdin"]);

    // 400: an invalid timeout.
    let r = refused(&c, "chk-agent", "x", &[("timeout", "abc")]).await;
    assert_eq!(r.status, 400, "{r:?}");

    // 413: one byte over 16 MiB, before anything runs.
    let r = refused(&c, "chk-agent", vec![b'a'; 16 * MIB + 1], &[]).await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"));

    // The limit itself is allowed, and stdin arrives intact.
    let stdin = urandom(16 * MIB);
    let want = format!("{}  -", host_sha256(&stdin));
    let sum = json!({"files": [{"path": "/workspace/sum.sh", "content": "exec sha256sum\n"}],
                     "entrypoint": ["sh", "/workspace/sum.sh"]});
    c.configure("chk-agent", &sum).await;
    let inv = c.invoke("chk-agent", stdin, &[]).await;
    assert_eq!(inv.lines("stdout"), [want], "{:?}", inv.events);

    // 429 with two long invokes running; it comes before 413.
    c.configure("chk-capped", &json!({"entrypoint": ["sleep", "5"]}))
        .await;
    let mut running = Vec::new();
    for _ in 0..2 {
        let mut s = c.invoke_stream("chk-capped", "", &[]).await.stream();
        s.until("start").await;
        running.push(s);
    }
    assert_concurrency_exceeded(&refused(&c, "chk-capped", "", &[]).await, 2);
    assert_concurrency_exceeded(
        &refused(&c, "chk-capped", vec![b'a'; 16 * MIB + 1], &[]).await,
        2,
    );
    for s in running {
        let done = finish(s).await;
        let exit = done.event("exit");
        assert_eq!(
            (exit.data["exitCode"].clone(), exit.data["reason"].clone()),
            (json!(0), json!("completed"))
        );
    }

    // A deleted sandbox goes away.
    c.delete("chk-code").await.expect(204);
    let gone = wait_for(Duration::from_secs(30), || async {
        c.get_sandbox("chk-code").await.status == 404
    })
    .await;
    assert!(
        gone,
        "deleted sandbox still there: {:?}",
        c.get_sandbox("chk-code").await
    );
    assert_eq!(refused(&c, "chk-code", "x", &[]).await.status, 404);

    // timeout= lowers the limit: a 5 s run stopped after 1 s.
    let t = Instant::now();
    let inv = c.invoke("chk-capped", "", &[("timeout", "1s")]).await;
    let exit = &inv.event("exit").data;
    assert_eq!(exit["reason"], "timeout", "{exit}");
    assert_eq!(exit["exitCode"], -1, "{exit}");
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "timed out after {:?}",
        t.elapsed()
    );
}

async fn cap_is_exact_across_routers(sys: &mut dyn System) {
    let (a, b) = router_pair(sys);
    let name = "cap-agent";
    a.create_running(name, "capped").await;
    a.configure(name, &json!({"entrypoint": ["sleep", "3"]}))
        .await;

    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let c = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                match c.invoke_stream(name, "", &[]).await {
                    Streamed::Stream(s) => Ok(finish(s).await),
                    Streamed::Refused(r) => Err(r),
                }
            })
        })
        .collect();
    let mut ok = Vec::new();
    let mut refused = Vec::new();
    for t in tasks {
        match t.await.expect("invoke task") {
            Ok(f) => ok.push(f),
            Err(r) => refused.push(r),
        }
    }
    assert_eq!(
        ok.len(),
        2,
        "exactly the cap is admitted; refusals: {refused:?}"
    );
    for f in &ok {
        assert_eq!(f.event("exit").data["exitCode"], 0, "{:?}", f.events);
        assert_eq!(
            f.event("exit").data["reason"],
            "completed",
            "{:?}",
            f.events
        );
    }
    assert_eq!(refused.len(), 18);
    for r in &refused {
        assert_concurrency_exceeded(r, 2);
    }
}
