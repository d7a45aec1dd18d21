//! The command-line client: each command is one or two HTTP calls to a node's API.
//! Errors are one line: the API's message, its code and the HTTP status.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::cli::{BlockCommand, Command, RefCommand, WorkerCommand};
use crate::config::{DEFAULT_BASE_DIR, DEFAULT_HTTP_LISTEN};

/// A client of one node's API.
pub struct Client {
    base: String,
    token: String,
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

    fn call(
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
            let (msg, code) = serde_json::from_slice::<Value>(&body)
                .ok()
                .map(|v| {
                    (
                        v["error"].as_str().unwrap_or("").to_string(),
                        v["code"].as_str().unwrap_or("").to_string(),
                    )
                })
                .unwrap_or_else(|| (String::from_utf8_lossy(&body).into_owned(), String::new()));
            bail!("{msg} ({code}, HTTP {status})");
        }
        Ok(body)
    }

    fn json(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let out = self.call(method, path, body.map(|b| b.to_string().into_bytes()), true)?;
        if out.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&out).context("the API answered something that is not JSON")
    }
}

/// Run one client command.
pub fn run(c: &Client, cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Put { file, ref_id } => {
            let mut data = Vec::new();
            std::fs::File::open(&file)
                .and_then(|mut f| f.read_to_end(&mut data))
                .with_context(|| format!("reading {}", file.display()))?;
            let path = match ref_id {
                Some(r) => format!("/v1/blocks?ref={r}"),
                None => "/v1/blocks".into(),
            };
            let v: Value = serde_json::from_slice(&c.call("PUT", &path, Some(data), false)?)?;
            println!("{}", v["hash"].as_str().unwrap_or_default());
        }
        Command::Get { hash, output } => {
            let data = c.call("GET", &format!("/v1/blocks/{hash}"), None, false)?;
            match output {
                Some(p) => {
                    std::fs::write(&p, data).with_context(|| format!("writing {}", p.display()))?
                }
                None => std::io::stdout().write_all(&data)?,
            }
        }
        Command::Ref(RefCommand::Add { hash, r#ref }) => {
            c.call("PUT", &format!("/v1/blocks/{hash}/refs/{ref}"), None, false)?;
        }
        Command::Ref(RefCommand::Drop { hash, r#ref }) => {
            c.call(
                "DELETE",
                &format!("/v1/blocks/{hash}/refs/{ref}"),
                None,
                false,
            )?;
        }
        Command::Block(BlockCommand::Info { hash }) => {
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
            for e in errs {
                println!(
                    "{} tries={} error={}",
                    e["hash"].as_str().unwrap_or("?"),
                    e["count"],
                    e["error"].as_str().unwrap_or("")
                );
            }
        }
        Command::Block(BlockCommand::RetryNow { hash, all }) => {
            let body = match (hash, all) {
                (Some(h), false) => serde_json::json!({"hash": h}),
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
        other => bail!("{other:?} is not a client command"),
    }
    Ok(())
}

fn print_status(v: &Value) {
    let n = &v["node"];
    println!(
        "node     {}  zone {}  version {}  up {}s",
        n["id"].as_str().unwrap_or("?"),
        n["zone"].as_str().unwrap_or("?"),
        n["version"].as_str().unwrap_or("?"),
        n["uptime_secs"]
    );
    let l = &v["layout"];
    println!(
        "layout   {}  rf {}  write quorum {}",
        l["digest"].as_str().unwrap_or("?").get(..16).unwrap_or("?"),
        l["replication_factor"],
        l["write_quorum"]
    );
    if let Some(d) = l["disagreeing_peers"].as_array().filter(|d| !d.is_empty()) {
        println!("WARNING  {} peer(s) have a different member list", d.len());
    }
    println!("peers");
    for p in v["peers"].as_array().into_iter().flatten() {
        println!(
            "  {:<18} {:<22} {:<5} rtt {}",
            p["id"].as_str().unwrap_or("?").get(..16).unwrap_or("?"),
            p["addr"].as_str().unwrap_or("?"),
            if p["up"].as_bool() == Some(true) {
                "up"
            } else {
                "DOWN"
            },
            p["rtt_ms"]
                .as_f64()
                .map(|r| format!("{r:.2} ms"))
                .unwrap_or_else(|| "-".into())
        );
    }
    let s = &v["storage"];
    println!(
        "storage  {} blocks, {} bytes, {} corruptions found",
        s["blocks"], s["bytes"], s["corruptions_found"]
    );
    let r = &v["resync"];
    println!(
        "resync   queue {}  errors {}  busy {}  workers {}  tranquility {}",
        r["queue_length"], r["errors"], r["busy"], r["workers"], r["tranquility"]
    );
    let sc = &r["scrub"];
    println!(
        "scrub    {}  checked {}  corruptions {}  tranquility {}",
        sc["state"].as_str().unwrap_or("?"),
        sc["checked"],
        sc["corruptions"],
        sc["tranquility"]
    );
    let rp = &r["repair"];
    if rp["phase"].as_str().is_some_and(|p| !p.is_empty()) {
        println!(
            "repair   {}  queued {}  done {}",
            rp["phase"].as_str().unwrap_or("?"),
            rp["queued"],
            rp["done"]
        );
    }
}
