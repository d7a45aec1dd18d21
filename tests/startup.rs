//! Start-up time does not grow with the data: a node answers `/health` at once and
//! counts its block files in the background.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use blocknode_actors::blake2sum;

use common::{wait_for, Cluster};

/// `n` (empty, validly named) block files under `data_dir`, made by a few threads.
fn make_block_files(data_dir: &Path, n: u64) {
    let threads = 4u64;
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                let mut i = t;
                while i < n {
                    let hex = blake2sum(&i.to_le_bytes()).to_hex();
                    let dir = data_dir.join(&hex[0..2]).join(&hex[2..4]);
                    let path = dir.join(&hex);
                    if std::fs::write(&path, b"").is_err() {
                        std::fs::create_dir_all(&dir).expect("creating a block directory");
                        std::fs::write(&path, b"").expect("creating a block file");
                    }
                    i += threads;
                }
            });
        }
    });
}

/// A tmpfs mounted over a directory while it lives (root only): a million files are
/// made and removed in seconds there instead of minutes on disk. Lazily unmounted on
/// drop, so a node still running cannot keep it busy.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path) -> Option<Tmpfs> {
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0"));
        if !root {
            return None;
        }
        std::fs::create_dir_all(dir).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2g,nr_inodes=3m", "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_node_with_a_million_block_files_answers_health_within_two_seconds() {
    const FILES: u64 = 1_000_000;
    let mut c = Cluster::init(1, 1, "10m", |t| t.to_string());
    let tmpfs = Tmpfs::mount(&c.nodes[0].data_dir);
    if tmpfs.is_none() {
        eprintln!("not root or no tmpfs: the block files go to the disk (slower)");
    }
    let made = Instant::now();
    make_block_files(&c.nodes[0].data_dir, FILES);
    eprintln!("made {FILES} block files in {:?}", made.elapsed());

    let start = Instant::now();
    c.start_node(0);
    let url = format!("{}/health", c.nodes[0].api);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let healthy = wait_for("/health to answer 200", Duration::from_secs(30), || {
        let ok = agent.get(&url).call().is_ok_and(|r| r.status() == 200);
        if !ok {
            std::thread::sleep(Duration::from_millis(10));
        }
        ok.then(|| start.elapsed())
    });
    eprintln!("/health answered {healthy:?} after the start");
    assert!(
        healthy < Duration::from_secs(2),
        "a node with {FILES} block files took {healthy:?} to answer /health (want < 2 s)"
    );

    // The count runs in the background and ends with the exact figure.
    let counted = wait_for(
        "the start-up count to finish",
        Duration::from_secs(600),
        || {
            let st = c.get_json(0, "/v1/status");
            (st["storage"]["counting"] == false).then(|| st["storage"]["blocks"].as_u64())
        },
    );
    eprintln!("counted in {:?}", start.elapsed());
    assert_eq!(counted, Some(FILES), "blocks counted in the background");
    // The node first, then the mount under it.
    drop(c);
    drop(tmpfs);
}
