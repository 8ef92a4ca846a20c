//! Check order and ownership where a router alone cannot decide: configure
//! limits come after the phase check, resume replays exactly what was missed
//! on any router, and an invoke id is no capability.

use agenttier_tests::client::{Client, finish, router_pair};
use agenttier_tests::process::System;
use serde_json::json;

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
