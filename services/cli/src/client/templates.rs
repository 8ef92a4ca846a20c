//! `agenttier template list|get`.

use super::output::{self, Format, outln, s};
use super::sandbox::Target;
use super::{Api, Result};

#[derive(Debug, clap::Subcommand)]
pub enum TemplateCmd {
    /// List the templates.
    #[command(after_help = "Example:\n  agenttier template list")]
    List {
        /// Also this namespace's SandboxTemplates [default: every template].
        #[arg(short = 'n', long, env = "AGENTTIER_NAMESPACE")]
        namespace: Option<String>,
    },
    /// Show one template.
    #[command(after_help = "Example:\n  agenttier template get langgraph-agent -o json")]
    Get(Target),
}

pub async fn run(api: &Api, out: Format, cmd: TemplateCmd) -> Result<i32> {
    match cmd {
        TemplateCmd::List { namespace } => {
            let v = api
                .get(&["templates"], &[("namespace", namespace.as_deref())])
                .await?;
            if out == Format::Json {
                output::json(&v);
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = v["templates"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|t| {
                            ["name", "kind", "mode", "image", "description"]
                                .iter()
                                .map(|k| s(t, k))
                                .collect()
                        })
                        .collect()
                })
                .unwrap_or_default();
            output::table(&["NAME", "KIND", "MODE", "IMAGE", "DESCRIPTION"], &rows);
        }
        TemplateCmd::Get(t) => {
            let v = api
                .get(
                    &["templates", &t.name],
                    &[("namespace", t.namespace.as_deref())],
                )
                .await?;
            if out == Format::Json {
                output::json(&v);
                return Ok(0);
            }
            output::fields(&[
                ("name", s(&v, "name")),
                ("kind", s(&v, "kind")),
                ("namespace", s(&v, "namespace")),
                ("mode", s(&v, "mode")),
                ("image", s(&v, "image")),
                ("description", s(&v, "description")),
            ]);
            outln!("spec:");
            let spec = serde_json::to_string_pretty(&v["spec"]).unwrap_or_default();
            for line in spec.lines() {
                outln!("  {line}");
            }
        }
    }
    Ok(0)
}
