//! `agenttier`: one binary for every AgentTier process, and its command line.
//!
//! `up` runs the whole system in one process (in-process bus, embedded
//! store); `router`, `executor` and `controller` are the distributed services
//! on NATS. Each server subcommand parses its flags, starts logging and calls
//! the library's `run`. The client commands (`sandbox`, `configure`,
//! `invoke`, ...) speak the HTTP API of a running server; they live in
//! `client/`.

mod client;
mod servers;

use std::future::Future;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "agenttier",
    version,
    about = "Isolated, long-lived sandboxes for agents and humans",
    after_help = "Examples:
  agenttier up                                     # the whole system on 127.0.0.1:8080
  agenttier sandbox create demo-agent --template langgraph-agent --wait
  agenttier configure demo-agent --file /workspace/agent.py=./agent.py --entrypoint \"python /workspace/agent.py\"
  agenttier invoke demo-agent --input world && echo ok"
)]
struct Cli {
    /// Log filter of the servers (`info`, `agenttier_router=debug`, ...).
    #[arg(long, env = "AGENTTIER_LOG", default_value = "info", global = true)]
    log: String,
    #[command(flatten)]
    client: client::Globals,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The whole system in one process: no NATS, no Kubernetes.
    Up(servers::UpArgs),
    /// A stateless HTTP router on NATS.
    Router(servers::RouterArgs),
    /// A node's executor on NATS: hosts sandboxes and runs their processes.
    Executor(servers::ExecutorArgs),
    /// The control plane on NATS: templates and placement.
    Controller(servers::ControllerArgs),
    #[command(flatten)]
    Client(client::Command),
}

/// jemalloc, not glibc's malloc: the servers allocate and free small
/// buffers on every request and every output line across threads, where
/// glibc's arenas spent a fifth of a 429's CPU and a third of a line
/// stream's (A/B in docs/performance.md, "Fixed at" the commit that chose it).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Client(cmd) => std::process::exit(client::main(cli.client, cmd)),
        Command::Up(a) => serve(&cli.log, |s| servers::up(a, s)),
        Command::Router(a) => serve(&cli.log, |s| servers::router(a, s)),
        Command::Executor(a) => serve(&cli.log, |s| servers::executor(a, s)),
        Command::Controller(a) => serve(&cli.log, |s| servers::controller(a, s)),
    }
}

/// Runs a server until a signal: logging on stderr (colored only on a
/// terminal and without `NO_COLOR`: a log file or collector gets plain
/// text), a multi-threaded runtime.
fn serve<F, Fut>(log: &str, server: F) -> anyhow::Result<()>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(log))
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move { server(servers::shutdown_on_signals()).await })
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{Cli, Command};

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn client_flags_go_anywhere_and_server_flags_still_work() {
        let cli = Cli::try_parse_from([
            "agenttier",
            "-o",
            "json",
            "sandbox",
            "list",
            "--api-url",
            "http://h:1",
        ])
        .unwrap();
        assert_eq!(cli.client.output, super::client::Format::Json);
        assert_eq!(cli.client.api_url.as_deref(), Some("http://h:1"));
        let cli = Cli::try_parse_from(["agenttier", "up", "--listen", "127.0.0.1:0"]).unwrap();
        assert!(matches!(cli.command, Command::Up(a) if a.listen.port() == 0));
    }

    #[test]
    fn every_command_has_an_example() {
        fn walk(cmd: &clap::Command, path: &str) {
            let path = format!("{path} {}", cmd.get_name());
            let leaf = cmd.get_subcommands().next().is_none();
            let server = ["up", "router", "executor", "controller", "help"]
                .iter()
                .any(|s| path.ends_with(&format!(" {s}")));
            if leaf && !server {
                let help = cmd
                    .get_after_help()
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                assert!(help.contains("agenttier "), "`{path}` has no example");
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &path);
            }
        }
        walk(&Cli::command(), "");
    }
}
