//! The finished invokes a sandbox's actor remembers, for cancel, resume
//! (their events: `sbx.<ns>.<name>.replay`) and `GET /invokes`: for the
//! retention after their end, at most [`REMEMBERED`] of them.

use std::collections::VecDeque;
use std::time::Instant;

use agenttier_bus::msg::ExitReason;

use crate::events::{EventLog, RETENTION};

/// Most finished invokes remembered per sandbox.
pub const REMEMBERED: usize = 4096;
/// How many finished invokes `GET /invokes` lists.
pub const LISTED: usize = 256;

pub struct Finished {
    pub id: String,
    pub owner: String,
    pub started_at: u64,
    pub reason: ExitReason,
    pub ended: Instant,
    /// Its retained events.
    pub log: EventLog,
}

impl Finished {
    fn expired_at(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.ended) > RETENTION
    }

    /// The `state` shown by `GET /invokes`.
    pub fn state(&self) -> &'static str {
        match self.reason {
            ExitReason::Completed => "completed",
            ExitReason::Canceled => "canceled",
            ExitReason::Timeout => "timeout",
            ExitReason::Error => "error",
        }
    }
}

/// Oldest first.
#[derive(Default)]
pub struct History {
    finished: VecDeque<Finished>,
}

impl History {
    /// Adds a run that ended after every one already remembered; forgets
    /// those past the retention or the bound.
    pub fn remember(&mut self, f: Finished) {
        self.expire();
        while self.finished.len() >= REMEMBERED {
            self.finished.pop_front();
        }
        self.finished.push_back(f);
    }

    /// Forgets the runs past the retention.
    pub fn expire(&mut self) {
        self.expire_at(Instant::now());
    }

    fn expire_at(&mut self, now: Instant) {
        while self.finished.front().is_some_and(|f| f.expired_at(now)) {
            self.finished.pop_front();
        }
    }

    pub fn get(&self, id: &str) -> Option<&Finished> {
        self.newest().find(|f| f.id == id)
    }

    /// Newest first, within the retention.
    pub fn newest(&self) -> impl Iterator<Item = &Finished> {
        self.newest_at(Instant::now())
    }

    fn newest_at(&self, now: Instant) -> impl Iterator<Item = &Finished> {
        self.finished
            .iter()
            .rev()
            .take_while(move |f| !f.expired_at(now))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::events::Budget;

    fn finished(id: &str) -> Finished {
        let bus = Arc::new(agenttier_bus::memory::Bus::new());
        Finished {
            id: id.into(),
            owner: "apikey:a".into(),
            started_at: 0,
            reason: ExitReason::Completed,
            ended: Instant::now(),
            log: EventLog::new(
                bus,
                format!("agenttier.inv.{id}.events"),
                &Budget::new(1 << 20),
            ),
        }
    }

    #[test]
    fn runs_past_the_retention_are_neither_found_nor_kept() {
        let mut h = History::default();
        h.remember(finished("inv-a"));
        h.remember(finished("inv-b"));
        let ended = h.finished[1].ended;
        let ids = |h: &History, at: Duration| -> Vec<String> {
            h.newest_at(ended + at).map(|f| f.id.clone()).collect()
        };
        assert_eq!(
            ids(&h, RETENTION - Duration::from_secs(1)),
            ["inv-b", "inv-a"]
        );
        assert!(ids(&h, RETENTION + Duration::from_secs(1)).is_empty());
        assert!(h.get("inv-a").is_some(), "within the retention now");

        h.expire_at(ended + RETENTION - Duration::from_secs(1));
        assert_eq!(h.finished.len(), 2, "nothing expired yet");
        h.expire_at(ended + RETENTION + Duration::from_secs(1));
        assert!(h.finished.is_empty(), "their events are let go");
    }

    #[test]
    fn at_most_the_bound_is_remembered_oldest_going_first() {
        let mut h = History::default();
        for i in 0..REMEMBERED + 2 {
            h.remember(finished(&format!("inv-{i}")));
        }
        assert_eq!(h.finished.len(), REMEMBERED);
        assert!(h.get("inv-1").is_none());
        assert!(h.get("inv-2").is_some());
    }
}
