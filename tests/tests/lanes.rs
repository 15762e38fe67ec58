//! Priority lanes and expiry.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use base64::Engine as _;
use liaison_protocol::{Priority, SignedNonDelivery};
use liaison_tests::{Federation, count_state, member, msg, spec, wait_for};

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flash_overtakes_a_queue_of_routine_traffic() {
    let mut fed = Federation::new(&spec(vec![
        member("fj", "public_security", "CHN", None),
        member("sx", "public_security", "CHN", None),
    ]))
    .unwrap();
    let fj = fed.start("fj").await.unwrap();
    const ROUTINE: usize = 2_000;
    for i in 0..ROUTINE {
        fj.send(msg("sx", "bus.test", format!("routine {i}").as_bytes()))
            .await
            .unwrap();
    }
    let mut alert = msg("sx", "bus.alert", b"missing child, 2 h, Xi'an");
    alert.priority = Priority::Flash;
    let flash = fj.send(alert).await.unwrap();
    let mut urgent = msg("sx", "bus.urgent", b"suspect detained");
    urgent.priority = Priority::Urgent;
    let urgent = fj.send(urgent).await.unwrap();
    let sx = fed.start("sx").await.unwrap();
    wait_for(LIMIT, async || {
        count_state(&fj, "outgoing", "delivered").await == ROUTINE + 2
    })
    .await
    .unwrap();
    // The recipient's inbox is in order of arrival. Both were queued behind 2,000 routine
    // messages and both went out in the first window of concurrent exchanges (whose order
    // of arrival among themselves the network decides).
    let inbox = sx.inbox(ROUTINE + 2, false).await.unwrap();
    assert_eq!(inbox.len(), ROUTINE + 2);
    let pos = |id: &str| inbox.iter().position(|m| m.message_id == id).unwrap();
    let window = liaison_node::config::DEFAULT_WINDOW;
    assert!(
        pos(&flash.message_id) < window,
        "flash alert at {}",
        pos(&flash.message_id)
    );
    assert!(
        pos(&urgent.message_id) < window,
        "urgent at {}",
        pos(&urgent.message_id)
    );
    fed.stop("fj").await;
    fed.stop("sx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_message_gets_a_signed_non_delivery_record() {
    // In virtual time: a message expires when the clock passes its expiry, not before.
    let mut fed = Federation::new(&spec(vec![
        member("fj", "public_security", "CHN", None),
        member("hk", "border_station", "CHN", None),
        member("vn", "foreign_counterpart", "VNM", Some("hk")),
    ]))
    .unwrap()
    .in_virtual_time();
    let ten_minutes = Duration::from_secs(600);
    let fj = fed.start("fj").await.unwrap();
    // Direct, recipient down (every dial refused at once): the sender itself drops it.
    let door = fed.closed_door("hk").await.unwrap();
    let mut m = msg("hk", "bus.test", b"10:00 at the bridge");
    m.expires_in_ms = Some(10 * 60 * 1000);
    let direct = fj.send(m).await.unwrap();
    wait_for(LIMIT, async || fj.peers()[0].failures > 0)
        .await
        .unwrap();
    fed.advance(ten_minutes - Duration::from_millis(1));
    assert_eq!(count_state(&fj, "outgoing", "queued").await, 1);
    fed.advance(Duration::from_millis(1));
    wait_for(LIMIT, async || {
        count_state(&fj, "outgoing", "expired").await == 1
    })
    .await
    .unwrap();
    let v = fj.message(&direct.message_id).await.unwrap().unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let roster = fj.roster();
    let nd = SignedNonDelivery::open(&b64.decode(v.proof.unwrap()).unwrap(), |k| {
        roster.roster().signer(k)
    })
    .unwrap();
    assert_eq!(nd.record().dropped_by.as_str(), "fj");
    assert_eq!(nd.record().message_id.to_hex(), direct.message_id);

    // Through the relay, recipient down: the relay drops it and the record comes back.
    door.remove().await;
    let hk = fed.start("hk").await.unwrap();
    let door = fed.closed_door("vn").await.unwrap();
    let mut m = msg("vn", "bus.test", b"10:00 at the bridge");
    m.expires_in_ms = Some(10 * 60 * 1000);
    let relayed = fj.send(m).await.unwrap();
    // fj's link to hk may be waiting out a backoff from the outage.
    fed.advance(Duration::from_secs(1));
    wait_for(LIMIT, async || {
        count_state(&hk, "relay", "queued").await == 1
    })
    .await
    .unwrap();
    fed.advance(ten_minutes);
    wait_for(LIMIT, async || {
        count_state(&hk, "relay", "expired").await == 1
    })
    .await
    .unwrap();
    wait_for(LIMIT, async || {
        count_state(&fj, "outgoing", "expired").await == 2
    })
    .await
    .unwrap();
    let v = fj.message(&relayed.message_id).await.unwrap().unwrap();
    let nd = SignedNonDelivery::open(&b64.decode(v.proof.unwrap()).unwrap(), |k| {
        roster.roster().signer(k)
    })
    .unwrap();
    assert_eq!(nd.record().dropped_by.as_str(), "hk");
    assert_eq!(nd.record().recipient.as_str(), "vn");
    // The recipient, once up, never sees it: a later message through the same relay arrives
    // alone.
    door.remove().await;
    let vn = fed.start("vn").await.unwrap();
    let later = fj.send(msg("vn", "bus.test", b"11:00")).await.unwrap();
    fed.advance(Duration::from_secs(1));
    wait_for(LIMIT, async || {
        !vn.inbox(10, false).await.unwrap().is_empty()
    })
    .await
    .unwrap();
    let inbox = vn.inbox(10, false).await.unwrap();
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].message_id, later.message_id);
    for id in ["fj", "hk", "vn"] {
        fed.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_roster_spreads_to_peers_on_connect() {
    let mut fed = two_bureaus();
    let fj = fed.start("fj").await.unwrap();
    let sx = fed.start("sx").await.unwrap();
    let roster = allow_training(&mut fed);
    assert_eq!(fj.apply_roster(&roster).await.unwrap(), 2);
    // fj's next connection to sx carries the roster; sx then accepts the new kind.
    fj.send(msg("sx", "training.notice", b"new kind"))
        .await
        .unwrap();
    wait_for(LIMIT, async || {
        count_state(&fj, "outgoing", "delivered").await == 1
    })
    .await
    .unwrap();
    assert_eq!(sx.roster().roster().serial, 2);
    fed.stop("fj").await;
    fed.stop("sx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_an_older_roster_fetches_the_newer_one_on_connect() {
    let mut fed = two_bureaus();
    let fj = fed.start("fj").await.unwrap();
    let sx = fed.start("sx").await.unwrap();
    let roster = allow_training(&mut fed);
    // Only the recipient has the new roster; the sender dials it with the old one and is
    // answered with the new one.
    assert_eq!(sx.apply_roster(&roster).await.unwrap(), 2);
    fj.send(msg("sx", "bus.test", b"with the old roster"))
        .await
        .unwrap();
    wait_for(LIMIT, async || {
        count_state(&fj, "outgoing", "delivered").await == 1
    })
    .await
    .unwrap();
    wait_for(LIMIT, async || fj.roster().roster().serial == 2)
        .await
        .unwrap();
    // Now fj may send the kind only the new roster allows.
    fj.send(msg("sx", "training.notice", b"new kind"))
        .await
        .unwrap();
    fed.stop("fj").await;
    fed.stop("sx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_member_is_refused_new_messages_and_its_queue_is_held_until_reinstated() {
    let mut fed = two_bureaus();
    let door = fed.closed_door("sx").await.unwrap();
    let fj = fed.start("fj").await.unwrap();
    fj.send(msg("sx", "bus.test", b"queued before the suspension"))
        .await
        .unwrap();
    let status = |s: liaison_protocol::MemberStatus| {
        move |r: &mut liaison_protocol::Roster| {
            for m in &mut r.members {
                if m.id.as_str() == "sx" {
                    m.status = s;
                }
            }
        }
    };
    let suspended = fed
        .reissue_roster(status(liaison_protocol::MemberStatus::Suspended))
        .unwrap();
    fj.apply_roster(&suspended).await.unwrap();
    // New messages are refused with the reason; the one queued is held, and `peers` says why.
    let refused = fj.send(msg("sx", "bus.test", b"after")).await.unwrap_err();
    assert!(refused.to_string().contains("suspended"), "{refused}");
    wait_for(LIMIT, async || {
        fj.peers().iter().any(|p| {
            p.peer == "sx"
                && p.queued.iter().sum::<usize>() == 1
                && p.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("suspended"))
        })
    })
    .await
    .unwrap();
    assert_eq!(count_state(&fj, "outgoing", "queued").await, 1);
    // Reinstated: the held message goes.
    let back = fed
        .reissue_roster(status(liaison_protocol::MemberStatus::Active))
        .unwrap();
    fj.apply_roster(&back).await.unwrap();
    door.remove().await;
    let _sx = fed.start("sx").await.unwrap();
    wait_for(LIMIT, async || {
        count_state(&fj, "outgoing", "delivered").await == 1
    })
    .await
    .unwrap();
    fed.stop("fj").await;
    fed.stop("sx").await;
}

/// Fujian and Shaanxi public security.
fn two_bureaus() -> Federation {
    Federation::new(&spec(vec![
        member("fj", "public_security", "CHN", None),
        member("sx", "public_security", "CHN", None),
    ]))
    .unwrap()
}

/// A newer roster that also allows `training.*` between public security bureaus.
fn allow_training(fed: &mut Federation) -> Vec<u8> {
    fed.reissue_roster(|r| {
        r.rules.push(liaison_protocol::Rule {
            from: "public_security".into(),
            to: "public_security".into(),
            kinds: vec!["training.*".into()],
            abroad: false,
        });
    })
    .unwrap()
}
