//! Node errors, one enum per failure domain.

use std::path::PathBuf;

use liaison_protocol::{DecodeError, PolicyError, VerifyError};

/// Errors of the node as a whole (start-up, configuration, local requests).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The config file is unreadable or invalid.
    #[error("config {path}: {problem}")]
    Config { path: PathBuf, problem: String },
    /// A key file is missing, unreadable, badly protected or malformed.
    #[error("key file {path}: {problem}")]
    Key { path: PathBuf, problem: String },
    /// The roster is missing or does not verify.
    #[error("roster: {0}")]
    Roster(String),
    /// TLS material is unusable.
    #[error("TLS: {0}")]
    Tls(String),
    /// Development material outside dev mode, or the reverse.
    #[error("{0}")]
    DevMaterial(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The roster's policy refuses the request.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A workflow, role or handling rule refuses the action (audited).
    #[error("refused: {0}")]
    Refused(String),
    /// Bad input in a request.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Socket or file I/O.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
}

impl From<DecodeError> for NodeError {
    fn from(e: DecodeError) -> Self {
        Self::Invalid(e.to_string())
    }
}

impl From<VerifyError> for NodeError {
    fn from(e: VerifyError) -> Self {
        Self::Invalid(e.to_string())
    }
}

/// Store failures. A request that meets one is not acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// sled reported an error (I/O, disk full, corruption).
    #[error("store error: {0} (check free disk space and the data directory)")]
    Db(String),
    /// The store was written by another schema version.
    #[error(
        "store schema version {found}, this node uses {expected}: migrate or use a new data directory"
    )]
    Schema { found: u32, expected: u32 },
    /// A stored record could not be decoded.
    #[error("store record {key} is corrupt: {problem}")]
    Corrupt { key: String, problem: String },
    /// A write failed to reach the disk (disk full, I/O error): every later change and read
    /// is refused until the node is restarted, since what failed is still readable in memory.
    #[error(
        "the store failed ({0}); nothing more is stored or answered: free disk space or fix the \
         disk, then restart the node"
    )]
    Failed(String),
    /// A change was decided on a record that moved on meanwhile (another change to the same
    /// case): nothing was written; decide again.
    #[error("changed meanwhile: {0}")]
    Conflict(String),
    /// The store was closed (the node is stopping).
    #[error("the store is closed (the node is shutting down)")]
    Closed,
    /// The sled files or the log head are damaged.
    #[error("{0}")]
    Damaged(String),
    /// The store is behind what this node committed before: replaced by an older copy, or
    /// cut short by sled's recovery from damage.
    #[error(
        "the store at {store} went back in time: {problem}. It was replaced by an older copy \
         or cut short by recovery from damage, and is refused so that nothing is served from it. \
         Restore the data directory from its newest backup. (The log head {head} records \
         what was committed; removing it starts from the old state, and this node's witnesses \
         will then report the rollback.)"
    )]
    RolledBack {
        problem: String,
        store: String,
        head: String,
    },
    /// A witness has cosigned more of this node's log than the store holds: the whole data
    /// directory (store and log head) was put back from an older copy, or lost.
    #[error(
        "witness {witness} has cosigned {cosigned} entries of this node's audit log but the store \
         holds {held} (entries {held}..{last} are missing): the data directory was replaced by an \
         older copy or lost, and nothing is served from it. Restore the data directory from its \
         newest backup (with its log-head file)"
    )]
    BehindWitness {
        witness: String,
        cosigned: u64,
        held: u64,
        last: u64,
    },
}
