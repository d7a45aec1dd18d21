//! Walking a data dir's block tree: names of the `hh` directories and block files, the
//! ordered listing of hashes ([`Layout::list`]), the start-up count's listing of one
//! top directory ([`list_top_dir`]) and the sweep of stale temp files ([`sweep_dir`]).

use std::fs;
use std::io;
use std::path::Path;

use tracing::{debug, warn};

use super::{io_err, Layout, ZST_SUFFIX};
use crate::fsutil;
use crate::hash::Hash;
use crate::storage::StorageError;

/// Parse a two-digit lowercase hex directory name.
fn parse_byte_dir(name: &str) -> Option<u8> {
    let b = name.as_bytes();
    if b.len() != 2 || !b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u8::from_str_radix(name, 16).ok()
}

/// The hash named by a block file name (`<64-hex>` or `<64-hex>.zst`); `None` for temp
/// files, quarantined copies and anything else.
fn parse_block_name(name: &str) -> Option<(Hash, bool)> {
    if fsutil::is_temp_file_name(name) {
        return None;
    }
    let (stem, compressed) = match name.strip_suffix(ZST_SUFFIX) {
        Some(s) => (s, true),
        None => (name, false),
    };
    stem.parse::<Hash>().ok().map(|h| (h, compressed))
}

impl Layout {
    /// Sorted names of the `hh` subdirectories of `dir` that are `>= from`.
    fn byte_dirs(dir: &Path, from: u8) -> Result<Vec<u8>, StorageError> {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(dir, e)),
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| io_err(dir, e))?;
            if let Some(b) = entry.file_name().to_str().and_then(parse_byte_dir) {
                if b >= from {
                    out.push(b);
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Up to `limit` hashes strictly after `after`, ascending. Reads the level-1 and
    /// level-2 directory names (at most 256 each) and then one leaf directory at a time,
    /// stopping as soon as `limit` is reached.
    pub fn list(&self, after: Option<Hash>, limit: usize) -> Result<Vec<Hash>, StorageError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let start = after.map(|h| [h.0[0], h.0[1]]);
        let first = start.map_or(0, |s| s[0]);
        for b0 in Self::byte_dirs(&self.data_dir, first)? {
            let dir0 = self.data_dir.join(format!("{b0:02x}"));
            let second = match start {
                Some(s) if s[0] == b0 => s[1],
                _ => 0,
            };
            for b1 in Self::byte_dirs(&dir0, second)? {
                let dir1 = dir0.join(format!("{b1:02x}"));
                let rd = match fs::read_dir(&dir1) {
                    Ok(rd) => rd,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err(&dir1, e)),
                };
                let mut here = Vec::new();
                for entry in rd {
                    let entry = entry.map_err(|e| io_err(&dir1, e))?;
                    let Some((hash, _)) = entry.file_name().to_str().and_then(parse_block_name)
                    else {
                        continue;
                    };
                    // A file in the wrong directory would never be found by a read.
                    if hash.0[0] != b0 || hash.0[1] != b1 {
                        debug!(path = %entry.path().display(), "block file in the wrong directory, not listed");
                        continue;
                    }
                    if after.is_none_or(|a| hash > a) {
                        here.push(hash);
                    }
                }
                here.sort_unstable();
                // A plain and a compressed copy of one block are adjacent after sorting.
                here.dedup();
                let room = limit - out.len();
                out.extend(here.into_iter().take(room));
                if out.len() == limit {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }
}

/// What [`list_top_dir`] found under one `<data_dir>/xx`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(in crate::storage) struct TopDirListing {
    /// Each block once, with the bytes of its files (a plain and a compressed copy both).
    pub found: Vec<(Hash, u64)>,
    /// Temp files of another run (a crash) deleted on the way.
    pub temp_removed: u64,
}

fn remove_stale_temp(path: &Path, removed: &mut u64) {
    match fs::remove_file(path) {
        Ok(()) => *removed += 1,
        Err(e) => warn!(path = %path.display(), error = %e, "could not remove a stale temp file"),
    }
}

/// Delete the stale temp files (another run's, see [`fsutil::is_stale_temp_file_name`])
/// directly in `dir`; how many.
pub(in crate::storage) fn sweep_dir(dir: &Path) -> u64 {
    let mut removed = 0;
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if fsutil::is_stale_temp_file_name(&entry.file_name().to_string_lossy()) {
            remove_stale_temp(&entry.path(), &mut removed);
        }
    }
    removed
}

/// List the blocks under `<data_dir>/<b0>` one leaf directory at a time (memory bounded
/// by what one top directory holds, 1/256 of the blocks) and delete the stale temp files
/// met there. It runs while writes go on: this run's temp files are left alone, and the
/// counts it gives are reconciled by [`super::census`]. Unreadable subdirectories are
/// logged and skipped (the counts are then low, never the node down).
pub(in crate::storage) fn list_top_dir(data_dir: &Path, b0: u8) -> TopDirListing {
    let mut out = TopDirListing::default();
    let dir0 = data_dir.join(format!("{b0:02x}"));
    let rd0 = match fs::read_dir(&dir0) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return out,
        Err(e) => {
            warn!(dir = %dir0.display(), error = %e, "cannot read block directory; not counted");
            return out;
        }
    };
    for entry1 in rd0.flatten() {
        let name1 = entry1.file_name();
        let name1 = name1.to_string_lossy();
        if fsutil::is_stale_temp_file_name(&name1) {
            remove_stale_temp(&entry1.path(), &mut out.temp_removed);
            continue;
        }
        if parse_byte_dir(&name1).is_none() {
            continue;
        }
        let dir1 = entry1.path();
        let rd1 = match fs::read_dir(&dir1) {
            Ok(rd) => rd,
            Err(e) => {
                warn!(dir = %dir1.display(), error = %e, "cannot read block directory; not counted");
                continue;
            }
        };
        let mut here: Vec<(Hash, u64)> = Vec::new();
        for entry in rd1.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if fsutil::is_stale_temp_file_name(&name) {
                remove_stale_temp(&entry.path(), &mut out.temp_removed);
                continue;
            }
            let Some((hash, _)) = parse_block_name(&name) else {
                continue;
            };
            match entry.metadata() {
                Ok(m) if m.is_file() => here.push((hash, m.len())),
                Ok(_) => {}
                Err(e) => {
                    warn!(path = %entry.path().display(), error = %e, "cannot stat block file")
                }
            }
        }
        // A block with both copies counts once, with the bytes of both.
        here.sort_unstable_by_key(|(h, _)| *h);
        for (hash, len) in here {
            match out.found.last_mut() {
                Some((last, bytes)) if *last == hash => *bytes += len,
                _ => out.found.push((hash, len)),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn only_exact_block_names_parse() {
        let h = crate::hash::blake2sum(b"x");
        assert_eq!(parse_block_name(&h.to_hex()), Some((h, false)));
        assert_eq!(parse_block_name(&format!("{h}.zst")), Some((h, true)));
        for bad in [
            format!("{h}.corrupted"),
            format!("{h}.zst.corrupted"),
            format!("{h}.tmp.0123456789abcdef"),
            h.to_hex().to_uppercase(),
            h.to_hex()[..63].to_string(),
        ] {
            assert_eq!(parse_block_name(&bad), None, "{bad} should not parse");
        }
        assert_eq!(parse_byte_dir("0a"), Some(10));
        assert_eq!(parse_byte_dir("0A"), None);
        assert_eq!(parse_byte_dir("abc"), None);
    }
}
