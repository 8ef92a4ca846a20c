use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::sandbox::Mode;

pub const API_VERSION: &str = "agenttier.io/v1alpha1";

/// `network`: whether sandboxes of the template may reach the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSpec {
    #[serde(default)]
    pub allow_egress: bool,
}

/// `spec.agent` of a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AgentSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_invokes: Option<u32>,
    /// `30m`, `90s`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_invoke_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_invoke_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<u64>,
}

impl AgentSpec {
    pub const DEFAULT_MAX_CONCURRENT_INVOKES: u32 = 4;
    pub const DEFAULT_INVOKE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
    pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 256 * 1024 * 1024;

    pub fn max_concurrent_invokes(&self) -> u32 {
        self.max_concurrent_invokes
            .unwrap_or(Self::DEFAULT_MAX_CONCURRENT_INVOKES)
            .max(1)
    }

    pub fn default_invoke_timeout(&self) -> Duration {
        self.default_invoke_timeout
            .as_deref()
            .and_then(super::parse_duration)
            .unwrap_or(Self::DEFAULT_INVOKE_TIMEOUT)
    }

    pub fn idle_invoke_timeout(&self) -> Option<Duration> {
        self.idle_invoke_timeout
            .as_deref()
            .and_then(super::parse_duration)
    }

    pub fn max_output_bytes(&self) -> u64 {
        self.max_output_bytes
            .unwrap_or(Self::DEFAULT_MAX_OUTPUT_BYTES)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TemplateSpec {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub network: NetworkSpec,
    #[serde(default)]
    pub agent: AgentSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A `ClusterSandboxTemplate` or `SandboxTemplate` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Template {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    #[serde(default)]
    pub spec: TemplateSpec,
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("{0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("document {index}: {message}")]
    Invalid { index: usize, message: String },
}

impl Template {
    pub const KEY_PREFIX: &'static str = "templates.";

    /// The store key: `templates.cluster.<name>` or `templates.ns.<ns>.<name>`.
    pub fn key(&self) -> String {
        match &self.metadata.namespace {
            Some(ns) if self.kind == super::TemplateRef::NAMESPACED => {
                format!("templates.ns.{ns}.{}", self.metadata.name)
            }
            _ => format!("templates.cluster.{}", self.metadata.name),
        }
    }

    pub fn cluster_key(name: &str) -> String {
        format!("templates.cluster.{name}")
    }

    pub fn namespaced_key(ns: &str, name: &str) -> String {
        format!("templates.ns.{ns}.{name}")
    }

    /// Reads every template document of a multi-document YAML file; documents
    /// of other kinds are skipped, malformed templates are errors.
    pub fn from_yaml_documents(text: &str) -> Result<Vec<Template>, TemplateError> {
        let mut out = Vec::new();
        for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let value = serde_yaml::Value::deserialize(doc)?;
            if value.is_null() {
                continue;
            }
            let kind = value
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or_default();
            if kind != super::TemplateRef::CLUSTER && kind != super::TemplateRef::NAMESPACED {
                continue;
            }
            let t: Template = serde_yaml::from_value(value)?;
            t.validate()
                .map_err(|message| TemplateError::Invalid { index, message })?;
            out.push(t);
        }
        Ok(out)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.api_version != API_VERSION {
            return Err(format!(
                "apiVersion must be {API_VERSION}, got {:?}",
                self.api_version
            ));
        }
        if !super::is_dns_label(&self.metadata.name) {
            return Err(format!(
                "metadata.name {:?} is not a DNS-1123 label",
                self.metadata.name
            ));
        }
        if let Some(ns) = self
            .metadata
            .namespace
            .as_deref()
            .filter(|ns| !super::is_dns_label(ns))
        {
            return Err(format!("metadata.namespace {ns:?} is not a DNS-1123 label"));
        }
        if self.kind == super::TemplateRef::NAMESPACED && self.metadata.namespace.is_none() {
            return Err("a SandboxTemplate needs metadata.namespace".into());
        }
        let a = &self.spec.agent;
        for (field, v) in [
            ("defaultInvokeTimeout", &a.default_invoke_timeout),
            ("idleInvokeTimeout", &a.idle_invoke_timeout),
        ] {
            if let Some(v) = v.as_deref().filter(|v| super::parse_duration(v).is_none()) {
                return Err(format!(
                    "spec.agent.{field} {v:?} is not a duration like 30s or 5m"
                ));
            }
        }
        if a.max_concurrent_invokes == Some(0) {
            return Err("spec.agent.maxConcurrentInvokes must be at least 1".into());
        }
        Ok(())
    }
}

/// The templates every installation has.
pub fn builtin_templates() -> Vec<Template> {
    const BUILTIN: &str = include_str!("builtin_templates.yaml");
    Template::from_yaml_documents(BUILTIN).expect("built-in templates are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_the_three_the_spec_names() {
        let names: Vec<_> = builtin_templates()
            .into_iter()
            .map(|t| (t.metadata.name, t.spec.mode))
            .collect();
        assert_eq!(
            names,
            vec![
                ("langgraph-agent".to_string(), Mode::Agent),
                ("python-agent".to_string(), Mode::Agent),
                ("general-coding".to_string(), Mode::Code),
            ]
        );
    }

    #[test]
    fn manifests_are_validated() {
        let bad = "apiVersion: agenttier.io/v1alpha1\nkind: ClusterSandboxTemplate\nmetadata: {name: Bad_Name}\n";
        assert!(Template::from_yaml_documents(bad).is_err());
        let other = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n";
        assert!(Template::from_yaml_documents(other).unwrap().is_empty());
        let ok = "apiVersion: agenttier.io/v1alpha1\nkind: ClusterSandboxTemplate\nmetadata: {name: capped}\nspec:\n  mode: agent\n  agent: {maxConcurrentInvokes: 2, defaultInvokeTimeout: 5m}\n";
        let t = &Template::from_yaml_documents(ok).unwrap()[0];
        assert_eq!(t.spec.agent.max_concurrent_invokes(), 2);
        assert_eq!(
            t.spec.agent.default_invoke_timeout(),
            Duration::from_secs(300)
        );
    }
}
