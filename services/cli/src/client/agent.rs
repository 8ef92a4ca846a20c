//! `agenttier configure`: files, install command, entrypoint and env of an
//! agent sandbox, with the install's output streamed as it runs.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::output::{self, Format, Spinner, s};
use super::sse::EventStream;
use super::{Api, Error, Result, words};

pub const EXAMPLES: &str = "Examples:
  agenttier configure demo-agent \\
    --file /workspace/agent.py=./agent.py \\
    --install \"pip install -r /workspace/requirements.txt\" \\
    --entrypoint \"python /workspace/agent.py\"
  agenttier configure demo-agent --file ./agent.py --env MODEL=small

Exit status: 0 when configured (also when nothing changed and the install was
skipped); 1 when the install failed (the previous entrypoint stays active) or
the configure failed.";

/// How long the stream may be silent (the server sends a keepalive every
/// 15 s) before the connection counts as lost.
const IDLE: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct ConfigureArgs {
    /// The agent sandbox.
    pub sandbox: String,
    /// Its namespace [default: `default`, else the one of your sandboxes with that name].
    #[arg(short = 'n', long, env = "AGENTTIER_NAMESPACE")]
    pub namespace: Option<String>,
    /// A file to upload, REMOTE=LOCAL (REMOTE inside /workspace); LOCAL alone goes to /workspace/<its name>.
    #[arg(long = "file", value_name = "REMOTE=LOCAL")]
    pub files: Vec<String>,
    /// The install command, split like a shell; runs in /workspace after the files are written.
    #[arg(long, value_name = "CMD")]
    pub install: Option<String>,
    /// The command each invoke runs, split like a shell.
    #[arg(long, value_name = "CMD")]
    pub entrypoint: Option<String>,
    /// An environment variable for the install and the invokes.
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
}

pub async fn configure(api: &Api, out: Format, a: ConfigureArgs) -> Result<i32> {
    let body = body(&a)?;
    let url = Api::with_query(
        api.url(&["sandboxes", &a.sandbox, "configure"]),
        &[("namespace", a.namespace.as_deref())],
    );
    let rb = api
        .request(Method::POST, url)
        .header("Accept", "text/event-stream")
        .json(&body);
    let resp = api.send(rb).await?;
    let mut stream = EventStream::new(resp, IDLE);
    let mut spinner = Spinner::new(format!("configuring {}", a.sandbox));
    let mut tick = tokio::time::interval(Spinner::PERIOD);
    let (mut result, mut error, mut lost) = (None, None, None);
    loop {
        tokio::select! {
            ev = stream.next() => match ev {
                Ok(Some(e)) => {
                    spinner.clear();
                    let data = e.json();
                    if out == Format::Json {
                        output::json_line(&json!({"id": e.seq(), "event": e.name, "data": data}));
                    }
                    match e.name.as_str() {
                        "log" => {
                            let line = s(&data, "data");
                            if line.starts_with("[configure] running install") {
                                spinner.set_label(format!("installing in {}", a.sandbox));
                            }
                            if out == Format::Human {
                                output::write_line(&s(&data, "stream"), line.as_bytes());
                            }
                        }
                        "error" => error = Some(data),
                        "result" => {
                            result = Some(data);
                            break;
                        }
                        _ => {}
                    }
                }
                Ok(None) => break,
                Err(cause) => {
                    lost = Some(cause);
                    break;
                }
            },
            _ = tick.tick() => spinner.tick(),
        }
    }
    drop(spinner);
    if let Some(e) = error {
        eprintln!(
            "agenttier: configure failed during {}: {}",
            s(&e, "phase"),
            s(&e, "message")
        );
        return Ok(1);
    }
    let Some(r) = result else {
        return Err(Error::Failed(format!(
            "the connection was lost before the configure finished{}; \
             see `agenttier sandbox get {}`",
            lost.map(|c| format!(" ({c})")).unwrap_or_default(),
            a.sandbox
        )));
    };
    let code = r["installExitCode"].as_i64().unwrap_or(0);
    if code != 0 {
        if out == Format::Human {
            eprintln!(
                "agenttier: the install failed with exit code {code}; the previous entrypoint stays active"
            );
        }
        return Ok(1);
    }
    if out == Format::Human {
        let entry = output::argv(&r["entrypoint"]);
        let entry = if entry.is_empty() {
            "none".to_string()
        } else {
            entry
        };
        if r["skipped"].as_bool() == Some(true) {
            eprintln!(
                "configured {}: files and install unchanged, install skipped; entrypoint: {entry}",
                a.sandbox
            );
        } else {
            eprintln!("configured {}; entrypoint: {entry}", a.sandbox);
        }
    }
    Ok(0)
}

/// The configure request body; usage errors for bad flags, before anything
/// is sent.
fn body(a: &ConfigureArgs) -> Result<Value> {
    if a.files.is_empty() && a.install.is_none() && a.entrypoint.is_none() && a.env.is_empty() {
        return Err(Error::Usage(
            "configure needs at least one of --file, --install, --entrypoint or --env".into(),
        ));
    }
    let mut body = Map::new();
    if !a.files.is_empty() {
        let files = a
            .files
            .iter()
            .map(|f| file(f))
            .collect::<Result<Vec<_>>>()?;
        body.insert("files".into(), Value::Array(files));
    }
    if let Some(cmd) = &a.install {
        body.insert("installCommand".into(), json!(command("--install", cmd)?));
    }
    if let Some(cmd) = &a.entrypoint {
        body.insert("entrypoint".into(), json!(command("--entrypoint", cmd)?));
    }
    if !a.env.is_empty() {
        let mut env = Map::new();
        for kv in &a.env {
            match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() => {
                    env.insert(k.into(), json!(v));
                }
                _ => return Err(Error::Usage(format!("--env {kv:?}: expected KEY=VALUE"))),
            }
        }
        body.insert("env".into(), Value::Object(env));
    }
    Ok(Value::Object(body))
}

fn command(flag: &str, cmd: &str) -> Result<Vec<String>> {
    let argv = words::split(cmd).map_err(|e| Error::Usage(format!("{flag} {cmd:?}: {e}")))?;
    if argv.is_empty() {
        return Err(Error::Usage(format!("{flag} is empty")));
    }
    Ok(argv)
}

/// One `--file REMOTE=LOCAL` as a request entry: text as `content`, other
/// bytes as `contentBase64`, executable files with mode 0755.
fn file(spec: &str) -> Result<Value> {
    let (remote, local) = match spec.split_once('=') {
        Some((r, l)) if !r.is_empty() && !l.is_empty() => (r.to_string(), l),
        Some(_) => {
            return Err(Error::Usage(format!(
                "--file {spec:?}: expected REMOTE=LOCAL"
            )));
        }
        None => {
            let name = std::path::Path::new(spec)
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| Error::Usage(format!("--file {spec:?}: not a file name")))?;
            (format!("/workspace/{name}"), spec)
        }
    };
    let read_err = |e: std::io::Error| Error::Failed(format!("reading {local}: {e}"));
    let bytes = std::fs::read(local).map_err(read_err)?;
    let exec = std::fs::metadata(local)
        .map_err(read_err)?
        .permissions()
        .mode()
        & 0o111
        != 0;
    let mut entry = json!({ "path": remote });
    match String::from_utf8(bytes) {
        Ok(text) => entry["content"] = json!(text),
        Err(e) => {
            entry["contentBase64"] =
                json!(base64::engine::general_purpose::STANDARD.encode(e.into_bytes()))
        }
    }
    if exec {
        entry["mode"] = json!("0755");
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(files: Vec<String>, install: Option<&str>) -> ConfigureArgs {
        ConfigureArgs {
            sandbox: "x".into(),
            namespace: None,
            files,
            install: install.map(str::to_string),
            entrypoint: Some("python /workspace/agent.py".into()),
            env: vec!["A=b=c".into()],
        }
    }

    #[test]
    fn the_body_of_the_seed_command() {
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("agent.py");
        std::fs::write(&local, "print('hi')\n").unwrap();
        let spec = format!("/workspace/agent.py={}", local.display());
        let b = body(&args(
            vec![spec],
            Some("pip install -r /workspace/requirements.txt"),
        ))
        .unwrap();
        assert_eq!(
            b,
            json!({
                "files": [{"path": "/workspace/agent.py", "content": "print('hi')\n"}],
                "installCommand": ["pip", "install", "-r", "/workspace/requirements.txt"],
                "entrypoint": ["python", "/workspace/agent.py"],
                "env": {"A": "b=c"},
            })
        );
    }

    #[test]
    fn binary_and_executable_files() {
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("tool");
        std::fs::write(&local, [0xff, 0x00, 0x41]).unwrap();
        std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = file(&local.display().to_string()).unwrap();
        assert_eq!(
            e,
            json!({"path": "/workspace/tool", "contentBase64": "/wBB", "mode": "0755"})
        );
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        let none = ConfigureArgs {
            sandbox: "x".into(),
            namespace: None,
            files: vec![],
            install: None,
            entrypoint: None,
            env: vec![],
        };
        assert!(matches!(body(&none), Err(Error::Usage(_))));
        assert!(matches!(
            body(&args(vec![], Some("sh -c 'x"))),
            Err(Error::Usage(_))
        ));
        assert!(matches!(
            body(&args(vec!["=x".into()], None)),
            Err(Error::Usage(_))
        ));
        assert!(matches!(
            body(&args(vec!["/nope/missing".into()], None)),
            Err(Error::Failed(_))
        ));
    }
}
