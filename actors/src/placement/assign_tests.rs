//! The assignment's properties: balance, zones, capacity, minimal movement.

use super::*;
use crate::hash::blake2sum;

fn node(i: usize, zone: usize, capacity: u64) -> NodeSpec {
    NodeSpec {
        id: NodeId(blake2sum(format!("node{i}").as_bytes()).0),
        zone: format!("z{zone}"),
        capacity,
    }
}

fn equal(n: usize, zones: usize) -> Vec<NodeSpec> {
    (0..n).map(|i| node(i, i % zones, 1)).collect()
}

/// Every partition has rf distinct nodes, spread over zones as the rule says.
fn check_rules(a: &Assignment, nodes: &[NodeSpec]) {
    let zones: std::collections::HashSet<&str> = nodes.iter().map(|n| n.zone.as_str()).collect();
    let m = a.replication.div_ceil(zones.len());
    for (p, ns) in a.table.iter().enumerate() {
        assert_eq!(
            ns.len(),
            a.replication,
            "partition {p} has {} replicas",
            ns.len()
        );
        let mut ids = ns.clone();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), ns.len(), "partition {p} repeats a node");
        for z in &zones {
            let c = ns
                .iter()
                .filter(|id| nodes.iter().any(|n| n.id == **id && n.zone == *z))
                .count();
            assert!(
                c <= m,
                "partition {p} has {c} replicas in zone {z} (max {m})"
            );
        }
    }
}

/// max/mean and min/mean of load per unit of capacity.
fn balance(a: &Assignment, nodes: &[NodeSpec]) -> (f64, f64) {
    let load = a.load();
    let cap: u64 = nodes.iter().map(|n| n.capacity).sum();
    let total = (a.partitions() * a.replication) as f64;
    let ratios: Vec<f64> = nodes
        .iter()
        .map(|n| *load.get(&n.id).unwrap_or(&0) as f64 / (total * n.capacity as f64 / cap as f64))
        .collect();
    let max = ratios.iter().cloned().fold(0.0, f64::max);
    let min = ratios.iter().cloned().fold(f64::MAX, f64::min);
    (max, min)
}

#[test]
fn partition_counts_give_twenty_replicas_per_node() {
    assert_eq!(partitions_for(3, 3), 256);
    assert_eq!(partitions_for(50, 3), 512);
    assert_eq!(partitions_for(1000, 3), 8192);
    assert!(partitions_for(1000, 3) * 3 / 1000 >= 20);
}

#[test]
fn refuses_what_cannot_be_placed() {
    assert_eq!(assign(None, &[], 3, 256), Err(AssignError::NoCapacity));
    assert_eq!(
        assign(None, &equal(2, 2), 3, 256),
        Err(AssignError::TooFewNodes { rf: 3, nodes: 2 })
    );
    assert_eq!(
        assign(None, &equal(3, 3), 3, 0),
        Err(AssignError::NoPartitions)
    );
}

#[test]
fn two_zones_take_rf3_as_two_plus_one() {
    let nodes = equal(4, 2);
    let a = assign(None, &nodes, 3, 256).unwrap();
    check_rules(&a, &nodes);
}

#[test]
fn a_big_zone_is_capped_at_one_replica_per_partition() {
    // Zone z0 has 10x the capacity of the others but may hold one replica of each
    // partition only: it gets exactly `partitions`, the rest share the remainder.
    let mut nodes = vec![node(0, 0, 10), node(1, 0, 10)];
    nodes.extend((2..6).map(|i| node(i, i - 1, 1)));
    let a = assign(None, &nodes, 3, 256).unwrap();
    check_rules(&a, &nodes);
    let load = a.load();
    assert_eq!(load[&nodes[0].id] + load[&nodes[1].id], 256);
}

#[test]
fn the_same_inputs_give_the_same_table() {
    let nodes = equal(7, 3);
    let a = assign(None, &nodes, 3, 512).unwrap();
    let mut rev = nodes.clone();
    rev.reverse();
    assert_eq!(a, assign(None, &rev, 3, 512).unwrap());
    assert_eq!(
        a,
        assign(Some(&a), &nodes, 3, 512).unwrap(),
        "a stable layout moves nothing"
    );
}

/// The figures the layout promises: for 3 … 1,000 equal nodes and a mixed-capacity
/// cluster, max/mean ≤ 1.05 and, when one node is added, moved ≤ 1.1 × 1/(N+1).
#[test]
fn simulation_balance_and_movement_when_adding_a_node() {
    let mixed: Vec<NodeSpec> = (0..12).map(|i| node(i, i % 4, [1, 2, 4][i % 3])).collect();
    let mut cases: Vec<(String, Vec<NodeSpec>, NodeSpec)> = [3usize, 10, 50, 100, 1000]
        .iter()
        // Up to 8 zones; a small cluster grows by a node in a zone of its own (in
        // an existing one, the zone rule caps that zone's share instead).
        .map(|&n| {
            let added_zone = if n < 8 { n } else { n % 8 };
            (
                format!("{n} equal nodes"),
                equal(n, n.min(8)),
                node(n, added_zone, 1),
            )
        })
        .collect();
    cases.push((
        "12 mixed (1/2/4) nodes in 4 zones".into(),
        mixed,
        node(12, 1, 2),
    ));
    for (name, nodes, added) in cases {
        let rf = 3;
        let parts = partitions_for(nodes.len() + 1, rf);
        let a = assign(None, &nodes, rf, parts).unwrap();
        check_rules(&a, &nodes);
        let (max, min) = balance(&a, &nodes);
        let mut grown = nodes.clone();
        grown.push(added.clone());
        let b = assign(Some(&a), &grown, rf, parts).unwrap();
        check_rules(&b, &grown);
        let (max_b, _) = balance(&b, &grown);
        let moved = b.moved_from(&a) as f64 / (parts * rf) as f64;
        let cap: u64 = grown.iter().map(|n| n.capacity).sum();
        let ideal = added.capacity as f64 / cap as f64;
        eprintln!(
            "{name}: {parts} partitions, max/mean {max:.3}, min/mean {min:.3}; after adding one: max/mean {max_b:.3}, moved {moved:.4} (ideal {ideal:.4}, {:.2}x)",
            moved / ideal
        );
        assert!(
            max <= 1.05 && max_b <= 1.05,
            "{name}: max/mean {max:.3} / {max_b:.3}"
        );
        assert!(
            moved <= 1.1 * ideal,
            "{name}: moved {moved:.4}, ideal {ideal:.4}"
        );
    }
}
