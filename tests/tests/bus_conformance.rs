//! One conformance suite for the `Bus` trait, run against the in-process bus
//! and against NATS. Each scenario is written once, over a [`Fixture`] of two
//! handles on the same bus: on NATS two connections, as a router and an
//! executor would have; in process two clones.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agenttier_bus::{Bus, Error, Headers, Message, Subscription, memory, nats};
use agenttier_tests::{NatsServer, bounded, wait_for};
use bytes::Bytes;
use futures::StreamExt;

struct Fixture {
    /// Publishes and sends requests.
    a: Arc<dyn Bus>,
    /// Subscribes and answers.
    b: Arc<dyn Bus>,
    server: Option<NatsServer>,
}

fn memory_fixture() -> Fixture {
    let bus = Arc::new(memory::Bus::new());
    Fixture {
        a: bus.clone(),
        b: bus,
        server: None,
    }
}

async fn nats_fixture() -> Fixture {
    let server = NatsServer::start();
    let url = server.url();
    let connect = || nats::Bus::connect(&url, nats::ConnectOptions::default());
    Fixture {
        a: Arc::new(connect().await.expect("connect a")),
        b: Arc::new(connect().await.expect("connect b")),
        server: Some(server),
    }
}

macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod in_process {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::bounded(super::$scenario(super::memory_fixture())).await;
                }
            )*
        }
        mod over_nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::bounded(async { super::$scenario(super::nats_fixture().await).await })
                        .await;
                }
            )*
        }
    };
}

conformance!(
    connected_bus_reports_connected,
    publish_reaches_subscriber_of_exact_subject,
    star_wildcard_matches_exactly_one_token,
    full_wildcard_matches_one_or_more_tokens,
    subscriber_gets_nothing_for_non_matching_subjects,
    headers_round_trip_on_publish_and_request,
    invalid_headers_are_rejected_without_panicking,
    queue_group_delivers_each_message_to_one_member_and_to_every_plain_subscriber,
    two_queue_groups_each_get_one_copy,
    request_gets_reply_from_responder,
    json_request_round_trips_typed_bodies,
    request_without_subscriber_fails_fast_with_no_responders,
    request_to_silent_subscriber_times_out,
    concurrent_requests_each_get_their_own_reply_and_a_late_one_is_not_taken,
    dropping_subscription_unsubscribes,
    payload_of_900_kib_round_trips,
    message_over_1_mib_fails_with_too_large,
    invalid_subjects_are_rejected,
    messages_from_one_publisher_arrive_in_order,
);

const WAIT: Duration = Duration::from_secs(5);
/// How long a subscription must stay silent to count as having nothing more.
const QUIET: Duration = Duration::from_millis(300);

/// Subscribes and flushes, so the server knows the interest before anyone
/// (on another connection) publishes.
async fn subscribe(bus: &dyn Bus, subject: &str) -> Subscription {
    let sub = bus.subscribe(subject.into()).await.expect("subscribe");
    bus.flush().await.expect("flush");
    sub
}

async fn queue_subscribe(bus: &dyn Bus, subject: &str, group: &str) -> Subscription {
    let sub = bus
        .queue_subscribe(subject.into(), group.into())
        .await
        .expect("queue subscribe");
    bus.flush().await.expect("flush");
    sub
}

async fn publish(bus: &dyn Bus, subject: &str, payload: impl Into<Bytes>) {
    bus.publish(subject.into(), Headers::new(), payload.into())
        .await
        .expect("publish");
}

async fn next(sub: &mut Subscription) -> Message {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("no message within 5 s")
        .expect("subscription ended")
}

/// The next `n` messages across `subs`, each with the index of the
/// subscription it came on; then asserts that nothing more arrives.
async fn receive(subs: &mut [Subscription], n: usize) -> Vec<(usize, Message)> {
    let mut merged = futures::stream::select_all(
        subs.iter_mut()
            .enumerate()
            .map(|(i, sub)| sub.map(move |m| (i, m))),
    );
    let got: Vec<_> = tokio::time::timeout(WAIT, merged.by_ref().take(n).collect())
        .await
        .unwrap_or_else(|_| panic!("fewer than {n} messages within {WAIT:?}"));
    assert_eq!(got.len(), n, "a subscription ended");
    assert_quiet(&mut merged).await;
    got
}

async fn assert_quiet<S: futures::Stream + Unpin>(stream: &mut S)
where
    S::Item: std::fmt::Debug,
{
    if let Ok(extra) = tokio::time::timeout(QUIET, stream.next()).await {
        panic!("unexpected message {extra:?}");
    }
}

fn subjects(got: Vec<(usize, Message)>) -> Vec<String> {
    got.into_iter().map(|(_, m)| m.subject).collect()
}

fn text(m: &Message) -> &str {
    std::str::from_utf8(&m.payload).expect("utf-8 payload")
}

/// Answers every request on `sub` with `echo: <payload>` and the request's headers.
fn spawn_echo(bus: Arc<dyn Bus>, mut sub: Subscription) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let Some(reply) = m.reply.clone() else {
                continue;
            };
            let payload = [b"echo: ".as_slice(), &m.payload].concat();
            let _ = bus.publish(reply, m.headers.clone(), payload.into()).await;
        }
    })
}

async fn connected_bus_reports_connected(f: Fixture) {
    assert!(f.a.is_connected());
    assert!(f.b.is_connected());
}

async fn publish_reaches_subscriber_of_exact_subject(f: Fixture) {
    let mut sub = subscribe(&*f.b, "t.exact").await;
    publish(&*f.a, "t.exact", "hello").await;
    let m = next(&mut sub).await;
    assert_eq!(m.subject, "t.exact");
    assert_eq!(text(&m), "hello");
    assert_eq!(m.reply, None);
    assert!(m.headers.is_empty(), "unexpected headers {:?}", m.headers);
}

async fn star_wildcard_matches_exactly_one_token(f: Fixture) {
    let mut sub = subscribe(&*f.b, "t.*.c").await;
    for subject in ["t.c", "t.x.y.c", "t.x.d", "u.x.c", "t.x.c", "t.y.c"] {
        publish(&*f.a, subject, subject).await;
    }
    let got = receive(std::slice::from_mut(&mut sub), 2).await;
    assert_eq!(subjects(got), ["t.x.c", "t.y.c"]);
}

async fn full_wildcard_matches_one_or_more_tokens(f: Fixture) {
    let mut sub = subscribe(&*f.b, "t.>").await;
    for subject in ["t", "u.a", "t.a", "t.a.b.c"] {
        publish(&*f.a, subject, subject).await;
    }
    let got = receive(std::slice::from_mut(&mut sub), 2).await;
    assert_eq!(subjects(got), ["t.a", "t.a.b.c"]);
}

async fn subscriber_gets_nothing_for_non_matching_subjects(f: Fixture) {
    let mut sub = subscribe(&*f.b, "t.a").await;
    for subject in ["t.b", "t.a.b", "t", "T.a", "t.ab"] {
        publish(&*f.a, subject, "wrong").await;
    }
    // One publisher's messages arrive in order, so had any of the above been
    // delivered it would come before this one.
    publish(&*f.a, "t.a", "right").await;
    let m = next(&mut sub).await;
    assert_eq!((m.subject.as_str(), text(&m)), ("t.a", "right"));
    assert_quiet(&mut sub).await;
}

async fn headers_round_trip_on_publish_and_request(f: Fixture) {
    let headers = Headers::new()
        .with("Agenttier-Wire", "1")
        .with("X-Trace", "a b=c;d")
        .with("x-lower", "");
    let mut sub = subscribe(&*f.b, "t.headers").await;
    f.a.publish("t.headers".into(), headers.clone(), "x".into())
        .await
        .unwrap();
    let m = next(&mut sub).await;
    assert_eq!(m.headers.get("Agenttier-Wire"), Some("1"));
    assert_eq!(m.headers.get("X-Trace"), Some("a b=c;d"));
    assert_eq!(m.headers.get("x-lower"), Some(""));
    assert_eq!(m.headers.iter().count(), 3, "{:?}", m.headers);

    let echo = spawn_echo(f.b.clone(), subscribe(&*f.b, "svc.headers").await);
    let reply =
        f.a.request("svc.headers".into(), headers, "x".into(), WAIT)
            .await
            .unwrap();
    assert_eq!(reply.headers.get("X-Trace"), Some("a b=c;d"));
    assert_eq!(reply.headers.get("Agenttier-Wire"), Some("1"));
    echo.abort();
}

async fn invalid_headers_are_rejected_without_panicking(f: Fixture) {
    let bad = [
        Headers::new().with("Bad Name", "v"),
        Headers::new().with("Bad:Name", "v"),
        Headers::new().with("", "v"),
        Headers::new().with("X-Ok", "line\r\nInjected: 1"),
        Headers::new().with("X-Ok", "line\nbreak"),
    ];
    let _sub = subscribe(&*f.b, "t.bad").await;
    for headers in bad {
        let err =
            f.a.publish("t.bad".into(), headers.clone(), "x".into())
                .await;
        assert!(
            matches!(err, Err(Error::InvalidHeader(_))),
            "publish {headers:?}: {err:?}"
        );
        let err =
            f.a.request("t.bad".into(), headers.clone(), "x".into(), WAIT)
                .await;
        assert!(
            matches!(err, Err(Error::InvalidHeader(_))),
            "request {headers:?}: {err:?}"
        );
    }
    assert!(f.a.is_connected());
}

async fn queue_group_delivers_each_message_to_one_member_and_to_every_plain_subscriber(f: Fixture) {
    let mut members = vec![
        queue_subscribe(&*f.b, "work.items", "workers").await,
        queue_subscribe(&*f.b, "work.items", "workers").await,
        queue_subscribe(&*f.a, "work.*", "workers").await,
    ];
    let mut plain = subscribe(&*f.b, "work.items").await;
    let sent: Vec<String> = (0..60).map(|i| i.to_string()).collect();
    for p in &sent {
        publish(&*f.a, "work.items", p.clone()).await;
    }

    let mut per_member = [0; 3];
    let mut got = Vec::new();
    for (i, m) in receive(&mut members, sent.len()).await {
        per_member[i] += 1;
        got.push(text(&m).to_string());
    }
    got.sort_by_key(|p| p.parse::<u32>().unwrap());
    assert_eq!(
        got, sent,
        "each message once across the group ({per_member:?})"
    );
    assert!(
        per_member.iter().filter(|&&n| n > 0).count() > 1,
        "the group spreads work, got {per_member:?}"
    );
    let plain: Vec<String> = receive(std::slice::from_mut(&mut plain), sent.len())
        .await
        .iter()
        .map(|(_, m)| text(m).into())
        .collect();
    assert_eq!(plain, sent, "a plain subscriber gets every message");
}

async fn two_queue_groups_each_get_one_copy(f: Fixture) {
    let mut groups = Vec::new();
    for group in ["g1", "g2"] {
        groups.push([
            queue_subscribe(&*f.b, "jobs.x", group).await,
            queue_subscribe(&*f.b, "jobs.x", group).await,
        ]);
    }
    let sent: BTreeSet<String> = (0..20).map(|i| format!("{i:02}")).collect();
    for p in &sent {
        publish(&*f.a, "jobs.x", p.clone()).await;
    }
    for (i, members) in groups.iter_mut().enumerate() {
        let got: Vec<String> = receive(members, sent.len())
            .await
            .iter()
            .map(|(_, m)| text(m).to_string())
            .collect();
        let unique: BTreeSet<String> = got.iter().cloned().collect();
        assert_eq!(unique, sent, "group {i} got {got:?}");
    }
}

async fn request_gets_reply_from_responder(f: Fixture) {
    let echo = spawn_echo(f.b.clone(), subscribe(&*f.b, "svc.echo").await);
    for i in 0..3 {
        let reply =
            f.a.request(
                "svc.echo".into(),
                Headers::new(),
                format!("ping {i}").into(),
                WAIT,
            )
            .await
            .expect("request");
        assert_eq!(text(&reply), format!("echo: ping {i}"));
    }
    echo.abort();
}

async fn json_request_round_trips_typed_bodies(f: Fixture) {
    let mut sub = subscribe(&*f.b, "svc.json").await;
    let b = f.b.clone();
    let responder = tokio::spawn(async move {
        let m = sub.next().await.expect("request");
        let wire = agenttier_bus::msg::WIRE_VERSION.to_string();
        assert_eq!(
            m.headers.get(agenttier_bus::WIRE_HEADER),
            Some(wire.as_str())
        );
        let req: Vec<u32> = m.json().expect("decode request");
        let sum: u32 = req.iter().sum();
        agenttier_bus::respond_json(&*b, &m, &sum).await.unwrap();
    });
    let sum: u32 = agenttier_bus::request_json(&*f.a, "svc.json".into(), &vec![1u32, 2, 3], WAIT)
        .await
        .unwrap();
    assert_eq!(sum, 6);
    responder.await.unwrap();
}

async fn request_without_subscriber_fails_fast_with_no_responders(f: Fixture) {
    let start = Instant::now();
    let err =
        f.a.request("svc.nobody".into(), Headers::new(), "x".into(), WAIT)
            .await
            .unwrap_err();
    assert!(matches!(err, Error::NoResponders), "{err:?}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "took {:?}",
        start.elapsed()
    );
}

async fn request_to_silent_subscriber_times_out(f: Fixture) {
    let _silent = subscribe(&*f.b, "svc.silent").await;
    let timeout = Duration::from_millis(300);
    let start = Instant::now();
    let err =
        f.a.request("svc.silent".into(), Headers::new(), "x".into(), timeout)
            .await
            .unwrap_err();
    let took = start.elapsed();
    assert!(matches!(err, Error::TimedOut), "{err:?}");
    assert!(took >= timeout && took < WAIT, "took {took:?}");
}

async fn concurrent_requests_each_get_their_own_reply_and_a_late_one_is_not_taken(f: Fixture) {
    // Answers in reverse order of arrival, so no reply can reach the right
    // requester by being first.
    let mut sub = subscribe(&*f.b, "svc.batch").await;
    let b = f.b.clone();
    let responder = tokio::spawn(async move {
        let mut held = Vec::new();
        while held.len() < 16 {
            held.push(sub.next().await.expect("a request"));
        }
        for m in held.iter().rev() {
            let payload = [b"re: ".as_slice(), &m.payload].concat();
            let reply = m.reply.clone().expect("a reply subject");
            b.publish(reply, Headers::new(), payload.into())
                .await
                .unwrap();
        }
        sub
    });
    let asks = (0..16).map(|i| {
        let a = f.a.clone();
        async move {
            let reply = a
                .request(
                    "svc.batch".into(),
                    Headers::new(),
                    format!("{i}").into(),
                    WAIT,
                )
                .await
                .expect("request");
            assert_eq!(text(&reply), format!("re: {i}"));
        }
    });
    futures::future::join_all(asks).await;
    let mut sub = responder.await.unwrap();

    // A request that timed out: its answer, sent late, is not taken for
    // the next request's, which gets its own.
    let short = Duration::from_millis(200);
    let err =
        f.a.request("svc.batch".into(), Headers::new(), "late".into(), short)
            .await
            .unwrap_err();
    assert!(matches!(err, Error::TimedOut), "{err:?}");
    let late = sub.next().await.expect("the timed-out request");
    let b = f.b.clone();
    let responder = tokio::spawn(async move {
        let reply = late.reply.clone().expect("a reply subject");
        b.publish(reply, Headers::new(), "too late".into())
            .await
            .unwrap();
        let m = sub.next().await.expect("the next request");
        let reply = m.reply.clone().expect("a reply subject");
        b.publish(reply, Headers::new(), "on time".into())
            .await
            .unwrap();
    });
    let reply =
        f.a.request("svc.batch".into(), Headers::new(), "next".into(), WAIT)
            .await
            .expect("request");
    assert_eq!(text(&reply), "on time");
    responder.await.unwrap();
}

async fn dropping_subscription_unsubscribes(f: Fixture) {
    let sub = subscribe(&*f.b, "svc.gone").await;
    let short = Duration::from_millis(200);
    let err =
        f.a.request("svc.gone".into(), Headers::new(), "x".into(), short)
            .await
            .unwrap_err();
    assert!(matches!(err, Error::TimedOut), "while subscribed: {err:?}");
    drop(sub);
    f.b.flush().await.unwrap();
    let err =
        f.a.request("svc.gone".into(), Headers::new(), "x".into(), short)
            .await
            .unwrap_err();
    assert!(matches!(err, Error::NoResponders), "after drop: {err:?}");
}

async fn payload_of_900_kib_round_trips(f: Fixture) {
    let payload: Bytes = (0..900 * 1024)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    let mut sub = subscribe(&*f.b, "t.big").await;
    f.a.publish("t.big".into(), Headers::new(), payload.clone())
        .await
        .unwrap();
    assert_eq!(next(&mut sub).await.payload, payload);

    // The same size as a request, answered with the same body.
    let mut svc = subscribe(&*f.b, "svc.big").await;
    let b = f.b.clone();
    let responder = tokio::spawn(async move {
        let m = svc.next().await.expect("request");
        b.publish(m.reply.unwrap(), Headers::new(), m.payload)
            .await
            .unwrap();
    });
    let reply =
        f.a.request("svc.big".into(), Headers::new(), payload.clone(), WAIT)
            .await
            .unwrap();
    assert_eq!(reply.payload, payload);
    responder.await.unwrap();
}

async fn message_over_1_mib_fails_with_too_large(f: Fixture) {
    let _sub = subscribe(&*f.b, "t.huge").await;
    let max = agenttier_bus::MAX_MESSAGE_SIZE;
    let over = Bytes::from(vec![7u8; max + 1]);
    // Headers count too: a payload that fits alone does not fit with them.
    let headers = Headers::new().with("X-Pad", "x".repeat(64));
    let cases = [
        (Headers::new(), over),
        (headers, Bytes::from(vec![7u8; max - 32])),
    ];
    for (headers, payload) in cases {
        let size = payload.len();
        let err =
            f.a.publish("t.huge".into(), headers.clone(), payload.clone())
                .await;
        assert!(
            matches!(err, Err(Error::TooLarge(_))),
            "publish {size}: {err:?}"
        );
        let err = f.a.request("t.huge".into(), headers, payload, WAIT).await;
        assert!(
            matches!(err, Err(Error::TooLarge(_))),
            "request {size}: {err:?}"
        );
    }
    assert!(f.a.is_connected());
}

async fn invalid_subjects_are_rejected(f: Fixture) {
    for bad in [
        "", "a..b", ".a", "a.", "a b", "a\tb", "a.*", "a.>", "*", "a.b*",
    ] {
        let err = f.a.publish(bad.into(), Headers::new(), "x".into()).await;
        assert!(
            matches!(err, Err(Error::InvalidSubject(_))),
            "publish {bad:?}: {err:?}"
        );
        let err =
            f.a.request(bad.into(), Headers::new(), "x".into(), WAIT)
                .await;
        assert!(
            matches!(err, Err(Error::InvalidSubject(_))),
            "request {bad:?}: {err:?}"
        );
    }
    for bad in [
        "", "a..b", ".a", "a.", "a b", "a.>.b", ">.a", "a.b*", "a.>b",
    ] {
        let err = f.b.subscribe(bad.into()).await;
        assert!(
            matches!(err, Err(Error::InvalidSubject(_))),
            "subscribe {bad:?}: {err:?}"
        );
        let err = f.b.queue_subscribe(bad.into(), "g".into()).await;
        assert!(
            matches!(err, Err(Error::InvalidSubject(_))),
            "queue {bad:?}: {err:?}"
        );
    }
    // The bus is still usable afterwards.
    let mut sub = subscribe(&*f.b, "t.ok").await;
    publish(&*f.a, "t.ok", "fine").await;
    assert_eq!(text(&next(&mut sub).await), "fine");
}

async fn messages_from_one_publisher_arrive_in_order(f: Fixture) {
    const N: u32 = 10_000;
    let mut sub = subscribe(&*f.b, "t.seq").await;
    for i in 0..N {
        publish(&*f.a, "t.seq", Bytes::copy_from_slice(&i.to_be_bytes())).await;
    }
    f.a.flush().await.unwrap();
    for want in 0..N {
        let m = next(&mut sub).await;
        let got = u32::from_be_bytes(m.payload.as_ref().try_into().expect("4 bytes"));
        assert_eq!(got, want, "out of order");
    }
    assert_quiet(&mut sub).await;
}

/// NATS only: a client rides out a server crash and its subscriptions work
/// again once the server is back on the same port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_bus_resubscribes_after_server_restart() {
    bounded(async {
        let mut f = nats_fixture().await;
        let mut sub = subscribe(&*f.b, "t.restart").await;
        let server = f.server.as_mut().unwrap();
        server.kill();
        let (a, b) = (f.a.clone(), f.b.clone());
        assert!(wait_for(WAIT, || async { !a.is_connected() && !b.is_connected() }).await);
        server.restart();
        assert!(
            wait_for(Duration::from_secs(10), || async {
                a.is_connected() && b.is_connected()
            })
            .await
        );
        f.b.flush().await.unwrap();
        publish(&*f.a, "t.restart", "back").await;
        assert_eq!(text(&next(&mut sub).await), "back");
    })
    .await;
}
