//! Authentication, API keys and templates as a client sees them.

mod support;

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use support::{Harness, parts};

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
    // Endpoints this server does not have say so (after authentication).
    let r = parts(
        h.req(Method::GET, "/api/v1/sandboxes/x/ports", &h.alice)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(
        (r.0, r.2["error"].clone()),
        (404, json!("endpoint_not_supported"))
    );
    let r = parts(
        h.req(Method::PATCH, "/api/v1/sandboxes/x", &h.alice)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(
        (r.0, r.2["error"].clone()),
        (405, json!("method_not_allowed"))
    );
    let r = parts(get("/api/v1/sandboxes/x/ports").send().await.expect("send")).await;
    assert_eq!(r.0, 401);
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
    assert_eq!(
        list.2["keys"], list.2["apiKeys"],
        "v0.8 clients read `keys`"
    );
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
