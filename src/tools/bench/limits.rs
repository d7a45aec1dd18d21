//! What this machine can do, measured in the same run as the workloads: the disk (same
//! files, same fsync policy, same concurrency, same filesystem), the CPU (BLAKE2 on one
//! core, zstd level 1 on the chosen data) and the transport (one bare quinn stream with
//! the nodes' own TLS and transport settings).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;

use blocknode_actors::fsutil::write_atomic;
use blocknode_actors::peer::{
    bind_udp, quic_client_config, quic_endpoint_config, quic_server_config, PeerTuning,
};
use blocknode_actors::tls::{generate_ca, generate_node_cert, TlsIdentity, NODE_SAN};
use blocknode_actors::{blake2sum, DataBlock};

/// MiB/s of writing `count` files of `size` bytes with `concurrency` threads into `dir`,
/// each through the node's crash-safe write (temp file, fsync, rename, dir fsync).
pub fn disk_write(
    dir: &Path,
    count: usize,
    size: usize,
    concurrency: usize,
    fsync: bool,
) -> anyhow::Result<f64> {
    let data = super::block_bytes(size, super::DataKind::Random, 0);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..concurrency.max(1))
            .map(|_| {
                let (next, data) = (next.clone(), data.clone());
                s.spawn(move || -> anyhow::Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count {
                            return Ok(());
                        }
                        let name = blake2sum(&(i as u64).to_le_bytes()).to_hex();
                        let sub = dir.join(&name[0..2]).join(&name[2..4]);
                        std::fs::create_dir_all(&sub)?;
                        write_atomic(&sub.join(&name), &[&data], fsync)?;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("disk limit thread panicked"))??;
        }
        Ok(())
    })?;
    Ok((count * size) as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64())
}

/// Run `f` over `data` for at least `min` and return MiB/s.
fn rate(data: &[u8], min: Duration, mut f: impl FnMut(&[u8])) -> f64 {
    let start = Instant::now();
    let mut bytes = 0usize;
    while start.elapsed() < min || bytes == 0 {
        f(data);
        bytes += data.len();
    }
    bytes as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64()
}

/// BLAKE2 (blocknode's `blake2sum`) MiB/s on one core.
pub fn blake2_one_core(data: &[u8]) -> f64 {
    rate(data, Duration::from_millis(700), |d| {
        std::hint::black_box(blake2sum(d));
    })
}

/// zstd level 1 MiB/s on one core for `data`, as the node compresses (kept only if smaller).
pub fn zstd_one_core(data: &[u8]) -> f64 {
    let b = Bytes::copy_from_slice(data);
    rate(data, Duration::from_millis(700), |_| {
        std::hint::black_box(DataBlock::from_buffer(b.clone(), Some(1)));
    })
}

/// Run `f` with a connected pair of quinn connections (server side, client side)
/// between two endpoints on loopback, with the nodes' mutual TLS and transport settings,
/// on a two-worker runtime; bounded to 120 s.
pub fn with_quinn_pair<T, F, Fut>(f: F) -> anyhow::Result<T>
where
    F: FnOnce(quinn::Connection, quinn::Connection) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let d = tempfile::tempdir()?;
    generate_ca(&d.path().join("ca"))?;
    let a_id = generate_node_cert(&d.path().join("ca"), "a", &d.path().join("a"))?;
    let b_id = generate_node_cert(&d.path().join("ca"), "b", &d.path().join("b"))?;
    let load = |n: &str| {
        let p = d.path().join(n);
        TlsIdentity::load(&p.join("ca.crt"), &p.join("node.crt"), &p.join("node.key"))
    };
    let (a, b) = (load("a")?, load("b")?);
    // Both endpoints on loopback, as every node of a local bench cluster: the same
    // transport settings the nodes pick for themselves.
    let tuning = PeerTuning::for_members(["127.0.0.1:1".parse()?]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let measured = async move {
        let server_cfg = quic_server_config(&b, [a_id], &tuning)?;
        let client_cfg = quic_client_config(&a, b_id, &tuning)?;
        let runtime = Arc::new(quinn::TokioRuntime);
        let s_sock = bind_udp("127.0.0.1:0".parse()?, &tuning)?;
        let s_addr = s_sock.local_addr()?;
        let server = quinn::Endpoint::new(
            quic_endpoint_config(&tuning),
            Some(server_cfg),
            s_sock,
            runtime.clone(),
        )?;
        let client = quinn::Endpoint::new(
            quic_endpoint_config(&tuning),
            None,
            bind_udp("127.0.0.1:0".parse()?, &tuning)?,
            runtime,
        )?;
        let accepted = tokio::spawn(async move {
            let conn = server.accept().await.context("no connection")?.await?;
            anyhow::Ok((server, conn))
        });
        let conn = client.connect_with(client_cfg, s_addr, NODE_SAN)?.await?;
        let (_server, server_conn) = accepted.await??;
        let out = f(server_conn, conn).await;
        client.close(0u32.into(), b"done");
        out
    };
    rt.block_on(async move { tokio::time::timeout(Duration::from_secs(120), measured).await })
        .map_err(|_| anyhow::anyhow!("the quinn measurement did not finish within 120 s"))?
}

/// MiB/s of `total` bytes over one bare quinn stream between two endpoints on loopback,
/// with the nodes' mutual TLS and transport settings.
pub fn quinn_stream(total: usize) -> anyhow::Result<f64> {
    with_quinn_pair(move |server, conn| async move {
        let recv = tokio::spawn(async move {
            // Bidirectional: the nodes' transport settings allow no unidirectional streams.
            let (_send, mut r) = server.accept_bi().await?;
            let mut n = 0usize;
            while let Some(chunk) = r.read_chunk(1 << 20, true).await? {
                n += chunk.bytes.len();
            }
            anyhow::Ok((n, Instant::now()))
        });
        let chunk = Bytes::from(super::make_data(1 << 20, super::DataKind::Random, 1));
        let start = Instant::now();
        let (mut s, _recv) = conn.open_bi().await?;
        let mut sent = 0;
        while sent < total {
            s.write_chunk(chunk.clone()).await?;
            sent += chunk.len();
        }
        s.finish()?;
        let (got, end) = recv.await??;
        anyhow::ensure!(
            got == sent,
            "quinn limit: sent {sent} bytes, received {got}"
        );
        Ok(got as f64 / (1 << 20) as f64 / (end - start).as_secs_f64())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_measure_something_on_tiny_inputs() {
        let d = tempfile::tempdir().unwrap();
        assert!(disk_write(d.path(), 4, 4096, 2, true).unwrap() > 0.0);
        let data = vec![7u8; 4096];
        assert!(blake2_one_core(&data) > 0.0);
        assert!(zstd_one_core(&data) > 0.0);
        assert!(quinn_stream(2 << 20).unwrap() > 0.0);
    }
}
