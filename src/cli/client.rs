//! The command-line client: each command is one or two HTTP calls to a node's API.
//! Errors are one line: the API's message, its code and the HTTP status.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

use blocknode_actors::{Hash, RefId};

use super::output::{next_try_text, print_status};
use super::{BlockCommand, Command, RefCommand, TokenCommand, WorkerCommand};
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
        let base = api
            .unwrap_or_else(|| format!("http://{DEFAULT_HTTP_LISTEN}"))
            .trim_end_matches('/')
            .to_string();
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

/// A block hash given on the command line, checked here so a typo fails with a clear
/// reason instead of reaching (or, with a `/`, misrouting to) another API route.
pub(super) fn hash_arg(s: &str) -> anyhow::Result<Hash> {
    s.parse()
        .map_err(|e| anyhow::anyhow!("invalid block hash {s:?}: {e}"))
}

/// A ref name given on the command line, checked for the same reason as [`hash_arg`].
pub(super) fn ref_arg(s: &str) -> anyhow::Result<RefId> {
    s.parse()
        .map_err(|e| anyhow::anyhow!("invalid ref name {s:?}: {e}"))
}

/// Percent-encode a query value: everything but RFC 3986's unreserved characters.
/// Needed for refs: `+` is legal in a ref name but means a space in a query string.
pub(super) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Run one client command.
pub fn run(c: &Client, cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Put { file, ref_id } => {
            let ref_id = ref_id.as_deref().map(ref_arg).transpose()?;
            let mut data = Vec::new();
            std::fs::File::open(&file)
                .and_then(|mut f| f.read_to_end(&mut data))
                .with_context(|| format!("reading {}", file.display()))?;
            let path = match ref_id {
                Some(r) => format!("/v1/blocks?ref={}", query_escape(r.as_str())),
                None => "/v1/blocks".into(),
            };
            let answer = c.call("PUT", &path, Some(data), false)?;
            let v: Value = serde_json::from_slice(&answer)
                .context("the API answered the put with something that is not JSON")?;
            match v["hash"].as_str() {
                Some(h) => println!("{h}"),
                None => bail!("the API answered the put without a hash: {v}"),
            }
        }
        Command::Get { hash, output } => {
            let hash = hash_arg(&hash)?;
            let data = c.call("GET", &format!("/v1/blocks/{hash}"), None, false)?;
            match output {
                Some(p) => {
                    std::fs::write(&p, data).with_context(|| format!("writing {}", p.display()))?
                }
                None => std::io::stdout().write_all(&data)?,
            }
        }
        Command::Ref(RefCommand::Add { hash, r#ref }) => {
            let (hash, r#ref) = (hash_arg(&hash)?, ref_arg(&r#ref)?);
            c.call("PUT", &format!("/v1/blocks/{hash}/refs/{ref}"), None, false)?;
        }
        Command::Ref(RefCommand::Drop { hash, r#ref }) => {
            let (hash, r#ref) = (hash_arg(&hash)?, ref_arg(&r#ref)?);
            c.call(
                "DELETE",
                &format!("/v1/blocks/{hash}/refs/{ref}"),
                None,
                false,
            )?;
        }
        Command::Block(BlockCommand::Info { hash }) => {
            let hash = hash_arg(&hash)?.to_hex();
            let v = c.json("GET", &format!("/v1/blocks/{hash}/info"), None)?;
            println!("block {}", v["hash"].as_str().unwrap_or(&hash));
            println!(
                "{:<18} {:<8} {:>6} {:<10} error",
                "holder", "present", "rc", "deletable"
            );
            for h in v["holders"].as_array().into_iter().flatten() {
                println!(
                    "{:<18} {:<8} {:>6} {:<10} {}",
                    &h["node"].as_str().unwrap_or("?")
                        [..16.min(h["node"].as_str().unwrap_or("?").len())],
                    h["present"].to_string(),
                    h["rc"].to_string(),
                    h["deletable"].to_string(),
                    h["error"].as_str().unwrap_or("-")
                );
            }
            let refs: Vec<String> = v["local"]["refs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    format!(
                        "{} ({})",
                        r["ref"].as_str().unwrap_or("?"),
                        r["state"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            println!(
                "local rc {}; refs: {}",
                v["local"]["rc"],
                if refs.is_empty() {
                    "none".into()
                } else {
                    refs.join(", ")
                }
            );
        }
        Command::Block(BlockCommand::ListErrors) => {
            let v = c.json("GET", "/v1/resync/errors", None)?;
            let errs = v["errors"].as_array().cloned().unwrap_or_default();
            if errs.is_empty() {
                println!("no resync errors");
            }
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            for e in errs {
                println!(
                    "{}  tries {}  next try {}  {}",
                    e["hash"].as_str().unwrap_or("?"),
                    e["count"],
                    next_try_text(e["next_try"].as_u64(), now_ms),
                    e["error"].as_str().unwrap_or("")
                );
            }
        }
        Command::Block(BlockCommand::RetryNow { hash, all }) => {
            let body = match (hash, all) {
                (Some(h), false) => serde_json::json!({"hash": hash_arg(&h)?.to_hex()}),
                (None, true) => serde_json::json!({"all": true}),
                _ => bail!("give a HASH or --all"),
            };
            let v = c.json("POST", "/v1/resync/retry", Some(body))?;
            println!("rescheduled {}", v["rescheduled"]);
        }
        Command::Status => print_status(&c.json("GET", "/v1/status", None)?),
        Command::Repair { rebuild_rc } => {
            c.json(
                "POST",
                "/v1/repair",
                Some(serde_json::json!({"rebuild_rc": rebuild_rc})),
            )?;
            println!("repair started");
        }
        Command::Scrub { action } => {
            c.json("POST", &format!("/v1/scrub/{action}"), None)?;
            println!("scrub {action}: ok");
        }
        Command::Worker(WorkerCommand::Get) => {
            let v = c.json("GET", "/v1/workers", None)?;
            for k in ["resync_workers", "resync_tranquility", "scrub_tranquility"] {
                println!("{k} = {}", v[k]);
            }
        }
        Command::Worker(WorkerCommand::Set { key, value }) => {
            let mut body = serde_json::Map::new();
            body.insert(key.clone(), value.into());
            let v = c.json("PUT", "/v1/workers", Some(Value::Object(body)))?;
            println!("{key} = {}", v[&key]);
        }
        Command::Token(TokenCommand::Create { scope, name }) => {
            let v = c.json(
                "POST",
                "/v1/tokens",
                Some(serde_json::json!({"name": name, "scope": scope})),
            )?;
            let secret = v["token"]
                .as_str()
                .context("the API's answer has no token")?;
            println!("{secret}");
            eprintln!(
                "token {name} (scope {scope}) created; the secret above is shown only now \
                 (pushed to {} of {} other nodes)",
                v["peers_confirmed"], v["peers"]
            );
        }
        Command::Token(TokenCommand::List) => {
            let v = c.json("GET", "/v1/tokens", None)?;
            println!("{:<32} {:<6} created", "name", "scope");
            for t in v["tokens"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let created = t["created_ms"]
                    .as_u64()
                    .map(|ms| {
                        humantime::format_rfc3339_seconds(
                            std::time::UNIX_EPOCH + Duration::from_millis(ms),
                        )
                        .to_string()
                    })
                    .unwrap_or_else(|| "?".into());
                println!(
                    "{:<32} {:<6} {created}",
                    t["name"].as_str().unwrap_or("?"),
                    t["scope"].as_str().unwrap_or("?")
                );
            }
        }
        Command::Token(TokenCommand::Revoke { name }) => {
            c.call("DELETE", &format!("/v1/tokens/{name}"), None, false)?;
            println!("token {name} revoked");
        }
        Command::Layout(cmd) => super::layout::run(c, cmd)?,
        Command::Object(cmd) => super::object::run(c, cmd)?,
        other => bail!("{other:?} is not a client command"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;
    use std::thread::JoinHandle;

    use blocknode_actors::blake2sum;

    use super::*;

    /// A one-request HTTP server on a port from the OS: answers `response` and hands
    /// back the request's head (request line and headers) for inspection.
    fn serve_once(response: String) -> (String, JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                head.push_str(&line);
            }
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            reader.read_exact(&mut body).unwrap();
            (&stream).write_all(response.as_bytes()).unwrap();
            head
        });
        (base, handle)
    }

    fn http_response(status: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    #[test]
    fn api_errors_are_one_line_with_message_code_and_status() {
        let hash = blake2sum(b"x").to_hex();
        let (base, server) = serve_once(http_response(
            "409 Conflict",
            r#"{"error":"ref r1 was dropped","code":"ref_dropped"}"#,
        ));
        let c = Client::new(Some(base), Some("tok".into())).unwrap();
        let e = run(
            &c,
            Command::Ref(RefCommand::Add {
                hash: hash.clone(),
                r#ref: "r1".into(),
            }),
        )
        .unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "ref r1 was dropped (ref_dropped, HTTP 409)"
        );
        let head = server.join().unwrap();
        assert!(
            head.starts_with(&format!("PUT /v1/blocks/{hash}/refs/r1 HTTP/1.1")),
            "wrong request line: {head}"
        );
        assert!(
            head.lines()
                .any(|l| l.eq_ignore_ascii_case("authorization: Bearer tok")),
            "no bearer token sent: {head}"
        );
    }

    #[test]
    fn put_escapes_the_ref_so_a_plus_is_not_read_as_a_space() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("f");
        std::fs::write(&file, b"abc").unwrap();
        let hash = blake2sum(b"abc").to_hex();
        let (base, server) = serve_once(http_response(
            "201 Created",
            &format!(r#"{{"hash":"{hash}","size":3}}"#),
        ));
        let c = Client::new(Some(base), Some("tok".into())).unwrap();
        run(
            &c,
            Command::Put {
                file,
                ref_id: Some("a+b=c".into()),
            },
        )
        .unwrap();
        let head = server.join().unwrap();
        assert!(
            head.starts_with("PUT /v1/blocks?ref=a%2Bb%3Dc HTTP/1.1"),
            "ref not escaped in the query: {head}"
        );
    }

    #[test]
    fn the_api_reads_an_escaped_ref_back_unchanged() {
        use std::collections::HashMap;
        type Q = actix_web::web::Query<HashMap<String, String>>;
        let r = "a+b=c:d@e.f_g-h";
        let q = Q::from_query(&format!("ref={}", query_escape(r))).unwrap();
        assert_eq!(q["ref"], r, "the server must see the ref the user typed");
        // Why the escape matters: unescaped, the server reads `+` as a space.
        assert_eq!(Q::from_query("ref=a+b").unwrap()["ref"], "a b");
    }

    #[test]
    fn a_put_answer_without_a_hash_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("f");
        std::fs::write(&file, b"abc").unwrap();
        let (base, server) = serve_once(http_response("201 Created", "{}"));
        let c = Client::new(Some(base), Some("tok".into())).unwrap();
        let e = run(&c, Command::Put { file, ref_id: None }).unwrap_err();
        assert!(format!("{e:#}").contains("without a hash"), "{e:#}");
        server.join().unwrap();
    }

    #[test]
    fn bad_hashes_and_refs_are_refused_before_any_request() {
        // Nothing listens on this address: reaching it would fail with "cannot reach".
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let c = Client::new(Some(base), Some("tok".into())).unwrap();
        let good = blake2sum(b"x").to_hex();
        let cases = [
            (
                Command::Get {
                    hash: "abc/info".into(),
                    output: None,
                },
                "invalid block hash",
            ),
            (
                Command::Ref(RefCommand::Drop {
                    hash: good.clone(),
                    r#ref: "a b".into(),
                }),
                "invalid ref name",
            ),
            (
                Command::Block(BlockCommand::Info {
                    hash: good.to_uppercase(),
                }),
                "invalid block hash",
            ),
            (
                Command::Block(BlockCommand::RetryNow {
                    hash: Some("12".into()),
                    all: false,
                }),
                "invalid block hash",
            ),
        ];
        for (cmd, want) in cases {
            let shown = format!("{cmd:?}");
            let e = run(&c, cmd).unwrap_err();
            assert!(format!("{e:#}").contains(want), "{shown}: {e:#}");
        }
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
