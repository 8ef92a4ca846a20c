//! Invoke, resume, cancel and configure streams as a client sees them, with a
//! fake sandbox actor on the in-process bus.

mod support;

use std::time::{Duration, Instant};

use agenttier_bus::model::Phase;
use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};
use support::{Harness, SseReader, parts};

#[tokio::test]
async fn invoke_streams_events_with_ids_and_ends_after_exit() {
    let h = Harness::start().await;
    h.sandbox("default", "demo", Phase::Running).await;
    let r = h
        .req(
            Method::POST,
            "/api/v1/sandboxes/demo/invoke?prompt=hi&timeout=30s",
            &h.alice,
        )
        .body("world")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let header = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(header("content-type").as_deref(), Some("text/event-stream"));
    assert_eq!(header("cache-control").as_deref(), Some("no-cache"));
    assert_eq!(header("x-accel-buffering").as_deref(), Some("no"));
    let events = SseReader::new(r).all(Duration::from_secs(5)).await;
    let ids: Vec<_> = events
        .iter()
        .map(|e| e.id.clone().unwrap_or_default())
        .collect();
    let names: Vec<_> = events
        .iter()
        .map(|e| e.event.clone().unwrap_or_default())
        .collect();
    assert_eq!(ids, ["1", "2", "3", "4"]);
    assert_eq!(names, ["start", "log", "log", "exit"]);
    assert_eq!(events[2].data["data"], "stdin 5 bytes: world");
    assert_eq!(events[3].data["exitCode"], 0);
    assert_eq!(events[3].data["reason"], "completed");
}

#[tokio::test]
async fn stdin_beyond_one_chunk_reaches_the_actor_whole() {
    let h = Harness::start().await;
    h.sandbox("default", "demo", Phase::Running).await;
    let body = vec![b'x'; 1_300_000];
    let r = h
        .req(Method::POST, "/api/v1/sandboxes/demo/invoke", &h.alice)
        .body(body)
        .send()
        .await
        .expect("send");
    let events = SseReader::new(r).all(Duration::from_secs(5)).await;
    assert!(
        events[2].data["data"]
            .as_str()
            .is_some_and(|d| d.starts_with("stdin 1300000 bytes")),
        "{events:?}"
    );
}

#[tokio::test]
async fn resume_replays_after_last_event_id() {
    let h = Harness::start().await;
    h.sandbox("default", "demo", Phase::Running).await;
    let r = h
        .req(Method::POST, "/api/v1/sandboxes/demo/invoke", &h.alice)
        .send()
        .await
        .expect("send");
    let events = SseReader::new(r).all(Duration::from_secs(5)).await;
    let id = events[0].data["invokeId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let r = h
        .req(
            Method::GET,
            &format!("/api/v1/sandboxes/demo/invokes/{id}/events"),
            &h.alice,
        )
        .header("Last-Event-ID", "2")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let again = SseReader::new(r).all(Duration::from_secs(5)).await;
    assert_eq!(again, events[2..].to_vec());
    let r = h
        .req(
            Method::GET,
            "/api/v1/sandboxes/demo/invokes/inv-000000000000000000000000/events",
            &h.alice,
        )
        .send()
        .await
        .expect("send");
    let (status, _, body) = parts(r).await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"error": "not_found", "message": "invoke not found"})
    );
}

#[tokio::test]
async fn concurrency_rejection_maps_to_429_with_retry_after() {
    let h = Harness::start().await;
    h.sandbox("default", "demo", Phase::Running).await;
    let r = h
        .req(
            Method::POST,
            "/api/v1/sandboxes/demo/invoke?prompt=busy",
            &h.alice,
        )
        .send()
        .await
        .expect("send");
    let (status, retry, body) = parts(r).await;
    assert_eq!((status, retry.as_deref()), (429, Some("3")));
    assert_eq!(
        body,
        json!({"error":"concurrency_exceeded","message":"4 invokes are running; the limit is 4","inflight":4,"limit":4})
    );
    let r = h
        .req(
            Method::POST,
            "/api/v1/sandboxes/demo/invoke?timeout=soon",
            &h.alice,
        )
        .send()
        .await
        .expect("send");
    assert_eq!(parts(r).await.2["error"], "invalid_timeout");
}

#[tokio::test]
async fn cancel_is_204_and_the_stream_ends_canceled() {
    let h = Harness::start().await;
    h.sandbox("default", "demo", Phase::Running).await;
    let r = h
        .req(
            Method::POST,
            "/api/v1/sandboxes/demo/invoke?prompt=wait",
            &h.alice,
        )
        .send()
        .await
        .expect("send");
    let mut sse = SseReader::new(r);
    let start = sse.next().await.expect("start");
    assert_eq!(start.event.as_deref(), Some("start"));
    let id = start.data["invokeId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let cancel = |body: Value| {
        h.req(
            Method::POST,
            "/api/v1/sandboxes/demo/invoke/cancel",
            &h.alice,
        )
        .json(&body)
        .send()
    };
    assert_eq!(cancel(json!({})).await.expect("send").status(), 400);
    assert_eq!(
        cancel(json!({"invokeId": id}))
            .await
            .expect("send")
            .status(),
        204
    );
    let rest = sse.all(Duration::from_secs(5)).await;
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0].id.as_deref(), Some("2"));
    assert_eq!(rest[0].data["reason"], "canceled");
}

#[tokio::test]
async fn a_silent_executor_ends_the_stream_with_executor_lost() {
    let h = Harness::start().await;
    h.sandbox("default", "demo", Phase::Running).await;
    let began = Instant::now();
    let r = h
        .req(
            Method::POST,
            "/api/v1/sandboxes/demo/invoke?prompt=hang",
            &h.alice,
        )
        .send()
        .await
        .expect("send");
    let events = SseReader::new(r).all(Duration::from_secs(5)).await;
    assert!(began.elapsed() < Duration::from_secs(5));
    let names: Vec<_> = events
        .iter()
        .map(|e| e.event.clone().unwrap_or_default())
        .collect();
    assert_eq!(names, ["start", "exit"]);
    let exit = &events[1];
    assert_eq!(exit.id.as_deref(), Some("2"));
    assert_eq!(exit.data["exitCode"], -1);
    assert_eq!(exit.data["reason"], "error");
    assert_eq!(exit.data["cause"], "executor_lost");
}

#[tokio::test]
async fn configure_uploads_every_file_and_relays_until_result() {
    let h = Harness::start().await;
    h.sandbox("default", "demo", Phase::Running).await;
    let big = vec![7u8; 600 * 1024];
    let body = json!({
        "files": [
            {"path": "/workspace/agent.py", "content": "print('hi')\n"},
            {"path": "/workspace/blob.bin", "contentBase64": base64::engine::general_purpose::STANDARD.encode(&big)},
            {"path": "/workspace/empty", "content": ""},
        ],
        "installCommand": ["true"],
        "entrypoint": ["python", "agent.py"],
    });
    let r = h
        .req(Method::POST, "/api/v1/sandboxes/demo/configure", &h.alice)
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let events = SseReader::new(r).all(Duration::from_secs(5)).await;
    let names: Vec<_> = events
        .iter()
        .map(|e| e.event.clone().unwrap_or_default())
        .collect();
    assert_eq!(names, ["log", "log", "log", "result"]);
    assert_eq!(
        events[1].data["data"],
        "[configure] uploading /workspace/blob.bin (614400 bytes, first 7)"
    );
    assert_eq!(
        events[2].data["data"],
        "[configure] uploading /workspace/empty (0 bytes, first 0)"
    );
    assert_eq!(events[3].id.as_deref(), Some("4"));
    assert_eq!(
        events[3].data["installCommandHash"].as_str().map(str::len),
        Some(64)
    );

    let bad = json!({"files": [{"path": "/workspace/a", "content": "x", "contentBase64": "eA=="}]});
    let r = h
        .req(Method::POST, "/api/v1/sandboxes/demo/configure", &h.alice)
        .json(&bad)
        .send()
        .await
        .expect("send");
    let (status, _, body) = parts(r).await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("files[0]") && m.contains("/workspace/a")),
        "{body}"
    );
    let r = h
        .req(Method::POST, "/api/v1/sandboxes/demo/configure", &h.alice)
        .json(&json!({}))
        .send()
        .await
        .expect("send");
    assert_eq!(parts(r).await.0, 400);
    let r = h
        .req(
            Method::GET,
            "/api/v1/sandboxes/demo/configure/install-log",
            &h.alice,
        )
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let h = Harness::start().await;
    h.sandbox("default", "demo", Phase::Running).await;
    let r = h
        .req(
            Method::POST,
            "/api/v1/sandboxes/demo/invoke?prompt=wait",
            &h.alice,
        )
        .send()
        .await
        .expect("send");
    let mut sse = SseReader::new(r);
    assert_eq!(
        sse.next().await.and_then(|e| e.event).as_deref(),
        Some("start")
    );
    let began = Instant::now();
    h.shutdown();
    let rest = sse.all(Duration::from_secs(3)).await;
    assert!(began.elapsed() < Duration::from_secs(2));
    // v0.8 clients read a stream without `exit` as success, so it ends with one
    // that says what happened and repeats the last id (resume misses nothing).
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0].event.as_deref(), Some("exit"));
    assert_eq!(rest[0].id.as_deref(), Some("1"));
    assert_eq!(rest[0].data["cause"], "router_shutdown");
}
