//! An integration that watches AgentTier from the outside, over NATS.
//!
//! It subscribes to every sandbox lifecycle/agent event
//! (`agenttier.events.>`) and to every invoke's event stream
//! (`agenttier.inv.*.events`), decodes each message with the schemas of this
//! crate and prints one line per message. Nothing here is privileged: an
//! integration needs only a NATS connection and these subjects
//! (`docs/bus.md`).
//!
//! ```text
//! cargo run -p agenttier-bus --example watch_events -- nats://127.0.0.1:4222
//! cargo run -p agenttier-bus --example watch_events -- nats://127.0.0.1:4222 --heartbeats
//! cargo run -p agenttier-bus --example watch_events -- nats://127.0.0.1:4222 --prefix mytier
//! ```
//!
//! Options: `--prefix <p>` for a deployment with another subject prefix,
//! `--heartbeats` to also print each invoke's liveness heartbeats and the
//! executors' `node.*.heartbeat` (hidden by default: one per second each).
//!
//! Delivery on core NATS is at most once: a watcher that is slow or
//! disconnected misses messages. Invoke events carry `seq`, so a gap is
//! visible (this example reports it); a consumer that must not lose events
//! asks the executor for them on `agenttier.inv.<id>.replay` (while the run
//! lives and for 10 s after), or later on its sandbox's
//! `agenttier.sbx.<ns>.<name>.replay` (`docs/bus.md`).

use std::collections::HashMap;

use agenttier_bus::msg::{Event, EventKind, Heartbeat, LifecycleEvent, WIRE_VERSION};
use agenttier_bus::nats::{Bus, ConnectOptions};
use agenttier_bus::subject::Subjects;
use agenttier_bus::{Bus as _, Message, WIRE_HEADER};
use futures::StreamExt;

struct Args {
    url: String,
    prefix: String,
    heartbeats: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        url: "nats://127.0.0.1:4222".to_string(),
        prefix: "agenttier".to_string(),
        heartbeats: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--prefix" => args.prefix = it.next().ok_or("--prefix needs a value")?,
            "--heartbeats" => args.heartbeats = true,
            "-h" | "--help" => {
                return Err("usage: watch_events [NATS_URL] [--prefix P] [--heartbeats]".into());
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s => args.url = s.to_string(),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args).await {
        eprintln!("watch_events: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), agenttier_bus::Error> {
    let subjects = Subjects::new(args.prefix.clone());
    let bus = Bus::connect(
        &args.url,
        ConnectOptions {
            name: "agenttier-watch-events".into(),
            ..Default::default()
        },
    )
    .await?;

    // `inv.<id>.events` with a `*` in place of the id: every invoke.
    let lifecycle = subjects.all_sandbox_events();
    let invokes = subjects.invoke_events("*");
    let mut streams = vec![
        bus.subscribe(lifecycle.clone()).await?,
        bus.subscribe(invokes.clone()).await?,
    ];
    if args.heartbeats {
        streams.push(bus.subscribe(subjects.all_heartbeats()).await?);
    }
    // Make sure the subscriptions reached the server before saying so.
    bus.flush().await?;
    eprintln!(
        "watching {lifecycle} and {invokes}{} on {} (Ctrl-C to stop)",
        if args.heartbeats {
            " (+ heartbeats)"
        } else {
            ""
        },
        args.url
    );

    let mut all = futures::stream::select_all(streams);
    // The last seq seen per invoke, to notice messages lost in transit.
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    loop {
        tokio::select! {
            msg = all.next() => match msg {
                Some(msg) => print_message(&subjects, &msg, args.heartbeats, &mut last_seq),
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    Ok(())
}

fn print_message(
    subjects: &Subjects,
    msg: &Message,
    heartbeats: bool,
    last_seq: &mut HashMap<String, u64>,
) {
    // The wire version header (`Agenttier-Wire`) is set on request/reply
    // bodies; events may carry it too. A newer version may add fields that
    // this build ignores, or change shapes it cannot read.
    if let Some(v) = msg.headers.get(WIRE_HEADER)
        && v != WIRE_VERSION.to_string()
    {
        println!(
            "{}  (wire version {v}, this build reads {WIRE_VERSION})",
            msg.subject
        );
    }
    let tokens: Vec<&str> = msg.subject.split('.').collect();
    let prefix_len = subjects.prefix().split('.').count();
    let rest = &tokens[prefix_len.min(tokens.len())..];
    let trace = msg
        .headers
        .get("traceparent")
        .map(|t| format!("  traceparent={t}"))
        .unwrap_or_default();

    match rest {
        ["events", ns, name] => match msg.json::<LifecycleEvent>() {
            Ok(e) => println!(
                "{}  {ns}/{name}  {}  actor={}{}  details={}{trace}",
                e.timestamp,
                e.event_type,
                e.actor,
                e.invoke_id
                    .map(|i| format!("  invoke={i}"))
                    .unwrap_or_default(),
                e.details
            ),
            Err(err) => println!("{}  undecodable lifecycle event: {err}", msg.subject),
        },
        ["inv", id, "events"] => match msg.json::<Event>() {
            Ok(ev) => {
                let id = id.to_string();
                if let EventKind::Heartbeat = ev.kind {
                    if heartbeats {
                        println!("{id}  heartbeat (last seq {})", ev.seq);
                    }
                    return;
                }
                let prev = last_seq.get(&id).copied().unwrap_or(0);
                if ev.seq > prev + 1 {
                    println!(
                        "{id}  (missed seq {}..={}; ask {} for them)",
                        prev + 1,
                        ev.seq - 1,
                        subjects.invoke_replay(&id)
                    );
                }
                if ev.seq > prev {
                    last_seq.insert(id.clone(), ev.seq);
                }
                println!(
                    "{id}  #{}  {}  {}{trace}",
                    ev.seq,
                    ev.kind.name(),
                    ev.kind.data_json()
                );
                if ev.kind.is_terminal() {
                    last_seq.remove(&id);
                }
            }
            Err(err) => println!("{}  undecodable invoke event: {err}", msg.subject),
        },
        ["node", node, "heartbeat"] => match msg.json::<Heartbeat>() {
            Ok(h) => println!(
                "node {node}  heartbeat  sandboxes={}  at={}",
                h.sandboxes, h.at
            ),
            Err(err) => println!("{}  undecodable heartbeat: {err}", msg.subject),
        },
        _ => println!("{}  {}", msg.subject, String::from_utf8_lossy(&msg.payload)),
    }
}
