//! Unit tests of the dev-cluster files.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use super::*;

#[test]
fn init_only_writes_a_valid_cluster() {
    let d = tempfile::tempdir().unwrap();
    let args = DevClusterArgs {
        nodes: 3,
        dir: d.path().join("c"),
        replication: None,
        gc_delay: "1s".into(),
        init_only: true,
        ..Default::default()
    };
    let f = init(&args).unwrap();
    assert_eq!(f.nodes.len(), 3);
    let back: DevClusterFile =
        serde_json::from_slice(&std::fs::read(d.path().join("c/cluster.json")).unwrap()).unwrap();
    assert_eq!(back.nodes.len(), 3);
    let (mut http, mut quic) = (Vec::new(), Vec::new());
    for n in &f.nodes {
        let cfg = crate::node::config::Config::load(&n.config).unwrap();
        assert_eq!(n.api, format!("http://{}", cfg.http_listen));
        http.push(cfg.http_listen.port());
        quic.push(cfg.quic_listen.port());
        let identity =
            blocknode_actors::tls::TlsIdentity::load(&cfg.ca_cert, &cfg.node_cert, &cfg.node_key)
                .unwrap();
        assert_eq!(
            identity.node_id().to_hex(),
            n.id,
            "cluster.json must give the id of {}'s certificate",
            n.name
        );
        assert!(
            cfg.members
                .iter()
                .any(|m| m.id == n.id && m.zone == cfg.zone),
            "{} must be a member, in its own zone",
            n.name
        );
        assert_eq!(cfg.members.len(), 3);
        assert_eq!(cfg.replication_factor, 3);
        assert_eq!(cfg.gc_delay, Duration::from_secs(1));
        for key in [&cfg.node_key, &cfg.admin_token_file] {
            let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} should be 0600", key.display());
        }
    }
    for (what, mut ports) in [("HTTP", http), ("QUIC", quic)] {
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), 3, "every node needs its own {what} port");
    }
    let dir = d.path().join("c");
    for private in ["cluster.json", TOKEN_FILE, ENV_FILE] {
        let mode = std::fs::metadata(dir.join(private))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{private} should be 0600");
    }
    assert!(
        f.nodes.iter().all(|n| n.token == f.nodes[0].token),
        "one admin token for the whole cluster"
    );
    let env = std::fs::read_to_string(dir.join(ENV_FILE)).unwrap();
    assert!(
        env.starts_with(&format!(
            "export BLOCKNODE_API={} BLOCKNODE_TOKEN=",
            f.nodes[0].api
        )),
        "{env}"
    );
    assert!(init(&args).is_err(), "a non-empty directory is refused");
}
