//! The network side of the bus: the QUIC endpoint and its TLS verifiers (`transport`), what
//! strangers and members may make the node do (`guard`), inbound connections and streams
//! (`inbound`), and one actor per next hop that delivers the outbox (`peer`).

pub(crate) mod guard;
pub(crate) mod inbound;
pub(crate) mod peer;
pub mod transport;
