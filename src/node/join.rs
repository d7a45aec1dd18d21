//! What a joining node tells its operator: the `blocknode layout assign` line to run on
//! a member. `blocknode init --join` prints it, and the joiner logs it while it waits.

use std::net::SocketAddr;

/// Weight in placement a joining node is given unless the operator says otherwise (the
/// same as a configured member's default `capacity`).
pub const DEFAULT_JOIN_CAPACITY: u64 = 1;

/// The address members should dial: `quic_listen` itself, or, when it listens on every
/// interface (`0.0.0.0`/`::`), a placeholder for this host's address with its port.
pub fn advertised_quic(quic_listen: SocketAddr) -> String {
    if quic_listen.ip().is_unspecified() {
        format!("THIS_HOST:{}", quic_listen.port())
    } else {
        quic_listen.to_string()
    }
}

/// The command that adds node `id` to the layout (run on any member, then `layout apply`).
pub fn assign_command(id: &str, zone: &str, capacity: u64, quic_listen: SocketAddr) -> String {
    format!(
        "blocknode layout assign {id} --zone {zone} --capacity {capacity} --addr {}",
        advertised_quic(quic_listen)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_assign_line_names_id_zone_capacity_and_a_dialable_address() {
        let a = assign_command("ab12", "dc2", 1, "10.0.0.4:3901".parse().unwrap());
        assert_eq!(
            a,
            "blocknode layout assign ab12 --zone dc2 --capacity 1 --addr 10.0.0.4:3901"
        );
        let any = assign_command("ab12", "z1", 2, "0.0.0.0:3901".parse().unwrap());
        assert!(any.ends_with("--capacity 2 --addr THIS_HOST:3901"), "{any}");
    }
}
