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
    // A joining node has the empty layout (version 0, rf 0): say what it waits for.
    let unassigned = l["version"].as_u64() == Some(0) && l["in_layout"].as_bool() == Some(false);
    if unassigned {
        println!(
            "layout   not yet assigned: on a member, run `blocknode layout assign {} --zone {} \
             --capacity 1 --addr <its QUIC address>` (its log has the exact line), then \
             `blocknode layout apply`",
            n["id"].as_str().unwrap_or("?"),
            n["zone"].as_str().unwrap_or("?"),
        );
    } else {
        println!(
            "layout   version {}  {}  rf {}  write quorum {}  {} members  {} partitions",
            l["version"],
            l["digest"].as_str().unwrap_or("?").get(..16).unwrap_or("?"),
            l["replication_factor"],
            l["write_quorum"],
            l["members"],
            l["partitions"]
        );
    }
    if l["in_layout"].as_bool() == Some(false) && !unassigned {
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

/// `blocknode block info`: one row per holder, then this node's refs. A holder that
/// could not be asked reads "unknown (down)", not absent; during a transition each row
/// says whether the node is a new holder (joining) or an old one (leaving).
pub(super) fn block_info_text(v: &Value, hash: &str) -> String {
    let mut out = format!("block {}\n", v["hash"].as_str().unwrap_or(hash));
    out.push_str(&format!(
        "{:<18} {:<8} {:<15} {:>6} {:<10} error\n",
        "holder", "role", "copy", "rc", "deletable"
    ));
    for h in v["holders"].as_array().into_iter().flatten() {
        let node = h["node"].as_str().unwrap_or("?");
        let state = h["state"]
            .as_str()
            .unwrap_or(if h["present"].as_bool() == Some(true) {
                "present"
            } else {
                "absent"
            });
        let (copy, rc, deletable) = if state == "unknown" {
            (
                "unknown (down)".to_string(),
                "-".to_string(),
                "-".to_string(),
            )
        } else {
            (
                state.to_string(),
                h["rc"].to_string(),
                h["deletable"].to_string(),
            )
        };
        out.push_str(&format!(
            "{:<18} {:<8} {:<15} {:>6} {:<10} {}\n",
            node.get(..16).unwrap_or(node),
            h["role"].as_str().unwrap_or("holder"),
            copy,
            rc,
            deletable,
            h["error"].as_str().unwrap_or("-")
        ));
    }
    let refs: Vec<String> = v["local"]["refs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            format!(
                "{} ({})",
                r["ref"].as_str().unwrap_or("?"),
                r["state"].as_str().unwrap_or("?")
            )
        })
        .collect();
    let refs = if refs.is_empty() {
        "none".to_string()
    } else {
        refs.join(", ")
    };
    if v["local"]["holder"].as_bool() == Some(false) {
        out.push_str(
            "this node is not a holder: it keeps no refs of this block (ask a holder's API)\n",
        );
    } else {
        out.push_str(&format!("local rc {}; refs: {refs}\n", v["local"]["rc"]));
    }
    out
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

    #[test]
    fn block_info_tells_down_from_absent_and_marks_transition_roles() {
        let v = serde_json::json!({
            "hash": "ab",
            "holders": [
                {"node": "1111111111111111aaaa", "present": true, "rc": 1, "deletable": false,
                 "error": null, "state": "present", "role": "holder"},
                {"node": "2222222222222222bbbb", "present": false, "rc": 0, "deletable": false,
                 "error": "unreachable: peer 22222222 is down", "state": "unknown",
                 "role": "joining"},
                {"node": "3333333333333333cccc", "present": true, "rc": 0, "deletable": true,
                 "error": null, "state": "present", "role": "leaving"}
            ],
            "local": {"holder": true, "rc": 1, "refs": [{"ref": "r1", "state": "live"}]}
        });
        let text = block_info_text(&v, "ab");
        let rows: Vec<&str> = text.lines().collect();
        assert!(
            rows[2].contains("holder") && rows[2].contains("present"),
            "{text}"
        );
        assert!(
            rows[3].contains("joining") && rows[3].contains("unknown (down)"),
            "{text}"
        );
        assert!(
            !rows[3].contains("false"),
            "a down node's copy is not absent: {text}"
        );
        assert!(rows[4].contains("leaving"), "{text}");
        assert!(rows[5].contains("local rc 1; refs: r1 (live)"), "{text}");

        let mut through_other = v.clone();
        through_other["local"]["holder"] = false.into();
        assert!(block_info_text(&through_other, "ab").contains("not a holder"));
    }
}
