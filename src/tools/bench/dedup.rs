//! The `dedup` workload: a generated tree of files stored as one tar-like stream (each
//! file a header line `FILE <name> <len>` then its bytes), then the same tree with
//! edits (1 % of the files changed in place, 0.5 % inserted, 0.5 % removed) stored
//! again, twice: through `PUT /v1/objects` (the node cuts and deduplicates; the whole
//! stream crosses the wire) and, after a second round of edits, with the CLI's
//! `--dedup-on-client` path (only the chunks the cluster lacks are sent). Each row
//! reports the new bytes stored and the bytes sent against the bytes of the changed
//! files, and the bound `3 × changed + one average chunk per changed file` (a removed
//! file counts as a changed file of no bytes: the chunk around it changes).
//!
//! Files are generated as the stream is read (xorshift from a per-file seed), so the
//! tree is never held whole.

use std::io::Read;

use anyhow::{bail, Context};
use serde_json::Value;

use super::Target;
use crate::cli::client::Client;
use crate::cli::object_dedup::put_dedup;
use crate::objects::manifest::ChunkerParams;

/// One file of the tree.
#[derive(Clone)]
struct FileSpec {
    name: String,
    len: usize,
    seed: u64,
    /// An in-place edit: 256 bytes at this offset from another seed.
    patch: Option<(usize, u64)>,
}

impl FileSpec {
    fn bytes(&self) -> Vec<u8> {
        let mut v = xorshift(self.len, self.seed);
        if let Some((off, seed)) = self.patch {
            let p = xorshift(256, seed);
            let end = (off + p.len()).min(v.len());
            v[off..end].copy_from_slice(&p[..end - off]);
        }
        v
    }
}

fn xorshift(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// A deterministic random number in `0..n` from `(seed, i)`.
fn pick(seed: u64, i: u64, n: u64) -> u64 {
    let mut x = (seed ^ i.wrapping_mul(0xbf58_476d_1ce4_e5b9)).wrapping_add(1);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 29;
    x % n.max(1)
}

/// A tree of about `total` bytes: files of 1 KiB to 1 MiB.
fn tree(total: u64) -> Vec<FileSpec> {
    let mut files = Vec::new();
    let mut sum = 0u64;
    let mut i = 0u64;
    while sum < total {
        let len = 1024 + pick(7, i, 1 << 20) as usize;
        files.push(FileSpec {
            name: format!("dir{}/file{i}.bin", i % 16),
            len,
            seed: 1000 + i,
            patch: None,
        });
        sum += len as u64;
        i += 1;
    }
    files
}

/// The tree after one round of edits (`round` picks them); returns it, the bytes of
/// the changed and inserted files, and the number of files changed, inserted or
/// removed.
fn edit(files: &[FileSpec], round: u64) -> (Vec<FileSpec>, u64, u64) {
    let n = files.len() as u64;
    let changes = (n / 100).max(1);
    let churn = (n / 200).max(1);
    let mut out = files.to_vec();
    let (mut bytes, mut count) = (0u64, 0u64);
    for k in 0..changes {
        let i = pick(round, k, n) as usize;
        let f = &mut out[i];
        if f.patch.is_none() || f.patch.map(|p| p.1) != Some(round) {
            f.patch = Some((
                pick(round, 100 + k, f.len as u64) as usize,
                round * 7919 + k,
            ));
            bytes += f.len as u64;
            count += 1;
        }
    }
    for k in 0..churn {
        let at = pick(round, 1000 + k, out.len() as u64) as usize;
        out.remove(at);
        // A removal changes the chunk around it: a changed file with no bytes.
        count += 1;
    }
    for k in 0..churn {
        let at = pick(round, 2000 + k, out.len() as u64) as usize;
        let len = 1024 + pick(round, 3000 + k, 1 << 20) as usize;
        out.insert(
            at,
            FileSpec {
                name: format!("new{round}/file{k}.bin"),
                len,
                seed: round * 1_000_003 + k,
                patch: None,
            },
        );
        bytes += len as u64;
        count += 1;
    }
    (out, bytes, count)
}

/// The tree as one stream, generated as it is read.
struct TreeStream {
    files: Vec<FileSpec>,
    next: usize,
    buf: Vec<u8>,
    pos: usize,
}

impl TreeStream {
    fn new(files: Vec<FileSpec>) -> Self {
        TreeStream {
            files,
            next: 0,
            buf: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for TreeStream {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            let Some(f) = self.files.get(self.next) else {
                return Ok(0);
            };
            self.next += 1;
            self.buf = format!("FILE {} {}\n", f.name, f.len).into_bytes();
            self.buf.extend_from_slice(&f.bytes());
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// One row of the workload's report.
pub(super) struct DedupRow {
    pub name: &'static str,
    /// The stream's length.
    pub size: u64,
    /// Bytes of the files changed or inserted since the stored version.
    pub changed: u64,
    /// Files changed, inserted or removed.
    pub changed_files: u64,
    /// Bytes of the chunks the cluster did not have.
    pub new_bytes: u64,
    /// Bytes that crossed the wire to the cluster.
    pub sent: u64,
}

impl DedupRow {
    /// The bound the workload checks: 3 × the changed bytes plus one average chunk per changed file.
    pub fn bound(&self) -> u64 {
        3 * self.changed + self.changed_files * u64::from(ChunkerParams::DEFAULT.avg)
    }
}

/// PUT a stream through the node's chunker; returns its reply.
fn put_stream(api: &(String, String), files: Vec<FileSpec>, r: &str) -> anyhow::Result<Value> {
    let mut body = TreeStream::new(files);
    let mut res = ureq::put(&format!("{}/v1/objects?ref={r}", api.0))
        .header("Authorization", format!("Bearer {}", api.1))
        .send(ureq::SendBody::from_reader(&mut body))?;
    let status = res.status().as_u16();
    let v: Value = res.body_mut().read_json().unwrap_or_default();
    if status != 201 {
        bail!("object PUT answered {status}: {v}");
    }
    Ok(v)
}

/// Run the workload on a tree of about `total` bytes.
pub(super) fn dedup_workload(target: &Target, total: u64) -> anyhow::Result<Vec<DedupRow>> {
    let api = target.apis.first().context("no node to talk to")?;
    let base = tree(total);
    let size_of = |fs: &[FileSpec]| -> u64 {
        fs.iter()
            .map(|f| (format!("FILE {} {}\n", f.name, f.len).len() + f.len) as u64)
            .sum()
    };
    let first = put_stream(api, base.clone(), "bench-dedup-0")?;
    let mut rows = vec![DedupRow {
        name: "first",
        size: size_of(&base),
        changed: size_of(&base),
        changed_files: base.len() as u64,
        new_bytes: first["new_bytes"].as_u64().unwrap_or(0),
        sent: size_of(&base),
    }];
    let (v1, changed1, files1) = edit(&base, 1);
    let second = put_stream(api, v1.clone(), "bench-dedup-1")?;
    rows.push(DedupRow {
        name: "edit-node",
        size: size_of(&v1),
        changed: changed1,
        changed_files: files1,
        new_bytes: second["new_bytes"].as_u64().unwrap_or(0),
        sent: size_of(&v1),
    });
    let (v2, changed2, files2) = edit(&v1, 2);
    let client = Client::new(Some(api.0.clone()), Some(api.1.clone()))?;
    let r = "bench-dedup-2".parse().context("ref name")?;
    let rep = put_dedup(
        &client,
        TreeStream::new(v2.clone()),
        &r,
        &indicatif::ProgressBar::hidden(),
    )?;
    rows.push(DedupRow {
        name: "edit-client",
        size: size_of(&v2),
        changed: changed2,
        changed_files: files2,
        new_bytes: rep.sent,
        sent: rep.sent,
    });
    Ok(rows)
}

/// Print the rows.
pub(super) fn print_rows(rows: &[DedupRow]) {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!("\ndedup workload (tar-like stream of generated files; MiB):");
    println!(
        "{:<12} {:>9} {:>9} {:>6} {:>10} {:>9} {:>9}  within",
        "row", "stream", "changed", "files", "new bytes", "sent", "bound"
    );
    for r in rows {
        let within = if r.name == "first" {
            "-"
        } else if r.new_bytes <= r.bound() && (r.name != "edit-client" || r.sent <= r.bound()) {
            "yes"
        } else {
            "NO"
        };
        println!(
            "{:<12} {:>9.1} {:>9.1} {:>6} {:>10.1} {:>9.1} {:>9.1}  {within}",
            r.name,
            mib(r.size),
            mib(r.changed),
            r.changed_files,
            mib(r.new_bytes),
            mib(r.sent),
            mib(r.bound())
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_touch_about_two_percent_of_the_tree_and_the_stream_is_its_length() {
        let base = tree(64 << 20);
        let (v1, changed, files) = edit(&base, 1);
        assert!(files >= 2 && changed > 0 && changed < 64 << 20);
        assert_ne!(base.len(), 0);
        let mut n = 0u64;
        let mut s = TreeStream::new(v1.clone());
        n += std::io::copy(&mut s, &mut std::io::sink()).expect("reads");
        let want: u64 = v1
            .iter()
            .map(|f| (format!("FILE {} {}\n", f.name, f.len).len() + f.len) as u64)
            .sum();
        assert_eq!(n, want);
    }
}
