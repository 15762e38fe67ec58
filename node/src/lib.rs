//! liaison-node: an agency's node on the liaison bus.
//!
//! ```text
//!  local API (api) ──► Node ──► cases (act) ──┐
//!                        │                    ├──► bus: send, receive, settle ──► store
//!                        └──► audit ──────────┘        peer actors, inbound  ══QUIC══► peers
//!                                                      net: transport, guard
//! ```
//!
//! Dependencies run one way (`tests/layers.rs`): store ← net ← bus ← cases, audit ← api ←
//! node. The bus reaches cases and audit only through the hooks they install at start
//! (`bus::hook`). The node applies `liaison-protocol` (formats, checks, delivery decisions,
//! the catalog and its state machines) to bytes from the network and the store; only `store`
//! touches sled, and time comes from one clock (`clock`).

#![forbid(unsafe_code)]

pub mod api;
mod audit;
pub mod backup;
mod bus;
mod cases;
pub mod clock;
pub mod config;
pub mod error;
pub mod identity;
mod locks;
mod net;
mod node;
pub mod roster;
pub mod store;
mod systemd;

/// The allocator the node's binaries use (`#[global_allocator] static A: Allocator =
/// Allocator;`).
pub use mimalloc::MiMalloc as Allocator;

pub use audit::AuditReport;
pub use audit::witness::WitnessOutcome;
pub use bus::peer::PeerStatus;
pub use bus::{MessageView, SendRequest, SendResult, Settled};
pub use cases::{ActRequest, ActResult, CaseView, EnrollRequest, OfficerView};
pub use clock::{Clock, now_ms};
pub use config::Config;
pub use error::{ActRefusal, NodeError, StoreError};
pub use net::transport;
pub use node::{Node, StartOptions, check_config};

/// Runs a node from a config file until SIGINT/SIGTERM or an API shutdown: the body of the
/// `liaison-node` binary.
pub async fn run(mut cfg: Config, dev: bool) -> Result<(), NodeError> {
    cfg.dev_mode |= dev;
    let api = cfg.data_dir.join("api.sock");
    let node = Node::start(
        cfg,
        StartOptions {
            socket: None,
            clock: None,
        },
    )
    .await?;
    // The local API (operators, officers' tools) on `<data_dir>/api.sock`, mode 0600.
    if let Err(e) = api::spawn_server(node.clone(), api) {
        node.shutdown().await;
        return Err(e);
    }
    systemd::ready(&node);
    systemd::spawn_watchdog(node.clone());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        () = node.cancelled() => {}
    }
    systemd::stopping();
    node.shutdown().await;
    Ok(())
}
