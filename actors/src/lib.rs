//! `blocknode-actors`: the block model, the wire frames, and the actors of a blocknode.
//!
//! The pure parts, unit-tested without actors, files or sockets:
//! - [`hash`]: [`Hash`] (a block's name) and [`NodeId`], both `blake2sum` digests;
//! - [`ref_id`]: [`RefId`], the validated name of one reference to a block;
//! - [`block`]: [`DataBlock`] (plain or zstd) and [`VerifiedBlock`];
//! - [`rc`]: [`RcEntry`], the reference-count state machine and its byte format;
//! - [`gc`]: the rule "may this present block go", one question per actor of the chain;
//! - [`frame`]: [`BlockRpc`], the messages between nodes, and their length-limited codec;
//! - [`fsutil`]: the crash-safe write every file goes through;
//! - [`placement`]: the [`Placement`] question "which nodes hold this partition", and
//!   the balanced, zone-aware, capacity-weighted assignment of partitions to nodes that
//!   a layout's table is made of;
//! - [`budget`]: the RAM budget for block bytes in flight (client and peer pools);
//! - [`bufpool`]: reused buffers for blocks of 1 MiB and more (no fresh mmap per block);
//! - [`fetch`]: fetch a block from its holders and verify it (the GET path's hedged
//!   read and resync's fetch of a missing block);
//! - [`tls`]: the cluster CA, node certificates and the mutual-TLS configs that pin a
//!   peer's node id.
//!
//! The actors, each owning its state and talking only by typed messages:
//! - [`storage::StorageActor`]: the data directory and every block file;
//! - [`refcount::RefcountActor`]: the `refs` and `rc` keyspaces of the metadata store;
//! - [`resync::ResyncActor`]: the resync queue, its errors, repair and scrub;
//! - [`peer::PeerActor`]: the QUIC endpoint, connections and peer health;
//! - [`antientropy::AntiEntropyActor`]: reconciles each partition's ref records with
//!   its other holders, replays hinted writes, and watches member-list agreement;
//! - [`tokens::TokenActor`]: the scoped API tokens (only their hashes), replicated to
//!   every member.
//!
//! Each actor directory keeps its messages in `messages.rs`, its settings in `config.rs`
//! and its status types in `status.rs` (where it has them); the actor and its handlers
//! are in `mod.rs`.
//!
//! [`store_failure`] carries a dead metadata store (fjall poisoned) from the actors that
//! write it to the node, once.

pub mod antientropy;
pub mod block;
pub mod budget;
pub mod bufpool;
pub mod fetch;
pub mod frame;
pub mod fsutil;
pub mod gc;
pub mod hash;
pub mod layout;
pub mod peer;
pub mod placement;
pub mod present_ref;
pub mod rc;
pub mod ref_id;
pub mod refcount;
pub mod resync;
pub mod storage;
pub mod store_failure;
pub mod tls;
pub mod tokens;
pub mod upload_ref;

pub use block::{BlockError, DataBlock, VerifiedBlock};
pub use frame::{BlockRpc, ErrorCode, FrameError, FrameLimits};
pub use hash::{blake2sum, Hash, NodeId};
pub use placement::Placement;
pub use rc::RcEntry;
pub use ref_id::RefId;
