//! Controlling a run from `agenttier invoke`: Ctrl-C cancels it on the
//! server and exits 130; `--detach`, `--attach` and `--cancel`; and a
//! dropped connection resumed without losing or repeating a line.

mod cli_common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agenttier_tests::process::processes_with;
use cli_common::{Cli, Running, eventually};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Prints `n 0`, `n 1`, ... : as many lines as the first number on stdin,
/// the second number of seconds apart.
const COUNT: &str = r#"import sys, time
n, delay = sys.stdin.read().split()
for i in range(int(n)):
    print(f"n {i}", flush=True)
    time.sleep(float(delay))
"#;

fn with_counter(cli: &Cli, name: &str, extra_arg: &str) {
    cli.sandbox(name, "langgraph-agent");
    cli.write("count.py", COUNT);
    cli.ok(&[
        "configure",
        name,
        "--file",
        "/workspace/count.py=./count.py",
        "--entrypoint",
        &format!("python /workspace/count.py {extra_arg}"),
    ]);
}

fn expected_lines(n: usize) -> String {
    (0..n)
        .map(|i| format!("n {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn ctrl_c_cancels_the_run_on_the_server_and_exits_130() {
    let cli = Cli::start();
    let marker = format!("cli-ctrl-c-{}", std::process::id());
    with_counter(&cli, "long", &marker);

    let mut run = Running::spawn(cli.command(&["invoke", "long", "--input", "600 0.1"]));
    run.wait_line("n 2", Duration::from_secs(20));
    assert!(!processes_with(&marker).is_empty(), "the run is going");
    kill(Pid::from_raw(run.child.id() as i32), Signal::SIGINT).unwrap();
    let out = run.finish(Duration::from_secs(25));
    assert_eq!(out.code, 130, "{out:#?}");
    assert!(out.stderr.contains("canceling the run"), "{out:#?}");
    assert!(out.stderr.contains(" canceled"), "{out:#?}");
    // Every line once, in order, up to where it stopped.
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(out.stdout, expected_lines(lines.len()));

    let invokes = cli.api_get("/sandboxes/long/invokes");
    assert_eq!(invokes["invokes"][0]["state"], "canceled", "{invokes}");
    assert!(
        eventually(Duration::from_secs(10), || processes_with(&marker)
            .is_empty()),
        "processes left: {:?}",
        processes_with(&marker)
    );
}

#[test]
fn detach_attach_and_cancel() {
    let cli = Cli::start();
    with_counter(&cli, "bg", "");

    let out = cli.ok(&["invoke", "bg", "--detach", "--input", "5 0.05"]);
    let id = out.stdout.trim().to_string();
    assert!(id.starts_with("inv-") && !id.contains('\n'), "{out:#?}");
    let out = cli.ok(&["invoke", "bg", "--attach", &id]);
    assert_eq!(out.stdout, format!("{}\n", expected_lines(5)));

    let long = cli.ok(&["invoke", "bg", "--detach", "--input", "600 0.1"]);
    let long = long.stdout.trim().to_string();
    let out = cli.ok(&["invoke", "bg", "--cancel", &long]);
    assert_eq!(out.stdout, format!("canceled {long}\n"));
    let out = cli.run(&["invoke", "bg", "--attach", &long]).expect(130);
    assert!(out.stderr.contains("canceled"), "{out:#?}");

    let out = cli.run(&["invoke", "bg", "--attach", "inv-nope"]).expect(1);
    assert!(out.stderr.starts_with("agenttier: 404 "), "{out:#?}");
}

/// A TCP proxy that can cut every connection it carries.
struct Proxy {
    url: String,
    open: Arc<Mutex<Vec<TcpStream>>>,
    accepted: Arc<AtomicUsize>,
}

impl Proxy {
    fn start(upstream: &str) -> Self {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let accepted: Arc<AtomicUsize> = Arc::default();
        let (o, a) = (open.clone(), accepted.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                a.fetch_add(1, Ordering::SeqCst);
                let mut o = o.lock().unwrap();
                o.push(client.try_clone().unwrap());
                o.push(server.try_clone().unwrap());
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Self {
            url,
            open,
            accepted,
        }
    }

    /// Cuts every open connection, as a network failure would.
    fn cut(&self) {
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

#[test]
fn a_dropped_connection_is_resumed_without_losing_or_repeating_a_line() {
    let cli = Cli::start();
    with_counter(&cli, "resumable", "");
    let proxy = Proxy::start(&cli.url());

    let mut cmd = cli.command(&["invoke", "resumable", "--input", "30 0.1"]);
    cmd.env("AGENTTIER_API_URL", &proxy.url);
    let mut run = Running::spawn(cmd);
    run.wait_line("n 5", Duration::from_secs(20));
    proxy.cut();
    let out = run.finish(Duration::from_secs(30));
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.stdout, expected_lines(30));
    assert!(out.stderr.is_empty(), "resumed silently: {out:#?}");
    assert!(
        proxy.accepted.load(Ordering::SeqCst) >= 2,
        "the stream was resumed on a new connection"
    );
}
