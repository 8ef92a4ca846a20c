//! Numbering, publishing and retaining the events of one run.
//!
//! One task owns a run's [`EventLog`] writer, so `seq` order is publish
//! order. The log keeps recent events (bounded in bytes) for replay for
//! [`RETENTION`] after the run ends, as the JSON that was published (shared
//! with the publish, not parsed again): on the run's own replay subject, and
//! for an invoke, once that subject's tail is over, through its sandbox's
//! actor, which holds the log.
//!
//! Flow control: routers relaying the run say which seq they have delivered
//! (`attached {delivered}`); while one has said so recently, the run's
//! output waits ([`EventLog::paused`]) when more than [`WINDOW`] bytes of
//! events are ahead of the furthest delivery, so a client that reads slower
//! than the run writes slows the run instead of losing output.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use agenttier_bus::msg::{Event, EventKind, ReplayReply, ReplayRequest};
use agenttier_bus::{Bus, Headers};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long events stay available after the run ends.
pub const RETENTION: Duration = Duration::from_secs(10 * 60);
/// Retained events per run (JSON plus bookkeeping, see [`charge`]); older
/// events fall out (a replay then reports a gap).
const RETAINED_BYTES: usize = 32 * 1024 * 1024;
/// Replies stay well under the 1 MiB message cap.
const REPLY_BYTES: usize = 512 * 1024;
/// Event bytes a run may be ahead of the furthest delivery a router reported
/// before its output waits. Below a router's live buffer (4 MiB), so a
/// router that keeps up never has to drop and replay.
const WINDOW: usize = 2 * 1024 * 1024;
/// A delivery report older than this no longer holds the run back: the
/// router that sent it may be gone (routers report at least every 5 s).
const ACK_FRESH: Duration = Duration::from_secs(12);

/// The retained events of every run on this executor, bounded together:
/// past the limit the oldest runs' oldest events fall out first (each run
/// keeps at least its last event, so a finished run still says how it ended).
pub struct Budget {
    limit: usize,
    held: AtomicUsize,
    /// Every live log, oldest first.
    logs: Mutex<VecDeque<Weak<Mutex<Retained>>>>,
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            held: AtomicUsize::new(0),
            logs: Mutex::default(),
        })
    }

    /// Bytes retained across all runs.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Trims the oldest logs until the total is within the limit. Called
    /// with no log locked (it locks them one at a time).
    fn enforce(&self) {
        if self.held() <= self.limit {
            return;
        }
        let mut logs = lock(&self.logs);
        logs.retain(|w| w.strong_count() > 0);
        for log in logs.iter().filter_map(Weak::upgrade) {
            let mut r = lock(&log);
            while self.held() > self.limit && r.events.len() > 1 {
                r.pop_front(self);
            }
            if self.held() <= self.limit {
                return;
            }
        }
    }
}

/// What one retained event costs against the limits: its JSON, plus the
/// allocations and queue entries that hold it (which, for short lines,
/// weigh as much as the JSON itself).
fn charge(payload: &Bytes) -> usize {
    payload.len() + EVENT_OVERHEAD
}

const EVENT_OVERHEAD: usize = 96;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

struct Retained {
    budget: Arc<Budget>,
    /// `(seq, JSON)`, consecutive seqs from the front.
    events: VecDeque<(u64, Bytes)>,
    /// The last seq that fell out (0: none).
    dropped_through: u64,
    bytes: usize,
    /// Event bytes ever emitted; `ends[i]` is this total after `events[i]`.
    total: u64,
    ends: VecDeque<u64>,
    finished: bool,
    /// The furthest seq a router said it delivered, and when it said so.
    delivered: u64,
    delivered_at: Option<Instant>,
}

impl Retained {
    fn new(budget: Arc<Budget>) -> Self {
        Self {
            budget,
            events: VecDeque::new(),
            dropped_through: 0,
            bytes: 0,
            total: 0,
            ends: VecDeque::new(),
            finished: false,
            delivered: 0,
            delivered_at: None,
        }
    }

    fn push(&mut self, seq: u64, payload: Bytes) {
        self.bytes += charge(&payload);
        self.total += payload.len() as u64;
        self.budget
            .held
            .fetch_add(charge(&payload), Ordering::Relaxed);
        self.ends.push_back(self.total);
        self.events.push_back((seq, payload));
    }

    fn pop_front(&mut self, budget: &Budget) {
        if let Some((seq, p)) = self.events.pop_front() {
            self.bytes -= charge(&p);
            budget.held.fetch_sub(charge(&p), Ordering::Relaxed);
            self.ends.pop_front();
            self.dropped_through = seq;
        }
    }

    /// Event bytes emitted after `seq` (all retained bytes when `seq` fell out).
    fn bytes_after(&self, seq: u64) -> u64 {
        let Some(&(first, _)) = self.events.front() else {
            return 0;
        };
        match seq.checked_sub(first) {
            None => self.bytes as u64,
            Some(i) => self
                .ends
                .get(i as usize)
                .map(|end| self.total - end)
                .unwrap_or(0),
        }
    }
}

impl Drop for Retained {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[derive(Clone)]
pub struct EventLog {
    bus: Arc<dyn Bus>,
    subject: String,
    seq: Arc<std::sync::atomic::AtomicU64>,
    retained: Arc<Mutex<Retained>>,
    delivered: Arc<Notify>,
}

impl EventLog {
    pub fn new(bus: Arc<dyn Bus>, subject: String, budget: &Arc<Budget>) -> Self {
        let retained = Arc::new(Mutex::new(Retained::new(budget.clone())));
        let mut logs = lock(&budget.logs);
        // Logs that are gone leave (most go in creation order; now and then
        // a full sweep for those behind a long-lived one).
        while logs.front().is_some_and(|w| w.strong_count() == 0) {
            logs.pop_front();
        }
        if logs.len() % 1024 == 1023 {
            logs.retain(|w| w.strong_count() > 0);
        }
        logs.push_back(Arc::downgrade(&retained));
        drop(logs);
        Self {
            bus,
            subject,
            seq: Default::default(),
            retained,
            delivered: Default::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Retained> {
        lock(&self.retained)
    }

    /// Numbers, retains and publishes one event; returns its seq.
    pub async fn emit(&self, kind: EventKind) -> u64 {
        let (seq, payload) = self.record(kind);
        self.publish(payload).await;
        seq
    }

    /// Numbers and retains one event without publishing it yet (see
    /// [`publish`](Self::publish)): its seq and its JSON.
    pub fn record(&self, kind: EventKind) -> (u64, Bytes) {
        let terminal = kind.is_terminal();
        // The seq is taken and the event retained in one step: a heartbeat
        // (possibly from another task) never names a seq replay cannot give.
        let (seq, payload, budget) = {
            let mut r = self.lock();
            let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let event = Event { seq, kind };
            let payload = Bytes::from(event.to_json());
            r.push(seq, payload.clone());
            let budget = r.budget.clone();
            while r.bytes > RETAINED_BYTES && r.events.len() > 1 {
                r.pop_front(&budget);
            }
            r.finished |= terminal;
            (seq, payload, budget)
        };
        budget.enforce();
        (seq, payload)
    }

    /// A liveness beat: the last seq, not retained, not numbered.
    pub async fn heartbeat(&self) {
        let seq = {
            // Under the lock: only seqs already retained are announced.
            let _r = self.lock();
            self.seq.load(std::sync::atomic::Ordering::SeqCst)
        };
        let event = Event {
            seq,
            kind: EventKind::Heartbeat,
        };
        self.publish(Bytes::from(event.to_json())).await;
    }

    /// Publishes an event's JSON on the run's subject.
    pub async fn publish(&self, payload: Bytes) {
        if let Err(e) = self
            .bus
            .publish(self.subject.clone(), Headers::new(), payload)
            .await
        {
            // Core NATS is at most once anyway; the replay path heals this.
            tracing::warn!(subject = %self.subject, error = %e, "event publish failed");
        }
    }

    /// A router delivered every event up to `seq` to its client.
    pub fn delivered(&self, seq: u64) {
        let mut r = self.lock();
        r.delivered = r.delivered.max(seq);
        r.delivered_at = Some(Instant::now());
        drop(r);
        self.delivered.notify_one();
    }

    /// Whether the run's output should wait: a router reported recently, and
    /// the events ahead of the furthest delivery exceed [`WINDOW`].
    pub fn paused(&self) -> bool {
        let r = self.lock();
        r.delivered_at.is_some_and(|at| {
            at.elapsed() < ACK_FRESH && r.bytes_after(r.delivered) > WINDOW as u64
        })
    }

    /// Resolves at the next delivery report.
    pub async fn next_delivery(&self) {
        self.delivered.notified().await
    }

    /// The reply to a replay request: a [`ReplayReply`](agenttier_bus::msg::ReplayReply)
    /// written from the retained JSON.
    pub fn replay(&self, after: u64, limit: u32) -> Bytes {
        self.reply(after, limit.max(1) as usize, REPLY_BYTES, 0)
    }

    /// The newest retained events, about `max_bytes` of them but at least the
    /// last, as a `ReplayReply` whose `firstRetained` is the first of them (to
    /// keep on disk: what is older reads as a gap).
    pub fn dump(&self, max_bytes: usize) -> Bytes {
        let after = {
            let r = self.lock();
            let mut bytes = 0;
            let mut after = r.dropped_through;
            for (n, (seq, payload)) in r.events.iter().rev().enumerate() {
                bytes += payload.len();
                if bytes > max_bytes && n > 0 {
                    after = *seq;
                    break;
                }
            }
            after
        };
        self.reply(after, usize::MAX, usize::MAX, after)
    }

    /// The retained events after `after` (at most `limit`, about
    /// `max_bytes`), reporting nothing up to `floor` as retained.
    fn reply(&self, after: u64, limit: usize, max_bytes: usize, floor: u64) -> Bytes {
        let r = self.lock();
        let first_retained = r.dropped_through.max(floor) + 1;
        let skip = after.saturating_sub(r.dropped_through) as usize;
        let mut out = Vec::with_capacity(1024);
        out.extend_from_slice(b"{\"events\":[");
        let mut bytes = 0;
        for (n, (_, payload)) in r.events.iter().skip(skip).enumerate() {
            if n >= limit || bytes + payload.len() > max_bytes && n > 0 {
                break;
            }
            if n > 0 {
                out.push(b',');
            }
            bytes += payload.len();
            out.extend_from_slice(payload);
        }
        out.extend_from_slice(
            format!(
                "],\"finished\":{},\"firstRetained\":{first_retained}}}",
                r.finished
            )
            .as_bytes(),
        );
        Bytes::from(out)
    }

    /// A finished run's log rebuilt from what [`dump`](Self::dump) wrote.
    pub fn restore(
        bus: Arc<dyn Bus>,
        subject: String,
        budget: &Arc<Budget>,
        saved: ReplayReply,
    ) -> Self {
        let log = Self::new(bus, subject, budget);
        {
            let mut r = log.lock();
            let first = saved.events.first().map_or(saved.first_retained, |e| e.seq);
            r.dropped_through = first.saturating_sub(1);
            let mut last = r.dropped_through;
            for e in saved.events {
                last = e.seq;
                r.push(e.seq, Bytes::from(e.to_json()));
            }
            r.finished = saved.finished;
            log.seq.store(last, std::sync::atomic::Ordering::SeqCst);
        }
        log.lock().budget.clone().enforce();
        log
    }

    /// Answers `subject` (the run's replay subject) until `stop` fires and
    /// then for `keep` more. Subscribes before it returns, so a replay asked
    /// right after is answered.
    pub async fn serve_replay(
        &self,
        subject: String,
        stop: CancellationToken,
        keep: Duration,
    ) -> agenttier_bus::Result<()> {
        let log = self.clone();
        let mut sub = log.bus.subscribe(subject).await?;
        tokio::spawn(async move {
            let expire = async {
                stop.cancelled().await;
                tokio::time::sleep(keep).await;
            };
            tokio::pin!(expire);
            loop {
                tokio::select! {
                    _ = &mut expire => break,
                    msg = sub.next() => {
                        let Some(msg) = msg else { break };
                        let Ok(req) = msg.json::<ReplayRequest>() else { continue };
                        let reply = log.replay(req.after, req.limit);
                        let _ = agenttier_bus::respond_encoded(log.bus.as_ref(), &msg, reply).await;
                    }
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agenttier_bus::memory::Bus as MemoryBus;
    use agenttier_bus::msg::LogData;

    fn line(data: &str) -> EventKind {
        EventKind::Log(LogData {
            stream: "stdout".into(),
            data: data.into(),
            encoding: None,
            partial: false,
        })
    }

    fn replay(log: &EventLog, after: u64, limit: u32) -> ReplayReply {
        serde_json::from_slice(&log.replay(after, limit)).unwrap()
    }

    #[tokio::test]
    async fn replay_gives_the_events_after_a_seq_in_pages() {
        let log = EventLog::new(
            Arc::new(MemoryBus::new()),
            "t".into(),
            &Budget::new(1 << 30),
        );
        for i in 0..10 {
            log.emit(line(&i.to_string())).await;
        }
        let r = replay(&log, 3, 4);
        assert_eq!(
            r.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [4, 5, 6, 7]
        );
        assert_eq!(r.events[0].kind, line("3"));
        assert_eq!((r.first_retained, r.finished), (1, false));
        assert!(replay(&log, 10, 100).events.is_empty());
        log.emit(EventKind::Heartbeat).await;
        assert!(replay(&log, 0, 100).events.len() == 11);
    }

    #[tokio::test]
    async fn a_dump_restores_the_same_replay() {
        let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
        let budget = Budget::new(1 << 30);
        let log = EventLog::new(bus.clone(), "a".into(), &budget);
        for i in 0..5 {
            log.emit(line(&format!("l{i}"))).await;
        }
        let saved: ReplayReply = serde_json::from_slice(&log.dump(1 << 20)).unwrap();
        let back = EventLog::restore(bus.clone(), "a".into(), &budget, saved);
        assert_eq!(replay(&back, 2, 100), replay(&log, 2, 100));
        assert_eq!(replay(&back, 0, 100).events.len(), 5);
        // A small dump keeps the newest events (each is ~63 bytes here); the
        // rest reads as gone.
        let tail: ReplayReply = serde_json::from_slice(&log.dump(130)).unwrap();
        assert_eq!(
            tail.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [4, 5]
        );
        assert_eq!(tail.first_retained, 4);
        let back = EventLog::restore(bus, "a".into(), &budget, tail);
        let r = replay(&back, 0, 100);
        assert_eq!((r.first_retained, r.events.len()), (4, 2));
    }

    #[tokio::test]
    async fn retention_drops_the_oldest_and_says_so() {
        let log = EventLog::new(
            Arc::new(MemoryBus::new()),
            "t".into(),
            &Budget::new(1 << 30),
        );
        let big = "x".repeat(1024 * 1024);
        for _ in 0..40 {
            log.emit(line(&big)).await;
        }
        let r = replay(&log, 0, 1);
        assert!(r.first_retained > 1, "the oldest events fell out");
        assert_eq!(r.events[0].seq, r.first_retained);
        assert_eq!(replay(&log, 39, 10).events[0].seq, 40);
    }

    #[tokio::test]
    async fn the_executor_budget_trims_the_oldest_runs_first() {
        let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
        let budget = Budget::new(4 * 1024 * 1024);
        let chunk = "z".repeat(64 * 1024);
        let old = EventLog::new(bus.clone(), "a".into(), &budget);
        for _ in 0..48 {
            old.emit(line(&chunk)).await;
        }
        let young = EventLog::new(bus.clone(), "b".into(), &budget);
        for _ in 0..40 {
            young.emit(line(&chunk)).await;
        }
        assert!(budget.held() <= 4 * 1024 * 1024, "held {}", budget.held());
        let first_old = replay(&old, 0, 1).first_retained;
        assert!(first_old > 1, "the old run lost its oldest events");
        assert_eq!(
            replay(&young, 0, 1).first_retained,
            1,
            "the young run is whole"
        );
        // Past what the old run can give, the young one gives too, and each
        // keeps its last event.
        for _ in 0..40 {
            young.emit(line(&chunk)).await;
        }
        assert_eq!(
            replay(&old, 0, 1).first_retained,
            48,
            "only the last is left"
        );
        assert_eq!(replay(&old, 0, 1).events[0].seq, 48);
        assert!(replay(&young, 0, 1).first_retained > 1);
        assert!(budget.held() <= 4 * 1024 * 1024, "held {}", budget.held());
        let before = budget.held();
        drop(young);
        assert!(
            budget.held() < before - 3 * 1024 * 1024,
            "a dropped log gives its bytes back"
        );
        drop(old);
        let _c = EventLog::new(bus, "c".into(), &budget);
        assert_eq!(
            lock(&budget.logs).len(),
            1,
            "logs that are gone leave the list"
        );
    }

    #[tokio::test]
    async fn output_waits_only_for_a_recent_delivery_report_behind_the_window() {
        let log = EventLog::new(
            Arc::new(MemoryBus::new()),
            "t".into(),
            &Budget::new(1 << 30),
        );
        let chunk = "y".repeat(64 * 1024);
        for _ in 0..64 {
            log.emit(line(&chunk)).await;
        }
        assert!(!log.paused(), "no router reported: nothing holds the run");
        log.delivered(1);
        assert!(log.paused(), "4 MiB ahead of the delivery");
        log.delivered(40);
        assert!(!log.paused(), "within the window");
        log.delivered(2);
        assert!(!log.paused(), "the furthest delivery counts");
    }
}
