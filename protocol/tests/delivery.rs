//! The delivery machine without sockets or a store: every inbound check in order, every
//! answer an outbox item can get, the outbox's schedule, and a model run of random answer
//! sequences against a peer that keeps or loses what it is sent.

// Test helpers outside `#[test]` functions, where clippy.toml already allows these.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use ed25519_dalek::SigningKey;
use liaison_protocol::delivery::{
    Answer, Backoff, Carried, Decision, Flight, Inbound, Meta, Outbox, Outcome, Refusal, Route,
    Seen, Settle, decide, seen,
};
use liaison_protocol::roster::{Member, MemberStatus, PolicyError, Roster, Rule};
use liaison_protocol::{
    BodyError, Digest, Envelope, ErrorCode, Header, MessageId, NodeId, Priority, PublicKey,
};
use proptest::prelude::*;

const T0: u64 = 1_795_392_000_000;
const MIN: u64 = 60_000;

fn n(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn member(id: &str, agency: &str, seed: u8, via: Option<&str>) -> Member {
    Member {
        id: n(id),
        agency: agency.into(),
        name: id.into(),
        country: "CHN".into(),
        division: None,
        signing_key: PublicKey::from(&key(seed)),
        log_key: PublicKey::from(&key(seed + 100)),
        witness_key: PublicKey::from(&key(seed + 150)),
        tls_spki_sha256: [seed; 32],
        endpoints: vec![],
        via: via.map(n),
        location: None,
        status: MemberStatus::Active,
        previous: None,
        tls_cert: None,
    }
}

/// Fujian and Yunnan police, the Hekou border station, and Lao Cai reached through Hekou.
fn roster() -> Roster {
    Roster {
        federation: "cn-atip-demo".into(),
        serial: 1,
        issued_at: 1,
        valid_until: None,
        members: vec![
            member("cn-35-psb", "public_security", 1, None),
            member("cn-53-psb", "public_security", 2, None),
            member("cn-5325-hekou", "border_station", 3, None),
            member(
                "vn-laocai-bg",
                "foreign_counterpart",
                4,
                Some("cn-5325-hekou"),
            ),
        ],
        rules: vec![
            Rule {
                from: "*".into(),
                to: "*".into(),
                kinds: vec!["bus.*".into()],
                abroad: true,
            },
            Rule {
                from: "public_security".into(),
                to: "public_security".into(),
                kinds: vec!["assist.*".into()],
                abroad: false,
            },
        ],
        max_body_len: 1024,
        dev: true,
        next_authority: None,
    }
}

fn seed_of(id: &str) -> u8 {
    match id {
        "cn-35-psb" => 1,
        "cn-53-psb" => 2,
        "cn-5325-hekou" => 3,
        _ => 4,
    }
}

fn message(from: &str, to: &str, kind: &str, body: &[u8], expires: Option<u64>) -> Envelope {
    let h = Header {
        federation: "cn-atip-demo".into(),
        id: MessageId([7; 16]),
        from: n(from),
        to: n(to),
        sent_at: T0,
        kind: kind.into(),
        body_len: body.len() as u64,
        body_hash: Digest::of(body).0,
        priority: Priority::Routine,
        in_reply_to: None,
        expires_at: expires,
        case_ref: None,
    };
    Envelope::seal(h, &key(seed_of(from)))
}

fn checks<'a>(me: &'a NodeId, r: &'a Roster) -> Inbound<'a> {
    Inbound {
        me,
        federation: "cn-atip-demo",
        roster: r,
        max_skew_ms: 5 * MIN,
        replay_window_ms: 24 * 60 * MIN,
    }
}

#[test]
fn a_message_for_this_node_is_delivered_and_one_for_another_relayed() {
    let r = roster();
    let yn = n("cn-53-psb");
    let env = message("cn-35-psb", "cn-53-psb", "assist.request", b"doc", None);
    assert_eq!(
        checks(&yn, &r).check(&n("cn-35-psb"), &env, b"doc", T0),
        Ok(Route::Deliver)
    );
    let hk = n("cn-5325-hekou");
    let env = message("cn-35-psb", "vn-laocai-bg", "bus.ping", b"x", None);
    assert_eq!(
        checks(&hk, &r).check(&n("cn-35-psb"), &env, b"x", T0),
        Ok(Route::Relay(n("vn-laocai-bg")))
    );
}

#[test]
fn every_inbound_refusal_in_order() {
    let r = roster();
    let yn = n("cn-53-psb");
    let fj = n("cn-35-psb");
    let c = checks(&yn, &r);
    let body = b"doc";
    let ok = message("cn-35-psb", "cn-53-psb", "assist.request", body, None);

    let mut other = c;
    other.federation = "another";
    assert!(matches!(
        other.check(&fj, &ok, body, T0),
        Err(Refusal::Federation { .. })
    ));

    // Not on the route: a message from Fujian to Hekou offered to Yunnan.
    let elsewhere = message("cn-35-psb", "cn-5325-hekou", "bus.ping", b"x", None);
    let e = c.check(&fj, &elsewhere, b"x", T0).unwrap_err();
    assert!(matches!(e, Refusal::NotOnRoute { .. }), "{e:?}");
    assert_eq!(e.code(), ErrorCode::Unauthorized);
    assert!(!e.deserves_receipt(true));

    // Handed over by a member that is not the one before us on the route.
    let e = c.check(&n("cn-5325-hekou"), &ok, body, T0).unwrap_err();
    assert!(matches!(e, Refusal::WrongHop { .. }), "{e:?}");
    assert_eq!(e.name(), "wrong-hop");
    assert_eq!(c.check_hand_over(&n("cn-5325-hekou"), ok.header()), Err(e));
    assert_eq!(c.check_hand_over(&fj, ok.header()), Ok(()));

    let big = vec![0u8; 2000];
    let env = message("cn-35-psb", "cn-53-psb", "assist.request", &big, None);
    let e = c.check(&fj, &env, &big, T0).unwrap_err();
    assert_eq!(
        e,
        Refusal::BodyTooLarge {
            len: 2000,
            max: 1024
        }
    );
    assert!(e.deserves_receipt(true) && !e.deserves_receipt(false));

    assert_eq!(
        c.check(&fj, &ok, b"dog", T0),
        Err(Refusal::Body(BodyError::Hash))
    );
    assert!(matches!(
        c.check(&fj, &ok, b"docs", T0),
        Err(Refusal::Body(BodyError::Length {
            expected: 3,
            got: 4
        }))
    ));

    let forbidden = message("cn-35-psb", "cn-53-psb", "marriage.check", body, None);
    let e = c.check(&fj, &forbidden, body, T0).unwrap_err();
    assert!(
        matches!(e, Refusal::Policy(PolicyError::Forbidden { .. })),
        "{e:?}"
    );
    assert!(e.deserves_receipt(false));

    assert_eq!(
        c.check(&fj, &ok, body, T0 - 6 * MIN),
        Err(Refusal::SentInFuture)
    );
    assert_eq!(
        c.check(&fj, &ok, body, T0 + 25 * 60 * MIN),
        Err(Refusal::SentTooLongAgo)
    );
    let expiring = message(
        "cn-35-psb",
        "cn-53-psb",
        "assist.request",
        body,
        Some(T0 + MIN),
    );
    assert_eq!(
        c.check(&fj, &expiring, body, T0 + MIN - 1),
        Ok(Route::Deliver)
    );
    assert_eq!(
        c.check(&fj, &expiring, body, T0 + MIN),
        Err(Refusal::Expired)
    );
}

#[test]
fn a_suspended_sender_is_refused_by_policy() {
    let mut r = roster();
    r.members[0].status = MemberStatus::Suspended;
    let yn = n("cn-53-psb");
    let env = message("cn-35-psb", "cn-53-psb", "assist.request", b"d", None);
    let e = checks(&yn, &r)
        .check(&n("cn-35-psb"), &env, b"d", T0)
        .unwrap_err();
    assert_eq!(e.name(), "member-not-active");
}

#[test]
fn refusal_codes_and_receipts() {
    use liaison_protocol::VerifyError;
    let env = Refusal::Envelope(VerifyError::BadSignature);
    assert_eq!(env.name(), "bad-signature");
    assert_eq!(env.code(), ErrorCode::Refused);
    assert!(!env.deserves_receipt(true));
    assert!(Refusal::IdReused.deserves_receipt(false));
    assert!(Refusal::CaseStep("x".into()).deserves_receipt(false));
    assert_eq!(
        Refusal::MalformedFrame(liaison_protocol::FrameError::UnknownType(9)).code(),
        ErrorCode::MalformedFrame
    );
    // The texts are what receipts and audit entries have always said.
    assert_eq!(
        Refusal::SentInFuture.to_string(),
        "sent-at is in the future (clock skew?)"
    );
    assert_eq!(
        Refusal::IdReused.to_string(),
        "message id reused with different content (replay?)"
    );
}

#[test]
fn dedupe_lookup() {
    let a = Digest([1; 32]);
    let b = Digest([2; 32]);
    assert_eq!(seen(None, &a), Seen::New);
    assert_eq!(seen(Some(&a), &a), Seen::Same);
    assert_eq!(seen(Some(&b), &a), Seen::Reused);
}

#[test]
fn what_each_answer_does() {
    let d = Digest([3; 32]);
    let other = Digest([4; 32]);
    let to_recipient = Carried::Message { to_recipient: true };
    let to_relay = Carried::Message {
        to_recipient: false,
    };
    assert_eq!(
        decide(to_recipient, &d, Answer::Receipt(vec![1])),
        Decision::TakeReceipt(vec![1])
    );
    assert_eq!(
        decide(to_relay, &d, Answer::Custody(d)),
        Decision::TakeCustody
    );
    assert_eq!(
        decide(Carried::Receipt, &d, Answer::Ack(d)),
        Decision::Forwarded
    );
    assert_eq!(
        decide(Carried::NonDelivery, &d, Answer::Ack(d)),
        Decision::Forwarded
    );
    assert!(matches!(
        decide(
            to_recipient,
            &d,
            Answer::Error {
                code: ErrorCode::Unavailable,
                reason: "disk full".into()
            }
        ),
        Decision::Retry(Outcome::Busy(_))
    ));
    assert!(matches!(
        decide(
            to_recipient,
            &d,
            Answer::Error {
                code: ErrorCode::ShuttingDown,
                reason: String::new()
            }
        ),
        Decision::Retry(Outcome::Busy(_))
    ));
    assert!(matches!(
        decide(
            to_recipient,
            &d,
            Answer::Error {
                code: ErrorCode::Refused,
                reason: "no".into()
            }
        ),
        Decision::Refused(r) if r == "no (Refused)"
    ));
    assert!(matches!(
        decide(
            to_relay,
            &d,
            Answer::Error {
                code: ErrorCode::Other(99),
                reason: "?".into()
            }
        ),
        Decision::Refused(_)
    ));
    // No answer: the item may have arrived, and the connection is dead.
    assert!(matches!(
        decide(to_recipient, &d, Answer::Lost("reset".into())),
        Decision::Retry(Outcome::Unknown { broken: true, .. })
    ));
    // Answers that do not fit: the item reached the peer, whether it kept it is unknown.
    for (carried, answer) in [
        (to_recipient, Answer::Custody(d)),
        (to_relay, Answer::Receipt(vec![])),
        (to_relay, Answer::Custody(other)),
        (Carried::Receipt, Answer::Ack(other)),
        (Carried::Receipt, Answer::Receipt(vec![])),
        (to_recipient, Answer::Unexpected("roster")),
        (to_recipient, Answer::Malformed("junk".into())),
    ] {
        assert!(
            matches!(
                decide(carried, &d, answer.clone()),
                Decision::Retry(Outcome::Unknown { broken: false, .. })
            ),
            "{carried:?} {answer:?}"
        );
    }
}

#[test]
fn backoff_doubles_to_its_cap_with_jitter() {
    let b = Backoff {
        initial_ms: 100,
        max_ms: 1000,
    };
    assert_eq!(b.base(1), 100);
    assert_eq!(b.base(2), 200);
    assert_eq!(b.base(4), 800);
    assert_eq!(b.base(5), 1000);
    assert_eq!(b.base(u32::MAX), 1000);
    assert_eq!(b.delay(2, 0.5), 100);
    assert_eq!(b.delay(2, 0.99), 198);
    assert_eq!(b.delay(2, 7.0), 200);
    assert_eq!(b.delay(2, f64::NAN), 150);
}

fn backoff() -> Backoff {
    Backoff {
        initial_ms: 500,
        max_ms: 8000,
    }
}

#[test]
fn the_outbox_sends_flash_first_then_fifo_within_its_window() {
    let mut o = Outbox::new(backoff());
    o.push(Meta::new(Priority::Routine, 1, None, false), "r1");
    o.push(Meta::new(Priority::Flash, 2, None, false), "f2");
    o.push(Meta::new(Priority::Routine, 3, None, false), "r3");
    o.push(Meta::new(Priority::Urgent, 4, None, false), "u4");
    let a = o.pop(2, T0).unwrap();
    let b = o.pop(2, T0).unwrap();
    assert_eq!((a.item, b.item), ("f2", "u4"));
    assert!(o.pop(2, T0).is_none(), "window of 2 is full");
    assert_eq!(o.len(), 4);
    assert_eq!(o.settle(a, Outcome::Settled, T0, 0.5), Settle::Done);
    assert_eq!(o.pop(2, T0).unwrap().item, "r1");
    assert_eq!(o.len(), 3);
}

#[test]
fn busy_items_wait_their_backoff_and_uncertain_ones_never_expire_unasked() {
    let mut o = Outbox::new(backoff());
    o.push(Meta::new(Priority::Routine, 1, Some(T0 + MIN), false), 1);
    o.push(Meta::new(Priority::Routine, 2, Some(T0 + MIN), false), 2);
    o.push(Meta::new(Priority::Routine, 3, None, false), 3);
    assert_eq!(o.next_due(), Some(T0 + MIN));

    let busy = o.pop(8, T0).unwrap();
    assert_eq!(
        o.settle(busy, Outcome::Busy("disk full".into()), T0, 0.5),
        Settle::Delayed {
            until: T0 + 250,
            newly_uncertain: false
        }
    );
    let lost = o.pop(8, T0).unwrap();
    assert_eq!(lost.item, 2);
    assert_eq!(
        o.settle(
            lost,
            Outcome::Unknown {
                reason: "reset".into(),
                broken: true
            },
            T0,
            0.5
        ),
        Settle::Requeued {
            newly_uncertain: true
        }
    );
    // The delayed item is not sent before its time; the uncertain one goes again at once.
    assert_eq!(o.pop(8, T0 + 249).unwrap().item, 2);
    let third = o.pop(8, T0 + 249).unwrap();
    assert_eq!(third.item, 3);
    assert_eq!(o.next_due(), Some(T0 + 250));
    assert_eq!(o.pop(8, T0 + 250).unwrap().item, 1);

    // At expiry only what surely did not reach the peer is dropped.
    let mut o = Outbox::new(backoff());
    o.push(Meta::new(Priority::Routine, 1, Some(T0 + MIN), false), 1);
    o.push(Meta::new(Priority::Routine, 2, Some(T0 + MIN), true), 2);
    o.push(
        Meta::new(Priority::Routine, 3, Some(T0 + 2 * MIN), false),
        3,
    );
    assert!(o.take_expired(T0 + MIN - 1).is_empty());
    let dropped: Vec<i32> = o
        .take_expired(T0 + MIN)
        .into_iter()
        .map(|f| f.item)
        .collect();
    assert_eq!(dropped, vec![1]);
    assert_eq!(o.len(), 2);
}

#[test]
fn a_flight_from_elsewhere_is_not_taken() {
    let mut o: Outbox<u8> = Outbox::new(backoff());
    let stray = Flight {
        meta: Meta::new(Priority::Routine, 9, None, false),
        item: 9,
    };
    assert_eq!(o.settle(stray, Outcome::Settled, T0, 0.5), Settle::Stray(9));
    o.push(Meta::new(Priority::Routine, 1, None, false), 1);
    let f = o.pop(1, T0).unwrap();
    o.abandon(f.meta.seq);
    assert_eq!(o.in_flight(), 0);
}

/// What the simulated next hop does with one delivery.
#[derive(Debug, Clone, Copy)]
enum Fate {
    /// The frame never arrives; no answer.
    LostBefore,
    /// The peer keeps the message; the answer is lost.
    LostAfter,
    /// The peer keeps it and answers with its receipt.
    Receipt,
    /// The peer keeps it and the receipt arrives, but this node's store cannot take it.
    ReceiptNotTaken,
    /// The peer keeps it and answers garbage.
    Garbage,
    /// The peer is busy; it keeps nothing.
    Busy,
    /// The peer refuses it for good.
    Refuse,
}

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    Pop,
    Resolve(usize, Fate),
    Sweep,
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        Just(Fate::LostBefore),
        Just(Fate::LostAfter),
        Just(Fate::Receipt),
        Just(Fate::ReceiptNotTaken),
        Just(Fate::Garbage),
        Just(Fate::Busy),
        Just(Fate::Refuse),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u64..20_000).prop_map(Op::Advance),
        Just(Op::Pop),
        Just(Op::Pop),
        (0usize..8, fate()).prop_map(|(i, f)| Op::Resolve(i, f)),
        (0usize..8, fate()).prop_map(|(i, f)| Op::Resolve(i, f)),
        Just(Op::Sweep),
    ]
}

#[derive(Default)]
struct World {
    /// Messages the peer has stored (it answers every later copy with its receipt).
    kept: BTreeSet<u64>,
    receipted: BTreeSet<u64>,
    refused: BTreeSet<u64>,
    expired: BTreeSet<u64>,
}

impl World {
    fn settled(&self, id: u64) -> bool {
        self.receipted.contains(&id) || self.refused.contains(&id) || self.expired.contains(&id)
    }
}

/// One exchange: the peer's answer, the decision, the node's store step, the settlement.
fn resolve(
    o: &mut Outbox<u64>,
    w: &mut World,
    f: Flight<u64>,
    fate: Fate,
    now: u64,
    expiry: &[Option<u64>],
) -> Result<(), TestCaseError> {
    let id = f.item;
    prop_assert!(!w.settled(id), "item {id} sent again after it was settled");
    let d = Digest([0; 32]);
    let expired_at_peer = expiry[id as usize].is_some_and(|e| e <= now);
    let answer = if w.kept.contains(&id) {
        // A resend of a kept message gets the same receipt.
        match fate {
            Fate::LostBefore | Fate::LostAfter => Answer::Lost("reset".into()),
            _ => Answer::Receipt(vec![]),
        }
    } else if matches!(fate, Fate::LostBefore) {
        Answer::Lost("no route to host".into())
    } else if expired_at_peer {
        Answer::Error {
            code: ErrorCode::Refused,
            reason: "message expired in transit".into(),
        }
    } else {
        match fate {
            Fate::LostBefore => unreachable!(),
            Fate::LostAfter => {
                w.kept.insert(id);
                Answer::Lost("reset".into())
            }
            Fate::Receipt | Fate::ReceiptNotTaken => {
                w.kept.insert(id);
                Answer::Receipt(vec![])
            }
            Fate::Garbage => {
                w.kept.insert(id);
                Answer::Malformed("junk".into())
            }
            Fate::Busy => Answer::Error {
                code: ErrorCode::Unavailable,
                reason: "disk full".into(),
            },
            Fate::Refuse => Answer::Error {
                code: ErrorCode::Refused,
                reason: "policy".into(),
            },
        }
    };
    let outcome = match decide(Carried::Message { to_recipient: true }, &d, answer) {
        Decision::TakeReceipt(_) if matches!(fate, Fate::ReceiptNotTaken) => Outcome::Unknown {
            reason: "store failed".into(),
            broken: false,
        },
        Decision::TakeReceipt(_) => {
            w.receipted.insert(id);
            Outcome::Settled
        }
        Decision::Refused(_) => {
            w.refused.insert(id);
            Outcome::Settled
        }
        Decision::Retry(o) => o,
        other => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
    };
    let settle = o.settle(f, outcome, now, 0.75);
    prop_assert!(!matches!(settle, Settle::Stray(_)));
    Ok(())
}

fn sweep(o: &mut Outbox<u64>, w: &mut World, now: u64) -> Result<(), TestCaseError> {
    for f in o.take_expired(now) {
        prop_assert!(
            !w.kept.contains(&f.item),
            "item {} dropped at expiry though the peer holds it",
            f.item
        );
        prop_assert!(!w.settled(f.item));
        w.expired.insert(f.item);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn random_answers_never_requeue_settled_lose_or_drop_delivered(
        expiry in prop::collection::vec(prop::option::of(1u64..120_000), 1..12),
        lanes in prop::collection::vec(0u8..4, 12),
        restored in prop::collection::vec(any::<bool>(), 12),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let count = expiry.len() as u64;
        let expiry: Vec<Option<u64>> = expiry.iter().map(|e| e.map(|e| T0 + e)).collect();
        let mut o = Outbox::new(backoff());
        let mut w = World::default();
        for id in 0..count {
            let lane = Priority::from_u64(u64::from(lanes[id as usize])).unwrap();
            // A restored item: nobody knows whether it reached the peer before the restart.
            let uncertain = restored[id as usize];
            if uncertain && id % 2 == 0 {
                w.kept.insert(id);
            }
            o.push(Meta::new(lane, id, expiry[id as usize], uncertain), id);
        }
        let mut now = T0;
        let mut flying: Vec<Flight<u64>> = Vec::new();
        for op in ops {
            match op {
                Op::Advance(dt) => now += dt,
                Op::Pop => {
                    if let Some(f) = o.pop(4, now) {
                        prop_assert!(!w.settled(f.item), "settled item {} popped", f.item);
                        flying.push(f);
                    }
                }
                Op::Resolve(i, fate) => {
                    if !flying.is_empty() {
                        let f = flying.remove(i % flying.len());
                        resolve(&mut o, &mut w, f, fate, now, &expiry)?;
                    }
                }
                Op::Sweep => sweep(&mut o, &mut w, now)?,
            }
            // Nothing is lost: every item is held by the outbox or settled, never both.
            let settled = w.receipted.len() + w.refused.len() + w.expired.len();
            prop_assert_eq!(o.len() + settled, count as usize);
            prop_assert_eq!(o.in_flight(), flying.len());
        }
        // The peer comes back for good: everything settles, and what it holds is receipted.
        for f in flying.drain(..) {
            resolve(&mut o, &mut w, f, Fate::Receipt, now, &expiry)?;
        }
        let mut rounds = 0;
        while !o.is_empty() {
            rounds += 1;
            prop_assert!(rounds < 1000, "outbox does not drain");
            now = o.next_due().map_or(now, |t| t.max(now));
            sweep(&mut o, &mut w, now)?;
            while let Some(f) = o.pop(4, now) {
                resolve(&mut o, &mut w, f, Fate::Receipt, now, &expiry)?;
            }
        }
        for id in &w.kept {
            prop_assert!(w.receipted.contains(id), "kept item {} not receipted", id);
        }
        prop_assert_eq!(
            w.receipted.len() + w.refused.len() + w.expired.len(),
            count as usize
        );
    }
}
