//! The status page's own rendering of awkward answers, in headless Chromium without a
//! driver: the page (as the node serves it) is given a `/v1/status` and a
//! `/v1/resync/errors` answer through a stubbed `fetch`, and the DOM Chromium ends with
//! is checked: a resync error shows a short hash with the full one on hover and its
//! message as text; scrub never says "63 of 46"; the transition line carries its ETA.
//! Without Chromium the test prints "skipped: ..." and returns.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::webdriver::find_browser;
use common::Cluster;

/// Chromium's whole run: start, load, run the page's first refresh, print the DOM.
const RENDER_WITHIN: Duration = Duration::from_secs(60);

/// The page loaded with `status` and `errors` as its API's answers; returns the DOM.
fn render(chromium: &std::path::Path, page: &str, status: &str, errors: &str) -> String {
    let stub = format!(
        "<script>\nsessionStorage.setItem(\"blocknode_token\", \"t\");\n\
         const STATUS = {status}, ERRORS = {errors};\n\
         window.fetch = async (p) => ({{ ok: true, status: 200, \
         json: async () => (String(p).includes(\"resync/errors\") ? ERRORS : STATUS) }});\n\
         </script>\n"
    );
    let page = page.replacen("<script>", &format!("{stub}<script>"), 1);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("page.html");
    std::fs::write(&file, page).unwrap();
    let mut child = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg("--virtual-time-budget=3000")
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg(format!("file://{}", file.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting chromium");
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > RENDER_WITHIN {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not render the page within {RENDER_WITHIN:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().unwrap()
}

#[test]
fn resync_errors_scrub_and_transition_read_as_text() {
    let chromium = match find_browser() {
        Ok((chromium, _driver)) => chromium,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let c = Cluster::start(1, 1, "10m", |cfg| cfg.to_string());
    let page = String::from_utf8(c.request(0, "GET", "/", None).body).unwrap();
    let mut status = c.get_json(0, "/v1/status");
    status["layout"]["transition"] = serde_json::json!({
        "version": 2, "partitions_moving": 96, "partitions_left": 40, "blocks_left": 212,
        "bytes_left": 240128, "holders_unknown": [], "rate_bytes_per_sec": 10240.0,
        "eta_secs": 1400.0
    });
    status["resync"]["scrub"]["state"] = "running".into();
    status["resync"]["scrub"]["checked"] = 63.into();
    status["storage"]["blocks"] = 46.into();
    let hash = "a3f1".repeat(16);
    let errors = serde_json::json!({"errors": [{
        "hash": hash, "count": 3, "next_try": 0,
        "error": format!("peer 1eec5b07 answered not found: block {hash} is not stored there"),
    }]});
    let dom = render(&chromium, &page, &status.to_string(), &errors.to_string());

    let row = dom
        .split("<tr ")
        .find(|r| r.contains(&format!("data-hash=\"{hash}\"")))
        .unwrap_or_else(|| panic!("no resync error row in:\n{dom}"));
    assert!(
        row.contains(&format!("title=\"{hash}\" data-role=\"hash\""))
            || row.contains(&format!("data-role=\"hash\" title=\"{hash}\"")),
        "the full hash is not on hover: {row}"
    );
    assert!(
        row.contains(&format!("<code>{}…</code>", &hash[..12])),
        "{row}"
    );
    assert!(
        row.contains("answered not found: block a3f1a3f1a3f1… is not stored there"),
        "the error is not shown as text with the hash cut: {row}"
    );
    // The page's script is part of the dump: look inside the rendered elements only.
    let scrub = element(&dom, "<dl id=\"scrub\">", "</dl>");
    assert!(!scrub.contains("63 of 46"), "scrub reads 63 of 46: {scrub}");
    assert!(
        scrub.contains("63 blocks (46 stored now"),
        "scrub's count: {scrub}"
    );
    let layout = element(&dom, "id=\"layout-line\"", "</");
    assert!(
        layout.contains("40 partitions left"),
        "no transition: {layout}"
    );
    assert!(layout.contains("ETA 23 min"), "no transition ETA: {layout}");
}

/// The text from `start` to the next `end` in the DOM.
fn element<'a>(dom: &'a str, start: &str, end: &str) -> &'a str {
    let from = dom
        .find(start)
        .unwrap_or_else(|| panic!("no {start} in:\n{dom}"));
    let to = dom[from..].find(end).map_or(dom.len(), |e| from + e);
    &dom[from..to]
}
