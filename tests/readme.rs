//! README's tour runs as written: its first shell block (one node, a block and its
//! references) is taken from README.md and run by bash against a real node, with two
//! substitutions only: the debug binary instead of the release build (`cargo build
//! --release && export PATH=...`), and listen addresses chosen at run time instead of
//! the embedded default's 3900/3901 (so tests can run side by side). After the line that
//! starts the node in the background, the script waits (bounded) for `/health`, as a
//! reader does before typing the next command.

mod common;

use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::bin;

/// The whole tour, the node's start included, must end within this.
const TOUR_WITHIN: Duration = Duration::from_secs(90);

/// The first ```sh block after `heading` in README.md.
fn shell_block_after(readme: &str, heading: &str) -> Vec<String> {
    let from = readme
        .find(heading)
        .unwrap_or_else(|| panic!("README has no {heading:?}"));
    let rest = &readme[from..];
    let start = rest
        .find("```sh\n")
        .expect("a ```sh block after the heading")
        + 6;
    let end = rest[start..].find("```").expect("the block's end") + start;
    rest[start..end].lines().map(str::to_string).collect()
}

/// The tour block as a script: the debug binary on PATH, the addresses substituted, a
/// wait for the node after it is started, and every background job ended on exit.
fn script(lines: &[String], http: &str, quic: &str) -> String {
    let bin_dir = bin().parent().expect("the binary's dir").to_path_buf();
    let mut out = vec![
        "set -e".to_string(),
        "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT".to_string(),
        format!("export BLOCKNODE_API=http://{http}"),
    ];
    for line in lines {
        if line.starts_with("cargo build --release") {
            out.push(format!("export PATH={}:$PATH", bin_dir.display()));
            continue;
        }
        let line = line.replace("127.0.0.1:3900", http);
        if line.starts_with("blocknode run &") {
            out.push(line.replacen(
                "blocknode run &",
                &format!("blocknode run --http-listen {http} --quic-listen {quic} &"),
                1,
            ));
            out.push(format!(
                "for i in $(seq 300); do curl -sf http://{http}/health >/dev/null && break; sleep 0.1; done"
            ));
            continue;
        }
        out.push(line);
    }
    out.join("\n") + "\n"
}

#[test]
fn the_readme_tour_runs_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("reading README.md");
    let lines = shell_block_after(&readme, "## A five-minute tour");
    assert!(
        lines.iter().any(|l| l.starts_with("blocknode run &")),
        "the tour no longer starts a node with `blocknode run &`: update this test"
    );
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("skipped: the tour uses curl, which is not installed");
        return;
    }
    let http = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let quic = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let text = script(&lines, &http, &quic);
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(&text)
        .current_dir(dir.path())
        .env_remove("BLOCKNODE_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout ends the node it started too.
        .process_group(0)
        .spawn()
        .expect("starting bash");
    let (mut stdout, mut stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > TOUR_WITHIN {
            // SAFETY: signalling the process group this test created.
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (out, err) = (out_reader.join().unwrap(), err_reader.join().unwrap());
    let status =
        status.unwrap_or_else(|| panic!("the tour did not end in {TOUR_WITHIN:?}:\n{out}\n{err}"));
    assert!(
        status.success(),
        "the tour failed ({status}):\nscript:\n{text}\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // What the README's comments promise.
    assert!(
        out.contains("hello"),
        "`blocknode get` did not print hello:\n{out}"
    );
    assert!(
        out.contains("present"),
        "`block info` shows no copy:\n{out}"
    );
    assert!(
        out.contains("\"hash\""),
        "the curl PUT did not answer a hash:\n{out}"
    );
    assert!(
        out.contains("storage"),
        "`blocknode status` printed nothing:\n{out}"
    );
}
