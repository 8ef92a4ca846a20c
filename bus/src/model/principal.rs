use serde::{Deserialize, Serialize};

/// Who calls: from an API key or (later) an OIDC token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Principal {
    pub sub: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub admin: bool,
}

impl Principal {
    /// Whether this principal may see a resource created by `owner_sub`.
    pub fn may_access(&self, owner_sub: &str) -> bool {
        self.admin || self.sub == owner_sub
    }
}

/// An API key as stored: never the key itself, only its SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    /// Lowercase hex SHA-256 of the whole key.
    pub key_hash: String,
    pub principal: Principal,
    pub created_at: String,
    pub expires_at: Option<String>,
}
