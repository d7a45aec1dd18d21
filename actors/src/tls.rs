//! Cluster identity and trust: the cluster CA, node certificates, node ids, and the
//! rustls configurations of mutual TLS between nodes.
//!
//! Trust model: one cluster CA signs every node certificate. A node id is the
//! `blake2sum` of its certificate's SubjectPublicKeyInfo, so it names the node's key.
//! A connection is accepted only if the peer's certificate chains to the cluster CA
//! *and* its id is the one expected (outgoing) or a cluster member (incoming).
//!
//! Files (PEM): a CA directory holds `ca.crt` and `ca.key`; a node directory holds
//! `node.crt`, `node.key` and a copy of `ca.crt`. Keys are written with mode 0600 and
//! never overwritten.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::hash::NodeId;

/// The DNS name every node certificate carries and every client asks for; the real
/// check is the pinned node id.
pub const NODE_SERVER_NAME: &str = "blocknode";
/// ALPN protocol id of the node-to-node protocol.
pub const ALPN: &[u8] = b"blocknode/1";

/// Errors of certificate generation and loading; each names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} already exists; refusing to overwrite a key or certificate", .0.display())]
    Exists(PathBuf),
    #[error("{}: no PEM {what} found", path.display())]
    NoPem { path: PathBuf, what: &'static str },
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("certificate could not be parsed: {0}")]
    Parse(String),
    #[error("TLS configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `data` to a new file (never overwriting) with the given mode.
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                TlsError::Exists(path.to_path_buf())
            } else {
                TlsError::Io {
                    path: path.to_path_buf(),
                    source: e,
                }
            }
        })?;
    f.write_all(data).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Make a cluster CA in `out_dir`: `ca.crt` and `ca.key` (0600). Refuses to overwrite.
pub fn generate_ca(out_dir: &Path) -> Result<(), TlsError> {
    fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    let (crt, key) = (out_dir.join("ca.crt"), out_dir.join("ca.key"));
    for p in [&crt, &key] {
        if p.exists() {
            return Err(TlsError::Exists(p.clone()));
        }
    }
    let kp = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "blocknode cluster CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let cert = params.self_signed(&kp)?;
    write_new(&key, kp.serialize_pem().as_bytes(), 0o600)?;
    write_new(&crt, cert.pem().as_bytes(), 0o644)
}

/// Make a node key and certificate signed by the CA in `ca_dir`, into `out_dir`:
/// `node.crt`, `node.key` (0600) and a copy of `ca.crt`. Returns the node id.
pub fn generate_node_cert(ca_dir: &Path, name: &str, out_dir: &Path) -> Result<NodeId, TlsError> {
    let ca_crt_path = ca_dir.join("ca.crt");
    let ca_key_path = ca_dir.join("ca.key");
    let ca_pem = fs::read_to_string(&ca_crt_path).map_err(io(&ca_crt_path))?;
    let ca_key_pem = fs::read_to_string(&ca_key_path).map_err(io(&ca_key_path))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
    fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    let (crt, key, ca_copy) = (
        out_dir.join("node.crt"),
        out_dir.join("node.key"),
        out_dir.join("ca.crt"),
    );
    for p in [&crt, &key] {
        if p.exists() {
            return Err(TlsError::Exists(p.clone()));
        }
    }
    let kp = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![NODE_SERVER_NAME.to_string()])?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let cert = params.signed_by(&kp, &issuer)?;
    let id = node_id_of_cert(cert.der())?;
    write_new(&key, kp.serialize_pem().as_bytes(), 0o600)?;
    write_new(&crt, cert.pem().as_bytes(), 0o644)?;
    if ca_copy != ca_crt_path {
        fs::write(&ca_copy, ca_pem.as_bytes()).map_err(io(&ca_copy))?;
    }
    Ok(id)
}

/// The node id of a DER certificate: `blake2sum` of its SubjectPublicKeyInfo.
pub fn node_id_of_cert(der: &[u8]) -> Result<NodeId, TlsError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| TlsError::Parse(e.to_string()))?;
    Ok(NodeId::from_spki_der(cert.public_key().raw))
}

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    use rustls_pki_types::pem::PemObject;
    let data = fs::read(path).map_err(io(path))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Parse(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError::NoPem {
            path: path.to_path_buf(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// A node's TLS identity: the cluster CA, its certificate and key.
#[derive(Debug)]
pub struct TlsIdentity {
    ca: CertificateDer<'static>,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    id: NodeId,
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        TlsIdentity {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone_key(),
            id: self.id,
        }
    }
}

impl TlsIdentity {
    /// Load the CA certificate, the node certificate and the node key (PEM files).
    pub fn load(ca_cert: &Path, cert: &Path, key: &Path) -> Result<TlsIdentity, TlsError> {
        use rustls_pki_types::pem::PemObject;
        let ca = read_pem_certs(ca_cert)?.remove(0);
        let cert_der = read_pem_certs(cert)?.remove(0);
        let key_data = fs::read(key).map_err(io(key))?;
        let key_der = PrivateKeyDer::from_pem_slice(&key_data).map_err(|_| TlsError::NoPem {
            path: key.to_path_buf(),
            what: "private key",
        })?;
        let id = node_id_of_cert(&cert_der)?;
        Ok(TlsIdentity {
            ca,
            cert: cert_der,
            key: key_der,
            id,
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.id
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone())?;
        Ok(Arc::new(roots))
    }

    /// The server side: client certificates must chain to the CA and name a member.
    pub fn server_config(
        &self,
        members: HashSet<NodeId>,
    ) -> Result<rustls::ServerConfig, TlsError> {
        let provider = provider();
        let inner = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider.clone())
            .build()
            .map_err(|e| TlsError::Parse(e.to_string()))?;
        let verifier = Arc::new(MemberClientVerifier {
            inner,
            members: Arc::new(members),
        });
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.cert.clone()], self.key.clone_key())?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        Ok(cfg)
    }

    /// The client side of a connection to `expected`: its certificate must chain to the
    /// CA and carry exactly that id.
    pub fn client_config(&self, expected: NodeId) -> Result<rustls::ClientConfig, TlsError> {
        let provider = provider();
        let inner = WebPkiServerVerifier::builder_with_provider(self.roots()?, provider.clone())
            .build()
            .map_err(|e| TlsError::Parse(e.to_string()))?;
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedServerVerifier { inner, expected }))
            .with_client_auth_cert(vec![self.cert.clone()], self.key.clone_key())?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        Ok(cfg)
    }
}

/// The one crypto provider of the node (ring), passed explicitly so no process-wide
/// default is needed.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Checks the chain with webpki, then that the server's id is the one we dialled.
#[derive(Debug)]
struct PinnedServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    expected: NodeId,
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Every node certificate carries NODE_SERVER_NAME; the id below is the real check.
        let name = ServerName::try_from(NODE_SERVER_NAME)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        self.inner
            .verify_server_cert(end_entity, intermediates, &name, ocsp, now)
            .inspect_err(|e| tracing::warn!(peer = %self.expected.short(), "refused server certificate: {e}"))?;
        let id = node_id_of_cert(end_entity).map_err(|e| rustls::Error::General(e.to_string()))?;
        if id != self.expected {
            tracing::warn!(expected = %self.expected.short(), got = %id.short(), "refused server: node id is not the one dialled");
            return Err(rustls::Error::General(format!(
                "server is node {}, expected {}",
                id.short(),
                self.expected.short()
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Checks the chain with webpki, then that the client's id is a cluster member.
#[derive(Debug)]
struct MemberClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    members: Arc<HashSet<NodeId>>,
}

impl ClientCertVerifier for MemberClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|e| tracing::warn!("refused client certificate: {e}"))?;
        let id = node_id_of_cert(end_entity).map_err(|e| rustls::Error::General(e.to_string()))?;
        if !self.members.contains(&id) {
            tracing::warn!(peer = %id.short(), "refused client: certificate is valid but node is not a cluster member");
            return Err(rustls::Error::General(format!(
                "node {} is not a cluster member",
                id.short()
            )));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn node_certificates_are_signed_keys_private_and_ids_stable() {
        let d = tempfile::tempdir().unwrap();
        let ca = d.path().join("ca");
        generate_ca(&ca).unwrap();
        assert!(
            matches!(generate_ca(&ca), Err(TlsError::Exists(_))),
            "a CA is never overwritten"
        );
        let id = generate_node_cert(&ca, "n1", &d.path().join("n1")).unwrap();
        let id2 = generate_node_cert(&ca, "n2", &d.path().join("n2")).unwrap();
        assert_ne!(id, id2);
        for key in [ca.join("ca.key"), d.path().join("n1/node.key")] {
            let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} should be 0600", key.display());
        }
        let n1 = d.path().join("n1");
        let ident = TlsIdentity::load(
            &n1.join("ca.crt"),
            &n1.join("node.crt"),
            &n1.join("node.key"),
        )
        .unwrap();
        assert_eq!(
            ident.node_id(),
            id,
            "the id printed at creation is the id loaded"
        );
        assert!(ident.server_config([id2].into()).is_ok());
        assert!(ident.client_config(id2).is_ok());
    }

    #[test]
    fn loading_missing_or_bad_files_names_them() {
        let d = tempfile::tempdir().unwrap();
        let bad = d.path().join("bad.crt");
        fs::write(&bad, "not pem").unwrap();
        let e = TlsIdentity::load(&bad, &bad, &bad).unwrap_err();
        assert!(e.to_string().contains("bad.crt"), "{e}");
        let e = TlsIdentity::load(&d.path().join("nope"), &bad, &bad).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }
}
