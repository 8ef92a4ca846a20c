//! `agenttier configure` and `agenttier invoke` as a user types them (through
//! bash, with `agenttier` on the PATH) against a real `agenttier up`: the
//! seed's configure line, install output, exit codes that compose with `&&`,
//! stdin from text, a file or a pipe, timeouts, raw bytes.

mod cli_common;

use cli_common::Cli;

/// Says hello to its stdin; `exit N` on stdin makes it exit N.
const AGENT: &str = r#"import sys
data = sys.stdin.read()
print(f"hello {data}")
print("a note", file=sys.stderr)
if data.startswith("exit "):
    sys.exit(int(data.split()[1]))
"#;

#[test]
fn configure_as_in_the_seed_then_invoke_composes_with_and() {
    let cli = Cli::start();
    cli.sandbox("demo-agent", "langgraph-agent");
    cli.write("agent.py", AGENT);

    // The seed's line, with an install that needs no network.
    let out = cli.sh(
        r#"agenttier configure demo-agent --file /workspace/agent.py=./agent.py --install "sh -c 'echo installing'" --entrypoint "python /workspace/agent.py""#,
    );
    let out = out.expect(0);
    assert_eq!(
        out.stdout,
        "[configure] uploading /workspace/agent.py\n\
         [configure] running install: sh -c 'echo installing'\n\
         installing\n"
    );
    assert!(out.stderr.contains("configured demo-agent"), "{out:#?}");

    // The same again changes nothing and still succeeds.
    let again = cli.sh(
        r#"agenttier configure demo-agent --file /workspace/agent.py=./agent.py --install "sh -c 'echo installing'" --entrypoint "python /workspace/agent.py""#,
    );
    assert!(again.expect(0).stderr.contains("skipped"));

    let out = cli.sh(r#"agenttier invoke demo-agent --prompt "summarize this PR" && echo ok"#);
    let out = out.expect(0);
    assert_eq!(out.stdout, "hello summarize this PR\nok\n");
    assert_eq!(
        out.stderr, "a note\n",
        "run output only, no chatter when not a terminal"
    );

    // The entrypoint's exit code is the command's.
    let out =
        cli.sh(r#"agenttier invoke demo-agent --input "exit 3" && echo ok; echo "status $?""#);
    assert_eq!(out.stdout, "hello exit 3\nstatus 3\n");

    // Stdin from a file and from a pipe.
    cli.write("in.txt", "from a file");
    let out = cli.sh("agenttier invoke demo-agent --input @in.txt");
    assert_eq!(out.expect(0).stdout, "hello from a file\n");
    let out = cli.sh("printf 'from a pipe' | agenttier invoke demo-agent --input -");
    assert_eq!(out.expect(0).stdout, "hello from a pipe\n");
    cli.run(&["invoke", "demo-agent", "--input", "@missing.txt"])
        .expect(1);

    // --output json: one event per line, in order.
    let out = cli.ok(&["invoke", "demo-agent", "-o", "json", "--input", "x"]);
    let events: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(events.first().unwrap()["event"], "start");
    assert_eq!(events.last().unwrap()["event"], "exit");
    assert_eq!(events.last().unwrap()["data"]["exitCode"], 0);
    assert!(events.iter().any(|e| e["data"]["data"] == "hello x"));

    // A failing install: exit 1, its output shown, the entrypoint kept.
    let out =
        cli.sh(r#"agenttier configure demo-agent --install "sh -c 'echo broken >&2; exit 5'""#);
    let out = out.expect(1);
    assert!(out.stderr.contains("broken\n"), "{out:#?}");
    assert!(out.stderr.contains("exit code 5"), "{out:#?}");
    let out = cli.sh("agenttier invoke demo-agent --input again");
    assert_eq!(out.expect(0).stdout, "hello again\n");

    // Refusals are one line with the status.
    let out = cli.run(&["invoke", "nope"]).expect(1);
    assert_eq!(out.stderr, "agenttier: 404 not_found: sandbox not found\n");
}

#[test]
fn a_timeout_exits_124_and_raw_bytes_pass_through_unchanged() {
    let cli = Cli::start();
    cli.sandbox("slow", "langgraph-agent");
    cli.write(
        "slow.py",
        "import time\nprint('started', flush=True)\ntime.sleep(30)\n",
    );
    cli.write(
        "raw.py",
        "import sys\nsys.stdout.buffer.write(b'\\xff\\xfe raw\\nok\\n')\n",
    );
    cli.ok(&[
        "configure",
        "slow",
        "--file",
        "/workspace/slow.py=./slow.py",
        "--file",
        "/workspace/raw.py=./raw.py",
        "--entrypoint",
        "python /workspace/raw.py",
    ]);
    let out = cli.ok(&["invoke", "slow"]);
    assert_eq!(out.raw, b"\xff\xfe raw\nok\n");

    cli.ok(&[
        "configure",
        "slow",
        "--entrypoint",
        "python /workspace/slow.py",
    ]);
    let out = cli.sh("agenttier invoke slow --timeout 1s && echo ok");
    let out = out.expect(124);
    assert_eq!(out.stdout, "started\n");
    assert!(out.stderr.contains(" timeout "), "{out:#?}");
}

#[test]
fn a_configure_without_a_sandbox_or_files_fails_cleanly() {
    let cli = Cli::start();
    cli.write("agent.py", AGENT);
    let out = cli
        .run(&[
            "configure",
            "ghost",
            "--file",
            "/workspace/agent.py=./agent.py",
        ])
        .expect(1);
    assert_eq!(out.stderr, "agenttier: 404 not_found: sandbox not found\n");
    let out = cli
        .run(&[
            "configure",
            "ghost",
            "--file",
            "/workspace/a.py=./missing.py",
        ])
        .expect(1);
    assert!(
        out.stderr.starts_with("agenttier: reading ./missing.py"),
        "{out:#?}"
    );
    let out = cli
        .run(&["configure", "ghost", "--entrypoint", "python 'unclosed"])
        .expect(2);
    assert!(out.stderr.contains("unterminated"), "{out:#?}");
}
