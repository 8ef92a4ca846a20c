//! Sandbox create/get/list/delete/stop and name resolution as a client sees them.

mod support;

use agenttier_bus::model::Phase;
use reqwest::Method;
use serde_json::{Value, json};
use support::{Harness, parts};

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

async fn body(h: &Harness, method: Method, path: &str) -> (u16, Value) {
    let r = h.req(method, path, &h.alice).send().await.expect("send");
    let (code, _, body) = parts(r).await;
    (code, body)
}

async fn phase(h: &Harness, name: &str) -> Value {
    let path = format!("/api/v1/sandboxes/{name}");
    body(h, Method::GET, &path).await.1["status"].clone()
}

/// A router's copy of the records can lag behind the store (a write through
/// another router, or the executor's, still on its way). When nobody answers
/// the sandbox's subject, the phase that decides between 409 and 503 is read
/// from the store, not taken from the copy.
#[tokio::test]
async fn nobody_answering_is_judged_by_the_stored_phase_not_a_lagging_copy() {
    let h = Harness::start().await;
    h.sandbox("default", "orphan", Phase::Creating).await;
    // The list is the copy's: once it names the sandbox, the copy holds it.
    let mut held = false;
    for _ in 0..500 {
        let list = body(&h, Method::GET, "/api/v1/sandboxes").await.1;
        if list["sandboxes"][0]["name"] == "orphan" {
            held = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(held, "the copy never got the record");
    h.freeze_copy();
    let invoke = "/api/v1/sandboxes/orphan/invoke";

    h.set_phase("default", "orphan", Phase::Running).await;
    assert_eq!(phase(&h, "orphan").await, "Creating", "the copy lags");
    let (code, b) = body(&h, Method::POST, invoke).await;
    assert_eq!(
        (code, b["error"].clone()),
        (503, json!("executor_unavailable"))
    );
    // That read brought the copy up to the store.
    assert_eq!(phase(&h, "orphan").await, "Running");

    h.set_phase("default", "orphan", Phase::Stopped).await;
    assert_eq!(phase(&h, "orphan").await, "Running", "the copy lags again");
    let (code, b) = body(&h, Method::POST, invoke).await;
    assert_eq!(
        (code, b),
        (
            409,
            json!({"error":"invalid_phase","message":"sandbox is Stopped"})
        )
    );
}
