//! `agenttier`: one binary for every AgentTier process.
//!
//! `up` runs the whole system in one process (in-process bus, embedded
//! store); `router`, `executor` and `controller` are the distributed services
//! on NATS. Each subcommand parses its flags, starts logging and calls the
//! library's `run`.

mod servers;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "agenttier",
    version,
    about = "Isolated, long-lived sandboxes for agents and humans"
)]
struct Cli {
    /// Log filter (`info`, `agenttier_router=debug`, ...).
    #[arg(long, env = "AGENTTIER_LOG", default_value = "info", global = true)]
    log: String,
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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let shutdown = servers::shutdown_on_signals();
        match cli.command {
            Command::Up(a) => servers::up(a, shutdown).await,
            Command::Router(a) => servers::router(a, shutdown).await,
            Command::Executor(a) => servers::executor(a, shutdown).await,
            Command::Controller(a) => servers::controller(a, shutdown).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
