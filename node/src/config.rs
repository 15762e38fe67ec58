//! The node's configuration: one TOML file, unknown keys rejected, every default named with
//! its reason. Paths are relative to the directory of the config file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use liaison_protocol::NodeId;
use serde::Deserialize;

use crate::error::NodeError;

/// First retry delay after a peer was unreachable: short, so a blip costs little.
pub const DEFAULT_BACKOFF_INITIAL_MS: u64 = 200;
/// Longest retry delay: a peer that comes back is found within a minute.
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 60_000;
/// Messages in flight per peer: enough to fill a long-fat link, small enough that a flash
/// alert waits for at most this many streams.
pub const DEFAULT_WINDOW: usize = 128;
/// Oldest message accepted (sent-at), and so the least time a dedupe entry is kept: a month
/// covers any outage a node survives with its queue intact.
pub const DEFAULT_REPLAY_WINDOW_MS: u64 = 30 * 24 * 3600 * 1000;
/// Clock skew tolerated for a sent-at in the future.
pub const DEFAULT_MAX_SKEW_MS: u64 = 5 * 60 * 1000;
/// Time a graceful shutdown waits for in-flight work.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 5_000;
/// A connection silent this long is dead (keep-alives go every sixth of it): short enough
/// that a restarted peer is reached again quickly, long enough for a congested link.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 15_000;
/// Traffic goes on this long after the roster's validity ended (seven days).
pub const DEFAULT_ROSTER_GRACE_MS: u64 = 7 * 24 * 3600 * 1000;
/// sled page cache: sled's default (1 GB) is far more than a node needs.
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// The node configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's id; must be a member of the roster.
    pub node_id: NodeId,
    /// The federation id; must match the roster.
    pub federation: String,
    /// UDP address for QUIC.
    pub listen: SocketAddr,
    /// Where the store lives.
    pub data_dir: PathBuf,
    /// The federation authority's Ed25519 public key (hex): the only key a roster may be
    /// signed with.
    pub authority_key: String,
    /// The federation CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// This node's TLS certificate (PEM).
    pub tls_cert: PathBuf,
    /// This node's TLS private key (PKCS#8 PEM, 0600).
    pub tls_key: PathBuf,
    /// Node signing key (PKCS#8 PEM, 0600).
    pub signing_key: PathBuf,
    /// Audit log key (PKCS#8 PEM, 0600).
    pub log_key: PathBuf,
    /// Witness key (PKCS#8 PEM, 0600).
    pub witness_key: PathBuf,
    /// The initial signed roster (a newer one in the store wins).
    pub roster: PathBuf,
    /// Accept development material (certs-dev). Never in production.
    #[serde(default)]
    pub dev_mode: bool,
    /// Delivery tuning.
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// Store tuning.
    #[serde(default)]
    pub store: StoreConfig,
    /// Audit log.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Case workflows.
    #[serde(default)]
    pub workflow: WorkflowConfig,
    /// Bounds on what peers and strangers can make this node do.
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// Bounds on what peers and strangers can make this node do (docs/architecture.md,
/// "Bounded under abuse").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Refusals not logged one by one (failed handshakes, a member's input beyond its rate)
    /// are counted and logged as one summary entry per interval, ms.
    pub summary_interval_ms: u64,
    /// Refusal entries logged one by one per member and minute (a burst of as many); the rest
    /// go into the summary.
    pub entries_per_minute: u32,
    /// Malformed input (frames, envelopes) a member may send per minute before all its
    /// connections are closed and refused for `ban_ms`.
    pub junk_per_minute: u32,
    /// How long a member that sent too much malformed input is refused, ms.
    pub ban_ms: u64,
    /// Inbound connections kept per member; a newer one closes the oldest.
    pub connections_per_member: usize,
    /// Handshakes in progress at once; more are refused.
    pub handshakes: usize,
    /// Handshakes in progress at once from one address; more are refused.
    pub handshakes_per_address: usize,
    /// Beyond this many handshakes in progress, a new one from an address not yet validated
    /// must first prove it receives at that address (QUIC retry).
    pub retry_above: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            summary_interval_ms: 60_000,
            entries_per_minute: 20,
            junk_per_minute: 100,
            ban_ms: 60_000,
            connections_per_member: 8,
            handshakes: 64,
            handshakes_per_address: 8,
            retry_above: 16,
        }
    }
}

/// Case workflow settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkflowConfig {
    /// How often deadlines and alert radii are checked, ms.
    pub tick_ms: u64,
    /// How far an officer's signing time may lie from the node's clock, ms (an action is
    /// signed by the officer's tool just before it is submitted).
    pub max_action_age_ms: u64,
    /// How long a received case step that does not fit the case yet (its predecessor is
    /// still on its way) is answered "try later" before it is refused for good, ms.
    pub reorder_window_ms: u64,
}

impl Default for WorkflowConfig {
    fn default() -> Self {
        Self {
            tick_ms: 1000,
            max_action_age_ms: 10 * 60 * 1000,
            reorder_window_ms: 60 * 60 * 1000,
        }
    }
}

/// Signed checkpoints of the audit log: often enough that a peer can witness recent history,
/// rarely enough to cost nothing (one signature when the log grew).
pub const DEFAULT_CHECKPOINT_INTERVAL_MS: u64 = 60_000;

/// How long a message body is kept when nothing shorter applies: five years, the longest
/// period the seed documents set for keeping case files before review. Envelopes, receipts,
/// audit entries and proofs are kept for good.
pub const DEFAULT_BODY_RETENTION_MS: u64 = 5 * 365 * 24 * 3600 * 1000;

/// At start, the wait for the witnesses that cosigned this log: long enough for a handshake
/// over a slow link, short enough that a node whose witnesses are all down starts anyway.
pub const DEFAULT_START_CHECK_MS: u64 = 3_000;

/// Audit log and retention settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// How often the node signs a checkpoint when its log has grown, ms.
    pub checkpoint_interval_ms: u64,
    /// Bodies older than this are deleted (a `body_purged` entry records each), ms.
    pub body_retention_ms: u64,
    /// At start, how long to wait for the witnesses that cosigned this node's log to say how
    /// much of it they hold (a store behind them is refused), ms; 0 skips the wait.
    pub start_check_ms: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_interval_ms: DEFAULT_CHECKPOINT_INTERVAL_MS,
            body_retention_ms: DEFAULT_BODY_RETENTION_MS,
            start_check_ms: DEFAULT_START_CHECK_MS,
        }
    }
}

/// Delivery tuning.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// First retry delay, ms.
    pub backoff_initial_ms: u64,
    /// Longest retry delay, ms.
    pub backoff_max_ms: u64,
    /// Messages in flight per peer.
    pub window: usize,
    /// Oldest sent-at accepted, ms.
    pub replay_window_ms: u64,
    /// Future sent-at tolerated, ms.
    pub max_skew_ms: u64,
    /// Graceful shutdown grace, ms.
    pub shutdown_grace_ms: u64,
    /// QUIC idle timeout, ms.
    pub idle_timeout_ms: u64,
    /// How long traffic goes on after the roster in force passed its validity (with a
    /// warning), ms; then no new message is sent or taken until a newer roster is applied.
    pub roster_grace_ms: u64,
    /// Offer liaison/2 and sign the receipts of one group commit as one batch for peers that
    /// speak it (protocol.md §4.3a); off: liaison/1 only, every receipt signed on its own.
    pub batch_receipts: bool,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            backoff_initial_ms: DEFAULT_BACKOFF_INITIAL_MS,
            backoff_max_ms: DEFAULT_BACKOFF_MAX_MS,
            window: DEFAULT_WINDOW,
            replay_window_ms: DEFAULT_REPLAY_WINDOW_MS,
            max_skew_ms: DEFAULT_MAX_SKEW_MS,
            shutdown_grace_ms: DEFAULT_SHUTDOWN_GRACE_MS,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            roster_grace_ms: DEFAULT_ROSTER_GRACE_MS,
            batch_receipts: true,
        }
    }
}

impl DeliveryConfig {
    /// The retry schedule of the delivery machine.
    pub(crate) fn backoff(&self) -> liaison_protocol::delivery::Backoff {
        liaison_protocol::delivery::Backoff {
            initial_ms: self.backoff_initial_ms.max(1),
            max_ms: self.backoff_max_ms.max(self.backoff_initial_ms).max(1),
        }
    }
}

/// Store tuning.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// sled page cache, bytes.
    pub cache_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

impl Config {
    /// Reads a config file; relative paths in it are resolved against its directory.
    pub fn load(path: &Path) -> Result<Self, NodeError> {
        let text = std::fs::read_to_string(path).map_err(|e| NodeError::Config {
            path: path.to_owned(),
            problem: format!("cannot read: {e}"),
        })?;
        let mut cfg: Self = toml::from_str(&text).map_err(|e| NodeError::Config {
            path: path.to_owned(),
            problem: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.resolve_paths(base);
        Ok(cfg)
    }

    /// Resolves relative paths against `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        for p in [
            &mut self.data_dir,
            &mut self.ca_cert,
            &mut self.tls_cert,
            &mut self.tls_key,
            &mut self.signing_key,
            &mut self.log_key,
            &mut self.witness_key,
            &mut self.roster,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// The config as TOML text.
    pub fn to_toml(&self) -> String {
        let d = &self.delivery;
        format!(
            "# liaison-node configuration\n\
             node_id = {:?}\nfederation = {:?}\nlisten = \"{}\"\ndata_dir = {:?}\n\
             authority_key = {:?}\nca_cert = {:?}\ntls_cert = {:?}\ntls_key = {:?}\n\
             signing_key = {:?}\nlog_key = {:?}\nwitness_key = {:?}\nroster = {:?}\n\
             dev_mode = {}\n\n[delivery]\nbackoff_initial_ms = {}\nbackoff_max_ms = {}\n\
             window = {}\nreplay_window_ms = {}\nmax_skew_ms = {}\nshutdown_grace_ms = {}\n\
             idle_timeout_ms = {}\nroster_grace_ms = {}\nbatch_receipts = {}\n\n\
             [store]\ncache_bytes = {}\n\n[audit]\ncheckpoint_interval_ms = {}\nbody_retention_ms = {}\n\
             start_check_ms = {}\n\n\
             [workflow]\ntick_ms = {}\nmax_action_age_ms = {}\nreorder_window_ms = {}\n\n\
             [limits]\nsummary_interval_ms = {}\nentries_per_minute = {}\njunk_per_minute = {}\n\
             ban_ms = {}\nconnections_per_member = {}\nhandshakes = {}\nhandshakes_per_address = {}\n\
             retry_above = {}\n",
            self.node_id.as_str(),
            self.federation,
            self.listen,
            self.data_dir.display().to_string(),
            self.authority_key,
            self.ca_cert.display().to_string(),
            self.tls_cert.display().to_string(),
            self.tls_key.display().to_string(),
            self.signing_key.display().to_string(),
            self.log_key.display().to_string(),
            self.witness_key.display().to_string(),
            self.roster.display().to_string(),
            self.dev_mode,
            d.backoff_initial_ms,
            d.backoff_max_ms,
            d.window,
            d.replay_window_ms,
            d.max_skew_ms,
            d.shutdown_grace_ms,
            d.idle_timeout_ms,
            d.roster_grace_ms,
            d.batch_receipts,
            self.store.cache_bytes,
            self.audit.checkpoint_interval_ms,
            self.audit.body_retention_ms,
            self.audit.start_check_ms,
            self.workflow.tick_ms,
            self.workflow.max_action_age_ms,
            self.workflow.reorder_window_ms,
            self.limits.summary_interval_ms,
            self.limits.entries_per_minute,
            self.limits.junk_per_minute,
            self.limits.ban_ms,
            self.limits.connections_per_member,
            self.limits.handshakes,
            self.limits.handshakes_per_address,
            self.limits.retry_above,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
node_id = "cn-35-psb"
federation = "cn-atip-demo"
listen = "127.0.0.1:0"
data_dir = "data"
authority_key = "00"
ca_cert = "ca.pem"
tls_cert = "tls.cert.pem"
tls_key = "tls.key.pem"
signing_key = "signing.key.pem"
log_key = "log.key.pem"
witness_key = "witness.key.pem"
roster = "roster.cbor"
"#;

    #[test]
    fn parses_and_round_trips() {
        let c: Config = toml::from_str(MIN).unwrap();
        assert!(!c.dev_mode);
        assert_eq!(c.delivery.window, DEFAULT_WINDOW);
        let again: Config = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(again.node_id, c.node_id);
        assert!(c.delivery.batch_receipts);
        // Turned off, it survives the round trip too.
        let mut v1 = c.clone();
        v1.delivery.batch_receipts = false;
        let again: Config = toml::from_str(&v1.to_toml()).unwrap();
        assert!(!again.delivery.batch_receipts);
    }

    #[test]
    fn unknown_keys_rejected() {
        let text = format!("{MIN}\nsurprise = 1\n");
        let err = toml::from_str::<Config>(&text).unwrap_err().to_string();
        assert!(err.contains("surprise"), "{err}");
        let text = format!("{MIN}\n[delivery]\nwindoww = 3\n");
        assert!(toml::from_str::<Config>(&text).is_err());
    }
}
