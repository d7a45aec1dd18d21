//! Tests of the block tree functions that need the files themselves (attributes,
//! rot in place, error mapping).

use bytes::Bytes;

use super::*;
use crate::hash::blake2sum;

fn rewrite(path: &Path, bytes: &[u8], attr: Option<&[u8]>) {
    use std::os::unix::ffi::OsStrExt;
    // Truncating in place keeps the inode and so its attributes, as rot would.
    fs::write(path, bytes).expect("rewrite a block file");
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
    // SAFETY: NUL-terminated strings and a value of the length passed.
    let rc = unsafe {
        match attr {
            Some(v) => libc::setxattr(
                p.as_ptr(),
                checksum::XATTR_NAME.as_ptr(),
                v.as_ptr().cast(),
                v.len(),
                0,
            ),
            None => libc::removexattr(p.as_ptr(), checksum::XATTR_NAME.as_ptr()),
        }
    };
    let e = io::Error::last_os_error();
    let already_gone = attr.is_none() && e.raw_os_error() == Some(libc::ENODATA);
    assert!(rc == 0 || already_gone, "xattr: {e}");
}

/// The cached read on the actor's thread: served on a matching checksum, on BLAKE2
/// otherwise, and given up (for the lane to quarantine) on anything rotten.
#[test]
fn the_cached_read_trusts_a_matching_checksum_and_hands_rot_to_the_lane() {
    let d = tempfile::tempdir().expect("temp dir");
    let layout = Layout {
        data_dir: d.path().to_path_buf(),
        fsync: false,
    };
    let mut delta = StatsDelta::default();
    let data: Vec<u8> = (0..4096).map(|_| rand::random::<u8>()).collect();
    let other: Vec<u8> = (0..4096).map(|_| rand::random::<u8>()).collect();
    let h = blake2sum(&data);
    let block = DataBlock::Plain(Bytes::from(data.clone()));
    layout
        .write(h, block.clone(), false, &mut delta)
        .expect("write");
    let (path, _) = layout.block_paths(&h);
    let read = |delta: &mut StatsDelta| layout.read_no_wait(h, delta, &mut Payer::none(h));
    assert_eq!(read(&mut delta), Some(block.clone()), "a fresh copy");

    let mut flipped = data.clone();
    flipped[100] ^= 1;
    let good_attr = checksum::value(&h, false, &data);
    rewrite(&path, &flipped, Some(&good_attr));
    assert_eq!(read(&mut delta), None, "a flipped byte, attribute kept");
    rewrite(&path, &flipped, None);
    assert_eq!(read(&mut delta), None, "a flipped byte, no attribute");
    rewrite(&path, &data, None);
    assert_eq!(read(&mut delta), Some(block), "sound, no attribute: BLAKE2");
    let foreign = checksum::value(&blake2sum(&other), false, &other);
    rewrite(&path, &other, Some(&foreign));
    assert_eq!(read(&mut delta), None, "another block's file and attribute");
    let forged = checksum::value(&h, false, &other);
    rewrite(&path, &other, Some(&forged));
    assert_eq!(
        read(&mut delta),
        Some(DataBlock::Plain(Bytes::from(other))),
        "bytes and attribute forged together pass the checksum (only BLAKE2 tells)"
    );
    assert!(
        matches!(
            layout.read(h, Verify::Blake2, &mut delta, &mut Payer::none(h)),
            Err(StorageError::Corrupted { .. })
        ),
        "the BLAKE2 read quarantines the forged copy"
    );
}

#[test]
fn enospc_and_edquot_map_to_disk_full_and_others_to_io() {
    let p = Path::new("/data/aa/bb/x");
    for code in [28, 122] {
        assert!(
            matches!(io_err(p, io::Error::from_raw_os_error(code)), StorageError::DiskFull { path } if path == p),
            "errno {code} should be DiskFull"
        );
    }
    assert!(matches!(
        io_err(p, io::Error::from_raw_os_error(13)),
        StorageError::Io { .. }
    ));
}
