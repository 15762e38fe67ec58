//! A node's backup as a whole: which of its files go with the store (`Node::backup` writes
//! them beside it) and the offline restore of all of it into a new directory. The store's part
//! (a consistent copy while changes go on, the file format) is `store::backup`.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::error::NodeError;
use crate::store::{Backup, BackupHeader, Store, StoreOptions};

/// The files of a node a backup carries, by the name they get in it (and in a restored
/// config), with the config field that names each. The config itself is `node.toml`.
pub(crate) fn files_of(cfg: &mut Config) -> [(&'static str, &mut PathBuf); 7] {
    [
        ("ca.pem", &mut cfg.ca_cert),
        ("tls.cert.pem", &mut cfg.tls_cert),
        ("tls.key.pem", &mut cfg.tls_key),
        ("signing.key.pem", &mut cfg.signing_key),
        ("log.key.pem", &mut cfg.log_key),
        ("witness.key.pem", &mut cfg.witness_key),
        ("roster.cbor", &mut cfg.roster),
    ]
}

/// What a restore put where.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Restored {
    /// The backup's header (node, time, log size and root).
    pub header: BackupHeader,
    /// Store entries restored.
    pub entries: u64,
    /// The node's files written (names in `dir`).
    pub files: Vec<String>,
    /// The restored config.
    pub config: PathBuf,
    /// Its data directory.
    pub data_dir: PathBuf,
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<(), NodeError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| NodeError::Invalid(format!("creating {}: {e}", path.display())))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

fn make_dir(path: &Path) -> Result<(), NodeError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| NodeError::Invalid(format!("creating {}: {e}", path.display())))
}

/// Restores the backup `from` (the node stopped, or on a new machine): its files and config
/// into `dir` (created; must be empty), its store into `data_dir` (relative: to `dir`;
/// default `data`), then opens the store as the node would and checks its log is the one the
/// backup names. Nothing is written when the backup does not check out.
pub async fn restore(
    from: &Path,
    dir: &Path,
    data_dir: Option<&Path>,
) -> Result<Restored, NodeError> {
    let backup = Backup::read(from)?;
    if dir.exists() && dir.read_dir()?.next().is_some() {
        return Err(NodeError::Invalid(format!(
            "{} is not empty: restore into a new directory (nothing was written)",
            dir.display()
        )));
    }
    let text = backup
        .files
        .iter()
        .find(|(n, _)| n == "node.toml")
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .ok_or_else(|| NodeError::Invalid("the backup holds no node.toml".into()))?;
    let mut cfg: Config = toml::from_str(&text).map_err(|e| NodeError::Config {
        path: PathBuf::from("node.toml (in the backup)"),
        problem: e.to_string(),
    })?;
    cfg.data_dir = data_dir.map_or_else(|| PathBuf::from("data"), Path::to_path_buf);
    make_dir(dir)?;
    for (name, bytes) in &backup.files {
        if name != "node.toml" {
            write_new(&dir.join(name), bytes)?;
        }
    }
    let config = dir.join("node.toml");
    write_new(&config, cfg.to_toml().as_bytes())?;
    let cfg = Config::load(&config)?;
    make_dir(&cfg.data_dir)?;
    let opts = StoreOptions {
        cache_bytes: cfg.store.cache_bytes,
        body_retention_ms: cfg.audit.body_retention_ms,
        head: None,
    };
    Store::restore(from, &cfg.data_dir.join("store"), opts).await?;
    Ok(Restored {
        header: backup.header,
        entries: backup.entries,
        files: backup.files.into_iter().map(|(n, _)| n).collect(),
        config,
        data_dir: cfg.data_dir,
    })
}
