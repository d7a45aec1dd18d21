//! `blocknode`: the cluster node built from the actors of `blocknode-actors`.
//!
//! The binary (`src/main.rs`) is thin over this library: command line, configuration,
//! wiring the actors together, placement, the HTTP API and the command-line client.
