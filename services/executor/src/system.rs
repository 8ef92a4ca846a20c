//! The actix system beside tokio: its own thread and a few arbiters.
//!
//! Actors are `!Send` and live on an arbiter's thread; the executor's network
//! I/O stays on the main tokio runtime. Actors are spread over the arbiters
//! round-robin. (ADR 0002 records why.)

use std::sync::atomic::{AtomicUsize, Ordering};

use actix::{Actor, Addr, Arbiter, Supervised, Supervisor, System};

pub struct Actors {
    system: System,
    arbiters: Vec<Arbiter>,
    next: AtomicUsize,
}

impl Actors {
    /// Starts the system thread with `n` arbiters.
    pub fn start(n: usize) -> Result<Self, String> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("actix-system".into())
            .spawn(move || {
                let sys = System::new();
                sys.block_on(async move {
                    let arbiters: Vec<Arbiter> = (0..n.max(1)).map(|_| Arbiter::new()).collect();
                    let _ = tx.send((System::current(), arbiters));
                });
                let _ = sys.run();
            })
            .map_err(|e| e.to_string())?;
        let (system, arbiters) = rx.recv().map_err(|e| e.to_string())?;
        Ok(Self {
            system,
            arbiters,
            next: AtomicUsize::new(0),
        })
    }

    /// Starts a supervised actor on the next arbiter.
    pub fn start_actor<A, F>(&self, make: F) -> Addr<A>
    where
        A: Actor<Context = actix::Context<A>> + Supervised,
        F: FnOnce() -> A + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.arbiters.len();
        Supervisor::start_in_arbiter(&self.arbiters[i].handle(), move |_| make())
    }

    pub fn stop(self) {
        for a in &self.arbiters {
            a.stop();
        }
        self.system.stop();
    }
}
