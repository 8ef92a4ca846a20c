//! A fake sandbox actor speaking the bus protocol, driven by the invoke's
//! `prompt`: `busy` → 429; `hang` → start, then silence (no heartbeats, no
//! replay); `wait` → heartbeats until canceled; anything else → start, two
//! logs (the second reports the stdin length), exit 0.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agenttier_bus::memory;
use agenttier_bus::model::{now_rfc3339, now_unix_ms};
use agenttier_bus::msg::{
    CancelRequest, ConfigureAccepted, ConfigureRequest, Event, EventKind, ExitData, ExitReason,
    FILE_HEADER, InvokeAccepted, InvokeRequest, LogData, OFFSET_HEADER, Rejection, ReplayReply,
    ReplayRequest, Reply, SandboxReplayRequest, StartData, StdinAck, UploadAck,
};
use agenttier_bus::subject::Subjects;
use agenttier_bus::{Bus, Headers, Message, respond_json};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;
use tokio::sync::oneshot;

#[derive(Clone)]
struct Fake {
    bus: memory::Bus,
    s: Subjects,
    cancels: Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>,
    /// Every invoke admitted and its log (none for `hang`: nobody replays
    /// it), for `invokes` and `replay` (what resume asks).
    invokes: Arc<Mutex<Vec<Admitted>>>,
}

/// An invoke id and, unless it hangs, its log.
type Admitted = (String, Option<Log>);

/// Answers every request to `<ns>/<name>` until the bus goes away.
pub async fn spawn(bus: memory::Bus, ns: &str, name: &str) {
    let s = Subjects::default();
    let mut sub = bus
        .subscribe(s.sandbox_all(ns, name))
        .await
        .expect("subscribe");
    let fake = Fake {
        bus,
        s,
        cancels: Default::default(),
        invokes: Default::default(),
    };
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let verb = m.subject.rsplit('.').next().unwrap_or_default().to_string();
            tokio::spawn(fake.clone().handle(verb, m));
        }
    });
}

/// Numbers, retains and publishes the events of one run.
#[derive(Clone)]
struct Log {
    bus: memory::Bus,
    subject: String,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Log {
    async fn emit(&self, kind: EventKind) {
        let ev = {
            let mut events = self.events.lock().expect("log");
            let ev = Event {
                seq: events.len() as u64 + 1,
                kind,
            };
            events.push(ev.clone());
            ev
        };
        self.publish(&ev).await;
    }

    async fn heartbeat(&self) {
        let seq = self.events.lock().expect("log").len() as u64;
        self.publish(&Event {
            seq,
            kind: EventKind::Heartbeat,
        })
        .await;
    }

    async fn publish(&self, ev: &Event) {
        let payload = Bytes::from(serde_json::to_vec(ev).expect("json"));
        let _ = self
            .bus
            .publish(self.subject.clone(), Headers::new(), payload)
            .await;
    }

    fn replay(&self, after: u64) -> ReplayReply {
        let events: Vec<Event> = self.events.lock().expect("log").clone();
        let finished = events.last().is_some_and(|e| e.kind.is_terminal());
        ReplayReply {
            events: events.into_iter().filter(|e| e.seq > after).collect(),
            finished,
            first_retained: 1,
        }
    }

    async fn serve_replay(&self, subject: String) {
        let mut sub = self.bus.subscribe(subject).await.expect("replay sub");
        let log = self.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let Ok(req) = m.json::<ReplayRequest>() else {
                    continue;
                };
                let _ = respond_json(&log.bus, &m, &log.replay(req.after)).await;
            }
        });
    }
}

fn exit(id: &str, code: i32, reason: ExitReason) -> EventKind {
    EventKind::Exit(ExitData {
        invoke_id: id.into(),
        exit_code: code,
        duration_ms: 1,
        reason,
        cause: None,
        message: None,
    })
}

fn log_line(data: String) -> EventKind {
    EventKind::Log(LogData {
        stream: "stdout".into(),
        data,
        encoding: None,
        partial: false,
    })
}

impl Fake {
    async fn handle(self, verb: String, m: Message) {
        match verb.as_str() {
            "invoke" => self.invoke(m).await,
            "cancel" => {
                let Ok(req) = m.json::<CancelRequest>() else {
                    return;
                };
                let tx = self.cancels.lock().expect("cancels").remove(&req.invoke_id);
                let reply: Reply<serde_json::Value> = match tx {
                    Some(tx) => {
                        let _ = tx.send(());
                        Reply::Ok(json!({}))
                    }
                    None => Reply::Rejected(
                        Rejection::new(404, "not_found").message("invoke not found"),
                    ),
                };
                let _ = respond_json(&self.bus, &m, &reply).await;
            }
            "configure" => self.configure(m).await,
            "replay" => {
                let Ok(req) = m.json::<SandboxReplayRequest>() else {
                    return;
                };
                let log = (self.invokes.lock().expect("invokes").iter())
                    .find(|(id, _)| *id == req.invoke_id)
                    .and_then(|(_, log)| log.clone());
                let reply = match log {
                    Some(log) => Reply::Ok(log.replay(req.after)),
                    None => Reply::Rejected(
                        Rejection::new(404, "not_found").message("invoke not found"),
                    ),
                };
                let _ = respond_json(&self.bus, &m, &reply).await;
            }
            "invokes" => {
                let ids = self.invokes.lock().expect("invokes").clone();
                let list: Vec<_> = ids.iter().map(|(id, _)| json!({"invokeId": id})).collect();
                let reply: Reply<serde_json::Value> = Reply::Ok(json!({ "invokes": list }));
                let _ = respond_json(&self.bus, &m, &reply).await;
            }
            _ => {
                let reply: Reply<serde_json::Value> = Reply::Ok(json!({"verb": verb}));
                let _ = respond_json(&self.bus, &m, &reply).await;
            }
        }
    }

    async fn invoke(self, m: Message) {
        let Ok(req) = m.json::<InvokeRequest>() else {
            return;
        };
        let id = req.invoke_id.clone();
        if req.prompt.as_deref() == Some("busy") {
            let r = Rejection::new(429, "concurrency_exceeded")
                .message("4 invokes are running; the limit is 4")
                .retry_after(3)
                .field("inflight", 4)
                .field("limit", 4);
            let _ = respond_json(&self.bus, &m, &Reply::<InvokeAccepted>::Rejected(r)).await;
            return;
        }
        let log = Log {
            bus: self.bus.clone(),
            subject: self.s.invoke_events(&id),
            events: Default::default(),
        };
        let hang = req.prompt.as_deref() == Some("hang");
        if !hang {
            log.serve_replay(self.s.invoke_replay(&id)).await;
        }
        let mut stdin = req.stdin.to_vec();
        let mut stdin_sub = None;
        if req.stdin_len > stdin.len() as u64 {
            stdin_sub = Some(
                self.bus
                    .subscribe(self.s.invoke_stdin(&id))
                    .await
                    .expect("stdin"),
            );
        }
        self.invokes
            .lock()
            .expect("invokes")
            .push((id.clone(), (!hang).then(|| log.clone())));
        let (cancel_tx, mut cancel_rx) = oneshot::channel();
        self.cancels
            .lock()
            .expect("cancels")
            .insert(id.clone(), cancel_tx);
        let accepted = InvokeAccepted {
            invoke_id: id.clone(),
            started_at: now_unix_ms(),
        };
        let _ = respond_json(&self.bus, &m, &Reply::Ok(accepted)).await;
        if let Some(mut sub) = stdin_sub {
            while (stdin.len() as u64) < req.stdin_len {
                let Some(chunk) = sub.next().await else {
                    return;
                };
                assert_eq!(
                    chunk.headers.get(OFFSET_HEADER),
                    Some(stdin.len().to_string().as_str())
                );
                stdin.extend_from_slice(&chunk.payload);
                let ack = StdinAck {
                    received: stdin.len() as u64,
                };
                let _ = respond_json(&self.bus, &chunk, &ack).await;
            }
        }
        log.emit(EventKind::Start(StartData {
            invoke_id: id.clone(),
            started_at: now_unix_ms(),
        }))
        .await;
        match req.prompt.as_deref() {
            Some("hang") => {}
            Some("wait") => loop {
                tokio::select! {
                    _ = &mut cancel_rx => {
                        log.emit(exit(&id, -1, ExitReason::Canceled)).await;
                        return;
                    }
                    _ = tokio::time::sleep(Duration::from_millis(200)) => log.heartbeat().await,
                }
            },
            _ => {
                log.emit(log_line("hello".into())).await;
                let head = String::from_utf8_lossy(&stdin[..stdin.len().min(16)]).to_string();
                log.emit(log_line(format!("stdin {} bytes: {head}", stdin.len())))
                    .await;
                log.emit(exit(&id, 0, ExitReason::Completed)).await;
            }
        }
    }

    async fn configure(self, m: Message) {
        let Ok(req) = m.json::<ConfigureRequest>() else {
            return;
        };
        let mut uploads = self
            .bus
            .subscribe(self.s.configure_upload(&req.configure_id))
            .await
            .expect("upload sub");
        let log = Log {
            bus: self.bus.clone(),
            subject: self.s.configure_events(&req.configure_id),
            events: Default::default(),
        };
        log.serve_replay(self.s.configure_replay(&req.configure_id))
            .await;
        let _ = respond_json(
            &self.bus,
            &m,
            &Reply::Ok(ConfigureAccepted { skipped: false }),
        )
        .await;
        let mut got: Vec<Option<Vec<u8>>> = vec![None; req.files.len()];
        let complete = |got: &Vec<Option<Vec<u8>>>| {
            got.iter()
                .zip(&req.files)
                .all(|(g, f)| g.as_ref().is_some_and(|b| b.len() as u64 == f.size))
        };
        while !complete(&got) {
            let Some(chunk) = uploads.next().await else {
                return;
            };
            let index: usize = chunk
                .headers
                .get(FILE_HEADER)
                .and_then(|v| v.parse().ok())
                .expect("file header");
            let offset: usize = chunk
                .headers
                .get(OFFSET_HEADER)
                .and_then(|v| v.parse().ok())
                .expect("offset");
            let buf = got[index].get_or_insert_with(Vec::new);
            assert_eq!(offset, buf.len(), "chunks arrive in order");
            buf.extend_from_slice(&chunk.payload);
            let ack = UploadAck {
                received: buf.len() as u64,
            };
            let _ = respond_json(&self.bus, &chunk, &ack).await;
        }
        for (f, body) in req.files.iter().zip(&got) {
            let n = body.as_ref().map(Vec::len).unwrap_or(0);
            let first = body.as_ref().and_then(|b| b.first().copied()).unwrap_or(0);
            log.emit(log_line(format!(
                "[configure] uploading {} ({n} bytes, first {first})",
                f.path
            )))
            .await;
        }
        log.emit(EventKind::Result(json!({
            "lastConfiguredAt": now_rfc3339(),
            "installCommandHash": req.hash,
            "entrypoint": req.entrypoint,
            "installExitCode": 0,
            "skipped": false,
        })))
        .await;
    }
}
