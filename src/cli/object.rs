//! `blocknode object ...`: objects of any size, streamed from a file or stdin and back,
//! never held whole in memory; a progress bar with its rate on a terminal.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use super::args::{hash_arg, query_escape, ref_arg};
use super::client::{api_error_line, Client};

/// `blocknode object ...`.
#[derive(Subcommand, Debug)]
pub enum ObjectCommand {
    /// Store a file (or stdin, with `-`) of any size as an object; prints its id, and
    /// on stderr how much of it was new to the cluster.
    Put {
        /// The file, or `-` for stdin.
        file: String,
        /// The object's ref (it keeps the object from garbage collection).
        #[arg(long = "ref")]
        ref_id: String,
        /// Cut the file here and send only the chunks the cluster lacks (a second
        /// version of a file sends about what changed).
        #[arg(long)]
        dedup_on_client: bool,
    },
    /// Read an object (to stdout, or -o FILE; `-o -` is stdout too).
    Get {
        id: String,
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Size, chunks, manifest tree and how replicated its blocks are.
    Info { id: String },
    /// Add or drop a ref of an object.
    #[command(subcommand)]
    Ref(ObjectRefCommand),
}

/// `blocknode object ref ...`.
#[derive(Subcommand, Debug)]
pub enum ObjectRefCommand {
    Add { id: String, r#ref: String },
    Drop { id: String, r#ref: String },
}

/// An agent without the global timeout of the other commands: an object takes as long
/// as its bytes take; a connection that stops moving still fails.
fn streaming_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_per_read(Some(Duration::from_secs(300)))
        .timeout_per_write(Some(Duration::from_secs(300)))
        .build()
        .into()
}

/// A progress bar on stderr when it is a terminal, else a hidden one.
fn progress(total: Option<u64>) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::no_length(),
    };
    let template = if total.is_some() {
        "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}"
    } else {
        "{spinner} {bytes} {binary_bytes_per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// Run one `object` command.
pub(super) fn run(c: &Client, cmd: ObjectCommand) -> anyhow::Result<()> {
    match cmd {
        ObjectCommand::Put {
            file,
            ref_id,
            dedup_on_client,
        } => put(c, &file, &ref_id, dedup_on_client),
        ObjectCommand::Get { id, output } => get(c, &id, output.as_deref()),
        ObjectCommand::Info { id } => {
            let id = hash_arg(&id)?;
            let v = c.json("GET", &format!("/v1/objects/{id}/info"), None)?;
            println!("object {}", v["id"].as_str().unwrap_or("?"));
            println!("size {} bytes, {} chunks", v["size"], v["chunks"]);
            println!(
                "manifest depth {}, {} blocks under the root; chunker min/avg/max {}",
                v["depth"],
                v["blocks"],
                v["chunker"]
                    .as_array()
                    .map(|a| a.iter().map(Value::to_string).collect::<Vec<_>>().join("/"))
                    .unwrap_or_default()
            );
            println!(
                "holders: {} blocks on every holder, {} on some, {} on none",
                v["fully_replicated"], v["under_replicated"], v["missing"]
            );
            Ok(())
        }
        ObjectCommand::Ref(ObjectRefCommand::Add { id, r#ref }) => {
            let (id, r#ref) = (hash_arg(&id)?, ref_arg(&r#ref)?);
            c.json("PUT", &format!("/v1/objects/{id}/refs/{ref}"), None)?;
            Ok(())
        }
        ObjectCommand::Ref(ObjectRefCommand::Drop { id, r#ref }) => {
            let (id, r#ref) = (hash_arg(&id)?, ref_arg(&r#ref)?);
            c.json("DELETE", &format!("/v1/objects/{id}/refs/{ref}"), None)?;
            Ok(())
        }
    }
}

fn put(c: &Client, file: &str, ref_id: &str, dedup_on_client: bool) -> anyhow::Result<()> {
    let r = ref_arg(ref_id)?;
    let (reader, total): (Box<dyn Read>, Option<u64>) = if file == "-" {
        (Box::new(std::io::stdin().lock()), None)
    } else {
        let f = std::fs::File::open(file).with_context(|| format!("opening {file}"))?;
        let len = f.metadata().ok().map(|m| m.len());
        (Box::new(f), len)
    };
    let bar = progress(total);
    if dedup_on_client {
        let done = super::object_dedup::put_dedup(c, reader, &r, &bar);
        bar.finish_and_clear();
        let d = done?;
        println!("{}", d.id);
        eprintln!(
            "{} bytes in {} chunks; new: {} chunks; sent {} bytes of chunks ({:.1} % of the object)",
            d.size,
            d.chunks,
            d.new_chunks,
            d.sent,
            if d.size == 0 { 0.0 } else { 100.0 * d.sent as f64 / d.size as f64 }
        );
        return Ok(());
    }
    let mut reader = bar.wrap_read(reader);
    let url = format!("{}/v1/objects?ref={}", c.base, query_escape(r.as_str()));
    let res = streaming_agent()
        .put(&url)
        .header("Authorization", &format!("Bearer {}", c.token))
        .header("Content-Type", "application/octet-stream")
        .send(ureq::SendBody::from_reader(&mut reader));
    bar.finish_and_clear();
    let mut res = res.with_context(|| format!("sending {file} to {}", c.base))?;
    let status = res.status().as_u16();
    let body = res
        .body_mut()
        .read_to_vec()
        .context("reading the answer of the object put")?;
    if status >= 400 {
        bail!("{}", api_error_line(status, &body));
    }
    let v: Value = serde_json::from_slice(&body)
        .context("the API answered the object put with something that is not JSON")?;
    let Some(id) = v["id"].as_str() else {
        bail!("the API answered the object put without an id: {v}");
    };
    println!("{id}");
    let size = v["size"].as_u64().unwrap_or(0);
    let new_bytes = v["new_bytes"].as_u64().unwrap_or(0);
    eprintln!(
        "{size} bytes in {} chunks; new: {} chunks, {new_bytes} bytes ({:.1} % of the object)",
        v["chunks"],
        v["new_chunks"],
        if size == 0 {
            0.0
        } else {
            100.0 * new_bytes as f64 / size as f64
        }
    );
    Ok(())
}

fn get(c: &Client, id: &str, output: Option<&Path>) -> anyhow::Result<()> {
    let id = hash_arg(id)?;
    let url = format!("{}/v1/objects/{id}", c.base);
    let res = streaming_agent()
        .get(&url)
        .header("Authorization", &format!("Bearer {}", c.token))
        .call()
        .with_context(|| format!("cannot reach {}", c.base))?;
    let status = res.status().as_u16();
    if status >= 400 {
        let body = res
            .into_body()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .unwrap_or_default();
        bail!("{}", api_error_line(status, &body));
    }
    let total = res
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let bar = progress(total);
    let mut reader = bar.wrap_read(res.into_body().into_reader());
    let to_stdout = output.is_none_or(|p| p == Path::new("-"));
    let copied = if to_stdout {
        let mut out = std::io::stdout().lock();
        std::io::copy(&mut reader, &mut out).and_then(|n| out.flush().map(|_| n))
    } else {
        let path = output.unwrap_or(Path::new("-"));
        let mut f =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let copied = std::io::copy(&mut reader, &mut f).and_then(|n| f.sync_all().map(|_| n));
        if copied.is_err() {
            // A cut-off download leaves no file that looks whole.
            let _ = std::fs::remove_file(path);
        }
        copied
    };
    bar.finish_and_clear();
    let n = copied.with_context(|| format!("reading object {id} (the transfer was cut off)"))?;
    if let Some(t) = total {
        if n != t {
            bail!("object {id}: {n} of {t} bytes received; the transfer was cut off");
        }
    }
    Ok(())
}
