//! Headless Chromium driven through chromedriver with the W3C WebDriver JSON protocol
//! (plain HTTP on loopback, spoken with `ureq`; no WebDriver crate needed for the few
//! commands a test uses). [`Browser::start`] runs chromedriver on a port chosen at run
//! time in its own process group, opens a session whose Chromium has a fresh
//! `--user-data-dir` in a temp dir, and [`Drop`] ends the session and kills the whole
//! group (chromedriver and every Chromium process it started), also when the test fails.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The W3C name of an element reference in JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where the Debian packages `chromium` and `chromium-driver` put their programs.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Chromium and chromedriver, or why they cannot be used here (for a "skipped:" line).
pub fn find_browser() -> Result<(PathBuf, PathBuf), String> {
    let chromium = PathBuf::from(CHROMIUM);
    let driver = PathBuf::from(CHROMEDRIVER);
    for (p, pkg) in [(&chromium, "chromium"), (&driver, "chromium-driver")] {
        if !p.is_file() {
            return Err(format!(
                "{} not found (Debian package {pkg}; .ci/run installs it)",
                p.display()
            ));
        }
    }
    Ok((chromium, driver))
}

/// A chromedriver process and one browser session; see the module documentation.
pub struct Browser {
    driver: Child,
    base: String,
    session: Option<String>,
    agent: ureq::Agent,
    _profile: tempfile::TempDir,
    log: PathBuf,
}

/// A free loopback port (the OS picks it; the listener is closed before chromedriver
/// binds it, a race the start loop below retries).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a loopback port to find a free one")
}

impl Browser {
    /// Start chromedriver and a headless Chromium session (bounded: 30 s).
    pub fn start(chromium: &Path, chromedriver: &Path) -> Browser {
        let profile = tempfile::tempdir().expect("creating Chromium's user-data-dir");
        let log = profile.path().join("chromedriver.log");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: Drop kills chromedriver and every Chromium process
            // under it at once, whatever state the session is in.
            .process_group(0)
            .spawn()
            .expect("spawning chromedriver");
        let mut b = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: None,
            agent,
            log,
            _profile: profile,
        };
        let start = Instant::now();
        loop {
            let ready = b
                .call("GET", "/status", None)
                .ok()
                .is_some_and(|v| v["value"]["ready"].as_bool() == Some(true));
            if ready {
                break;
            }
            if let Ok(Some(st)) = b.driver.try_wait() {
                panic!("chromedriver exited with {st}; log:\n{}", b.driver_log());
            }
            if start.elapsed() > Duration::from_secs(30) {
                panic!(
                    "chromedriver not ready on {} after 30 s; log:\n{}",
                    b.base,
                    b.driver_log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let user_data = format!("--user-data-dir={}", b._profile.path().display());
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1280,900", user_data,
                ],
            },
        }}});
        let v = b
            .call("POST", "/session", Some(caps))
            .unwrap_or_else(|e| panic!("new WebDriver session: {e}; log:\n{}", b.driver_log()));
        let id = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| {
                panic!(
                    "new WebDriver session refused: {v}; log:\n{}",
                    b.driver_log()
                )
            })
            .to_string();
        b.session = Some(id);
        b
    }

    /// The end of chromedriver's log (for failure messages).
    pub fn driver_log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// One WebDriver command: the JSON answer, or the error it carried.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{}", self.base, path);
        let res = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (_, Some(b)) => self.agent.post(&url).send_json(b),
            (_, None) => self.agent.post(&url).send_json(json!({})),
        };
        let mut r = res.map_err(|e| format!("{method} {path}: {e}"))?;
        let status = r.status().as_u16();
        let v: Value = r
            .body_mut()
            .read_json()
            .map_err(|e| format!("{method} {path}: answer is not JSON: {e}"))?;
        if status != 200 {
            return Err(format!("{method} {path}: {status} {}", v["value"]));
        }
        Ok(v)
    }

    /// A command of the open session; panics with WebDriver's error.
    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let id = self
            .session
            .as_deref()
            .expect("a WebDriver session is open");
        self.call(method, &format!("/session/{id}{path}"), body)
            .unwrap_or_else(|e| panic!("WebDriver {e}"))["value"]
            .take()
    }

    /// Load `url` (returns once the document has loaded).
    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({ "url": url })));
    }

    /// The current URL.
    pub fn url(&self) -> String {
        self.session_call("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The reference of the first element matching `css`.
    fn element(&self, css: &str) -> String {
        let v = self.session_call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css:?}: {v}"))
            .to_string()
    }

    /// Type `text` into the element matching `css`.
    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css);
        self.session_call(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Click the element matching `css`.
    pub fn click(&self, css: &str) {
        let e = self.element(css);
        self.session_call("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    /// Run `script` (a function body; `return` gives the value) in the page.
    pub fn eval(&self, script: &str) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// A PNG of the viewport.
    pub fn screenshot_png(&self) -> Vec<u8> {
        let v = self.session_call("GET", "/screenshot", None);
        base64_decode(v.as_str().unwrap_or_default())
    }
}

/// Decode standard base64 (WebDriver's screenshot encoding), ignoring invalid bytes.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(id) = self.session.take() {
            // Ends Chromium cleanly when chromedriver still answers; bounded by the
            // agent's timeout.
            let _ = self.call("DELETE", &format!("/session/{id}"), None);
        }
        let pgid = self.driver.id();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
