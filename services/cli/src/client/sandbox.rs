//! `agenttier sandbox ...`.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use super::output::{self, Format, Spinner, outln, s};
use super::{Api, Error, Result, duration_arg};

#[derive(Debug, clap::Subcommand)]
pub enum SandboxCmd {
    /// Create a sandbox from a template.
    #[command(after_help = "Examples:\n  \
        agenttier sandbox create demo-agent --template langgraph-agent --wait\n  \
        agenttier sandbox create scratch --template general-coding --namespace team-a")]
    Create(CreateArgs),
    /// List your sandboxes (admins: everyone's).
    #[command(after_help = "Examples:\n  \
        agenttier sandbox list\n  \
        agenttier sandbox list --status Running -o json")]
    List(ListArgs),
    /// Show one sandbox.
    #[command(after_help = "Example:\n  agenttier sandbox get demo-agent")]
    Get(Target),
    /// Delete a sandbox: cancels its runs and removes its workspace.
    #[command(after_help = "Example:\n  agenttier sandbox delete demo-agent")]
    Delete(Target),
    /// Stop a sandbox: kills its processes, keeps /workspace.
    #[command(after_help = "Example:\n  agenttier sandbox stop demo-agent")]
    Stop(Target),
    /// Resume a stopped sandbox.
    #[command(after_help = "Example:\n  agenttier sandbox resume demo-agent")]
    Resume(Target),
    /// Wait until a sandbox is Running (or another status); exit 1 on Error or timeout.
    #[command(after_help = "Examples:\n  \
        agenttier sandbox wait demo-agent --timeout 3m\n  \
        agenttier sandbox wait demo-agent --for Stopped")]
    Wait(WaitArgs),
    /// Run a command in a sandbox; exits with the command's exit code.
    #[command(after_help = "Examples:\n  \
        agenttier sandbox exec scratch -- ls -la /workspace\n  \
        agenttier sandbox exec scratch --timeout 120 -- python -m pytest")]
    Exec(super::exec::ExecArgs),
}

/// One sandbox.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The sandbox's name.
    pub name: String,
    /// Its namespace [default: `default`, else the one of your sandboxes with that name].
    #[arg(short = 'n', long, env = "AGENTTIER_NAMESPACE")]
    pub namespace: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The sandbox's name (a DNS-1123 label).
    pub name: String,
    /// The template (a ClusterSandboxTemplate, e.g. langgraph-agent, general-coding).
    #[arg(short = 't', long)]
    pub template: String,
    /// The namespace [default: default].
    #[arg(short = 'n', long, env = "AGENTTIER_NAMESPACE")]
    pub namespace: Option<String>,
    /// Wait until it is Running.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits (`180`, `3m`).
    #[arg(long, default_value = "180s", value_parser = duration_arg)]
    pub wait_timeout: Duration,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only this namespace.
    #[arg(short = 'n', long, env = "AGENTTIER_NAMESPACE")]
    pub namespace: Option<String>,
    /// Only this status (Creating, Running, Stopped, Error, Deleting).
    #[arg(long)]
    pub status: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    #[command(flatten)]
    pub target: Target,
    /// How long to wait (`180`, `3m`).
    #[arg(long, default_value = "180s", value_parser = duration_arg)]
    pub timeout: Duration,
    /// The status to wait for.
    #[arg(long = "for", value_name = "STATUS", default_value = "Running")]
    pub status: String,
}

pub async fn run(api: &Api, out: Format, cmd: SandboxCmd) -> Result<i32> {
    match cmd {
        SandboxCmd::Create(a) => create(api, out, a).await,
        SandboxCmd::List(a) => {
            let v = api
                .get(
                    &["sandboxes"],
                    &[
                        ("namespace", a.namespace.as_deref()),
                        ("status", a.status.as_deref()),
                    ],
                )
                .await?;
            if out == Format::Json {
                output::json(&v);
                return Ok(0);
            }
            let items = v["sandboxes"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                eprintln!("no sandboxes");
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|x| {
                    let keys = ["name", "namespace", "status", "mode", "templateRef"];
                    let mut row: Vec<String> = keys.iter().map(|k| s(x, k)).collect();
                    row.push(output::age(&s(x, "createdAt")));
                    row
                })
                .collect();
            output::table(
                &["NAME", "NAMESPACE", "STATUS", "MODE", "TEMPLATE", "AGE"],
                &rows,
            );
            Ok(0)
        }
        SandboxCmd::Get(t) => {
            let v = get(api, &t).await?;
            if out == Format::Json {
                output::json(&v);
            } else {
                show(&v);
            }
            Ok(0)
        }
        SandboxCmd::Delete(t) => {
            api.call(Method::DELETE, url(api, &t, &[]), None).await?;
            done(
                out,
                &t,
                "deleted",
                json!({"sandboxId": t.name, "deleted": true}),
            );
            Ok(0)
        }
        SandboxCmd::Stop(t) => {
            let v = api
                .call(Method::POST, url(api, &t, &["stop"]), None)
                .await?;
            done(out, &t, "stopping", v);
            Ok(0)
        }
        SandboxCmd::Resume(t) => {
            let v = api
                .call(Method::POST, url(api, &t, &["resume"]), None)
                .await?;
            done(out, &t, "resuming", v);
            Ok(0)
        }
        SandboxCmd::Wait(a) => {
            let v = wait(api, &a.target, &a.status, a.timeout).await?;
            if out == Format::Json {
                output::json(&v);
            } else {
                outln!("sandbox {} is {}", a.target.name, s(&v, "status"));
            }
            Ok(0)
        }
        SandboxCmd::Exec(a) => super::exec::run(api, out, a).await,
    }
}

pub fn url(api: &Api, t: &Target, more: &[&str]) -> reqwest::Url {
    let mut segs = vec!["sandboxes", t.name.as_str()];
    segs.extend(more);
    Api::with_query(api.url(&segs), &[("namespace", t.namespace.as_deref())])
}

async fn get(api: &Api, t: &Target) -> Result<Value> {
    api.call(Method::GET, url(api, t, &[]), None).await
}

fn done(out: Format, t: &Target, what: &str, v: Value) {
    match out {
        Format::Json => output::json(&v),
        Format::Human => outln!("{what} sandbox {}", t.name),
    }
}

async fn create(api: &Api, out: Format, a: CreateArgs) -> Result<i32> {
    let mut body = json!({"name": a.name, "templateRef": {"name": a.template}});
    if let Some(ns) = &a.namespace {
        body["namespace"] = json!(ns);
    }
    let v = api
        .call(Method::POST, api.url(&["sandboxes"]), Some(&body))
        .await?;
    let t = Target {
        name: Some(s(&v, "sandboxId"))
            .filter(|n| !n.is_empty())
            .unwrap_or(a.name),
        namespace: Some(s(&v, "namespace"))
            .filter(|n| !n.is_empty())
            .or(a.namespace),
    };
    if out == Format::Human {
        outln!(
            "created sandbox {} (namespace {}, template {}, {})",
            t.name,
            t.namespace.as_deref().unwrap_or("default"),
            a.template,
            s(&v, "status")
        );
    }
    if !a.wait {
        if out == Format::Json {
            output::json(&v);
        }
        return Ok(0);
    }
    let v = wait(api, &t, "Running", a.wait_timeout).await?;
    match out {
        Format::Json => output::json(&v),
        Format::Human => outln!("sandbox {} is Running", t.name),
    }
    Ok(0)
}

/// Polls the sandbox until its status is `want`; fails at once on `Error`,
/// and when it is being deleted.
async fn wait(api: &Api, t: &Target, want: &str, timeout: Duration) -> Result<Value> {
    let deadline = Instant::now() + timeout;
    let mut spinner = Spinner::new(format!("waiting for {} to be {want}", t.name));
    loop {
        let v = get(api, t).await?;
        let status = s(&v, "status");
        if status.eq_ignore_ascii_case(want) {
            return Ok(v);
        }
        let stuck = match status.as_str() {
            "Error" => true,
            "Deleting" => !want.eq_ignore_ascii_case("deleting"),
            _ => false,
        };
        if stuck {
            let msg = s(&v, "message");
            return Err(Error::Failed(format!(
                "sandbox {} is {status}{}",
                t.name,
                if msg.is_empty() {
                    String::new()
                } else {
                    format!(": {msg}")
                }
            )));
        }
        if Instant::now() >= deadline {
            return Err(Error::Failed(format!(
                "timed out after {}s waiting for sandbox {} to be {want} (it is {status})",
                timeout.as_secs(),
                t.name
            )));
        }
        spinner.set_label(format!(
            "waiting for {} to be {want} (now {status})",
            t.name
        ));
        for _ in 0..5 {
            spinner.tick();
            tokio::time::sleep(Spinner::PERIOD).await;
        }
    }
}

fn show(v: &Value) {
    let created_by = &v["createdBy"];
    let by = [s(created_by, "email"), s(created_by, "displayName")]
        .into_iter()
        .find(|x| !x.is_empty())
        .unwrap_or_default();
    let created = s(v, "createdAt");
    let mut pairs = vec![
        ("name", s(v, "name")),
        ("namespace", s(v, "namespace")),
        ("status", s(v, "status")),
        ("mode", s(v, "mode")),
        ("template", s(v, "templateRef")),
        ("image", s(v, "image")),
        (
            "created",
            format!("{created} ({} ago)", output::age(&created)),
        ),
        ("created by", by),
        ("last activity", s(v, "lastActivityAt")),
        ("message", s(v, "message")),
    ];
    let ac = &v["agentConfigure"];
    if ac.is_object() {
        pairs.push(("entrypoint", output::argv(&ac["entrypoint"])));
        pairs.push(("install exit", s(ac, "installExitCode")));
        pairs.push(("configured", s(ac, "lastConfiguredAt")));
        pairs.push(("max invokes", s(ac, "maxConcurrentInvokes")));
    }
    output::fields(&pairs);
}
