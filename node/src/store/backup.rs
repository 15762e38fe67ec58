//! Online backup and offline restore of a store.
//!
//! A backup is the store as it was at one moment (the moment it started: everything applied
//! then is durable first), taken while the node runs. The writer copies it in chunks between
//! group commits, so traffic goes on; before a group overwrites or deletes a key the copy has
//! not reached yet, the writer keeps that key's old value (or its absence) and the copy takes
//! that instead. Keys the copy has passed may change freely. Nothing else writes to sled, so
//! the copy is exactly the state at its start.
//!
//! The file (docs/operations.md, "Back up and restore"), mode 0600:
//!
//! ```text
//! "LIAISON-BACKUP\n" (15 bytes) ‖ version 0x01
//! then frames, each a tag byte:
//!   'H' ‖ u32 BE length ‖ CBOR map {"node", "schema", "created_ms", "log_size", "log_root"}
//!   'F' ‖ u32 BE length ‖ name ‖ u32 BE length ‖ bytes        a file of the node (keys, …)
//!   'E' ‖ u32 BE length ‖ key ‖ u32 BE length ‖ value         a store entry
//!   'Z' ‖ u64 BE entries ‖ SHA-256 of every byte before 'Z'   the end
//! ```
//!
//! Restore writes the entries into a new store (refusing a directory that holds one), then
//! opens it as the node would and checks that its log has the size and root the header
//! names.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read as _, Write as _};
use std::ops::Bound;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::sync::oneshot;

use crate::error::StoreError;

const MAGIC: &[u8; 15] = b"LIAISON-BACKUP\n";
const VERSION: u8 = 1;
/// Entries copied between two group commits, at most (few in tests, so that a small store
/// is copied across many groups).
const CHUNK_ENTRIES: usize = if cfg!(test) { 16 } else { 2048 };
/// Bytes copied between two group commits, at most (about).
const CHUNK_BYTES: usize = 4 << 20;
/// Longest name, key or value a restore accepts (a sled value is far smaller in practice).
const MAX_FIELD: u32 = 64 << 20;

/// What a backup's header says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// The node whose store this is.
    pub node: String,
    /// The store schema it was written with.
    pub schema: u32,
    /// When the backup started (Unix ms).
    pub created_ms: u64,
    /// The audit log's size at that moment.
    pub log_size: u64,
    /// Its root (hex).
    pub log_root: String,
}

/// What a finished backup holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSummary {
    /// Where it was written.
    pub path: PathBuf,
    /// Its header.
    pub header: BackupHeader,
    /// Store entries in it.
    pub entries: u64,
    /// Files of the node in it.
    pub files: Vec<String>,
    /// Bytes written.
    pub bytes: u64,
}

/// What the writer is asked for: a backup to `path` holding `files` beside the store.
pub(super) struct Request {
    pub(super) path: PathBuf,
    pub(super) files: Vec<(String, Vec<u8>)>,
    pub(super) created_ms: u64,
    pub(super) done: oneshot::Sender<Result<BackupSummary, StoreError>>,
}

/// A backup under way on the writer thread.
pub(super) struct Job {
    out: BufWriter<File>,
    hash: Sha256,
    bytes: u64,
    entries: u64,
    /// The last key copied (None: none yet).
    cursor: Option<Vec<u8>>,
    /// Keys beyond the cursor that a group changed, with their value at the start.
    kept: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    summary: BackupSummary,
    done: oneshot::Sender<Result<BackupSummary, StoreError>>,
}

fn io_err(path: &Path, e: &std::io::Error) -> StoreError {
    StoreError::Db(format!("backup {}: {e}", path.display()))
}

impl Job {
    /// Starts a backup of the store as it is now (the caller made it durable): writes the
    /// header and the files. On an error the request is answered and nothing is under way.
    pub(super) fn start(
        req: Request,
        node: &str,
        schema: u32,
        log: (u64, [u8; 32]),
    ) -> Option<Box<Self>> {
        let header = BackupHeader {
            node: node.to_owned(),
            schema,
            created_ms: req.created_ms,
            log_size: log.0,
            log_root: hex::encode(log.1),
        };
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&req.path);
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                let _ = req.done.send(Err(io_err(&req.path, &e)));
                return None;
            }
        };
        let mut job = Box::new(Self {
            out: BufWriter::with_capacity(1 << 20, file),
            hash: Sha256::new(),
            bytes: 0,
            entries: 0,
            cursor: None,
            kept: BTreeMap::new(),
            summary: BackupSummary {
                path: req.path.clone(),
                header: header.clone(),
                entries: 0,
                files: req.files.iter().map(|(n, _)| n.clone()).collect(),
                bytes: 0,
            },
            done: req.done,
        });
        let mut cbor = Vec::new();
        let started = ciborium::into_writer(&header, &mut cbor)
            .map_err(|e| StoreError::Db(format!("backup header: {e}")))
            .and_then(|()| {
                job.put(MAGIC)?;
                job.put(&[VERSION, b'H'])?;
                job.field(&cbor)?;
                for (name, bytes) in &req.files {
                    job.put(b"F")?;
                    job.field(name.as_bytes())?;
                    job.field(bytes)?;
                }
                Ok(())
            });
        match started {
            Ok(()) => Some(job),
            Err(e) => {
                job.abort(e);
                None
            }
        }
    }

    fn put(&mut self, b: &[u8]) -> Result<(), StoreError> {
        self.hash.update(b);
        self.bytes += b.len() as u64;
        self.out
            .write_all(b)
            .map_err(|e| io_err(&self.summary.path, &e))
    }

    fn field(&mut self, b: &[u8]) -> Result<(), StoreError> {
        let len = u32::try_from(b.len())
            .map_err(|_| StoreError::Db("a backup field is over 4 GiB".into()))?;
        self.put(&len.to_be_bytes())?;
        self.put(b)
    }

    fn entry(&mut self, k: &[u8], v: &[u8]) -> Result<(), StoreError> {
        self.put(b"E")?;
        self.field(k)?;
        self.field(v)?;
        self.entries += 1;
        Ok(())
    }

    fn beyond_cursor(&self, key: &[u8]) -> bool {
        self.cursor.as_deref().is_none_or(|c| key > c)
    }

    /// Before a group is applied: keeps the current value of each key it writes that the
    /// copy has not reached yet (the first time only: that value is the one at the start).
    pub(super) fn before_apply<'k>(
        &mut self,
        db: &sled::Db,
        keys: impl Iterator<Item = &'k [u8]>,
    ) -> Result<(), StoreError> {
        for k in keys {
            if self.beyond_cursor(k) && !self.kept.contains_key(k) {
                let old = db.get(k)?.map(|v| v.to_vec());
                self.kept.insert(k.to_vec(), old);
            }
        }
        Ok(())
    }

    /// Copies the next chunk. Returns false once the backup is finished (answered).
    pub(super) fn step(mut self: Box<Self>, db: &sled::Db) -> Option<Box<Self>> {
        match self.copy_chunk(db) {
            Ok(true) => Some(self),
            Ok(false) => {
                self.finish();
                None
            }
            Err(e) => {
                self.abort(e);
                None
            }
        }
    }

    /// Ok(true): more to copy.
    fn copy_chunk(&mut self, db: &sled::Db) -> Result<bool, StoreError> {
        let from = match &self.cursor {
            None => Bound::Unbounded,
            Some(c) => Bound::Excluded(c.clone()),
        };
        let mut last = None;
        let mut n = 0;
        let mut size = 0;
        for kv in db.range::<Vec<u8>, _>((from.clone(), Bound::Unbounded)) {
            let (k, v) = kv?;
            match self.kept.remove(&k[..]) {
                // Changed since the start: its value then (or it did not exist).
                Some(Some(old)) => self.entry(&k, &old)?,
                Some(None) => {}
                None => self.entry(&k, &v)?,
            }
            n += 1;
            size += k.len() + v.len();
            last = Some(k.to_vec());
            if n >= CHUNK_ENTRIES || size >= CHUNK_BYTES {
                break;
            }
        }
        // Keys that existed at the start and were deleted since, up to where the copy got.
        let upto = match &last {
            Some(l) => Bound::Included(l.clone()),
            None => Bound::Unbounded,
        };
        let gone: Vec<(Vec<u8>, Option<Vec<u8>>)> = self
            .kept
            .range::<Vec<u8>, _>((from, upto))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in gone {
            self.kept.remove(&k);
            if let Some(v) = v {
                self.entry(&k, &v)?;
            }
        }
        match last {
            Some(l) => {
                self.cursor = Some(l);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn finish(mut self: Box<Self>) {
        let res = (|| {
            // The hash covers every byte before the end frame.
            let digest = self.hash.clone().finalize();
            let entries = self.entries;
            self.put(b"Z")?;
            self.put(&entries.to_be_bytes())?;
            self.put(&digest)?;
            self.out
                .flush()
                .map_err(|e| io_err(&self.summary.path, &e))?;
            self.out
                .get_ref()
                .sync_all()
                .map_err(|e| io_err(&self.summary.path, &e))?;
            Ok(())
        })();
        match res {
            Ok(()) => {
                let mut summary = self.summary.clone();
                summary.entries = self.entries;
                summary.bytes = self.bytes;
                let _ = self.done.send(Ok(summary));
            }
            Err(e) => self.abort(e),
        }
    }

    /// Stops the backup: its file is removed and its caller told why.
    pub(super) fn abort(self: Box<Self>, e: StoreError) {
        let Self {
            out, summary, done, ..
        } = *self;
        drop(out);
        let _ = std::fs::remove_file(&summary.path);
        let _ = done.send(Err(e));
    }
}

/// A backup file, checked: its header and the node's files (the entries stay in the file
/// until [`Backup::write_store`] streams them into a store).
#[derive(Debug)]
pub struct Backup {
    path: PathBuf,
    /// The header.
    pub header: BackupHeader,
    /// The node's files, by name.
    pub files: Vec<(String, Vec<u8>)>,
    /// Store entries in it.
    pub entries: u64,
}

fn bad(path: &Path, problem: &str) -> StoreError {
    StoreError::Damaged(format!(
        "{} is not a complete liaison backup ({problem}); nothing was restored",
        path.display()
    ))
}

/// Reads a backup's frames in order, hashing what it reads.
struct Frames {
    path: PathBuf,
    r: std::io::BufReader<File>,
    hash: Sha256,
}

enum Frame {
    Header(Vec<u8>),
    File(Vec<u8>, Vec<u8>),
    Entry(Vec<u8>, Vec<u8>),
    /// The end: its entry count, and whether the hash matched.
    End(u64, bool),
}

impl Frames {
    fn open(path: &Path) -> Result<Self, StoreError> {
        let f = File::open(path).map_err(|e| StoreError::Db(format!("{}: {e}", path.display())))?;
        let mut me = Self {
            path: path.to_owned(),
            r: std::io::BufReader::with_capacity(1 << 20, f),
            hash: Sha256::new(),
        };
        let mut magic = [0u8; 16];
        me.exact(&mut magic)?;
        if magic[..15] != MAGIC[..] {
            return Err(bad(path, "it does not start with the backup magic"));
        }
        if magic[15] != VERSION {
            return Err(bad(
                path,
                &format!(
                    "format version {}; this liaison reads version {VERSION}",
                    magic[15]
                ),
            ));
        }
        Ok(me)
    }

    fn exact(&mut self, buf: &mut [u8]) -> Result<(), StoreError> {
        self.r
            .read_exact(buf)
            .map_err(|_| bad(&self.path, "cut short"))?;
        self.hash.update(&*buf);
        Ok(())
    }

    fn field(&mut self) -> Result<Vec<u8>, StoreError> {
        let mut len = [0u8; 4];
        self.exact(&mut len)?;
        let len = u32::from_be_bytes(len);
        if len > MAX_FIELD {
            return Err(bad(&self.path, "a field longer than any store value"));
        }
        let mut v = vec![0u8; len as usize];
        self.exact(&mut v)?;
        Ok(v)
    }

    fn next(&mut self) -> Result<Frame, StoreError> {
        let mut tag = [0u8; 1];
        self.r
            .read_exact(&mut tag)
            .map_err(|_| bad(&self.path, "cut short: no end frame"))?;
        if tag[0] == b'Z' {
            let expected = self.hash.clone().finalize();
            let mut tail = [0u8; 40];
            self.r
                .read_exact(&mut tail)
                .map_err(|_| bad(&self.path, "cut short"))?;
            let mut rest = [0u8; 1];
            if self
                .r
                .read(&mut rest)
                .map_err(|_| bad(&self.path, "unreadable"))?
                != 0
            {
                return Err(bad(&self.path, "bytes after the end frame"));
            }
            // The hash covers everything before the end frame's tag.
            let n = u64::from_be_bytes(tail[..8].try_into().unwrap_or_default());
            return Ok(Frame::End(n, tail[8..] == expected[..]));
        }
        self.hash.update(tag);
        match tag[0] {
            b'H' => Ok(Frame::Header(self.field()?)),
            b'F' => {
                let name = self.field()?;
                Ok(Frame::File(name, self.field()?))
            }
            b'E' => {
                let k = self.field()?;
                Ok(Frame::Entry(k, self.field()?))
            }
            t => Err(bad(&self.path, &format!("unknown frame tag {t:#04x}"))),
        }
    }
}

impl Backup {
    /// Reads and checks a whole backup file: the magic, every frame, the entry count and the
    /// hash.
    pub fn read(path: &Path) -> Result<Self, StoreError> {
        let mut frames = Frames::open(path)?;
        let mut header = None;
        let mut files = Vec::new();
        let mut entries = 0u64;
        loop {
            match frames.next()? {
                Frame::Header(h) if header.is_none() => {
                    let h: BackupHeader = ciborium::from_reader(&h[..])
                        .map_err(|e| bad(path, &format!("header: {e}")))?;
                    header = Some(h);
                }
                Frame::Header(_) => return Err(bad(path, "two headers")),
                Frame::File(name, data) => {
                    let name = String::from_utf8(name)
                        .map_err(|_| bad(path, "a file name is not UTF-8"))?;
                    if name.is_empty() || name.contains('/') || name.starts_with('.') {
                        return Err(bad(path, &format!("file name {name:?}")));
                    }
                    files.push((name, data));
                }
                Frame::Entry(..) => entries += 1,
                Frame::End(n, hash_ok) => {
                    if n != entries {
                        return Err(bad(
                            path,
                            &format!("the end says {n} entries, the file holds {entries}"),
                        ));
                    }
                    if !hash_ok {
                        return Err(bad(path, "its SHA-256 does not match its content"));
                    }
                    break;
                }
            }
        }
        let header = header.ok_or_else(|| bad(path, "no header"))?;
        Ok(Self {
            path: path.to_owned(),
            header,
            files,
            entries,
        })
    }

    /// Streams the entries into a new sled store at `store` (refused if one is there, or if
    /// the file changed since it was read).
    pub fn write_store(&self, store: &Path) -> Result<(), StoreError> {
        let occupied = store.exists()
            && std::fs::read_dir(store)
                .map_err(|e| StoreError::Db(format!("{}: {e}", store.display())))?
                .next()
                .is_some();
        let head = store.with_file_name("log-head");
        if occupied || head.exists() {
            return Err(StoreError::Db(format!(
                "{} already holds a store: restore into an empty data directory",
                store.parent().unwrap_or(store).display()
            )));
        }
        let db = sled::Config::new().path(store).open()?;
        let mut frames = Frames::open(&self.path)?;
        let mut batch = sled::Batch::default();
        let mut pending = 0usize;
        loop {
            match frames.next()? {
                Frame::Entry(k, v) => {
                    pending += k.len() + v.len();
                    batch.insert(k, v);
                    if pending >= CHUNK_BYTES {
                        db.apply_batch(std::mem::take(&mut batch))?;
                        pending = 0;
                    }
                }
                Frame::End(n, hash_ok) => {
                    if n != self.entries || !hash_ok {
                        drop(db);
                        let _ = std::fs::remove_dir_all(store);
                        return Err(bad(&self.path, "it changed while it was restored"));
                    }
                    break;
                }
                Frame::Header(_) | Frame::File(..) => {}
            }
        }
        db.apply_batch(batch)?;
        db.flush()?;
        Ok(())
    }
}
