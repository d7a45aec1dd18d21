//! The HTTP client of the command line: one node's API, its token, and errors as one
//! line (the API's message, its code and the HTTP status). [`super::commands`] uses it.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::node::config::{DEFAULT_BASE_DIR, DEFAULT_HTTP_LISTEN};

/// A client of one node's API.
pub struct Client {
    pub(super) base: String,
    pub(super) token: String,
    agent: ureq::Agent,
}

impl Client {
    /// From `--api`/`--token` (or their env vars), else the embedded default's address
    /// and token file.
    pub fn new(api: Option<String>, token: Option<String>) -> anyhow::Result<Client> {
        let base = api_base(api.as_deref().unwrap_or(DEFAULT_HTTP_LISTEN));
        let token = match token {
            Some(t) => t,
            None => {
                let p = Path::new(DEFAULT_BASE_DIR).join("admin.token");
                std::fs::read_to_string(&p)
                    .with_context(|| format!("no --token given and cannot read {}", p.display()))?
                    .trim()
                    .to_string()
            }
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        Ok(Client { base, token, agent })
    }

    pub(super) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        json: bool,
    ) -> anyhow::Result<Vec<u8>> {
        let url = format!("{}{}", self.base, path);
        let auth = format!("Bearer {}", self.token);
        let res = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .call(),
            ("PUT", Some(b)) if json => self
                .agent
                .put(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(&b[..]),
            ("PUT", Some(b)) => self
                .agent
                .put(&url)
                .header("Authorization", &auth)
                .send(&b[..]),
            ("PUT", None) => self
                .agent
                .put(&url)
                .header("Authorization", &auth)
                .send_empty(),
            ("POST", Some(b)) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(&b[..]),
            ("POST", None) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send_empty(),
            _ => bail!("unsupported method {method}"),
        };
        let mut res = res.with_context(|| format!("cannot reach {}", self.base))?;
        let status = res.status().as_u16();
        let body = res
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .with_context(|| format!("reading the answer of {method} {path}"))?;
        if status >= 400 {
            bail!("{}", api_error_line(status, &body));
        }
        Ok(body)
    }

    /// One call whose answer is JSON (`Null` for an empty answer).
    pub(super) fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let out = self.call(method, path, body.map(|b| b.to_string().into_bytes()), true)?;
        if out.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&out).context("the API answered something that is not JSON")
    }
}

/// The one-line reason for an HTTP error answer: `<error> (<code>, HTTP <status>)` from
/// the API's JSON error body; for anything else (a proxy's HTML page, an empty body) its
/// first non-empty line, cut short, so the command still fails with one line.
pub(super) fn api_error_line(status: u16, body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        if let Some(msg) = v["error"].as_str() {
            return match v["code"].as_str().filter(|c| !c.is_empty()) {
                Some(code) => format!("{msg} ({code}, HTTP {status})"),
                None => format!("{msg} (HTTP {status})"),
            };
        }
    }
    let text = String::from_utf8_lossy(body);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty());
    match line {
        Some(l) if l.chars().count() > 200 => {
            format!(
                "{}… (HTTP {status})",
                l.chars().take(200).collect::<String>()
            )
        }
        Some(l) => format!("{l} (HTTP {status})"),
        None => format!("the API answered HTTP {status} with no explanation"),
    }
}

/// The API's base URL from `--api`: a URL, or `HOST:PORT` meaning `http://HOST:PORT`.
pub fn api_base(api: &str) -> String {
    let api = api.trim().trim_end_matches('/');
    if api.contains("://") {
        api.to_string()
    } else {
        format!("http://{api}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_without_a_scheme_is_http() {
        assert_eq!(api_base("127.0.0.1:3900"), "http://127.0.0.1:3900");
        assert_eq!(api_base("http://h:1/"), "http://h:1");
        assert_eq!(api_base("https://h"), "https://h");
    }

    #[test]
    fn error_bodies_that_are_not_api_json_still_give_one_line() {
        assert_eq!(
            api_error_line(502, b"<html>\n<h1>Bad Gateway</h1>\n</html>"),
            "<html> (HTTP 502)"
        );
        assert_eq!(
            api_error_line(500, b""),
            "the API answered HTTP 500 with no explanation"
        );
        assert_eq!(
            api_error_line(401, br#"{"error":"missing token"}"#),
            "missing token (HTTP 401)"
        );
        let long = "x".repeat(1000);
        let line = api_error_line(500, long.as_bytes());
        assert!(line.len() < 250 && !line.contains('\n'), "{line}");
    }
}
