//! Crash cycles: runs in flight while an executor, a router or NATS is
//! killed, a client drops or a run is canceled. After every cycle the
//! sandbox's whole cap is free again: no slot leaks, whatever died.
//!
//! One cycle of each fault by default; `AGENTTIER_FAULT_SCALE=full` runs 100.

use std::time::{Duration, Instant};

use agenttier_tests::client::{Client, Streamed, finish, wait_ready};
use agenttier_tests::process::{Distributed, System};
use serde_json::json;

#[derive(Debug, Clone, Copy)]
enum Fault {
    KillExecutor,
    KillRouter,
    RestartNats,
    DropClient,
    Cancel,
}

const FAULTS: [Fault; 5] = [
    Fault::KillExecutor,
    Fault::KillRouter,
    Fault::RestartNats,
    Fault::DropClient,
    Fault::Cancel,
];

fn cycles() -> usize {
    if agenttier_tests::process::full_scale() {
        100
    } else {
        FAULTS.len()
    }
}

/// Starts two runs (the whole cap of `capped`) through router 1; returns
/// their open streams.
async fn fill_the_cap(c: &Client) -> Vec<agenttier_tests::client::EventStream> {
    let mut out = Vec::new();
    for _ in 0..2 {
        let mut s = c.invoke_stream("cyc-a", "", &[]).await.stream();
        s.until("start").await;
        out.push(s);
    }
    out
}

/// Waits until both slots admit again: two invokes run at once.
async fn cap_is_free(sys: &Distributed, within: Duration) {
    let started = Instant::now();
    let c = Client::new(&sys.urls()[1], Some(sys.admin_key()));
    loop {
        let a = c.invoke_stream("cyc-a", "", &[("timeout", "10s")]).await;
        let b = c.invoke_stream("cyc-a", "", &[("timeout", "10s")]).await;
        match (a, b) {
            (Streamed::Stream(a), Streamed::Stream(b)) => {
                let (a, b) = (finish(a).await, finish(b).await);
                for run in [a, b] {
                    assert_eq!(
                        run.event("exit").data["reason"],
                        "completed",
                        "{:?}",
                        run.events
                    );
                }
                return;
            }
            (a, b) => {
                for s in [a, b] {
                    if let Streamed::Stream(s) = s {
                        finish(s).await;
                    }
                }
                assert!(
                    started.elapsed() < within,
                    "the cap was not free again within {within:?}"
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_slot_leaks_across_crash_cycles() {
    let mut sys = Distributed::start();
    wait_ready(&sys).await;
    let c = Client::new(&sys.urls()[1], Some(sys.admin_key()));
    c.create_running("cyc-a", "capped").await;
    // Short enough to cycle fast, long enough to be in flight when things die.
    c.configure(
        "cyc-a",
        &json!({"entrypoint": ["sh", "-c", "echo up; sleep 2; echo down"]}),
    )
    .await;

    for n in 0..cycles() {
        let fault = FAULTS[n % FAULTS.len()];
        let c = Client::new(&sys.urls()[1], Some(sys.admin_key()));
        let mut streams = fill_the_cap(&c).await;
        match fault {
            Fault::KillExecutor => {
                sys.executor().kill();
                for s in &mut streams {
                    let exit = s.until("exit").await;
                    assert_eq!(exit.data["cause"], "executor_lost", "cycle {n}: {exit:?}");
                }
                sys.executor().restart();
            }
            Fault::KillRouter => {
                // The streams ride router 1; kill it under them.
                sys.router(1).kill();
                drop(streams);
                sys.router(1).restart();
                wait_ready(&sys).await;
            }
            Fault::RestartNats => {
                sys.nats_mut().kill();
                tokio::time::sleep(Duration::from_millis(500)).await;
                sys.nats_mut().restart();
                for s in &mut streams {
                    let exit = s.until("exit").await;
                    assert_eq!(exit.data["reason"], "completed", "cycle {n}: {exit:?}");
                }
            }
            Fault::DropClient => drop(streams),
            Fault::Cancel => {
                for s in &streams {
                    let id = s.seen[0].data["invokeId"]
                        .as_str()
                        .expect("invokeId")
                        .to_string();
                    c.cancel("cyc-a", Some(&id)).await.expect(204);
                }
                for s in &mut streams {
                    assert_eq!(
                        s.until("exit").await.data["reason"],
                        "canceled",
                        "cycle {n}"
                    );
                }
            }
        }
        cap_is_free(&sys, Duration::from_secs(30)).await;
        eprintln!("cycle {n} ({fault:?}): the cap is free again");
    }
}
