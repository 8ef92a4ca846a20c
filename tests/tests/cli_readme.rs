//! The README's CLI quickstart, run as printed (through bash, `set -e`)
//! against `agenttier up` started the way a new user starts it, in the
//! directory that holds its `agenttier-data`. The `# ...` lines of the block
//! must appear in its stdout, in order.

use std::process::Command;

use agenttier_tests::process::{Proc, agenttier_binary};

const README: &str = include_str!("../../README.md");

/// The first ```bash block after the CLI quickstart heading.
fn quickstart_script() -> &'static str {
    let section = &README[README
        .find("## Quickstart (CLI)")
        .expect("README has a CLI quickstart")..];
    let start = section.find("```bash\n").expect("a bash block") + "```bash\n".len();
    let end = start + section[start..].find("```").expect("the block ends");
    &section[start..end]
}

#[test]
fn readme_cli_quickstart_prints_what_the_readme_says() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("agenttier-data");
    let args: Vec<String> = ["up", "--listen", "127.0.0.1:0", "--data-dir"]
        .iter()
        .map(|s| s.to_string())
        .chain([data.display().to_string()])
        .collect();
    let up = Proc::start("up", &args, &[], dir.path(), true);

    // Ready: the templates are published (a user types the block seconds
    // after starting `up`).
    let ready = || {
        Command::new(agenttier_binary())
            .args(["template", "get", "langgraph-agent", "--api-url", &up.url()])
            .env(
                "AGENTTIER_API_KEY",
                std::fs::read_to_string(data.join("admin-api-key"))
                    .unwrap()
                    .trim(),
            )
            .env("AGENTTIER_CONFIG", dir.path().join("none.json"))
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "agenttier up is not ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    let script = quickstart_script().replace("http://127.0.0.1:8080", &up.url());
    // `agenttier` as `cargo build` left it, where the block's PATH line puts
    // the repository's `target/debug`.
    let bin = agenttier_binary();
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-euo", "pipefail", "-c", &script])
        .current_dir(dir.path())
        .env("PATH", path)
        .env("XDG_CONFIG_HOME", dir.path().join("config"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AGENTTIER_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the quickstart failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let expected: Vec<&str> = quickstart_script()
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .collect();
    assert!(
        expected.len() >= 6,
        "the README shows the output it promises"
    );
    let mut lines = stdout.lines();
    for want in &expected {
        assert!(
            lines.any(|l| l == *want),
            "README promises `{want}`, the output was:\n{stdout}"
        );
    }
}
