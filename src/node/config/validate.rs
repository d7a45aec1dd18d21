//! The checks serde alone cannot make: settings that exclude each other, quorums
//! against the replication factor, members and data dirs.

use std::path::PathBuf;

use anyhow::bail;

use super::Config;

impl Config {
    /// Check the values that serde alone cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        match (&self.data_dir, self.data_dirs.is_empty()) {
            (Some(_), false) => bail!(
                "data_dir and data_dirs are both set: use data_dirs alone (data_dir is one entry of it)"
            ),
            (None, true) => bail!("missing data_dir or data_dirs: where to store the blocks"),
            _ => {}
        }
        if self.data_dir.is_none() && self.data_dir_capacity.is_some() {
            bail!(
                "data_dir_capacity applies to data_dir; with data_dirs give each entry a capacity"
            );
        }
        let mut paths: Vec<&PathBuf> = self.data_dirs.iter().map(|d| &d.path).collect();
        paths.sort();
        paths.dedup();
        if paths.len() != self.data_dirs.len() {
            bail!("data_dirs: a path is listed twice");
        }
        if self.data_dirs.iter().any(|d| d.capacity == 0) {
            bail!("data_dirs: capacity must be more than 0");
        }
        if !self.data_dirs.is_empty() && self.data_dirs.iter().all(|d| d.read_only) {
            bail!("data_dirs: every dir is read_only, so no block could be stored");
        }
        if self.replication_factor == 0 {
            bail!("replication_factor must be at least 1");
        }
        if self.max_hints_per_member == 0 {
            bail!("max_hints_per_member must be at least 1 (turn hints off with hinted_handoff = false)");
        }
        let n = if self.members.is_empty() {
            1
        } else {
            self.members.len()
        };
        if self.replication_factor > n && !self.joins() {
            bail!(
                "replication_factor {} is larger than the number of members ({n})",
                self.replication_factor
            );
        }
        let q = self.effective_write_quorum();
        if q == 0 || q > self.replication_factor {
            bail!(
                "write_quorum {q} must be between 1 and replication_factor ({})",
                self.replication_factor
            );
        }
        if self.block_ram_buffer_max < 2 * self.max_block_size {
            bail!(
                "block_ram_buffer_max ({}) must hold at least one block request (2 × max_block_size = {})",
                self.block_ram_buffer_max,
                2 * self.max_block_size
            );
        }
        if self.max_block_size > 256 << 20 {
            bail!(
                "max_block_size {} is over the 256 MiB limit",
                self.max_block_size
            );
        }
        let ids = self.member_ids()?;
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != ids.len() {
            bail!("members: a node id is listed twice");
        }
        if self.members.iter().any(|m| m.capacity == 0) {
            bail!("members: capacity must be at least 1");
        }
        Ok(())
    }
}
