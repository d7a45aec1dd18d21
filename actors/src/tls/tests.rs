//! Certificate generation, loading and the TLS configurations built from them.

use std::fs;
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
