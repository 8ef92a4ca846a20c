//! `agenttier-router`: the stateless HTTP front of AgentTier.
//!
//! It authenticates callers, serves the HTTP API of SPEC §2 over the state
//! store, forwards every sandbox operation as one request on the bus to the
//! sandbox's owning actor, and relays invoke and configure events to clients
//! as Server-Sent Events (ordered by `seq`, healed by replay, ended when the
//! executor goes silent).
//!
//! It is not where decisions about a sandbox's live state are made: the
//! actor answers admission (mode, phase, entrypoint, concurrency, size) and
//! the router maps its answer to HTTP. Nothing here outlives a request except
//! a 2-second cache of API-key lookups, so any number of routers can run.

mod actor;
mod auth;
mod code;
mod configure;
mod error;
mod files;
mod invoke;
mod keys;
mod records;
mod relay;
mod resolve;
mod sandboxes;
mod sse;
mod templates;
mod terminal;

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use tokio_util::sync::CancellationToken;

use agenttier_bus::store::Store;
use agenttier_bus::subject::Subjects;

pub use agenttier_bus::model::Principal;
pub use error::{ApiError, Error, Result};
pub use keys::{ensure_api_key, generate_api_key};

/// Tunables of a router; the defaults are the SPEC's numbers.
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest invoke stdin (SPEC: 16 MiB).
    pub max_stdin_bytes: u64,
    /// How long a bus request to an actor may take.
    pub request_timeout: Duration,
    /// How long [`serve`] waits for open requests after shutdown.
    pub shutdown_grace: Duration,
    /// Silence after which a relayed invoke asks for a replay, and ends with
    /// `executor_lost` when nobody answers it.
    pub liveness_timeout: Duration,
    /// How often a relaying router says it is still attached to an invoke.
    pub attach_interval: Duration,
    /// SSE keepalive comment interval.
    pub keepalive_interval: Duration,
    /// How long an API-key lookup is cached (revocation takes at most this).
    pub key_cache_ttl: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_stdin_bytes: 16 * 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            liveness_timeout: Duration::from_secs(3),
            attach_interval: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(15),
            key_cache_ttl: Duration::from_secs(2),
        }
    }
}

/// The handles a router needs; every field is a cheap clone.
#[derive(Clone)]
pub struct AppState {
    pub bus: Arc<dyn agenttier_bus::Bus>,
    pub store: Arc<dyn Store>,
    pub subjects: Subjects,
    pub config: Arc<Config>,
}

/// What handlers share: the caller's [`AppState`] plus the router's own
/// short-lived pieces.
#[derive(Clone)]
pub(crate) struct Ctx(Arc<Inner>);

pub(crate) struct Inner {
    pub app: AppState,
    pub keys: auth::KeyCache,
    pub records: records::Records,
    /// Fires on shutdown; every SSE stream ends on it.
    pub shutdown: CancellationToken,
}

impl Deref for Ctx {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Deref for Inner {
    type Target = AppState;

    fn deref(&self) -> &AppState {
        &self.app
    }
}

/// The router's HTTP app. Streams it serves end only when their run ends or
/// the client leaves; [`serve`] also ends them on shutdown.
pub fn app(state: AppState) -> Router {
    routes(state, CancellationToken::new())
}

fn routes(state: AppState, shutdown: CancellationToken) -> Router {
    let ctx = Ctx(Arc::new(Inner {
        keys: auth::KeyCache::new(state.config.key_cache_ttl),
        records: records::Records::start(state.store.clone()),
        app: state,
        shutdown,
    }));
    let api = Router::new()
        .route("/user/me", get(keys::me))
        .route("/user/api-keys", post(keys::create).get(keys::list))
        .route("/user/api-keys/{id}", delete(keys::revoke))
        .route("/sandboxes", post(sandboxes::create).get(sandboxes::list))
        .route(
            "/sandboxes/{id}",
            get(sandboxes::get).delete(sandboxes::delete),
        )
        .route("/sandboxes/{id}/stop", post(sandboxes::stop))
        .route("/sandboxes/{id}/resume", post(sandboxes::resume))
        .route("/sandboxes/{id}/invoke", post(invoke::invoke))
        .route("/sandboxes/{id}/invoke/cancel", post(invoke::cancel))
        .route("/sandboxes/{id}/invokes", get(invoke::invokes))
        .route(
            "/sandboxes/{id}/invokes/{invoke_id}/events",
            get(invoke::events),
        )
        .route(
            "/sandboxes/{id}/configure",
            post(configure::configure).layer(DefaultBodyLimit::max(configure::BODY_LIMIT)),
        )
        .route(
            "/sandboxes/{id}/configure/install-log",
            get(configure::install_log),
        )
        .route("/sandboxes/{id}/exec", post(code::exec))
        // v0.8 clients list with `/files/?path=`; `{*path}` never matches an
        // empty tail, so both spellings of the list route are here.
        .route("/sandboxes/{id}/files", get(files::list))
        .route("/sandboxes/{id}/files/", get(files::list))
        .route(
            "/sandboxes/{id}/files/{*path}",
            get(files::read).put(files::write).delete(files::delete),
        )
        .route("/sandboxes/{id}/terminal", get(terminal::terminal))
        .route("/templates", get(templates::list))
        .route("/templates/{name}", get(templates::get))
        .fallback(no_route)
        .method_not_allowed_fallback(no_method)
        .layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            auth::require,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/api/v1", api)
        .fallback(no_route)
        .method_not_allowed_fallback(no_method)
        .with_state(ctx)
}

/// Serves `app(state)` on `listener` until `shutdown` fires, then ends every
/// open stream and waits at most `config.shutdown_grace` for open requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> Result<()> {
    let grace = state.config.shutdown_grace;
    let router = routes(state, shutdown.child_token());
    // Events are small writes that must leave at once: no Nagle delay (it
    // meets the client's delayed ACK and costs 40 ms per response).
    use axum::serve::ListenerExt as _;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
    });
    let server =
        axum::serve(listener, router).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    tokio::select! {
        r = server => Ok(r?),
        _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(?grace, "requests still open after the shutdown grace period; closing them");
            Ok(())
        }
    }
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(ctx): State<Ctx>) -> impl IntoResponse {
    if ctx.bus.is_connected() {
        (
            StatusCode::OK,
            axum::Json(serde_json::json!({"status": "ok"})),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(
                serde_json::json!({"status": "unavailable", "message": "bus not connected"}),
            ),
        )
    }
}

async fn metrics() -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        "# agenttier router\n",
    )
}

/// Unknown routes (v0.8 clients call several this server does not have) say
/// so, rather than reading like "sandbox not found".
async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NoRoute {
        method,
        path: uri.path().to_string(),
        allowed: false,
    }
}

async fn no_method(method: Method, uri: Uri) -> ApiError {
    ApiError::NoRoute {
        method,
        path: uri.path().to_string(),
        allowed: true,
    }
}

/// `<prefix>` + 24 lowercase hex from a CSPRNG: invoke and configure ids.
pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(rand::random::<[u8; 12]>()))
}

/// Whether `s` is `<prefix>` + 24 lowercase hex (so it is safe in a subject).
pub(crate) fn is_id(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix).is_some_and(|h| {
        h.len() == 24
            && h.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefix_and_24_hex() {
        let a = new_id("inv-");
        let b = new_id("inv-");
        assert_ne!(a, b);
        assert!(is_id(&a, "inv-"), "{a}");
        assert_eq!(a.len(), 28);
        assert!(is_id(&new_id("cfg-"), "cfg-"));
        assert!(!is_id("inv-ABCDEF0123456789abcdef01", "inv-"));
        assert!(!is_id("inv-abc", "inv-"));
        assert!(!is_id("inv-0123456789abcdef01234567.x", "inv-"));
    }
}
