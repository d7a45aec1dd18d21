//! The client commands: each is one or two HTTP calls to a node's API through
//! [`Client`], printed by [`super::output`] (and [`super::layout`] for `layout ...`).

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

use super::args::{hash_arg, query_escape, ref_arg};
use super::client::Client;
use super::output::{block_info_text, next_try_text, print_status};
use super::{BlockCommand, Command, RefCommand, TokenCommand, WorkerCommand};

/// Run one client command.
pub fn run(c: &Client, cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Put {
            file,
            ref_id,
            unreferenced: _,
        } => {
            let ref_id = ref_id.as_deref().map(ref_arg).transpose()?;
            let mut data = Vec::new();
            std::fs::File::open(&file)
                .and_then(|mut f| f.read_to_end(&mut data))
                .with_context(|| format!("reading {}", file.display()))?;
            let path = match ref_id {
                Some(r) => format!("/v1/blocks?ref={}", query_escape(r.as_str())),
                // clap lets a put without a ref through only with --unreferenced.
                None => "/v1/blocks?unreferenced=true".into(),
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
            println!("ref {ref} of block {hash} added");
        }
        Command::Ref(RefCommand::Drop { hash, r#ref }) => {
            let (hash, r#ref) = (hash_arg(&hash)?, ref_arg(&r#ref)?);
            c.call(
                "DELETE",
                &format!("/v1/blocks/{hash}/refs/{ref}"),
                None,
                false,
            )?;
            println!("ref {ref} of block {hash} dropped");
        }
        Command::Block(BlockCommand::Info { hash }) => {
            let hash = hash_arg(&hash)?.to_hex();
            let mut v = c.json("GET", &format!("/v1/blocks/{hash}/info?limit=1000"), None)?;
            // The refs come a page at a time: follow `next` to the last page.
            let mut next = v["local"]["next"].as_str().map(str::to_string);
            while let Some(after) = next {
                let path = format!(
                    "/v1/blocks/{hash}/info?limit=1000&after={}",
                    query_escape(&after)
                );
                let page = c.json("GET", &path, None)?;
                if let (Some(all), Some(more)) = (
                    v["local"]["refs"].as_array_mut(),
                    page["local"]["refs"].as_array(),
                ) {
                    all.extend(more.iter().cloned());
                }
                next = page["local"]["next"].as_str().map(str::to_string);
            }
            print!("{}", block_info_text(&v, &hash));
        }
        Command::Block(BlockCommand::ListErrors) => {
            // A page at a time: follow `next` to the last page.
            let mut errs = Vec::new();
            let mut path = "/v1/resync/errors?limit=1000".to_string();
            loop {
                let v = c.json("GET", &path, None)?;
                errs.extend(v["errors"].as_array().cloned().unwrap_or_default());
                match v["next"].as_str() {
                    Some(next) => {
                        path = format!("/v1/resync/errors?limit=1000&after={}", query_escape(next))
                    }
                    None => break,
                }
            }
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
        Command::Object(cmd) => super::object::run(c, cmd)?,
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

    #[test]
    fn an_uppercase_hash_is_accepted() {
        let h = blake2sum(b"x");
        assert_eq!(hash_arg(&h.to_hex().to_uppercase()).unwrap(), h);
    }

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
                unreferenced: false,
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
        let e = run(
            &c,
            Command::Put {
                file,
                ref_id: None,
                unreferenced: true,
            },
        )
        .unwrap_err();
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
                    hash: good[..63].to_uppercase(),
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
}
