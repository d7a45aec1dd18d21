//! The status page on a real 3-node cluster: `GET /v1/status` lists
//! every member with what the page draws, and the page itself, loaded in headless
//! Chromium (through chromedriver), takes the token once, lists the three nodes as up,
//! and shows a killed node down within a bounded time. Without Chromium or chromedriver
//! the browser test prints "skipped: ..." and returns.
//!
//! `BLOCKNODE_PAGE_SCREENSHOT=/tmp/page.png` makes the browser test save a screenshot of
//! the page once the node is shown down.

mod common;

use std::time::{Duration, Instant};

use serde_json::Value;

use common::webdriver::{find_browser, Browser};
use common::{random_bytes, wait_for, Cluster};

/// A killed node is marked down when its QUIC connection times out (15 s idle timeout,
/// pings every 3 s), then the page shows it at its next refresh (2 s).
const DOWN_WITHIN: Duration = Duration::from_secs(60);
/// A node's counts reach its peers within its push period (2 s) plus a ping (3 s).
const COUNTS_WITHIN: Duration = Duration::from_secs(15);

/// A row's (blocks, bytes) when both are numbers.
fn counts(row: &Value) -> Option<(u64, u64)> {
    Some((row["blocks"].as_u64()?, row["bytes"].as_u64()?))
}

/// Wait until every node lists every member's blocks and bytes as that member reports
/// them itself; the panic names the last row that differed.
fn wait_counts_agree(c: &Cluster) {
    let start = Instant::now();
    loop {
        let views: Vec<Vec<Value>> = (0..c.nodes.len()).map(|i| members(c, i)).collect();
        let own = |id: &str| {
            let i = c.nodes.iter().position(|n| n.id == id)?;
            views[i]
                .iter()
                .find(|r| r["this_node"] == Value::Bool(true))
                .and_then(counts)
        };
        let mismatch = views.iter().enumerate().find_map(|(i, rows)| {
            rows.iter().find_map(|r| {
                let id = r["id"].as_str().unwrap_or_default();
                let want = own(id);
                (want.is_none() || counts(r) != want)
                    .then(|| format!("node {i} lists {r} but that node reports {want:?}"))
            })
        });
        let Some(why) = mismatch else {
            return;
        };
        if start.elapsed() > COUNTS_WITHIN {
            panic!("counts per node did not agree within {COUNTS_WITHIN:?}: {why}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The `members` rows of node `i`'s status, by id.
fn members(c: &Cluster, i: usize) -> Vec<Value> {
    c.get_json(i, "/v1/status")["members"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("/v1/status of node {i} has no members array"))
}

#[test]
fn status_lists_every_member_with_zone_capacity_partitions_and_state() {
    let mut c = Cluster::start(3, 3, "10m", |s| s.to_string());
    c.wait_peers_up(0);
    for i in 0..4 {
        c.put(0, &random_bytes(10_000 + i), Some(&format!("r{i}")));
    }
    let status = c.get_json(0, "/v1/status");
    let partitions = status["layout"]["partitions"]
        .as_u64()
        .expect("layout.partitions");
    assert!(
        status["peers"].as_array().is_some_and(|p| p.len() == 2),
        "the existing peers field is kept: {}",
        status["peers"]
    );
    let rows = members(&c, 0);
    assert_eq!(rows.len(), 3, "three members: {rows:?}");
    for n in &c.nodes {
        let row = rows
            .iter()
            .find(|r| r["id"].as_str() == Some(n.id.as_str()))
            .unwrap_or_else(|| panic!("node {} missing from members: {rows:?}", n.name));
        assert_eq!(
            row["up"],
            Value::Bool(true),
            "{} should be up: {row}",
            n.name
        );
        assert!(row["zone"].as_str().is_some_and(|z| !z.is_empty()), "{row}");
        assert!(row["capacity"].as_u64().is_some_and(|c| c >= 1), "{row}");
        // RF3 over three nodes: every node holds every partition.
        assert_eq!(row["partitions"].as_u64(), Some(partitions), "{row}");
    }
    let me = rows
        .iter()
        .find(|r| r["this_node"] == Value::Bool(true))
        .expect("a this_node row");
    assert_eq!(me["id"].as_str(), Some(c.nodes[0].id.as_str()));
    // The start-up count and the four PUTs: this node knows its own figures.
    wait_for(
        "node 0 to count its four blocks",
        Duration::from_secs(10),
        || {
            let rows = members(&c, 0);
            let me = rows.iter().find(|r| r["this_node"] == Value::Bool(true))?;
            (me["blocks"].as_u64() == Some(4) && me["bytes"].as_u64().is_some_and(|b| b > 40_000))
                .then_some(())
        },
    );
    for r in rows.iter().filter(|r| r["this_node"] != Value::Bool(true)) {
        assert!(r["rtt_ms"].as_f64().is_some(), "a peer's RTT is known: {r}");
    }
    // Every node knows every node's counts (announced in pings), as that node has them.
    wait_counts_agree(&c);
    for r in members(&c, 0) {
        assert_eq!(
            counts(&r).map(|(b, _)| b),
            Some(4),
            "RF3: every node has the 4 blocks: {r}"
        );
        assert!(
            r["stats_age_secs"].as_f64().is_some_and(|a| a < 10.0),
            "the counts' age is given and recent: {r}"
        );
    }
    let gone = c.nodes[2].id.clone();
    c.kill(2);
    wait_for("node 0 to list node 2 as down", DOWN_WITHIN, || {
        let rows = members(&c, 0);
        let row = rows
            .iter()
            .find(|r| r["id"].as_str() == Some(gone.as_str()))?;
        (row["up"] == Value::Bool(false)).then_some(())
    });
}

/// What the page shows: (node id, data-state) of each row, the view, the banner.
fn page_state(b: &Browser) -> (Vec<(String, String)>, String, String) {
    let v = b.eval(
        "return { rows: [...document.querySelectorAll('tr[data-node-id]')].map((r) => \
         [r.dataset.nodeId, r.dataset.state]), view: document.body.dataset.view || '', \
         banner: document.getElementById('banner').textContent };",
    );
    let rows = v["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    (
                        r[0].as_str().unwrap_or_default().to_string(),
                        r[1].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    (rows, text("view"), text("banner"))
}

/// Wait (bounded) until the page's state satisfies `ok`; the panic shows the last state.
fn wait_page(
    b: &Browser,
    what: &str,
    timeout: Duration,
    ok: impl Fn(&[(String, String)], &str) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let (rows, view, banner) = page_state(b);
        if ok(&rows, &view) {
            return start.elapsed();
        }
        if start.elapsed() > timeout {
            panic!(
                "timed out after {timeout:?} waiting for the page to {what}; \
                 view {view:?}, banner {banner:?}, rows {rows:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn state_of<'a>(rows: &'a [(String, String)], id: &str) -> Option<&'a str> {
    rows.iter()
        .find(|(rid, _)| rid == id)
        .map(|(_, s)| s.as_str())
}

#[test]
fn the_page_lists_three_nodes_up_and_shows_a_killed_one_down() {
    let (chromium, chromedriver) = match find_browser() {
        Ok(found) => found,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let mut c = Cluster::start(3, 3, "10m", |s| s.to_string());
    c.wait_peers_up(0);
    for i in 0..3 {
        c.put(0, &random_bytes(200_000 + i), Some(&format!("r{i}")));
    }
    let b = Browser::start(&chromium, &chromedriver);
    let page = format!("{}/", c.nodes[0].api);
    b.goto(&page);
    wait_page(&b, "ask for a token", Duration::from_secs(10), |_, v| {
        v == "login"
    });
    let shown = |id: &str| {
        b.eval(&format!(
            "return getComputedStyle(document.getElementById('{id}')).display !== 'none';"
        ))
    };
    assert_eq!(
        (shown("login"), shown("dash")),
        (Value::Bool(true), Value::Bool(false)),
        "before a token is entered only the sign-in form shows"
    );
    let token = c.nodes[0].token.clone();
    b.type_into("#token", &token);
    b.click("#login-form button[type=submit]");
    let ids: Vec<String> = c.nodes.iter().map(|n| n.id.clone()).collect();
    let all_up = |rows: &[(String, String)], view: &str| {
        view == "status" && ids.iter().all(|id| state_of(rows, id) == Some("up"))
    };
    wait_page(
        &b,
        "list the three nodes as up",
        Duration::from_secs(20),
        all_up,
    );
    let (rows, _, _) = page_state(&b);
    assert_eq!(
        rows.len(),
        3,
        "exactly the three members are listed: {rows:?}"
    );
    // Bytes per node as bars: every node's, its peers' from their pings.
    let bars = "return [...document.querySelectorAll('tr[data-node-id]')].map((r) => { \
                const td = r.querySelector('td[data-role=bytes]'); \
                return [r.dataset.nodeId, td ? td.dataset.value : '', !!(td && td.querySelector('.bar'))]; });";
    let start = Instant::now();
    loop {
        let v = b.eval(bars);
        let rows = v.as_array().cloned().unwrap_or_default();
        let drawn = rows.len() == 3
            && rows.iter().all(|r| {
                r[1].as_str()
                    .is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n > 500_000))
                    && r[2] == Value::Bool(true)
            });
        if drawn {
            break;
        }
        assert!(
            start.elapsed() < COUNTS_WITHIN,
            "the page did not draw a bytes bar for every node within {COUNTS_WITHIN:?} \
             (node, bytes, bar drawn): {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        (shown("login"), shown("dash")),
        (Value::Bool(false), Value::Bool(true)),
        "signed in, the status shows and the sign-in form does not"
    );
    assert!(
        !b.url().contains(&token),
        "the token leaked into the URL: {}",
        b.url()
    );
    let kept = b.eval("return sessionStorage.getItem('blocknode_token');");
    assert_eq!(
        kept.as_str(),
        Some(token.as_str()),
        "the token is kept in sessionStorage"
    );
    // Entered once: a reload of the tab shows the status without asking again.
    b.goto(&page);
    wait_page(
        &b,
        "show the status again after a reload without asking for the token",
        Duration::from_secs(20),
        all_up,
    );

    let killed = Instant::now();
    c.kill(2);
    let (down_id, up_ids) = (ids[2].clone(), [ids[0].clone(), ids[1].clone()]);
    let took = wait_page(
        &b,
        "show node 2 down and the others up",
        DOWN_WITHIN,
        |rows, view| {
            view == "status"
                && state_of(rows, &down_id) == Some("down")
                && up_ids.iter().all(|id| state_of(rows, id) == Some("up"))
        },
    );
    println!(
        "the page showed the killed node down {:.1} s after the kill (polled for {:.1} s)",
        killed.elapsed().as_secs_f64(),
        took.as_secs_f64()
    );
    if let Ok(path) = std::env::var("BLOCKNODE_PAGE_SCREENSHOT") {
        std::fs::write(&path, b.screenshot_png())
            .unwrap_or_else(|e| panic!("writing the screenshot {path}: {e}"));
        println!("screenshot written to {path}");
    }
}
