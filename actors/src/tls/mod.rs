//! Cluster certificates and the mutual-TLS configuration of the QUIC endpoint.
//!
//! Trust model: one cluster CA signs every node certificate (`blocknode cert`, built on
//! [`generate_ca`] and [`generate_node_cert`]). A node's [`NodeId`] is `blake2sum` of its
//! certificate's SubjectPublicKeyInfo, so it is bound to the node's key, not to a name.
//! Both ends of a connection check two things (see [`server_crypto`], [`client_crypto`]):
//! the peer's certificate chains to the cluster CA, and the id derived from it is the
//! expected one (outgoing: the member we dialled; incoming: any member). The DNS name of
//! the server is not used for trust: every node certificate carries the fixed SAN
//! [`NODE_SAN`] and clients always ask for that name.
//!
//! Files (PEM): `ca.crt`, `ca.key` in the CA directory; `node.crt`, `node.key` and a copy
//! of `ca.crt` in a node's directory. Keys are created with mode 0600 and never
//! overwritten.
//!
//! `certs.rs` makes and reads the files, `identity.rs` holds a node's loaded identity
//! and builds the rustls configurations, `verify.rs` has the two verifiers that pin node
//! ids on top of webpki's chain checks.

use std::path::PathBuf;

mod certs;
mod identity;
#[cfg(test)]
mod tests;
mod verify;

#[cfg(test)]
pub(crate) use certs::generate_self_signed_for_tests;
pub use certs::{generate_ca, generate_node_cert, node_id_of_cert, node_server_name};
pub use identity::{
    client_crypto, crypto_provider, server_crypto, server_crypto_any_member, TlsIdentity,
};

/// The DNS name every node certificate carries and every client asks for. Trust comes
/// from the CA and the pinned node id, not from this name.
pub const NODE_SAN: &str = "blocknode-node";
/// ALPN protocol of node-to-node QUIC connections.
pub const ALPN: &[u8] = b"blocknode/1";
/// File names inside a CA or node directory.
pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";
pub const NODE_CERT_FILE: &str = "node.crt";
pub const NODE_KEY_FILE: &str = "node.key";

/// Years a CA certificate stays valid: a cluster lives long, rotation is manual.
const CA_VALID_YEARS: i32 = 50;
/// Years a node certificate stays valid.
const NODE_VALID_YEARS: i32 = 20;

/// Why a certificate could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} already exists; refusing to overwrite it")]
    Exists { path: PathBuf },
    #[error("{path}: not a usable PEM {what}: {source}")]
    Pem {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("{path}: certificate does not parse: {source}")]
    BadCertFile {
        path: PathBuf,
        #[source]
        source: BoxError,
    },
    #[error("certificate does not parse: {0}")]
    BadCert(#[source] x509_parser::nom::Err<x509_parser::error::X509Error>),
    #[error("certificate generation failed: {0}")]
    Generate(#[source] rcgen::Error),
    #[error("CA certificate refused: {0}")]
    Roots(#[source] rustls::Error),
    #[error("TLS verifier refused: {0}")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    #[error("TLS configuration refused: {0}")]
    Config(#[source] rustls::Error),
    #[error("QUIC refused the TLS configuration: {0}")]
    Quic(#[source] quinn::crypto::rustls::NoInitialCipherSuite),
}

/// The cause of a PEM or certificate-file error: the parsers involved (UTF-8, rcgen,
/// rustls-pki-types, x509-parser) each have their own error type.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
