//! The scenarios, and what they share: the context (API client, run id,
//! sandboxes to clean up), request budgets, and the closed- and open-loop
//! drivers that turn a request function into a measured [`Row`].

mod api;
mod cancel;
mod configure;
mod idle;
mod invoke;
mod stream;
mod throttle;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::Result;
use crate::args::{Args, Pid, Scenario};
use crate::client::Api;
use crate::procstat::{self, Snapshot};
use crate::progress::Progress;
use crate::report::{Report, Row};
use crate::stats::{ErrorKind, Recorder, Sample};

pub(crate) async fn run(s: Scenario, ctx: &Ctx, report: &mut Report) -> Result<()> {
    match s {
        Scenario::Invoke => invoke::run(ctx, report).await,
        Scenario::Stream => stream::run(ctx, report).await,
        Scenario::Throttle => throttle::run(ctx, report).await,
        Scenario::Cancel => cancel::run(ctx, report).await,
        Scenario::Api => api::run(ctx, report).await,
        Scenario::Configure => configure::run(ctx, report).await,
        Scenario::Idle => idle::run(ctx, report).await,
        Scenario::Standard => Ok(()),
    }
}

/// How much one level runs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Budget {
    Requests(u64),
    For(Duration),
}

pub(crate) struct Ctx {
    pub args: Args,
    pub api: Api,
    /// Distinguishes this run's sandbox names from any other's.
    pub run_id: String,
    pids: Vec<Pid>,
    created: Mutex<Vec<String>>,
}

impl Ctx {
    pub fn new(args: Args) -> Result<Self> {
        let api = Api::new(&args.urls, &args.api_key, args.request_timeout)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let run_id = format!("{:06x}", (nanos ^ std::process::id()) & 0xff_ffff);
        let pids = procstat::with_self(&args.pids);
        Ok(Self {
            args,
            api,
            run_id,
            pids,
            created: Mutex::new(Vec::new()),
        })
    }

    /// `n` fresh sandbox names for `what`, remembered for [`cleanup`](Self::cleanup).
    pub fn names(&self, what: &str, n: usize) -> Vec<String> {
        let names: Vec<String> = (0..n)
            .map(|i| format!("lt-{}-{what}-{i}", self.run_id))
            .collect();
        self.created
            .lock()
            .expect("names lock")
            .extend(names.iter().cloned());
        names
    }

    /// Creates `n` sandboxes of `template`, running and configured with
    /// `configure` (a configure body) when given.
    pub async fn sandboxes(
        &self,
        what: &str,
        n: usize,
        template: &str,
        configure: Option<&serde_json::Value>,
    ) -> Result<Vec<String>> {
        let names = self.names(what, n);
        self.api.create_running(&names, template).await?;
        if let Some(body) = configure {
            self.api.configure_all(&names, body).await?;
        }
        Ok(names)
    }

    /// Deletes the sandboxes created so far (without waiting for them).
    pub async fn cleanup(&self) {
        let names = std::mem::take(&mut *self.created.lock().expect("names lock"));
        self.api.delete_all(&names, 16).await;
    }

    /// `--requests`, `--duration`, or `default` requests.
    pub fn budget(&self, default: u64) -> Budget {
        match (self.args.requests, self.args.duration) {
            (Some(n), _) => Budget::Requests(n),
            (None, Some(d)) => Budget::For(d),
            (None, None) => Budget::Requests(default),
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        procstat::snapshot(&self.pids)
    }

    pub fn progress(&self, label: &str, budget: Budget) -> Progress {
        let (total, duration) = match budget {
            Budget::Requests(n) => (Some(n), None),
            Budget::For(d) => (None, Some(d)),
        };
        Progress::start(
            format!("{} {label}", self.args.label),
            total,
            duration,
            self.args.quiet,
        )
    }

    /// Runs `f` unmeasured, `concurrency` requests or ten, so connections
    /// are open and caches warm before a measurement.
    pub async fn warm_up<F, Fut>(&self, concurrency: usize, f: F)
    where
        F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<Sample, ErrorKind>> + Send + 'static,
    {
        let hidden = Progress::start(String::new(), None, None, true);
        let n = concurrency.max(10) as u64;
        drive(concurrency, Budget::Requests(n), &hidden, f).await;
    }

    /// Runs `f` closed loop and makes a row of it, with the CPU and memory
    /// the processes under test used meanwhile.
    pub async fn measure<F, Fut>(
        &self,
        scenario: &str,
        case: &str,
        concurrency: usize,
        budget: Budget,
        f: F,
    ) -> Row
    where
        F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<Sample, ErrorKind>> + Send + 'static,
    {
        let progress = self.progress(&format!("{scenario} {case}"), budget);
        let before = self.snapshot();
        let (rec, wall) = drive(concurrency, budget, &progress, f).await;
        let mut row = Row::new(scenario, case, concurrency, rec, wall);
        row.procs = procstat::since(&before);
        row
    }
}

/// Runs `f(worker, i)` from `concurrency` workers, each starting its next
/// request when the last one finished, until the budget is spent.
pub(crate) async fn drive<F, Fut>(
    concurrency: usize,
    budget: Budget,
    progress: &Progress,
    f: F,
) -> (Recorder, Duration)
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<Sample, ErrorKind>> + Send + 'static,
{
    let f = Arc::new(f);
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let (f, issued, done) = (f.clone(), issued.clone(), progress.done.clone());
        workers.spawn(async move {
            let mut rec = Recorder::default();
            loop {
                let i = issued.fetch_add(1, Ordering::Relaxed);
                let more = match budget {
                    Budget::Requests(n) => i < n,
                    Budget::For(d) => start.elapsed() < d,
                };
                if !more {
                    return rec;
                }
                rec.record(f(w, i).await);
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let mut all = Recorder::default();
    while let Some(r) = workers.join_next().await {
        match r {
            Ok(rec) => all.merge(rec),
            Err(_) => all.record(Err(ErrorKind::Local)),
        }
    }
    (all, start.elapsed())
}

/// Runs `f(slot, i)` open loop: request `i` is due at `i / rate` seconds;
/// at most `slots` are in flight (each holding a slot number), and the
/// time a request waited past its due time counts in its latency.
pub(crate) async fn drive_rate<F, Fut>(
    rate: f64,
    slots: usize,
    budget: Budget,
    progress: &Progress,
    f: F,
) -> (Recorder, Duration)
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<Sample, ErrorKind>> + Send + 'static,
{
    let f = Arc::new(f);
    let free = Arc::new(Mutex::new((0..slots).collect::<Vec<usize>>()));
    let permits = Arc::new(tokio::sync::Semaphore::new(slots));
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0u64.. {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        let more = match budget {
            Budget::Requests(n) => i < n,
            Budget::For(d) => due - start < d,
        };
        if !more {
            break;
        }
        tokio::time::sleep_until(due).await;
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let slot = free.lock().expect("slots lock").pop().unwrap_or(0);
        let (f, free, done) = (f.clone(), free.clone(), progress.done.clone());
        tasks.spawn(async move {
            let late = due.elapsed();
            let r = f(slot, i).await;
            free.lock().expect("slots lock").push(slot);
            drop(permit);
            done.fetch_add(1, Ordering::Relaxed);
            r.map(|s| s.delayed(late))
        });
    }
    let mut all = Recorder::default();
    while let Some(r) = tasks.join_next().await {
        all.record(r.unwrap_or(Err(ErrorKind::Local)));
    }
    (all, start.elapsed())
}
