//! `liaison node backup` (online, through the running node) and `liaison node restore`
//! (offline, onto a new machine or directory): `liaison_node::backup` does the work.

use std::path::Path;

use anyhow::Result;
use liaison_node::api::{Client, Request};

use crate::output;

/// Asks the running node for a backup into `out` (a new file; the node writes it, so it must
/// be a path the node may write: relative paths are taken from the node's data directory).
pub(crate) async fn backup(client: &mut Client, out: &Path, json: bool) -> Result<()> {
    let out = if out.is_relative() && out.components().count() > 1 {
        // A relative path with directories means the operator's directory, not the node's.
        std::env::current_dir()?.join(out)
    } else {
        out.to_owned()
    };
    let v = client.call(&Request::Backup { out }).await?;
    output::print(json, &v, |v| {
        format!(
            "backup of {} written to {}\n  {} store entries, audit log of {} entries (root {}), \
             {} bytes\n  with {}\nIt holds the node's private keys: keep it as you keep them. \
             Restore it with\n  liaison node restore --from <file> --dir <new config directory>",
            v["header"]["node"].as_str().unwrap_or("?"),
            v["path"].as_str().unwrap_or("?"),
            v["entries"],
            v["header"]["log_size"],
            v["header"]["log_root"].as_str().unwrap_or("?"),
            v["bytes"],
            v["files"]
                .as_array()
                .map(|f| {
                    f.iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default()
        )
    });
    Ok(())
}

/// Restores a backup (`liaison_node::backup::restore`) and says how to start the node.
pub(crate) async fn restore(
    from: &Path,
    dir: &Path,
    data_dir: Option<&Path>,
    json: bool,
) -> Result<()> {
    let r = liaison_node::backup::restore(from, dir, data_dir).await?;
    let v = serde_json::to_value(&r)?;
    let h = &r.header;
    output::print(json, &v, |_| {
        format!(
            "restored {} as of {} into {}: {} store entries, audit log of {} entries (root {}) \
             checked\nstart it with\n  liaison node start --config {}\n(A node that ran on \
             after this backup and had its log cosigned further is refused at start: its \
             witnesses hold more than the backup.)",
            h.node,
            output::time(h.created_ms),
            dir.display(),
            r.entries,
            h.log_size,
            h.log_root,
            r.config.display()
        )
    });
    Ok(())
}
