//! Delivery between real nodes over QUIC on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use liaison_protocol::{Priority, ReceiptStatus, SignedReceipt};
use liaison_tests::{Federation, count_state, member, msg, spec, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

fn two_bureaus() -> Federation {
    Federation::new(&spec(vec![
        member("fj", "public_security", "CHN", None),
        member("sx", "public_security", "CHN", None),
    ]))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_with_signed_receipt() {
    let mut fed = two_bureaus();
    let fj = fed.start("fj").await.unwrap();
    let sx = fed.start("sx").await.unwrap();
    let sent = fj
        .send(msg("sx", "bus.test", b"check identity of subject"))
        .await
        .unwrap();
    wait_for(LIMIT, async || {
        count_state(&fj, "outgoing", "delivered").await == 1
    })
    .await
    .unwrap();
    // The receipt is signed by the recipient and names the exact envelope.
    let view = fj.message(&sent.message_id).await.unwrap().unwrap();
    use base64::Engine as _;
    let proof = base64::engine::general_purpose::STANDARD
        .decode(view.proof.unwrap())
        .unwrap();
    let roster = fj.roster();
    let receipt = SignedReceipt::open(&proof, |kid| roster.roster().signer(kid)).unwrap();
    assert_eq!(receipt.receipt().status, ReceiptStatus::Delivered);
    assert_eq!(receipt.receipt().message_digest.to_hex(), sent.digest);
    assert_eq!(receipt.receipt().recipient.as_str(), "sx");
    // The application sees it once, with the body.
    let inbox = sx.inbox(10, true).await.unwrap();
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].message_id, sent.message_id);
    assert_eq!(inbox[0].kind, "bus.test");
    let taken = sx.ack(inbox[0].inbox_seq.unwrap()).await.unwrap();
    assert!(taken.handed_over);
    assert!(sx.inbox(10, false).await.unwrap().is_empty());
    assert!(sx.ack(inbox[0].inbox_seq.unwrap()).await.is_err());
    // The envelope in the inbox verifies against the sender's key.
    let rec = sx.message(&sent.message_id).await.unwrap().unwrap();
    assert_eq!(rec.from, "fj");
    fed.stop("fj").await;
    fed.stop("sx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipient_down_then_up() {
    let mut fed = two_bureaus();
    let fj = fed.start("fj").await.unwrap();
    for i in 0..20 {
        fj.send(msg("sx", "bus.test", format!("m{i}").as_bytes()))
            .await
            .unwrap();
    }
    // Barrier: the link has tried and failed at least once.
    wait_for(LIMIT, async || {
        fj.peers().first().is_some_and(|p| p.failures >= 1)
    })
    .await
    .unwrap();
    assert_eq!(count_state(&fj, "outgoing", "queued").await, 20);
    let peers = fj.peers();
    assert_eq!(peers[0].queued[Priority::Routine as usize], 20);
    assert!(!peers[0].connected, "{peers:?}");
    let sx = fed.start("sx").await.unwrap();
    wait_for(LIMIT, async || {
        count_state(&fj, "outgoing", "delivered").await == 20
    })
    .await
    .unwrap();
    assert_eq!(sx.inbox(100, false).await.unwrap().len(), 20);
    fed.stop("fj").await;
    fed.stop("sx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_restarted_with_full_outbox_delivers_once() {
    let mut fed = two_bureaus();
    let fj = fed.start("fj").await.unwrap();
    for i in 0..30 {
        fj.send(msg("sx", "bus.test", format!("m{i}").as_bytes()))
            .await
            .unwrap();
    }
    fed.stop("fj").await;
    drop(fj);
    let sx = fed.start("sx").await.unwrap();
    let fj = fed.start("fj").await.unwrap();
    wait_for(LIMIT, async || {
        count_state(&fj, "outgoing", "delivered").await == 30
    })
    .await
    .unwrap();
    let inbox = sx.inbox(1000, false).await.unwrap();
    assert_eq!(inbox.len(), 30);
    let mut ids: Vec<_> = inbox.iter().map(|m| m.message_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 30, "a message was delivered twice");
    fed.stop("fj").await;
    fed.stop("sx").await;
}
