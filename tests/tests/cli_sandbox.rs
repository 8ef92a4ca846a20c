//! The `agenttier` client commands for sandboxes, templates, keys and
//! login, run as the real binary against a real `agenttier up`: exit codes,
//! what they print, `--output json`, and one-line errors.

mod cli_common;

use std::time::Duration;

use cli_common::{Cli, env, eventually, mode};

#[test]
fn sandbox_lifecycle_create_list_get_wait_stop_resume_delete() {
    let cli = Cli::start();
    let out = cli.ok(&["sandbox", "create", "box1", "--template", "general-coding"]);
    assert!(out.stdout.contains("created sandbox box1"), "{out:#?}");
    let out = cli.ok(&["sandbox", "wait", "box1", "--timeout", "30s"]);
    assert_eq!(out.stdout, "sandbox box1 is Running\n");
    assert!(
        out.stderr.is_empty(),
        "no spinner when stderr is not a terminal: {out:#?}"
    );

    let out = cli.ok(&["sandbox", "list"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("STATUS"),
        "{out:#?}"
    );
    assert!(
        lines[1].starts_with("box1 ") && lines[1].contains("Running"),
        "{out:#?}"
    );

    let list = cli.ok(&["sandbox", "list", "-o", "json"]).json();
    assert_eq!(list["sandboxes"][0]["sandboxId"], "box1");
    let none = cli
        .ok(&["--output", "json", "sandbox", "list", "--status", "Stopped"])
        .json();
    assert_eq!(none["sandboxes"], serde_json::json!([]));

    let got = cli.ok(&["sandbox", "get", "box1", "-o", "json"]).json();
    assert_eq!(got["status"], "Running");
    assert_eq!(got["templateRef"], "general-coding");
    let out = cli.ok(&["sandbox", "get", "box1"]);
    assert!(
        out.stdout.contains("status:") && out.stdout.contains("Running"),
        "{out:#?}"
    );

    assert_eq!(
        cli.ok(&["sandbox", "stop", "box1"]).stdout,
        "stopping sandbox box1\n"
    );
    cli.ok(&[
        "sandbox",
        "wait",
        "box1",
        "--for",
        "Stopped",
        "--timeout",
        "20",
    ]);
    let stopped = cli.ok(&["sandbox", "get", "box1", "-o", "json"]).json();
    assert_eq!(stopped["status"], "Stopped");
    let resumed = cli.ok(&["sandbox", "resume", "box1", "-o", "json"]).json();
    assert_eq!(resumed["status"], "resuming");
    cli.ok(&["sandbox", "wait", "box1"]);

    assert_eq!(
        cli.ok(&["sandbox", "delete", "box1"]).stdout,
        "deleted sandbox box1\n"
    );
    assert!(
        eventually(Duration::from_secs(20), || {
            let out = cli.run(&["sandbox", "get", "box1"]);
            out.code == 1 && out.stderr == "agenttier: 404 not_found: sandbox not found\n"
        }),
        "the sandbox is gone"
    );

    // --wait with --output json prints the sandbox once it runs.
    let v = cli
        .ok(&[
            "-o",
            "json",
            "sandbox",
            "create",
            "box2",
            "--template",
            "langgraph-agent",
            "--wait",
        ])
        .json();
    assert_eq!(v["status"], "Running");
    assert_eq!(v["mode"], "agent");
}

#[test]
fn templates_and_whoami() {
    let cli = Cli::start();
    let out = cli.ok(&["template", "list"]);
    assert!(out.stdout.starts_with("NAME"), "{out:#?}");
    assert!(out.stdout.contains("langgraph-agent") && out.stdout.contains("general-coding"));
    let t = cli
        .ok(&["template", "get", "langgraph-agent", "-o", "json"])
        .json();
    assert_eq!(t["mode"], "agent");
    let out = cli.ok(&["template", "get", "langgraph-agent"]);
    assert!(out.stdout.contains("spec:"), "{out:#?}");
    let me = cli.ok(&["whoami", "-o", "json"]).json();
    assert_eq!(me["isAdmin"], true);
    assert!(cli.ok(&["whoami"]).stdout.contains("admin@localhost"));
}

#[test]
fn errors_are_one_line_with_the_status_and_the_servers_words() {
    let cli = Cli::start();
    let out = cli.run(&["sandbox", "get", "nope"]).expect(1);
    assert_eq!(out.stderr, "agenttier: 404 not_found: sandbox not found\n");
    assert!(out.stdout.is_empty());

    let bad_key = env(&[
        ("AGENTTIER_API_URL", &cli.url()),
        ("AGENTTIER_API_KEY", "atk_wrong"),
    ]);
    let out = cli.run_with(&["sandbox", "list"], &bad_key).expect(1);
    assert_eq!(out.stderr, "agenttier: 401 invalid_api_key\n");

    let out = cli
        .run(&["sandbox", "create", "x", "--template", "no-such-template"])
        .expect(1);
    assert!(
        out.stderr
            .starts_with("agenttier: 404 template_not_found: "),
        "{out:#?}"
    );
    assert_eq!(out.stderr.lines().count(), 1);
    let out = cli
        .run(&[
            "sandbox",
            "create",
            "Not_A_Label",
            "--template",
            "general-coding",
        ])
        .expect(1);
    assert!(
        out.stderr
            .starts_with("agenttier: 400 invalid_request: name"),
        "{out:#?}"
    );

    let nowhere = env(&[
        ("AGENTTIER_API_URL", "http://127.0.0.1:1"),
        ("AGENTTIER_API_KEY", "k"),
    ]);
    let out = cli.run_with(&["sandbox", "list"], &nowhere).expect(1);
    assert!(
        out.stderr
            .starts_with("agenttier: cannot reach http://127.0.0.1:1"),
        "{out:#?}"
    );
    assert_eq!(out.stderr.lines().count(), 1);

    // Usage errors are 2, as clap's, and send nothing.
    cli.run(&["sandbox", "create", "x"]).expect(2);
    cli.run(&["configure", "x"]).expect(2);
    cli.run(&["invoke", "x", "--timeout", "soon"]).expect(2);
    cli.run(&["-o", "yaml", "sandbox", "list"]).expect(2);
}

#[test]
fn login_writes_a_private_config_that_later_commands_use() {
    let cli = Cli::start();
    let nothing = env(&[]);
    let url = cli.url();
    let bad = cli
        .run_with(
            &["login", "--api-url", &url, "--api-key", "atk_wrong"],
            &nothing,
        )
        .expect(1);
    assert_eq!(bad.stderr, "agenttier: 401 invalid_api_key\n");
    let file = cli.path("config/agenttier/config.json");
    assert!(!file.exists(), "a failed login saves nothing");

    let out = cli
        .run_with(
            &["login", "--api-url", &url, "--api-key", cli.key()],
            &nothing,
        )
        .expect(0);
    assert!(
        out.stdout
            .starts_with(&format!("logged in to {url} as admin@localhost")),
        "{out:#?}"
    );
    assert_eq!(mode(&file), 0o600);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(saved["api_key"], cli.key());
    assert_eq!(saved["api_url"], url);

    // The next call needs no flag and no environment.
    cli.run_with(&["sandbox", "list"], &nothing).expect(0);
    // Precedence: the environment over the file, a flag over the environment.
    let bad_env = env(&[("AGENTTIER_API_KEY", "atk_wrong")]);
    cli.run_with(&["sandbox", "list"], &bad_env).expect(1);
    cli.run_with(&["sandbox", "list", "--api-key", cli.key()], &bad_env)
        .expect(0);
    let bad_url = env(&[("AGENTTIER_API_URL", "http://127.0.0.1:1")]);
    cli.run_with(&["sandbox", "list"], &bad_url).expect(1);
    cli.run_with(&["--api-url", &url, "sandbox", "list"], &bad_url)
        .expect(0);

    // AGENTTIER_CONFIG moves the file.
    let other = cli.path("elsewhere/at.json");
    let moved = env(&[("AGENTTIER_CONFIG", other.to_str().unwrap())]);
    cli.run_with(
        &["login", "--api-url", &url, "--api-key", cli.key()],
        &moved,
    )
    .expect(0);
    assert_eq!(mode(&other), 0o600);
    cli.run_with(&["whoami"], &moved).expect(0);
}

#[test]
fn keys_create_list_revoke() {
    let cli = Cli::start();
    let out = cli.ok(&["keys", "create", "--name", "ci", "--expires-in", "30d"]);
    let key = out.stdout.trim().to_string();
    assert!(
        key.starts_with("atk_") && !key.contains('\n'),
        "the key alone on stdout: {out:#?}"
    );
    assert!(out.stderr.contains("shown only this once"), "{out:#?}");

    let with_key = env(&[
        ("AGENTTIER_API_URL", &cli.url()),
        ("AGENTTIER_API_KEY", &key),
    ]);
    cli.run_with(&["whoami"], &with_key).expect(0);

    let list = cli.ok(&["keys", "list", "-o", "json"]).json();
    let id = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "ci")
        .expect("the new key is listed")["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(cli.ok(&["keys", "list"]).stdout.contains(&id));
    // The v0.8 spelling works too.
    cli.ok(&["apikeys", "list"]);

    assert_eq!(
        cli.ok(&["keys", "revoke", &id]).stdout,
        format!("revoked API key {id}\n")
    );
    assert!(
        eventually(Duration::from_secs(10), || cli
            .run_with(&["whoami"], &with_key)
            .code
            == 1),
        "a revoked key stops working"
    );
}

#[test]
fn sandbox_exec_exits_with_the_commands_code() {
    let cli = Cli::start();
    cli.sandbox("shell", "general-coding");
    let out = cli.run(&[
        "sandbox",
        "exec",
        "shell",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    if out.stderr.contains("does not support `sandbox exec`") {
        panic!("the server has no exec endpoint: {out:#?}");
    }
    let out = out.expect(7);
    assert_eq!(out.stdout, "out\n");
    assert_eq!(out.stderr, "err\n");
    let v = cli
        .ok(&[
            "sandbox", "exec", "shell", "-o", "json", "--", "echo", "hi there",
        ])
        .json();
    assert_eq!(v["stdout"], "hi there\n");
    assert_eq!(v["exitCode"], 0);
    let out = cli.sh("agenttier sandbox exec shell -- true && echo ok");
    assert_eq!(out.stdout, "ok\n");
    cli.run(&["sandbox", "exec", "nope", "--", "true"])
        .expect(1);
}

#[test]
fn every_command_has_help_with_an_example_and_server_flags_still_work() {
    let cli = Cli::start();
    for cmd in [
        &["sandbox", "create", "--help"][..],
        &["sandbox", "exec", "--help"],
        &["configure", "--help"],
        &["invoke", "--help"],
        &["keys", "create", "--help"],
        &["login", "--help"],
    ] {
        let out = cli.ok(cmd);
        assert!(out.stdout.contains("Example"), "{cmd:?}: {out:#?}");
        assert!(
            out.stdout.contains(&format!("agenttier {}", cmd[0])),
            "{cmd:?}: {out:#?}"
        );
    }
    let up = cli.ok(&["up", "--help"]);
    assert!(up.stdout.contains("--listen") && up.stdout.contains("--data-dir"));
}
