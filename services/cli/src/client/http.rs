//! Talking to the API: URLs, the key header, and errors as one line each.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde_json::Value;

use super::Settings;

/// How long a non-streaming call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a command failed; `Display` is the line printed after `agenttier: `.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error status.
    #[error("{status} {code}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Api {
        status: u16,
        code: String,
        message: Option<String>,
    },
    /// No answer: connection refused, reset, timed out.
    #[error("cannot reach {url}: {cause}")]
    Unreachable { url: String, cause: String },
    /// The command line asks for something impossible (exit 2, as clap).
    #[error("{0}")]
    Usage(String),
    /// Anything else, already worded for the user.
    #[error("{0}")]
    Failed(String),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            _ => 1,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn code(&self) -> &str {
        match self {
            Error::Api { code, .. } => code,
            _ => "",
        }
    }
}

/// A client of one API base URL with one key. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: Url,
    key: Option<String>,
}

impl Api {
    pub fn new(s: &Settings) -> Result<Self> {
        let base = Url::parse(&s.url)
            .map_err(|e| Error::Usage(format!("invalid API URL {:?}: {e}", s.url)))?;
        match base.scheme() {
            "http" => {}
            // TLS needs a crypto provider in every reqwest client of the
            // workspace (features unify); not yet. Say so plainly.
            "https" => {
                return Err(Error::Failed(format!(
                    "{}: https is not supported by this build of agenttier yet; \
                     use an http:// URL (for example through a TLS-terminating proxy)",
                    s.url
                )));
            }
            other => {
                return Err(Error::Usage(format!(
                    "invalid API URL {:?}: the scheme must be http, not {other}",
                    s.url
                )));
            }
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("agenttier-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Failed(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            key: s.key.clone(),
        })
    }

    /// `<base>/api/v1/<segments...>`, each segment percent-encoded.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        url
    }

    /// `url` with `?name=value` for each value given.
    pub fn with_query(mut url: Url, pairs: &[(&str, Option<&str>)]) -> Url {
        for (k, v) in pairs {
            if let Some(v) = v {
                url.query_pairs_mut().append_pair(k, v);
            }
        }
        url
    }

    /// A request with the key header; no timeout (streams set their own).
    pub fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let rb = self.http.request(method, url);
        match &self.key {
            Some(k) => rb.header("X-API-Key", k),
            None => rb,
        }
    }

    /// Sends `rb`; a non-2xx answer becomes [`Error::Api`].
    pub async fn send(&self, rb: RequestBuilder) -> Result<Response> {
        let resp = rb.send().await.map_err(|e| self.unreachable(&e))?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(api_error(resp).await)
        }
    }

    /// A JSON call: the answer's JSON, `Value::Null` for an empty body.
    pub async fn call(&self, method: Method, url: Url, body: Option<&Value>) -> Result<Value> {
        let mut rb = self.request(method, url).timeout(CALL_TIMEOUT);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = self.send(rb).await?;
        let text = resp.text().await.map_err(|e| self.unreachable(&e))?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|e| Error::Failed(format!("the server's answer is not JSON: {e}")))
    }

    pub async fn get(&self, segments: &[&str], query: &[(&str, Option<&str>)]) -> Result<Value> {
        let url = Self::with_query(self.url(segments), query);
        self.call(Method::GET, url, None).await
    }

    /// The error for a request that got no (complete) answer.
    pub fn unreachable(&self, e: &reqwest::Error) -> Error {
        Error::Unreachable {
            url: self.base.as_str().trim_end_matches('/').to_string(),
            cause: root_cause(e),
        }
    }
}

/// The innermost cause: "Connection refused (os error 111)" rather than
/// "error sending request for url (...)".
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    if e.downcast_ref::<reqwest::Error>()
        .is_some_and(reqwest::Error::is_timeout)
    {
        return "timed out".into();
    }
    cause.to_string()
}

/// Reads an error answer: `error` is the code, `message` the sentence
/// (SPEC §2); a body that is not JSON is shown as text.
async fn api_error(resp: Response) -> Error {
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = resp.text().await.unwrap_or_default();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let code = body["error"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| reason(status));
    let mut message = body["message"].as_str().map(str::to_string).or_else(|| {
        let t = text.trim();
        (body.is_null() && !t.is_empty())
            .then(|| t.lines().next().unwrap_or(t).chars().take(200).collect())
    });
    if let Some(vs) = body["violations"].as_array() {
        let list: Vec<String> = vs
            .iter()
            .map(|v| {
                format!(
                    "{} ({})",
                    v["message"].as_str().unwrap_or_default(),
                    v["code"].as_str().unwrap_or_default()
                )
            })
            .collect();
        message = Some(list.join("; "));
    }
    if status == StatusCode::TOO_MANY_REQUESTS
        && let Some(s) = retry_after
    {
        message = Some(format!(
            "{} (retry after {s}s)",
            message.unwrap_or_default()
        ));
    }
    Error::Api {
        status: status.as_u16(),
        code,
        message: message.map(|m| m.replace('\n', " ")),
    }
}

fn reason(status: StatusCode) -> String {
    status
        .canonical_reason()
        .unwrap_or("error")
        .to_lowercase()
        .replace(' ', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(url: &str) -> Result<Api> {
        Api::new(&Settings {
            url: url.into(),
            key: None,
            output: super::super::Format::Human,
            config_path: None,
        })
    }

    #[test]
    fn urls_keep_a_base_path_and_encode_segments() {
        let a = api("http://h:1/prefix").unwrap();
        assert_eq!(
            a.url(&["sandboxes", "a b", "stop"]).as_str(),
            "http://h:1/prefix/api/v1/sandboxes/a%20b/stop"
        );
        let a = api("http://h:1").unwrap();
        let u = Api::with_query(
            a.url(&["sandboxes"]),
            &[("namespace", Some("x")), ("status", None)],
        );
        assert_eq!(u.as_str(), "http://h:1/api/v1/sandboxes?namespace=x");
    }

    #[test]
    fn error_lines_carry_status_code_and_message() {
        let e = Error::Api {
            status: 404,
            code: "not_found".into(),
            message: Some("sandbox not found".into()),
        };
        assert_eq!(e.to_string(), "404 not_found: sandbox not found");
        let e = Error::Api {
            status: 401,
            code: "invalid_api_key".into(),
            message: None,
        };
        assert_eq!(e.to_string(), "401 invalid_api_key");
    }

    #[test]
    fn only_http_urls() {
        assert!(matches!(api("https://x"), Err(Error::Failed(_))));
        assert!(matches!(api("ftp://x"), Err(Error::Usage(_))));
        assert!(matches!(api("not a url"), Err(Error::Usage(_))));
    }
}
