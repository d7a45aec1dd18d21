//! `blocknode`: the cluster node built from the actors of `blocknode-actors`.
//!
//! - [`config`]: every config key with its default, and the embedded single-node default;
//! - [`node`]: wiring — config → actors → HTTP API, and clean shutdown;
//! - [`store_watch`]: crash-only exit when the metadata store dies;
//! - [`logging`]: log filter (dependencies at `warn`) and `--log-format text|json`;
//! - [`dispatch`]: answers the RPCs peers send, by messages to the actors;
//! - [`service`]: the client path (put, get, refs, info) used by the API;
//! - [`api`]: the HTTP API (actix-web); [`block_http`]: ETag, `If-None-Match` and byte
//!   ranges of immutable blocks; [`metrics`]: Prometheus metrics;
//! - [`openapi`]: the OpenAPI 3.1 document of the API, generated from the handlers;
//! - [`cli`]: the command line, its HTTP client and what it prints;
//! - [`tools`]: `blocknode dev-cluster` (a loopback cluster for trying, testing and
//!   benchmarking) and `blocknode bench` (figures against the machine's limits).
//!
//! The binary (`src/main.rs`) is thin over this library.

pub mod api;
pub mod block_http;
pub mod cli;
pub mod config;
pub mod dispatch;
pub mod layout_api;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod openapi;
pub mod service;
pub mod store_watch;
pub mod tools;
