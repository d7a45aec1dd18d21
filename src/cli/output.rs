//! What the client commands print: the text forms of the API's JSON answers.

use serde_json::Value;

/// When a failed block is retried, relative to `now_ms` (both ms since the epoch).
pub(super) fn next_try_text(next_try_ms: Option<u64>, now_ms: u64) -> String {
    match next_try_ms {
        None => "?".into(),
        Some(t) if t <= now_ms => "now".into(),
        Some(t) => format!(
            "in {}",
            humantime::format_duration(std::time::Duration::from_secs((t - now_ms).div_ceil(1000)))
        ),
    }
}

/// `blocknode status`: one line per part of the node's status.
pub(super) fn print_status(v: &Value) {
    let n = &v["node"];
    println!(
        "node     {}  zone {}  version {}  up {}s",
        n["id"].as_str().unwrap_or("?"),
        n["zone"].as_str().unwrap_or("?"),
        n["version"].as_str().unwrap_or("?"),
        n["uptime_secs"]
    );
    let l = &v["layout"];
    println!(
        "layout   version {}  {}  rf {}  write quorum {}  {} members  {} partitions",
        l["version"],
        l["digest"].as_str().unwrap_or("?").get(..16).unwrap_or("?"),
        l["replication_factor"],
        l["write_quorum"],
        l["members"],
        l["partitions"]
    );
    if l["in_layout"].as_bool() == Some(false) {
        println!(
            "WARNING  this node is not in the layout: it serves no data until a layout names it"
        );
    }
    if let Some(d) = l["disagreeing_peers"].as_array().filter(|d| !d.is_empty()) {
        println!("WARNING  {} peer(s) announce another layout", d.len());
    }
    if let Some(t) = l.get("transition").filter(|t| !t.is_null()) {
        super::layout::print_transition(t);
    }
    println!("peers");
    for p in v["peers"].as_array().into_iter().flatten() {
        println!(
            "  {:<18} {:<22} {:<5} rtt {}",
            p["id"].as_str().unwrap_or("?").get(..16).unwrap_or("?"),
            p["addr"].as_str().unwrap_or("?"),
            if p["up"].as_bool() == Some(true) {
                "up"
            } else {
                "DOWN"
            },
            p["rtt_ms"]
                .as_f64()
                .map(|r| format!("{r:.2} ms"))
                .unwrap_or_else(|| "-".into())
        );
    }
    let s = &v["storage"];
    println!(
        "storage  {} blocks, {} bytes, {} corruptions found",
        s["blocks"], s["bytes"], s["corruptions_found"]
    );
    let r = &v["resync"];
    println!(
        "resync   queue {}  errors {}  busy {}  workers {}  tranquility {}",
        r["queue_length"], r["errors"], r["busy"], r["workers"], r["tranquility"]
    );
    let sc = &r["scrub"];
    println!(
        "scrub    {}  checked {}  corruptions {}  tranquility {}",
        sc["state"].as_str().unwrap_or("?"),
        sc["checked"],
        sc["corruptions"],
        sc["tranquility"]
    );
    let rp = &r["repair"];
    if rp["phase"].as_str().is_some_and(|p| !p.is_empty()) {
        println!(
            "repair   {}  queued {}  done {}",
            rp["phase"].as_str().unwrap_or("?"),
            rp["queued"],
            rp["done"]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_try_is_shown_relative_to_now() {
        assert_eq!(next_try_text(Some(1_000), 5_000), "now");
        assert_eq!(next_try_text(Some(65_000), 5_000), "in 1m");
        assert_eq!(next_try_text(None, 5_000), "?");
    }
}
