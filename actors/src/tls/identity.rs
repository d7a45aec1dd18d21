//! [`TlsIdentity`] (a node's CA, certificate and key, loaded once) and the rustls
//! configurations of both ends of a node-to-node connection, built on it with the
//! verifiers of `verify.rs`. TLS 1.3 only, ring as the one crypto provider.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::certs::{node_id_of_cert, read};
use super::verify::{MemberClientVerifier, PinnedServerVerifier};
use super::{TlsError, ALPN, CA_CERT_FILE, NODE_CERT_FILE, NODE_KEY_FILE};
use crate::hash::NodeId;

/// A node's TLS identity: the cluster CA it trusts, its certificate and its key.
///
/// Loaded once at start; cheap to clone (the key is copied, certificates are shared).
pub struct TlsIdentity {
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    node_id: NodeId,
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        TlsIdentity {
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            node_id: self.node_id,
        }
    }
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

fn load_cert(path: &Path) -> Result<CertificateDer<'static>, TlsError> {
    CertificateDer::from_pem_slice(&read(path)?).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        what: "certificate",
        source: e.into(),
    })
}

impl TlsIdentity {
    /// Read the CA certificate, this node's certificate and its private key (all PEM).
    ///
    /// The node certificate is not checked against the CA here: a mismatch shows up as
    /// peers refusing the connection (and logging why).
    pub fn load(ca_cert: &Path, cert: &Path, key: &Path) -> Result<TlsIdentity, TlsError> {
        let ca = load_cert(ca_cert)?;
        let node = load_cert(cert)?;
        node_id_of_cert(&ca).map_err(|e| TlsError::BadCertFile {
            path: ca_cert.to_path_buf(),
            source: e.into(),
        })?;
        let node_id = node_id_of_cert(&node).map_err(|e| TlsError::BadCertFile {
            path: cert.to_path_buf(),
            source: e.into(),
        })?;
        let key_der = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| TlsError::Pem {
            path: key.to_path_buf(),
            what: "private key",
            source: e.into(),
        })?;
        Ok(TlsIdentity {
            ca,
            chain: vec![node],
            key: key_der,
            node_id,
        })
    }

    /// Load `ca.crt`, `node.crt` and `node.key` from one node directory.
    pub fn load_dir(dir: &Path) -> Result<TlsIdentity, TlsError> {
        TlsIdentity::load(
            &dir.join(CA_CERT_FILE),
            &dir.join(NODE_CERT_FILE),
            &dir.join(NODE_KEY_FILE),
        )
    }

    /// This node's id, derived from its certificate's public key.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).map_err(TlsError::Roots)?;
        Ok(Arc::new(roots))
    }
}

/// The crypto provider of every TLS context: ring, chosen explicitly because a second
/// provider in the dependency graph makes rustls' implicit default panic.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Server side of node-to-node TLS: requires a client certificate chaining to the CA
/// whose node id is in `members`.
pub fn server_crypto(
    identity: &TlsIdentity,
    members: HashSet<NodeId>,
) -> Result<rustls::ServerConfig, TlsError> {
    server_crypto_with(identity, Some(members))
}

/// As [`server_crypto`], accepting any certificate of the cluster CA (a node that is not
/// in a layout yet, waiting for a member to hand one over).
pub fn server_crypto_any_member(identity: &TlsIdentity) -> Result<rustls::ServerConfig, TlsError> {
    server_crypto_with(identity, None)
}

fn server_crypto_with(
    identity: &TlsIdentity,
    members: Option<HashSet<NodeId>>,
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = crypto_provider();
    let inner = WebPkiClientVerifier::builder_with_provider(identity.roots()?, provider.clone())
        .build()
        .map_err(TlsError::Verifier)?;
    let verifier = Arc::new(MemberClientVerifier { inner, members });
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(TlsError::Config)?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

/// Client side of node-to-node TLS for a connection to `expected`: the server must
/// present a certificate chaining to the CA whose node id is `expected`.
pub fn client_crypto(
    identity: &TlsIdentity,
    expected: NodeId,
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = crypto_provider();
    let inner = WebPkiServerVerifier::builder_with_provider(identity.roots()?, provider.clone())
        .build()
        .map_err(TlsError::Verifier)?;
    let verifier = Arc::new(PinnedServerVerifier { inner, expected });
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(TlsError::Config)?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}
