//! Key rotation under traffic (protocol.md §5.1): a member's signing, log and witness keys are
//! rotated by a roster while messages flow both ways. Nothing is lost or refused for good, the
//! node signs with the new keys from the moment it holds the roster (no restart), evidence made
//! before verifies, and once a roster drops the previous keys the old signing key is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use liaison_node::identity::{generate_signing_key, load_signing_key};
use liaison_protocol::note::SignedNote;
use liaison_protocol::roster::PreviousKeys;
use liaison_protocol::{Envelope, ErrorCode, Frame, PublicKey};
use liaison_tests::{Federation, count_state, header, member, msg, spec, two_bureaus, wait_for};

const N: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotated_under_traffic_deliver_everything_and_old_evidence_verifies() {
    let mut fed = two_bureaus();
    let fj = fed.start("fj").await.unwrap();
    let sx = fed.start("sx").await.unwrap();
    traffic(&fj, &sx, 10, "before").await;
    // Evidence made with the old keys: sx's log witnessed by fj, fj's log by sx.
    assert!(
        sx.witness_round()
            .await
            .unwrap()
            .iter()
            .all(|o| o.result.is_ok())
    );
    assert!(
        fj.witness_round()
            .await
            .unwrap()
            .iter()
            .all(|o| o.result.is_ok())
    );
    let old_roster = sx.roster();
    let old_bundle = sx.prove(0).await.unwrap();
    old_bundle.verify(old_roster.roster()).unwrap();
    let fj_bundle = fj.prove(0).await.unwrap();
    assert_eq!(
        fj_bundle
            .verify(old_roster.roster())
            .unwrap()
            .cosigned_by
            .len(),
        1
    );

    // sx makes its new keys beside the old ones.
    let dir = fed.member_dir("sx");
    let old = |name: &str| PublicKey::from(&load_signing_key(&dir.join(name)).unwrap());
    let (old_signing, old_log, old_witness) = (
        old("signing.key.pem"),
        old("log.key.pem"),
        old("witness.key.pem"),
    );
    let new = |name: &str| PublicKey::from(&generate_signing_key(&dir.join(name)).unwrap());
    let (new_signing, new_log, new_witness) = (
        new("signing.next.key.pem"),
        new("log.next.key.pem"),
        new("witness.next.key.pem"),
    );

    // Traffic both ways while the roster naming the new keys arrives.
    let senders = {
        let (fj, sx) = (fj.clone(), sx.clone());
        tokio::spawn(async move {
            for i in 0..N {
                fj.send(msg("sx", "bus.test", format!("during {i}").as_bytes()))
                    .await
                    .unwrap();
                sx.send(msg("fj", "bus.test", format!("during {i}").as_bytes()))
                    .await
                    .unwrap();
            }
        })
    };
    let rotated = fed
        .reissue_roster(|r| {
            let m = r
                .members
                .iter_mut()
                .find(|m| m.id.as_str() == "sx")
                .unwrap();
            m.previous = Some(PreviousKeys {
                signing_key: Some(old_signing),
                log_key: Some(old_log),
                witness_key: Some(old_witness),
                tls_spki_sha256: None,
                until_ms: u64::MAX / 2,
            });
            m.signing_key = new_signing;
            m.log_key = new_log;
            m.witness_key = new_witness;
        })
        .unwrap();
    // The worst order: the rotating node switches before its peer holds the roster.
    sx.apply_roster(&rotated).await.unwrap();
    senders.await.unwrap();
    wait_for(Duration::from_secs(60), async || {
        count_state(&fj, "outgoing", "delivered").await == 10 + N
            && count_state(&sx, "outgoing", "delivered").await == 10 + N
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: fj {:?}, sx {:?}", fj.peers(), sx.peers()));
    // The roster reached fj with sx's traffic; nothing was refused for good on either side.
    assert_eq!(fj.roster().roster().serial, 2);
    for node in [&fj, &sx] {
        assert_eq!(count_state(node, "outgoing", "rejected").await, 0);
        assert_eq!(count_state(node, "outgoing", "expired").await, 0);
    }
    // sx signs with its new keys: a checkpoint by the new log key, cosignatures by the new
    // witness key, accepted by fj, consistent with what fj cosigned before.
    let note = sx.checkpoint().await.unwrap();
    let parsed = SignedNote::parse(&note, 1 << 16).unwrap();
    parsed.verify_signature("sx/log", &new_log).unwrap();
    assert!(parsed.verify_signature("sx/log", &old_log).is_err());
    assert!(
        sx.witness_round()
            .await
            .unwrap()
            .iter()
            .all(|o| o.result.is_ok())
    );
    assert!(
        fj.witness_round()
            .await
            .unwrap()
            .iter()
            .all(|o| o.result.is_ok())
    );

    // The authority drops the previous keys: the old signing key is refused from now on.
    let settled = fed
        .reissue_roster(|r| {
            let m = r
                .members
                .iter_mut()
                .find(|m| m.id.as_str() == "sx")
                .unwrap();
            m.previous = None;
        })
        .unwrap();
    fj.apply_roster(&settled).await.unwrap();
    sx.apply_roster(&settled).await.unwrap();
    let raw = fed.raw("sx", "fj").await.unwrap();
    let body = b"signed by a retired key".to_vec();
    let env = Envelope::seal(
        header("sx", "fj", &body),
        &load_signing_key(&dir.join("signing.key.pem")).unwrap(),
    );
    match raw
        .exchange(&Frame::Deliver {
            envelope: env.bytes().to_vec(),
            body,
        })
        .await
        .unwrap()
    {
        Frame::Error { code, reason } => {
            assert_eq!(code, ErrorCode::Unavailable);
            assert!(reason.starts_with("unknown-signer: "), "{reason}");
        }
        other => panic!("the retired key was not refused: {other:?}"),
    }
    // Evidence made before the rotation verifies against the roster it was made under, and
    // both logs, judged entry by entry by the roster in force then, verify whole.
    old_bundle.verify(old_roster.roster()).unwrap();
    for node in [&fj, &sx] {
        let report = node.audit_verify().await.unwrap();
        assert!(report.first_problem.is_none(), "{report:?}");
    }
    // After a restart the node starts with the keys the roster names (the .next files).
    fed.stop("sx").await;
    drop(sx);
    let sx = fed.start("sx").await.unwrap();
    sx.send(msg("fj", "bus.test", b"after the restart"))
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), async || {
        count_state(&sx, "outgoing", "delivered").await == 10 + N + 1
    })
    .await
    .unwrap();
}

/// Sends `n` messages each way between `a` and `b` and waits until all are delivered.
async fn traffic(a: &liaison_node::Node, b: &liaison_node::Node, n: usize, tag: &str) {
    let (before_a, before_b) = (
        count_state(a, "outgoing", "delivered").await,
        count_state(b, "outgoing", "delivered").await,
    );
    for i in 0..n {
        a.send(msg(
            b.id().as_str(),
            "bus.test",
            format!("{tag} {i}").as_bytes(),
        ))
        .await
        .unwrap();
        b.send(msg(
            a.id().as_str(),
            "bus.test",
            format!("{tag} {i}").as_bytes(),
        ))
        .await
        .unwrap();
    }
    wait_for(Duration::from_secs(60), async || {
        count_state(a, "outgoing", "delivered").await == before_a + n
            && count_state(b, "outgoing", "delivered").await == before_b + n
    })
    .await
    .unwrap_or_else(|e| panic!("{tag}: {e}: {:?} / {:?}", a.peers(), b.peers()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_key_rotated_with_an_overlap_switches_when_the_old_one_is_dropped() {
    let mut fed = two_bureaus();
    let fj = fed.start("fj").await.unwrap();
    let sx = fed.start("sx").await.unwrap();
    traffic(&fj, &sx, 10, "before").await;
    let old_pin = sx.tls_spki().unwrap();
    let (der, new_pin) = fed
        .issue_tls("sx", &fed.member_dir("sx").join("tls.next.key.pem"))
        .unwrap();
    // The roster pins the new key and still the old one: sx keeps serving the old one, which
    // every peer accepts whatever roster it holds.
    let overlap = fed
        .reissue_roster(|r| {
            let m = r
                .members
                .iter_mut()
                .find(|m| m.id.as_str() == "sx")
                .unwrap();
            m.previous = Some(PreviousKeys {
                tls_spki_sha256: Some(m.tls_spki_sha256),
                until_ms: u64::MAX / 2,
                ..PreviousKeys::default()
            });
            m.tls_spki_sha256 = new_pin;
            m.tls_cert = Some(der);
        })
        .unwrap();
    sx.apply_roster(&overlap).await.unwrap();
    assert_eq!(sx.tls_spki(), Some(old_pin));
    traffic(&fj, &sx, 20, "in the overlap").await;
    assert_eq!(
        fj.roster().roster().serial,
        2,
        "the roster spread with the traffic"
    );
    // The overlap ends: sx switches to the new key for new handshakes, without a restart,
    // while traffic goes on; fj, still on the overlap roster, accepts the new key.
    let settled = fed
        .reissue_roster(|r| {
            let m = r
                .members
                .iter_mut()
                .find(|m| m.id.as_str() == "sx")
                .unwrap();
            m.previous = None;
        })
        .unwrap();
    sx.apply_roster(&settled).await.unwrap();
    assert_eq!(sx.tls_spki(), Some(new_pin));
    traffic(&fj, &sx, 20, "after the switch").await;
    // Once fj holds the settled roster, connections on the old key are closed and sx dials
    // again with the new one.
    fj.apply_roster(&settled).await.unwrap();
    traffic(&fj, &sx, 20, "old key dropped").await;
    // A restart serves the new key from the .next file and the roster's certificate.
    fed.stop("sx").await;
    drop(sx);
    let sx = fed.start("sx").await.unwrap();
    assert_eq!(sx.tls_spki(), Some(new_pin));
    traffic(&fj, &sx, 5, "after the restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authority_hands_over_to_a_new_key_and_a_node_that_missed_it_catches_up() {
    let mut fed = Federation::new(&spec(vec![
        member("fj", "public_security", "CHN", None),
        member("sx", "public_security", "CHN", None),
        member("gx", "public_security", "CHN", None),
    ]))
    .unwrap();
    let fj = fed.start("fj").await.unwrap();
    let sx = fed.start("sx").await.unwrap();
    traffic(&fj, &sx, 5, "before").await;
    let key_file = fed.generated.dir.join("authority.key.pem");
    let old_authority = load_signing_key(&key_file).unwrap();
    let first_roster = std::fs::read(fed.generated.dir.join("roster.cbor")).unwrap();
    let next = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    // Serial 2, signed by the key in force, hands over to the next key.
    let handover = fed
        .reissue_roster(|r| r.next_authority = Some(PublicKey::from(&next)))
        .unwrap();
    fj.apply_roster(&handover).await.unwrap();
    // From now on the authority signs with the new key (serial 3).
    std::fs::remove_file(&key_file).unwrap();
    liaison_node::identity::write_secret_file(
        &key_file,
        &liaison_protocol::keys::private_key_pem(&next).unwrap(),
    )
    .unwrap();
    let newer = fed
        .reissue_roster(|r| {
            r.next_authority = None;
            r.max_body_len += 1;
        })
        .unwrap();
    fj.apply_roster(&newer).await.unwrap();
    assert_eq!(fj.roster().roster().serial, 3);
    // A roster signed by the old key is refused once the handover is applied.
    let mut forged = fj.roster().roster().clone();
    forged.serial = 9;
    let forged = forged.sign(&old_authority);
    let e = fj.apply_roster(forged.bytes()).await.unwrap_err();
    assert!(e.to_string().contains("refused"), "{e}");
    // sx follows with the traffic: first the handover, then the newer roster.
    traffic(&fj, &sx, 5, "after the handover").await;
    wait_for(Duration::from_secs(30), async || {
        sx.roster().roster().serial == 3
    })
    .await
    .unwrap();
    // gx was down throughout, with serial 1 and the old key only: when it sends, fj answers its
    // offer with the handover, then with the newer roster.
    // (Its roster file is the first one, signed by the old key.)
    std::fs::write(fed.generated.dir.join("roster.cbor"), &first_roster).unwrap();
    let gx = fed.start("gx").await.unwrap();
    assert_eq!(gx.roster().roster().serial, 1);
    traffic(&gx, &fj, 3, "the latecomer").await;
    wait_for(Duration::from_secs(30), async || {
        gx.roster().roster().serial == 3
    })
    .await
    .unwrap();
    // After a restart a node still takes rosters from the new key only, and its log, with
    // rosters signed by both keys, verifies whole.
    fed.stop("fj").await;
    drop(fj);
    let fj = fed.start("fj").await.unwrap();
    assert_eq!(fj.roster().roster().serial, 3);
    let e = fj.apply_roster(forged.bytes()).await.unwrap_err();
    assert!(e.to_string().contains("refused"), "{e}");
    let report = fj.audit_verify().await.unwrap();
    assert!(report.first_problem.is_none(), "{report:?}");
    traffic(&fj, &gx, 3, "after the restart").await;
}
