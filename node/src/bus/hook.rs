//! What the bus asks of the case workflows and of the audit side: the one way it reaches
//! them. Each installs its hook at start; the bus knows nothing of cases or witnessing beyond
//! them (which kinds are case steps is the catalog's rule, `workflow::reserved`).

use std::future::Future;
use std::pin::Pin;

use std::sync::Arc;

use liaison_protocol::merkle::Hash;
use liaison_protocol::{Envelope, Frame, Header, NodeId, ReceiptStatus};

use crate::error::StoreError;
use crate::locks::KeyedGuard;
use crate::store::Txn;

/// A future the hook returns (the hook is used as a trait object).
pub(crate) type HookFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a receiving node does not take a case step now.
#[derive(Debug)]
pub(crate) enum StepRefusal {
    /// For good: a signed rejection receipt goes back.
    Final(String),
    /// The step it follows has not arrived yet: the sender retries.
    NotYet(String),
    /// The case could not be read: the sender retries.
    Unavailable(StoreError),
}

/// A case step that passed the receiving node's checks, staged in the store change that
/// stores its message and receipt.
pub(crate) trait StagedStep: Send + std::fmt::Debug {
    /// Refuses the change when the case moved since the step was checked.
    fn check(&self, t: &Txn<'_>) -> Result<(), StoreError>;
    /// Writes the case's new record, its index and its state-change entry.
    fn stage(self: Box<Self>, t: &mut Txn<'_>) -> Result<(), StoreError>;
}

/// The case workflows as the bus sees them.
pub(crate) trait CaseHook: Send + Sync + std::fmt::Debug {
    /// Waits for the lock of a case; steps of one case are decided one at a time, and the
    /// lock is held until the change that stores the step is applied.
    fn lock<'a>(&'a self, case_ref: &'a str) -> HookFuture<'a, KeyedGuard>;
    /// Checks an inbound case step against this node's copy of the case.
    fn check_step<'a>(
        &'a self,
        env: &'a Envelope,
        body: &'a [u8],
    ) -> HookFuture<'a, Result<Box<dyn StagedStep>, StepRefusal>>;
    /// What a receipt for a message this node sent does to its case, staged in the change
    /// that records the receipt.
    fn on_receipt(
        &self,
        t: &mut Txn<'_>,
        h: &Header,
        status: &ReceiptStatus,
        now: u64,
    ) -> Result<(), StoreError>;
}

/// The audit side as the bus sees it: the frames a peer sends this node as a witness, and a
/// connection that came up (a witness not yet asked since start is asked then).
pub(crate) trait AuditHook: Send + Sync + std::fmt::Debug {
    /// A peer's WITNESS submission of its checkpoint: the answer frame.
    fn witness<'a>(
        &'a self,
        peer: &'a NodeId,
        old_size: u64,
        proof: &'a [Hash],
        checkpoint: &'a [u8],
    ) -> HookFuture<'a, Frame>;
    /// A log asking, at its start, how much of it this node has cosigned.
    fn witness_size_query<'a>(&'a self, peer: &'a NodeId) -> HookFuture<'a, Frame>;
    /// A connection with `peer` is up (`conn` when this node dialled it).
    fn on_connected(self: Arc<Self>, peer: &NodeId, conn: Option<quinn::Connection>);
}
