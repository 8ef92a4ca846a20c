//! The finished invokes a sandbox's actor remembers, for cancel, resume and
//! `GET /invokes`: as long as their events are retained, at most
//! [`REMEMBERED`] of them.

use std::collections::VecDeque;
use std::time::Instant;

use agenttier_bus::msg::ExitReason;

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
}

impl Finished {
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
        while self.finished.len() >= REMEMBERED
            || self
                .finished
                .front()
                .is_some_and(|old| old.ended.elapsed() > crate::events::RETENTION)
        {
            self.finished.pop_front();
        }
        self.finished.push_back(f);
    }

    pub fn get(&self, id: &str) -> Option<&Finished> {
        self.finished.iter().find(|f| f.id == id)
    }

    /// Newest first.
    pub fn newest(&self) -> impl Iterator<Item = &Finished> {
        self.finished.iter().rev()
    }
}
