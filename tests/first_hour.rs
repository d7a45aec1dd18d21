//! What a newcomer meets first, as real processes: each bad start or closed pipe ends
//! with one line on stderr (never a panic) and the exit status docs/operations.md
//! documents ("Exit codes"), and a refused start writes nothing it did not need.

mod common;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{bin, Cluster};

/// Exit statuses, as documented.
const EX_NOINPUT: i32 = 66;
const EX_CANTCREAT: i32 = 73;
const EX_TEMPFAIL: i32 = 75;
const EX_CONFIG: i32 = 78;
/// A client command whose stdout was closed before all of it was written.
const EX_IOERR: i32 = 74;

/// Run `blocknode ARGS` to its end (bounded: a node that starts is killed and the test
/// fails); returns its status and stderr.
fn run(args: &[&str], stdout: Stdio) -> (ExitStatus, String) {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting blocknode");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for blocknode") {
            break s;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`blocknode {}` still running after 30 s", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status, err)
}

/// `blocknode ARGS` must fail with `code` and exactly one line on stderr, no panic.
fn fails_with_one_line(args: &[&str], code: i32) -> String {
    let (status, err) = run(args, Stdio::null());
    let what = format!("`blocknode {}`", args.join(" "));
    assert!(!err.contains("panicked"), "{what} panicked:\n{err}");
    assert_eq!(
        err.lines().count(),
        1,
        "{what}: expected one line, got:\n{err}"
    );
    assert_eq!(
        status.code(),
        Some(code),
        "{what}: status {status}, stderr: {err}"
    );
    err
}

/// The write end of a pipe whose read end is already closed.
fn closed_pipe() -> std::fs::File {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: `pipe` fills the two descriptors it is given room for.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    // SAFETY: both descriptors were just created and are owned here alone.
    unsafe {
        drop(std::fs::File::from_raw_fd(fds[0]));
        std::fs::File::from_raw_fd(fds[1])
    }
}

fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn free_tcp() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `run` on the embedded default under `dir` on the given addresses.
fn run_args<'a>(dir: &'a str, http: &'a str, quic: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        "--dir",
        dir,
        "--http-listen",
        http,
        "--quic-listen",
        quic,
    ]
}

fn created_no_secrets(dir: &Path) {
    for f in ["admin.token", "certs"] {
        assert!(
            !dir.join(f).exists(),
            "a refused start created {f} in {}",
            dir.display()
        );
    }
}

#[test]
fn a_busy_http_port_is_one_line_and_creates_no_ca_or_token() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("n");
    let dir_s = dir.to_str().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let http = taken.local_addr().unwrap().to_string();
    let quic = free_udp().to_string();
    let err = fails_with_one_line(&run_args(dir_s, &http, &quic), EX_TEMPFAIL);
    assert!(err.contains(&http) && err.contains("in use"), "{err}");
    created_no_secrets(&dir);
}

#[test]
fn a_busy_quic_port_is_one_line_and_creates_no_ca_or_token() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("n");
    let dir_s = dir.to_str().unwrap();
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let quic = taken.local_addr().unwrap().to_string();
    let http = free_tcp().to_string();
    let err = fails_with_one_line(&run_args(dir_s, &http, &quic), EX_TEMPFAIL);
    assert!(
        err.contains(&quic) && err.contains("--quic-listen"),
        "{err}"
    );
    created_no_secrets(&dir);
}

#[test]
fn a_data_dir_that_cannot_be_written_refuses_the_start() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("n");
    std::fs::create_dir_all(&dir).unwrap();
    // A regular file where the data dir should be: unwritable as a dir even for root.
    std::fs::write(dir.join("data"), b"").unwrap();
    let (http, quic) = (free_tcp().to_string(), free_udp().to_string());
    let err = fails_with_one_line(&run_args(dir.to_str().unwrap(), &http, &quic), EX_CANTCREAT);
    assert!(
        err.contains("not writable") && err.contains("data"),
        "{err}"
    );
    created_no_secrets(&dir);
}

#[test]
fn a_missing_certificate_is_named_once() {
    let c = Cluster::init(1, 1, "10m", |cfg| {
        cfg.lines()
            .map(|l| {
                if l.starts_with("ca_cert") {
                    "ca_cert = \"/nonexistent/blocknode/ca.crt\"".to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    let config = c.nodes[0].config.to_str().unwrap().to_string();
    let err = fails_with_one_line(&["run", "--config", &config], EX_NOINPUT);
    assert!(err.contains("/nonexistent/blocknode/ca.crt"), "{err}");
    assert_eq!(
        err.matches("No such file").count(),
        1,
        "cause repeated: {err}"
    );
}

#[test]
fn a_config_with_an_unknown_key_names_its_line() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("bad.toml");
    std::fs::write(&path, "data_dir = \"/tmp/x\"\nno_such_key = 1\n").unwrap();
    let err = fails_with_one_line(&["run", "--config", path.to_str().unwrap()], EX_CONFIG);
    assert!(
        err.contains("line 2") && err.contains("no_such_key"),
        "{err}"
    );
    let missing = d.path().join("missing.toml");
    fails_with_one_line(&["run", "--config", missing.to_str().unwrap()], EX_NOINPUT);
}

#[test]
fn a_second_node_on_one_dir_names_the_running_ones_pid_and_a_closed_pipe_is_one_line() {
    let c = Cluster::start(1, 1, "10m", |cfg| cfg.to_string());
    let config = c.nodes[0].config.to_str().unwrap().to_string();
    let err = fails_with_one_line(&["run", "--config", &config], EX_TEMPFAIL);
    let pid = c.pid(0).to_string();
    assert!(
        err.contains("another blocknode is running on") && err.contains(&format!("pid {pid}")),
        "{err}"
    );

    // `blocknode status | head -1`, `layout show | head -1`, `get HASH | head -c1`: the
    // reader is gone before the command writes. One line, status 74, no panic.
    let hash = c.put(0, b"one block for a closed pipe", None);
    for cmd in [
        &["status"][..],
        &["layout", "show"][..],
        &["get", &hash][..],
    ] {
        let writer = closed_pipe();
        let mut args = vec!["--api", &c.nodes[0].api, "--token", &c.nodes[0].token];
        args.extend_from_slice(cmd);
        let (status, err) = run(&args, Stdio::from(writer));
        assert!(
            !err.contains("panicked"),
            "{cmd:?} panicked on a closed stdout:\n{err}"
        );
        assert_eq!(
            err.lines().collect::<Vec<_>>(),
            ["error: the output was closed before all of it was written (broken pipe)"],
            "{cmd:?}: expected one line on stderr"
        );
        assert_eq!(status.code(), Some(EX_IOERR), "{cmd:?}: {status}");
    }
}

#[test]
fn block_info_tells_a_down_holder_from_an_absent_copy() {
    let mut c = Cluster::start(2, 2, "10m", |cfg| cfg.to_string());
    c.wait_peers_up(0);
    let hash = c.put(0, b"a block on both nodes", None);
    c.kill(1);
    let v = common::wait_for(
        "node 0 to find node 1 unreachable",
        Duration::from_secs(30),
        || {
            let v = c.get_json(0, &format!("/v1/blocks/{hash}/info"));
            let down = v["holders"]
                .as_array()?
                .iter()
                .any(|h| h["node"] == c.nodes[1].id.as_str() && h["state"] == "unknown");
            down.then_some(v)
        },
    );
    for h in v["holders"].as_array().unwrap() {
        assert_eq!(h["role"], "holder", "no transition: {v}");
        // The fields that were there before stay.
        for k in ["node", "present", "rc", "deletable", "error"] {
            assert!(h.get(k).is_some(), "{k} missing: {v}");
        }
        if h["node"] == c.nodes[0].id.as_str() {
            assert_eq!(h["state"], "present", "{v}");
        }
    }
    assert_eq!(v["local"]["holder"], true, "{v}");

    let out = Command::new(bin())
        .args(["--api", &c.nodes[0].api, "--token", &c.nodes[0].token])
        .args(["block", "info", &hash])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let short = &c.nodes[1].id[..16];
    let row = text
        .lines()
        .find(|l| l.starts_with(short))
        .unwrap_or_else(|| panic!("no row for the down node:\n{text}"));
    assert!(row.contains("unknown (down)"), "{text}");
    assert!(!row.contains("NodeId("), "debug text: {text}");
}
