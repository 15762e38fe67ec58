//! Relaying: a member reachable only through another member (the Vietnamese border guard
//! behind the Hekou border station).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use base64::Engine as _;
use liaison_protocol::{Frame, ReceiptStatus, SignedReceipt};

use liaison_tests::{Federation, count_state, member, msg, spec, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

fn border() -> Federation {
    Federation::new(&spec(vec![
        member("fj", "public_security", "CHN", None),
        member("hk", "border_station", "CHN", None),
        member("vn", "foreign_counterpart", "VNM", Some("hk")),
    ]))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_path_with_end_to_end_receipt() {
    let mut fed = border();
    let fj = fed.start("fj").await.unwrap();
    let hk = fed.start("hk").await.unwrap();
    let vn = fed.start("vn").await.unwrap();
    let sent = fj
        .send(msg("vn", "bus.test", b"verify nationality"))
        .await
        .unwrap();
    assert_eq!(sent.hop.as_str(), "hk");
    wait_for(LIMIT, async || {
        count_state(&fj, "outgoing", "delivered").await == 1
    })
    .await
    .unwrap();
    // The receipt the sender holds is signed by the final recipient, not the relay.
    let view = fj.message(&sent.message_id).await.unwrap().unwrap();
    let proof = base64::engine::general_purpose::STANDARD
        .decode(view.proof.unwrap())
        .unwrap();
    let roster = fj.roster();
    let r = SignedReceipt::open(&proof, |kid| roster.roster().signer(kid)).unwrap();
    assert_eq!(r.receipt().recipient.as_str(), "vn");
    assert_eq!(r.receipt().status, ReceiptStatus::Delivered);
    // The relay kept the message as relayed, with the receipt.
    let relayed = hk.message(&sent.message_id).await.unwrap().unwrap();
    assert_eq!(serde_json::to_value(relayed.direction).unwrap(), "relay");
    assert_eq!(
        serde_json::to_value(&relayed.state).unwrap()["state"],
        "delivered"
    );
    assert!(hk.inbox(10, false).await.unwrap().is_empty());
    // The recipient has it once; its answer goes back through the relay.
    let inbox = vn.inbox(10, true).await.unwrap();
    assert_eq!(inbox.len(), 1);
    let mut answer = msg("fj", "bus.test", b"confirmed");
    answer.in_reply_to = Some(sent.message_id.clone());
    let back = vn.send(answer).await.unwrap();
    assert_eq!(back.hop.as_str(), "hk");
    wait_for(LIMIT, async || {
        count_state(&vn, "outgoing", "delivered").await == 1
    })
    .await
    .unwrap();
    assert_eq!(fj.inbox(10, false).await.unwrap().len(), 1);
    for id in ["fj", "hk", "vn"] {
        fed.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_holds_message_while_recipient_is_down() {
    let mut fed = border();
    let fj = fed.start("fj").await.unwrap();
    let hk = fed.start("hk").await.unwrap();
    let sent = fj
        .send(msg("vn", "bus.test", b"port Hekou, 10:00"))
        .await
        .unwrap();
    // The relay takes custody; the sender waits for the end-to-end receipt.
    wait_for(LIMIT, async || {
        count_state(&fj, "outgoing", "in_custody").await == 1
    })
    .await
    .unwrap();
    assert_eq!(count_state(&hk, "relay", "queued").await, 1);
    let vn = fed.start("vn").await.unwrap();
    wait_for(LIMIT, async || {
        count_state(&fj, "outgoing", "delivered").await == 1
    })
    .await
    .unwrap();
    assert_eq!(
        vn.inbox(10, false).await.unwrap()[0].message_id,
        sent.message_id
    );
    for id in ["fj", "hk", "vn"] {
        fed.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_cannot_alter_the_message() {
    let mut fed = border();
    let fj = fed.start("fj").await.unwrap();
    let hk = fed.start("hk").await.unwrap();
    let sent = fj
        .send(msg("vn", "bus.test", b"consent: yes"))
        .await
        .unwrap();
    wait_for(LIMIT, async || {
        count_state(&fj, "outgoing", "in_custody").await == 1
    })
    .await
    .unwrap();
    fed.stop("hk").await;
    drop(hk);
    let vn = fed.start("vn").await.unwrap();
    // The relay hands vn the sender's envelope with a body it changed: refused, with no
    // receipt (the sender did not hand it over), and nothing stored.
    let raw = fed.raw("hk", "vn").await.unwrap();
    let answer = raw
        .exchange(&Frame::Deliver {
            envelope: sender_envelope(&fed, &sent.message_id).await,
            // Same length, other content.
            body: b"consent: no!".to_vec(),
        })
        .await
        .unwrap();
    let Frame::Error { reason, .. } = &answer else {
        panic!("expected a refusal, got {answer:?}")
    };
    assert!(reason.contains("hash"), "{reason}");
    assert!(vn.inbox(10, false).await.unwrap().is_empty());
    assert!(vn.messages().await.unwrap().is_empty());
    // The genuine message still arrives once the relay is back.
    let _hk = fed.start("hk").await.unwrap();
    wait_for(LIMIT, async || {
        count_state(&fj, "outgoing", "delivered").await == 1
    })
    .await
    .unwrap();
    let inbox = vn.inbox(10, true).await.unwrap();
    assert_eq!(inbox.len(), 1);
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD
        .decode(inbox[0].body.as_ref().unwrap())
        .unwrap();
    assert_eq!(body, b"consent: yes");
    for id in ["fj", "hk", "vn"] {
        fed.stop(id).await;
    }
}

/// The envelope bytes as the sender signed them, read from the sender's audit log.
async fn sender_envelope(fed: &Federation, message_id: &str) -> Vec<u8> {
    let fj = fed.node("fj");
    for (_, e) in fj.log_entries(0, fj.log_len()).await.unwrap() {
        if e.kind == liaison_protocol::audit::EntryKind::MessageSent {
            if let Some((_, h)) = liaison_protocol::Envelope::peek_unverified(&e.object) {
                if h.id.to_hex() == message_id {
                    return e.object;
                }
            }
        }
    }
    panic!("envelope not found")
}
