//! Running a node: read the config, prepare first-start files (certificates, admin
//! token), start the actors, hand each the addresses it needs, serve the HTTP API, and
//! stop cleanly on SIGINT/SIGTERM. Reading [`start`] shows the whole node.

pub mod bootstrap;
pub mod config;
pub mod join;
pub mod preflight;
pub mod store_watch;

pub use bootstrap::{ensure_default_certs, ensure_token};

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use actix_web::{middleware, web, App, HttpServer};
use anyhow::Context as _;

use blocknode_actors::antientropy::{
    AntiEntropyActor, AntiEntropyConfig, AntiEntropyLinks, FIRST_ROUND_AFTER,
};
use blocknode_actors::budget::RamBudget;
use blocknode_actors::frame::{FrameLimits, NodeStats};
use blocknode_actors::layout::{Layout, LayoutActor, LayoutConfig, LayoutMember, SubscribeLayout};
use blocknode_actors::peer::{
    PeerActor, PeerAddr, PeerConfig, PeerTuning, SetLocalStats, Shutdown,
};
use blocknode_actors::refcount::{RefcountActor, RefcountConfig};
use blocknode_actors::resync::{ResyncActor, ResyncConfig};
use blocknode_actors::storage::marker::DirMarkers;
use blocknode_actors::storage::{
    SetDiskFailureListener, SetQuarantineListener, StorageActor, StorageConfig,
};
use blocknode_actors::tls::TlsIdentity;
use blocknode_actors::tokens::{token_peers, TokenActor, TokenConfig};
use blocknode_actors::NodeId;

use crate::coordinator::{Coordinator, CoordinatorConfig};
use crate::http;
use crate::metrics::{Metrics, RpcLabels};
use crate::node::config::{Config, Member};
use crate::node::store_watch::StoreWatch;
use crate::replica::RpcDispatcher;

/// Run a node until SIGINT/SIGTERM. `embedded` prepares the default's files.
pub fn run(cfg: Config, embedded: bool) -> anyhow::Result<()> {
    // Before anything is written: the dir lock, writable data dirs, free addresses.
    let checked = preflight::check(&cfg)?;
    if embedded {
        ensure_default_certs(&cfg)?;
    }
    let identity = TlsIdentity::load(&cfg.ca_cert, &cfg.node_cert, &cfg.node_key)
        .context("loading the node's TLS identity")?;
    let token = ensure_token(&cfg.admin_token_file)?;
    let system = actix_rt::System::new();
    let res = system.block_on(start(cfg, identity, token, checked.http));
    if res.is_err() {
        // A start that failed half-way leaves actors and a QUIC endpoint on the runtime;
        // dropping it would run their teardown outside it (panics that bury the one
        // line). The process is about to exit: leave them to it.
        std::mem::forget(system);
    }
    drop(checked.lock);
    res
}

/// The member list in force: the configured one, or this node alone.
fn members(cfg: &Config, self_id: NodeId) -> anyhow::Result<Vec<(NodeId, Member)>> {
    if cfg.members.is_empty() {
        return Ok(vec![(
            self_id,
            Member {
                id: self_id.to_hex(),
                addr: cfg.quic_listen,
                zone: cfg.zone.clone(),
                capacity: 1,
            },
        )]);
    }
    let ids = cfg.member_ids()?;
    anyhow::ensure!(
        ids.contains(&self_id),
        "this node ({self_id}) is not in the members list of its config"
    );
    Ok(ids.into_iter().zip(cfg.members.iter().cloned()).collect())
}

async fn start(
    cfg: Config,
    identity: TlsIdentity,
    token: String,
    http_listener: std::net::TcpListener,
) -> anyhow::Result<()> {
    let self_id = identity.node_id();
    // `[[members]]` is layout version 1; a joining node starts with no layout and waits
    // for a member to hand over one that names it.
    let initial = if cfg.joins() {
        None
    } else {
        let members = members(&cfg, self_id)?;
        anyhow::ensure!(
            cfg.replication_factor <= members.len(),
            "replication_factor {} is larger than the member list ({})",
            cfg.replication_factor,
            members.len()
        );
        let members = members
            .into_iter()
            .map(|(id, m)| LayoutMember {
                id,
                addr: m.addr,
                zone: m.zone,
                capacity: m.capacity as u64,
            })
            .collect();
        Some(Layout::initial(members, cfg.replication_factor).context("the configured members")?)
    };

    // A node whose metadata store existed has run before: an empty data dir without its
    // marker is then a disk that is not mounted, not a new one (storage/marker.rs).
    // The lock file taken before start (`preflight.rs`) is not the store.
    let started_before = std::fs::read_dir(&cfg.metadata_dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name() != std::ffi::OsStr::new(preflight::LOCK_FILE))
    });
    std::fs::create_dir_all(&cfg.metadata_dir)
        .with_context(|| format!("creating metadata dir {}", cfg.metadata_dir.display()))?;
    let db = fjall::Database::builder(&cfg.metadata_dir)
        .open()
        .with_context(|| {
            format!(
                "opening the metadata store in {}",
                cfg.metadata_dir.display()
            )
        })?;
    // The layout actor is created first (started once the peers exist) so every actor
    // below can be given the layout it starts with.
    let layout_ctx = Context::<LayoutActor>::new();
    let layout_actor = LayoutActor::new(db.clone(), LayoutConfig::new(self_id, initial))
        .context("loading the cluster layout")?;
    let layout_watch = layout_actor.watch();
    let start_layout = layout_watch.borrow().clone();
    let placement = start_layout.placement.clone();
    let layout_digest = start_layout.layout.digest();
    tracing::info!(node = %self_id, zone = %cfg.zone, version = start_layout.layout.version,
        members = start_layout.layout.members.len(), layout = %layout_digest.short(), "starting blocknode");
    // A failed journal sync poisons fjall for good: the node then exits (crash-only).
    let store_watch = StoreWatch::new(cfg.metadata_dir.clone()).start();
    // The RAM budget for block bytes in flight: a client pool for work this node starts
    // and a peer pool for work peers ask of it, so admitting a peer's block never waits
    // behind a client PUT that waits for that peer (budget.rs).
    let budget = RamBudget::split(cfg.block_ram_buffer_max, cfg.max_block_size);
    tracing::info!(
        client_mib = budget.client.capacity() >> 20,
        peer_mib = budget.peer.capacity() >> 20,
        "RAM budget for blocks in flight"
    );
    let storage = StorageActor::new(StorageConfig {
        dirs: cfg.storage_dirs(),
        data_fsync: cfg.data_fsync,
        markers: Some(DirMarkers {
            node: self_id,
            started_before,
        }),
    })?
    .with_move_budget(budget.client.clone())
    .start();

    // The resync actor is created first (not started) so the refcount actor can be
    // given its address; it starts once the peer actor it needs exists.
    let resync_ctx = Context::<ResyncActor>::new();
    // A failed data dir is the resync actor's to mend: its sweep refetches what it held.
    storage.do_send(SetDiskFailureListener {
        listener: resync_ctx.address().recipient(),
    });
    // A quarantined copy is fetched again at once, not at the next sweep.
    storage.do_send(SetQuarantineListener {
        listener: resync_ctx.address().recipient(),
    });
    let refcount = RefcountActor::new(
        db.clone(),
        RefcountConfig {
            gc_delay: cfg.gc_delay,
            tombstone_retention: cfg.max_offline,
            ..Default::default()
        },
        Some(resync_ctx.address().recipient()),
    )?
    .with_store_failed(store_watch.clone().recipient())
    .start();
    let mut rcfg = ResyncConfig::new(self_id);
    rcfg.block_timeout = cfg.block_rw_timeout;
    rcfg.need_block_timeout = cfg.peer_rpc_timeout;
    rcfg.gc_delay = cfg.gc_delay;
    rcfg.backoff_base = cfg.resync_backoff_base;
    rcfg.scrub_interval = cfg.scrub_interval;
    // Like resync, the token actor needs the peer actor, which needs the dispatcher,
    // which needs the token actor's address: it is created first and started later.
    let tokens_ctx = Context::<TokenActor>::new();
    let dispatcher = RpcDispatcher::new(
        storage.clone(),
        refcount.clone(),
        resync_ctx.address(),
        rcfg.clone(),
        tokens_ctx.address(),
    )
    .with_layout(layout_watch.clone())
    // A peer's GetBlock is charged to the peer pool before it is read, waiting at most
    // block_rw_timeout (then the peer is told "busy" and asks another holder).
    .with_serve_budget(budget.peer.clone(), cfg.block_rw_timeout)
    .start();
    let metrics = Arc::new(Metrics::new());
    let observer_metrics = metrics.clone();
    let peer_members: Vec<PeerAddr> = start_layout
        .layout
        .reachable()
        .map(PeerAddr::from)
        .collect();
    // No zstd frame may decompress to more than the largest block this node accepts.
    blocknode_actors::block::set_max_plain_len(cfg.max_block_size as usize);
    let peers = PeerActor::with_tuning(
        PeerConfig {
            listen: cfg.quic_listen,
            members: peer_members.clone(),
            limits: FrameLimits {
                max_payload_len: cfg.max_block_size as usize,
                ..FrameLimits::default()
            },
            layout_digest,
        },
        PeerTuning {
            ram_budget: Some(budget.clone()),
            // Larger packets, no GSO, when every member is on loopback (peer/config.rs).
            ..PeerTuning::for_members(peer_members.iter().map(|m| m.addr))
        },
        identity,
        dispatcher.recipient(),
    )?
    .with_layout_watcher(layout_ctx.address().recipient())
    .with_layout_stamp(start_layout.layout.stamp(), cfg.bootstrap_peers.clone())
    .with_assign_command(join::assign_command(
        &self_id.to_hex(),
        &cfg.zone,
        join::DEFAULT_JOIN_CAPACITY,
        cfg.quic_listen,
    ))
    .with_observer(Arc::new(move |kind, peer, took, _ok| {
        observer_metrics
            .rpc_duration
            .get_or_create(&RpcLabels {
                message: kind.to_string(),
                peer: peer.short(),
            })
            .observe(took.as_secs_f64());
    }))
    .start();
    let resync = resync_ctx.run(
        ResyncActor::new(
            db.clone(),
            rcfg,
            storage.clone(),
            refcount.clone(),
            peers.clone().recipient(),
            placement.clone(),
        )?
        .with_store_failed(store_watch.clone().recipient())
        .with_read_budget(budget.client.clone()),
    );
    let layout = layout_ctx.run(layout_actor.with_peers(peers.clone().recipient()));
    layout.do_send(SubscribeLayout {
        to: peers.clone().recipient(),
    });
    layout.do_send(SubscribeLayout {
        to: resync.clone().recipient(),
    });
    let mut ae_cfg = AntiEntropyConfig::new(self_id);
    ae_cfg.interval = cfg.anti_entropy_interval;
    ae_cfg.first_round_after = cfg.anti_entropy_interval.min(FIRST_ROUND_AFTER);
    ae_cfg.hinted_handoff = cfg.hinted_handoff;
    ae_cfg.max_hints_per_member = cfg.max_hints_per_member;
    ae_cfg.rpc_timeout = cfg.peer_rpc_timeout;
    let anti_entropy = AntiEntropyActor::new(
        db.clone(),
        ae_cfg,
        AntiEntropyLinks {
            refcount: refcount.clone(),
            peers: peers.clone().recipient(),
            peer_status: peers.clone().recipient(),
            schedule: resync.clone().recipient(),
            placement: placement.clone(),
            read_block: Some(storage.clone().recipient()),
            read_budget: Some(budget.client.clone()),
        },
    )?
    .with_store_failed(store_watch.clone().recipient())
    .start();
    layout.do_send(SubscribeLayout {
        to: anti_entropy.clone().recipient(),
    });

    let tokens = tokens_ctx.run(
        TokenActor::new(
            db.clone(),
            TokenConfig {
                // The starting layout's members; the subscription below keeps them in
                // step with the layout (a node that joins later gets every record).
                peers: token_peers(&start_layout.layout, &self_id),
                call_timeout: cfg.peer_rpc_timeout,
                tombstone_retention: cfg.max_offline,
                ..TokenConfig::new(self_id)
            },
            Some(peers.clone().recipient()),
        )?
        .with_store_failed(store_watch.clone().recipient()),
    );
    layout.do_send(SubscribeLayout {
        to: tokens.clone().recipient(),
    });

    let coordinator = Coordinator {
        self_id,
        cfg: Arc::new(CoordinatorConfig {
            zone: cfg.zone.clone(),
            replication_factor: cfg.replication_factor,
            write_quorum: cfg.effective_write_quorum(),
            compression_level: cfg.compression_level,
            max_block_size: cfg.max_block_size as usize,
            block_rw_timeout: cfg.block_rw_timeout,
            small_rpc_timeout: cfg.peer_rpc_timeout,
            admin_token: token,
            gc_delay: cfg.gc_delay,
            dedup_test_pause: crate::coordinator::dedup_test_pause_from_env(),
        }),
        storage,
        refcount,
        resync,
        peers: peers.clone(),
        layout: layout_watch,
        layout_actor: layout,
        metrics,
        started: Instant::now(),
        budget,
        hints: cfg.hinted_handoff.then(|| anti_entropy.clone().recipient()),
        anti_entropy,
    };
    watch_client_load(&coordinator);
    push_storage_counts(&coordinator);
    let data = web::Data::new(coordinator);
    let limits = web::Data::new(http::HttpLimits {
        body_read_timeout: cfg.http_body_read_timeout,
    });
    let tokens_data = web::Data::new(tokens);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(limits.clone())
            .app_data(tokens_data.clone())
            .wrap(middleware::from_fn(http::require_token))
            .configure(http::configure)
            .default_service(web::to(http::not_found))
    })
    .workers(2)
    .keep_alive(cfg.http_keep_alive)
    .client_request_timeout(cfg.http_request_timeout)
    .shutdown_timeout(10)
    .listen(http_listener)
    .with_context(|| format!("serving the HTTP API on {}", cfg.http_listen))?
    .run();
    tracing::info!(node = %self_id, api = %cfg.http_listen, quic = %cfg.quic_listen, "blocknode ready");
    // actix-web stops the server on SIGINT/SIGTERM; then the node winds down.
    let res = server.await;
    tracing::info!("shutting down");
    let _ = peers.send(Shutdown).await;
    let synced = actix_rt::task::spawn_blocking(move || db.persist(fjall::PersistMode::SyncAll))
        .await
        .context("final metadata sync task failed")
        .and_then(|r| {
            r.with_context(|| format!("final metadata sync of {}", cfg.metadata_dir.display()))
        });
    System::current().stop();
    res.context("HTTP server failed")?;
    // A failed last sync is an error exit: a supervisor should know.
    synced
}

/// How often the client load is looked at for resync's pace.
const CLIENT_LOAD_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

/// Tell resync, every [`CLIENT_LOAD_PERIOD`], whether clients read or wrote block bytes
/// through this node since the last look (resync paces up when they did not).
fn watch_client_load(coordinator: &Coordinator) {
    let metrics = coordinator.metrics.clone();
    let resync = coordinator.resync.clone();
    actix_rt::spawn(async move {
        let mut last = None;
        let mut tick = tokio::time::interval(CLIENT_LOAD_PERIOD);
        loop {
            tick.tick().await;
            let now = metrics.bytes_read.get() + metrics.bytes_written.get();
            let idle = last == Some(now);
            last = Some(now);
            resync.do_send(blocknode_actors::resync::SetClientLoad { idle });
        }
    });
}

/// How often the node hands its storage counts to the peer actor, which announces them
/// in its pings: peers' bars on the status page are at most this plus a ping old.
const STATS_PUSH_PERIOD: std::time::Duration = std::time::Duration::from_secs(2);

/// Every [`STATS_PUSH_PERIOD`], copy the storage actor's counts (in memory, no disk
/// scan) to the peer actor ([`SetLocalStats`]), so the QUIC path never asks storage.
fn push_storage_counts(coordinator: &Coordinator) {
    let storage = coordinator.storage.clone();
    let peers = coordinator.peers.clone();
    actix_rt::spawn(async move {
        let mut tick = tokio::time::interval(STATS_PUSH_PERIOD);
        loop {
            tick.tick().await;
            match storage
                .send(blocknode_actors::storage::GetStorageStats)
                .await
            {
                Ok(s) => peers.do_send(SetLocalStats(NodeStats {
                    blocks: s.blocks,
                    bytes: s.bytes,
                    capacity: s.capacity(),
                    age_ms: 0,
                })),
                // The storage actor is gone: the node is stopping.
                Err(_) => return,
            }
        }
    });
}
