//! Unit tests of the workflows: the happy path of each, and every bad input the rules name.

use super::*;
use crate::document::Field;
use crate::roster::Location;

/// 2026-11-23T00:00:00Z.
const T0: u64 = 1_795_392_000_000;
const MIN: u64 = 60_000;

fn n(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

fn roster() -> Roster {
    testing::demo_roster().unwrap()
}

const FJ: &str = "cn-35-psb";
const SX: &str = "cn-61-psb";
const MCA: &str = "cn-6101-mca";
const HK: &str = "cn-5325-hekou";
const VN: &str = "vn-laocai-bg";
const JMO: &str = "cn-jmo";

/// Applies one step of case `c1`.
fn go(
    case: Option<&Case>,
    kind: &str,
    from: &str,
    to: &str,
    at: u64,
    doc: &Document,
) -> Result<Case, WorkflowError> {
    go_ref("c1", case, kind, from, to, at, doc)
}

fn go_ref(
    case_ref: &str,
    case: Option<&Case>,
    kind: &str,
    from: &str,
    to: &str,
    at: u64,
    doc: &Document,
) -> Result<Case, WorkflowError> {
    let (from, to) = (n(from), n(to));
    let step = Step {
        case_ref,
        kind,
        from: &from,
        to: &to,
        at,
        doc,
        action: Digest::of(format!("{kind}{at}{from}").as_bytes()),
        officer: if kind == "supervision.overdue" {
            from.as_str()
        } else {
            "officer-1"
        },
    };
    apply(case, &step, &roster())
}

fn ex(kind: &str) -> Document {
    example(kind).unwrap()
}

fn request(action: &str, deadline: Option<u64>) -> Document {
    let mut d = ex("assist.request").with("action", action);
    if let Some(dl) = deadline {
        d.set("deadline", dl);
    }
    d
}

#[test]
fn assist_happy_path() {
    let c = go(None, "assist.request", FJ, SX, T0, &ex("assist.request")).unwrap();
    assert_eq!(c.state, State::Sent);
    assert_eq!(c.deadline, Some(T0 + 7 * 24 * 3600 * 1000));
    assert_eq!(
        (
            c.opened_by.as_str(),
            c.counterpart.as_ref().map(NodeId::as_str)
        ),
        (FJ, Some(SX))
    );
    assert_eq!(c.steps, 1);
    let c = delivered(&c).unwrap();
    assert_eq!(c.state, State::Received);
    assert!(delivered(&c).is_none());
    let c = go(
        Some(&c),
        "assist.accept",
        SX,
        FJ,
        T0 + MIN,
        &ex("assist.accept"),
    )
    .unwrap();
    assert_eq!(c.state, State::Accepted);
    let c = go(
        Some(&c),
        "assist.clarify",
        SX,
        FJ,
        T0 + 2 * MIN,
        &ex("assist.clarify"),
    )
    .unwrap();
    assert_eq!(c.state, State::Clarification);
    let c = go(
        Some(&c),
        "assist.clarification",
        FJ,
        SX,
        T0 + 3 * MIN,
        &ex("assist.clarification"),
    )
    .unwrap();
    assert_eq!(c.state, State::Accepted);
    let notice = Document::new()
        .with("detained_at", T0 + 4 * MIN)
        .with("place", "Xi'an");
    let c = go(
        Some(&c),
        "assist.custody_notice",
        SX,
        FJ,
        T0 + 4 * MIN,
        &notice,
    )
    .unwrap();
    assert_eq!(c.state, State::Accepted);
    let ext = Document::new()
        .with("new_deadline", T0 + 10 * DAY_MS)
        .with("reason", "travelling");
    let c = go(Some(&c), "assist.extend", FJ, SX, T0 + 5 * MIN, &ext).unwrap();
    assert_eq!(c.deadline, Some(T0 + 10 * DAY_MS));
    let c = go(
        Some(&c),
        "assist.answer",
        SX,
        FJ,
        T0 + 6 * MIN,
        &ex("assist.answer"),
    )
    .unwrap();
    assert_eq!(c.state, State::Answered);
    let c = go(
        Some(&c),
        "assist.close",
        FJ,
        SX,
        T0 + 7 * MIN,
        &ex("assist.close"),
    )
    .unwrap();
    assert_eq!(c.state, State::Closed);
    assert_eq!(c.steps, 8);
    assert_eq!(c.updated_at, T0 + 7 * MIN);
    let Detail::Assist(d) = &c.detail else {
        panic!()
    };
    assert_eq!(d.custody_notified_at, Some(T0 + 4 * MIN));
    assert!(!d.answered_late);
    let e = go(
        Some(&c),
        "assist.answer",
        SX,
        FJ,
        T0 + 8 * MIN,
        &ex("assist.answer"),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "illegal transition: assist.answer in state closed (expected one of: accepted, clarification)"
    );
}

#[test]
fn assist_accept_may_overtake_the_receipt() {
    let c = go(None, "assist.request", FJ, SX, T0, &ex("assist.request")).unwrap();
    let c = go(
        Some(&c),
        "assist.accept",
        SX,
        FJ,
        T0 + 1,
        &ex("assist.accept"),
    )
    .unwrap();
    assert_eq!(c.state, State::Accepted);
    assert!(delivered(&c).is_none());
}

#[test]
fn assist_refusals_and_referral() {
    let c = go(
        None,
        "assist.request",
        FJ,
        SX,
        T0,
        &request("detain", Some(T0 + DAY_MS)),
    )
    .unwrap();
    let c = delivered(&c).unwrap();
    let other = ex("assist.refuse").with("reason_code", "too_busy");
    let e = go(Some(&c), "assist.refuse", SX, FJ, T0 + 1, &other).unwrap_err();
    assert_eq!(e, WorkflowError::RefusalReason("too_busy".into()));
    assert!(e.to_string().contains("incomplete_papers"), "{e}");
    let r = go(
        Some(&c),
        "assist.refuse",
        SX,
        FJ,
        T0 + 1,
        &ex("assist.refuse"),
    )
    .unwrap();
    assert_eq!(r.state, State::RefusedIncomplete);
    let e = go(
        Some(&r),
        "assist.answer",
        SX,
        FJ,
        T0 + 2,
        &ex("assist.answer"),
    )
    .unwrap_err();
    assert!(matches!(e, WorkflowError::IllegalTransition { .. }), "{e}");
    let closed = go(
        Some(&r),
        "assist.close",
        FJ,
        SX,
        T0 + 2,
        &ex("assist.close"),
    )
    .unwrap();
    assert_eq!(closed.state, State::Closed);

    let f = go(
        Some(&c),
        "assist.refer",
        SX,
        FJ,
        T0 + 1,
        &ex("assist.refer"),
    )
    .unwrap();
    assert_eq!(f.state, State::Referred);
    // Refusal is no longer possible once answered.
    let a = go(
        Some(&c),
        "assist.accept",
        SX,
        FJ,
        T0 + 1,
        &ex("assist.accept"),
    )
    .unwrap();
    let a = go(
        Some(&a),
        "assist.answer",
        SX,
        FJ,
        T0 + 2,
        &ex("assist.answer"),
    )
    .unwrap();
    let e = go(
        Some(&a),
        "assist.refuse",
        SX,
        FJ,
        T0 + 3,
        &ex("assist.refuse"),
    )
    .unwrap_err();
    assert!(matches!(e, WorkflowError::IllegalTransition { .. }), "{e}");
}

#[test]
fn assist_wrong_parties() {
    let c = go(None, "assist.request", FJ, SX, T0, &ex("assist.request")).unwrap();
    let c = go(
        Some(&c),
        "assist.accept",
        SX,
        FJ,
        T0 + 1,
        &ex("assist.accept"),
    )
    .unwrap();
    // The requester cannot answer its own request.
    let e = go(
        Some(&c),
        "assist.answer",
        FJ,
        SX,
        T0 + 2,
        &ex("assist.answer"),
    )
    .unwrap_err();
    assert!(matches!(e, WorkflowError::WrongParty { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("this case is between cn-35-psb and cn-61-psb"),
        "{e}"
    );
    // A third node cannot act.
    let e = go(
        Some(&c),
        "assist.answer",
        HK,
        FJ,
        T0 + 2,
        &ex("assist.answer"),
    )
    .unwrap_err();
    assert!(matches!(e, WorkflowError::WrongParty { .. }), "{e}");
    // Only the requester extends.
    let ext = Document::new()
        .with("new_deadline", T0 + 9 * DAY_MS)
        .with("reason", "x");
    let e = go(Some(&c), "assist.extend", SX, FJ, T0 + 2, &ext).unwrap_err();
    assert!(matches!(e, WorkflowError::WrongParty { .. }), "{e}");
    // A request to oneself.
    let e = go(None, "assist.request", FJ, FJ, T0, &ex("assist.request")).unwrap_err();
    assert!(matches!(e, WorkflowError::Rule { .. }), "{e}");
}

#[test]
fn assist_missing_legal_instrument() {
    let empty = ex("assist.request").with("legal_instruments", Vec::<Field>::new());
    let e = go(None, "assist.request", FJ, SX, T0, &empty).unwrap_err();
    assert_eq!(
        e.to_string(),
        "missing field legal_instruments: an assistance request needs the legal instruments (case-filing decision, warrant …)"
    );
    let mut absent = ex("assist.request");
    absent.remove("legal_instruments");
    assert_eq!(
        go(None, "assist.request", FJ, SX, T0, &absent).unwrap_err(),
        e
    );
    // A legal instrument without its hash.
    let bad = ex("assist.request").with(
        "legal_instruments",
        vec![Field::Map(
            Document::new().with("type", "x").with("number", "1"),
        )],
    );
    let e = go(None, "assist.request", FJ, SX, T0, &bad).unwrap_err();
    assert!(e.to_string().contains("legal_instruments[0].sha256"), "{e}");
}

#[test]
fn assist_answer_without_request() {
    let e = go(None, "assist.answer", SX, FJ, T0, &ex("assist.answer")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown case c1: assist.answer answers a request that was never sent"
    );
}

#[test]
fn assist_deadlines() {
    // Other actions need a deadline after the request.
    let e = go(None, "assist.request", FJ, SX, T0, &request("locate", None)).unwrap_err();
    assert!(e.to_string().starts_with("missing field deadline"), "{e}");
    let e = go(
        None,
        "assist.request",
        FJ,
        SX,
        T0,
        &request("locate", Some(T0)),
    )
    .unwrap_err();
    assert!(matches!(e, WorkflowError::Deadline(_)), "{e}");
    // The 7-day checks have theirs by rule.
    let e = go(
        None,
        "assist.request",
        FJ,
        SX,
        T0,
        &request("age_check", Some(T0 + 1)),
    )
    .unwrap_err();
    assert!(matches!(e, WorkflowError::Deadline(_)), "{e}");
    let c = go(
        None,
        "assist.request",
        FJ,
        SX,
        T0,
        &request("locate", Some(T0 + DAY_MS)),
    )
    .unwrap();
    assert_eq!(c.deadline, Some(T0 + DAY_MS));
    // An extension that moves the deadline backwards.
    let back = Document::new()
        .with("new_deadline", T0 + DAY_MS - 1)
        .with("reason", "x");
    let e = go(Some(&c), "assist.extend", FJ, SX, T0 + 1, &back).unwrap_err();
    assert!(matches!(e, WorkflowError::Deadline(_)), "{e}");
    assert!(e.to_string().contains("forward"), "{e}");
    // Overdue while waiting, cleared by the answer.
    assert!(mark_overdue(&c, T0 + DAY_MS).is_none());
    let o = mark_overdue(&c, T0 + DAY_MS + 1).unwrap();
    assert!(o.overdue && mark_overdue(&o, T0 + 2 * DAY_MS).is_none());
    let a = go(
        Some(&o),
        "assist.accept",
        SX,
        FJ,
        T0 + 2 * DAY_MS,
        &ex("assist.accept"),
    )
    .unwrap();
    assert!(a.overdue);
    let a = go(
        Some(&a),
        "assist.answer",
        SX,
        FJ,
        T0 + 2 * DAY_MS,
        &ex("assist.answer"),
    )
    .unwrap();
    assert!(!a.overdue && !a.is_overdue_at(T0 + 9 * DAY_MS));
    let Detail::Assist(d) = &a.detail else {
        panic!()
    };
    assert!(d.answered_late);
    // An extension revives an overdue case.
    let ext = Document::new()
        .with("new_deadline", T0 + 5 * DAY_MS)
        .with("reason", "x");
    let e = go(Some(&o), "assist.extend", FJ, SX, T0 + 2 * DAY_MS, &ext).unwrap();
    assert!(!e.overdue && e.deadline == Some(T0 + 5 * DAY_MS));
}

#[test]
fn roles() {
    let e = check_role("assist.request", Role::Registrar).unwrap_err();
    assert_eq!(
        e.to_string(),
        "role registrar may not sign assist.request (allowed: investigator)"
    );
    assert!(check_role("assist.request", Role::Investigator).is_ok());
    assert!(check_role("marriage_check.answer", Role::BorderOfficer).is_ok());
    assert!(check_role("supervision.attach", Role::Supervisor).is_ok());
    for r in Role::ALL {
        assert!(check_role("supervision.overdue", r).is_err());
    }
    assert!(matches!(
        check_role("x.y", Role::Supervisor),
        Err(WorkflowError::UnknownKind(_))
    ));
}

#[test]
fn unknown_kind_and_wrong_workflow() {
    let e = go(None, "assist.dance", FJ, SX, T0, &Document::new()).unwrap_err();
    assert_eq!(e, WorkflowError::UnknownKind("assist.dance".into()));
    let c = go(None, "assist.request", FJ, SX, T0, &ex("assist.request")).unwrap();
    let e = go(
        Some(&c),
        "marriage_check.answer",
        SX,
        FJ,
        T0,
        &ex("marriage_check.answer"),
    )
    .unwrap_err();
    assert!(matches!(e, WorkflowError::WrongWorkflow { .. }), "{e}");
    let e = go(
        Some(&c),
        "assist.request",
        FJ,
        SX,
        T0,
        &ex("assist.request"),
    )
    .unwrap_err();
    assert!(matches!(e, WorkflowError::CaseExists { .. }), "{e}");
    let e = go_ref(
        "c2",
        Some(&c),
        "assist.accept",
        SX,
        FJ,
        T0,
        &ex("assist.accept"),
    )
    .unwrap_err();
    assert!(matches!(e, WorkflowError::CaseMismatch { .. }), "{e}");
}

#[test]
fn bulletin_fan_out() {
    let issue = ex("bulletin.issue");
    let c = go(None, "bulletin.issue", FJ, SX, T0, &issue).unwrap();
    assert_eq!(c.state, State::Published);
    let c = go(Some(&c), "bulletin.issue", FJ, HK, T0, &issue).unwrap();
    assert_eq!((c.state, c.steps), (State::Published, 2));
    // Someone else cannot re-issue it.
    let e = go(Some(&c), "bulletin.issue", SX, HK, T0, &issue).unwrap_err();
    assert!(matches!(e, WorkflowError::CaseExists { .. }), "{e}");
    let c = go(
        Some(&c),
        "bulletin.reply",
        HK,
        FJ,
        T0 + 1,
        &ex("bulletin.reply"),
    )
    .unwrap();
    assert_eq!(c.state, State::Published);
    let e = go(
        Some(&c),
        "bulletin.reply",
        MCA,
        FJ,
        T0 + 1,
        &ex("bulletin.reply"),
    )
    .unwrap_err();
    assert!(matches!(e, WorkflowError::WrongParty { .. }), "{e}");
    let e = go(
        Some(&c),
        "bulletin.close",
        SX,
        FJ,
        T0 + 2,
        &ex("bulletin.close"),
    )
    .unwrap_err();
    assert!(matches!(e, WorkflowError::WrongParty { .. }), "{e}");
    let c = go(
        Some(&c),
        "bulletin.close",
        FJ,
        SX,
        T0 + 2,
        &ex("bulletin.close"),
    )
    .unwrap();
    let c = go(
        Some(&c),
        "bulletin.close",
        FJ,
        HK,
        T0 + 2,
        &ex("bulletin.close"),
    )
    .unwrap();
    assert_eq!(c.state, State::Closed);
    let e = go(
        Some(&c),
        "bulletin.reply",
        HK,
        FJ,
        T0 + 3,
        &ex("bulletin.reply"),
    )
    .unwrap_err();
    assert!(matches!(e, WorkflowError::IllegalTransition { .. }), "{e}");
    // The addressee's own copy.
    let mine = go(None, "bulletin.issue", FJ, HK, T0, &issue).unwrap();
    let mine = go(
        Some(&mine),
        "bulletin.reply",
        HK,
        FJ,
        T0 + 1,
        &ex("bulletin.reply"),
    )
    .unwrap();
    assert_eq!(mine.state, State::Published);
}

#[test]
fn marriage_match_and_discrepancy() {
    let c = go(
        None,
        "marriage_check.request",
        MCA,
        HK,
        T0,
        &ex("marriage_check.request"),
    )
    .unwrap();
    assert_eq!(c.state, State::Submitted);
    assert_eq!(c.deadline, Some(T0 + 2 * 3600 * 1000));
    assert!(c.is_overdue_at(T0 + 3 * 3600 * 1000));
    // Only exit-entry answers.
    let e = go(
        Some(&c),
        "marriage_check.answer",
        MCA,
        HK,
        T0 + 1,
        &ex("marriage_check.answer"),
    )
    .unwrap_err();
    assert!(matches!(e, WorkflowError::WrongParty { .. }), "{e}");
    let m = go(
        Some(&c),
        "marriage_check.answer",
        HK,
        MCA,
        T0 + MIN,
        &ex("marriage_check.answer"),
    )
    .unwrap();
    assert_eq!(m.state, State::AnsweredMatch);
    let flagged = ex("marriage_check.answer").with("flags", vec![Field::from("overstay")]);
    let d = go(
        Some(&c),
        "marriage_check.answer",
        HK,
        MCA,
        T0 + MIN,
        &flagged,
    )
    .unwrap();
    assert_eq!(d.state, State::AnsweredDiscrepancy);
    let unlawful = ex("marriage_check.answer").with("lawful_entry", false);
    let d2 = go(
        Some(&c),
        "marriage_check.answer",
        HK,
        MCA,
        T0 + MIN,
        &unlawful,
    )
    .unwrap();
    assert_eq!(d2.state, State::AnsweredDiscrepancy);

    // Referral to the police: the registry's case and the police node's new case.
    let referral = ex("marriage_check.referral");
    let r = go(
        Some(&d),
        "marriage_check.referral",
        MCA,
        SX,
        T0 + 2 * MIN,
        &referral,
    )
    .unwrap();
    assert_eq!(r.state, State::Referred);
    assert_eq!(r.counterpart, Some(n(HK)));
    let police = go(
        None,
        "marriage_check.referral",
        MCA,
        SX,
        T0 + 2 * MIN,
        &referral,
    )
    .unwrap();
    assert_eq!(
        (police.workflow, police.state),
        (Workflow::Marriage, State::Referred)
    );
    // The referral goes to a police node, not to the border station.
    let e = go(
        Some(&d),
        "marriage_check.referral",
        MCA,
        HK,
        T0 + 2 * MIN,
        &referral,
    )
    .unwrap_err();
    assert!(matches!(e, WorkflowError::WrongAgency { .. }), "{e}");
    let closed = go(
        Some(&r),
        "marriage_check.close",
        MCA,
        HK,
        T0 + 3 * MIN,
        &ex("marriage_check.close"),
    )
    .unwrap();
    let closed = go(
        Some(&closed),
        "marriage_check.close",
        MCA,
        SX,
        T0 + 3 * MIN,
        &ex("marriage_check.close"),
    )
    .unwrap();
    assert_eq!(closed.state, State::Closed);
    let pc = go(
        Some(&police),
        "marriage_check.close",
        SX,
        SX,
        T0 + 4 * MIN,
        &ex("marriage_check.close"),
    )
    .unwrap();
    assert_eq!(pc.state, State::Closed);
}

#[test]
fn marriage_answer_is_minimised() {
    let c = go(
        None,
        "marriage_check.request",
        MCA,
        HK,
        T0,
        &ex("marriage_check.request"),
    )
    .unwrap();
    let leaky = ex("marriage_check.answer").with(
        "travel_history",
        vec![
            Field::from("2025-03-01 Hekou"),
            Field::from("2025-06-01 Hekou"),
        ],
    );
    let e = go(Some(&c), "marriage_check.answer", HK, MCA, T0 + 1, &leaky).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("unknown field travel_history: marriage_check.answer does not carry it"),
        "{e}"
    );
    let odd = ex("marriage_check.answer").with("flags", vec![Field::from("rich_husband")]);
    let e = go(Some(&c), "marriage_check.answer", HK, MCA, T0 + 1, &odd).unwrap_err();
    assert!(matches!(e, WorkflowError::BadValue { .. }), "{e}");
    let bad_country = ex("marriage_check.request").with(
        "foreign_party",
        ex("marriage_check.request")
            .map("foreign_party")
            .unwrap()
            .clone()
            .with("nationality", "Vietnam"),
    );
    let e = go(None, "marriage_check.request", MCA, HK, T0, &bad_country).unwrap_err();
    assert!(e.to_string().contains("foreign_party.nationality"), "{e}");
}

/// Repatriation up to `handover_scheduled`, as seen by the owner.
fn scheduled() -> Case {
    let c = go(
        None,
        "repatriation.open",
        FJ,
        FJ,
        T0,
        &ex("repatriation.open"),
    )
    .unwrap();
    assert_eq!(c.state, State::Identified);
    let c = go(
        Some(&c),
        "repatriation.nationality_request",
        FJ,
        VN,
        T0 + 1,
        &ex("repatriation.nationality_request"),
    )
    .unwrap();
    assert_eq!(c.state, State::NationalityPending);
    let more = ex("repatriation.nationality_answer").with("result", "more_information");
    let c = go(
        Some(&c),
        "repatriation.nationality_answer",
        VN,
        FJ,
        T0 + 2,
        &more,
    )
    .unwrap();
    assert_eq!(c.state, State::NationalityPending);
    let c = go(
        Some(&c),
        "repatriation.nationality_request",
        FJ,
        VN,
        T0 + 3,
        &ex("repatriation.nationality_request"),
    )
    .unwrap();
    let c = go(
        Some(&c),
        "repatriation.nationality_answer",
        VN,
        FJ,
        T0 + 4,
        &ex("repatriation.nationality_answer"),
    )
    .unwrap();
    assert_eq!(c.state, State::NationalityConfirmed);
    let c = go(
        Some(&c),
        "repatriation.request_documents",
        FJ,
        VN,
        T0 + 5,
        &ex("repatriation.request_documents"),
    )
    .unwrap();
    assert_eq!(c.state, State::DocumentsPending);
    let c = go(
        Some(&c),
        "repatriation.travel_document",
        VN,
        FJ,
        T0 + 6,
        &ex("repatriation.travel_document"),
    )
    .unwrap();
    assert_eq!(c.state, State::Ready);
    // No confirmation before a proposal.
    let e = go(
        Some(&c),
        "repatriation.handover_confirmation",
        VN,
        FJ,
        T0 + 7,
        &ex("repatriation.handover_confirmation"),
    )
    .unwrap_err();
    assert!(matches!(e, WorkflowError::Rule { .. }), "{e}");
    let c = go(
        Some(&c),
        "repatriation.handover_proposal",
        FJ,
        VN,
        T0 + 7,
        &ex("repatriation.handover_proposal"),
    )
    .unwrap();
    assert_eq!(c.state, State::Ready);
    let late = ex("repatriation.handover_confirmation").with("fixed_time", "12:00");
    let e = go(
        Some(&c),
        "repatriation.handover_confirmation",
        VN,
        FJ,
        T0 + 8,
        &late,
    )
    .unwrap_err();
    assert!(e.to_string().contains("outside the proposed window"), "{e}");
    let c = go(
        Some(&c),
        "repatriation.handover_confirmation",
        VN,
        FJ,
        T0 + 8,
        &ex("repatriation.handover_confirmation"),
    )
    .unwrap();
    assert_eq!(c.state, State::HandoverScheduled);
    c
}

#[test]
fn repatriation_happy_path() {
    let c = scheduled();
    let c = go(
        Some(&c),
        "repatriation.in_transit",
        FJ,
        FJ,
        T0 + 9,
        &ex("repatriation.in_transit"),
    )
    .unwrap();
    assert_eq!(c.state, State::InTransit);
    let rec = ex("repatriation.handover_record");
    let c = go(
        Some(&c),
        "repatriation.handover_record",
        FJ,
        VN,
        T0 + 10,
        &rec,
    )
    .unwrap();
    assert_eq!(
        (c.state, c.handover_signatures().len()),
        (State::InTransit, 1)
    );
    let c = go(
        Some(&c),
        "repatriation.handover_record",
        VN,
        FJ,
        T0 + 11,
        &rec,
    )
    .unwrap();
    assert_eq!(c.state, State::HandedOver);
    let sigs = c.handover_signatures();
    assert_eq!(sigs.len(), 2);
    assert_ne!(sigs[0].node, sigs[1].node);
    let c = go(
        Some(&c),
        "repatriation.receipt_confirmation",
        VN,
        FJ,
        T0 + 12,
        &ex("repatriation.receipt_confirmation"),
    )
    .unwrap();
    assert_eq!(c.state, State::ReceiptConfirmed);
    let c = go(
        Some(&c),
        "repatriation.follow_up",
        VN,
        FJ,
        T0 + 13,
        &ex("repatriation.follow_up"),
    )
    .unwrap();
    let c = go(
        Some(&c),
        "repatriation.follow_up",
        FJ,
        VN,
        T0 + 14,
        &ex("repatriation.follow_up"),
    )
    .unwrap();
    assert_eq!(c.state, State::ReceiptConfirmed);
    // Only the owner closes.
    let e = go(
        Some(&c),
        "repatriation.close",
        VN,
        FJ,
        T0 + 15,
        &ex("repatriation.close"),
    )
    .unwrap_err();
    assert!(matches!(e, WorkflowError::WrongParty { .. }), "{e}");
    let c = go(
        Some(&c),
        "repatriation.close",
        FJ,
        VN,
        T0 + 15,
        &ex("repatriation.close"),
    )
    .unwrap();
    assert_eq!(c.state, State::Closed);
    // JSON round trip, digests as hex.
    let j = serde_json::to_string(&c).unwrap();
    assert!(
        j.contains(
            &ex("repatriation.handover_record")
                .map("record")
                .unwrap()
                .digest()
                .to_hex()
        )
    );
    assert_eq!(serde_json::from_str::<Case>(&j).unwrap(), c);
}

#[test]
fn repatriation_counterpart_mirror() {
    // The Vietnamese node sees the case first with the nationality request.
    let c = go(
        None,
        "repatriation.nationality_request",
        FJ,
        VN,
        T0,
        &ex("repatriation.nationality_request"),
    )
    .unwrap();
    assert_eq!(
        (c.state, c.counterpart.clone()),
        (State::NationalityPending, Some(n(VN)))
    );
    let c = go(
        Some(&c),
        "repatriation.nationality_answer",
        VN,
        FJ,
        T0 + 1,
        &ex("repatriation.nationality_answer"),
    )
    .unwrap();
    assert_eq!(c.state, State::NationalityConfirmed);
}

#[test]
fn repatriation_handover_signatures() {
    let c = scheduled();
    let rec = ex("repatriation.handover_record");
    // One-sided: stays handover_scheduled.
    let one = go(
        Some(&c),
        "repatriation.handover_record",
        VN,
        FJ,
        T0 + 10,
        &rec,
    )
    .unwrap();
    assert_eq!(one.state, State::HandoverScheduled);
    assert_eq!(one.handover_signatures().len(), 1);
    // Same side twice.
    let e = go(
        Some(&one),
        "repatriation.handover_record",
        VN,
        FJ,
        T0 + 11,
        &rec,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "handover record already signed by vn-laocai-bg: the other side must countersign it"
    );
    // A different record.
    let mut other = rec.map("record").unwrap().clone();
    other.set("discrepancies", "one bag missing");
    let other = Document::new().with("record", other);
    let e = go(
        Some(&one),
        "repatriation.handover_record",
        FJ,
        VN,
        T0 + 11,
        &other,
    )
    .unwrap_err();
    let (a, b) = (
        rec.map("record").unwrap().digest().to_hex(),
        other.map("record").unwrap().digest().to_hex(),
    );
    assert_eq!(
        e.to_string(),
        format!("second signature is over a different handover record ({a} vs {b})")
    );
    // The first side corrects its record before the other side signed: its signature moves
    // to the corrected record, and only that one can be countersigned.
    let corrected = go(
        Some(&one),
        "repatriation.handover_record",
        VN,
        FJ,
        T0 + 12,
        &other,
    )
    .unwrap();
    assert_eq!(corrected.state, State::HandoverScheduled);
    assert_eq!(corrected.handover_signatures().len(), 1);
    assert!(
        go(
            Some(&corrected),
            "repatriation.handover_record",
            FJ,
            VN,
            T0 + 13,
            &rec,
        )
        .is_err()
    );
    let done = go(
        Some(&corrected),
        "repatriation.handover_record",
        FJ,
        VN,
        T0 + 13,
        &other,
    )
    .unwrap();
    assert_eq!(done.state, State::HandedOver);
    // A third node cannot sign.
    let e = go(
        Some(&one),
        "repatriation.handover_record",
        HK,
        FJ,
        T0 + 11,
        &rec,
    )
    .unwrap_err();
    assert!(matches!(e, WorkflowError::WrongParty { .. }), "{e}");
    // Not before the handover is scheduled.
    let c = go(
        None,
        "repatriation.open",
        FJ,
        FJ,
        T0,
        &ex("repatriation.open"),
    )
    .unwrap();
    let e = go(
        Some(&c),
        "repatriation.handover_record",
        FJ,
        FJ,
        T0 + 1,
        &rec,
    )
    .unwrap_err();
    assert!(matches!(e, WorkflowError::WrongParty { .. }), "{e}");
}

#[test]
fn repatriation_consent() {
    let no = ex("repatriation.open").with("consent_notify_origin", false);
    let c = go(None, "repatriation.open", FJ, FJ, T0, &no).unwrap();
    let req_no = ex("repatriation.nationality_request").with("consent_notify_origin", false);
    let e = go(
        Some(&c),
        "repatriation.nationality_request",
        FJ,
        VN,
        T0 + 1,
        &req_no,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "the victim's consent record says the origin country must not be notified"
    );
    // Claiming consent the case does not record.
    let e = go(
        Some(&c),
        "repatriation.nationality_request",
        FJ,
        VN,
        T0 + 1,
        &ex("repatriation.nationality_request"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("consent record"), "{e}");
    // On the receiving side the request's own flag is checked.
    let e = go(
        None,
        "repatriation.nationality_request",
        FJ,
        VN,
        T0 + 1,
        &req_no,
    )
    .unwrap_err();
    assert_eq!(e, WorkflowError::ConsentRefused);
    // A node of the same country may still be asked.
    let ok = go(
        Some(&c),
        "repatriation.nationality_request",
        FJ,
        HK,
        T0 + 1,
        &req_no,
    )
    .unwrap();
    assert_eq!(ok.state, State::NationalityPending);
}

#[test]
fn repatriation_suspend_resume_and_rejection() {
    let c = scheduled();
    let s = go(
        Some(&c),
        "repatriation.suspend",
        FJ,
        VN,
        T0 + 9,
        &ex("repatriation.suspend"),
    )
    .unwrap();
    assert_eq!(s.state, State::SuspendedLegalProceedings);
    let e = go(
        Some(&s),
        "repatriation.suspend",
        FJ,
        VN,
        T0 + 9,
        &ex("repatriation.suspend"),
    )
    .unwrap_err();
    assert!(matches!(e, WorkflowError::IllegalTransition { .. }), "{e}");
    let e = go(
        Some(&s),
        "repatriation.in_transit",
        FJ,
        FJ,
        T0 + 9,
        &ex("repatriation.in_transit"),
    )
    .unwrap_err();
    assert!(matches!(e, WorkflowError::IllegalTransition { .. }), "{e}");
    let r = go(
        Some(&s),
        "repatriation.resume",
        FJ,
        FJ,
        T0 + 10,
        &ex("repatriation.resume"),
    )
    .unwrap();
    assert_eq!(r.state, State::HandoverScheduled);
    let risk = Document::new().with("reason", "safety_risk");
    let s = go(Some(&r), "repatriation.suspend", FJ, FJ, T0 + 11, &risk).unwrap();
    assert_eq!(s.state, State::SuspendedSafetyRisk);
    let bad = Document::new().with("reason", "weather");
    let e = go(Some(&r), "repatriation.suspend", FJ, FJ, T0 + 11, &bad).unwrap_err();
    assert!(matches!(e, WorkflowError::BadValue { .. }), "{e}");

    let c = go(
        None,
        "repatriation.open",
        FJ,
        FJ,
        T0,
        &ex("repatriation.open"),
    )
    .unwrap();
    let c = go(
        Some(&c),
        "repatriation.nationality_request",
        FJ,
        VN,
        T0 + 1,
        &ex("repatriation.nationality_request"),
    )
    .unwrap();
    let no = ex("repatriation.nationality_answer").with("result", "not_national");
    let c = go(
        Some(&c),
        "repatriation.nationality_answer",
        VN,
        FJ,
        T0 + 2,
        &no,
    )
    .unwrap();
    assert_eq!(c.state, State::NationalityRejected);
    let c = go(
        Some(&c),
        "repatriation.close",
        FJ,
        FJ,
        T0 + 3,
        &ex("repatriation.close"),
    )
    .unwrap();
    assert_eq!(c.state, State::Closed);
    // repatriation.open is local.
    let e = go(
        None,
        "repatriation.open",
        FJ,
        VN,
        T0,
        &ex("repatriation.open"),
    )
    .unwrap_err();
    assert!(matches!(e, WorkflowError::Rule { .. }), "{e}");
}

#[test]
fn alert_radius_and_recipients() {
    let h = 3600 * 1000;
    assert_eq!(alert_radius_m(T0, T0), 100_000);
    assert_eq!(alert_radius_m(T0, T0 + h), 100_000);
    assert_eq!(alert_radius_m(T0, T0 + h + 1), 200_000);
    assert_eq!(alert_radius_m(T0, T0 + 3 * h), 300_000);
    assert_eq!(alert_radius_m(T0, T0 + 3 * h + 1), 500_000);
    assert_eq!(alert_radius_m(T0 + 5, T0), 100_000);
    let r = roster();
    let xian = Location {
        lat_e6: 34_341_600,
        lon_e6: 108_939_800,
    };
    // From Xi'an: the registry (same place), nothing else within 500 km.
    assert_eq!(alert_recipients(&r, &n(SX), &xian, 500_000), vec![n(MCA)]);
    // Hekou: Lao Cai (3 km) first, then the wider ring.
    let hekou = r.member(&n(HK)).unwrap().location.unwrap();
    assert_eq!(alert_recipients(&r, &n(HK), &hekou, 100_000), vec![n(VN)]);
    let all = alert_recipients(&r, &n(SX), &xian, 5_000_000);
    assert_eq!(all.first(), Some(&n(MCA)));
    assert_eq!(all.len(), 5);
}

#[test]
fn alert_lifecycle() {
    let issue = ex("alert.issue").with("missing_since", T0 - 90 * MIN);
    let c = go(None, "alert.issue", SX, MCA, T0, &issue).unwrap();
    assert_eq!(c.state, State::Active);
    let (loc, since) = c.alert_origin().unwrap();
    assert_eq!(
        (loc.lat_e6, loc.lon_e6, since),
        (34_376_800, 108_939_400, T0 - 90 * MIN)
    );
    let Detail::Alert(a) = &c.detail else {
        panic!()
    };
    assert_eq!(a.radius_m, 200_000);
    // Widening: the same issuer, later, to another unit.
    let c = go(
        Some(&c),
        "alert.issue",
        SX,
        FJ,
        T0 + 2 * 3600 * 1000,
        &issue,
    )
    .unwrap();
    let Detail::Alert(a) = &c.detail else {
        panic!()
    };
    assert_eq!((a.radius_m, a.recipients.len()), (500_000, 2));
    let upd = ex("alert.update").with(
        "last_seen",
        Document::new()
            .with("place", "Baoji bus station")
            .with("lat_e6", "34361900")
            .with("lon_e6", "107237400"),
    );
    let c = go(Some(&c), "alert.update", SX, MCA, T0 + 3, &upd).unwrap();
    assert_eq!(c.alert_origin().unwrap().0.lon_e6, 107_237_400);
    // Only the issuer updates.
    let e = go(Some(&c), "alert.update", MCA, SX, T0 + 4, &upd).unwrap_err();
    assert!(matches!(e, WorkflowError::WrongParty { .. }), "{e}");
    let bad = Document::new().with("reason", "bored");
    let e = go(Some(&c), "alert.cancel", SX, MCA, T0 + 5, &bad).unwrap_err();
    assert!(e.to_string().contains("found, false_report, other"), "{e}");
    let c = go(
        Some(&c),
        "alert.cancel",
        SX,
        MCA,
        T0 + 5,
        &ex("alert.cancel"),
    )
    .unwrap();
    let c = go(
        Some(&c),
        "alert.cancel",
        SX,
        FJ,
        T0 + 5,
        &ex("alert.cancel"),
    )
    .unwrap();
    assert_eq!(c.state, State::Cancelled);
    let e = go(Some(&c), "alert.update", SX, MCA, T0 + 6, &upd).unwrap_err();
    assert!(matches!(e, WorkflowError::IllegalTransition { .. }), "{e}");
    let e = go(Some(&c), "alert.issue", SX, MCA, T0 + 6, &issue).unwrap_err();
    assert!(matches!(e, WorkflowError::IllegalTransition { .. }), "{e}");
}

#[test]
fn alert_bad_inputs() {
    let mut no_loc = ex("alert.issue");
    no_loc.remove("last_seen");
    let e = go(None, "alert.issue", SX, MCA, T0, &no_loc).unwrap_err();
    assert_eq!(e.to_string(), "alert has no location (last_seen)");
    let no_lat = ex("alert.issue").with(
        "last_seen",
        Document::new().with("place", "x").with("lon_e6", "1"),
    );
    assert_eq!(
        go(None, "alert.issue", SX, MCA, T0, &no_lat).unwrap_err(),
        WorkflowError::NoLocation
    );
    let far = ex("alert.issue").with(
        "last_seen",
        Document::new()
            .with("place", "x")
            .with("lat_e6", "-95000000")
            .with("lon_e6", "1"),
    );
    let e = go(None, "alert.issue", SX, MCA, T0, &far).unwrap_err();
    assert!(e.to_string().contains("last_seen.lat_e6"), "{e}");
    let future = ex("alert.issue").with("missing_since", T0 + 1);
    assert!(go(None, "alert.issue", SX, MCA, T0, &future).is_err());
    // The issuer may file it locally before any unit is within the radius.
    let own = go(None, "alert.issue", SX, SX, T0, &ex("alert.issue")).unwrap();
    let Detail::Alert(a) = &own.detail else {
        panic!()
    };
    assert!(a.recipients.is_empty());
    let own = go(
        Some(&own),
        "alert.issue",
        SX,
        MCA,
        T0 + 1,
        &ex("alert.issue"),
    )
    .unwrap();
    assert_eq!(own.steps, 2);
    // Only public security issues alerts.
    let e = go(None, "alert.issue", MCA, SX, T0, &ex("alert.issue")).unwrap_err();
    assert!(matches!(e, WorkflowError::WrongAgency { .. }), "{e}");
    // Southern hemisphere / west: negative coordinates parse.
    let south = ex("alert.issue").with(
        "last_seen",
        Document::new()
            .with("place", "x")
            .with("lat_e6", "-33868800")
            .with("lon_e6", "-70669300"),
    );
    let c = go(None, "alert.issue", SX, MCA, T0, &south).unwrap();
    assert_eq!(c.alert_origin().unwrap().0.lat_e6, -33_868_800);
}

#[test]
fn supervision_on_both_nodes() {
    let attach = ex("supervision.attach");
    // The owner's assist case.
    let owner = go(None, "assist.request", FJ, SX, T0, &ex("assist.request")).unwrap();
    let owner = go(Some(&owner), "supervision.attach", JMO, FJ, T0 + 1, &attach).unwrap();
    assert_eq!(owner.state, State::Sent);
    assert_eq!(owner.workflow, Workflow::Assist);
    assert_eq!(owner.supervisor.as_ref().unwrap().interval_ms, 7 * DAY_MS);
    // The supervisor's own case.
    let sup = go(None, "supervision.attach", JMO, FJ, T0 + 1, &attach).unwrap();
    assert_eq!(
        (sup.workflow, sup.state),
        (Workflow::Supervision, State::Supervising)
    );
    assert_eq!(sup.deadline, Some(T0 + 1 + 7 * DAY_MS));
    assert!(sup.is_overdue_at(T0 + 8 * DAY_MS));
    // Only a joint-meeting node supervises.
    let e = go(None, "supervision.attach", SX, FJ, T0 + 1, &attach).unwrap_err();
    assert!(matches!(e, WorkflowError::WrongAgency { .. }), "{e}");

    let rep = ex("supervision.report");
    let owner = go(Some(&owner), "supervision.report", FJ, JMO, T0 + 2, &rep).unwrap();
    assert_eq!(owner.state, State::Sent);
    assert_eq!(owner.supervisor.as_ref().unwrap().last_report, Some(T0 + 2));
    let sup = go(Some(&sup), "supervision.report", FJ, JMO, T0 + 2, &rep).unwrap();
    assert_eq!(sup.deadline, Some(T0 + 2 + 7 * DAY_MS));
    // A report to someone else.
    let e = go(Some(&owner), "supervision.report", FJ, SX, T0 + 2, &rep).unwrap_err();
    assert!(matches!(e, WorkflowError::WrongParty { .. }), "{e}");

    let od = ex("supervision.overdue");
    let owner = go(Some(&owner), "supervision.overdue", FJ, JMO, T0 + 3, &od).unwrap();
    let sup = go(Some(&sup), "supervision.overdue", FJ, JMO, T0 + 3, &od).unwrap();
    assert_eq!(sup.state, State::Supervising);
    let close = ex("supervision.close");
    let owner = go(Some(&owner), "supervision.close", JMO, FJ, T0 + 4, &close).unwrap();
    assert!(owner.supervisor.is_none());
    assert_eq!(owner.state, State::Sent);
    let sup = go(Some(&sup), "supervision.close", JMO, FJ, T0 + 4, &close).unwrap();
    assert_eq!(sup.state, State::Closed);
    // Not supervised any more.
    let e = go(Some(&owner), "supervision.report", FJ, JMO, T0 + 5, &rep).unwrap_err();
    assert!(matches!(e, WorkflowError::Rule { .. }), "{e}");
    let e = go(Some(&sup), "supervision.report", FJ, JMO, T0 + 5, &rep).unwrap_err();
    assert!(matches!(e, WorkflowError::IllegalTransition { .. }), "{e}");
}

#[test]
fn supervision_overdue_is_node_signed() {
    let sup = go(
        None,
        "supervision.attach",
        JMO,
        FJ,
        T0,
        &ex("supervision.attach"),
    )
    .unwrap();
    let (from, to) = (n(FJ), n(JMO));
    let doc = ex("supervision.overdue");
    let step = Step {
        case_ref: "c1",
        kind: "supervision.overdue",
        from: &from,
        to: &to,
        at: T0 + 1,
        doc: &doc,
        action: Digest([1; 32]),
        officer: "officer-1",
    };
    assert!(matches!(
        apply(Some(&sup), &step, &roster()),
        Err(WorkflowError::Rule { .. })
    ));
}

#[test]
fn annual_report() {
    let r2026 = ex("report.annual");
    let c = go_ref(
        "report-cn-35-psb-2026",
        None,
        "report.annual",
        FJ,
        JMO,
        T0,
        &r2026,
    )
    .unwrap();
    assert_eq!(c.state, State::Submitted);
    let c = go_ref(
        "report-cn-35-psb-2026",
        Some(&c),
        "report.annual",
        FJ,
        JMO,
        T0 + 1,
        &r2026,
    )
    .unwrap();
    assert_eq!(c.state, State::Submitted);
    let r2031 = r2026.clone().with("year", 2031u64);
    let e = go_ref(
        "report-cn-35-psb-2031",
        None,
        "report.annual",
        FJ,
        JMO,
        T0,
        &r2031,
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "report for a future year 2031 (now 2026)");
    let e = go_ref("annual", None, "report.annual", FJ, JMO, T0, &r2026).unwrap_err();
    assert!(e.to_string().contains("report-cn-35-psb-2026"), "{e}");
    let e = go_ref(
        "report-cn-35-psb-2026",
        None,
        "report.annual",
        FJ,
        SX,
        T0,
        &r2026,
    )
    .unwrap_err();
    assert!(matches!(e, WorkflowError::WrongAgency { .. }), "{e}");
    let odd = r2026
        .clone()
        .with("figures", Document::new().with("checks_sent", "many"));
    let e = go_ref(
        "report-cn-35-psb-2026",
        None,
        "report.annual",
        FJ,
        JMO,
        T0,
        &odd,
    )
    .unwrap_err();
    assert!(e.to_string().contains("figures.checks_sent"), "{e}");
}

#[test]
fn annual_figures_count_the_year() {
    let jan = 1_767_225_600_000; // 2026-01-01
    let mut cases = Vec::new();
    // Sent by Fujian, answered on time.
    let c = go_ref(
        "a1",
        None,
        "assist.request",
        FJ,
        SX,
        jan + DAY_MS,
        &ex("assist.request"),
    )
    .unwrap();
    cases.push(c.clone());
    // Received by Fujian, answered late.
    let c = go_ref(
        "a2",
        None,
        "assist.request",
        SX,
        FJ,
        jan + DAY_MS,
        &ex("assist.request"),
    )
    .unwrap();
    let c = go_ref(
        "a2",
        Some(&c),
        "assist.accept",
        FJ,
        SX,
        jan + 2 * DAY_MS,
        &ex("assist.accept"),
    )
    .unwrap();
    let c = go_ref(
        "a2",
        Some(&c),
        "assist.answer",
        FJ,
        SX,
        jan + 9 * DAY_MS,
        &ex("assist.answer"),
    )
    .unwrap();
    cases.push(c);
    // Received by Fujian, overdue and open.
    let c = go_ref(
        "a3",
        None,
        "assist.request",
        SX,
        FJ,
        jan + 20 * DAY_MS,
        &ex("assist.request"),
    )
    .unwrap();
    cases.push(c);
    // Last year's request does not count as sent this year.
    let c = go_ref(
        "a4",
        None,
        "assist.request",
        FJ,
        SX,
        jan - DAY_MS,
        &ex("assist.request"),
    )
    .unwrap();
    cases.push(c);
    // An alert received.
    let c = go_ref(
        "al",
        None,
        "alert.issue",
        SX,
        FJ,
        jan + DAY_MS,
        &ex("alert.issue"),
    )
    .unwrap();
    cases.push(c);
    let doc = annual_figures(&cases, &n(FJ), 2026, T0).unwrap();
    let f = doc.map("figures").unwrap();
    assert_eq!(doc.uint("year"), Some(2026));
    assert_eq!(f.uint("checks_sent"), Some(1));
    assert_eq!(f.uint("checks_received"), Some(2));
    assert_eq!(f.uint("checks_answered_on_time"), Some(0));
    assert_eq!(f.uint("checks_answered_late"), Some(1));
    assert_eq!(f.uint("checks_overdue_open"), Some(3));
    assert_eq!(f.uint("alerts_received"), Some(1));
    assert_eq!(f.uint("alerts_issued"), Some(0));
    let e = annual_figures(&cases, &n(FJ), 2027, T0).unwrap_err();
    assert_eq!(e.to_string(), "report for a future year 2027 (now 2026)");
    // The figures make a valid report document.
    let c = go_ref(
        "report-cn-35-psb-2026",
        None,
        "report.annual",
        FJ,
        JMO,
        T0,
        &doc,
    )
    .unwrap();
    assert_eq!(c.state, State::Submitted);
}

#[test]
fn permission_grant_and_deny() {
    let req = ex("permission.request");
    let c = go(None, "permission.request", SX, FJ, T0, &req).unwrap();
    assert_eq!(c.state, State::Requested);
    assert_eq!(
        permission_subject(&c),
        Some(("0193a1b2c3d47e5f8a9b0c1d2e3f4a5b", "cn-6101-psb"))
    );
    // An answer names the request it answers by its action digest.
    let answer = |c: &Case, kind: &str| {
        let Detail::Permission(p) = &c.detail else {
            panic!("{c:?}")
        };
        ex(kind).with("request", p.request.clone())
    };
    let other = go(
        Some(&c),
        "permission.grant",
        FJ,
        SX,
        T0 + 1,
        &ex("permission.grant"),
    );
    assert!(
        matches!(&other, Err(WorkflowError::BadValue { field, .. }) if field == "request"),
        "{other:?}"
    );
    let e = go(
        Some(&c),
        "permission.grant",
        SX,
        FJ,
        T0 + 1,
        &answer(&c, "permission.grant"),
    )
    .unwrap_err();
    assert!(matches!(e, WorkflowError::WrongParty { .. }), "{e}");
    let g = go(
        Some(&c),
        "permission.grant",
        FJ,
        SX,
        T0 + 1,
        &answer(&c, "permission.grant"),
    )
    .unwrap();
    assert_eq!(g.state, State::Granted);
    let e = go(
        Some(&g),
        "permission.deny",
        FJ,
        SX,
        T0 + 2,
        &answer(&c, "permission.deny"),
    )
    .unwrap_err();
    assert!(matches!(e, WorkflowError::IllegalTransition { .. }), "{e}");
    let d = go(
        Some(&c),
        "permission.deny",
        FJ,
        SX,
        T0 + 1,
        &answer(&c, "permission.deny"),
    )
    .unwrap();
    assert_eq!(d.state, State::Denied);
    let bad = req.clone().with("message_id", "xyz");
    assert!(go(None, "permission.request", SX, FJ, T0, &bad).is_err());
    let back = req.clone().with("recipient", FJ);
    assert!(go(None, "permission.request", SX, FJ, T0, &back).is_err());
    // Judicial use of an H1 message: no recipient, and not an onward-passing subject.
    let mut judicial = req.clone().with("use", "judicial");
    judicial.remove("recipient");
    let j = go(None, "permission.request", SX, FJ, T0, &judicial).unwrap();
    let Detail::Permission(p) = &j.detail else {
        panic!("{j:?}")
    };
    assert_eq!(p.use_, PermissionUse::Judicial);
    assert_eq!(permission_subject(&j), None);
    let g = go(
        Some(&j),
        "permission.grant",
        FJ,
        SX,
        T0 + 1,
        &answer(&c, "permission.grant"),
    )
    .unwrap();
    assert_eq!(g.state, State::Granted);
    for bad in [
        judicial.clone().with("recipient", "cn-6101-psb"),
        judicial.clone().with("use", "court"),
        judicial.clone().with("use", "onward"),
    ] {
        let e = go(None, "permission.request", SX, FJ, T0, &bad).unwrap_err();
        assert!(matches!(e, WorkflowError::BadValue { .. }), "{e}");
    }
}

#[test]
fn years() {
    assert_eq!(year_of(0), 1970);
    assert_eq!(year_of(951_782_400_000), 2000); // 2000-02-29
    assert_eq!(year_of(T0), 2026);
    assert_eq!(year_of(4_107_542_400_000), 2100); // 2100-03-01
    assert_eq!(year_of(1_767_225_600_000 - 1), 2025);
    assert_eq!(year_of(1_767_225_600_000), 2026);
}

#[test]
fn states_belong_to_workflows() {
    for s in State::ALL {
        assert_eq!(State::parse(s.name()), Some(s));
        assert!(Workflow::ALL.iter().any(|w| w.states().contains(&s)), "{s}");
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            format!("\"{}\"", s.name())
        );
    }
    for w in Workflow::ALL {
        assert!(w.awaiting().iter().all(|s| w.states().contains(s)));
    }
}

#[test]
fn a_supervised_case_past_its_due_date_is_overdue_until_concluded() {
    let owner = go(
        None,
        "assist.request",
        FJ,
        SX,
        T0,
        &request("identity_check", None),
    )
    .unwrap();
    let attach = ex("supervision.attach").with("due", T0 + 10 * MIN);
    let owner = go(Some(&owner), "supervision.attach", JMO, FJ, T0 + 1, &attach).unwrap();
    // The 7-day answer is not late yet, but the case had to be concluded in 10 minutes.
    assert!(mark_overdue(&owner, T0 + 5 * MIN).is_none());
    let late = mark_overdue(&owner, T0 + 11 * MIN).unwrap();
    assert!(late.overdue);
    assert_eq!(late.state, owner.state);
    assert!(clear_overdue(&late, T0 + 12 * MIN).is_none());
    // The supervisor moves the due date: no longer overdue.
    let later = ex("supervision.attach").with("due", T0 + 60 * MIN);
    let moved = go(
        Some(&late),
        "supervision.attach",
        JMO,
        FJ,
        T0 + 12 * MIN,
        &later,
    )
    .unwrap();
    let cleared = clear_overdue(&moved, T0 + 13 * MIN).unwrap();
    assert!(!cleared.overdue);
    // The supervisor's own copy waits for reports, not for the due date.
    let own = go(None, "supervision.attach", JMO, FJ, T0 + 1, &attach).unwrap();
    assert!(!own.is_overdue_at(T0 + 11 * MIN));
}
