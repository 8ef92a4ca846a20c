//! Numbering, publishing and retaining the events of one run.
//!
//! One task owns a run's [`EventLog`] writer, so `seq` order is publish
//! order. The log keeps recent events (bounded in bytes) for the replay
//! subject for [`RETENTION`] after the run ends.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agenttier_bus::msg::{Event, EventKind, ReplayReply, ReplayRequest};
use agenttier_bus::{Bus, Headers};
use bytes::Bytes;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// How long events stay available after the run ends.
pub const RETENTION: Duration = Duration::from_secs(10 * 60);
/// Retained JSON per run; older events fall out (a replay then reports a gap).
const RETAINED_BYTES: usize = 32 * 1024 * 1024;
/// Replies stay well under the 1 MiB message cap.
const REPLY_BYTES: usize = 512 * 1024;

#[derive(Default)]
struct Retained {
    events: VecDeque<(Event, usize)>,
    bytes: usize,
    finished: bool,
}

#[derive(Clone)]
pub struct EventLog {
    bus: Arc<dyn Bus>,
    subject: String,
    seq: Arc<std::sync::atomic::AtomicU64>,
    retained: Arc<Mutex<Retained>>,
}

impl EventLog {
    pub fn new(bus: Arc<dyn Bus>, subject: String) -> Self {
        Self {
            bus,
            subject,
            seq: Default::default(),
            retained: Default::default(),
        }
    }

    /// Numbers, retains and publishes one event; returns its seq.
    pub async fn emit(&self, kind: EventKind) -> u64 {
        let terminal = kind.is_terminal();
        // The seq is taken and the event retained in one step: a heartbeat
        // (possibly from another task) never names a seq replay cannot give.
        let (seq, payload) = {
            let mut r = match self.retained.lock() {
                Ok(r) => r,
                Err(p) => p.into_inner(),
            };
            let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let event = Event { seq, kind };
            let payload = Bytes::from(serde_json::to_vec(&event).unwrap_or_default());
            r.bytes += payload.len();
            r.events.push_back((event, payload.len()));
            while r.bytes > RETAINED_BYTES && r.events.len() > 1 {
                if let Some((_, n)) = r.events.pop_front() {
                    r.bytes -= n;
                }
            }
            r.finished |= terminal;
            (seq, payload)
        };
        self.publish(payload).await;
        seq
    }

    /// A liveness beat: the last seq, not retained, not numbered.
    pub async fn heartbeat(&self) {
        let seq = {
            // Under the lock: only seqs already retained are announced.
            let _r = match self.retained.lock() {
                Ok(r) => r,
                Err(p) => p.into_inner(),
            };
            self.seq.load(std::sync::atomic::Ordering::SeqCst)
        };
        let event = Event {
            seq,
            kind: EventKind::Heartbeat,
        };
        self.publish(Bytes::from(serde_json::to_vec(&event).unwrap_or_default()))
            .await;
    }

    async fn publish(&self, payload: Bytes) {
        if let Err(e) = self
            .bus
            .publish(self.subject.clone(), Headers::new(), payload)
            .await
        {
            // Core NATS is at most once anyway; the replay path heals this.
            tracing::warn!(subject = %self.subject, error = %e, "event publish failed");
        }
    }

    pub fn replay(&self, req: &ReplayRequest) -> ReplayReply {
        let r = match self.retained.lock() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        let first_retained = r.events.front().map(|(e, _)| e.seq).unwrap_or(1);
        let mut events = Vec::new();
        let mut bytes = 0;
        for (e, n) in r.events.iter().filter(|(e, _)| e.seq > req.after) {
            if events.len() >= req.limit.max(1) as usize
                || bytes + n > REPLY_BYTES && !events.is_empty()
            {
                break;
            }
            bytes += n;
            events.push(e.clone());
        }
        ReplayReply {
            events,
            finished: r.finished,
            first_retained,
        }
    }

    /// Answers `subject` (the run's replay subject) until `stop` fires and
    /// then for [`RETENTION`] more.
    /// Subscribes before it returns, so a replay asked right after is answered.
    pub async fn serve_replay(
        &self,
        subject: String,
        stop: CancellationToken,
    ) -> agenttier_bus::Result<()> {
        let log = self.clone();
        let mut sub = log.bus.subscribe(subject).await?;
        tokio::spawn(async move {
            let expire = async {
                stop.cancelled().await;
                tokio::time::sleep(RETENTION).await;
            };
            tokio::pin!(expire);
            loop {
                tokio::select! {
                    _ = &mut expire => break,
                    msg = sub.next() => {
                        let Some(msg) = msg else { break };
                        let Ok(req) = msg.json::<ReplayRequest>() else { continue };
                        let reply = log.replay(&req);
                        let _ = agenttier_bus::respond_json(log.bus.as_ref(), &msg, &reply).await;
                    }
                }
            }
        });
        Ok(())
    }
}
