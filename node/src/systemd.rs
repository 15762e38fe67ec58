//! The service manager's side of a node run under systemd (`Type=notify`, the unit in
//! `node/deploy/liaison-node.service`): `READY=1` once the node listens on QUIC and on its
//! API socket, `STATUS=` lines an operator sees in `systemctl status`, `WATCHDOG=1` at half
//! the unit's `WatchdogSec` for as long as the store's writer still commits (a wedged writer
//! or a failed store stops the pings, and systemd restarts the node), and `STOPPING=1` when
//! shutdown begins. Outside systemd (`NOTIFY_SOCKET` unset) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::warn;

use crate::node::Node;

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "cannot notify the service manager");
    }
}

/// The node is up: tells the service manager, with a status line.
pub(crate) fn ready(node: &Node) {
    let status = format!("serving as {}", node.id());
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// Shutdown has begun.
pub(crate) fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// Pings the watchdog at half its period while the node's store commits, until the node
/// shuts down. Does nothing when the unit sets no watchdog.
pub(crate) fn spawn_watchdog(node: Node) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = (period / 2).max(Duration::from_millis(10));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = node.cancelled() => return,
                _ = tick.tick() => {}
            }
            // A barrier through the writer: answered only by a writer that still commits.
            match tokio::time::timeout(every, node.alive()).await {
                Ok(Ok(())) => notify(&[NotifyState::Watchdog]),
                Ok(Err(e)) => {
                    let status = format!("store failed: {e}");
                    notify(&[NotifyState::Status(&status)]);
                }
                Err(_) => notify(&[NotifyState::Status("store writer not answering")]),
            }
        }
    });
}
