//! Batched receipts (liaison/2, protocol.md §4.3a) between real nodes: one signed batch per
//! group commit for messages handed over by their sender, receipts of their own for liaison/1
//! peers, case messages and relayed messages.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use base64::Engine as _;
use liaison_node::{Node, SendRequest};
use liaison_protocol::audit::EntryKind;
use liaison_protocol::{Envelope, Frame, ReceiptStatus, SignedReceipt};
use liaison_tests::{
    Federation, count_state, entries_of, header, member, msg, spec, two_bureaus, wait_for,
};

const LIMIT: Duration = Duration::from_secs(30);
/// First byte of a COSE_Sign1 (tag 18): a receipt signed on its own.
const COSE_SIGN1: u8 = 0xd2;

/// Sends every request from `node` at once (each on a task of its own); the send results in
/// the order given.
async fn send_all(node: &Node, reqs: Vec<SendRequest>) -> Vec<liaison_node::SendResult> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, req) in reqs.into_iter().enumerate() {
        let node = node.clone();
        tasks.spawn(async move { (i, node.send(req).await.unwrap()) });
    }
    let mut out: Vec<_> = tasks.join_all().await;
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// The proof bytes `node` holds for message `id` (sent or received).
async fn proof_of(node: &Node, id: &str) -> Vec<u8> {
    let view = node.message(id).await.unwrap().unwrap();
    base64::engine::general_purpose::STANDARD
        .decode(view.proof.expect("a proof"))
        .unwrap()
}

/// Opens the receipt `node` holds for `sent` against `node`'s roster and checks it names the
/// message, its sender and recipient, delivered.
async fn opened_receipt(
    node: &Node,
    sent: &liaison_node::SendResult,
    from: &str,
    to: &str,
) -> SignedReceipt {
    let bytes = proof_of(node, &sent.message_id).await;
    let roster = node.roster();
    let r = SignedReceipt::open(&bytes, |kid| roster.roster().signer(kid)).unwrap();
    assert_eq!(r.bytes(), bytes.as_slice());
    let receipt = r.receipt();
    assert_eq!(receipt.message_digest.to_hex(), sent.digest);
    assert_eq!(receipt.message_id.to_hex(), sent.message_id);
    assert_eq!(receipt.sender.as_str(), from);
    assert_eq!(receipt.recipient.as_str(), to);
    assert_eq!(receipt.status, ReceiptStatus::Delivered);
    r
}

fn assert_clean(report: &liaison_node::AuditReport, who: &str) {
    assert!(report.first_problem.is_none(), "{who}: {report:?}");
}

/// Waits until `node` has `n` outgoing messages delivered.
async fn delivered(node: &Node, n: usize) {
    wait_for(LIMIT, async || {
        count_state(node, "outgoing", "delivered").await == n
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_between_liaison_2_nodes_is_receipted_in_batches() {
    const N: usize = 50;
    let mut fed = two_bureaus();
    let fj = fed.start("fj").await.unwrap();
    let sx = fed.start("sx").await.unwrap();
    let reqs = (0..N)
        .map(|i| msg("sx", "bus.test", format!("burst {i}").as_bytes()))
        .collect();
    let sent = send_all(&fj, reqs).await;
    delivered(&fj, N).await;
    assert_eq!(count_state(&sx, "incoming", "delivered").await, N);

    // Every receipt the sender holds is a proof by a batch signed by the recipient, naming
    // its own message; the recipient holds the same bytes.
    let mut by_batch: HashMap<Vec<u8>, usize> = HashMap::new();
    for s in &sent {
        let r = opened_receipt(&fj, s, "fj", "sx").await;
        let batch = r.batch().expect("a batched receipt");
        assert_eq!(
            batch.typ(),
            liaison_protocol::cose::TYP_RECEIPT_BATCH,
            "{}",
            s.message_id
        );
        assert_ne!(
            r.bytes()[0],
            COSE_SIGN1,
            "a proof is a map, not a COSE_Sign1"
        );
        *by_batch.entry(batch.bytes().to_vec()).or_default() += 1;
        assert_eq!(
            proof_of(&sx, &s.message_id).await,
            r.bytes(),
            "the recipient's stored proof of {} differs from the sender's",
            s.message_id
        );
    }
    assert!(
        by_batch.values().any(|&n| n >= 2),
        "no two receipts share a batch: {} batches for {N} messages",
        by_batch.len()
    );

    // The recipient logged each batch once (kind 3), and nothing else of kind 3: fewer
    // entries than messages, their sizes adding up to the messages.
    let logged = entries_of(&sx, EntryKind::ReceiptSent).await;
    assert!(
        logged.len() < N,
        "{} kind-3 entries for {N} messages",
        logged.len()
    );
    let roster = sx.roster();
    let mut total = 0;
    for obj in &logged {
        let (_, batch) =
            liaison_protocol::receipt::open_batch(obj, |kid| roster.roster().signer(kid)).unwrap();
        assert_eq!(batch.recipient.as_str(), "sx");
        assert_eq!(batch.federation, "test-fed");
        assert_eq!(
            by_batch.get(obj).copied(),
            Some(usize::try_from(batch.size).unwrap()),
            "a logged batch is not the one its receipts name"
        );
        total += batch.size;
    }
    assert_eq!(total, N as u64);
    assert_eq!(logged.len(), by_batch.len());

    for (node, who) in [(&fj, "fj"), (&sx, "sx")] {
        assert_clean(&node.audit_verify().await.unwrap(), who);
    }
    fed.stop("fj").await;
    fed.stop("sx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_liaison_1_node_gets_and_gives_receipts_of_their_own() {
    const N: usize = 20;
    let mut fed = two_bureaus();
    // fj speaks liaison/1 only; sx offers both.
    let fj = fed
        .start_with("fj", |c| c.delivery.batch_receipts = false)
        .await
        .unwrap();
    let sx = fed.start("sx").await.unwrap();
    let (to_sx, to_fj) = tokio::join!(
        send_all(
            &fj,
            (0..N)
                .map(|i| msg("sx", "bus.test", format!("fj→sx {i}").as_bytes()))
                .collect(),
        ),
        send_all(
            &sx,
            (0..N)
                .map(|i| msg("fj", "bus.test", format!("sx→fj {i}").as_bytes()))
                .collect(),
        ),
    );
    delivered(&fj, N).await;
    delivered(&sx, N).await;
    for (sender, recipient, sent, from, to) in [
        (&fj, &sx, &to_sx, "fj", "sx"),
        (&sx, &fj, &to_fj, "sx", "fj"),
    ] {
        for s in sent {
            let r = opened_receipt(sender, s, from, to).await;
            assert!(r.batch().is_none(), "{from}→{to} {} batched", s.message_id);
            assert_eq!(r.bytes()[0], COSE_SIGN1, "{from}→{to} {}", s.message_id);
            assert_eq!(proof_of(recipient, &s.message_id).await, r.bytes());
        }
        // One kind-3 entry per message, each a receipt of its own.
        let logged = entries_of(recipient, EntryKind::ReceiptSent).await;
        assert_eq!(logged.len(), N, "{to}");
        let roster = recipient.roster();
        for obj in &logged {
            let r = SignedReceipt::open(obj, |kid| roster.roster().signer(kid)).unwrap();
            assert!(r.batch().is_none());
        }
    }
    for (node, who) in [(&fj, "fj"), (&sx, "sx")] {
        assert_clean(&node.audit_verify().await.unwrap(), who);
    }
    fed.stop("fj").await;
    fed.stop("sx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_of_a_case_gets_a_receipt_of_its_own_between_liaison_2_nodes() {
    const N: usize = 10;
    let mut fed = two_bureaus();
    let fj = fed.start("fj").await.unwrap();
    let sx = fed.start("sx").await.unwrap();
    // Messages of a case and messages of none, sent together: they may share group commits.
    let reqs = (0..2 * N)
        .map(|i| {
            let mut m = msg("sx", "bus.test", format!("message {i}").as_bytes());
            if i % 2 == 0 {
                m.case_ref = Some("FJ-2026-0501".into());
            }
            m
        })
        .collect();
    let sent = send_all(&fj, reqs).await;
    delivered(&fj, 2 * N).await;
    for (i, s) in sent.iter().enumerate() {
        let r = opened_receipt(&fj, s, "fj", "sx").await;
        if i % 2 == 0 {
            assert!(r.batch().is_none(), "case message {} batched", s.message_id);
            assert_eq!(r.bytes()[0], COSE_SIGN1);
        } else {
            assert!(r.batch().is_some(), "{} not batched", s.message_id);
        }
    }
    // The case's evidence holds each case message's receipt in an entry of its own.
    let case = sx.case_evidence("FJ-2026-0501", false).await.unwrap();
    let kinds: Vec<EntryKind> = case
        .bundles
        .iter()
        .map(|b| {
            liaison_protocol::audit::Entry::decode(&b.entry)
                .unwrap()
                .kind
        })
        .collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == EntryKind::ReceiptSent)
            .count(),
        N,
        "{kinds:?}"
    );
    for (node, who) in [(&fj, "fj"), (&sx, "sx")] {
        assert_clean(&node.audit_verify().await.unwrap(), who);
    }
    fed.stop("fj").await;
    fed.stop("sx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_over_liaison_2_gets_the_same_batched_receipt() {
    let mut fed = two_bureaus();
    let sx = fed.start("sx").await.unwrap();
    let raw = fed.raw("fj", "sx").await.unwrap();
    // The raw peer offers what a default node offers: the connection speaks liaison/2.
    let alpn = raw
        .conn
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol);
    assert_eq!(alpn.as_deref(), Some(&b"liaison/2"[..]));
    let key = fed.keys("fj").unwrap().signing;
    let body = b"sent twice: the first receipt was lost".to_vec();
    let env = Envelope::seal(header("fj", "sx", &body), &key);
    let frame = Frame::Deliver {
        envelope: env.bytes().to_vec(),
        body,
    };
    let first = raw.exchange(&frame).await.unwrap();
    let Frame::Receipt(bytes) = &first else {
        panic!("expected a receipt, got {first:?}");
    };
    let roster = sx.roster();
    let r = SignedReceipt::open(bytes, |kid| roster.roster().signer(kid)).unwrap();
    assert!(
        r.batch().is_some(),
        "a message from its sender over liaison/2"
    );
    assert_eq!(r.receipt().message_digest, env.digest());
    let second = raw.exchange(&frame).await.unwrap();
    assert_eq!(first, second, "a resend must get the same receipt bytes");
    assert_eq!(sx.inbox(10, false).await.unwrap().len(), 1);
    assert_eq!(entries_of(&sx, EntryKind::ReceiptSent).await.len(), 1);
    assert_clean(&sx.audit_verify().await.unwrap(), "sx");
    raw.conn.close(0u32.into(), b"");
    fed.stop("sx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_message_gets_a_receipt_of_its_own() {
    const N: usize = 10;
    let mut fed = Federation::new(&spec(vec![
        member("fj", "public_security", "CHN", None),
        member("hk", "border_station", "CHN", None),
        member("vn", "foreign_counterpart", "VNM", Some("hk")),
    ]))
    .unwrap();
    let fj = fed.start("fj").await.unwrap();
    let hk = fed.start("hk").await.unwrap();
    let vn = fed.start("vn").await.unwrap();
    let sent = send_all(
        &fj,
        (0..N)
            .map(|i| {
                msg(
                    "vn",
                    "bus.test",
                    format!("through the border {i}").as_bytes(),
                )
            })
            .collect(),
    )
    .await;
    assert!(sent.iter().all(|s| s.hop.as_str() == "hk"));
    delivered(&fj, N).await;
    let mut distinct = HashSet::new();
    for s in &sent {
        let r = opened_receipt(&fj, s, "fj", "vn").await;
        assert!(r.batch().is_none(), "relayed {} batched", s.message_id);
        assert_eq!(r.bytes()[0], COSE_SIGN1);
        distinct.insert(r.bytes().to_vec());
    }
    assert_eq!(distinct.len(), N);
    assert_eq!(entries_of(&vn, EntryKind::ReceiptSent).await.len(), N);
    for (node, who) in [(&fj, "fj"), (&hk, "hk"), (&vn, "vn")] {
        assert_clean(&node.audit_verify().await.unwrap(), who);
    }
    fed.stop("fj").await;
    fed.stop("hk").await;
    fed.stop("vn").await;
}
