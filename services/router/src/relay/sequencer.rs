//! Putting events back in `seq` order: duplicates dropped, early arrivals
//! held until the hole before them is filled (by replay) or declared lost
//! (one `gap` event). Pure, so the rules are tested without a bus.

use std::collections::BTreeMap;

use agenttier_bus::msg::{Event, EventKind, GapData};

/// Early arrivals held at most; more are dropped and come back by replay
/// (or as part of a gap), so a stream's memory stays bounded.
const MAX_PENDING: usize = 4096;

/// What the sequencer needs to know of an event.
pub(crate) trait Sequenced {
    fn seq(&self) -> u64;
    fn is_heartbeat(&self) -> bool;
    /// Whether it ends the stream (`exit`, `result`).
    fn is_terminal(&self) -> bool;
    /// The `gap` event for a lost range.
    fn gap(from: u64, to: u64) -> Self;
}

impl Sequenced for Event {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn is_heartbeat(&self) -> bool {
        matches!(self.kind, EventKind::Heartbeat)
    }
    fn is_terminal(&self) -> bool {
        self.kind.is_terminal()
    }
    fn gap(from: u64, to: u64) -> Self {
        Event {
            seq: to,
            kind: EventKind::Gap(GapData { from, to }),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Sequencer<T = Event> {
    last: u64,
    pending: BTreeMap<u64, T>,
    done: bool,
}

impl<T: Sequenced> Sequencer<T> {
    /// A sequencer that has already delivered everything up to `after`.
    pub fn new(after: u64) -> Self {
        Self {
            last: after,
            pending: BTreeMap::new(),
            done: false,
        }
    }

    /// The highest seq delivered.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Whether the terminal event (`exit`, `result`) was delivered.
    pub fn done(&self) -> bool {
        self.done
    }

    /// The highest seq known to exist (delivered or held).
    pub fn known(&self) -> u64 {
        self.pending
            .keys()
            .next_back()
            .copied()
            .unwrap_or(self.last)
            .max(self.last)
    }

    /// The first missing range, when something after it is held.
    pub fn hole(&self) -> Option<(u64, u64)> {
        self.pending.keys().next().map(|k| (self.last + 1, k - 1))
    }

    /// Takes one event; returns what is now deliverable, in order.
    /// Heartbeats are never delivered.
    pub fn push(&mut self, ev: T) -> Vec<T> {
        let mut out = Vec::new();
        if self.done || ev.is_heartbeat() || ev.seq() <= self.last {
            return out;
        }
        if ev.seq() > self.last + 1 {
            if self.pending.len() < MAX_PENDING {
                self.pending.entry(ev.seq()).or_insert(ev);
            }
            return out;
        }
        self.emit(ev, &mut out);
        self.drain(&mut out);
        out
    }

    /// Declares everything missing up to `to` lost: a `gap` for each missing
    /// range (its seq is the range's end, so `Last-Event-ID` resumes after
    /// it), with the held events between them delivered in order.
    pub fn skip_to(&mut self, to: u64) -> Vec<T> {
        let mut out = Vec::new();
        while !self.done && self.last < to {
            let end = match self.pending.keys().next() {
                Some(k) => to.min(k - 1),
                None => to,
            };
            if end > self.last {
                let from = self.last + 1;
                self.emit(T::gap(from, end), &mut out);
            }
            self.drain(&mut out);
        }
        out
    }

    fn emit(&mut self, ev: T, out: &mut Vec<T>) {
        self.last = ev.seq();
        self.done = ev.is_terminal();
        out.push(ev);
        if self.done {
            self.pending.clear();
        }
    }

    fn drain(&mut self, out: &mut Vec<T>) {
        while !self.done {
            match self.pending.remove(&(self.last + 1)) {
                Some(ev) => self.emit(ev, out),
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agenttier_bus::msg::{ExitData, ExitReason, LogData};

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
                invoke_id: "inv-x".into(),
                exit_code: 0,
                duration_ms: 1,
                reason: ExitReason::Completed,
                cause: None,
                message: None,
            }),
        }
    }

    fn seqs(events: &[Event]) -> Vec<u64> {
        events.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn in_order_events_pass_and_duplicates_drop() {
        let mut s = Sequencer::new(0);
        assert_eq!(seqs(&s.push(log(1))), vec![1]);
        assert_eq!(seqs(&s.push(log(1))), Vec::<u64>::new());
        assert_eq!(seqs(&s.push(log(2))), vec![2]);
        assert_eq!(s.last(), 2);
    }

    #[test]
    fn early_events_wait_for_the_hole_to_fill() {
        let mut s = Sequencer::new(0);
        s.push(log(1));
        assert!(s.push(log(3)).is_empty());
        assert!(s.push(log(4)).is_empty());
        assert_eq!(s.hole(), Some((2, 2)));
        assert_eq!(s.known(), 4);
        assert_eq!(seqs(&s.push(log(2))), vec![2, 3, 4]);
        assert_eq!(s.hole(), None);
    }

    #[test]
    fn lost_ranges_become_one_gap_each() {
        let mut s = Sequencer::new(0);
        s.push(log(1));
        s.push(log(4));
        s.push(log(7));
        let out = s.skip_to(8);
        assert_eq!(seqs(&out), vec![3, 4, 6, 7, 8]);
        assert_eq!(out[0].kind, EventKind::Gap(GapData { from: 2, to: 3 }));
        assert_eq!(out[2].kind, EventKind::Gap(GapData { from: 5, to: 6 }));
        assert_eq!(out[4].kind, EventKind::Gap(GapData { from: 8, to: 8 }));
        assert_eq!(s.last(), 8);
    }

    #[test]
    fn heartbeats_are_not_delivered_and_terminal_ends() {
        let mut s = Sequencer::new(0);
        assert!(
            s.push(Event {
                seq: 0,
                kind: EventKind::Heartbeat
            })
            .is_empty()
        );
        s.push(log(1));
        s.push(log(3));
        assert_eq!(seqs(&s.push(exit(2))), vec![2]);
        assert!(s.done());
        assert!(s.push(log(3)).is_empty());
        assert_eq!(s.hole(), None);
    }

    #[test]
    fn resume_starts_after_the_given_seq() {
        let mut s = Sequencer::new(5);
        assert!(s.push(log(5)).is_empty());
        assert_eq!(seqs(&s.push(log(6))), vec![6]);
    }
}
