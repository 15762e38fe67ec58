//! The log head: the size and root of the audit log as last committed, in a small file
//! beside the sled directory, so that sled files put back from an older copy (or cut short
//! by sled's recovery of a damaged file, which drops everything after the damage) cannot
//! take it along. The store refuses to open when its log is shorter than the head, or when
//! its first `size` entries do not hash to the head's root.
//!
//! The file holds two 128-byte slots written in turn (sequence number, size, root and a
//! SHA-256 check over them), so a write torn by a power cut damages only the slot being
//! written and the other still holds the previous head. The writer updates the head after
//! every group commit (one `pwrite`, written after sled's flush, so the head never claims
//! more than is on disk) and syncs it with every checkpoint and at close.
//!
//! Slot layout: `"liaison-head-v1\0"` (16 bytes) ‖ seq u64 BE ‖ size u64 BE ‖ root (32) ‖
//! SHA-256 of the preceding 64 bytes (32) ‖ zero padding to 128 bytes.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::error::StoreError;

const MAGIC: &[u8; 16] = b"liaison-head-v1\0";
const SLOT: usize = 128;
const BODY: usize = 16 + 8 + 8 + 32;

/// What the head says: the log had `size` entries with root `root`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) seq: u64,
    pub(crate) size: u64,
    pub(crate) root: [u8; 32],
}

/// The open head file.
#[derive(Debug)]
pub(crate) struct HeadFile {
    path: PathBuf,
    file: File,
    seq: u64,
    last: Option<(u64, [u8; 32])>,
}

fn encode(h: &Head) -> [u8; SLOT] {
    let mut out = [0u8; SLOT];
    out[..16].copy_from_slice(MAGIC);
    out[16..24].copy_from_slice(&h.seq.to_be_bytes());
    out[24..32].copy_from_slice(&h.size.to_be_bytes());
    out[32..64].copy_from_slice(&h.root);
    let check = Sha256::digest(&out[..BODY]);
    out[BODY..BODY + 32].copy_from_slice(&check);
    out
}

fn decode(slot: &[u8]) -> Option<Head> {
    if slot.len() < SLOT || &slot[..16] != MAGIC {
        return None;
    }
    if Sha256::digest(&slot[..BODY])[..] != slot[BODY..BODY + 32] {
        return None;
    }
    Some(Head {
        seq: u64::from_be_bytes(slot[16..24].try_into().ok()?),
        size: u64::from_be_bytes(slot[24..32].try_into().ok()?),
        root: slot[32..64].try_into().ok()?,
    })
}

impl HeadFile {
    /// Opens (or creates) the head file and returns what it holds: None for a new file.
    pub(crate) fn open(path: &Path) -> Result<(Self, Option<Head>), StoreError> {
        let io = |e: std::io::Error| StoreError::Db(format!("log head {}: {e}", path.display()));
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let bytes = std::fs::read(path).map_err(io)?;
        let head = if existed && !bytes.is_empty() {
            let slots = [bytes.get(..SLOT), bytes.get(SLOT..2 * SLOT)];
            let best = slots
                .iter()
                .filter_map(|s| s.and_then(decode))
                .max_by_key(|h| h.seq);
            match best {
                Some(h) => Some(h),
                None => {
                    return Err(StoreError::Damaged(format!(
                        "the log head {} is damaged (neither of its two slots checks out); it \
                         records how far this node's audit log reached, so the store cannot be \
                         checked against it: restore it from the backup of the data directory",
                        path.display()
                    )));
                }
            }
        } else {
            None
        };
        let seq = head.map_or(0, |h| h.seq);
        let last = head.map(|h| (h.size, h.root));
        Ok((
            Self {
                path: path.to_owned(),
                file,
                seq,
                last,
            },
            head,
        ))
    }

    /// Records a new head (no sync). Writes nothing when the head did not move.
    pub(crate) fn write(&mut self, size: u64, root: [u8; 32]) -> Result<(), StoreError> {
        if self.last == Some((size, root)) {
            return Ok(());
        }
        self.seq += 1;
        let slot = encode(&Head {
            seq: self.seq,
            size,
            root,
        });
        let offset = if self.seq % 2 == 0 { 0 } else { SLOT as u64 };
        self.file
            .write_all_at(&slot, offset)
            .map_err(|e| StoreError::Db(format!("log head {}: {e}", self.path.display())))?;
        self.last = Some((size, root));
        Ok(())
    }

    /// Makes the last written head durable.
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        self.file
            .sync_data()
            .map_err(|e| StoreError::Db(format!("log head {}: {e}", self.path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_slot_wins_and_a_torn_slot_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log-head");
        let (mut f, h) = HeadFile::open(&p).unwrap();
        assert!(h.is_none());
        f.write(1, [1; 32]).unwrap();
        f.write(2, [2; 32]).unwrap();
        f.write(2, [2; 32]).unwrap(); // unchanged: nothing written
        f.sync().unwrap();
        drop(f);
        let (_, h) = HeadFile::open(&p).unwrap();
        assert_eq!(h.map(|h| (h.seq, h.size)), Some((2, 2)));
        // A torn write of the newest slot (seq 2, slot 0): the previous head is read.
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[40] ^= 0xff;
        std::fs::write(&p, &bytes).unwrap();
        let (mut f, h) = HeadFile::open(&p).unwrap();
        assert_eq!(h.map(|h| (h.seq, h.size, h.root)), Some((1, 1, [1; 32])));
        // The next write goes to the slot after the surviving one and wins again.
        f.write(3, [3; 32]).unwrap();
        drop(f);
        let (_, h) = HeadFile::open(&p).unwrap();
        assert_eq!(h.map(|h| (h.seq, h.size)), Some((2, 3)));
        // Both slots damaged: a clear error.
        std::fs::write(&p, [7u8; 256]).unwrap();
        let e = HeadFile::open(&p).unwrap_err();
        assert!(matches!(e, StoreError::Damaged(_)), "{e}");
    }
}
