//! The client commands of `agenttier` (SPEC §5): they speak the HTTP API of
//! any router (`agenttier up` or the distributed shape), print tables for
//! people and the server's JSON for scripts (`--output json`), and exit with
//! codes scripts can branch on. This is the command line only; programs use
//! the HTTP API or the Python SDK.
//!
//! Exit codes: 0 success; 1 an error, reported as one line `agenttier:
//! <status> <error>: <message>` on stderr; 2 a usage error; `invoke` and
//! `sandbox exec` exit with the command's own code (124 on a timeout, 130
//! when canceled).
//!
//! Where the API URL and key come from: the flag, else the environment
//! (`AGENTTIER_API_URL`, `AGENTTIER_API_KEY`), else the config file written by
//! `agenttier login`, else (the URL only) `http://127.0.0.1:8080`.

mod agent;
mod config;
mod exec;
mod follow;
mod http;
mod invoke;
mod keys;
mod output;
mod sandbox;
mod sse;
mod templates;
mod words;

use std::path::PathBuf;
use std::time::Duration;

pub use http::{Api, Error, Result};
pub use output::Format;

/// The API URL when neither a flag, the environment nor the config file
/// gives one.
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8080";

/// Options of every client command (accepted anywhere on the command line).
#[derive(Debug, Clone, clap::Args)]
pub struct Globals {
    /// Base URL of the AgentTier API [default: the config file's, else http://127.0.0.1:8080].
    #[arg(
        long,
        env = "AGENTTIER_API_URL",
        global = true,
        value_name = "URL",
        help_heading = "Client options"
    )]
    pub api_url: Option<String>,
    /// API key (`atk_...`), sent as `X-API-Key` [default: the config file's].
    #[arg(
        long,
        env = "AGENTTIER_API_KEY",
        global = true,
        hide_env_values = true,
        value_name = "KEY",
        help_heading = "Client options"
    )]
    pub api_key: Option<String>,
    /// `human` (tables, messages) or `json` (the server's JSON; streams as one JSON event per line).
    #[arg(
        short = 'o',
        long,
        env = "AGENTTIER_OUTPUT",
        global = true,
        value_enum,
        default_value = "human",
        help_heading = "Client options"
    )]
    pub output: Format,
    /// The config file `agenttier login` writes [default: $XDG_CONFIG_HOME/agenttier/config.json or ~/.config/agenttier/config.json].
    #[arg(
        long,
        env = "AGENTTIER_CONFIG",
        global = true,
        value_name = "FILE",
        help_heading = "Client options"
    )]
    pub config: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create, list, inspect, stop, resume, delete sandboxes; run commands in them.
    #[command(subcommand)]
    Sandbox(sandbox::SandboxCmd),
    /// List and show sandbox templates.
    #[command(subcommand)]
    Template(templates::TemplateCmd),
    /// Give an agent sandbox its files, install command and entrypoint.
    #[command(after_help = agent::EXAMPLES)]
    Configure(agent::ConfigureArgs),
    /// Run an agent sandbox's entrypoint; exits with its exit code.
    #[command(after_help = invoke::EXAMPLES)]
    Invoke(invoke::InvokeArgs),
    /// Create, list and revoke your API keys.
    #[command(subcommand, alias = "apikeys")]
    Keys(keys::KeysCmd),
    /// Show the audit log (admins).
    #[command(after_help = keys::AUDIT_EXAMPLES)]
    Audit(keys::AuditArgs),
    /// Check an API URL and key, and save them to the config file (mode 0600).
    #[command(after_help = keys::LOGIN_EXAMPLES)]
    Login(keys::LoginArgs),
    /// Show who the API key belongs to.
    #[command(after_help = "Example:\n  agenttier whoami")]
    Whoami,
}

/// The resolved connection settings of one command.
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: String,
    pub key: Option<String>,
    pub output: Format,
    pub config_path: Option<PathBuf>,
}

impl Settings {
    /// Flags and environment (both in `g`, clap puts the flag first), then
    /// the config file, then the default.
    pub fn resolve(g: &Globals) -> Result<Self> {
        let config_path = config::path(g.config.as_deref());
        let file = match &config_path {
            Some(p) => config::read(p)?,
            None => config::File::default(),
        };
        let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.trim().is_empty());
        let url = non_empty(&g.api_url)
            .or_else(|| non_empty(&file.api_url))
            .unwrap_or_else(|| DEFAULT_API_URL.to_string());
        Ok(Self {
            url: url.trim().trim_end_matches('/').to_string(),
            key: non_empty(&g.api_key).or_else(|| non_empty(&file.api_key)),
            output: g.output,
            config_path,
        })
    }
}

/// Runs one client command; returns the process's exit code.
pub fn main(globals: Globals, cmd: Command) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agenttier: starting the runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(run(globals, cmd)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("agenttier: {e}");
            e.exit_code()
        }
    }
}

async fn run(g: Globals, cmd: Command) -> Result<i32> {
    let settings = Settings::resolve(&g)?;
    let api = Api::new(&settings)?;
    let out = settings.output;
    match cmd {
        Command::Sandbox(c) => sandbox::run(&api, out, c).await,
        Command::Template(c) => templates::run(&api, out, c).await,
        Command::Configure(a) => agent::configure(&api, out, a).await,
        Command::Invoke(a) => invoke::run(&api, out, a).await,
        Command::Keys(c) => keys::run(&api, out, c).await,
        Command::Audit(a) => keys::audit(&api, out, a).await,
        Command::Login(a) => keys::login(&api, &settings, a).await,
        Command::Whoami => keys::whoami(&api, out).await,
    }
}

/// A clap value parser for durations: `30s`, `5m`, `1h30m`, bare seconds.
pub fn duration_arg(s: &str) -> Result<Duration, String> {
    agenttier_bus::model::parse_duration(s)
        .ok_or_else(|| format!("{s:?} is not a duration like 30s, 5m or 1h30m"))
}
