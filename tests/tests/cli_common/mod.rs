//! Running the real `agenttier` binary as a user would, against a real
//! `agenttier up`: a clean environment (no `AGENTTIER_*` but what the test
//! sets, a private config directory), a working directory of its own, and
//! the exit code, stdout and stderr to assert on.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use agenttier_tests::client::Client;
use agenttier_tests::process::{Embedded, System, agenttier_binary};
use serde_json::Value;
use tempfile::TempDir;

/// What one run of the CLI did.
#[derive(Debug)]
pub struct Out {
    /// The exit code (`-1` when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Stdout as bytes.
    pub raw: Vec<u8>,
}

impl Out {
    #[track_caller]
    pub fn expect(self, code: i32) -> Self {
        assert_eq!(self.code, code, "unexpected exit code: {self:#?}");
        self
    }

    /// Stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
}

/// A system and a user of its CLI.
pub struct Cli {
    pub sys: Embedded,
    /// The working directory, also holding the config directory.
    pub dir: TempDir,
    env: Vec<(String, String)>,
}

impl Cli {
    /// Starts `agenttier up`; the CLI gets its URL and admin key from the
    /// environment, as after `export AGENTTIER_API_URL=... AGENTTIER_API_KEY=...`.
    pub fn start() -> Self {
        let sys = Embedded::start();
        runtime().block_on(agenttier_tests::client::wait_ready(&sys));
        let dir = tempfile::Builder::new()
            .prefix("agenttier-cli-")
            .tempdir()
            .expect("a temp dir");
        let env = vec![
            ("AGENTTIER_API_URL".to_string(), sys.url()),
            ("AGENTTIER_API_KEY".to_string(), sys.admin_key().to_string()),
        ];
        Self { sys, dir, env }
    }

    pub fn url(&self) -> String {
        self.sys.url()
    }

    pub fn key(&self) -> &str {
        self.sys.admin_key()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `agenttier <args>` with the default environment.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_with(args, &self.env)
    }

    /// `agenttier <args>` with exactly `env` among `AGENTTIER_*`.
    pub fn command_with(&self, args: &[&str], env: &[(String, String)]) -> Command {
        let mut cmd = Command::new(agenttier_binary());
        cmd.args(args);
        self.prepare(&mut cmd, env);
        cmd
    }

    fn prepare(&self, cmd: &mut Command, env: &[(String, String)]) {
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AGENTTIER_") {
                cmd.env_remove(k);
            }
        }
        // Never the developer's own config file.
        cmd.env("XDG_CONFIG_HOME", self.path("config"))
            .env("HOME", self.dir.path())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
    }

    /// Runs `agenttier <args>` to the end.
    pub fn run(&self, args: &[&str]) -> Out {
        output(self.command(args))
    }

    /// Runs `agenttier <args>` with `env`.
    pub fn run_with(&self, args: &[&str], env: &[(String, String)]) -> Out {
        output(self.command_with(args, env))
    }

    /// Runs `agenttier <args>`, which must exit 0.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> Out {
        self.run(args).expect(0)
    }

    /// Runs a bash script in the working directory, with `agenttier` on the
    /// PATH, exactly as a user types it.
    pub fn sh(&self, script: &str) -> Out {
        let bin_dir = agenttier_binary()
            .parent()
            .expect("the binary's directory")
            .to_path_buf();
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new("bash");
        cmd.args(["-c", script]);
        self.prepare(&mut cmd, &self.env);
        cmd.env("PATH", path);
        output(cmd)
    }

    /// Creates a sandbox and waits until it is Running.
    pub fn sandbox(&self, name: &str, template: &str) {
        self.ok(&["sandbox", "create", name, "--template", template, "--wait"]);
    }

    /// `GET /api/v1<path>` as admin, for checks the CLI does not make.
    pub fn api_get(&self, path: &str) -> Value {
        let client = Client::new(&self.url(), Some(self.key()));
        runtime().block_on(client.get_json(path)).expect(200).body
    }

    /// Writes a file into the working directory.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write a file");
        p
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Runs `cmd` to the end, bounded by a minute.
pub fn output(mut cmd: Command) -> Out {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn the CLI");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the CLI did not exit within 60 s")
        .expect("the CLI's output");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        raw: out.stdout,
    }
}

/// A CLI process whose stdout is read line by line as it runs.
pub struct Running {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Self {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn the CLI");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits (at most `timeout`) for a stdout line containing `text`.
    #[track_caller]
    pub fn wait_line(&mut self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.contains(text);
                    self.seen.push(l);
                    if hit {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "no line with {text:?} within {timeout:?}; saw {:?}",
            self.seen
        );
    }

    /// Waits (at most `timeout`) for the exit; the rest of stdout and stderr.
    #[track_caller]
    pub fn finish(mut self, timeout: Duration) -> Out {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait for the CLI") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the CLI did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends at EOF, which has come with the exit.
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(l);
        }
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
        }
        let stdout = self.seen.join("\n");
        Out {
            code: status.code().unwrap_or(-1),
            raw: stdout.clone().into_bytes(),
            stdout,
            stderr,
        }
    }
}

/// `AGENTTIER_*` variables for [`Cli::run_with`].
pub fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Polls `check` every 50 ms until it is true or `timeout` passes.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The unix permission bits of `p`.
pub fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}
