//! The command line (also how the library is configured: tests build
//! [`Args`] with `Args::try_parse_from`).

use std::path::PathBuf;
use std::time::Duration;

/// One scenario; `standard` is all of them, in the order listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Invoke the entrypoint at each `--concurrency` (closed loop), then at
    /// `--rate` (open loop) when given.
    Invoke,
    /// One run writing `--stream-mib` MiB as lines, and as raw bytes.
    Stream,
    /// A burst of invokes against a full, capped sandbox: 429 latency.
    Throttle,
    /// Time from the cancel request to the `exit` event at the client.
    Cancel,
    /// `GET /sandboxes/{id}` and `GET /sandboxes`.
    Api,
    /// No-op reconfigures (answered `skipped`).
    Configure,
    /// Create `--idle` sandboxes; create rate and executor memory each.
    Idle,
    /// invoke, stream, throttle, cancel, api, configure, idle.
    Standard,
}

/// A process under test: `PID` or `LABEL=PID`.
#[derive(Debug, Clone)]
pub struct Pid {
    pub label: String,
    pub pid: u32,
}

fn parse_pid(s: &str) -> Result<Pid, String> {
    let (label, pid) = match s.split_once('=') {
        Some((l, p)) => (l.to_string(), p),
        None => (format!("pid {s}"), s),
    };
    let pid = pid.parse().map_err(|_| format!("{s:?}: not a PID"))?;
    Ok(Pid { label, pid })
}

/// `250ms`, `10s`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("{s:?}: not a duration"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: use ms, s or m")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Drives AgentTier routers with checked scenarios and reports latency,
/// throughput and errors beside floors measured in the same run.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "agenttier-loadtest", version)]
pub struct Args {
    /// Scenarios to run, in order.
    #[arg(value_enum, required_unless_present = "render")]
    pub scenarios: Vec<Scenario>,
    /// A router's base URL; repeat (or separate with commas) for several,
    /// used round-robin.
    #[arg(
        long = "url",
        env = "AGENTTIER_LOADTEST_URLS",
        value_delimiter = ',',
        required_unless_present = "render"
    )]
    pub urls: Vec<String>,
    /// An admin API key every router accepts.
    #[arg(
        long,
        env = "AGENTTIER_API_KEY",
        hide_env_values = true,
        required_unless_present = "render",
        default_value = ""
    )]
    pub api_key: String,
    /// Run nothing: read this JSON report (written by `--json`) and write
    /// `--markdown` and `--svg` from it.
    #[arg(long, env = "AGENTTIER_LOADTEST_RENDER", conflicts_with = "scenarios")]
    pub render: Option<PathBuf>,
    /// Concurrency levels (closed loop); default per scenario: invoke
    /// 1,8,64,256; api 50; throttle 50,1000; cancel, configure 1; idle 32.
    #[arg(long, env = "AGENTTIER_LOADTEST_CONCURRENCY", value_delimiter = ',')]
    pub concurrency: Vec<usize>,
    /// Requests per level (default per scenario).
    #[arg(long, env = "AGENTTIER_LOADTEST_REQUESTS")]
    pub requests: Option<u64>,
    /// Run each level for this long instead of a number of requests.
    #[arg(long, env = "AGENTTIER_LOADTEST_DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Invoke also open loop at this many requests per second (latency
    /// counted from the scheduled start, so queueing shows).
    #[arg(long, env = "AGENTTIER_LOADTEST_RATE")]
    pub rate: Option<f64>,
    /// The invoke entrypoint, split on spaces. A `cat` entrypoint is checked
    /// to echo each request's unique body; others to exit 0.
    #[arg(
        long,
        env = "AGENTTIER_LOADTEST_ENTRYPOINT",
        default_value = "/bin/true"
    )]
    pub entrypoint: String,
    /// Template of the sandboxes the harness creates.
    #[arg(
        long,
        env = "AGENTTIER_LOADTEST_TEMPLATE",
        default_value = "langgraph-agent"
    )]
    pub template: String,
    /// Invokes one sandbox of `--template` admits at a time (its
    /// `maxConcurrentInvokes`); the harness creates enough sandboxes that
    /// closed-loop workers never meet the cap.
    #[arg(long, env = "AGENTTIER_LOADTEST_PER_SANDBOX", default_value_t = 4)]
    pub per_sandbox: usize,
    /// A template with a small `maxConcurrentInvokes`, for `throttle`. The
    /// API cannot create templates: start the server with a manifest
    /// holding it (`scripts/bench.sh` writes one).
    #[arg(
        long,
        env = "AGENTTIER_LOADTEST_CAPPED_TEMPLATE",
        default_value = "capped"
    )]
    pub capped_template: String,
    /// MiB one `stream` run writes; a list runs each size.
    #[arg(
        long,
        env = "AGENTTIER_LOADTEST_STREAM_MIB",
        value_delimiter = ',',
        default_value = "8,64"
    )]
    pub stream_mib: Vec<u64>,
    /// How long `cancel` waits after the `start` event before canceling
    /// (0 cancels at once, while the sandbox may still be starting).
    #[arg(long, env = "AGENTTIER_LOADTEST_CANCEL_AFTER", value_parser = parse_duration, default_value = "100ms")]
    pub cancel_after: Duration,
    /// Requests in each `throttle` burst.
    #[arg(long, env = "AGENTTIER_LOADTEST_BURST", default_value_t = 1000)]
    pub burst: u64,
    /// Sandboxes `idle` creates.
    #[arg(long, env = "AGENTTIER_LOADTEST_IDLE", default_value_t = 1000)]
    pub idle: usize,
    /// The executor's PID (`agenttier up` or `agenttier executor`), for
    /// `idle`'s memory per sandbox.
    #[arg(long, env = "AGENTTIER_LOADTEST_EXECUTOR_PID")]
    pub executor_pid: Option<u32>,
    /// A process under test (`PID` or `LABEL=PID`); its CPU time and RSS
    /// are read from /proc before and after each measurement. Repeatable.
    #[arg(long = "pid", env = "AGENTTIER_LOADTEST_PIDS", value_delimiter = ',', value_parser = parse_pid)]
    pub pids: Vec<Pid>,
    /// A NATS server for the request/reply floor (skipped without it).
    #[arg(long, env = "AGENTTIER_LOADTEST_NATS")]
    pub nats: Option<String>,
    /// Do not measure floors.
    #[arg(long, env = "AGENTTIER_LOADTEST_NO_FLOORS")]
    pub no_floors: bool,
    /// Leave the sandboxes the harness created.
    #[arg(long, env = "AGENTTIER_LOADTEST_NO_CLEANUP")]
    pub no_cleanup: bool,
    /// A name for this run in reports (`embedded`, `distributed`).
    #[arg(long, env = "AGENTTIER_LOADTEST_LABEL", default_value = "run")]
    pub label: String,
    /// Bound on one request.
    #[arg(long, env = "AGENTTIER_LOADTEST_REQUEST_TIMEOUT", value_parser = parse_duration, default_value = "60s")]
    pub request_timeout: Duration,
    /// Bound on one scenario (setup included).
    #[arg(long, env = "AGENTTIER_LOADTEST_SCENARIO_TIMEOUT", value_parser = parse_duration, default_value = "10m")]
    pub scenario_timeout: Duration,
    /// Write the report as JSON here.
    #[arg(long, env = "AGENTTIER_LOADTEST_JSON")]
    pub json: Option<PathBuf>,
    /// Write the report as Markdown tables here.
    #[arg(long, env = "AGENTTIER_LOADTEST_MARKDOWN")]
    pub markdown: Option<PathBuf>,
    /// Write an SVG chart of invoke latency percentiles by concurrency here.
    #[arg(long, env = "AGENTTIER_LOADTEST_SVG")]
    pub svg: Option<PathBuf>,
    /// No progress line on stderr (it is shown only on a terminal anyway).
    #[arg(long, env = "AGENTTIER_LOADTEST_QUIET")]
    pub quiet: bool,
}

impl Args {
    /// The scenarios to run, `standard` expanded, each once.
    pub fn expanded_scenarios(&self) -> Vec<Scenario> {
        use Scenario::*;
        let mut out = Vec::new();
        for s in &self.scenarios {
            let add: &[Scenario] = match s {
                Standard => &[Invoke, Stream, Throttle, Cancel, Api, Configure, Idle],
                one => std::slice::from_ref(one),
            };
            for a in add {
                if !out.contains(a) {
                    out.push(*a);
                }
            }
        }
        out
    }

    /// `--concurrency`, or `default` when not given.
    pub fn levels(&self, default: &[usize]) -> Vec<usize> {
        let v = if self.concurrency.is_empty() {
            default.to_vec()
        } else {
            self.concurrency.clone()
        };
        v.into_iter().map(|c| c.max(1)).collect()
    }

    /// The entrypoint as argv.
    pub fn entrypoint_argv(&self) -> Vec<String> {
        self.entrypoint
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }
}
