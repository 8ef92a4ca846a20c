//! The README's curl quickstart, run as printed against `agenttier up`
//! started the way a new user starts it (no bootstrap key: one is generated).
//! The output must match the README's `# ...` comment lines, in order, where
//! `...` in a comment stands for anything.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use agenttier_tests::process::Proc;

const README: &str = include_str!("../../README.md");

/// The first ```bash block after the curl quickstart heading.
fn quickstart_script() -> &'static str {
    let section = &README[README
        .find("## Quickstart (curl)")
        .expect("README has a curl quickstart")..];
    let start = section.find("```bash\n").expect("a bash block") + "```bash\n".len();
    let end = start + section[start..].find("```").expect("the block ends");
    &section[start..end]
}

/// Whether `line` contains the pieces of `pattern` between its `...`, in order.
fn matches(pattern: &str, line: &str) -> bool {
    let mut rest = line;
    for part in pattern.split("...") {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

#[test]
fn readme_curl_quickstart_prints_what_the_readme_says() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("agenttier-data");
    let args: Vec<String> = ["up", "--listen", "127.0.0.1:0", "--data-dir"]
        .iter()
        .map(|s| s.to_string())
        .chain([data.display().to_string()])
        .collect();
    // No NO_COLOR (the harness sets it for every other process): the
    // environment of a user's shell.
    let env = [("NO_COLOR".to_string(), String::new())];
    let mut up = Proc::start("up", &args, &env, dir.path(), true);

    // The admin key: generated, saved with mode 0600, printed once.
    let key_file = data.join("admin-api-key");
    let key = std::fs::read_to_string(&key_file)
        .unwrap()
        .trim()
        .to_string();
    assert!(key.starts_with("atk_") && key.len() > 40, "{key}");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        up.log()
            .contains(&format!("export AGENTTIER_API_KEY={key}"))
    );
    // Logged to a file, not a terminal: plain text, no color codes.
    assert!(
        up.log().contains(" INFO ") && !up.log().contains('\x1b'),
        "{}",
        up.log()
    );

    let script = quickstart_script().replace("http://127.0.0.1:8080", &up.url());
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(dir.path())
        .env_remove("AGENTTIER_API_KEY")
        .env_remove("AGENTTIER_API_URL")
        .output()
        .unwrap();
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
        .filter(|l| l.starts_with('{') || l.starts_with("event:") || l.starts_with("data:"))
        .collect();
    assert!(
        expected.len() >= 9,
        "the README shows the output it promises"
    );
    let mut lines = stdout.lines();
    for pattern in &expected {
        assert!(
            lines.any(|l| matches(pattern, l)),
            "README promises `{pattern}`, the output was:\n{stdout}"
        );
    }

    // A restart keeps the key and does not print it again.
    up.restart();
    let printed = up
        .log()
        .matches(&format!("export AGENTTIER_API_KEY={key}"))
        .count();
    assert_eq!(printed, 1, "the key is printed once, on the first start");
    let me = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("X-API-Key: {key}"))
        .arg(format!("{}/api/v1/user/me", up.url()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&me.stdout), "200");
}

#[test]
fn wildcard_patterns_match_in_order() {
    assert!(matches(r#"{"a":...,"b":2}"#, r#"{"a":17,"b":2}"#));
    assert!(!matches(r#"{"a":...,"b":2}"#, r#"{"a":17,"b":3}"#));
    assert!(matches("event: start", "event: start"));
    assert!(!matches("event: exit", "event: start"));
}
