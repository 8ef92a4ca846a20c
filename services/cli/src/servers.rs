//! Wiring of the server subcommands: connect the bus and the store, then run
//! the libraries until a signal.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agenttier_bus::model::Principal;
use agenttier_bus::store::{FileStore, NatsKvStore, Store};
use agenttier_bus::subject::Subjects;
use agenttier_bus::{Bus, memory, nats};
use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL.
    #[arg(long, env = "AGENTTIER_NATS", default_value = "nats://127.0.0.1:4222")]
    pub nats: String,
    /// Prefix of every subject.
    #[arg(long, env = "AGENTTIER_SUBJECT_PREFIX", default_value = "agenttier")]
    pub subject_prefix: String,
    /// JetStream KV bucket holding the state.
    #[arg(long, env = "AGENTTIER_KV_BUCKET", default_value = "agenttier")]
    pub kv_bucket: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Address to serve HTTP on.
    #[arg(long, env = "AGENTTIER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Admin API key to accept; generated on first start when unset.
    #[arg(long, env = "AGENTTIER_BOOTSTRAP_API_KEY", hide_env_values = true)]
    pub bootstrap_api_key: Option<String>,
    #[command(flatten)]
    pub controller: agenttier_controller::Args,
    #[command(flatten)]
    pub executor: agenttier_executor::Args,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RouterArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Address to serve HTTP on.
    #[arg(long, env = "AGENTTIER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Admin API key to accept (stored hashed; every router may set the same).
    #[arg(long, env = "AGENTTIER_BOOTSTRAP_API_KEY", hide_env_values = true)]
    pub bootstrap_api_key: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ExecutorArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub executor: agenttier_executor::Args,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ControllerArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub controller: agenttier_controller::Args,
}

/// Fires on SIGTERM or Ctrl-C; a second signal exits at once.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        for n in 0..2 {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if n == 0 {
                tracing::info!("shutting down (signal again to exit at once)");
                t.cancel();
            } else {
                std::process::exit(130);
            }
        }
    });
    token
}

fn admin() -> Principal {
    Principal {
        sub: "admin".into(),
        email: "admin@localhost".into(),
        name: "admin".into(),
        groups: vec![],
        admin: true,
    }
}

async fn connect(
    args: &NatsArgs,
    name: &str,
) -> anyhow::Result<(Arc<dyn Bus>, Arc<dyn Store>, Subjects)> {
    let opts = nats::ConnectOptions {
        name: name.into(),
        ..Default::default()
    };
    let bus = nats::Bus::connect(&args.nats, opts)
        .await
        .with_context(|| format!("connecting to NATS at {}", args.nats))?;
    let store = NatsKvStore::open(bus.client().clone(), &args.kv_bucket)
        .await
        .with_context(|| format!("opening JetStream KV bucket {:?}", args.kv_bucket))?;
    Ok((
        Arc::new(bus),
        Arc::new(store),
        Subjects::new(args.subject_prefix.clone()),
    ))
}

async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    // Tests and scripts read this line to find the port.
    println!("agenttier: listening on http://{}", l.local_addr()?);
    Ok(l)
}

/// The admin key of `agenttier up`: the given one, or one made on first
/// start, printed once and kept (mode 0600) in the data directory.
async fn bootstrap_admin(
    store: &dyn Store,
    given: Option<&str>,
    data_dir: &Path,
) -> anyhow::Result<()> {
    if let Some(key) = given {
        agenttier_router::ensure_api_key(store, key, admin(), "bootstrap").await?;
        return Ok(());
    }
    let file = data_dir.join("admin-api-key");
    if file.exists() {
        println!("agenttier: admin API key is in {}", file.display());
        return Ok(());
    }
    let key = agenttier_router::generate_api_key();
    agenttier_router::ensure_api_key(store, &key, admin(), "admin").await?;
    write_private(&file, &format!("{key}\n"))?;
    println!(
        "agenttier: created an admin API key (shown once; also saved to {}):",
        file.display()
    );
    println!("  export AGENTTIER_API_KEY={key}");
    Ok(())
}

fn write_private(path: &PathBuf, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

pub async fn up(args: UpArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let data_dir = args.executor.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let store: Arc<dyn Store> = Arc::new(FileStore::open(&data_dir.join("state.redb"))?);
    let bus: Arc<dyn Bus> = Arc::new(memory::Bus::new());
    let subjects = Subjects::default();
    // Templates are in the store before the first request can ask for one.
    agenttier_controller::publish_templates(store.as_ref(), args.controller.manifests.as_deref())
        .await?;
    bootstrap_admin(store.as_ref(), args.bootstrap_api_key.as_deref(), &data_dir).await?;
    let listener = bind(args.listen).await?;

    let state = agenttier_router::AppState {
        bus: bus.clone(),
        store: store.clone(),
        subjects: subjects.clone(),
        config: Default::default(),
    };
    // Every part runs until the shutdown signal; when one ends early (an
    // error), the others are stopped too. Each finishes its own shutdown.
    let mut parts = tokio::task::JoinSet::new();
    let (b, st, sj, t) = (
        bus.clone(),
        store.clone(),
        subjects.clone(),
        shutdown.clone(),
    );
    let controller = args.controller;
    parts.spawn(async move {
        Ok::<_, anyhow::Error>(agenttier_controller::run(controller, b, st, sj, t).await?)
    });
    let (b, st, t) = (bus.clone(), store.clone(), shutdown.clone());
    let executor = args.executor;
    parts.spawn(async move { Ok(agenttier_executor::run(executor, b, st, subjects, t).await?) });
    let t = shutdown.clone();
    parts.spawn(async move { Ok(agenttier_router::serve(listener, state, t).await?) });
    let mut result = Ok(());
    while let Some(done) = parts.join_next().await {
        let r = done.map_err(anyhow::Error::from).and_then(|r| r);
        if r.is_err() && result.is_ok() {
            result = r;
        }
        shutdown.cancel();
    }
    result
}

pub async fn router(args: RouterArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (bus, store, subjects) = connect(&args.nats, "agenttier-router").await?;
    if let Some(key) = &args.bootstrap_api_key {
        agenttier_router::ensure_api_key(store.as_ref(), key, admin(), "bootstrap").await?;
    }
    let listener = bind(args.listen).await?;
    let state = agenttier_router::AppState {
        bus,
        store,
        subjects,
        config: Default::default(),
    };
    agenttier_router::serve(listener, state, shutdown).await?;
    Ok(())
}

pub async fn executor(args: ExecutorArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (bus, store, subjects) = connect(&args.nats, "agenttier-executor").await?;
    agenttier_executor::run(args.executor, bus, store, subjects, shutdown).await?;
    Ok(())
}

pub async fn controller(args: ControllerArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    agenttier_controller::load_templates(args.controller.manifests.as_deref())?;
    let (bus, store, subjects) = connect(&args.nats, "agenttier-controller").await?;
    agenttier_controller::run(args.controller, bus, store, subjects, shutdown).await?;
    Ok(())
}
