//! Bad input at the node's front door: every case refused with a clear reason, logged,
//! and nothing stored.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use ed25519_dalek::SigningKey;
use liaison_node::StoreError;
use liaison_node::identity::load_signing_key;
use liaison_node::store::Fault;
use liaison_protocol::audit::EntryKind;
use liaison_protocol::delivery::refusal_name;
use liaison_protocol::{
    Digest, Envelope, ErrorCode, Frame, MemberStatus, ReceiptStatus, SignedObject, SignedReceipt,
};
use liaison_tests::{Federation, count_state, header, member, msg, spec, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

fn fed3() -> Federation {
    Federation::new(&spec(vec![
        member("fj", "public_security", "CHN", None),
        member("sx", "public_security", "CHN", None),
        member("gx", "public_security", "CHN", None),
    ]))
    .unwrap()
}

fn key(fed: &Federation, id: &str) -> SigningKey {
    load_signing_key(&fed.member_dir(id).join("signing.key.pem")).unwrap()
}

/// Hands `envelope` and `body` over as a DELIVER frame and returns the answer.
async fn deliver(raw: &liaison_tests::RawPeer, envelope: Vec<u8>, body: &[u8]) -> Frame {
    raw.exchange(&Frame::Deliver {
        envelope,
        body: body.to_vec(),
    })
    .await
    .unwrap()
}

fn rejected_reason(node: &liaison_node::Node, answer: &Frame) -> String {
    match answer {
        Frame::Receipt(bytes) => {
            let roster = node.roster();
            let r = SignedReceipt::open(bytes, |kid| roster.roster().signer(kid)).unwrap();
            match &r.receipt().status {
                ReceiptStatus::Rejected(why) => why.clone(),
                ReceiptStatus::Delivered => panic!("delivered, expected a rejection"),
            }
        }
        Frame::Error { reason, .. } => reason.clone(),
        other => panic!("unexpected answer {other:?}"),
    }
}

/// The name of the refusal (protocol.md §6.3: a reason begins with `<name>: `) an answer
/// carries, as an ERROR frame or a signed rejection receipt.
fn refused_as(node: &liaison_node::Node, answer: &Frame) -> String {
    let reason = rejected_reason(node, answer);
    refusal_name(&reason)
        .unwrap_or_else(|| panic!("a reason without a refusal name: {reason}"))
        .to_owned()
}

async fn rejections(node: &liaison_node::Node) -> Vec<String> {
    node.log_entries(0, node.log_len())
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, e)| matches!(e.kind, EntryKind::Rejected | EntryKind::HandshakeRefused))
        .map(|(_, e)| String::from_utf8_lossy(&e.object).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_forged_messages_are_refused() {
    let mut fed = fed3();
    let sx = fed.start("sx").await.unwrap();
    let raw = fed.raw("fj", "sx").await.unwrap();
    let fj_key = key(&fed, "fj");
    let body = b"subject: ZHANG San".to_vec();

    // Signed by a key the roster does not list for anyone.
    let stranger = SigningKey::from_bytes(&[7; 32]);
    let env = Envelope::seal(header("fj", "sx", &body), &stranger);
    let a = deliver(&raw, env.bytes().to_vec(), &body).await;
    assert_eq!(refused_as(&sx, &a), "unknown-signer", "{a:?}");

    // Signed by another member's key while claiming to come from fj.
    let env = Envelope::seal(header("fj", "sx", &body), &key(&fed, "gx"));
    let a = deliver(&raw, env.bytes().to_vec(), &body).await;
    assert_eq!(refused_as(&sx, &a), "unknown-signer", "{a:?}");

    // A flipped signature bit.
    let env = Envelope::seal(header("fj", "sx", &body), &fj_key);
    let mut bytes = env.bytes().to_vec();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    let a = deliver(&raw, bytes, &body).await;
    assert_eq!(refused_as(&sx, &a), "bad-signature", "{a:?}");

    // Wrong typ: a receipt offered as a message.
    let obj = SignedObject::sign(
        liaison_protocol::cose::TYP_RECEIPT,
        header("fj", "sx", &body).encode(),
        &fj_key,
    );
    let a = deliver(&raw, obj.bytes().to_vec(), &body).await;
    assert_eq!(refused_as(&sx, &a), "bad-envelope", "{a:?}");

    // Non-canonical CBOR: the same envelope with a two-byte length where one byte fits.
    let env = Envelope::seal(header("fj", "sx", &body), &fj_key);
    let good = env.bytes().to_vec();
    // good[2..4] is the protected bstr head (0x58, len): re-encode it as 0x59 0x00 len.
    assert_eq!(good[2], 0x58);
    let mut bad = vec![good[0], good[1], 0x59, 0x00];
    bad.extend_from_slice(&good[3..]);
    let a = deliver(&raw, bad, &body).await;
    assert_eq!(refused_as(&sx, &a), "bad-envelope", "{a:?}");

    // Body hash and length mismatches.
    let env = Envelope::seal(header("fj", "sx", &body), &fj_key);
    let mut other = body.clone();
    other[0] ^= 0x20;
    let a = deliver(&raw, env.bytes().to_vec(), &other).await;
    assert_eq!(refused_as(&sx, &a), "body-hash", "{a:?}");
    // The signed rejection is final: the same envelope again, even with its right body, gets
    // the same receipt (never a contradicting one).
    let again = deliver(&raw, env.bytes().to_vec(), &body).await;
    assert_eq!(again, a, "a refused envelope got another answer");
    let env = Envelope::seal(header("fj", "sx", &body), &fj_key);
    let a = deliver(&raw, env.bytes().to_vec(), &body[1..]).await;
    assert_eq!(refused_as(&sx, &a), "body-length", "{a:?}");

    // A message for another federation.
    let mut h = header("fj", "sx", &body);
    h.federation = "other-fed".into();
    let env = Envelope::seal(h, &fj_key);
    let a = deliver(&raw, env.bytes().to_vec(), &body).await;
    assert_eq!(refused_as(&sx, &a), "other-federation", "{a:?}");

    // Replay of an old message (sent-at far outside the replay window).
    let mut h = header("fj", "sx", &body);
    h.sent_at -= 90 * 24 * 3600 * 1000;
    let env = Envelope::seal(h, &fj_key);
    let a = deliver(&raw, env.bytes().to_vec(), &body).await;
    assert_eq!(refused_as(&sx, &a), "replay-window", "{a:?}");

    // Policy: a public-security bureau may not send a marriage-check answer.
    let mut h = header("fj", "sx", &body);
    h.kind = "marriage_check.answer".into();
    let env = Envelope::seal(h, &fj_key);
    let a = deliver(&raw, env.bytes().to_vec(), &body).await;
    assert_eq!(refused_as(&sx, &a), "policy", "{a:?}");

    // fj may not hand over a message that gx signed (it is not gx's relay).
    let env = Envelope::seal(header("gx", "sx", &body), &key(&fed, "gx"));
    let a = deliver(&raw, env.bytes().to_vec(), &body).await;
    assert_eq!(refused_as(&sx, &a), "wrong-hop", "{a:?}");

    // Garbage frames and an oversized frame.
    let a = raw.exchange_bytes(&[0x42, 0, 0, 0, 0]).await.unwrap();
    assert!(
        matches!(
            a,
            Frame::Error {
                code: ErrorCode::MalformedFrame,
                ..
            }
        ),
        "{a:?}"
    );
    let big = Frame::Deliver {
        envelope: vec![0; 100],
        body: vec![0; 2 << 20],
    };
    let a = raw.exchange(&big).await.unwrap();
    assert!(
        matches!(
            a,
            Frame::Error {
                code: ErrorCode::TooLarge,
                ..
            }
        ),
        "{a:?}"
    );

    // A declared length over the cap (nothing allocated) is too large as well; a frame cut
    // short is malformed.
    for (bytes, code) in [
        (vec![0x01, 0xff, 0xff, 0xff, 0xff], ErrorCode::TooLarge),
        (
            vec![0x01, 0, 0, 0, 100, 0, 2, 0xd2],
            ErrorCode::MalformedFrame,
        ),
    ] {
        let a = raw.exchange_bytes(&bytes).await.unwrap();
        assert!(
            matches!(&a, Frame::Error { code: c, .. } if *c == code),
            "{a:?}"
        );
    }

    // Nothing delivered, everything logged; what was refused with a signed receipt is kept as
    // refused (with that receipt, no body), so a copy gets the same answer.
    assert!(sx.inbox(100, false).await.unwrap().is_empty());
    let kept = sx.messages().await.unwrap();
    assert!(!kept.is_empty());
    for m in &kept {
        assert!(
            matches!(m.state, liaison_node::store::MsgState::Rejected { .. })
                && m.body.is_none()
                && m.proof.is_some(),
            "{m:?}"
        );
    }
    let logged = rejections(&sx).await;
    assert!(logged.len() >= 12, "{logged:?}");

    // And a good message still gets through, once, even when sent twice (lost receipt).
    let env = Envelope::seal(header("fj", "sx", &body), &fj_key);
    let f = Frame::Deliver {
        envelope: env.bytes().to_vec(),
        body: body.clone(),
    };
    let first = raw.exchange(&f).await.unwrap();
    let second = raw.exchange(&f).await.unwrap();
    assert!(matches!(first, Frame::Receipt(_)));
    assert_eq!(first, second, "a resend must get the same receipt");
    // Another member holding the same envelope gets nothing stored back: not on its route.
    let gx_raw = fed.raw("gx", "sx").await.unwrap();
    let a = gx_raw.exchange(&f).await.unwrap();
    assert!(
        matches!(&a, Frame::Error { code: ErrorCode::Unauthorized, reason } if refusal_name(reason) == Some("wrong-hop")),
        "{a:?}"
    );
    assert_eq!(sx.inbox(100, false).await.unwrap().len(), 1);
    // The same id with other content is refused.
    let mut h = env.header().clone();
    h.body_len = 3;
    h.body_hash = Digest::of(b"abc").0;
    let env2 = Envelope::seal(h, &fj_key);
    let a = deliver(&raw, env2.bytes().to_vec(), b"abc").await;
    assert_eq!(refused_as(&sx, &a), "id-reused", "{a:?}");
    assert_eq!(sx.inbox(100, false).await.unwrap().len(), 1);
    fed.stop("sx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_send_refused_by_policy_is_logged() {
    let mut fed = fed3();
    let fj = fed.start("fj").await.unwrap();
    let err = fj
        .send(msg("sx", "marriage_check.request", b"x"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("policy forbids marriage_check.request"),
        "{err}"
    );
    let refused = fj
        .log_entries(0, fj.log_len())
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, e)| e.kind == EntryKind::RefusedByPolicy)
        .count();
    assert_eq!(refused, 1);
    assert!(fj.messages().await.unwrap().is_empty());
    let err = fj
        .send(msg("nobody", "bus.ping", b"x"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a member"), "{err}");
    fed.stop("fj").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_unknown_peers_and_foreign_ca_are_refused_at_handshake() {
    let mut fed = fed3();
    let sx = fed.start("sx").await.unwrap();
    // A certificate from another federation's CA.
    let other = Federation::new(&spec(vec![member("fj", "public_security", "CHN", None)])).unwrap();
    let dir = other.member_dir("fj");
    let foreign = liaison_tests::RawPeer::connect_with(
        &fed.generated.dir.join("ca.pem"),
        &dir.join("tls.cert.pem"),
        &dir.join("tls.key.pem"),
        &fed.generated.dir.join("roster.cbor"),
        &fed.generated.authority_key_hex,
        fed.addr("sx"),
        "sx",
    )
    .await;
    let refused = match foreign {
        Err(_) => true,
        Ok(peer) => peer.exchange(&Frame::Ack(Digest([0; 32]))).await.is_err(),
    };
    assert!(refused, "a certificate from another CA was admitted");

    // Revoke gx and remove fj from the roster: both are refused at the handshake.
    let roster = fed
        .reissue_roster(|r| {
            for m in &mut r.members {
                if m.id.as_str() == "gx" {
                    m.status = MemberStatus::Revoked;
                }
            }
            r.members.retain(|m| m.id.as_str() != "fj");
        })
        .unwrap();
    assert_eq!(sx.apply_roster(&roster).await.unwrap(), 2);
    for who in ["gx", "fj"] {
        let r = fed.raw(who, "sx").await;
        let refused = match r {
            Err(_) => true,
            // TLS 1.3: the client may finish before the server's alert arrives.
            Ok(peer) => peer.exchange(&Frame::Ack(Digest([0; 32]))).await.is_err(),
        };
        assert!(refused, "{who} was admitted");
    }
    // Unauthenticated sources get no entry each: one summary per interval names every
    // reason with its source prefix and a sample.
    let names = ["member-not-active", "not-pinned", "bad-certificate"];
    let seen = wait_for(LIMIT, async || {
        let logged = rejections(&sx).await.join("\n");
        names.iter().all(|n| logged.contains(n))
    })
    .await;
    assert!(seen.is_ok(), "{:?}", rejections(&sx).await);
    let logged = rejections(&sx).await;
    assert!(logged.len() <= 3, "{logged:?}");
    let logged = logged.join("\n");
    assert!(logged.contains("from 127.0.0.0/24"), "{logged}");
    assert!(logged.contains("Revoked"), "{logged}");
    // An older roster is ignored.
    assert_eq!(
        sx.apply_roster(&std::fs::read(fed.generated.dir.join("roster.cbor")).unwrap())
            .await
            .unwrap(),
        2
    );
    fed.stop("sx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_sends_no_receipt_and_loses_nothing() {
    let mut fed = fed3();
    let fj = fed.start("fj").await.unwrap();
    let sx = fed.start("sx").await.unwrap();
    // The recipient's next flush fails as on a full disk: the message it applied is never
    // answered from, and the store refuses everything after.
    sx.dangerous_inject_store_fault(Fault::Flush);
    let sent = fj
        .send(msg("sx", "bus.test", b"during the outage"))
        .await
        .unwrap();
    wait_for(LIMIT, async || {
        fj.peers().first().is_some_and(|p| p.failures >= 2)
    })
    .await
    .unwrap();
    let p = &fj.peers()[0];
    let err = p.last_error.as_deref().unwrap_or("");
    assert!(
        err.contains("no space left") || err.contains("store failed"),
        "{p:?}"
    );
    assert_eq!(count_state(&fj, "outgoing", "queued").await, 1);
    assert!(sx.store_failure().is_some());
    assert!(matches!(
        sx.inbox(10, false).await,
        Err(liaison_node::NodeError::Store(StoreError::Failed(_)))
    ));
    // Space freed and the node restarted: the message arrives, once.
    sx.dangerous_inject_store_fault(Fault::None);
    fed.stop("sx").await;
    drop(sx);
    let sx = fed.start("sx").await.unwrap();
    wait_for(LIMIT, async || {
        count_state(&fj, "outgoing", "delivered").await == 1
    })
    .await
    .unwrap();
    let inbox = sx.inbox(10, false).await.unwrap();
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].message_id, sent.message_id);
    fed.stop("fj").await;
    fed.stop("sx").await;
}
