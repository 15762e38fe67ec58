//! A bus without network for unit tests: a real store in a temporary directory, a roster of
//! the demo federation's members with keys from fixed seeds (protocol's `workflow::testing`),
//! the manual clock, no QUIC endpoint. Tests hand it frames as a connection would
//! (`inbound::handle`) and read the store.

use std::sync::Arc;

use ed25519_dalek::SigningKey;
use liaison_protocol::roster::Rule;
use liaison_protocol::{Envelope, Header, MessageId, NodeId, Priority, SignedRoster};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Bus;
use crate::clock::Clock;
use crate::config::{DeliveryConfig, LimitsConfig};
use crate::identity::KeyCell;
use crate::net::guard::Guard;
use crate::roster::RosterCell;
use crate::store::{Store, StoreOptions};

/// Fujian public security: seed 1 (signing, log and witness key alike).
pub(crate) const FJ: &str = "cn-35-psb";
/// Shaanxi public security: seed 2.
pub(crate) const SX: &str = "cn-61-psb";
/// The Xi'an marriage registry: seed 3.
pub(crate) const XA: &str = "cn-6101-mca";
/// The manual clock starts here (ms).
pub(crate) const T0: u64 = 1_790_000_000_000;
const AUTHORITY_SEED: [u8; 32] = [0x42; 32];

/// The key of a demo member (seed by roster position, as `workflow::testing`).
pub(crate) fn key(id: &str) -> SigningKey {
    let seed = match id {
        FJ => 1,
        SX => 2,
        XA => 3,
        "cn-5325-hekou" => 4,
        "vn-laocai-bg" => 5,
        _ => 6,
    };
    SigningKey::from_bytes(&[seed; 32])
}

pub(crate) fn node(id: &str) -> NodeId {
    NodeId::new(id).unwrap_or_else(|e| panic!("{e}"))
}

/// The demo roster, `bus.*` allowed between every two members and `assist.*` between public
/// security bureaus, signed by the test authority.
pub(crate) fn roster() -> SignedRoster {
    let mut r =
        liaison_protocol::workflow::testing::demo_roster().unwrap_or_else(|e| panic!("{e}"));
    for (i, m) in r.members.iter_mut().enumerate() {
        m.tls_spki_sha256 = [i as u8 + 1; 32];
    }
    r.rules = vec![
        Rule {
            from: "*".into(),
            to: "*".into(),
            kinds: vec!["bus.*".into()],
            abroad: true,
        },
        Rule {
            from: "public_security".into(),
            to: "public_security".into(),
            kinds: vec!["assist.*".into()],
            abroad: false,
        },
    ];
    r.sign(&SigningKey::from_bytes(&AUTHORITY_SEED))
}

/// A bus for `id` without network, and the directory of its store.
pub(crate) async fn bus(id: &str) -> (Arc<Bus>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(&dir.path().join("store"), StoreOptions::default(), node(id))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let roster = roster();
    let bus = Arc::new(Bus {
        id: node(id),
        federation: roster.roster().federation.clone(),
        keys: crate::identity::NodeKeys {
            signing: KeyCell::new("signing", "signing.key.pem".into(), key(id)),
            log: KeyCell::new("log", "log.key.pem".into(), key(id)),
            witness: KeyCell::new("witness", "witness.key.pem".into(), key(id)),
        },
        authorities: std::sync::RwLock::new((
            liaison_protocol::PublicKey::from(&SigningKey::from_bytes(&AUTHORITY_SEED)),
            Vec::new(),
        )),
        roster: RosterCell::new(roster),
        store,
        endpoint: None,
        peers: std::sync::Mutex::new(std::collections::HashMap::new()),
        inbound: std::sync::Mutex::new(Vec::new()),
        cancel: CancellationToken::new(),
        tasks: TaskTracker::new(),
        cfg: DeliveryConfig::default(),
        dev_mode: true,
        inbox_notify: Notify::new(),
        roster_changed: Notify::new(),
        settled: tokio::sync::broadcast::channel(64).0,
        cases: std::sync::OnceLock::new(),
        audit: std::sync::OnceLock::new(),
        body_retention_ms: u64::MAX / 4,
        guard: Guard::new(LimitsConfig::default()),
        clock: Clock::manual(T0),
        tls: std::sync::Mutex::default(),
        receipt_batches: liaison_protocol::BatchCache::default(),
    });
    bus.install_receipt_sealer();
    (bus, dir)
}

/// Hands `frame` to `bus` as a connection from member `peer` would; returns the answer.
pub(crate) async fn deliver(
    bus: &Arc<Bus>,
    peer: &str,
    frame: liaison_protocol::Frame,
) -> liaison_protocol::Frame {
    super::inbound::handle(bus, &node(peer), frame).await
}

/// A message `from` → `to` signed with `from`'s key, sent at `at`, and its body.
pub(crate) fn envelope(from: &str, to: &str, at: u64, body: &[u8]) -> (Envelope, Vec<u8>) {
    let header = Header {
        federation: "cn-atip-demo".into(),
        id: MessageId(
            liaison_protocol::Digest::of(&[from.as_bytes(), body].concat()).0[..16]
                .try_into()
                .unwrap_or_else(|_| unreachable!()),
        ),
        from: node(from),
        to: node(to),
        sent_at: at,
        kind: "bus.test".into(),
        body_len: body.len() as u64,
        body_hash: liaison_protocol::Digest::of(body).0,
        priority: Priority::Routine,
        in_reply_to: None,
        expires_at: None,
        case_ref: None,
    };
    (Envelope::seal(header, &key(from)), body.to_vec())
}
