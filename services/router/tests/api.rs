//! The router's HTTP API as a client sees it, over a real TCP listener, with
//! a fake sandbox actor on the in-process bus.

mod support;

use std::time::{Duration, Instant};

use agenttier_bus::model::Phase;
use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};
use support::{Harness, SseReader, parts};

#[tokio::test]
async fn unauthenticated_requests_get_the_spec_401_bodies() {
    let h = Harness::start().await;
    let get = |path: &str| h.http.get(format!("{}{path}", h.url));
    let r = parts(get("/api/v1/sandboxes").send().await.expect("send")).await;
    assert_eq!((r.0, r.2), (401, json!({"error":"missing_authorization"})));
    let r = parts(
        get("/api/v1/sandboxes")
            .header("X-API-Key", "atk_nope")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!((r.0, r.2), (401, json!({"error":"invalid_api_key"})));
    let r = parts(
        get("/api/v1/sandboxes")
            .bearer_auth("x.y.z")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(
        (r.0, r.2),
        (
            401,
            json!({"error":"invalid_token","message":"OIDC is not configured"})
        )
    );
    let r = parts(
        get("/api/v1/sandboxes")
            .basic_auth("u", Some("p"))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(
        (r.0, r.2),
        (401, json!({"error":"invalid_authorization_format"}))
    );
    let r = parts(get("/healthz").send().await.expect("send")).await;
    assert_eq!((r.0, r.2), (200, json!({"status":"ok"})));
    assert_eq!(get("/readyz").send().await.expect("send").status(), 200);
    assert_eq!(get("/metrics").send().await.expect("send").status(), 200);
}

#[tokio::test]
async fn create_returns_the_spec_shape_and_refuses_taken_names_and_unknown_templates() {
    let h = Harness::start().await;
    let create = |body: Value| {
        h.req(Method::POST, "/api/v1/sandboxes", &h.alice)
            .json(&body)
            .send()
    };
    let r = parts(
        create(json!({"name":"demo","templateRef":{"name":"python-agent"}}))
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(r.0, 201);
    assert_eq!(
        r.2,
        json!({"sandboxId":"demo","name":"demo","namespace":"default","status":"Creating","mode":"agent","templateRef":"python-agent"})
    );
    let r = parts(
        create(json!({"name":"demo","templateRef":{"name":"python-agent"}}))
            .await
            .expect("send"),
    )
    .await;
    assert_eq!((r.0, r.2["error"].clone()), (409, json!("already_exists")));
    let r = parts(
        create(json!({"name":"x","templateRef":{"name":"nope"}}))
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(
        (r.0, r.2["error"].clone()),
        (404, json!("template_not_found"))
    );
    let r = parts(
        create(json!({"name":"Bad_Name","templateRef":{"name":"python-agent"}}))
            .await
            .expect("send"),
    )
    .await;
    assert_eq!((r.0, r.2["error"].clone()), (400, json!("invalid_request")));
    assert!(
        r.2["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("name:"),
        "{}",
        r.2
    );
    let r = parts(
        create(json!({"name":"c","templateRef":"general-coding","mode":"agent"}))
            .await
            .expect("send"),
    )
    .await;
    assert_eq!((r.0, r.2["mode"].clone()), (201, json!("agent")));
}

#[tokio::test]
async fn another_users_sandbox_is_404_and_absent_from_their_list() {
    let h = Harness::start().await;
    h.sandbox("default", "demo", Phase::Running).await;
    let r = parts(
        h.req(Method::GET, "/api/v1/sandboxes/demo", &h.bob)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(
        (r.0, r.2),
        (
            404,
            json!({"error":"not_found","message":"sandbox not found"})
        )
    );
    let r = parts(
        h.req(Method::POST, "/api/v1/sandboxes/demo/invoke", &h.bob)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(r.0, 404);
    let r = parts(
        h.req(Method::GET, "/api/v1/sandboxes", &h.bob)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!((r.0, r.2), (200, json!({"sandboxes": []})));

    let r = parts(
        h.req(Method::GET, "/api/v1/sandboxes/demo", &h.alice)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(r.0, 200);
    assert_eq!(r.2["status"], "Running");
    assert_eq!(r.2["templateRef"], "python-agent");
    assert_eq!(
        r.2["createdBy"],
        json!({"email":"alice@example.com","displayName":"alice"})
    );
    assert!(r.2["createdAt"].as_str().is_some_and(|t| t.ends_with('Z')));
    let r = parts(
        h.req(Method::GET, "/api/v1/sandboxes/demo", &h.admin)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(r.0, 200);
    let r = parts(
        h.req(Method::GET, "/api/v1/sandboxes?status=running", &h.alice)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(r.2["sandboxes"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn names_outside_default_resolve_when_unique_and_409_when_not() {
    let h = Harness::start().await;
    h.sandbox("team-a", "solo", Phase::Running).await;
    let r = parts(
        h.req(Method::GET, "/api/v1/sandboxes/solo", &h.alice)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!((r.0, r.2["namespace"].clone()), (200, json!("team-a")));
    h.sandbox("team-b", "solo", Phase::Running).await;
    let r = parts(
        h.req(Method::GET, "/api/v1/sandboxes/solo", &h.alice)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(r.0, 409);
    assert_eq!(r.2["namespaces"], json!(["team-a", "team-b"]));
    let r = parts(
        h.req(
            Method::GET,
            "/api/v1/sandboxes/solo?namespace=team-b",
            &h.alice,
        )
        .send()
        .await
        .expect("send"),
    )
    .await;
    assert_eq!((r.0, r.2["namespace"].clone()), (200, json!("team-b")));
}

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
    assert_eq!(r.status(), 404);
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
async fn nobody_answering_is_409_by_phase_or_503_with_retry_after() {
    let h = Harness::start().await;
    h.sandbox("default", "orphan", Phase::Creating).await;
    let invoke = || {
        h.req(Method::POST, "/api/v1/sandboxes/orphan/invoke", &h.alice)
            .send()
    };
    let (status, _, body) = parts(invoke().await.expect("send")).await;
    assert_eq!(
        (status, body),
        (
            409,
            json!({"error":"invalid_phase","message":"sandbox is Creating"})
        )
    );
    h.set_phase("default", "orphan", Phase::Running).await;
    let (status, retry, body) = parts(invoke().await.expect("send")).await;
    assert_eq!(
        (status, retry.as_deref(), body["error"].clone()),
        (503, Some("2"), json!("executor_unavailable"))
    );
    let r = h
        .req(Method::POST, "/api/v1/sandboxes/demo/stop", &h.alice)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 404);
    h.sandbox("default", "demo", Phase::Running).await;
    let r = parts(
        h.req(Method::POST, "/api/v1/sandboxes/demo/stop", &h.alice)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!((r.0, r.2), (200, json!({"status":"stopping"})));
    let r = h
        .req(Method::DELETE, "/api/v1/sandboxes/demo", &h.alice)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 204);
    let r = parts(
        h.req(Method::GET, "/api/v1/sandboxes/demo", &h.alice)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(r.2["status"], "Deleting");
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
async fn api_keys_are_minted_listed_and_revoked() {
    let h = Harness::start().await;
    let r = parts(
        h.req(Method::GET, "/api/v1/user/me", &h.alice)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(
        r.2,
        json!({"sub":"alice","email":"alice@example.com","name":"alice","groups":[],"isAdmin":false})
    );
    let r = h
        .req(Method::POST, "/api/v1/user/api-keys", &h.alice)
        .json(&json!({"name": "ci", "expiresIn": "1h"}))
        .send()
        .await
        .expect("send");
    let (status, _, created) = parts(r).await;
    assert_eq!(status, 201);
    let key = created["key"].as_str().unwrap_or_default().to_string();
    assert!(key.starts_with("atk_") && key.len() == 52);
    assert!(created["expiresAt"].is_string());
    let me = parts(
        h.req(Method::GET, "/api/v1/user/me", &key)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(me.2["sub"], "alice");
    let list = parts(
        h.req(Method::GET, "/api/v1/user/api-keys", &h.alice)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert!(
        list.2["apiKeys"]
            .as_array()
            .is_some_and(|a| a.iter().any(|k| k["id"] == created["id"]))
    );
    let other = parts(
        h.req(Method::GET, "/api/v1/user/api-keys", &h.bob)
            .send()
            .await
            .expect("send"),
    )
    .await;
    let ids: Vec<_> = other.2["apiKeys"]
        .as_array()
        .map(|a| a.iter().map(|k| k["id"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(ids.len(), 1, "bob sees only his own key");
    assert!(!ids.contains(&created["id"]));
    let path = format!(
        "/api/v1/user/api-keys/{}",
        created["id"].as_str().unwrap_or_default()
    );
    assert_eq!(
        h.req(Method::DELETE, &path, &h.bob)
            .send()
            .await
            .expect("send")
            .status(),
        404
    );
    assert_eq!(
        h.req(Method::DELETE, &path, &h.alice)
            .send()
            .await
            .expect("send")
            .status(),
        204
    );
    let r = parts(
        h.req(Method::GET, "/api/v1/user/me", &key)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!((r.0, r.2), (401, json!({"error":"invalid_api_key"})));

    // Admins may mint keys for other principals; others may not.
    let mint = |k: &str| {
        h.req(Method::POST, "/api/v1/user/api-keys", k)
            .json(&json!({"sub": "carol", "email": "carol@example.com"}))
            .send()
    };
    assert_eq!(mint(&h.alice).await.expect("send").status(), 403);
    let (status, _, carol) = parts(mint(&h.admin).await.expect("send")).await;
    assert_eq!(status, 201);
    let me = parts(
        h.req(
            Method::GET,
            "/api/v1/user/me",
            carol["key"].as_str().unwrap_or_default(),
        )
        .send()
        .await
        .expect("send"),
    )
    .await;
    assert_eq!(
        (me.2["sub"].clone(), me.2["isAdmin"].clone()),
        (json!("carol"), json!(false))
    );
}

#[tokio::test]
async fn templates_are_listed_and_fetched() {
    let h = Harness::start().await;
    let r = parts(
        h.req(Method::GET, "/api/v1/templates", &h.bob)
            .send()
            .await
            .expect("send"),
    )
    .await;
    let names: Vec<_> = r.2["templates"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| t["name"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(names.len(), 3, "{names:?}");
    let r = parts(
        h.req(Method::GET, "/api/v1/templates/python-agent", &h.bob)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!((r.0, r.2["mode"].clone()), (200, json!("agent")));
    assert!(r.2["spec"]["agent"].is_object());
    let r = parts(
        h.req(Method::GET, "/api/v1/templates/nope", &h.bob)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(
        (r.0, r.2["error"].clone()),
        (404, json!("template_not_found"))
    );
}

#[tokio::test]
async fn a_key_removed_from_the_store_stops_working_within_the_cache_ttl() {
    let h = Harness::start().await;
    let key = agenttier_router::generate_api_key();
    let p = agenttier_bus::model::Principal {
        sub: "dave".into(),
        ..Default::default()
    };
    agenttier_router::ensure_api_key(h.store.as_ref(), &key, p.clone(), "k")
        .await
        .expect("key");
    agenttier_router::ensure_api_key(h.store.as_ref(), &key, p, "k")
        .await
        .expect("idempotent");
    let me = || h.req(Method::GET, "/api/v1/user/me", &key).send();
    assert_eq!(me().await.expect("send").status(), 200);
    // As another router would: straight from the store, bypassing this one's cache.
    let hash = agenttier_bus::store::Store::list(h.store.as_ref(), "apikeys.")
        .await
        .expect("list")
        .into_iter()
        .find(|(_, e)| {
            serde_json::from_slice::<Value>(&e.value).is_ok_and(|v| v["principal"]["sub"] == "dave")
        })
        .map(|(k, _)| k)
        .expect("dave's key");
    agenttier_bus::store::Store::delete(h.store.as_ref(), &hash)
        .await
        .expect("delete");
    let began = Instant::now();
    while me().await.expect("send").status() == 200 {
        assert!(
            began.elapsed() < Duration::from_millis(2500),
            "revocation took too long"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
