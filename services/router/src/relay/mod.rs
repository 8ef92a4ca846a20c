//! The event relay: one bus subscription (invoke or configure events) turned
//! into an ordered, gap-free stream of [`Event`]s for one client.
//!
//! - Order: events are delivered by `seq`; duplicates drop; an event that
//!   jumps ahead is held while the hole is filled from replay, and what replay
//!   no longer has becomes one `gap` event, never a silent hole.
//! - Liveness: after `liveness` without any message (heartbeats included) the
//!   relay asks for a replay; when nobody answers it the stream ends with a
//!   synthesized `exit` (`reason: error`, `cause: executor_lost`); a
//!   configure ends with an `error` event instead.
//! - Attachment and flow control: an invoke relay publishes
//!   `inv.<id>.attached {delivered}` every `attach_interval` (from its own
//!   task, so a client that stops reading is still attached) and whenever
//!   another [`REPORT_BYTES`] have been delivered; the executor holds the
//!   run's output back while it is too far ahead of the delivery.
//! - Slow clients: live events beyond [`LIVE_BUFFER_BYTES`] are dropped and
//!   fetched again from replay as soon as the client has taken the rest.
//! - Output lines pass through: a `log` event's `data` JSON goes to the
//!   client as the executor published it ([`Relayed`]); other events are
//!   decoded.
//! - It ends after the terminal event, when the client leaves, or on shutdown.

mod relayed;
mod replay;
mod sequencer;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use agenttier_bus::model::now_unix_ms;
use agenttier_bus::msg::{Attached, Event, EventKind, ExitData, ExitReason, ReplayReply};
use agenttier_bus::{Bus, Message, Subscription};

pub(crate) use relayed::Relayed;
pub(crate) use replay::{REPLAY_LIMIT, SandboxReplay};
use replay::{ReplayError, replay};
pub(crate) use sequencer::{Sequenced, Sequencer};

/// How long a relay waits for an unreachable bus before it gives a run up.
const BUS_OUTAGE_LIMIT: Duration = Duration::from_secs(30);
/// Events buffered between the relay and a slow client.
const CLIENT_BUFFER: usize = 64;
/// Live event bytes a relay holds for a client that is behind; beyond it
/// live events are dropped and fetched again from replay when the client
/// catches up, so a stalled client costs bounded memory.
const LIVE_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Delivered event bytes between two delivery reports to the executor
/// (well under its 2 MiB flow-control window).
const REPORT_BYTES: usize = 256 * 1024;

/// What one held live event is charged besides its payload (the message,
/// its subject and the channel slot), so that a stream of tiny events is
/// bounded by memory like one of big ones.
const HELD_OVERHEAD: usize = 128;

/// The live events of a relay, read eagerly from the bus into a buffer of
/// at most `max_bytes` (payloads plus [`HELD_OVERHEAD`] each). What does not
/// fit is dropped (the relay's sequencer sees the hole and replays it), so
/// the bus never queues for a slow client. The bound is in bytes only: the
/// executor's flow-control window is in bytes too, and a count limit below
/// it dropped events of small lines that the window had let through.
struct Feed {
    rx: mpsc::UnboundedReceiver<Message>,
    held: Arc<std::sync::atomic::AtomicUsize>,
    /// Signaled when a live event was dropped.
    dropped: Arc<Notify>,
}

fn held_size(m: &Message) -> usize {
    m.payload.len() + HELD_OVERHEAD
}

impl Feed {
    async fn next(&mut self) -> Option<Message> {
        let m = self.rx.recv().await?;
        self.held
            .fetch_sub(held_size(&m), std::sync::atomic::Ordering::Relaxed);
        Some(m)
    }
}

fn bounded_feed(mut sub: Subscription, max_bytes: usize) -> Feed {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let held = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::unbounded_channel::<Message>();
    let counter = held.clone();
    let dropped_signal = Arc::new(Notify::new());
    let signal = dropped_signal.clone();
    tokio::spawn(async move {
        let mut dropped = 0u64;
        loop {
            let m = tokio::select! {
                m = sub.next() => m,
                _ = tx.closed() => None,
            };
            let Some(m) = m else { break };
            let n = held_size(&m);
            if counter.load(Ordering::Relaxed) + n > max_bytes {
                dropped += 1;
                signal.notify_one();
                continue;
            }
            counter.fetch_add(n, Ordering::Relaxed);
            if tx.send(m).is_err() {
                break;
            }
        }
        if dropped > 0 {
            tracing::debug!(
                dropped,
                "live events dropped for a slow client; replay filled them"
            );
        }
    });
    Feed {
        rx,
        held,
        dropped: dropped_signal,
    }
}

/// What is relayed, and how its liveness is probed.
pub(crate) enum Kind {
    Invoke {
        invoke_id: String,
        /// `inv.<id>.replay`.
        replay: String,
        /// Asked when `replay` has no responders: an invoke's events stay
        /// replayable on its sandbox's subject after the run's own has gone.
        sandbox: Option<SandboxReplay>,
        /// `inv.<id>.attached`; `None` for detached invokes.
        attached: Option<String>,
        /// Unix ms, when known, for the synthesized exit's `durationMs`.
        started_at: Option<u64>,
    },
    Configure {
        /// `cfg.<id>.replay`.
        replay: String,
    },
}

pub(crate) struct Relay {
    pub bus: Arc<dyn Bus>,
    pub kind: Kind,
    /// Silence before a probe (and the probe's own timeout).
    pub liveness: Duration,
    pub attach_interval: Duration,
    pub shutdown: CancellationToken,
}

/// The client went away; the relay stops.
struct Gone;

type Step<T = ()> = Result<T, Gone>;

impl Relay {
    /// Starts relaying `sub` after seq `after`, first applying `initial` (a
    /// replay the caller already fetched); the receiver yields the events.
    pub fn spawn(
        self,
        sub: Subscription,
        after: u64,
        initial: Option<ReplayReply>,
    ) -> mpsc::Receiver<Relayed> {
        let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
        let report = Report::default();
        let stop_reporting = CancellationToken::new();
        if let Kind::Invoke {
            attached: Some(subject),
            ..
        } = &self.kind
        {
            tokio::spawn(report.clone().publish(
                self.bus.clone(),
                subject.clone(),
                self.attach_interval,
                stop_reporting.clone(),
            ));
        }
        let run = Run {
            relay: self,
            seq: Sequencer::new(after),
            out: tx,
            lost: false,
            report,
            unreported: 0,
            _stop_reporting: stop_reporting.drop_guard(),
        };
        tokio::spawn(run.run(sub, initial));
        rx
    }
}

/// What the relay has delivered, told to the executor as `attached`.
#[derive(Clone, Default)]
struct Report {
    delivered: Arc<std::sync::atomic::AtomicU64>,
    now: Arc<Notify>,
}

impl Report {
    /// Publishes `attached {delivered}` every `interval` and when asked to,
    /// until `stop`. Its own task: a relay waiting on a client that stopped
    /// reading still says the client is attached.
    async fn publish(
        self,
        bus: Arc<dyn Bus>,
        subject: String,
        interval: Duration,
        stop: CancellationToken,
    ) {
        use std::sync::atomic::Ordering;
        // The executor counts a run as attached from its start: the first
        // report is due one interval in (most invokes are over by then, and
        // an immediate one was a bus message per invoke for nothing).
        let mut tick = tokio::time::interval_at(Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
                _ = self.now.notified() => {}
            }
            let body = Attached {
                delivered: Some(self.delivered.load(Ordering::Relaxed)),
            };
            if let Err(e) = agenttier_bus::publish_json(bus.as_ref(), subject.clone(), &body).await
            {
                tracing::debug!(error = %e, "attached publish failed");
            }
        }
    }
}

struct Run {
    relay: Relay,
    seq: Sequencer<Relayed>,
    out: mpsc::Sender<Relayed>,
    /// The stream was ended as lost: a configure's `error` is not a terminal
    /// event, so the sequencer alone would keep the relay going.
    lost: bool,
    report: Report,
    /// Bytes (about) delivered since the last delivery report.
    unreported: usize,
    _stop_reporting: tokio_util::sync::DropGuard,
}

impl Run {
    async fn run(mut self, sub: Subscription, initial: Option<ReplayReply>) {
        let mut sub = bounded_feed(sub, LIVE_BUFFER_BYTES);
        if let Some(r) = initial {
            let finished = r.finished;
            if self.apply_replay(r).await.is_err() || (finished && self.finish().await.is_err()) {
                return;
            }
        }
        let shutdown = self.relay.shutdown.clone();
        let dropped = sub.dropped.clone();
        let mut heard = Instant::now();
        while !self.seq.done() && !self.lost {
            let deadline = heard + self.relay.liveness;
            let step = tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    self.interrupted().await;
                    return;
                }
                _ = self.out.closed() => return,
                m = sub.next() => match m {
                    Some(m) => {
                        heard = Instant::now();
                        self.on_message(m).await.map(|_| true)
                    }
                    // The bus closed the subscription: probe once, and end
                    // with a terminal event either way (we cannot follow on).
                    None => match self.on_silence().await {
                        Ok(true) => self.lost().await.map(|_| false),
                        other => other.map(|_| false),
                    },
                },
                // Only once the feed is empty (biased): what it still holds
                // is delivered first.
                _ = dropped.notified() => self.after_drop().await,
                _ = tokio::time::sleep_until(deadline) => {
                    heard = Instant::now();
                    self.on_silence().await
                }
            };
            if !matches!(step, Ok(true)) {
                return;
            }
        }
    }

    async fn send(&mut self, events: Vec<Relayed>) -> Step {
        for e in events {
            if let (
                Relayed::Event(Event {
                    kind: EventKind::Start(s),
                    ..
                }),
                Kind::Invoke { started_at, .. },
            ) = (&e, &mut self.relay.kind)
            {
                *started_at = Some(s.started_at);
            }
            self.unreported += e.size();
            self.out.send(e).await.map_err(|_| Gone)?;
        }
        self.report
            .delivered
            .store(self.seq.last(), std::sync::atomic::Ordering::Relaxed);
        if self.unreported >= REPORT_BYTES {
            self.unreported = 0;
            self.report.now.notify_one();
        }
        Ok(())
    }

    async fn on_message(&mut self, m: Message) -> Step {
        let ev = match Relayed::decode(&m.payload) {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(subject = %m.subject, error = %e, "undecodable event skipped");
                return Ok(());
            }
        };
        // A heartbeat carries the newest seq: beyond ours, we missed some.
        let heartbeat_ahead = ev.is_heartbeat().then_some(ev.seq());
        let ready = self.seq.push(ev);
        self.send(ready).await?;
        let target = self.seq.known().max(heartbeat_ahead.unwrap_or(0));
        if !self.seq.done() && (target > self.seq.last() || self.seq.hole().is_some()) {
            self.catch_up(target).await?;
        }
        Ok(())
    }

    /// The retained events after the last one delivered. `None` means
    /// nobody holds them: no responders (the executor is gone), a refusal,
    /// or a bus that stayed unreachable for [`BUS_OUTAGE_LIMIT`]. While the
    /// bus itself is down (a NATS restart) it waits and asks again, so an
    /// outage of seconds costs a pause, not the stream.
    async fn fetch_replay(&self) -> Option<ReplayReply> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(250);
        loop {
            match self.ask_replay().await {
                Ok(r) => return Some(r),
                Err(ReplayError::Bus(agenttier_bus::Error::NoResponders)) => return None,
                Err(ReplayError::Rejected(r)) => {
                    // The sandbox's actor no longer knows the run (it moved,
                    // or its retention is over): nobody holds its events.
                    tracing::debug!(error = %r.error, "replay refused");
                    return None;
                }
                Err(e) if started.elapsed() >= BUS_OUTAGE_LIMIT => {
                    tracing::warn!(?e, "replay impossible for {BUS_OUTAGE_LIMIT:?}; giving up");
                    return None;
                }
                Err(e) => {
                    tracing::debug!(?e, "replay failed; the bus may be restarting");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = self.relay.shutdown.cancelled() => return None,
                    }
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// One replay request: to the run's own subject, then (for an invoke
    /// whose subject has gone) to its sandbox's.
    async fn ask_replay(&self) -> Result<ReplayReply, ReplayError> {
        let (bus, after, timeout) = (
            self.relay.bus.as_ref(),
            self.seq.last(),
            self.relay.liveness,
        );
        match &self.relay.kind {
            Kind::Configure { replay: subject } => replay(bus, subject, after, timeout).await,
            Kind::Invoke {
                replay: subject,
                sandbox,
                invoke_id,
                ..
            } => match (replay(bus, subject, after, timeout).await, sandbox) {
                (Err(ReplayError::Bus(agenttier_bus::Error::NoResponders)), Some(sandbox)) => {
                    sandbox.replay(bus, invoke_id, after, timeout).await
                }
                (r, _) => r,
            },
        }
    }

    /// Delivers a replay: a gap for what is no longer retained, then its events.
    async fn apply_replay(&mut self, r: ReplayReply) -> Step {
        if r.first_retained > self.seq.last() + 1 {
            let lost = self.seq.skip_to(r.first_retained - 1);
            self.send(lost).await?;
        }
        for ev in r.events {
            let ready = self.seq.push(ev.into());
            self.send(ready).await?;
        }
        Ok(())
    }

    /// Fills everything up to `target` from replay; what replay cannot give
    /// (or nobody answers for) becomes a gap.
    async fn catch_up(&mut self, target: u64) -> Step {
        while !self.seq.done() && (self.seq.last() < target || self.seq.hole().is_some()) {
            let before = self.seq.last();
            if let Some(r) = self.fetch_replay().await {
                self.apply_replay(r).await?;
            }
            if self.seq.last() == before {
                let to = target.max(self.seq.known());
                let lost = self.seq.skip_to(to);
                self.send(lost).await?;
            }
        }
        Ok(())
    }

    /// The run has ended: fetch what a size-capped replay left out; a run
    /// whose terminal event cannot be had ends as lost.
    async fn finish(&mut self) -> Step {
        if !self.replay_all().await? || !self.seq.done() {
            self.lost().await?;
        }
        Ok(())
    }

    /// Applies replays until one brings nothing new or the run's end is
    /// delivered; `false` when nobody answered (the executor is gone).
    async fn replay_all(&mut self) -> Step<bool> {
        while !self.seq.done() {
            let before = self.seq.last();
            let Some(r) = self.fetch_replay().await else {
                return Ok(false);
            };
            self.apply_replay(r).await?;
            if self.seq.last() == before {
                break;
            }
        }
        Ok(true)
    }

    /// Live events were dropped for this client: fetch everything retained
    /// after the last one delivered now, rather than waiting for a later
    /// event (there may be none: the dropped tail can hold the `exit`).
    async fn after_drop(&mut self) -> Step<bool> {
        if !self.replay_all().await? {
            self.lost().await?;
        }
        Ok(!self.seq.done() && !self.lost)
    }

    /// Nothing heard for a while: is anyone still there? `Ok(false)` ends.
    async fn on_silence(&mut self) -> Step<bool> {
        let Some(r) = self.fetch_replay().await else {
            self.lost().await?;
            return Ok(false);
        };
        let finished = r.finished;
        self.apply_replay(r).await?;
        if finished {
            self.finish().await?;
        }
        Ok(!self.seq.done() && !self.lost)
    }

    /// The router is shutting down. An invoke stream still ends with an
    /// `exit` (v0.8 clients treat a stream without one as success), with the
    /// id of the last event delivered, so resuming from it misses nothing.
    async fn interrupted(&mut self) {
        let Kind::Invoke {
            invoke_id,
            started_at,
            ..
        } = &self.relay.kind
        else {
            return;
        };
        if self.seq.done() {
            return;
        }
        let last = self.seq.last();
        let message = format!(
            "the router shut down; the run may still be going: resume with \
             GET .../invokes/{invoke_id}/events and Last-Event-ID: {last}"
        );
        let ev = Event {
            seq: last,
            kind: error_exit(invoke_id, *started_at, "router_shutdown", message),
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), self.out.send(ev.into())).await;
    }

    /// Ends the stream with the event that says the executor is gone.
    async fn lost(&mut self) -> Step {
        if self.lost {
            return Ok(());
        }
        self.lost = true;
        let seq = self.seq.last() + 1;
        let kind = match &self.relay.kind {
            Kind::Invoke {
                invoke_id,
                started_at,
                ..
            } => error_exit(
                invoke_id,
                *started_at,
                "executor_lost",
                "lost contact with the executor running this invoke".into(),
            ),
            Kind::Configure { .. } => EventKind::Error(serde_json::json!({
                "phase": "install",
                "message": "lost contact with the executor running this configure",
            })),
        };
        tracing::warn!(seq, "executor lost; ending the stream");
        let ready = self.seq.push(Event { seq, kind }.into());
        self.send(ready).await
    }
}

/// An `exit` the router writes itself for a run whose end it cannot see.
fn error_exit(invoke_id: &str, started_at: Option<u64>, cause: &str, message: String) -> EventKind {
    EventKind::Exit(ExitData {
        invoke_id: invoke_id.to_string(),
        exit_code: -1,
        duration_ms: started_at
            .map(|s| now_unix_ms().saturating_sub(s))
            .unwrap_or(0),
        reason: ExitReason::Error,
        cause: Some(cause.to_string()),
        message: Some(message),
    })
}

#[cfg(test)]
mod tests;
