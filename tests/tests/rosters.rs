//! Bad rosters offered by a peer (protocol.md §7.4): signed by another key, malformed, naming
//! two members with one key, expired before it arrived: each refused with a reason naming the
//! problem and an audit entry; an older or equal serial changes nothing (answered with the
//! roster in force, or acknowledged). The roster in force never moves.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ed25519_dalek::SigningKey;
use liaison_node::now_ms;
use liaison_protocol::audit::EntryKind;
use liaison_protocol::{ErrorCode, Frame, SignedRoster};
use liaison_tests::{Federation, two_bureaus};

fn authority(fed: &Federation) -> SigningKey {
    liaison_node::identity::load_signing_key(&fed.generated.dir.join("authority.key.pem")).unwrap()
}

async fn rejections(node: &liaison_node::Node) -> Vec<String> {
    node.log_entries(0, node.log_len())
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, e)| e.kind == EntryKind::Rejected)
        .map(|(_, e)| String::from_utf8_lossy(&e.object).into_owned())
        .collect()
}

/// Offers `bytes` as a ROSTER and expects a refusal whose reason contains `why`, logged.
async fn refused(
    raw: &liaison_tests::RawPeer,
    node: &liaison_node::Node,
    bytes: Vec<u8>,
    why: &str,
) {
    let before = rejections(node).await.len();
    match raw.exchange(&Frame::Roster(bytes)).await.unwrap() {
        Frame::Error { code, reason } => {
            assert_eq!(code, ErrorCode::Refused, "{reason}");
            assert!(reason.starts_with("roster: "), "{reason}");
            assert!(reason.contains(why), "expected {why:?} in {reason:?}");
        }
        other => panic!("not refused ({why}): {other:?}"),
    }
    let after = rejections(node).await;
    assert_eq!(after.len(), before + 1, "no audit entry for {why}");
    assert!(after.last().unwrap().contains(why), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rosters_are_refused_with_the_reason_and_logged() {
    let mut fed = two_bureaus();
    let sx = fed.start("sx").await.unwrap();
    let raw = fed.raw("fj", "sx").await.unwrap();
    let genuine = fed.generated.roster.clone();
    let in_force = sx.roster().bytes().to_vec();

    // Signed by a key that is not the federation authority's.
    let mut next = genuine.clone();
    next.serial = 5;
    let stranger = SigningKey::from_bytes(&[9; 32]);
    refused(
        &raw,
        &sx,
        next.sign(&stranger).bytes().to_vec(),
        "unknown key",
    )
    .await;

    // Not a roster at all, and a roster cut short.
    refused(&raw, &sx, b"\xa1\x01\x02 not cose".to_vec(), "refused").await;
    let good = next.sign(&authority(&fed)).bytes().to_vec();
    refused(&raw, &sx, good[..good.len() / 2].to_vec(), "refused").await;

    // Two members holding one key.
    let mut twins = next.clone();
    twins.members[1].signing_key = twins.members[0].signing_key;
    refused(
        &raw,
        &sx,
        twins.sign(&authority(&fed)).bytes().to_vec(),
        "reuses another member's key",
    )
    .await;

    // Expired before it arrived.
    let mut stale = next.clone();
    stale.issued_at = 1;
    stale.valid_until = Some(now_ms() - 60_000);
    refused(
        &raw,
        &sx,
        stale.sign(&authority(&fed)).bytes().to_vec(),
        "expired",
    )
    .await;

    // An equal serial is acknowledged, a lower one answered with the roster in force;
    // neither changes anything.
    let equal = SignedRoster::open(&in_force, &fed.authority()).unwrap();
    match raw
        .exchange(&Frame::Roster(equal.bytes().to_vec()))
        .await
        .unwrap()
    {
        Frame::Ack(_) => {}
        other => panic!("equal serial: {other:?}"),
    }
    let mut newer = genuine.clone();
    newer.serial = 3;
    sx.apply_roster(newer.sign(&authority(&fed)).bytes())
        .await
        .unwrap();
    match raw
        .exchange(&Frame::Roster(in_force.clone()))
        .await
        .unwrap()
    {
        Frame::Roster(bytes) => assert_eq!(bytes, sx.roster().bytes()),
        other => panic!("lower serial: {other:?}"),
    }
    assert_eq!(sx.roster().roster().serial, 3);
}
