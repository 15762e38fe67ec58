//! Peer agencies witness each other's logs: cosignatures, restarts, forks and rollbacks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use liaison_node::identity::load_signing_key;
use liaison_protocol::audit::EntryKind;
use liaison_protocol::evidence::Evidence;
use liaison_protocol::note::{Checkpoint, SignedNote};
use liaison_protocol::{ErrorCode, Frame};
use liaison_tests::{Federation, count_state, member, msg, spec, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

fn three() -> Federation {
    Federation::new(&spec(vec![
        member("fj", "public_security", "CHN", None),
        member("sx", "public_security", "CHN", None),
        member("gx", "public_security", "CHN", None),
    ]))
    .unwrap()
}

async fn send_some(fj: &liaison_node::Node, n: usize) {
    let before = count_state(fj, "outgoing", "delivered").await;
    for i in 0..n {
        fj.send(msg("sx", "bus.test", format!("m{i}").as_bytes()))
            .await
            .unwrap();
    }
    wait_for(LIMIT, async || {
        count_state(fj, "outgoing", "delivered").await == before + n
    })
    .await
    .unwrap();
}

fn ok(outcomes: &[liaison_node::WitnessOutcome]) -> Vec<String> {
    outcomes
        .iter()
        .filter(|o| o.result.is_ok())
        .map(|o| o.witness.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_cosign_across_growth_and_restart() {
    let mut fed = three();
    let fj = fed.start("fj").await.unwrap();
    let sx = fed.start("sx").await.unwrap();
    let _gx = fed.start("gx").await.unwrap();
    send_some(&fj, 5).await;
    let first = fj.witness_round().await.unwrap();
    assert_eq!(ok(&first), vec!["gx", "sx"], "{first:?}");
    // The cosignature records alone do not call for another round.
    assert!(!fj.grew_since_checkpoint().await.unwrap());
    // A bundle now carries both cosignatures.
    let bundle = fj.prove(0).await.unwrap();
    let proven = bundle.verify(fj.roster().roster()).unwrap();
    let mut cosigners: Vec<String> = proven
        .cosigned_by
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    cosigners.sort();
    assert_eq!(cosigners, ["gx", "sx"]);
    let bytes = bundle.encode();
    assert_eq!(Evidence::decode(&bytes).unwrap(), bundle);

    // The log grows; witnesses check consistency from what they cosigned.
    send_some(&fj, 5).await;
    // A witness restarts in between: its state is durable.
    fed.stop("sx").await;
    drop(sx);
    let _sx = fed.start("sx").await.unwrap();
    let second = fj.witness_round().await.unwrap();
    assert_eq!(ok(&second), vec!["gx", "sx"], "{second:?}");
    assert!(second[0].size > first[0].size);
    for id in ["fj", "sx", "gx"] {
        fed.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_after_cosigning_is_caught_and_kept_as_evidence() {
    let mut fed = three();
    let fj = fed.start("fj").await.unwrap();
    let sx = fed.start("sx").await.unwrap();
    let _gx = fed.start("gx").await.unwrap();
    send_some(&fj, 6).await;
    let first = fj.witness_round().await.unwrap();
    assert_eq!(ok(&first).len(), 2);
    let size = first[0].size;
    // The node rolls its log back below what was cosigned and signs the shorter history.
    fj.dangerous_truncate_log(size - 4).await.unwrap();
    let outcomes = fj.witness_round().await.unwrap();
    assert!(ok(&outcomes).is_empty(), "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| o.result.as_ref().unwrap_err().contains("rollback")),
        "{outcomes:?}"
    );
    assert_eq!(sx.witness_conflicts(), 1);
    let evidence: Vec<_> = sx
        .log_entries(0, sx.log_len())
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, e)| e.kind == EntryKind::WitnessConflict)
        .collect();
    assert_eq!(evidence.len(), 1);
    // Both signed checkpoints are in the record.
    let text = String::from_utf8_lossy(&evidence[0].1.object).into_owned();
    assert!(text.contains(&format!("fj/log\n{size}\n")), "{text}");
    assert!(text.contains(&format!("fj/log\n{}\n", size - 4)), "{text}");
    for id in ["fj", "sx", "gx"] {
        fed.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forked_history_is_caught() {
    let mut fed = three();
    let fj = fed.start("fj").await.unwrap();
    let _sx = fed.start("sx").await.unwrap();
    let gx = fed.start("gx").await.unwrap();
    send_some(&fj, 4).await;
    assert_eq!(ok(&fj.witness_round().await.unwrap()).len(), 2);
    // Rewrite an early entry (and its leaf hash), then keep going: the new checkpoint is not
    // an extension of the cosigned one.
    let (i, e) = fj.log_entries(2, 3).await.unwrap().pop().unwrap();
    let mut forged = e.clone();
    forged.at += 1;
    fj.dangerous_overwrite_log_entry(i, &forged.encode(), true)
        .await
        .unwrap();
    send_some(&fj, 2).await;
    let outcomes = fj.witness_round().await.unwrap();
    assert!(ok(&outcomes).is_empty(), "{outcomes:?}");
    assert!(
        outcomes[0].result.as_ref().unwrap_err().contains("fork"),
        "{outcomes:?}"
    );
    assert_eq!(gx.witness_conflicts(), 1);
    for id in ["fj", "sx", "gx"] {
        fed.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_signed_by_the_wrong_key_or_for_another_log_are_refused() {
    let mut fed = three();
    let sx = fed.start("sx").await.unwrap();
    let raw = fed.raw("fj", "sx").await.unwrap();
    let node_key = load_signing_key(&fed.member_dir("fj").join("signing.key.pem")).unwrap();
    let log_key = load_signing_key(&fed.member_dir("fj").join("log.key.pem")).unwrap();
    let cp = Checkpoint::new("fj/log", 1, [7; 32]).unwrap();
    let wrong = SignedNote::sign_checkpoint(&cp, "fj/log", &node_key).unwrap();
    let a = raw
        .exchange(&Frame::Witness {
            old_size: 0,
            proof: vec![],
            checkpoint: wrong.to_text().into_bytes(),
        })
        .await
        .unwrap();
    assert!(
        matches!(&a, Frame::Error { code: ErrorCode::Refused, reason } if reason.contains("wrong key")),
        "{a:?}"
    );
    let other = Checkpoint::new("gx/log", 1, [7; 32]).unwrap();
    let note = SignedNote::sign_checkpoint(&other, "gx/log", &log_key).unwrap();
    let a = raw
        .exchange(&Frame::Witness {
            old_size: 0,
            proof: vec![],
            checkpoint: note.to_text().into_bytes(),
        })
        .await
        .unwrap();
    assert!(
        matches!(&a, Frame::Error { reason, .. } if reason.contains("its own log")),
        "{a:?}"
    );
    // A correct one is cosigned.
    let good = SignedNote::sign_checkpoint(&cp, "fj/log", &log_key).unwrap();
    let a = raw
        .exchange(&Frame::Witness {
            old_size: 0,
            proof: vec![],
            checkpoint: good.to_text().into_bytes(),
        })
        .await
        .unwrap();
    assert!(matches!(a, Frame::Cosignature(_)), "{a:?}");
    assert_eq!(sx.witness_conflicts(), 0);
    fed.stop("sx").await;
}
