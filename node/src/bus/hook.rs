//! What the bus asks of the case workflows: the one way it reaches them. The cases install a
//! [`CaseHook`] at start; the bus knows nothing of cases beyond it (which kinds are case
//! steps is the catalog's rule, `workflow::reserved`).

use std::future::Future;
use std::pin::Pin;

use liaison_protocol::{Envelope, Header, ReceiptStatus};

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
