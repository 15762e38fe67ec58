//! The bus without quinn: frames handed to `inbound::handle` as a connection would, the
//! store read back. Every refusal is asserted as the typed `Refusal` the wire carries.

use liaison_protocol::audit::{Entry, EntryKind};
use liaison_protocol::delivery::Refusal;
use liaison_protocol::error::VerifyError;
use liaison_protocol::{ErrorCode, Frame, Receipt, ReceiptStatus, SignedReceipt};

use super::inbound::handle;
use super::testing::{FJ, SX, T0, XA, bus, envelope, key, node};
use super::{Bus, SendRequest};

/// The kinds of the entries in the bus's log, in order.
async fn kinds(bus: &Bus) -> Vec<EntryKind> {
    let n = bus.log_len();
    bus.store
        .read(move |r| r.log_entries(0, n))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|(_, b)| Entry::decode(&b).unwrap_or_else(|e| panic!("{e}")).kind)
        .collect()
}

fn count(kinds: &[EntryKind], kind: EntryKind) -> usize {
    kinds.iter().filter(|k| **k == kind).count()
}

async fn inbox_len(bus: &Bus) -> usize {
    bus.store
        .read(|r| r.inbox(1000))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .len()
}

fn refused(frame: &Frame) -> (ErrorCode, String) {
    match frame {
        Frame::Error { code, reason } => (*code, reason.clone()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The record of message `digest` at `bus`.
async fn record(bus: &Bus, digest: liaison_protocol::Digest) -> crate::store::MessageRecord {
    bus.store
        .read(move |r| r.message(&digest))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no record"))
}

#[tokio::test]
async fn a_delivery_is_receipted_once_and_a_resend_gets_the_same_receipt() {
    let (sx, _dir) = bus(SX).await;
    let (env, body) = envelope(FJ, SX, T0, b"request");
    let deliver = || Frame::Deliver {
        envelope: env.bytes().to_vec(),
        body: body.clone(),
    };
    let Frame::Receipt(first) = handle(&sx, &node(FJ), deliver()).await else {
        panic!("no receipt")
    };
    let roster = sx.roster();
    let r = SignedReceipt::open(&first, |k| roster.roster().signer(k))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.receipt().status, ReceiptStatus::Delivered);
    assert_eq!(r.receipt().message_digest, env.digest());
    let (origin, index) = r.receipt().log_ref.clone().unwrap_or_default();
    assert_eq!(origin, format!("{SX}/log"));
    // The resend (the first receipt was lost): the same signed receipt, nothing new stored.
    let again = handle(&sx, &node(FJ), deliver()).await;
    assert_eq!(again, Frame::Receipt(first));
    assert_eq!(inbox_len(&sx).await, 1);
    let k = kinds(&sx).await;
    assert_eq!(k[index as usize], EntryKind::MessageReceived);
    assert_eq!(count(&k, EntryKind::MessageReceived), 1);
    assert_eq!(count(&k, EntryKind::ReceiptSent), 1);
    sx.cancel.cancel();
}

#[tokio::test]
async fn inbound_refusals_are_typed_logged_and_store_nothing() {
    let (sx, _dir) = bus(SX).await;
    let before = kinds(&sx).await.len();

    // A broken signature.
    let (env, body) = envelope(FJ, SX, T0, b"a");
    let mut bytes = env.bytes().to_vec();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    let (code, reason) = refused(
        &handle(
            &sx,
            &node(FJ),
            Frame::Deliver {
                envelope: bytes,
                body,
            },
        )
        .await,
    );
    let want = Refusal::Envelope(VerifyError::BadSignature);
    assert_eq!((code, reason), (want.code(), want.reason()));

    // Handed over by a member that is not the node before this one on its route.
    let (env, body) = envelope(FJ, SX, T0, b"b");
    let (code, reason) = refused(
        &handle(
            &sx,
            &node(XA),
            Frame::Deliver {
                envelope: env.bytes().to_vec(),
                body,
            },
        )
        .await,
    );
    let want = Refusal::WrongHop {
        peer: node(XA),
        from: node(FJ),
        to: node(SX),
    };
    assert_eq!((code, reason), (want.code(), want.reason()));

    // An answer frame opening an exchange.
    let (code, reason) = refused(&handle(&sx, &node(FJ), Frame::Ack(env.digest())).await);
    assert_eq!(
        (code, reason),
        (Refusal::AnswerFrame.code(), Refusal::AnswerFrame.reason())
    );

    // Nothing stored; each refusal logged once (kind 5).
    assert_eq!(inbox_len(&sx).await, 0);
    let k = kinds(&sx).await;
    assert_eq!(count(&k[before..], EntryKind::Rejected), 3, "{k:?}");
    assert_eq!(k.len(), before + 3);

    // A body that is not the one the envelope names, from its sender: refused for good with
    // a signed rejection receipt, which a resend gets again.
    let (env, _) = envelope(FJ, SX, T0, b"c");
    let deliver = || Frame::Deliver {
        envelope: env.bytes().to_vec(),
        body: b"x".to_vec(),
    };
    let Frame::Receipt(r) = handle(&sx, &node(FJ), deliver()).await else {
        panic!("no rejection receipt")
    };
    let roster = sx.roster();
    let opened =
        SignedReceipt::open(&r, |k| roster.roster().signer(k)).unwrap_or_else(|e| panic!("{e}"));
    let want = Refusal::Body(liaison_protocol::envelope::BodyError::Hash);
    assert_eq!(
        opened.receipt().status,
        ReceiptStatus::Rejected(want.reason())
    );
    assert_eq!(opened.receipt().log_ref, None);
    assert_eq!(handle(&sx, &node(FJ), deliver()).await, Frame::Receipt(r));
    assert_eq!(inbox_len(&sx).await, 0);
    assert_eq!(count(&kinds(&sx).await, EntryKind::MessageReceived), 0);
    sx.cancel.cancel();
}

#[tokio::test]
async fn a_receipt_closes_the_outbox_item_once() {
    let (fj, _dir) = bus(FJ).await;
    let sent = fj
        .send(SendRequest {
            to: node(SX),
            kind: "bus.test".into(),
            body: b"request".to_vec(),
            priority: liaison_protocol::Priority::Routine,
            expires_in_ms: None,
            case_ref: None,
            in_reply_to: None,
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let digest = liaison_protocol::Digest::from_hex(&sent.digest).unwrap_or_else(|e| panic!("{e}"));
    let rec = record(&fj, digest).await;
    assert!(matches!(rec.state, crate::store::MsgState::Queued));
    let env = liaison_protocol::Envelope::peek_unverified(&rec.envelope)
        .unwrap_or_else(|| panic!("no envelope"))
        .1;
    // Shaanxi's receipt, as it would come back over the wire.
    let receipt = SignedReceipt::sign(
        Receipt {
            federation: env.federation.clone(),
            message_digest: digest,
            message_id: env.id,
            sender: node(FJ),
            recipient: node(SX),
            at: T0 + 5,
            status: ReceiptStatus::Delivered,
            log_ref: Some((format!("{SX}/log"), 3)),
        },
        &key(SX),
    );
    let frame = || Frame::Receipt(receipt.bytes().to_vec());
    assert_eq!(
        handle(&fj, &node(SX), frame()).await,
        Frame::Ack(receipt.digest())
    );
    // Taken again (the ACK was lost): acknowledged again, recorded once.
    assert_eq!(
        handle(&fj, &node(SX), frame()).await,
        Frame::Ack(receipt.digest())
    );
    let rec = record(&fj, digest).await;
    assert!(matches!(rec.state, crate::store::MsgState::Delivered));
    assert_eq!(rec.proof.as_deref(), Some(receipt.bytes()));
    let k = kinds(&fj).await;
    assert_eq!(count(&k, EntryKind::MessageSent), 1);
    assert_eq!(count(&k, EntryKind::ReceiptReceived), 1);

    // A receipt in Shaanxi's name signed by another member's key is refused.
    let forged = SignedReceipt::sign(receipt.receipt().clone(), &key(XA));
    let (code, _) = refused(&handle(&fj, &node(SX), Frame::Receipt(forged.bytes().to_vec())).await);
    assert_eq!(code, ErrorCode::Refused);
    let still = record(&fj, digest).await;
    assert_eq!(still.proof.as_deref(), Some(receipt.bytes()));
    fj.cancel.cancel();
    fj.tasks.close();
    fj.tasks.wait().await;
}
