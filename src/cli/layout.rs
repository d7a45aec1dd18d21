//! `blocknode layout show|assign|remove|apply|revert`: one HTTP call each to
//! `/v1/layout`, and the printing of what a change moves (before it is applied, and
//! when it is).

use serde_json::{json, Value};

use super::client::Client;
use super::LayoutCommand;

/// Run one `layout` command.
pub fn run(c: &Client, cmd: LayoutCommand) -> anyhow::Result<()> {
    match cmd {
        LayoutCommand::Show => print_layout(&c.json("GET", "/v1/layout", None)?),
        LayoutCommand::Assign {
            node_id,
            zone,
            capacity,
            addr,
        } => {
            let body = json!({"op": "assign", "id": node_id, "zone": zone, "capacity": capacity, "addr": addr});
            let v = c.json("POST", "/v1/layout/stage", Some(body))?;
            println!("staged: assign {node_id}");
            print_staged(&v);
        }
        LayoutCommand::Remove { node_id } => {
            let body = json!({"op": "remove", "id": node_id});
            let v = c.json("POST", "/v1/layout/stage", Some(body))?;
            println!("staged: remove {node_id}");
            print_staged(&v);
        }
        LayoutCommand::Apply { version } => {
            let v = c.json(
                "POST",
                "/v1/layout/apply",
                Some(json!({ "version": version })),
            )?;
            println!(
                "layout version {} applied; the transition moves:",
                v["version"]
            );
            print_moves(&v["moves"]);
        }
        LayoutCommand::Revert => {
            let v = c.json("POST", "/v1/layout/revert", None)?;
            println!("dropped {} staged change(s)", v["dropped"]);
        }
    }
    Ok(())
}

fn short(v: &Value) -> &str {
    v.as_str().and_then(|s| s.get(..16)).unwrap_or("?")
}

/// The layout, what is staged and the running transition.
pub(super) fn print_layout(v: &Value) {
    println!(
        "layout version {}  digest {}  rf {}  partitions {}",
        v["version"],
        short(&v["digest"]),
        v["replication_factor"],
        v["partitions"]
    );
    println!(
        "  {:<18} {:<22} {:<10} {:>8} {:>10}",
        "node", "addr", "zone", "capacity", "partitions"
    );
    for m in v["members"].as_array().into_iter().flatten() {
        println!(
            "  {:<18} {:<22} {:<10} {:>8} {:>10}",
            short(&m["id"]),
            m["addr"].as_str().unwrap_or("?"),
            m["zone"].as_str().unwrap_or("?"),
            m["capacity"],
            m["partitions"]
        );
    }
    for m in v["retiring"].as_array().into_iter().flatten() {
        println!(
            "  {:<18} retiring (hands its partitions over)",
            short(&m["id"])
        );
    }
    if let Some(t) = v.get("transition").filter(|t| !t.is_null()) {
        print_transition(t);
    }
    print_staged(v);
}

/// One line per transition figure (shared with `blocknode status`).
pub(super) fn print_transition(t: &Value) {
    let eta = t["eta_secs"]
        .as_f64()
        .map_or("unknown".to_string(), |s| format!("{s:.0}s"));
    println!(
        "transition to version {}: {} partitions moving; left {} partitions, {} blocks, {} bytes; rate {:.0} B/s, ETA {}",
        t["version"],
        t["partitions_moving"],
        t["partitions_left"],
        t["blocks_left"],
        t["bytes_left"],
        t["rate_bytes_per_sec"].as_f64().unwrap_or(0.0),
        eta
    );
    if let Some(u) = t["holders_unknown"].as_array().filter(|u| !u.is_empty()) {
        println!("  waiting for {} old holder(s) to answer", u.len());
    }
}

fn print_staged(v: &Value) {
    let staged = v["staged"].as_array().cloned().unwrap_or_default();
    if staged.is_empty() {
        println!("nothing staged");
        return;
    }
    println!("staged changes:");
    for s in &staged {
        match s["op"].as_str() {
            Some("assign") => println!(
                "  assign {} zone {} capacity {} addr {}",
                short(&s["id"]),
                s["zone"].as_str().unwrap_or("?"),
                s["capacity"],
                s["addr"].as_str().unwrap_or("?")
            ),
            _ => println!("  remove {}", short(&s["id"])),
        }
    }
    match v.get("preview").filter(|p| !p.is_null()) {
        Some(p) => {
            println!(
                "applying them (blocknode layout apply --version {}) would move:",
                p["version"]
            );
            print_moves(&p["moves"]);
        }
        None => println!("the staged changes do not give a valid layout"),
    }
}

fn print_moves(m: &Value) {
    let moved = m["replicas_moved"].as_u64().unwrap_or(0);
    let total = m["replicas_total"].as_u64().unwrap_or(0).max(1);
    println!(
        "  {} of {} replicas ({:.1}%), {} partitions change holders",
        moved,
        total,
        100.0 * moved as f64 / total as f64,
        m["partitions_changed"]
    );
    for n in m["nodes"].as_array().into_iter().flatten() {
        println!(
            "  {:<18} {:>6} -> {:<6} partitions",
            short(&n["id"]),
            n["before"],
            n["after"]
        );
    }
}
