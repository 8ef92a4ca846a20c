//! `agenttier sandbox exec NAME -- CMD...`: one command, its output, its
//! exit code.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::output::{self, Format, s};
use super::sandbox::{Target, url};
use super::{Api, Error, Result};

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub target: Target,
    /// Seconds the command may run.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// The command and its arguments (after `--`).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

pub async fn run(api: &Api, out: Format, a: ExecArgs) -> Result<i32> {
    let body = json!({"command": a.command, "timeout": a.timeout});
    let rb = api
        .request(Method::POST, url(api, &a.target, &["exec"]))
        .header("Accept", "application/json")
        .timeout(Duration::from_secs(a.timeout.saturating_add(30)))
        .json(&body);
    let resp = match api.send(rb).await {
        Ok(r) => r,
        Err(e) if e.status() == Some(501) || e.code() == "endpoint_not_supported" => {
            return Err(Error::Failed(format!(
                "this server does not support `sandbox exec` yet ({e})"
            )));
        }
        Err(e) => return Err(e),
    };
    let v: Value = resp.json().await.map_err(|e| api.unreachable(&e))?;
    let code = if v["timedOut"].as_bool() == Some(true) {
        124
    } else {
        v["exitCode"]
            .as_i64()
            .filter(|c| (0..=255).contains(c))
            .unwrap_or(1) as i32
    };
    if out == Format::Json {
        output::json(&v);
    } else {
        use std::io::Write as _;
        let _ = std::io::stdout().write_all(s(&v, "stdout").as_bytes());
        let _ = std::io::stderr().write_all(s(&v, "stderr").as_bytes());
        if code == 124 {
            eprintln!("agenttier: the command timed out after {}s", a.timeout);
        }
    }
    Ok(code)
}
