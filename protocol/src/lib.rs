//! liaison-protocol: the bytes and rules of the liaison bus, without I/O.
//!
//! ```text
//!  officer action ─► Envelope::seal ─► Frame::Deliver ─► (QUIC, in node/) ─► Frame::decode
//!                                                                          └► Envelope::open
//!                                                                             Roster::check_send
//!  SignedReceipt::sign ◄──────────────────────────────────────────────────────┘
//! ```
//!
//! This crate is formats (envelope, receipt, non-delivery record, roster), wire framing,
//! policy, and Merkle math: pure functions and types. It has no tokio, no sockets, no clock
//! (time is an argument) and no storage; `node/` applies it.

#![forbid(unsafe_code)]

pub mod action;
pub mod audit;
pub(crate) mod cbor;
pub mod cose;
pub mod delivery;
pub mod document;
pub mod envelope;
pub mod error;
pub mod evidence;
pub mod frame;
pub mod ids;
pub mod keys;
pub mod merkle;
pub mod note;
pub mod receipt;
pub mod roster;
pub mod workflow;

pub use cose::SignedObject;
pub use envelope::{BodyError, Envelope, Header, Priority};
pub use error::{DecodeError, VerifyError};
pub use frame::{ErrorCode, Frame, FrameError};
pub use ids::{Digest, MessageId, NodeId};
pub use keys::PublicKey;
pub use receipt::{
    BatchCache, NonDelivery, Receipt, ReceiptBatch, ReceiptStatus, SignedNonDelivery, SignedReceipt,
};
pub use roster::{
    Location, Member, MemberStatus, PolicyError, Roster, Rule, SignedRoster, Standing,
};
