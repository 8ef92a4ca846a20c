//! `agenttier-tests`: the harness for tests that run real things — a real
//! `nats-server`, and the `agenttier` binary as separate processes.
//!
//! The tests themselves live in `tests/*.rs`; this library holds only what
//! several of them share: the [`NatsServer`] guard and small async helpers.
//! It is not a place for scenarios or for mocks of AgentTier's own parts.

pub mod client;
pub mod nats_server;
pub mod process;
mod shapes;

use std::future::Future;
use std::time::Duration;

pub use nats_server::{NatsServer, nats_server_binary};

/// The bound on one test scenario; generous, because a slow CI machine
/// should not fail a test, only a hung one.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `fut`, panicking if it takes longer than [`TEST_TIMEOUT`], so a hang
/// fails the test instead of stalling the whole run.
pub async fn bounded<F: Future>(fut: F) -> F::Output {
    match tokio::time::timeout(TEST_TIMEOUT, fut).await {
        Ok(out) => out,
        Err(_) => panic!("test did not finish within {TEST_TIMEOUT:?}"),
    }
}

/// Calls `check` every 20 ms until it returns `true` or `timeout` passes;
/// returns whether it became true.
pub async fn wait_for<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
