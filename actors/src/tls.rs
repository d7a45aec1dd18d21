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

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

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
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::hash::NodeId;

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
    #[error("{path}: not a usable PEM {what}: {reason}")]
    Pem {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("{path}: certificate does not parse: {reason}")]
    BadCertFile { path: PathBuf, reason: String },
    #[error("certificate does not parse: {reason}")]
    BadCert { reason: String },
    #[error("certificate generation failed: {0}")]
    Generate(String),
    #[error("TLS configuration refused: {0}")]
    Config(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The current calendar year (approximate at new year; only used for validity bounds,
/// which start a year back so clock skew between nodes never matters).
fn current_year() -> i32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    1970 + (secs / 31_556_952) as i32
}

fn validity(params: &mut CertificateParams, years: i32) {
    let y = current_year();
    params.not_before = rcgen::date_time_ymd(y - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(y + years, 1, 1);
}

/// Create `path` with `contents`, failing if it exists; `private` files get mode 0600.
fn write_new(path: &Path, contents: &[u8], private: bool) -> Result<(), TlsError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    opts.mode(if private { 0o600 } else { 0o644 });
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            TlsError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            io_err(path)(e)
        }
    })?;
    f.write_all(contents).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

fn refuse_existing(paths: &[&Path]) -> Result<(), TlsError> {
    for p in paths {
        if p.exists() {
            return Err(TlsError::Exists {
                path: p.to_path_buf(),
            });
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(io_err(path))
}

/// Make a new cluster CA in `out_dir` (created if missing): `ca.crt` and `ca.key`
/// (mode 0600). Refuses to overwrite either file.
pub fn generate_ca(out_dir: &Path) -> Result<(), TlsError> {
    let crt = out_dir.join(CA_CERT_FILE);
    let key = out_dir.join(CA_KEY_FILE);
    refuse_existing(&[&crt, &key])?;
    fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    let key_pair = KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "blocknode cluster CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, CA_VALID_YEARS);
    let cert = params
        .self_signed(&key_pair)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    // The key first: a crash between the two leaves no certificate without its key.
    write_new(&key, key_pair.serialize_pem().as_bytes(), true)?;
    write_new(&crt, cert.pem().as_bytes(), false)
}

/// Sign a node certificate with the CA found in `ca_dir`: writes `node.crt` (CN=`name`,
/// SAN [`NODE_SAN`]), `node.key` (mode 0600) and a copy of `ca.crt` into `out_dir`
/// (created if missing). Returns the new node's id. Refuses to overwrite a node key or
/// certificate, or a different `ca.crt`.
pub fn generate_node_cert(ca_dir: &Path, name: &str, out_dir: &Path) -> Result<NodeId, TlsError> {
    let ca_crt_path = ca_dir.join(CA_CERT_FILE);
    let ca_key_path = ca_dir.join(CA_KEY_FILE);
    let crt = out_dir.join(NODE_CERT_FILE);
    let key = out_dir.join(NODE_KEY_FILE);
    let ca_copy = out_dir.join(CA_CERT_FILE);
    refuse_existing(&[&crt, &key])?;

    let ca_pem = read(&ca_crt_path)?;
    let ca_pem_str = String::from_utf8(ca_pem.clone()).map_err(|e| TlsError::Pem {
        path: ca_crt_path.clone(),
        what: "certificate",
        reason: e.to_string(),
    })?;
    let ca_key_pem = String::from_utf8(read(&ca_key_path)?).map_err(|e| TlsError::Pem {
        path: ca_key_path.clone(),
        what: "private key",
        reason: e.to_string(),
    })?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| TlsError::Pem {
        path: ca_key_path.clone(),
        what: "private key",
        reason: e.to_string(),
    })?;
    let issuer =
        Issuer::from_ca_cert_pem(&ca_pem_str, ca_key).map_err(|e| TlsError::BadCertFile {
            path: ca_crt_path.clone(),
            reason: e.to_string(),
        })?;

    let key_pair = KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let mut params = CertificateParams::new(vec![NODE_SAN.to_string()])
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Every node is both a QUIC server and a QUIC client.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, NODE_VALID_YEARS);
    let cert = params
        .signed_by(&key_pair, &issuer)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let id = node_id_of_cert(cert.der())?;

    fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    match fs::read(&ca_copy) {
        Ok(existing) if existing == ca_pem => {}
        Ok(_) => return Err(TlsError::Exists { path: ca_copy }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_new(&ca_copy, &ca_pem, false)?,
        Err(e) => return Err(io_err(&ca_copy)(e)),
    }
    write_new(&key, key_pair.serialize_pem().as_bytes(), true)?;
    write_new(&crt, cert.pem().as_bytes(), false)?;
    Ok(id)
}

/// The node id of a DER certificate: `blake2sum` of its SubjectPublicKeyInfo DER.
pub fn node_id_of_cert(der: &[u8]) -> Result<NodeId, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| TlsError::BadCert {
        reason: e.to_string(),
    })?;
    Ok(NodeId::from_spki_der(cert.tbs_certificate.subject_pki.raw))
}

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
        reason: e.to_string(),
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
            reason: e.to_string(),
        })?;
        let node_id = node_id_of_cert(&node).map_err(|e| TlsError::BadCertFile {
            path: cert.to_path_buf(),
            reason: e.to_string(),
        })?;
        let key_der = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| TlsError::Pem {
            path: key.to_path_buf(),
            what: "private key",
            reason: e.to_string(),
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
        roots
            .add(self.ca.clone())
            .map_err(|e| TlsError::Config(format!("CA certificate refused: {e}")))?;
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
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let verifier = Arc::new(MemberClientVerifier { inner, members });
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|e| TlsError::Config(e.to_string()))?;
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
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let verifier = Arc::new(PinnedServerVerifier { inner, expected });
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

/// The server name clients ask for (see [`NODE_SAN`]).
pub fn node_server_name() -> ServerName<'static> {
    // unwrap: NODE_SAN is a constant, valid DNS name.
    ServerName::try_from(NODE_SAN).unwrap()
}

fn id_or_reject(end_entity: &CertificateDer<'_>) -> Result<NodeId, rustls::Error> {
    node_id_of_cert(end_entity).map_err(|e| {
        tracing::warn!(error = %e, "peer certificate does not parse");
        rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
    })
}

/// Checks a client's chain with webpki, then that its id is a cluster member.
#[derive(Debug)]
struct MemberClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    /// `None`: any node of the CA.
    members: Option<HashSet<NodeId>>,
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
        let id = id_or_reject(end_entity)?;
        if let Err(e) = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            tracing::warn!(peer = %id.short(), error = %e,
                "refused incoming connection: certificate does not chain to the cluster CA");
            return Err(e);
        }
        if self.members.as_ref().is_some_and(|m| !m.contains(&id)) {
            tracing::warn!(peer = %id.short(),
                "refused incoming connection: node is not a cluster member");
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
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

/// Checks a server's chain with webpki (for the fixed [`NODE_SAN`] name, whatever name
/// the connection used), then that its id is the member we meant to reach.
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
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let id = id_or_reject(end_entity)?;
        if let Err(e) = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            &node_server_name(),
            ocsp_response,
            now,
        ) {
            tracing::warn!(peer = %self.expected.short(), presented = %id.short(), error = %e,
                "refused outgoing connection: certificate does not chain to the cluster CA");
            return Err(e);
        }
        if id != self.expected {
            tracing::warn!(peer = %self.expected.short(), presented = %id.short(),
                "refused outgoing connection: the server is another node than the member dialled");
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
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

/// Test helpers: a self-signed node certificate, which no cluster accepts.
#[cfg(test)]
pub(crate) fn generate_self_signed_for_tests(out_dir: &Path) -> NodeId {
    let key_pair = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![NODE_SAN.to_string()]).unwrap();
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.self_signed(&key_pair).unwrap();
    fs::create_dir_all(out_dir).unwrap();
    fs::write(out_dir.join(NODE_CERT_FILE), cert.pem()).unwrap();
    fs::write(out_dir.join(NODE_KEY_FILE), key_pair.serialize_pem()).unwrap();
    node_id_of_cert(cert.der()).unwrap()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn node_id_is_stable_across_loads_and_matches_generation() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        generate_ca(&ca).unwrap();
        let n1 = dir.path().join("n1");
        let id = generate_node_cert(&ca, "n1", &n1).unwrap();
        let a = TlsIdentity::load_dir(&n1).unwrap();
        let b = TlsIdentity::load_dir(&n1).unwrap();
        assert_eq!(a.node_id(), id, "loaded id differs from the generated id");
        assert_eq!(b.node_id(), id, "id changed between two loads");
        let other = generate_node_cert(&ca, "n2", &dir.path().join("n2")).unwrap();
        assert_ne!(other, id, "two nodes got the same id");
    }

    #[test]
    fn key_files_are_private_and_certs_are_readable() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        generate_ca(&ca).unwrap();
        let n = dir.path().join("n");
        generate_node_cert(&ca, "n", &n).unwrap();
        for key in [ca.join(CA_KEY_FILE), n.join(NODE_KEY_FILE)] {
            let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} has mode {mode:o}", key.display());
        }
        assert_eq!(
            fs::read(ca.join(CA_CERT_FILE)).unwrap(),
            fs::read(n.join(CA_CERT_FILE)).unwrap(),
            "the node directory's ca.crt is not a copy of the CA's"
        );
    }

    #[test]
    fn generation_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        generate_ca(&ca).unwrap();
        let before = fs::read(ca.join(CA_KEY_FILE)).unwrap();
        assert!(matches!(generate_ca(&ca), Err(TlsError::Exists { .. })));
        assert_eq!(fs::read(ca.join(CA_KEY_FILE)).unwrap(), before);
        let n = dir.path().join("n");
        generate_node_cert(&ca, "n", &n).unwrap();
        match generate_node_cert(&ca, "n", &n) {
            Err(TlsError::Exists { path }) => assert!(path.starts_with(&n)),
            other => panic!("expected Exists, got {other:?}"),
        }
    }

    #[test]
    fn node_cert_can_live_in_the_ca_directory() {
        let dir = tempfile::tempdir().unwrap();
        generate_ca(dir.path()).unwrap();
        let id = generate_node_cert(dir.path(), "n", dir.path()).unwrap();
        assert_eq!(TlsIdentity::load_dir(dir.path()).unwrap().node_id(), id);
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.crt");
        let err = TlsIdentity::load(&missing, &missing, &missing).unwrap_err();
        assert!(err.to_string().contains("nope.crt"), "{err}");
        let junk = dir.path().join("junk.crt");
        fs::write(&junk, "not pem").unwrap();
        let err = TlsIdentity::load(&junk, &junk, &junk).unwrap_err();
        assert!(err.to_string().contains("junk.crt"), "{err}");
    }

    #[test]
    fn tls_configs_build_for_a_generated_identity() {
        let dir = tempfile::tempdir().unwrap();
        generate_ca(dir.path()).unwrap();
        let id = generate_node_cert(dir.path(), "n", dir.path()).unwrap();
        let ident = TlsIdentity::load_dir(dir.path()).unwrap();
        server_crypto(&ident, [id].into_iter().collect()).unwrap();
        client_crypto(&ident, id).unwrap();
    }
}
