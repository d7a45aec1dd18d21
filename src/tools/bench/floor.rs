//! The CPU floor of a workload: what the parts a request cannot avoid in this design cost
//! on this machine, measured in the same run as the workload, in CPU seconds per GiB.
//!
//! On a box where every replica shares two cores, every figure is CPU-bound, so the
//! figure that says how good the node is is its CPU per byte against this floor, not its
//! MiB/s. The parts, each timed with the CPU clock of the threads doing it (user and
//! system time), over blocks of the workload's size:
//! - `blake2`: one BLAKE2 pass (the name is a hash: every copy is hashed once where it is
//!   written, and bytes that arrive from another node are verified where they arrive);
//! - `checksum`: one pass of the checksum stored with each block file (the storage
//!   actor's seeded XXH3): computed once per copy written, checked on every local read
//!   instead of BLAKE2 (docs/operations.md, "On-disk format");
//! - `quic`: one bare quinn transfer with the nodes' TLS and transport settings, one
//!   stream per block, sender and receiver both counted (both are nodes);
//! - `file_write`: one crash-safe file write per copy (the node's own `write_atomic`,
//!   same fsync policy, from the same kind of buffer: `O_DIRECT` where the node's is,
//!   with the checksum attribute set as the node sets it), `file_read`: reading one
//!   back, its attribute with it;
//! - `http_receive` / `http_send`: the node's side of moving the body over loopback TCP
//!   with HTTP/1.1 framing (the client's side is not server CPU).
//!
//! [`Floor::put`] and [`Floor::get`] combine them for a replication factor: an RF3 PUT is
//! one HTTP receive, three BLAKE2 passes (the coordinator names the block, each other
//! holder verifies what came over the network), three checksum passes, two QUIC
//! transfers and three file writes. A local GET is one file read, one checksum pass and
//! one HTTP send: no BLAKE2 since reads trust the stored checksum.
//! zstd is left out on purpose: trying to compress is a choice, not a necessity.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use serde_json::{json, Value};

use blocknode_actors::blake2sum;
use blocknode_actors::fsutil::write_atomic_with;
use blocknode_actors::storage::checksum;

/// CPU time of the calling thread (user + system).
fn thread_cpu() -> Duration {
    cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time of every thread of this process (user + system).
fn process_cpu() -> Duration {
    cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn cpu_clock(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed
    // `ts`; both clocks exist on every Linux since 2.6.12.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// CPU seconds per GiB of `bytes` processed with `cpu` of CPU time.
fn per_gib(cpu: Duration, bytes: u64) -> f64 {
    cpu.as_secs_f64() / (bytes.max(1) as f64 / (1u64 << 30) as f64)
}

/// The measured parts, CPU s/GiB each, at one block size.
#[derive(Debug, Clone, Copy)]
pub struct Parts {
    pub block_size: usize,
    pub blake2: f64,
    pub checksum: f64,
    pub quic: f64,
    pub file_write: f64,
    pub file_read: f64,
    pub http_receive: f64,
    pub http_send: f64,
}

/// The floor of each workload, from the [`Parts`].
#[derive(Debug, Clone, Copy)]
pub struct Floor {
    pub parts: Parts,
    pub replication: usize,
    pub nodes: usize,
}

impl Floor {
    /// CPU s/GiB an RF-`replication` PUT cannot avoid: one HTTP receive, one BLAKE2
    /// pass, one checksum pass and one file write per copy, one QUIC transfer per
    /// remote copy.
    pub fn put(&self) -> f64 {
        let rf = self.replication.max(1) as f64;
        let p = &self.parts;
        p.http_receive + rf * (p.blake2 + p.checksum + p.file_write) + (rf - 1.0) * p.quic
    }

    /// CPU s/GiB a GET cannot avoid: read one copy and check its stored checksum, send
    /// the body; when the node asked holds no copy (a fraction `1 − rf/nodes` of
    /// requests spread over every node), one QUIC transfer and a BLAKE2 verification
    /// where the bytes arrive.
    pub fn get(&self) -> f64 {
        let p = &self.parts;
        let remote = 1.0 - self.replication.max(1) as f64 / self.nodes.max(1) as f64;
        p.file_read + p.checksum + p.http_send + remote.max(0.0) * (p.quic + p.blake2)
    }

    /// The floor of a workload by name (`mixed` is half puts, half gets).
    pub fn of(&self, workload: &str) -> Option<f64> {
        match workload {
            "put" | "obj-put" => Some(self.put()),
            "get" | "obj-get" => Some(self.get()),
            "mixed" => Some((self.put() + self.get()) / 2.0),
            _ => None,
        }
    }

    /// CPU ms per operation of a floor given in s/GiB, at this block size.
    pub fn ms_per_op(&self, s_per_gib: f64) -> f64 {
        s_per_gib * self.parts.block_size as f64 / (1u64 << 30) as f64 * 1000.0
    }

    pub fn json(&self) -> Value {
        let p = &self.parts;
        json!({
            "block_size": p.block_size,
            "parts_cpu_s_per_gib": {
                "blake2": p.blake2, "checksum": p.checksum, "quic": p.quic, "file_write": p.file_write,
                "file_read": p.file_read, "http_receive": p.http_receive, "http_send": p.http_send,
            },
            "put_cpu_s_per_gib": self.put(),
            "get_cpu_s_per_gib": self.get(),
        })
    }
}

/// How many blocks of `size` each part is measured over: about 128 MiB, at least 64
/// blocks (so per-block costs show at 4 KiB) and at most 2,048 (file creation at 4 KiB
/// with fsync runs near 1,500 files/s here).
fn blocks_for(size: usize) -> usize {
    ((128usize << 20) / size.max(1)).clamp(64, 2048)
}

/// Measure every part at block size `size` with `concurrency` writers, files under `dir`.
pub fn measure(dir: &Path, size: usize, concurrency: usize, fsync: bool) -> anyhow::Result<Parts> {
    measure_over(dir, size, blocks_for(size), concurrency, fsync)
}

fn measure_over(
    dir: &Path,
    size: usize,
    n: usize,
    concurrency: usize,
    fsync: bool,
) -> anyhow::Result<Parts> {
    let data = super::block_bytes(size, super::DataKind::Random, 7);
    Ok(Parts {
        block_size: size,
        blake2: blake2(&data, n),
        checksum: checksum_pass(&data, n),
        quic: quic(size, n, concurrency)?,
        file_write: file_write(dir, &data, n, concurrency, fsync)?,
        file_read: file_read(dir, n, size, concurrency)?,
        http_receive: http(&data, n, Direction::Receive)?,
        http_send: http(&data, n, Direction::Send)?,
    })
}

fn blake2(data: &[u8], n: usize) -> f64 {
    let t0 = thread_cpu();
    for _ in 0..n {
        std::hint::black_box(blake2sum(data));
    }
    per_gib(thread_cpu() - t0, (n * data.len()) as u64)
}

fn checksum_pass(data: &[u8], n: usize) -> f64 {
    let name = blake2sum(b"floor");
    let t0 = thread_cpu();
    for _ in 0..n {
        std::hint::black_box(checksum::value(&name, false, data));
    }
    per_gib(thread_cpu() - t0, (n * data.len()) as u64)
}

fn block_path(dir: &Path, i: usize) -> std::path::PathBuf {
    let name = blake2sum(&(i as u64).to_le_bytes()).to_hex();
    dir.join(&name[0..2]).join(&name[2..4]).join(name)
}

/// `n` files written by `concurrency` threads through the node's crash-safe write.
fn file_write(
    dir: &Path,
    data: &Bytes,
    n: usize,
    concurrency: usize,
    fsync: bool,
) -> anyhow::Result<f64> {
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = process_cpu();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..concurrency.max(1))
            .map(|_| {
                let next = next.clone();
                s.spawn(move || -> anyhow::Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return Ok(());
                        }
                        let path = block_path(dir, i);
                        if let Some(parent) = path.parent() {
                            std::fs::create_dir_all(parent)?;
                        }
                        // The hashing pass is the `checksum` part; this is the attribute.
                        let value = [checksum::FORMAT_XXH3_64; checksum::VALUE_LEN];
                        write_atomic_with(&path, &[data], fsync, |f| checksum::set(f, &value))?;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("file write floor thread panicked"))??;
        }
        Ok(())
    })?;
    Ok(per_gib(process_cpu() - t0, (n * data.len()) as u64))
}

/// The `n` files [`file_write`] made, read back by `concurrency` threads.
fn file_read(dir: &Path, n: usize, size: usize, concurrency: usize) -> anyhow::Result<f64> {
    let next = AtomicUsize::new(0);
    let t0 = process_cpu();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..concurrency.max(1))
            .map(|_| {
                s.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return Ok(());
                        }
                        let mut f = std::fs::File::open(block_path(dir, i))?;
                        let mut got = Vec::with_capacity(size);
                        f.read_to_end(&mut got)?;
                        anyhow::ensure!(got.len() == size, "floor file {i} has the wrong size");
                        std::hint::black_box(checksum::get(&f));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("file read floor thread panicked"))??;
        }
        Ok(())
    })?;
    Ok(per_gib(process_cpu() - t0, (n * size) as u64))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// The server reads a PUT body (`Content-Length` framing) and answers a short line.
    Receive,
    /// The server answers each short request with the body.
    Send,
}

/// `n` bodies over one keep-alive loopback TCP connection; only the server thread's CPU
/// is counted.
fn http(data: &Bytes, n: usize, dir: Direction) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding the HTTP floor socket")?;
    let addr = listener.local_addr()?;
    let size = data.len();
    let server_data = data.clone();
    let server = std::thread::spawn(move || -> anyhow::Result<Duration> {
        let (stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let mut w = stream.try_clone()?;
        let mut r = BufReader::with_capacity(64 << 10, stream);
        let mut body = vec![0u8; size];
        let mut line = String::new();
        let t0 = thread_cpu();
        for _ in 0..n {
            // Request head: read lines up to the blank one.
            loop {
                line.clear();
                if r.read_line(&mut line)? == 0 {
                    anyhow::bail!("HTTP floor client closed early");
                }
                if line == "\r\n" {
                    break;
                }
            }
            match dir {
                Direction::Receive => {
                    r.read_exact(&mut body)?;
                    w.write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n")?;
                }
                Direction::Send => {
                    w.write_all(
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n").as_bytes(),
                    )?;
                    w.write_all(&server_data)?;
                }
            }
        }
        Ok(thread_cpu() - t0)
    });
    let mut c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    let mut cr = BufReader::with_capacity(64 << 10, c.try_clone()?);
    let mut buf = vec![0u8; size];
    let mut line = String::new();
    for _ in 0..n {
        match dir {
            Direction::Receive => {
                c.write_all(
                    format!("PUT /v1/blocks HTTP/1.1\r\ncontent-length: {size}\r\n\r\n").as_bytes(),
                )?;
                c.write_all(data)?;
            }
            Direction::Send => c.write_all(b"GET /v1/blocks/x HTTP/1.1\r\n\r\n")?,
        }
        let mut len = 0usize;
        loop {
            line.clear();
            if cr.read_line(&mut line)? == 0 {
                anyhow::bail!("HTTP floor server closed early");
            }
            if let Some(v) = line.strip_prefix("content-length: ") {
                len = v.trim().parse().unwrap_or(0);
            }
            if line == "\r\n" {
                break;
            }
        }
        cr.read_exact(&mut buf[..len.min(size)])?;
    }
    let cpu = server
        .join()
        .map_err(|_| anyhow::anyhow!("HTTP floor server thread panicked"))??;
    Ok(per_gib(cpu, (n * size) as u64))
}

/// `n` blocks of `size`, one stream each, `in_flight` at a time, between two quinn
/// endpoints with the nodes' TLS and transport settings; the whole process's CPU
/// (both endpoints are nodes) per GiB.
fn quic(size: usize, n: usize, in_flight: usize) -> anyhow::Result<f64> {
    let chunk = Bytes::from(super::make_data(size, super::DataKind::Random, 3));
    super::limits::with_quinn_pair(move |incoming, conn| async move {
        let recv = tokio::spawn(async move {
            let mut tasks = Vec::new();
            for _ in 0..n {
                let (mut send, mut recv) = incoming.accept_bi().await?;
                tasks.push(tokio::spawn(async move {
                    let got = recv.read_to_end(64 << 20).await?;
                    send.write_all(b"ok").await?;
                    send.finish()?;
                    anyhow::Ok(got.len())
                }));
            }
            let mut total = 0;
            for t in tasks {
                total += t.await??;
            }
            // Handed back so the connection outlives the client's last reads (dropping
            // the last handle closes it, and unsent replies with it).
            anyhow::Ok((total, incoming))
        });
        let t0 = process_cpu();
        let next = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..in_flight.clamp(1, 64))
            .map(|_| {
                let (conn, chunk, next) = (conn.clone(), chunk.clone(), next.clone());
                tokio::spawn(async move {
                    while next.fetch_add(1, Ordering::Relaxed) < n {
                        let (mut s, mut r) = conn.open_bi().await?;
                        s.write_chunk(chunk.clone()).await?;
                        s.finish()?;
                        r.read_to_end(16).await?;
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        for w in workers {
            w.await??;
        }
        let (got, _incoming) = recv.await??;
        anyhow::ensure!(
            got == n * size,
            "QUIC floor: received {got} of {} bytes",
            n * size
        );
        Ok(per_gib(process_cpu() - t0, (n * size) as u64))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_combine_the_parts_per_replication_factor() {
        let parts = Parts {
            block_size: 1 << 20,
            blake2: 1.0,
            checksum: 0.0625,
            quic: 2.0,
            file_write: 0.5,
            file_read: 0.25,
            http_receive: 0.125,
            http_send: 0.375,
        };
        let rf3 = Floor {
            parts,
            replication: 3,
            nodes: 3,
        };
        assert_eq!(rf3.put(), 0.125 + 3.0 * 1.5625 + 2.0 * 2.0);
        assert_eq!(
            rf3.get(),
            0.25 + 0.0625 + 0.375,
            "every node holds a copy: a local read checks the stored checksum, not BLAKE2"
        );
        let rf1 = Floor {
            parts,
            replication: 1,
            nodes: 1,
        };
        assert_eq!(rf1.put(), 0.125 + 1.5625, "no QUIC hop at RF1");
        let spread = Floor {
            parts,
            replication: 3,
            nodes: 4,
        };
        assert_eq!(
            spread.get(),
            0.6875 + 0.25 * 3.0,
            "a quarter of GETs go one hop, verified by BLAKE2 where they arrive"
        );
        assert_eq!(rf3.ms_per_op(1024.0), 1000.0);
        assert_eq!(rf3.of("mixed"), Some((rf3.put() + rf3.get()) / 2.0));
        assert_eq!(rf3.of("resync"), None);
    }

    #[test]
    fn every_part_measures_some_cpu() {
        let d = tempfile::tempdir().unwrap();
        let p = measure_over(d.path(), 64 << 10, 32, 2, false).unwrap();
        for (name, v) in [
            ("blake2", p.blake2),
            ("checksum", p.checksum),
            ("quic", p.quic),
            ("file_write", p.file_write),
            ("file_read", p.file_read),
            ("http_receive", p.http_receive),
            ("http_send", p.http_send),
        ] {
            assert!(v.is_finite() && v > 0.0, "{name} floor is {v}");
        }
    }
}
