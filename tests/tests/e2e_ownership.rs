//! Check order and ownership where a router alone cannot decide: configure
//! limits come after the phase check, resume replays exactly what was missed
//! on any router, and an invoke id is no capability, also on the bus.

use std::time::Duration;

use agenttier_bus::model::Principal;
use agenttier_bus::msg::{ReplayReply, ReplayRequest, Reply, SandboxReplayRequest};
use agenttier_bus::subject::{Subjects, Verb};
use agenttier_bus::{Error, nats, request_json};
use agenttier_tests::client::{Client, finish, router_pair, wait_ready};
use agenttier_tests::process::{Distributed, System};
use agenttier_tests::wait_for;
use serde_json::{Value, json};

agenttier_tests::e2e_scenarios!(
    configure_limits_come_after_the_phase_check,
    resume_replays_what_was_missed_only_for_the_owner
);

async fn configure_limits_come_after_the_phase_check(sys: &mut dyn System) {
    let (c, _) = router_pair(sys);
    c.create_running("lim-a", "langgraph-agent").await;
    let many: Vec<_> = (0..201)
        .map(|i| json!({"path": format!("/workspace/f{i}"), "content": ""}))
        .collect();
    let too_many = json!({ "files": many });

    c.stop("lim-a").await.expect(200);
    c.wait_status("lim-a", "Stopped").await;
    let r = c.configure_stream("lim-a", &too_many).await.refused();
    assert_eq!(r.status, 409, "phase before size: {r:?}");

    c.resume("lim-a").await.expect(200);
    c.wait_running("lim-a").await;
    let r = c.configure_stream("lim-a", &too_many).await.refused();
    assert_eq!(r.status, 413, "{r:?}");
    assert!(r.message().contains("201 files"), "{r:?}");

    // Nothing was written or changed by the refused configures.
    let r = c
        .configure_stream("lim-a", &json!({"entrypoint": ["true"]}))
        .await;
    let done = finish(r.stream()).await;
    assert_eq!(done.event("result").data["skipped"], false);
}

async fn resume_replays_what_was_missed_only_for_the_owner(sys: &mut dyn System) {
    let (a, b) = router_pair(sys);
    a.create_running("res-a", "langgraph-agent").await;
    a.configure(
        "res-a",
        &json!({"entrypoint": ["sh", "-c", "for i in 1 2 3 4 5; do echo line$i; done"]}),
    )
    .await;
    let run = a.invoke("res-a", "", &[]).await;
    let invoke_id = run.event("start").data["invokeId"]
        .as_str()
        .expect("invokeId")
        .to_string();
    let ids: Vec<_> = run
        .events
        .iter()
        .map(|e| e.id.clone().unwrap_or_default())
        .collect();
    assert_eq!(ids, ["1", "2", "3", "4", "5", "6", "7"]);

    // On the other router, after event 3: exactly events 4 to 7.
    let resumed = finish(b.events_stream("res-a", &invoke_id, 3).await.stream()).await;
    let got: Vec<_> = resumed
        .events
        .iter()
        .map(|e| (e.id.clone().unwrap_or_default(), e.event.clone()))
        .collect();
    let want: Vec<_> = [("4", "log"), ("5", "log"), ("6", "log"), ("7", "exit")]
        .iter()
        .map(|(i, e)| (i.to_string(), e.to_string()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(resumed.lines("stdout"), ["line3", "line4", "line5"]);
    assert_eq!(resumed.event("exit").data["exitCode"], 0);

    // Another user: not through the owner's sandbox, and not through their own.
    let user_b = Client::new(
        b.base(),
        Some(&a.mint_user_key("user-res", "r@example.com").await),
    );
    let r = user_b.events_stream("res-a", &invoke_id, 0).await.refused();
    assert_eq!(r.status, 404, "{r:?}");
    user_b.create_running("res-b", "langgraph-agent").await;
    let r = user_b.events_stream("res-b", &invoke_id, 0).await.refused();
    assert_eq!(r.status, 404, "an invoke id is no capability: {r:?}");
    // An id that never existed.
    let r = a
        .events_stream("res-a", "inv-000000000000000000000000", 0)
        .await
        .refused();
    assert_eq!(r.status, 404, "{r:?}");
}

/// What an integration sees on the bus: a run's own `inv.<id>.replay` answers
/// while it runs and for the executor's tail after its end (2 s in the
/// harness), then has no responders (the executor holds no subscription per
/// finished run); for the rest of the retention its sandbox's `replay`
/// subject answers, for a caller who may see the run, with the same events
/// a client got; and so does a resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_tail_a_finished_run_is_replayed_by_its_sandbox() {
    let sys = Distributed::start();
    wait_ready(&sys).await;
    let (a, b) = router_pair(&sys);
    a.create_running("tail-a", "langgraph-agent").await;
    a.configure(
        "tail-a",
        &json!({"entrypoint": ["sh", "-c", "echo one; echo two >&2; exit 4"]}),
    )
    .await;
    let run = a.invoke("tail-a", "", &[]).await;
    let id = run.event("start").data["invokeId"]
        .as_str()
        .expect("invokeId")
        .to_string();
    // The events as the client got them: (id, name, data).
    let seen: Vec<(u64, String, Value)> = run
        .events
        .iter()
        .map(|e| {
            let seq = e.id.as_deref().and_then(|i| i.parse().ok()).expect("id");
            (seq, e.event.clone(), e.data.clone())
        })
        .collect();
    let replayed = |r: ReplayReply| -> Vec<(u64, String, Value)> {
        assert!(r.finished, "{r:?}");
        assert_eq!(r.first_retained, 1);
        r.events
            .iter()
            .map(|e| {
                let json = serde_json::to_value(e).expect("json");
                (
                    e.seq,
                    json["event"].as_str().unwrap_or_default().to_string(),
                    json["data"].clone(),
                )
            })
            .collect()
    };

    let bus = nats::Bus::connect(&sys.nats().url(), nats::ConnectOptions::default())
        .await
        .expect("connect");
    let s = Subjects::default();
    let own = s.invoke_replay(&id);
    let all = ReplayRequest {
        after: 0,
        limit: 100,
    };
    let t = Duration::from_secs(5);
    let r: ReplayReply = request_json(&bus, own.clone(), &all, t)
        .await
        .expect("within the tail");
    assert_eq!(replayed(r), seen);

    let gone = wait_for(Duration::from_secs(10), || async {
        matches!(
            request_json::<_, ReplayReply>(&bus, own.clone(), &all, t).await,
            Err(Error::NoResponders)
        )
    })
    .await;
    assert!(gone, "{own} still answered long after the tail");

    let on_sandbox = |sub: &str, admin: bool| SandboxReplayRequest {
        invoke_id: id.clone(),
        caller: Principal {
            sub: sub.into(),
            admin,
            ..Principal::default()
        },
        after: 0,
        limit: 100,
    };
    let subject = s.sandbox("default", "tail-a", Verb::Replay);
    let r: Reply<ReplayReply> =
        request_json(&bus, subject.clone(), &on_sandbox("apikey:ops", true), t)
            .await
            .expect("the sandbox answers");
    match r {
        Reply::Ok(r) => assert_eq!(replayed(r), seen),
        Reply::Rejected(r) => panic!("refused: {r:?}"),
    }
    let r: Reply<ReplayReply> = request_json(
        &bus,
        subject.clone(),
        &on_sandbox("apikey:stranger", false),
        t,
    )
    .await
    .expect("the sandbox answers");
    assert!(
        matches!(r, Reply::Rejected(ref r) if r.status == 404),
        "{r:?}"
    );
    let mut unknown = on_sandbox("apikey:ops", true);
    unknown.invoke_id = "inv-000000000000000000000000".into();
    let r: Reply<ReplayReply> = request_json(&bus, subject, &unknown, t)
        .await
        .expect("answers");
    assert!(
        matches!(r, Reply::Rejected(ref r) if r.status == 404),
        "{r:?}"
    );

    // A client resuming on the other router: exactly what it missed.
    let resumed = finish(b.events_stream("tail-a", &id, 2).await.stream()).await;
    assert_eq!(resumed.events, run.events[2..]);
}
