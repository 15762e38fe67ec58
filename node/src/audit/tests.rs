//! The audit side without quinn: a bus without network (`bus::testing`) takes deliveries
//! frame by frame; its log is checkpointed, proven and re-verified, and a second node
//! witnesses it through `Audit::witness`, the handler of the WITNESS frame.

use std::sync::Arc;

use liaison_protocol::note::{MAX_NOTE_LEN, SignedNote};
use liaison_protocol::{ErrorCode, Frame};

use super::Audit;
use crate::bus::Bus;
use crate::bus::testing::{FJ, SX, T0, bus, envelope, key, node};

/// Shaanxi's audit side, after `n` deliveries from Fujian.
async fn log_with(n: usize) -> (Arc<Audit>, Arc<Bus>, tempfile::TempDir) {
    let (sx, dir) = bus(SX).await;
    let audit = Arc::new(Audit::new(sx.clone()));
    for i in 0..n {
        let (env, body) = envelope(FJ, SX, T0, format!("message {i}").as_bytes());
        let deliver = Frame::Deliver {
            envelope: env.bytes().to_vec(),
            body,
        };
        let answer = crate::bus::testing::deliver(&sx, FJ, deliver).await;
        assert!(matches!(answer, Frame::Receipt(_)), "{answer:?}");
    }
    (audit, sx, dir)
}

#[tokio::test]
async fn checkpoints_and_proofs_verify_offline_and_the_log_reverifies() {
    let (audit, sx, _dir) = log_with(5).await;
    let n = sx.log_len();
    let note = audit.checkpoint().await.unwrap_or_else(|e| panic!("{e}"));
    let cp = SignedNote::parse(&note, MAX_NOTE_LEN)
        .and_then(|n| n.checkpoint())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((cp.origin(), cp.size()), (format!("{SX}/log").as_str(), n));
    // No growth, no new checkpoint.
    assert_eq!(
        audit.checkpoint().await.unwrap_or_else(|e| panic!("{e}")),
        note
    );
    let roster = sx.roster();
    for i in 0..n {
        let bundle = audit.prove(i).await.unwrap_or_else(|e| panic!("{e}"));
        let proven = bundle
            .verify(roster.roster())
            .unwrap_or_else(|e| panic!("entry {i}: {e}"));
        assert_eq!((proven.index, proven.size), (i, n));
    }
    assert!(audit.prove(n).await.is_err());
    let report = audit.audit_verify().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.first_problem, None);
    assert_eq!((report.entries, report.checkpoint_size), (n, Some(n)));
    // Per delivery: the received envelope (kind 2) and the signed receipt (kind 3).
    assert_eq!(report.signatures_checked, 2 * 5, "{report:?}");
    sx.cancel.cancel();
}

#[tokio::test]
async fn a_witness_cosigns_a_growing_log_and_keeps_a_fork_as_evidence() {
    let (log, sx, _d1) = log_with(2).await;
    let (fj, _d2) = bus(FJ).await;
    let witness = Arc::new(Audit::new(fj.clone()));
    let first = log.checkpoint().await.unwrap_or_else(|e| panic!("{e}"));
    let size = sx.log_len();
    let Frame::Cosignature(line) = witness.witness(&node(SX), 0, &[], first.as_bytes()).await
    else {
        panic!("not cosigned")
    };
    // The line verifies with the witness key under "<witness>/witness".
    let mut note = SignedNote::parse(&first, MAX_NOTE_LEN).unwrap_or_else(|e| panic!("{e}"));
    let sig = liaison_protocol::note::NoteSignature::parse_line(
        std::str::from_utf8(&line).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    note.add_signature(sig).unwrap_or_else(|e| panic!("{e}"));
    let t = note
        .verify_cosignature(
            &format!("{FJ}/witness"),
            &liaison_protocol::PublicKey::from(&key(FJ)),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t, T0 / 1000);

    // The log grows: a submission from a size the witness did not cosign is answered with
    // the size it did; with the consistency proof from there it is cosigned.
    let (env, body) = envelope(FJ, SX, T0, b"later");
    crate::bus::testing::deliver(
        &sx,
        FJ,
        Frame::Deliver {
            envelope: env.bytes().to_vec(),
            body,
        },
    )
    .await;
    let second = log.checkpoint().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        witness.witness(&node(SX), 0, &[], second.as_bytes()).await,
        Frame::WitnessSize(size)
    );
    let proof = log
        .consistency(size, sx.log_len())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .proof;
    assert!(matches!(
        witness
            .witness(&node(SX), size, &proof, second.as_bytes())
            .await,
        Frame::Cosignature(_)
    ));

    // A note of the cosigned size with another root, signed with the log's key: a fork,
    // refused (ERROR 6) and kept by the witness as a conflict entry.
    let before = fj.log_len();
    let cp = SignedNote::parse(&second, MAX_NOTE_LEN)
        .and_then(|n| n.checkpoint())
        .unwrap_or_else(|e| panic!("{e}"));
    let forked = liaison_protocol::note::Checkpoint::new(cp.origin(), cp.size(), [9; 32])
        .unwrap_or_else(|e| panic!("{e}"));
    let forked = SignedNote::sign_checkpoint(&forked, cp.origin(), &key(SX))
        .unwrap_or_else(|e| panic!("{e}"))
        .to_text();
    match witness
        .witness(&node(SX), cp.size(), &[], forked.as_bytes())
        .await
    {
        Frame::Error { code, reason } => {
            assert_eq!(code, ErrorCode::Refused);
            assert!(reason.starts_with("fork"), "{reason}");
        }
        other => panic!("expected the fork refused, got {other:?}"),
    }
    assert_eq!(witness.witness_conflicts(), 1);
    assert_eq!(fj.log_len(), before + 1);
    // A node may submit only its own log.
    assert!(matches!(
        witness
            .witness(&node(crate::bus::testing::XA), 0, &[], first.as_bytes())
            .await,
        Frame::Error { .. }
    ));
    sx.cancel.cancel();
    fj.cancel.cancel();
}
