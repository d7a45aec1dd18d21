//! `blocknode`: the cluster node built from the actors of `blocknode-actors`.
//!
//! The node's parts, by role:
//! - [`node`]: wiring only — config → actors → HTTP server, and clean shutdown
//!   ([`node::bootstrap`]: first-start certificates and admin token; [`node::config`]: every
//!   config key with its default, and the embedded single-node default;
//!   [`node::store_watch`]: crash-only exit when the metadata store dies);
//! - [`coordinator`]: the client side of a request (put, get, refs, info, with quorums),
//!   used by the HTTP API;
//! - [`objects`]: objects of any size: content-defined chunks, the manifest format,
//!   streaming upload and download, the refs that protect a whole object;
//! - [`replica`]: the replica side, one function per `BlockRpc` a peer can send, each a
//!   message to the owning actor;
//! - [`http`]: the HTTP API (actix-web): routing, authentication and the JSON error format
//!   in `http/mod.rs`, block routes ([`http::blocks`], with ETag, `If-None-Match` and byte
//!   ranges decided in [`http::conditional`]), admin routes ([`http::admin`]), the
//!   `/metrics` rendering ([`http::metrics`]) and the OpenAPI document ([`http::openapi`]);
//! - [`metrics`]: the Prometheus registry the node counts into;
//! - [`logging`]: log filter (dependencies at `warn`) and `--log-format text|json`;
//! - [`cli`]: the command line, its HTTP client and what it prints;
//! - [`tools`]: `blocknode dev-cluster` (a loopback cluster for trying, testing and
//!   benchmarking) and `blocknode bench` (figures against the machine's limits).
//!
//! - [`exit`]: the binary's exit statuses and how an error becomes one line.
//!
//! The binary (`src/main.rs`) is thin over this library.

pub mod cli;
pub mod coordinator;
pub mod exit;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod objects;
pub mod replica;
pub mod tools;
