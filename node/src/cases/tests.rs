//! The case rules the node adds to the state machines, without a bus: when the ticker must
//! look at a case again.

use liaison_protocol::Digest;
use liaison_protocol::workflow::{self, DAY_MS, Step, testing};

use super::{ALERT_RECHECK_MS, case_index, local_due};
use crate::store::{CaseRecord, LocalAction};

const T0: u64 = 1_800_000_000_000;
const FOREVER: u64 = u64::MAX / 4;

fn node(id: &str) -> liaison_protocol::NodeId {
    liaison_protocol::NodeId::new(id).unwrap_or_else(|e| panic!("{e}"))
}

/// The case after one step of `kind` (its example document, with `edit`), from `from` to `to`.
fn opened(
    kind: &str,
    from: &str,
    to: &str,
    edit: impl FnOnce(&mut liaison_protocol::document::Document),
) -> CaseRecord {
    let roster = testing::demo_roster().unwrap_or_else(|e| panic!("{e}"));
    let mut doc = workflow::example(kind).unwrap_or_else(|| panic!("no example of {kind}"));
    edit(&mut doc);
    let (from, to) = (node(from), node(to));
    let step = Step {
        case_ref: "CASE-1",
        kind,
        from: &from,
        to: &to,
        at: T0,
        doc: &doc,
        action: Digest([1; 32]),
        officer: "cn-35-psb/lin.wei",
    };
    let case = workflow::apply(None, &step, &roster).unwrap_or_else(|e| panic!("{e}"));
    CaseRecord::new(case)
}

#[test]
fn a_waiting_check_wakes_the_ticker_just_past_its_deadline() {
    let rec = opened("assist.request", "cn-35-psb", "cn-61-psb", |_| {});
    // An identity check is due in seven days by rule.
    let deadline = rec.case.deadline.unwrap_or_else(|| panic!("no deadline"));
    assert_eq!(deadline, T0 + 7 * DAY_MS);
    for me in ["cn-35-psb", "cn-61-psb"] {
        let index = case_index(&rec, &node(me), T0, FOREVER);
        assert_eq!(index.wake, Some(deadline + 1), "at {me}");
        assert!(index.grant.is_none());
    }
    // Once marked overdue, nothing more is due until the case changes, except telling a
    // supervisor elsewhere.
    let mut marked = rec.clone();
    marked.case.overdue = true;
    let later = deadline + 1;
    assert_eq!(
        case_index(&marked, &node("cn-35-psb"), later, FOREVER).wake,
        None
    );
}

#[test]
fn an_alert_issued_here_wakes_for_its_recheck_and_elsewhere_never() {
    let mut rec = opened("alert.issue", "cn-61-psb", "cn-61-psb", |d| {
        d.set("missing_since", T0);
    });
    // Without its signed issue action there is nothing to resend.
    assert_eq!(case_index(&rec, &node("cn-61-psb"), T0, FOREVER).wake, None);
    rec.alert_action = Some(vec![0]);
    let wake = case_index(&rec, &node("cn-61-psb"), T0, FOREVER).wake;
    assert_eq!(wake, Some(T0 + ALERT_RECHECK_MS));
    // A unit that received the alert does not widen it.
    assert_eq!(case_index(&rec, &node("cn-35-psb"), T0, FOREVER).wake, None);
}

#[test]
fn a_step_recorded_here_only_goes_at_the_end_of_the_shorter_retention() {
    let mut rec = opened("alert.issue", "cn-61-psb", "cn-61-psb", |d| {
        d.set("missing_since", T0);
    });
    let l = LocalAction {
        at: T0,
        retain_ms: 30 * DAY_MS,
        action: vec![],
    };
    assert_eq!(local_due(&l, FOREVER), T0 + 30 * DAY_MS);
    assert_eq!(local_due(&l, DAY_MS), T0 + DAY_MS);
    rec.local_actions.push(l);
    let me = node("cn-35-psb");
    assert_eq!(case_index(&rec, &me, T0, DAY_MS).wake, Some(T0 + DAY_MS));
}

/// Two buses without network, each with its cases installed: an investigator at Fujian asks
/// Shaanxi for an assistance check; the envelope and body are carried by hand.
mod through_the_bus {
    use std::sync::Arc;

    use base64::Engine as _;
    use liaison_protocol::action::{Action, Handling};
    use liaison_protocol::workflow::{self, State};
    use liaison_protocol::{Envelope, Frame};

    use crate::bus::hook::CaseHook;
    use crate::bus::testing::{FJ, SX, bus, deliver};
    use crate::cases::{ActRequest, Cases, EnrollRequest};
    use crate::config::WorkflowConfig;
    use crate::error::{ActRefusal, NodeError};

    async fn cases(id: &str) -> (Arc<Cases>, tempfile::TempDir) {
        let (b, dir) = bus(id).await;
        let cases = Arc::new(Cases::new(b.clone(), WorkflowConfig::default()));
        let hook: Arc<dyn CaseHook> = cases.clone();
        // Held weakly by the bus; `cases` (the same allocation) keeps it alive.
        let _ = b.cases.set(Arc::downgrade(&hook));
        (cases, dir)
    }

    #[tokio::test]
    async fn an_assistance_check_opens_both_copies_and_its_receipt_moves_the_sender_on() {
        let (fj, _d1) = cases(FJ).await;
        let (sx, _d2) = cases(SX).await;
        let key = ed25519_dalek::SigningKey::from_bytes(&[77; 32]);
        let view = fj
            .enroll_officer(EnrollRequest {
                id: format!("{FJ}/lin.wei"),
                name: "Lin Wei".into(),
                number: "350001".into(),
                unit: "criminal investigation".into(),
                role: "investigator".into(),
                public_key: hex::encode(key.verifying_key().to_bytes()),
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let b64 = base64::engine::general_purpose::STANDARD;
        let credential = b64
            .decode(view.credential)
            .unwrap_or_else(|e| panic!("{e}"));
        let kind = "assist.request";
        let action = |case_ref: &str| Action {
            federation: "cn-atip-demo".into(),
            node: super::node(FJ),
            kind: kind.into(),
            case_ref: case_ref.into(),
            at: fj.now(),
            purpose: workflow::spec(kind)
                .unwrap_or_else(|| panic!("no {kind}"))
                .purpose
                .into(),
            handling: Handling::H0,
            sensitivity: Vec::new(),
            retention_days: 365,
            abroad: false,
            document: workflow::example(kind).unwrap_or_else(|| panic!("no example")),
            derived_from: Vec::new(),
            credential: Some(credential.clone()),
        };
        let request = |case_ref: &str, to: &str| ActRequest {
            action: b64.encode(action(case_ref).sign(&key).bytes()),
            to: vec![super::node(to)],
            priority: None,
            in_reply_to: None,
        };
        let done = fj
            .act(request("FJ-AC-1", SX))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(done.state, State::Sent);
        assert_eq!(done.messages.len(), 1);
        // The same signed action again: refused, typed.
        let again = ActRequest {
            action: b64.encode(action("FJ-AC-1").sign(&key).bytes()),
            to: vec![super::node(SX)],
            priority: None,
            in_reply_to: None,
        };
        match fj.act(again).await {
            Err(NodeError::Refused(r)) => {
                assert!(matches!(*r, ActRefusal::AlreadySubmitted { .. }), "{r:?}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }

        // Carry the envelope and body to Shaanxi.
        let digest = liaison_protocol::Digest::from_hex(&done.messages[0].digest)
            .unwrap_or_else(|e| panic!("{e}"));
        let (envelope, body) = fj
            .bus
            .store
            .read(move |r| Ok((r.message(&digest)?, r.body(&digest)?)))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let envelope = envelope.unwrap_or_else(|| panic!("no record")).envelope;
        let body = body.unwrap_or_else(|| panic!("no body"));
        assert!(Envelope::peek_unverified(&envelope).is_some());
        let answer = deliver(&sx.bus, FJ, Frame::Deliver { envelope, body }).await;
        let Frame::Receipt(receipt) = answer else {
            panic!("no receipt: {answer:?}")
        };
        let theirs = sx
            .case("FJ-AC-1")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no case at Shaanxi"));
        assert_eq!(theirs.case.state, State::Received);
        // The receipt back at Fujian moves its copy from sent to received.
        assert!(matches!(
            deliver(&fj.bus, SX, Frame::Receipt(receipt)).await,
            Frame::Ack(_)
        ));
        let ours = fj
            .case("FJ-AC-1")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no case at Fujian"));
        assert_eq!(ours.case.state, State::Received);
        fj.bus.cancel.cancel();
        sx.bus.cancel.cancel();
    }
}
