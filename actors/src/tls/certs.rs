//! Making and reading the cluster's certificate files: the CA ([`generate_ca`]), node
//! certificates signed by it ([`generate_node_cert`]), and the node id a certificate
//! names ([`node_id_of_cert`]). Files are created, never overwritten; keys get mode 0600.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use rustls_pki_types::ServerName;

use super::{
    TlsError, CA_CERT_FILE, CA_KEY_FILE, CA_VALID_YEARS, NODE_CERT_FILE, NODE_KEY_FILE, NODE_SAN,
    NODE_VALID_YEARS,
};
use crate::hash::NodeId;

pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
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

pub(super) fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(io_err(path))
}

/// Make a new cluster CA in `out_dir` (created if missing): `ca.crt` and `ca.key`
/// (mode 0600). Refuses to overwrite either file.
pub fn generate_ca(out_dir: &Path) -> Result<(), TlsError> {
    let crt = out_dir.join(CA_CERT_FILE);
    let key = out_dir.join(CA_KEY_FILE);
    refuse_existing(&[&crt, &key])?;
    fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    let key_pair = KeyPair::generate().map_err(TlsError::Generate)?;
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
    let cert = params.self_signed(&key_pair).map_err(TlsError::Generate)?;
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
        source: e.into(),
    })?;
    let ca_key_pem = String::from_utf8(read(&ca_key_path)?).map_err(|e| TlsError::Pem {
        path: ca_key_path.clone(),
        what: "private key",
        source: e.into(),
    })?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| TlsError::Pem {
        path: ca_key_path.clone(),
        what: "private key",
        source: e.into(),
    })?;
    let issuer =
        Issuer::from_ca_cert_pem(&ca_pem_str, ca_key).map_err(|e| TlsError::BadCertFile {
            path: ca_crt_path.clone(),
            source: e.into(),
        })?;

    let key_pair = KeyPair::generate().map_err(TlsError::Generate)?;
    let mut params =
        CertificateParams::new(vec![NODE_SAN.to_string()]).map_err(TlsError::Generate)?;
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
        .map_err(TlsError::Generate)?;
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
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(TlsError::BadCert)?;
    Ok(NodeId::from_spki_der(cert.tbs_certificate.subject_pki.raw))
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

/// The server name clients ask for (see [`NODE_SAN`]).
pub fn node_server_name() -> ServerName<'static> {
    // unwrap: NODE_SAN is a constant, valid DNS name.
    ServerName::try_from(NODE_SAN).unwrap()
}
