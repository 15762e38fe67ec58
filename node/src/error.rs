//! Node errors, one enum per failure domain.

use std::path::PathBuf;

use liaison_protocol::audit::EntryKind;
use liaison_protocol::workflow::WorkflowError;
use liaison_protocol::{DecodeError, NodeId, PolicyError, VerifyError};

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
    Refused(Box<ActRefusal>),
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

/// An officer's action refused by the sending node (audited, nothing else changes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActRefusal {
    /// The signed action does not open (bad signature, credential, encoding).
    #[error("action does not verify: {0}")]
    DoesNotVerify(String),
    /// Signed for another node.
    #[error("the action is for node {action_node}, this is {here}")]
    OtherNode {
        /// The node the action names.
        action_node: NodeId,
        /// This node.
        here: NodeId,
    },
    /// Not signed by an officer (a node's own step cannot be submitted).
    #[error("actions submitted here must be signed by an officer enrolled at this node")]
    NoOfficer,
    /// The officer is not enrolled here.
    #[error(
        "officer {officer} is not enrolled at {node} (an operator enrolls officers with \
         `liaison officer enroll`)"
    )]
    NotEnrolled {
        /// The officer.
        officer: String,
        /// This node.
        node: NodeId,
    },
    /// The credential is not the officer's current enrollment.
    #[error("the credential in the action is not officer {0}'s current enrollment here")]
    StaleCredential(String),
    /// The officer was revoked.
    #[error("officer {officer} was revoked at {at}")]
    OfficerRevoked {
        /// The officer.
        officer: String,
        /// When, Unix ms.
        at: u64,
    },
    /// The officer's role may not sign the kind (or the kind is unknown).
    #[error("{0}")]
    Role(WorkflowError),
    /// Signed too long ago, or ahead of the node's clock.
    #[error("the action was signed at {signed_at} but the node's clock says {now}: sign it again")]
    SigningTime {
        /// When it was signed.
        signed_at: u64,
        /// The node's clock.
        now: u64,
    },
    /// The purpose is not the kind's.
    #[error("{kind} serves the purpose {expected}, not {got}")]
    Purpose {
        /// The kind.
        kind: String,
        /// Its purpose.
        expected: String,
        /// The action's.
        got: String,
    },
    /// This very signed action was taken before.
    #[error("this signed {kind} was already submitted for case {case} (sign a new one)")]
    AlreadySubmitted {
        /// The kind.
        kind: String,
        /// The case.
        case: String,
    },
    /// The kind needs the case held here first (catalog: needs the sender's copy).
    #[error(
        "case {0} is not open here: open it first with the victim's consent \
         (`liaison repatriation open`)"
    )]
    CaseNotOpenHere(String),
    /// An alert is issued once (catalog: reissued).
    #[error("alert {0} is already issued: send news with `liaison alert update`")]
    AlertIssued(String),
    /// A step recorded here only was given recipients.
    #[error("{0} is recorded here only; it has no recipients")]
    LocalOnly(String),
    /// No unit to alert (no place, or none in range).
    #[error("{0}")]
    AlertTargets(String),
    /// A node does not send case steps to itself.
    #[error("a node does not send case steps to itself")]
    ToSelf,
    /// Not releasable abroad, to a foreign counterpart.
    #[error(
        "{to} is a foreign counterpart and this {kind} is not marked as releasable abroad \
         (--abroad)"
    )]
    NotForAbroad {
        /// The recipient.
        to: NodeId,
        /// The kind.
        kind: String,
    },
    /// Onward passing of H2 material without the provider's permission, or material that is
    /// not held (protocol.md §16.5).
    #[error("{0}")]
    Onward(String),
    /// The officer was revoked or enrolled again while the step was decided.
    #[error("officer {0} was revoked or enrolled again while this step was checked")]
    EnrollmentChanged(String),
    /// A permission the step relied on was withdrawn while it was decided.
    #[error(
        "the permission to pass message {message} from {provider} on to {to} was withdrawn \
         while this step was checked"
    )]
    PermissionWithdrawn {
        /// The message (hex id).
        message: String,
        /// Its provider.
        provider: NodeId,
        /// The recipient.
        to: NodeId,
    },
    /// The case's state machine refuses the step.
    #[error("{0}")]
    Workflow(WorkflowError),
}

impl ActRefusal {
    /// The audit kind the refusal is logged under: handling and onward passing are refusals
    /// by policy (kind 13), the rest rejections (kind 5).
    pub fn audit_kind(&self) -> EntryKind {
        match self {
            Self::NotForAbroad { .. } | Self::Onward(_) => EntryKind::RefusedByPolicy,
            _ => EntryKind::Rejected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handling_refusals_are_policy_the_rest_rejections() {
        let vn = NodeId::new("vn").unwrap_or_else(|_| unreachable!());
        assert_eq!(
            ActRefusal::NotForAbroad {
                to: vn,
                kind: "assist.request".into()
            }
            .audit_kind(),
            EntryKind::RefusedByPolicy
        );
        assert_eq!(
            ActRefusal::Onward("H2".into()).audit_kind(),
            EntryKind::RefusedByPolicy
        );
        assert_eq!(ActRefusal::ToSelf.audit_kind(), EntryKind::Rejected);
        assert_eq!(
            ActRefusal::CaseNotOpenHere("X".into()).to_string(),
            "case X is not open here: open it first with the victim's consent \
             (`liaison repatriation open`)"
        );
    }
}
