//! Growing a cluster from the joining node's side, as an operator does it: `blocknode
//! init --join` writes the node's config and certificate, `run --config` (with listen
//! addresses overridden on the command line) starts it, its log names the exact `layout
//! assign` line, its status says it is not yet assigned, and that line, run as written on
//! a member, adds it.

mod common;

use std::net::{TcpListener, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{bin, wait_for, Cluster};

/// Kills the joining node when the test ends, however it ends.
struct Joiner(Child);

impl Drop for Joiner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn blocknode(args: &[&str]) -> Output {
    let out = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running blocknode");
    assert!(
        out.status.success(),
        "`blocknode {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn free_tcp() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn free_udp() -> String {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().to_string()
}

#[test]
fn a_node_written_by_init_logs_the_assign_line_that_adds_it() {
    let c = Cluster::start(1, 1, "10m", |cfg| cfg.to_string());
    let member_cfg = std::fs::read_to_string(&c.nodes[0].config).unwrap();
    let member_quic = member_cfg
        .lines()
        .find_map(|l| l.strip_prefix("quic_listen = "))
        .expect("quic_listen in the member's config")
        .trim_matches('"')
        .to_string();
    let dir = c.dir.path().join("joiner");
    let dir_s = dir.to_str().unwrap();
    let ca = c.dir.path().join("ca");
    // init's own addresses are replaced at `run` below: the override is what is tested.
    let init = blocknode(&[
        "init",
        "--join",
        &member_quic,
        "--dir",
        dir_s,
        "--ca",
        ca.to_str().unwrap(),
        "--replication-factor",
        "1",
        "--zone",
        "z2",
    ]);
    let printed = String::from_utf8_lossy(&init.stdout).to_string();
    let config = dir.join("config.toml");
    assert!(
        printed.contains(&format!("blocknode run --config {}", config.display())),
        "init does not print the next command:\n{printed}"
    );
    let id = printed
        .split_whitespace()
        .skip_while(|w| *w != "assign")
        .nth(1)
        .expect("init prints the assign line")
        .to_string();

    let (http, quic) = (free_tcp(), free_udp());
    let log_path = c.dir.path().join("joiner.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let _joiner = Joiner(
        Command::new(bin())
            .args(["run", "--config", config.to_str().unwrap()])
            .args(["--http-listen", &http, "--quic-listen", &quic])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting the joining node"),
    );
    let want = format!("blocknode layout assign {id} --zone z2 --capacity 1 --addr {quic}");
    let line = wait_for(
        "the joiner to log the assign line",
        Duration::from_secs(30),
        || {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            text.lines()
                .find(|l| l.contains("waiting to be assigned") && l.contains(&want))
                .map(str::to_string)
        },
    );
    assert!(!line.contains("NodeId("), "debug text in the log: {line}");

    // The joiner's status: not yet assigned, no `rf 0`.
    let token = std::fs::read_to_string(dir.join("admin.token")).unwrap();
    let api = format!("http://{http}");
    let status = blocknode(&["--api", &api, "--token", token.trim(), "status"]);
    let status = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(status.contains("not yet assigned"), "{status}");
    assert!(!status.contains("rf 0"), "{status}");

    // The logged line runs as written on the member, and the joiner is then in the layout.
    let member = ["--api", &c.nodes[0].api, "--token", &c.nodes[0].token];
    let mut assign: Vec<&str> = member.to_vec();
    assign.extend(want.split_whitespace().skip(1));
    blocknode(&assign);
    let mut apply = member.to_vec();
    apply.extend(["layout", "apply", "--version", "2"]);
    blocknode(&apply);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    wait_for(
        "the joiner to be in the layout",
        Duration::from_secs(30),
        || {
            let mut r = agent
                .get(&format!("{api}/v1/status"))
                .header("Authorization", &format!("Bearer {}", token.trim()))
                .call()
                .ok()?;
            let v: serde_json::Value = r.body_mut().read_json().ok()?;
            (v["layout"]["in_layout"].as_bool() == Some(true)).then_some(())
        },
    );
}
