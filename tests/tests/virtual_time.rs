//! Retries, backoff and expiry on the federation's manual clock: time moves only when the
//! test advances it, so what is due happens exactly then, and nothing waits in real time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use liaison_tests::{Federation, count_state, msg, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

fn two_bureaus() -> Federation {
    liaison_tests::two_bureaus().in_virtual_time()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_in_backoff_is_dialled_again_exactly_when_its_clock_says() {
    let mut fed = two_bureaus();
    // Test config: backoff from 20 ms, doubling, at most 300 ms, times a jitter in [0.5, 1).
    let (initial, max) = (20, 300);
    let door = fed.closed_door("sx").await.unwrap();
    let fj = fed.start("fj").await.unwrap();
    fj.send(msg("sx", "bus.test", b"when you are back"))
        .await
        .unwrap();
    let mut last_wait = 0;
    for attempt in 1..=6u32 {
        // The dial fails at once; the link then waits on the clock.
        wait_for(LIMIT, async || {
            let p = &fj.peers()[0];
            u32::try_from(p.failures).unwrap() == attempt && p.retry_at.is_some()
        })
        .await
        .unwrap();
        let p = &fj.peers()[0];
        let wait = p.retry_at.unwrap() - fed.clock.now_ms();
        let base: u64 = (initial << (attempt - 1)).min(max);
        assert!(
            wait >= base / 2 && wait < base.max(2),
            "attempt {attempt}: waits {wait} ms"
        );
        assert!(
            wait >= last_wait / 2,
            "backoff shrank: {last_wait} → {wait}"
        );
        last_wait = wait;
        // Not a moment earlier: one ms short of it, the link has not been dialled again.
        fed.advance(Duration::from_millis(wait - 1));
        let p = &fj.peers()[0];
        assert_eq!(u32::try_from(p.failures).unwrap(), attempt);
        assert_eq!(p.retry_at, Some(fed.clock.now_ms() + 1));
        fed.advance(Duration::from_millis(1));
    }
    assert!(last_wait < max);
    wait_for(LIMIT, async || {
        let p = &fj.peers()[0];
        p.failures == 7 && p.retry_at.is_some()
    })
    .await
    .unwrap();
    // The recipient is up: the next dial, when due, delivers.
    door.remove().await;
    let sx = fed.start("sx").await.unwrap();
    fed.advance(Duration::from_millis(max));
    wait_for(LIMIT, async || {
        count_state(&fj, "outgoing", "delivered").await == 1
    })
    .await
    .unwrap();
    assert_eq!(sx.inbox(10, false).await.unwrap().len(), 1);
    assert_eq!(fj.peers()[0].retry_at, None);
    fed.stop("fj").await;
    fed.stop("sx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_overtook_its_predecessor_waits_out_the_reorder_window_on_the_clock() {
    use liaison_protocol::action::{Action, Handling, Officer};
    use liaison_protocol::document::Document;
    use liaison_protocol::workflow::Role;
    use liaison_protocol::{
        Digest, Envelope, ErrorCode, Frame, Header, MessageId, NodeId, Priority, ReceiptStatus,
        SignedReceipt,
    };

    let mut fed = two_bureaus();
    let window = Duration::from_secs(3600);
    let sx = fed
        .start_with("sx", |c| c.workflow.reorder_window_ms = 3_600_000)
        .await
        .unwrap();
    let raw = fed.raw("fj", "sx").await.unwrap();
    let fj_key =
        liaison_node::identity::load_signing_key(&fed.member_dir("fj").join("signing.key.pem"))
            .unwrap();
    let personal = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let now = fed.clock.now_ms();
    let credential = Officer {
        federation: "test-fed".into(),
        node: "fj".parse().unwrap(),
        id: "fj/lin.wei".into(),
        name: "Lin Wei".into(),
        number: "350102".into(),
        unit: "CID".into(),
        role: Role::Investigator,
        key: liaison_protocol::PublicKey::from(&personal),
        enrolled_at: now,
    }
    .certify(&fj_key)
    .bytes()
    .to_vec();
    // The close of a request sx has not seen: it overtook the request (or the request is
    // lost).
    let body = Action {
        federation: "test-fed".into(),
        node: "fj".parse().unwrap(),
        kind: "assist.close".into(),
        case_ref: "FJ-LATE-1".into(),
        at: now,
        purpose: "criminal_investigation".into(),
        handling: Handling::H0,
        sensitivity: vec![],
        retention_days: 30,
        abroad: false,
        document: Document::new(),
        derived_from: vec![],
        credential: Some(credential),
    }
    .sign(&personal)
    .bytes()
    .to_vec();
    let envelope = Envelope::seal(
        Header {
            federation: "test-fed".into(),
            id: MessageId(*uuid::Uuid::now_v7().as_bytes()),
            from: NodeId::new("fj").unwrap(),
            to: NodeId::new("sx").unwrap(),
            sent_at: now,
            kind: "assist.close".into(),
            body_len: body.len() as u64,
            body_hash: Digest::of(&body).0,
            priority: Priority::Routine,
            in_reply_to: None,
            expires_at: None,
            case_ref: Some("FJ-LATE-1".into()),
        },
        &fj_key,
    );
    let deliver = Frame::Deliver {
        envelope: envelope.bytes().to_vec(),
        body,
    };
    // Within the window, to the last millisecond: "try later", nothing stored.
    for advance in [Duration::ZERO, window - Duration::from_millis(1)] {
        fed.advance(advance);
        match raw.exchange(&deliver).await.unwrap() {
            Frame::Error { code, reason } => {
                assert_eq!(code, ErrorCode::Unavailable);
                assert!(reason.contains("try later"), "{reason}");
            }
            other => panic!("expected try later, got {other:?}"),
        }
    }
    assert!(sx.case("FJ-LATE-1").await.unwrap().is_none());
    // Once the window has passed, the same copy is refused for good with a signed receipt.
    fed.advance(Duration::from_millis(1));
    let Frame::Receipt(bytes) = raw.exchange(&deliver).await.unwrap() else {
        panic!("expected a signed rejection");
    };
    let roster = sx.roster();
    let receipt = SignedReceipt::open(&bytes, |kid| roster.roster().signer(kid)).unwrap();
    assert!(
        matches!(&receipt.receipt().status, ReceiptStatus::Rejected(why) if why.contains("case step")),
        "{:?}",
        receipt.receipt().status
    );
    fed.stop("sx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roster_past_its_validity_keeps_traffic_through_the_grace_then_stops_it() {
    const HOUR: u64 = 3600 * 1000;
    let mut fed = two_bureaus();
    let grace = |c: &mut liaison_node::Config| c.delivery.roster_grace_ms = HOUR;
    let fj = fed.start_with("fj", grace).await.unwrap();
    let sx = fed.start_with("sx", grace).await.unwrap();
    let now = fed.clock.now_ms();
    let roster = fed
        .reissue_roster(|r| r.valid_until = Some(now + HOUR))
        .unwrap();
    for n in [&fj, &sx] {
        n.apply_roster(&roster).await.unwrap();
        assert_eq!(n.roster_standing(), liaison_protocol::Standing::Valid);
    }
    // Past its validity, within the grace: a warning, and traffic goes on.
    fed.advance(Duration::from_millis(HOUR + HOUR / 2));
    assert_eq!(
        fj.roster_standing(),
        liaison_protocol::Standing::InGrace {
            expired_at: now + HOUR,
            stops_at: now + 2 * HOUR
        }
    );
    fj.send(msg("sx", "bus.test", b"in the grace"))
        .await
        .unwrap();
    wait_for(LIMIT, async || {
        count_state(&fj, "outgoing", "delivered").await == 1
    })
    .await
    .unwrap();
    // Past the grace: nothing new is sent, and nothing new is taken (a temporary refusal).
    fed.advance(Duration::from_millis(HOUR));
    assert!(matches!(
        fj.roster_standing(),
        liaison_protocol::Standing::Expired { .. }
    ));
    let refused = fj.send(msg("sx", "bus.test", b"too late")).await;
    assert!(
        matches!(&refused, Err(liaison_node::NodeError::Roster(why)) if why.contains("apply")),
        "{refused:?}"
    );
    let raw = fed.raw("fj", "sx").await.unwrap();
    let answer = raw
        .exchange(&liaison_protocol::Frame::Deliver {
            envelope: vec![0xa0],
            body: Vec::new(),
        })
        .await
        .unwrap();
    match answer {
        liaison_protocol::Frame::Error { code, reason } => {
            assert_eq!(code, liaison_protocol::ErrorCode::Unavailable);
            assert_eq!(
                liaison_protocol::delivery::refusal_name(&reason),
                Some("roster-expired")
            );
        }
        other => panic!("expected a temporary refusal, got {other:?}"),
    }
    // A newer roster from the authority restores traffic.
    let renewed = fed
        .reissue_roster(|r| r.valid_until = Some(now + 30 * 24 * HOUR))
        .unwrap();
    for n in [&fj, &sx] {
        n.apply_roster(&renewed).await.unwrap();
    }
    fj.send(msg("sx", "bus.test", b"renewed")).await.unwrap();
    wait_for(LIMIT, async || {
        count_state(&fj, "outgoing", "delivered").await == 2
    })
    .await
    .unwrap();
    fed.stop("fj").await;
    fed.stop("sx").await;
}

/// A member that its peer refuses after the TLS handshake completed on its side (it is
/// suspended in the peer's roster, not yet in its own) fails the dial and waits out its
/// backoff on the clock: it does not redial in a loop (it once did, ~190 times a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_refused_after_the_handshake_backs_off_instead_of_redialling() {
    let mut fed = two_bureaus();
    let fj = fed.start("fj").await.unwrap();
    let sx = fed.start("sx").await.unwrap();
    let suspended = fed
        .reissue_roster(|r| {
            let m = r
                .members
                .iter_mut()
                .find(|m| m.id.as_str() == "sx")
                .unwrap();
            m.status = liaison_protocol::MemberStatus::Suspended;
        })
        .unwrap();
    fj.apply_roster(&suspended).await.unwrap();
    sx.send(msg("fj", "bus.test", b"from the suspended"))
        .await
        .unwrap();
    for attempt in 1..=3u64 {
        wait_for(LIMIT, async || {
            let p = &sx.peers()[0];
            p.failures == attempt && p.retry_at.is_some()
        })
        .await
        .unwrap();
        let p = &sx.peers()[0];
        assert!(!p.connected);
        assert!(
            p.last_error.as_deref().unwrap_or("").contains("not active"),
            "{:?}",
            p.last_error
        );
        // Until its clock says, no other dial.
        let wait = p.retry_at.unwrap() - fed.clock.now_ms();
        fed.advance(Duration::from_millis(wait.saturating_sub(1)));
        assert_eq!(sx.peers()[0].failures, attempt);
        fed.advance(Duration::from_millis(1));
    }
    // Held, not delivered, not dropped.
    assert_eq!(count_state(&sx, "outgoing", "queued").await, 1);
}
