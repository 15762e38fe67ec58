//! The network pieces the bus stands on, with no knowledge of it: the QUIC endpoint and its
//! TLS verifiers (`transport`) and the bounds on what strangers and members may make the node
//! do (`guard`).

pub(crate) mod guard;
pub mod transport;
