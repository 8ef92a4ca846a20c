//! Relay behaviour over the in-process bus, with a fake executor's replay.

use std::time::Duration;

use agenttier_bus::Headers;
use agenttier_bus::memory;
use agenttier_bus::model::Principal;
use agenttier_bus::msg::{
    GapData, LogData, Rejection, ReplayRequest, SandboxReplayRequest, StartData,
};
use agenttier_bus::subject::Subjects;
use bytes::Bytes;

use super::*;

const INV: &str = "inv-0123456789abcdef01234567";

fn log(seq: u64) -> Event {
    Event {
        seq,
        kind: EventKind::Log(LogData {
            stream: "stdout".into(),
            data: format!("line {seq}"),
            encoding: None,
            partial: false,
        }),
    }
}

fn exit(seq: u64) -> Event {
    Event {
        seq,
        kind: EventKind::Exit(ExitData {
            invoke_id: INV.into(),
            exit_code: 0,
            duration_ms: 5,
            reason: ExitReason::Completed,
            cause: None,
            message: None,
        }),
    }
}

fn heartbeat(seq: u64) -> Event {
    Event {
        seq,
        kind: EventKind::Heartbeat,
    }
}

fn sandbox_replay_subject() -> String {
    Subjects::default().sandbox("default", "demo", agenttier_bus::subject::Verb::Replay)
}

fn caller() -> Principal {
    Principal {
        sub: "apikey:alice".into(),
        ..Principal::default()
    }
}

fn invoke_relay(bus: &memory::Bus, liveness: Duration, shutdown: CancellationToken) -> Relay {
    let s = Subjects::default();
    Relay {
        bus: Arc::new(bus.clone()),
        kind: Kind::Invoke {
            invoke_id: INV.into(),
            replay: s.invoke_replay(INV),
            sandbox: Some(SandboxReplay {
                subject: sandbox_replay_subject(),
                caller: caller(),
            }),
            attached: Some(s.invoke_attached(INV)),
            started_at: None,
        },
        liveness,
        attach_interval: Duration::from_millis(50),
        shutdown,
    }
}

async fn start(
    bus: &memory::Bus,
    liveness: Duration,
) -> (mpsc::Receiver<Relayed>, CancellationToken) {
    let sub = bus
        .subscribe(Subjects::default().invoke_events(INV))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let token = CancellationToken::new();
    (
        invoke_relay(bus, liveness, token.clone()).spawn(sub, 0, None),
        token,
    )
}

async fn publish(bus: &memory::Bus, ev: &Event) {
    let payload = Bytes::from(serde_json::to_vec(ev).unwrap_or_default());
    let _ = bus
        .publish(
            Subjects::default().invoke_events(INV),
            Headers::new(),
            payload,
        )
        .await;
}

/// A fake executor answering replays from a fixed retained log.
async fn serve_replay(bus: &memory::Bus, retained: Vec<Event>, finished: bool) {
    let mut sub = bus
        .subscribe(Subjects::default().invoke_replay(INV))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let bus = bus.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let Ok(req) = m.json::<ReplayRequest>() else {
                continue;
            };
            // As the executor does: at most `limit` events, about 512 KiB.
            let mut bytes = 0;
            let reply = ReplayReply {
                first_retained: retained.first().map(|e| e.seq).unwrap_or(1),
                events: retained
                    .iter()
                    .filter(|e| e.seq > req.after)
                    .take(req.limit as usize)
                    .take_while(|e| {
                        bytes += serde_json::to_vec(e).map(|v| v.len()).unwrap_or(0);
                        bytes <= 512 * 1024
                    })
                    .cloned()
                    .collect(),
                finished,
            };
            let _ = agenttier_bus::respond_json(&bus, &m, &reply).await;
        }
    });
}

/// A fake sandbox actor answering `sbx.default.demo.replay`: the retained
/// `events` of [`INV`] for [`caller`], a refusal for anyone or anything else.
async fn serve_sandbox_replay(bus: &memory::Bus, retained: Vec<Event>) {
    let mut sub = bus
        .subscribe(sandbox_replay_subject())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let bus = bus.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let req: SandboxReplayRequest = m.json().unwrap_or_else(|e| panic!("{e}"));
            let reply = if req.invoke_id == INV && req.caller == caller() {
                agenttier_bus::msg::Reply::Ok(ReplayReply {
                    first_retained: 1,
                    events: retained
                        .iter()
                        .filter(|e| e.seq > req.after)
                        .cloned()
                        .collect(),
                    finished: retained.last().is_some_and(|e| e.kind.is_terminal()),
                })
            } else {
                agenttier_bus::msg::Reply::Rejected(
                    Rejection::new(404, "not_found").message("invoke not found"),
                )
            };
            let _ = agenttier_bus::respond_json(&bus, &m, &reply).await;
        }
    });
}

/// Everything the relay delivers until it ends (bounded by 3 s).
async fn drain(mut rx: mpsc::Receiver<Relayed>) -> Vec<Event> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(e) = rx.recv().await {
            out.push(e.into_event().expect("a decodable event"));
        }
    })
    .await;
    out
}

fn seqs(events: &[Event]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

#[tokio::test]
async fn holes_are_filled_from_replay_in_order() {
    let bus = memory::Bus::new();
    serve_replay(&bus, vec![log(1), log(2), log(3)], false).await;
    let (rx, _t) = start(&bus, Duration::from_secs(2)).await;
    publish(&bus, &log(1)).await;
    publish(&bus, &log(3)).await;
    publish(&bus, &log(2)).await;
    publish(&bus, &exit(4)).await;
    let got = drain(rx).await;
    assert_eq!(seqs(&got), vec![1, 2, 3, 4]);
    assert_eq!(got[1], log(2));
    assert!(got[3].kind.is_terminal());
}

#[tokio::test]
async fn what_replay_no_longer_has_becomes_a_gap() {
    let bus = memory::Bus::new();
    serve_replay(&bus, vec![log(3)], false).await;
    let (rx, _t) = start(&bus, Duration::from_secs(2)).await;
    publish(&bus, &log(1)).await;
    publish(&bus, &log(3)).await;
    publish(&bus, &exit(4)).await;
    let got = drain(rx).await;
    assert_eq!(seqs(&got), vec![1, 2, 3, 4]);
    assert_eq!(got[1].kind, EventKind::Gap(GapData { from: 2, to: 2 }));
}

#[tokio::test]
async fn a_heartbeat_ahead_of_us_fetches_the_missed_events() {
    let bus = memory::Bus::new();
    serve_replay(&bus, vec![log(1), log(2)], false).await;
    let (rx, _t) = start(&bus, Duration::from_secs(2)).await;
    publish(&bus, &heartbeat(2)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    publish(&bus, &exit(3)).await;
    assert_eq!(seqs(&drain(rx).await), vec![1, 2, 3]);
}

#[tokio::test]
async fn silence_with_nobody_answering_replay_ends_with_executor_lost() {
    let bus = memory::Bus::new();
    let (rx, _t) = start(&bus, Duration::from_millis(200)).await;
    publish(
        &bus,
        &Event {
            seq: 1,
            kind: EventKind::Start(StartData {
                invoke_id: INV.into(),
                started_at: now_unix_ms(),
            }),
        },
    )
    .await;
    let got = drain(rx).await;
    assert_eq!(seqs(&got), vec![1, 2]);
    match &got[1].kind {
        EventKind::Exit(d) => {
            assert_eq!((d.exit_code, d.reason), (-1, ExitReason::Error));
            assert_eq!(d.cause.as_deref(), Some("executor_lost"));
            assert_eq!(d.invoke_id, INV);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn silence_while_replay_answers_keeps_waiting_and_a_finished_run_is_drained() {
    let bus = memory::Bus::new();
    serve_replay(&bus, vec![log(1), log(2), exit(3)], true).await;
    let (rx, _t) = start(&bus, Duration::from_millis(100)).await;
    // Nothing live at all: the liveness probe's replay delivers the whole run.
    assert_eq!(seqs(&drain(rx).await), vec![1, 2, 3]);
}

#[tokio::test]
async fn resume_applies_the_initial_replay_then_follows_live() {
    let bus = memory::Bus::new();
    let sub = bus
        .subscribe(Subjects::default().invoke_events(INV))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let initial = ReplayReply {
        events: vec![log(3)],
        finished: false,
        first_retained: 1,
    };
    let rx = invoke_relay(&bus, Duration::from_secs(2), CancellationToken::new()).spawn(
        sub,
        2,
        Some(initial),
    );
    publish(&bus, &log(3)).await;
    publish(&bus, &exit(4)).await;
    assert_eq!(seqs(&drain(rx).await), vec![3, 4]);
}

#[tokio::test]
async fn attached_is_published_while_relaying_and_shutdown_ends_the_stream() {
    let bus = memory::Bus::new();
    let mut attached = bus
        .subscribe(Subjects::default().invoke_attached(INV))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (rx, token) = start(&bus, Duration::from_secs(5)).await;
    for _ in 0..3 {
        let got = tokio::time::timeout(Duration::from_secs(1), attached.next()).await;
        assert!(matches!(got, Ok(Some(_))));
    }
    token.cancel();
    let got = drain(rx).await;
    assert_eq!(
        seqs(&got),
        vec![0],
        "the exit repeats the last id delivered"
    );
    match &got[0].kind {
        EventKind::Exit(d) => assert_eq!(d.cause.as_deref(), Some("router_shutdown")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn configure_streams_end_with_an_error_when_the_actor_is_gone() {
    let bus = memory::Bus::new();
    let s = Subjects::default();
    let sub = bus
        .subscribe(s.configure_events("cfg-1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let relay = Relay {
        bus: Arc::new(bus.clone()),
        kind: Kind::Configure {
            replay: s.configure_replay("cfg-1"),
        },
        liveness: Duration::from_millis(100),
        attach_interval: Duration::from_secs(5),
        shutdown: CancellationToken::new(),
    };
    let rx = relay.spawn(sub, 0, None);
    let got = drain(rx).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].kind.name(), "error");
}

fn big_log(seq: u64) -> Event {
    Event {
        seq,
        kind: EventKind::Log(LogData {
            stream: "stdout".into(),
            data: format!("{seq:08}{}", "x".repeat(64 * 1024 - 8)),
            encoding: None,
            partial: false,
        }),
    }
}

#[tokio::test]
async fn a_dropped_tail_with_the_exit_is_fetched_at_once_not_after_the_silence() {
    let bus = memory::Bus::new();
    let mut all: Vec<Event> = (1..=200).map(big_log).collect();
    all.push(exit(201));
    serve_replay(&bus, all.clone(), true).await;
    // Liveness far beyond drain's 3 s: only the drop signal can fetch the tail.
    let (rx, _token) = start(&bus, Duration::from_secs(30)).await;
    for e in &all {
        publish(&bus, e).await;
    }
    // The client reads only now: ~13 MiB were published against a 4 MiB feed.
    let got = drain(rx).await;
    assert_eq!(seqs(&got), (1..=201).collect::<Vec<_>>());
    assert_eq!(got, all, "every event exactly as published");
}

#[tokio::test]
async fn a_client_that_stops_reading_stays_attached_and_deliveries_are_reported() {
    let bus = memory::Bus::new();
    let mut attached = bus
        .subscribe(Subjects::default().invoke_attached(INV))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let all: Vec<Event> = (1..=CLIENT_BUFFER as u64 * 2).map(big_log).collect();
    serve_replay(&bus, all.clone(), false).await;
    let (mut rx, _token) = start(&bus, Duration::from_secs(30)).await;
    // More than the client buffer: the relay blocks handing events over.
    for e in &all {
        publish(&bus, e).await;
    }
    let delivered = |m: Message| m.json::<Attached>().ok().and_then(|a| a.delivered);
    // Still attached while blocked (interval 50 ms), and the report is
    // what was handed over, not what was published.
    let mut last = None;
    for _ in 0..6 {
        let m = tokio::time::timeout(Duration::from_secs(1), attached.next()).await;
        let Ok(Some(m)) = m else {
            panic!("no attached report while the client is stalled")
        };
        last = delivered(m);
    }
    let stalled = last.unwrap_or_else(|| panic!("a report without delivered"));
    assert!(
        (1..CLIENT_BUFFER as u64 * 2).contains(&stalled),
        "reported {stalled} while stalled"
    );
    for _ in 0..CLIENT_BUFFER * 2 {
        let _ = rx.recv().await;
    }
    let caught_up = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if let Some(m) = attached.next().await
                && delivered(m) == Some(CLIENT_BUFFER as u64 * 2)
            {
                return;
            }
        }
    })
    .await;
    assert!(caught_up.is_ok(), "the report followed the reading");
}

#[tokio::test]
async fn many_small_events_within_the_byte_bound_are_held_not_dropped() {
    let bus = memory::Bus::new();
    // No replay served: a dropped event could only come back as a gap.
    let mut all: Vec<Event> = (1..=20_000).map(log).collect();
    all.push(exit(20_001));
    let (rx, _token) = start(&bus, Duration::from_secs(30)).await;
    // ~3.8 MiB as held (payload + overhead) while the client reads nothing:
    // more events than the feed's count limit used to be (16,384), fewer
    // bytes than its bound.
    for e in &all {
        publish(&bus, e).await;
    }
    // The client starts reading only once the feed has taken everything.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = drain(rx).await;
    assert_eq!(got.len(), all.len(), "nothing dropped, nothing missing");
    assert_eq!(got, all);
}

#[tokio::test]
async fn once_the_runs_own_replay_is_gone_the_sandbox_answers_for_it() {
    let bus = memory::Bus::new();
    // The executor's tail is over: only the sandbox's subject answers.
    serve_sandbox_replay(&bus, vec![log(1), log(2), log(3), exit(4)]).await;
    let (rx, _t) = start(&bus, Duration::from_millis(200)).await;
    publish(&bus, &log(1)).await;
    // 2 and 3 were lost on the way; the exit names the hole.
    publish(&bus, &exit(4)).await;
    let got = drain(rx).await;
    assert_eq!(seqs(&got), vec![1, 2, 3, 4]);
    assert!(got.iter().all(|e| !matches!(e.kind, EventKind::Gap(_))));
}

#[tokio::test]
async fn a_sandbox_that_does_not_know_the_run_ends_it_as_lost() {
    let bus = memory::Bus::new();
    // It has the run, but not for this caller.
    serve_sandbox_replay(&bus, vec![log(1), log(2), exit(3)]).await;
    let sub = bus
        .subscribe(Subjects::default().invoke_events(INV))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut relay = invoke_relay(&bus, Duration::from_millis(200), CancellationToken::new());
    if let Kind::Invoke { sandbox, .. } = &mut relay.kind {
        sandbox.as_mut().expect("a sandbox").caller.sub = "apikey:mallory".into();
    }
    let rx = relay.spawn(sub, 0, None);
    publish(&bus, &log(1)).await;
    let got = drain(rx).await;
    assert_eq!(seqs(&got), vec![1, 2]);
    match &got[1].kind {
        EventKind::Exit(d) => assert_eq!(d.cause.as_deref(), Some("executor_lost")),
        other => panic!("{other:?}"),
    }
}
