//! The audit log as evidence: checkpoints, bundles verifiable offline, tamper detection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use liaison_protocol::MessageId;
use liaison_protocol::evidence::{Evidence, EvidenceError};
use liaison_protocol::note::{MAX_NOTE_LEN, SignedNote};
use liaison_tests::{Federation, count_state, member, msg, spec, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

async fn traffic() -> (Federation, liaison_node::Node, liaison_node::Node, String) {
    let mut fed = Federation::new(&spec(vec![
        member("fj", "public_security", "CHN", None),
        member("sx", "public_security", "CHN", None),
    ]))
    .unwrap();
    // Bodies are kept for a millisecond, so a test can end their retention at once (the
    // periodic purge runs only every checkpoint interval, a minute).
    let short = |c: &mut liaison_node::Config| c.audit.body_retention_ms = 1;
    let fj = fed.start_with("fj", short).await.unwrap();
    let sx = fed.start_with("sx", short).await.unwrap();
    let mut first = None;
    for i in 0..12 {
        let r = fj
            .send(msg("sx", "bus.test", format!("request {i}").as_bytes()))
            .await
            .unwrap();
        first.get_or_insert(r.message_id);
    }
    wait_for(LIMIT, async || {
        count_state(&fj, "outgoing", "delivered").await == 12
    })
    .await
    .unwrap();
    (fed, fj, sx, first.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_verify_offline_and_tampering_is_detected() {
    let (mut fed, fj, sx, first) = traffic().await;
    // A clean log verifies, entry by entry and signature by signature.
    let report = sx.audit_verify().await.unwrap();
    assert!(report.first_problem.is_none(), "{report:?}");
    assert_eq!(report.entries, sx.log_len());
    // Twelve envelopes, and their receipts in one or more batches (protocol.md §4.3a).
    assert!(report.signatures_checked >= 13, "{report:?}");

    // The recipient proves it received the first message; anyone with the roster can check.
    let id = MessageId::from_hex(&first).unwrap();
    let index = sx.entry_of_message(&id).await.unwrap().unwrap();
    let bundle = sx.prove(index).await.unwrap();
    let bytes = bundle.encode();
    let roster = sx.roster();
    let proven = Evidence::decode(&bytes)
        .unwrap()
        .verify(roster.roster())
        .unwrap();
    assert_eq!(proven.node.as_str(), "sx");
    assert_eq!(proven.index, index);
    assert_eq!(
        proven.entry.kind,
        liaison_protocol::audit::EntryKind::MessageReceived
    );
    // The checkpoint is signed by sx's log key, not its node key.
    let note = SignedNote::parse(&bundle.checkpoint, MAX_NOTE_LEN).unwrap();
    assert!(
        note.verify_signature("sx/log", &roster.roster().members[1].log_key)
            .is_ok()
    );
    assert!(
        note.verify_signature("sx/log", &roster.roster().members[1].signing_key)
            .is_err()
    );

    // Any flipped byte of the bundle is caught.
    for i in (0..bytes.len()).step_by(7) {
        let mut b = bytes.clone();
        b[i] ^= 0x01;
        let r = Evidence::decode(&b)
            .map_err(EvidenceError::from)
            .and_then(|e| e.verify(roster.roster()));
        assert!(r.is_err(), "flip at {i} accepted");
    }
    // A proof of the wrong length.
    let mut short = bundle.clone();
    short.path.pop();
    assert!(matches!(
        short.verify(roster.roster()),
        Err(EvidenceError::Inclusion(_))
    ));
    // A bundle checked against another federation's roster.
    let other = Federation::new(&spec(vec![member("sx", "public_security", "CHN", None)])).unwrap();
    let err = bundle
        .verify(&other.generated.roster)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not signed by the log key"), "{err}");

    // Flip a byte of a stored entry: `audit verify` names it.
    let (i, mut entry) = sx
        .log_entries(index, index + 1)
        .await
        .unwrap()
        .pop()
        .map(|(i, e)| (i, e.encode()))
        .unwrap();
    let n = entry.len();
    entry[n - 3] ^= 0x40;
    sx.dangerous_overwrite_log_entry(i, &entry, false)
        .await
        .unwrap();
    let report = sx.audit_verify().await.unwrap();
    let (bad, why) = report.first_problem.clone().unwrap();
    assert_eq!(bad, i, "{report:?}");
    assert!(why.contains("leaf hash"), "{why}");
    // Rewrite it together with its leaf hash: the signed checkpoint still catches it.
    sx.dangerous_overwrite_log_entry(i, &entry, true)
        .await
        .unwrap();
    let report = sx.audit_verify().await.unwrap();
    let why = report.first_problem.unwrap().1;
    assert!(
        why.contains("does not verify") || why.contains("history rewritten"),
        "{why}"
    );
    fed.stop("fj").await;
    fed.stop("sx").await;
    drop(fj);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_log_is_detected() {
    let (mut fed, fj, _sx, _) = traffic().await;
    let note = fj.checkpoint().await.unwrap();
    let size = SignedNote::parse(&note, MAX_NOTE_LEN)
        .unwrap()
        .checkpoint()
        .unwrap()
        .size();
    assert_eq!(size, fj.log_len());
    fj.dangerous_truncate_log(size - 3).await.unwrap();
    let report = fj.audit_verify().await.unwrap();
    let (at, why) = report.first_problem.unwrap();
    assert_eq!(at, size);
    assert!(why.contains("log truncated"), "{why}");
    fed.stop("fj").await;
    fed.stop("sx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_bodies_leave_every_proof_valid() {
    let (mut fed, fj, sx, first) = traffic().await;
    // The recipient's application takes everything; then retention ends for all of it.
    for m in sx.inbox(100, false).await.unwrap() {
        sx.ack(m.inbox_seq.unwrap()).await.unwrap();
    }
    let before = fj.prove(0).await.unwrap();
    let purged_fj = fj.purge_bodies(liaison_node::now_ms() + 10).await.unwrap();
    let purged_sx = sx.purge_bodies(liaison_node::now_ms() + 10).await.unwrap();
    assert_eq!((purged_fj, purged_sx), (12, 12));
    // Bodies are gone; envelopes and receipts stay.
    let view = sx.message(&first).await.unwrap().unwrap();
    assert!(view.body.is_none());
    let sent = fj.message(&first).await.unwrap().unwrap();
    assert!(sent.body.is_none() && sent.proof.is_some());
    // Every entry and signature still verifies, and old and new bundles still prove.
    for node in [&fj, &sx] {
        let report = node.audit_verify().await.unwrap();
        assert!(report.first_problem.is_none(), "{report:?}");
        let purges = node
            .log_entries(0, node.log_len())
            .await
            .unwrap()
            .iter()
            .filter(|(_, e)| e.kind == liaison_protocol::audit::EntryKind::BodyPurged)
            .count();
        assert_eq!(purges, 12);
    }
    assert!(before.verify(fj.roster().roster()).is_ok());
    let id = MessageId::from_hex(&first).unwrap();
    let index = sx.entry_of_message(&id).await.unwrap().unwrap();
    assert!(
        sx.prove(index)
            .await
            .unwrap()
            .verify(sx.roster().roster())
            .is_ok()
    );
    // Nothing is purged twice.
    assert_eq!(
        sx.purge_bodies(liaison_node::now_ms() + 10).await.unwrap(),
        0
    );
    fed.stop("fj").await;
    fed.stop("sx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_evidence_holds_the_whole_case_and_nothing_else() {
    let (mut fed, fj, sx, _) = traffic().await;
    let mut m = msg("sx", "bus.test", b"case message");
    m.case_ref = Some("FJ-2026-0042".into());
    let sent = fj.send(m).await.unwrap();
    wait_for(LIMIT, async || {
        count_state(&fj, "outgoing", "delivered").await == 13
    })
    .await
    .unwrap();
    let authority = fed.authority();
    for node in [&fj, &sx] {
        let case = node.case_evidence("FJ-2026-0042", false).await.unwrap();
        // The message and its receipt, on each side, and the roster record saying which
        // roster was in force (with that roster).
        assert_eq!(case.bundles.len(), 3, "{}", node.id());
        assert_eq!(case.rosters.len(), 1, "{}", node.id());
        let bytes = case.encode();
        let decoded = liaison_protocol::evidence::CaseEvidence::decode(&bytes).unwrap();
        let proven = decoded.verify(&authority).unwrap().proven;
        assert!(proven.iter().all(|p| p.node == *node.id()));
        // An entry about something else is refused.
        let mut padded = decoded.clone();
        let have: Vec<u64> = decoded.bundles.iter().map(|b| b.index).collect();
        let other = (0..).find(|i| !have.contains(i)).unwrap();
        padded.bundles.push(node.prove(other).await.unwrap());
        padded.bundles.sort_by_key(|b| b.index);
        let err = padded.verify(&authority).unwrap_err();
        assert!(matches!(err, EvidenceError::NotAboutCase { .. }), "{err}");
        // A roster not signed by the federation authority is refused.
        let stranger =
            liaison_protocol::PublicKey::from(&ed25519_dalek::SigningKey::from_bytes(&[3; 32]));
        assert!(decoded.verify(&stranger).is_err());
    }
    assert!(fj.case_evidence("NO-SUCH-CASE", false).await.is_err());
    let _ = sent;
    fed.stop("fj").await;
    fed.stop("sx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_entries_verify_against_the_roster_in_force_when_they_were_logged() {
    let mut fed = Federation::new(&spec(vec![
        member("fj", "public_security", "CHN", None),
        member("sx", "public_security", "CHN", None),
    ]))
    .unwrap();
    let fj = fed.start("fj").await.unwrap();
    let sx = fed.start("sx").await.unwrap();
    let mut m = msg("sx", "bus.test", b"before the key rotation");
    m.case_ref = Some("FJ-2026-0077".into());
    fj.send(m).await.unwrap();
    wait_for(LIMIT, async || {
        count_state(&fj, "outgoing", "delivered").await == 1
    })
    .await
    .unwrap();
    // The authority rotates Fujian's signing key: the envelope Shaanxi received earlier no
    // longer verifies against the roster in force, but it did against the one in force then.
    let rotated = fed
        .reissue_roster(|r| {
            let m = r
                .members
                .iter_mut()
                .find(|m| m.id.as_str() == "fj")
                .unwrap();
            m.signing_key = liaison_protocol::PublicKey::from(
                &ed25519_dalek::SigningKey::from_bytes(&[42; 32]),
            );
        })
        .unwrap();
    assert_eq!(sx.apply_roster(&rotated).await.unwrap(), 2);
    let report = sx.audit_verify().await.unwrap();
    assert!(report.first_problem.is_none(), "{:?}", report.first_problem);
    assert!(report.signatures_checked >= 2);
    // Shaanxi's case file made after the rotation: the envelope is opened against the roster
    // in force when it was logged (carried in the file), the checkpoint against today's.
    let file = sx.case_evidence("FJ-2026-0077", false).await.unwrap();
    assert_eq!(file.rosters.len(), 1);
    let authority = fed.authority();
    let checked = file.verify(&authority).unwrap();
    assert_eq!(checked.proven.len(), 3);
    // Without the earlier roster, the same entries against today's roster fail.
    let mut today_only = file.clone();
    today_only.rosters.clear();
    assert!(matches!(
        today_only.verify(&authority),
        Err(EvidenceError::Object { .. })
    ));
    // And a roster the authority did not sign is not taken as an earlier one.
    let mut forged = file.clone();
    let keys = fed.keys("sx").unwrap();
    let earlier = liaison_protocol::SignedRoster::open(&file.rosters[0], &authority).unwrap();
    forged.rosters = vec![earlier.roster().sign(&keys.signing).bytes().to_vec()];
    assert!(matches!(
        forged.verify(&authority),
        Err(EvidenceError::Roster(_))
    ));
    for id in ["fj", "sx"] {
        fed.stop(id).await;
    }
}
