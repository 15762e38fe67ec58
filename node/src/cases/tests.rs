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
