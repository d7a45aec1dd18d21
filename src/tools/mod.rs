//! Tools built into the binary that are not the node itself: a loopback cluster for
//! trying and testing ([`dev_cluster`]), the benchmark ([`bench`]) and the config of a
//! node that joins a cluster ([`init`]). They drive nodes
//! as a user would (processes, config files, the HTTP API); the node never uses them.

pub mod bench;
pub mod dev_cluster;
pub mod init;
