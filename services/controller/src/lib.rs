//! `agenttier-controller`: the control plane.
//!
//! Publishes the templates (built-in and from `--manifests`) into the store,
//! places every new sandbox on the live executor hosting the fewest, and
//! deletes records of sandboxes that were never placed. It runs no sandbox
//! code and answers no HTTP; Kubernetes reconcile will live here too.

mod placement;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agenttier_bus::Bus;
use agenttier_bus::model::{Template, builtin_templates};
use agenttier_bus::store::{self, Store};
use agenttier_bus::subject::Subjects;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Default, clap::Args)]
#[group(id = "controller")]
pub struct Args {
    /// A directory of YAML manifests (ClusterSandboxTemplate, SandboxTemplate).
    #[arg(long, env = "AGENTTIER_MANIFESTS")]
    pub manifests: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("manifest {path}: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error("state store: {0}")]
    Store(#[from] store::Error),
    #[error("bus: {0}")]
    Bus(#[from] agenttier_bus::Error),
}

/// Built-in templates, then every template document under `dir` (sorted by
/// file name; a later document of the same name wins).
pub fn load_templates(dir: Option<&Path>) -> Result<Vec<Template>, Error> {
    let mut out = builtin_templates();
    let Some(dir) = dir else { return Ok(out) };
    let err = |path: &Path, message: String| Error::Manifest {
        path: path.to_path_buf(),
        message,
    };
    let entries = std::fs::read_dir(dir).map_err(|e| err(dir, e.to_string()))?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
        })
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|e| err(&path, e.to_string()))?;
        let docs = Template::from_yaml_documents(&text).map_err(|e| err(&path, e.to_string()))?;
        for t in docs {
            out.retain(|o| o.key() != t.key());
            out.push(t);
        }
    }
    Ok(out)
}

/// Writes the built-in templates and those under `manifests` to the store.
pub async fn publish_templates(store: &dyn Store, manifests: Option<&Path>) -> Result<(), Error> {
    let templates = load_templates(manifests)?;
    for t in &templates {
        store.put(&t.key(), store::to_bytes(t)).await?;
    }
    tracing::info!(templates = templates.len(), "templates published");
    Ok(())
}

/// Runs the controller until `shutdown`.
pub async fn run(
    args: Args,
    bus: Arc<dyn Bus>,
    store: Arc<dyn Store>,
    subjects: Subjects,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    publish_templates(store.as_ref(), args.manifests.as_deref()).await?;
    placement::run(bus, store, subjects, shutdown, Duration::from_secs(3)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_add_and_override_templates() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("capped.yaml"),
            "apiVersion: agenttier.io/v1alpha1\nkind: ClusterSandboxTemplate\nmetadata: {name: capped}\nspec:\n  mode: agent\n  agent: {maxConcurrentInvokes: 2}\n---\napiVersion: agenttier.io/v1alpha1\nkind: ClusterSandboxTemplate\nmetadata: {name: python-agent}\nspec: {mode: agent, description: mine}\n",
        )
        .unwrap();
        std::fs::write(d.path().join("notes.txt"), "ignored").unwrap();
        let ts = load_templates(Some(d.path())).unwrap();
        assert_eq!(
            ts.iter()
                .filter(|t| t.metadata.name == "python-agent")
                .count(),
            1
        );
        let py = ts
            .iter()
            .find(|t| t.metadata.name == "python-agent")
            .unwrap();
        assert_eq!(py.spec.description, "mine");
        let capped = ts.iter().find(|t| t.metadata.name == "capped").unwrap();
        assert_eq!(capped.spec.agent.max_concurrent_invokes(), 2);
    }

    #[test]
    fn a_bad_manifest_names_its_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("bad.yaml"), "apiVersion: agenttier.io/v1alpha1\nkind: ClusterSandboxTemplate\nmetadata: {name: Bad}\n").unwrap();
        let e = load_templates(Some(d.path())).unwrap_err().to_string();
        assert!(e.contains("bad.yaml"), "{e}");
    }
}
