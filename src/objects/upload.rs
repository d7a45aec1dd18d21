//! `PUT /v1/objects`: a body of any length cut into chunks as it arrives, each chunk
//! hashed once and stored with bounded parallelism inside the client RAM budget, then
//! the manifest tree, then the object's ref (see the module above for the ref scheme).
//!
//! Memory: the chunker's window (at most `max` plus one body piece, charged up front),
//! at most [`CHUNKS_IN_FLIGHT`] chunks being hashed or sent, each charged twice its
//! length before it is cut loose (its compressed copy may coexist), one open manifest
//! node per tree level, and the set of hashes this upload touched (32 bytes per chunk,
//! needed to drop its upload ref whatever happens).
//!
//! The client pool is never waited for while this upload holds a charge: a chunk's
//! charge is taken only if free now; else the upload waits for its own chunks in flight
//! (which wait on their holders, never on this pool), and with none in flight the chunk
//! is paid out of the window. Only with nothing held (before the window, or once the
//! window is given back) does it wait for the pool, at most `block_rw_timeout` (then
//! 503). A window paid out is topped up when the pool has room; until then the chunker's
//! bytes may exceed the upload's charge by at most one window.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Display;
use std::time::{Duration, Instant};

use actix_rt::task::JoinHandle;
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};

use std::collections::VecDeque;

use blocknode_actors::budget::Charge;
use blocknode_actors::rc::now_msec;
use blocknode_actors::upload_ref::{new_upload_ref, UPLOAD_REF_MARGIN, UPLOAD_REF_TTL};
use blocknode_actors::{Hash, RefId, VerifiedBlock};

use super::chunker::Chunker;
use super::manifest::{ChunkerParams, Entry, SealedNode, TreeBuilder};
use super::refs::{add_object_ref, holder_counts, set_refs};
use super::{object_ref_name, ObjectError};
use crate::coordinator::Coordinator;

/// Chunks hashed or sent at once by one upload: with 3 holders, enough to keep the
/// holders' disks and the links busy; 8 × 2 × the largest chunk (4 MiB) is the most
/// one upload charges to the client RAM budget for them.
pub const CHUNKS_IN_FLIGHT: usize = 8;

/// The answer of `PUT /v1/objects`.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PutObjectReply {
    /// The object's id: its root manifest's hash, 64 lowercase hex digits.
    pub id: String,
    /// Its length in bytes.
    pub size: u64,
    /// Its chunks (repeats counted).
    pub chunks: u64,
    /// Chunks whose bytes were sent: no write quorum of their holders had them.
    pub new_chunks: u64,
    /// The plain bytes of those chunks: what this upload added to the cluster.
    pub new_bytes: u64,
}

/// What a block's task ended with.
struct Stored {
    /// `Some(i)`: the object's `i`-th chunk; `None`: a manifest node.
    chunk: Option<u64>,
    len: u64,
    /// Known once hashed: the block may carry the upload ref from then on.
    hash: Option<Hash>,
    /// `true`: its bytes were sent; `false`: a bare ref stood in for them.
    result: Result<bool, ObjectError>,
}

/// One upload in progress.
struct Upload {
    svc: Coordinator,
    upload_ref: RefId,
    /// When the upload ref's lifetime started (its name carries the same instant).
    started: Instant,
    builder: Option<TreeBuilder>,
    tasks: FuturesUnordered<JoinHandle<Stored>>,
    /// The chunker's share of the client pool while the body is read.
    window: Option<Charge>,
    /// What the window should hold (twice the largest chunk, at most the pool).
    window_want: u64,
    /// Sealed manifest nodes waiting for their charge.
    pending: VecDeque<SealedNode>,
    /// Chunks stored but not yet handed to the builder (which takes them in order).
    ready: BTreeMap<u64, Entry>,
    next_to_build: u64,
    next_chunk: u64,
    /// Every block that may carry the upload ref.
    touched: HashSet<Hash>,
    size: u64,
    new_chunks: u64,
    new_bytes: u64,
}

/// Store the object `body` and give it the ref `user`. `pause` is the longest wait for
/// the next piece of the body. The upload runs to its end (or cleans up) even if the
/// caller stops waiting, when it runs in its own task (the HTTP handler does so).
pub async fn put_object<S, E>(
    svc: Coordinator,
    body: S,
    user: RefId,
    pause: Duration,
) -> Result<PutObjectReply, ObjectError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display,
{
    // Refuse a ref that cannot name the object's blocks before reading anything.
    object_ref_name(&Hash([0; 32]), &user)?;
    let params = ChunkerParams::DEFAULT;
    if svc.cfg.max_block_size < params.max as usize {
        return Err(ObjectError::BlocksTooSmall {
            max_block_size: svc.cfg.max_block_size,
            max_chunk: params.max,
        });
    }
    let upload_ref = new_upload_ref(now_msec());
    let mut up = Upload {
        svc,
        upload_ref,
        started: Instant::now(),
        builder: Some(TreeBuilder::new(params)),
        tasks: FuturesUnordered::new(),
        window: None,
        window_want: 0,
        pending: VecDeque::new(),
        ready: BTreeMap::new(),
        next_to_build: 0,
        next_chunk: 0,
        touched: HashSet::new(),
        size: 0,
        new_chunks: 0,
        new_bytes: 0,
    };
    let res = match up.receive(body, params, pause).await {
        Ok(()) => up.commit(&user).await,
        Err(e) => Err(e),
    };
    if let Err(e) = &res {
        tracing::warn!(
            "object upload with ref {user} failed, dropping its upload ref {}: {e}",
            up.upload_ref
        );
        // Let every call already sent end, so that no upload ref lands after the drop.
        while let Some(done) = up.tasks.next().await {
            if let Ok(Stored { hash: Some(h), .. }) = done {
                up.touched.insert(h);
            }
        }
    }
    up.release().await;
    res
}

impl Upload {
    /// Read the body to its end, cutting and storing chunks as it arrives.
    async fn receive<S, E>(
        &mut self,
        mut body: S,
        params: ChunkerParams,
        pause: Duration,
    ) -> Result<(), ObjectError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        // The window: at most `max` bytes plus one piece of the body. Nothing is held
        // yet, so this may wait.
        self.window_want = (2 * u64::from(params.max)).min(self.svc.budget.client.capacity());
        self.window = Some(self.reserve_holding_nothing(self.window_want).await?);
        let mut chunker = Chunker::new(params);
        loop {
            self.top_up_window();
            let piece = tokio::time::timeout(pause, body.next())
                .await
                .map_err(|_| ObjectError::BodyStalled {
                    pause,
                    after: self.size,
                })?;
            let eof = match piece {
                None => true,
                Some(Ok(b)) => {
                    self.size += b.len() as u64;
                    chunker.push(&b);
                    false
                }
                Some(Err(e)) => {
                    return Err(ObjectError::BodyCut {
                        after: self.size,
                        reason: e.to_string(),
                    })
                }
            };
            while let Some(chunk) = chunker.next_chunk(eof) {
                self.start_chunk(chunk).await?;
            }
            if eof {
                self.window = None;
                return Ok(());
            }
        }
    }

    /// Start storing the next chunk, once fewer than [`CHUNKS_IN_FLIGHT`] are in
    /// flight and it has its charge.
    async fn start_chunk(&mut self, chunk: Bytes) -> Result<(), ObjectError> {
        while self.tasks.len() >= CHUNKS_IN_FLIGHT {
            self.wait_for_one().await?;
        }
        self.check_lifetime()?;
        self.start_pending().await?;
        let ram = self.charge_for(2 * chunk.len() as u64).await?;
        let index = self.next_chunk;
        self.next_chunk += 1;
        self.tasks.push(actix_rt::spawn(store(
            self.svc.clone(),
            Some(index),
            chunk,
            self.upload_ref.clone(),
            ram,
        )));
        Ok(())
    }

    /// Start storing the sealed manifest nodes waiting for their charge (never
    /// deduplicated: they are small).
    async fn start_pending(&mut self) -> Result<(), ObjectError> {
        while let Some(node) = self.pending.pop_front() {
            let ram = self.charge_for(2 * node.bytes.len() as u64).await?;
            self.tasks.push(actix_rt::spawn(store(
                self.svc.clone(),
                None,
                node.bytes,
                self.upload_ref.clone(),
                ram,
            )));
        }
        Ok(())
    }

    /// Wait for one of this upload's blocks in flight and account for it.
    async fn wait_for_one(&mut self) -> Result<(), ObjectError> {
        if let Some(done) = self.tasks.next().await {
            self.take(done)?;
        }
        let sealed = self.build_ready();
        self.pending.extend(sealed);
        Ok(())
    }

    /// A charge of `bytes` of the client pool, never waited for while this upload
    /// holds one (see the module above): free now; else once one of its own blocks in
    /// flight ended; else out of the window; else, the window given back, waited for.
    async fn charge_for(&mut self, bytes: u64) -> Result<Charge, ObjectError> {
        loop {
            if let Some(c) = self.svc.try_reserve_ram(bytes) {
                return Ok(c);
            }
            if self.tasks.is_empty() {
                break;
            }
            self.wait_for_one().await?;
        }
        let need = bytes.min(self.svc.budget.client.capacity());
        if let Some(w) = self.window.as_mut() {
            if w.bytes() >= need {
                return Ok(w.split_off(need));
            }
        }
        self.window = None;
        self.reserve_holding_nothing(bytes).await
    }

    /// Wait for `bytes` of the client pool, at most `block_rw_timeout`. Only called
    /// while this upload holds no charge, so it cannot be part of a wait cycle.
    async fn reserve_holding_nothing(&self, bytes: u64) -> Result<Charge, ObjectError> {
        let wait = self.svc.cfg.block_rw_timeout;
        match tokio::time::timeout(wait, self.svc.reserve_ram(bytes)).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(ObjectError::Busy {
                wanted: bytes,
                secs: wait.as_secs(),
            }),
        }
    }

    /// Give the window back what chunks paid out of it, if the pool has it free now.
    fn top_up_window(&mut self) {
        let have = self.window.as_ref().map_or(0, Charge::bytes);
        if have >= self.window_want {
            return;
        }
        if let Some(more) = self.svc.try_reserve_ram(self.window_want - have) {
            match self.window.as_mut() {
                Some(w) => w.merge(more),
                None => self.window = Some(more),
            }
        }
    }

    /// Account for a finished task; hand the chunks that are next in order to the
    /// builder (and start storing the nodes it seals).
    fn take(&mut self, done: Result<Stored, actix_rt::task::JoinError>) -> Result<(), ObjectError> {
        let done = done.map_err(|e| ObjectError::Task(e.to_string()))?;
        if let Some(h) = done.hash {
            self.touched.insert(h);
        }
        let sent = done.result?;
        let (Some(index), Some(hash)) = (done.chunk, done.hash) else {
            return Ok(());
        };
        if sent {
            self.new_chunks += 1;
            self.new_bytes += done.len;
        }
        self.ready.insert(
            index,
            Entry {
                hash,
                len: done.len,
            },
        );
        Ok(())
    }

    /// Hand the chunks next in order to the builder; returns the nodes it sealed.
    fn build_ready(&mut self) -> Vec<SealedNode> {
        let mut sealed = Vec::new();
        while let Some(e) = self.ready.remove(&self.next_to_build) {
            self.next_to_build += 1;
            if let Some(b) = self.builder.as_mut() {
                sealed.extend(b.push(e));
            }
        }
        sealed
    }

    /// Wait for every chunk, store the manifest tree, then give the object its ref.
    async fn commit(&mut self, user: &RefId) -> Result<PutObjectReply, ObjectError> {
        while !self.tasks.is_empty() || !self.pending.is_empty() {
            self.start_pending().await?;
            if !self.tasks.is_empty() {
                self.wait_for_one().await?;
            }
        }
        let sealed = self.build_ready();
        self.pending.extend(sealed);
        let builder = self
            .builder
            .take()
            .ok_or_else(|| ObjectError::Task("manifest builder already used".into()))?;
        let (id, sealed) = builder.finish();
        self.pending.extend(sealed);
        self.start_pending().await?;
        while let Some(done) = self.tasks.next().await {
            self.take(done)?;
        }
        // The object's refs must be on every block before the upload ref expires.
        self.check_lifetime()?;
        add_object_ref(&self.svc, id, user).await?;
        Ok(PutObjectReply {
            id: id.to_hex(),
            size: self.size,
            chunks: self.next_chunk,
            new_chunks: self.new_chunks,
            new_bytes: self.new_bytes,
        })
    }

    /// Fail once the upload ref is too close to its expiry to rely on.
    fn check_lifetime(&self) -> Result<(), ObjectError> {
        if outlived_upload_ref(self.started.elapsed()) {
            return Err(ObjectError::UploadTooLong {
                limit: UPLOAD_REF_TTL - UPLOAD_REF_MARGIN,
            });
        }
        Ok(())
    }

    /// Drop the upload ref from every block it may be on. Best effort: a failure is
    /// logged, and leaves that ref behind (the blocks are kept, never lost).
    async fn release(&mut self) {
        let blocks: Vec<Hash> = self.touched.drain().collect();
        if let Err(e) = set_refs(&self.svc, &blocks, &self.upload_ref, false).await {
            tracing::warn!(
                "dropping upload ref {} from {} blocks failed; they stay referenced: {e}",
                self.upload_ref,
                blocks.len()
            );
        }
    }
}

/// Whether an upload running for `elapsed` must stop: its upload ref expires
/// [`UPLOAD_REF_TTL`] after the start, and the commit needs [`UPLOAD_REF_MARGIN`].
pub fn outlived_upload_ref(elapsed: Duration) -> bool {
    elapsed + UPLOAD_REF_MARGIN >= UPLOAD_REF_TTL
}

/// Hash one block and store it with the upload ref: for a chunk a write quorum of its
/// holders stores and references, a bare ref; else, or when that ref is refused (the
/// block went missing meanwhile) or came back too late to rely on the report, with its
/// bytes (`PutBlockRef`). A block stored and referenced nowhere else may be in GC's
/// hands right now: only its bytes, whose write stops a delete decided before it, are
/// safe then.
async fn store(
    svc: Coordinator,
    chunk: Option<u64>,
    plain: Bytes,
    upload_ref: RefId,
    ram: Charge,
) -> Stored {
    let len = plain.len() as u64;
    let level = svc.cfg.compression_level;
    let block =
        match actix_rt::task::spawn_blocking(move || VerifiedBlock::hash_plain(plain, level)).await
        {
            Ok(b) => b,
            Err(e) => {
                return Stored {
                    chunk,
                    len,
                    hash: None,
                    result: Err(ObjectError::Task(format!("hashing: {e}"))),
                }
            }
        };
    let hash = block.hash();
    if chunk.is_some() {
        // The report is relied on only within half the GC grace of asking for it (see
        // `HolderCounts::protected_on_write_quorum`): a slower bare ref sends the bytes
        // too, which is always safe (a write since GC's decision stops its delete).
        let asked = Instant::now();
        let counts = holder_counts(&svc, hash).await;
        if counts.protected_on_write_quorum(&svc) {
            let pause = svc.cfg.dedup_test_pause;
            if !pause.is_zero() {
                tokio::time::sleep(pause.mul_f64(rand::random::<f64>())).await;
            }
            match svc.set_ref(hash, upload_ref.clone(), true).await {
                Ok(()) if asked.elapsed() < svc.cfg.gc_delay / 2 => {
                    return Stored {
                        chunk,
                        len,
                        hash: Some(hash),
                        result: Ok(false),
                    }
                }
                Ok(()) => {
                    tracing::debug!(hash = %hash.short(), "bare ref acknowledged late, sending the bytes too")
                }
                Err(e) => {
                    tracing::debug!(hash = %hash.short(), "bare ref refused, sending the bytes: {e}")
                }
            }
        }
    }
    let result = svc
        .put_hashed(block, Some(upload_ref), ram)
        .await
        .map(|_| true)
        .map_err(ObjectError::from);
    Stored {
        chunk,
        len,
        hash: Some(hash),
        result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_stops_before_its_ref_can_expire() {
        assert!(!outlived_upload_ref(Duration::ZERO));
        assert!(!outlived_upload_ref(
            UPLOAD_REF_TTL - UPLOAD_REF_MARGIN - Duration::from_secs(1)
        ));
        assert!(outlived_upload_ref(UPLOAD_REF_TTL - UPLOAD_REF_MARGIN));
        assert!(outlived_upload_ref(UPLOAD_REF_TTL));
    }
}
