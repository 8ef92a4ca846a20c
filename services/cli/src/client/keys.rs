//! Who you are: `keys`, `login`, `whoami`; and what happened: `audit`.

use reqwest::Method;
use serde_json::{Value, json};

use super::output::{self, Format, outln, s};
use super::{Api, Error, Result, Settings, config};

#[derive(Debug, clap::Subcommand)]
pub enum KeysCmd {
    /// Create an API key; it is printed once, alone on stdout.
    #[command(after_help = "Examples:\n  \
        agenttier keys create --name ci --expires-in 30d\n  \
        export AGENTTIER_API_KEY=$(agenttier keys create --name laptop)")]
    Create {
        /// A name to recognise it by [default: default].
        #[arg(long)]
        name: Option<String>,
        /// When it stops working: seconds, a duration (`12h`) or days (`30d`) [default: never].
        #[arg(long, value_name = "DUR")]
        expires_in: Option<String>,
    },
    /// List your API keys (their ids and names; never the keys).
    #[command(after_help = "Example:\n  agenttier keys list")]
    List,
    /// Revoke an API key by its id; it stops working within seconds.
    #[command(after_help = "Example:\n  agenttier keys revoke 3f2a9c01b7d4")]
    Revoke {
        /// The key's id (from `keys list`).
        id: String,
    },
}

/// `login` takes the global `--api-url` and `--api-key`.
#[derive(Debug, clap::Args)]
pub struct LoginArgs {}

pub const LOGIN_EXAMPLES: &str = "Example:
  agenttier login --api-url http://127.0.0.1:8080 --api-key atk_...

Later commands use the saved URL and key unless a flag or AGENTTIER_API_URL /
AGENTTIER_API_KEY says otherwise.";

pub const AUDIT_EXAMPLES: &str = "Examples:
  agenttier audit
  agenttier audit --sandbox demo-agent --type AgentInvokeFailed --limit 20";

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// `list` (the v0.8 spelling); the same as nothing.
    #[arg(hide = true, value_parser = ["list"])]
    pub list: Option<String>,
    /// Only events of this sandbox.
    #[arg(long)]
    pub sandbox: Option<String>,
    /// Only events in this namespace.
    #[arg(short = 'n', long, env = "AGENTTIER_NAMESPACE")]
    pub namespace: Option<String>,
    /// Only events of this type (e.g. AgentInvokeFailed).
    #[arg(long = "type", value_name = "TYPE")]
    pub event_type: Option<String>,
    /// Only events since this time (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many events (newest first).
    #[arg(long)]
    pub limit: Option<u32>,
}

pub async fn run(api: &Api, out: Format, cmd: KeysCmd) -> Result<i32> {
    match cmd {
        KeysCmd::Create { name, expires_in } => {
            let mut body = json!({});
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            if let Some(e) = expires_in {
                body["expiresIn"] = json!(e);
            }
            let url = api.url(&["user", "api-keys"]);
            let v = api.call(Method::POST, url, Some(&body)).await?;
            if out == Format::Json {
                output::json(&v);
                return Ok(0);
            }
            let expires = Some(s(&v, "expiresAt"))
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "never".into());
            eprintln!(
                "created API key {} (name {}, expires {expires}); it is shown only this once:",
                s(&v, "id"),
                s(&v, "name")
            );
            outln!("{}", s(&v, "key"));
        }
        KeysCmd::List => {
            let v = api.get(&["user", "api-keys"], &[]).await?;
            if out == Format::Json {
                output::json(&v);
                return Ok(0);
            }
            let keys = v["keys"].as_array().or(v["apiKeys"].as_array());
            let rows: Vec<Vec<String>> = keys
                .map(|ks| {
                    ks.iter()
                        .map(|k| {
                            let exp = s(k, "expiresAt");
                            vec![
                                s(k, "id"),
                                s(k, "name"),
                                s(k, "createdAt"),
                                if exp.is_empty() { "never".into() } else { exp },
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            output::table(&["ID", "NAME", "CREATED", "EXPIRES"], &rows);
        }
        KeysCmd::Revoke { id } => {
            api.call(Method::DELETE, api.url(&["user", "api-keys", &id]), None)
                .await?;
            match out {
                Format::Json => output::json(&json!({"id": id, "revoked": true})),
                Format::Human => outln!("revoked API key {id}"),
            }
        }
    }
    Ok(0)
}

/// Checks the URL and key (`GET /user/me`), then saves them.
pub async fn login(api: &Api, settings: &Settings, _a: LoginArgs) -> Result<i32> {
    let Some(key) = &settings.key else {
        return Err(Error::Usage(
            "login needs an API key: --api-key KEY or AGENTTIER_API_KEY".into(),
        ));
    };
    let Some(path) = &settings.config_path else {
        return Err(Error::Failed(
            "no place for the config file: set AGENTTIER_CONFIG or HOME".into(),
        ));
    };
    let me = api.get(&["user", "me"], &[]).await?;
    config::save(path, &settings.url, key)?;
    match settings.output {
        Format::Json => output::json(&me),
        Format::Human => outln!(
            "logged in to {} as {}{}; saved to {}",
            settings.url,
            who(&me),
            if me["isAdmin"] == true {
                " (admin)"
            } else {
                ""
            },
            path.display()
        ),
    }
    Ok(0)
}

fn who(me: &Value) -> String {
    ["email", "name", "sub"]
        .iter()
        .map(|k| s(me, k))
        .find(|x| !x.is_empty())
        .unwrap_or_default()
}

pub async fn whoami(api: &Api, out: Format) -> Result<i32> {
    let me = api.get(&["user", "me"], &[]).await?;
    match out {
        Format::Json => output::json(&me),
        Format::Human => {
            let groups: Vec<&str> = me["groups"]
                .as_array()
                .map(|g| g.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            output::fields(&[
                ("sub", s(&me, "sub")),
                ("email", s(&me, "email")),
                ("name", s(&me, "name")),
                ("groups", groups.join(", ")),
                ("admin", s(&me, "isAdmin")),
            ]);
        }
    }
    Ok(0)
}

pub async fn audit(api: &Api, out: Format, a: AuditArgs) -> Result<i32> {
    let limit = a.limit.map(|l| l.to_string());
    let v = api
        .get(
            &["audit", "events"],
            &[
                ("sandbox", a.sandbox.as_deref()),
                ("namespace", a.namespace.as_deref()),
                ("type", a.event_type.as_deref()),
                ("since", a.since.as_deref()),
                ("limit", limit.as_deref()),
            ],
        )
        .await?;
    if out == Format::Json {
        output::json(&v);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = v["events"]
        .as_array()
        .map(|es| {
            es.iter()
                .map(|e| {
                    let sandbox = format!("{}/{}", s(e, "namespace"), s(e, "sandboxName"));
                    let user = Some(s(e, "userEmail"))
                        .filter(|u| !u.is_empty())
                        .unwrap_or_else(|| s(e, "actor"));
                    vec![s(e, "timestamp"), s(e, "eventType"), sandbox, user]
                })
                .collect()
        })
        .unwrap_or_default();
    output::table(&["TIMESTAMP", "EVENT", "SANDBOX", "USER"], &rows);
    Ok(0)
}
