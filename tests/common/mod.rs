//! Shared harness of the multi-process tests: a cluster of real `blocknode` processes.
//!
//! [`Cluster::new`] runs `blocknode dev-cluster --init-only` into a temp dir (CA, node
//! certificates, configs on free loopback ports), lets the test adjust the configs, starts
//! every node with `blocknode run --config`, and waits until each answers `/health`.
//! Dropping the cluster kills the processes and removes the directory. Every wait is
//! bounded; a failure names the node and what it was waiting for.

#![allow(dead_code)]

pub mod faults;
pub mod fiu;
pub mod load;
pub mod objects;
pub mod raw_http;
pub mod webdriver;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Path of the binary under test (built by cargo for integration tests).
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_blocknode"))
}

/// One node of the cluster as described by `cluster.json`.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub name: String,
    pub id: String,
    pub config: PathBuf,
    pub api: String,
    pub token: String,
    pub data_dir: PathBuf,
}

/// A running (or partly stopped) cluster of blocknode processes.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<NodeInfo>,
    children: Vec<Option<Child>>,
    agent: ureq::Agent,
}

/// Bounded polling: retry `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The reply of an HTTP call: status and body.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON (panics with the body text when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "expected a JSON body, got {:?}: {e}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

impl Cluster {
    /// Initialise an `n`-node cluster with replication factor `rf` and the given gc delay,
    /// apply `edit` to each node's config text, then start every node.
    pub fn start(n: usize, rf: usize, gc_delay: &str, edit: impl Fn(&str) -> String) -> Cluster {
        let mut c = Cluster::init(n, rf, gc_delay, edit);
        for i in 0..n {
            c.start_node(i);
        }
        for i in 0..n {
            c.wait_ready(i);
        }
        c
    }

    /// [`Cluster::start`] without starting any node.
    pub fn init(n: usize, rf: usize, gc_delay: &str, edit: impl Fn(&str) -> String) -> Cluster {
        let dir = tempfile::tempdir().expect("creating the cluster's temp dir");
        let out = Command::new(bin())
            .args(["dev-cluster", "--init-only", "--nodes", &n.to_string()])
            .args(["--replication", &rf.to_string(), "--gc-delay", gc_delay])
            .arg("--dir")
            .arg(dir.path())
            .output()
            .expect("running blocknode dev-cluster");
        assert!(
            out.status.success(),
            "dev-cluster --init-only failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster_json: Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("cluster.json")).expect("reading cluster.json"),
        )
        .expect("cluster.json is JSON");
        let nodes: Vec<NodeInfo> = cluster_json["nodes"]
            .as_array()
            .expect("cluster.json has a nodes array")
            .iter()
            .map(|v| NodeInfo {
                name: v["name"].as_str().unwrap_or_default().to_string(),
                id: v["id"].as_str().unwrap_or_default().to_string(),
                config: PathBuf::from(v["config"].as_str().unwrap_or_default()),
                api: v["api"]
                    .as_str()
                    .unwrap_or_default()
                    .trim_end_matches('/')
                    .to_string(),
                token: v["token"].as_str().unwrap_or_default().to_string(),
                data_dir: PathBuf::from(v["data_dir"].as_str().unwrap_or_default()),
            })
            .collect();
        assert_eq!(nodes.len(), n, "cluster.json should list {n} nodes");
        for node in &nodes {
            let text = std::fs::read_to_string(&node.config).expect("reading a node config");
            std::fs::write(&node.config, edit(&text)).expect("writing a node config");
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Cluster {
            dir,
            children: nodes.iter().map(|_| None).collect(),
            nodes,
            agent,
        }
    }

    /// Whether node `i` runs.
    pub fn is_running(&self, i: usize) -> bool {
        self.children[i].is_some()
    }

    /// Rewrite node `i`'s config so that its member list is exactly the nodes `keep`
    /// (their `[[members]]` tables as `dev-cluster` wrote them).
    pub fn set_members(&self, i: usize, keep: &[usize]) {
        let path = &self.nodes[i].config;
        // The tables as first written (every node's config lists every node then).
        let orig = path.with_extension("toml.orig");
        if !orig.exists() {
            std::fs::copy(path, &orig).expect("keeping the original config");
        }
        let text = std::fs::read_to_string(&orig).expect("reading a node config");
        let mut parts = text.split("\n[[members]]\n");
        let head = parts.next().unwrap_or_default().to_string();
        let tables: Vec<&str> = parts.collect();
        let mut out = head;
        for j in keep {
            let id = &self.nodes[*j].id;
            let t = tables
                .iter()
                .find(|t| t.contains(id.as_str()))
                .unwrap_or_else(|| {
                    panic!("no [[members]] table for node {j} in {}", path.display())
                });
            out.push_str("\n[[members]]\n");
            out.push_str(t.trim_end());
            out.push('\n');
        }
        std::fs::write(path, out).expect("writing a node config");
    }

    /// Stop node `i` (SIGTERM), start it again and wait until it is healthy.
    pub fn restart(&mut self, i: usize) {
        self.stop(i);
        self.start_node(i);
        self.wait_ready(i);
    }

    /// Start node `i` (it must be stopped).
    pub fn start_node(&mut self, i: usize) {
        assert!(self.children[i].is_none(), "node {i} is already running");
        self.spawn_node(i, Command::new(bin()));
    }

    /// Run `program` (the binary, or a wrapper such as `fiu-run ... <binary>`) with
    /// `run --config <node i's config>`, logging to the node's log.
    fn spawn_node(&mut self, i: usize, mut program: Command) {
        let log = std::fs::File::create(self.dir.path().join(format!("node{i}.log")))
            .expect("creating a node log");
        let child = program
            .arg("run")
            .arg("--config")
            .arg(&self.nodes[i].config)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning log handle"))
            .stderr(log)
            .spawn()
            .expect("spawning blocknode run");
        self.children[i] = Some(child);
    }

    /// Wait until node `i` answers `/health` and sees its peers (bounded).
    pub fn wait_ready(&mut self, i: usize) {
        let url = format!("{}/health", self.nodes[i].api);
        let agent = self.agent.clone();
        let name = self.nodes[i].name.clone();
        let log = self.log(i);
        let start = Instant::now();
        loop {
            if let Ok(r) = agent.get(&url).call() {
                if r.status() == 200 {
                    break;
                }
            }
            if let Some(child) = self.children[i].as_mut() {
                if let Ok(Some(st)) = child.try_wait() {
                    panic!("node {name} exited with {st} before becoming ready; log:\n{log}");
                }
            }
            if start.elapsed() > Duration::from_secs(30) {
                panic!("node {name} not healthy after 30 s; log:\n{}", self.log(i));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until node `i` reports every peer up.
    pub fn wait_peers_up(&self, i: usize) {
        self.wait_n_peers_up(i, self.nodes.len() - 1);
    }

    /// Wait until node `i` reports at least `want` peers up.
    pub fn wait_n_peers_up(&self, i: usize, want: usize) {
        wait_for(
            &format!("{} to see {want} peers up", self.nodes[i].name),
            Duration::from_secs(20),
            || {
                let s = self.get_json(i, "/v1/status");
                let up = s["peers"]
                    .as_array()?
                    .iter()
                    .filter(|p| p["up"].as_bool() == Some(true))
                    .count();
                (up >= want).then_some(())
            },
        )
    }

    /// PID of node `i` (it must be running).
    pub fn pid(&self, i: usize) -> u32 {
        self.children[i].as_ref().expect("node is running").id()
    }

    /// SIGKILL node `i` and wait for it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM node `i` and wait (bounded) for a clean exit; SIGKILL if it hangs.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let start = Instant::now();
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if start.elapsed() > Duration::from_secs(10) {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The log of node `i` so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node{i}.log"))).unwrap_or_default()
    }

    /// An HTTP request to node `i` with its token.
    pub fn request(&self, i: usize, method: &str, path: &str, body: Option<&[u8]>) -> Reply {
        let url = format!("{}{}", self.nodes[i].api, path);
        let auth = format!("Bearer {}", self.nodes[i].token);
        let res = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            ("HEAD", _) => self.agent.head(&url).header("Authorization", &auth).call(),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .call(),
            ("PUT", Some(b)) => self.agent.put(&url).header("Authorization", &auth).send(b),
            ("PUT", None) => self
                .agent
                .put(&url)
                .header("Authorization", &auth)
                .send_empty(),
            ("POST", Some(b)) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(b),
            ("POST", None) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send_empty(),
            _ => panic!("unsupported method {method}"),
        };
        let mut r = res.unwrap_or_else(|e| panic!("{method} {url} failed: {e}"));
        let status = r.status().as_u16();
        let body = r
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .unwrap_or_default();
        Reply { status, body }
    }

    /// GET a JSON document from node `i`, asserting 200.
    pub fn get_json(&self, i: usize, path: &str) -> Value {
        let r = self.request(i, "GET", path, None);
        assert_eq!(
            r.status,
            200,
            "GET {path} on {}: {}",
            self.nodes[i].name,
            String::from_utf8_lossy(&r.body)
        );
        r.json()
    }

    /// PUT a block through node `i`; returns its hash.
    pub fn put(&self, i: usize, data: &[u8], ref_id: Option<&str>) -> String {
        let path = match ref_id {
            Some(r) => format!("/v1/blocks?ref={r}"),
            None => "/v1/blocks?unreferenced=true".to_string(),
        };
        let r = self.request(i, "PUT", &path, Some(data));
        assert_eq!(
            r.status,
            201,
            "PUT block through {}: {}",
            self.nodes[i].name,
            String::from_utf8_lossy(&r.body)
        );
        let j = r.json();
        assert_eq!(
            j["size"].as_u64(),
            Some(data.len() as u64),
            "PUT reply size"
        );
        j["hash"]
            .as_str()
            .expect("PUT reply has a hash")
            .to_string()
    }

    /// GET a block through node `i`: status and body.
    pub fn get(&self, i: usize, hash: &str) -> Reply {
        self.request(i, "GET", &format!("/v1/blocks/{hash}"), None)
    }

    /// Paths of the block files (plain or .zst) of `hash` in node `i`'s data dir.
    pub fn block_files(&self, i: usize, hash: &str) -> Vec<PathBuf> {
        let d = self.nodes[i].data_dir.join(&hash[0..2]).join(&hash[2..4]);
        [hash.to_string(), format!("{hash}.zst")]
            .iter()
            .map(|n| d.join(n))
            .filter(|p| p.is_file())
            .collect()
    }

    /// Whether node `i` holds a copy of `hash` on disk.
    pub fn has_block(&self, i: usize, hash: &str) -> bool {
        !self.block_files(i, hash).is_empty()
    }

    /// Run the CLI against node `i`; returns (success, stdout, stderr).
    pub fn cli(&self, i: usize, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(bin())
            .args(["--api", &self.nodes[i].api, "--token", &self.nodes[i].token])
            .args(args)
            .output()
            .expect("running the blocknode CLI");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

/// Random bytes for test blocks (incompressible).
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::fill(&mut v[..]);
    v
}

/// Find every file under `dir` whose name ends with `suffix`.
pub fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.to_string_lossy().ends_with(suffix) {
                    out.push(p);
                }
            }
        }
    }
    out
}

/// A node's QUIC address, read from its config.
pub fn quic_addr(c: &Cluster, i: usize) -> String {
    let text = std::fs::read_to_string(&c.nodes[i].config).expect("reading a node config");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("quic_listen = "))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| panic!("no quic_listen in node {i}'s config"))
}

/// Set top-level TOML keys (replacing existing lines, else inserting at the top).
pub fn set_keys(config: &str, keys: &[(&str, &str)]) -> String {
    let mut lines: Vec<String> = config.lines().map(str::to_string).collect();
    for (k, v) in keys {
        let line = format!("{k} = {v}");
        match lines.iter().position(|l| {
            l.trim_start().starts_with(&format!("{k} "))
                || l.trim_start().starts_with(&format!("{k}="))
        }) {
            Some(i) => lines[i] = line,
            None => lines.insert(0, line),
        }
    }
    lines.join("\n") + "\n"
}
