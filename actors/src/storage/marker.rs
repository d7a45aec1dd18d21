//! Data dirs that know themselves: each data dir holds a marker file naming the node it
//! belongs to and its own random id, written the first time the dir is used.
//!
//! Why: a data dir whose disk is not mounted is an empty directory on the root
//! filesystem. Without a marker it looks like a healthy, empty dir, and the start-up
//! sweep would refill it from peers onto the wrong disk. With one:
//!
//! - at start ([`claim`]), a dir whose marker names another node is refused, and so is a
//!   dir without a marker that holds no block when this node has run before (its
//!   metadata store existed): the one line says which path and what to do;
//! - a dir without a marker on a node's first start (a fresh machine, the embedded
//!   default included) gets one; so does a dir holding block files but no marker (data
//!   written before markers existed: adopted, since what is on it is this node's blocks,
//!   checked by their names and checksums as ever); and a new empty disk added to a node
//!   that ran before, once the operator put the file [`NEW_DIR_FILE`] in it;
//! - while the node runs, the dir check (`health.rs`) reads the marker every second: gone
//!   or with another id, the dir is marked failed (never written to again, never refilled).
//!
//! File format (text, so an operator can read it): three lines,
//! `# blocknode data dir: ...`, `node = <64 hex>`, `dir = <32 hex>`.

use std::fs;
use std::io;
use std::path::Path;

use tracing::info;

use super::StorageError;
use crate::fsutil;
use crate::hash::NodeId;

/// The marker's file name, at the root of each data dir.
pub const MARKER_FILE: &str = "blocknode-data-dir";
/// The file an operator creates in a new, empty data dir of a node that ran before, to
/// have it taken into use (it is removed once the marker is written).
pub const NEW_DIR_FILE: &str = "blocknode-new-dir";

/// What the markers are checked against (the node's wiring gives it; tools and tests that
/// use bare dirs give none and no marker is read or written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirMarkers {
    /// The node the dirs belong to.
    pub node: NodeId,
    /// Whether this node ran before (its metadata store existed at start): an empty dir
    /// without a marker is then a disk that is not mounted, not a new one.
    pub started_before: bool,
}

/// A marker's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub node: NodeId,
    /// 16 random bytes in hex.
    pub dir_id: String,
}

impl Marker {
    fn encode(&self) -> String {
        format!(
            "# blocknode data dir: do not delete; without it the dir is refused at start\n\
             node = {}\ndir = {}\n",
            self.node.to_hex(),
            self.dir_id
        )
    }

    /// Parse a marker's text; `None` when it is not one.
    pub fn parse(text: &str) -> Option<Marker> {
        let mut node = None;
        let mut dir_id = None;
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            match k.trim() {
                "node" => node = v.trim().parse::<NodeId>().ok(),
                "dir" => dir_id = Some(v.trim().to_string()),
                _ => {}
            }
        }
        Some(Marker {
            node: node?,
            dir_id: dir_id.filter(|d| !d.is_empty())?,
        })
    }
}

/// Read the marker of `root`: `Ok(None)` when there is no marker file.
pub fn read(root: &Path) -> Result<Option<Marker>, String> {
    let path = root.join(MARKER_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => Marker::parse(&text)
            .map(Some)
            .ok_or_else(|| format!("its marker {} is not readable as one", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("its marker {} cannot be read: {e}", path.display())),
    }
}

/// Whether `root` holds block files: some `<hh>` directory with an entry in it.
fn holds_blocks(root: &Path) -> bool {
    let Ok(rd) = fs::read_dir(root) else {
        return false;
    };
    rd.flatten().any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        name.len() == 2
            && name.bytes().all(|b| b.is_ascii_hexdigit())
            && fs::read_dir(e.path()).is_ok_and(|mut d| d.next().is_some())
    })
}

/// Check (or first write) the marker of the data dir `root`; returns its dir id.
pub fn claim(root: &Path, m: &DirMarkers, fsync: bool) -> Result<String, StorageError> {
    let refuse = |reason: String| StorageError::DataDirRefused {
        path: root.to_path_buf(),
        reason,
    };
    if root.exists() {
        if let Some(marker) = read(root).map_err(refuse)? {
            if marker.node != m.node {
                return Err(refuse(format!(
                    "it belongs to node {} (its {MARKER_FILE} says so), not to this node {}: \
                     check the mounts and the config's data dirs",
                    marker.node.short(),
                    m.node.short()
                )));
            }
            return Ok(marker.dir_id);
        }
    }
    let new_dir_file = root.join(NEW_DIR_FILE);
    let why = if root.exists() && holds_blocks(root) {
        "it holds block files but no marker (written before markers existed): adopted"
    } else if !m.started_before {
        "first start of this node"
    } else if new_dir_file.exists() {
        "the operator marked it as a new disk"
    } else {
        return Err(refuse(format!(
            "it has no {MARKER_FILE} marker and holds no block, but this node has run before: \
             its disk may not be mounted, or be another one. Mount the right disk; if this is \
             a new empty disk for this node, create the file {} and start again",
            new_dir_file.display()
        )));
    };
    fs::create_dir_all(root).map_err(|source| StorageError::Io {
        path: root.to_path_buf(),
        source,
    })?;
    let marker = Marker {
        node: m.node,
        dir_id: hex::encode(rand::random::<[u8; 16]>()),
    };
    let path = root.join(MARKER_FILE);
    fsutil::write_atomic(&path, &[marker.encode().as_bytes()], fsync)
        .map_err(|source| StorageError::Io { path, source })?;
    if new_dir_file.exists() {
        let _ = fs::remove_file(&new_dir_file);
    }
    info!(path = %root.display(), dir_id = %marker.dir_id, "data dir marked: {why}");
    Ok(marker.dir_id)
}

/// Why the running dir `root` no longer is the one marked `dir_id` at start, if it is not.
pub fn check(root: &Path, dir_id: &str) -> Option<String> {
    match read(root) {
        Ok(Some(m)) if m.dir_id == dir_id => None,
        Ok(Some(_)) => Some(format!(
            "its {MARKER_FILE} marker changed: another disk is mounted there"
        )),
        Ok(None) => Some(format!(
            "its {MARKER_FILE} marker is gone: the disk may have been unmounted"
        )),
        Err(e) => Some(e),
    }
}
