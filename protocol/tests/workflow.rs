//! Property tests of the workflow state machines: random step sequences (happy-path steps
//! interleaved with noise: random kinds, wrong directions, third nodes, broken documents,
//! delivery receipts and overdue ticks) keep the invariants after every step.

// Test helpers outside `#[test]` functions, where clippy.toml already allows these.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use liaison_protocol::document::{Document, Field};
use liaison_protocol::workflow::{
    Case, Detail, State, Step, Workflow, WorkflowError, alert_next_widening, alert_radius_m, apply,
    catalog, delivered, example, mark_overdue, spec, year_of,
};
use liaison_protocol::{Digest, NodeId, Roster};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

/// 2026-11-23T00:00:00Z.
const T0: u64 = 1_795_392_000_000;
const HOUR: u64 = 3600 * 1000;
const DAY: u64 = 24 * HOUR;

fn n(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

fn roster() -> Roster {
    liaison_protocol::workflow::testing::demo_roster().unwrap()
}

/// The nodes of one scenario: opener `a`, counterpart `b`, another node `c` (second
/// addressee, referral police), the supervisor `j`, and a third node `x` that is no party.
struct Scenario {
    workflow: Workflow,
    case_ref: &'static str,
    a: NodeId,
    b: NodeId,
    c: NodeId,
    j: NodeId,
    x: NodeId,
}

fn scenario(w: Workflow) -> Scenario {
    let (case_ref, a, b, c, x) = match w {
        Workflow::Assist => (
            "case-1",
            "cn-35-psb",
            "cn-61-psb",
            "cn-6101-mca",
            "cn-5325-hekou",
        ),
        Workflow::Bulletin => (
            "case-1",
            "cn-35-psb",
            "cn-61-psb",
            "cn-5325-hekou",
            "cn-6101-mca",
        ),
        Workflow::Marriage => (
            "case-1",
            "cn-6101-mca",
            "cn-5325-hekou",
            "cn-61-psb",
            "cn-35-psb",
        ),
        Workflow::Repatriation => (
            "case-1",
            "cn-35-psb",
            "vn-laocai-bg",
            "cn-5325-hekou",
            "cn-61-psb",
        ),
        Workflow::Alert => (
            "case-1",
            "cn-61-psb",
            "cn-6101-mca",
            "cn-35-psb",
            "cn-5325-hekou",
        ),
        Workflow::Supervision => (
            "case-1",
            "cn-35-psb",
            "cn-61-psb",
            "cn-6101-mca",
            "cn-5325-hekou",
        ),
        Workflow::Report => (
            "report-cn-35-psb-2026",
            "cn-35-psb",
            "cn-jmo",
            "cn-61-psb",
            "cn-5325-hekou",
        ),
        Workflow::Permission => (
            "case-1",
            "cn-61-psb",
            "cn-35-psb",
            "cn-6101-mca",
            "cn-5325-hekou",
        ),
    };
    Scenario {
        workflow: w,
        case_ref,
        a: n(a),
        b: n(b),
        c: n(c),
        j: n("cn-jmo"),
        x: n(x),
    }
}

#[derive(Clone, Copy)]
enum Who {
    A,
    B,
    C,
    J,
}

impl Scenario {
    fn node(&self, w: Who) -> &NodeId {
        match w {
            Who::A => &self.a,
            Who::B => &self.b,
            Who::C => &self.c,
            Who::J => &self.j,
        }
    }

    /// The happy path: (kind, from, to, document variant).
    fn happy(&self) -> Vec<(&'static str, Who, Who, u8)> {
        use Who::*;
        match self.workflow {
            Workflow::Assist => vec![
                ("assist.request", A, B, 0),
                ("assist.accept", B, A, 0),
                ("assist.clarify", B, A, 0),
                ("assist.clarification", A, B, 0),
                ("assist.custody_notice", B, A, 0),
                ("assist.extend", A, B, 0),
                ("assist.answer", B, A, 0),
                ("assist.close", A, B, 0),
            ],
            Workflow::Bulletin => vec![
                ("bulletin.issue", A, B, 0),
                ("bulletin.issue", A, C, 0),
                ("bulletin.reply", B, A, 0),
                ("bulletin.reply", C, A, 0),
                ("bulletin.close", A, B, 0),
                ("bulletin.close", A, C, 0),
            ],
            Workflow::Marriage => vec![
                ("marriage_check.request", A, B, 0),
                ("marriage_check.answer", B, A, 1),
                ("marriage_check.referral", A, C, 0),
                ("marriage_check.close", A, B, 0),
            ],
            Workflow::Repatriation => vec![
                ("repatriation.open", A, A, 0),
                ("repatriation.nationality_request", A, B, 0),
                ("repatriation.nationality_answer", B, A, 0),
                ("repatriation.request_documents", A, B, 0),
                ("repatriation.travel_document", B, A, 0),
                ("repatriation.handover_proposal", A, B, 0),
                ("repatriation.handover_confirmation", B, A, 0),
                ("repatriation.in_transit", A, A, 0),
                ("repatriation.handover_record", A, B, 0),
                ("repatriation.handover_record", B, A, 0),
                ("repatriation.receipt_confirmation", B, A, 0),
                ("repatriation.follow_up", B, A, 0),
                ("repatriation.close", A, B, 0),
            ],
            Workflow::Alert => vec![
                ("alert.issue", A, B, 0),
                ("alert.issue", A, C, 0),
                ("alert.update", A, B, 0),
                ("alert.cancel", A, B, 0),
                ("alert.cancel", A, C, 0),
            ],
            Workflow::Supervision => vec![
                ("supervision.attach", J, A, 0),
                ("supervision.report", A, J, 0),
                ("supervision.overdue", A, J, 0),
                ("supervision.report", A, J, 0),
                ("supervision.close", J, A, 0),
            ],
            Workflow::Report => vec![("report.annual", A, B, 0), ("report.annual", A, B, 0)],
            Workflow::Permission => vec![
                ("permission.request", A, B, 0),
                ("permission.grant", B, A, 0),
            ],
        }
    }

    /// Who normally sends `kind` to whom.
    fn canonical(&self, kind: &str, variant: u8) -> (Who, Who) {
        use Who::*;
        let second = if variant % 2 == 0 { B } else { C };
        match kind {
            "supervision.attach" | "supervision.close" => (J, A),
            "supervision.report" | "supervision.overdue" => (A, J),
            "repatriation.open" | "repatriation.in_transit" => (A, A),
            "marriage_check.referral" => (A, C),
            "bulletin.issue" | "bulletin.close" | "alert.issue" | "alert.update"
            | "alert.cancel" => (A, second),
            "bulletin.reply" => (second, A),
            "repatriation.handover_record" | "repatriation.follow_up" => {
                if variant % 2 == 0 {
                    (A, B)
                } else {
                    (B, A)
                }
            }
            "assist.accept"
            | "assist.clarify"
            | "assist.answer"
            | "assist.refuse"
            | "assist.custody_notice"
            | "assist.refer"
            | "marriage_check.answer"
            | "repatriation.nationality_answer"
            | "repatriation.travel_document"
            | "repatriation.handover_confirmation"
            | "repatriation.receipt_confirmation"
            | "permission.grant"
            | "permission.deny" => (B, A),
            _ => (A, B),
        }
    }

    /// Kinds the noise draws from: the workflow's own and the supervision kinds.
    fn pool(&self) -> Vec<&'static str> {
        catalog()
            .iter()
            .filter(|k| k.workflow == self.workflow || k.workflow == Workflow::Supervision)
            .map(|k| k.kind)
            .collect()
    }
}

const ACTIONS: [&str; 11] = [
    "identity_check",
    "age_check",
    "criminal_record_check",
    "locate",
    "summons",
    "detain",
    "search",
    "seize",
    "freeze",
    "interview",
    "serve_documents",
];

/// A permission's answer names the request it answers (the digest the case keeps).
fn answering(mut doc: Document, case: Option<&Case>) -> Document {
    if let Some(Detail::Permission(p)) = case.map(|c| &c.detail) {
        if doc.has("request") {
            doc.set("request", p.request.clone());
        }
    }
    doc
}

/// A document for `kind`: valid for small variants, with kind-specific variations and
/// generic breakage (missing required field, unknown field) for large ones.
fn doc_for(kind: &str, v: u8, at: u64) -> Document {
    let mut d = example(kind).unwrap();
    match kind {
        "assist.request" => {
            let action = ACTIONS[usize::from(v) % ACTIONS.len()];
            d.set("action", action);
            if usize::from(v) % ACTIONS.len() >= 3 || v == 11 {
                d.set("deadline", at + (u64::from(v) + 1) * HOUR);
            }
        }
        "assist.extend" => {
            let nd = if v < 6 {
                at + 10 * DAY
            } else {
                at + u64::from(v - 6) * HOUR
            };
            d.set("new_deadline", nd);
        }
        "assist.refuse" if v % 4 == 3 => d.set("reason_code", "too_busy"),
        "assist.custody_notice" => d.set("detained_at", at),
        "marriage_check.request" if v % 4 == 1 => d.set("deadline", at + HOUR / 2),
        "marriage_check.answer" => {
            d.set("record_found", v % 5 != 4);
            d.set("lawful_entry", v % 7 != 6);
            if v % 3 == 1 {
                d.set("flags", vec![Field::from("overstay")]);
            }
            if v == 8 {
                d.set("flags", vec![Field::from("travel_history")]);
            }
        }
        "repatriation.open" | "repatriation.nationality_request" => {
            d.set("consent_notify_origin", v % 5 != 4);
        }
        "repatriation.nationality_answer" => {
            d.set(
                "result",
                ["confirmed", "more_information", "not_national"][usize::from(v) % 3],
            );
        }
        "repatriation.handover_record" if v % 3 == 2 => {
            let mut r = d.map("record").unwrap().clone();
            r.set("discrepancies", "one bag missing");
            d.set("record", r);
        }
        "repatriation.handover_confirmation" if v % 4 == 3 => d.set("fixed_time", "12:00"),
        "repatriation.suspend" if v % 2 == 1 => d.set("reason", "safety_risk"),
        "alert.issue" => {
            d.set(
                "missing_since",
                at.saturating_sub(u64::from(v) * 40 * 60 * 1000),
            );
            if v == 7 {
                d.remove("last_seen");
            }
        }
        "alert.update" if v % 2 == 1 => {
            d.set(
                "last_seen",
                Document::new()
                    .with("place", "Baoji")
                    .with("lat_e6", "34361900")
                    .with("lon_e6", "107237400"),
            );
        }
        "alert.cancel" if v % 5 == 4 => d.set("reason", "bored"),
        "supervision.attach" if v % 2 == 1 => d.set("due", at + 30 * DAY),
        "report.annual" => d.set(
            "year",
            match v % 4 {
                3 => 2031u64,
                2 => 2025,
                _ => 2026,
            },
        ),
        _ => {}
    }
    match v {
        9 => {
            if let Some(f) = spec(kind).and_then(|s| s.fields.iter().find(|f| f.required)) {
                d.remove(f.name);
            }
        }
        10 => d.set("travel_history", vec![Field::from("2025-03-01 Hekou")]),
        _ => {}
    }
    d
}

#[derive(Debug, Clone)]
struct Op {
    /// 0..4 happy step, 4..8 noise step, 8 delivery receipt, 9 overdue tick.
    what: u8,
    kind: usize,
    dir: u8,
    variant: u8,
    dt: u64,
}

fn op() -> impl Strategy<Value = Op> {
    (
        0u8..10,
        any::<usize>(),
        0u8..12,
        0u8..12,
        prop_oneof![0u64..(2 * HOUR), 0u64..(3 * DAY)],
    )
        .prop_map(|(what, kind, dir, variant, dt)| Op {
            what,
            kind,
            dir,
            variant,
            dt,
        })
}

const MINIMISED: [&str; 7] = [
    "record_found",
    "lawful_entry",
    "last_entry_date",
    "last_entry_port",
    "visa_type",
    "authorised_stay_until",
    "flags",
];
const FLAGS: [&str; 5] = [
    "overstay",
    "illegal_entry_suspected",
    "document_lost_stolen",
    "name_birth_date_mismatch",
    "reported_missing_or_victim",
];

fn run(
    w: Workflow,
    ops: &[Op],
    seen: &mut BTreeSet<(Workflow, State)>,
) -> Result<(), TestCaseError> {
    let s = scenario(w);
    let roster = roster();
    let happy = s.happy();
    let pool = s.pool();
    let mut cursor = 0;
    let mut case: Option<Case> = None;
    let mut now = T0;
    let mut seen_accepted = false;
    let mut signed: Vec<(NodeId, Digest)> = Vec::new();
    for op in ops {
        now += op.dt;
        match op.what {
            8 => {
                if let Some(c) = &case {
                    if let Some(d) = delivered(c) {
                        prop_assert_eq!((c.workflow, c.state), (Workflow::Assist, State::Sent));
                        prop_assert_eq!(d.state, State::Received);
                        case = Some(d);
                    }
                }
                continue;
            }
            9 => {
                if let Some(c) = &case {
                    if let Some(d) = mark_overdue(c, now) {
                        prop_assert!(!c.overdue && d.overdue);
                        prop_assert_eq!(d.state, c.state);
                        // The awaited answer is late, or a supervised case is past its due
                        // date.
                        prop_assert!(
                            d.deadline.is_some_and(|dl| now > dl)
                                || d.supervisor
                                    .as_ref()
                                    .and_then(|s| s.due)
                                    .is_some_and(|due| now > due)
                        );
                        case = Some(d);
                    }
                }
                continue;
            }
            _ => {}
        }
        let (kind, from, to, variant) = if op.what < 4 && cursor < happy.len() {
            let (k, f, t, v) = happy[cursor];
            cursor += 1;
            (k, s.node(f).clone(), s.node(t).clone(), v)
        } else {
            let kind = pool[op.kind % pool.len()];
            let (f, t) = s.canonical(kind, op.variant);
            let (f, t) = (s.node(f).clone(), s.node(t).clone());
            let (f, t) = match op.dir {
                0..=6 => (f, t),
                7 => (t, f),
                8 => (s.x.clone(), t),
                9 => (f, s.x.clone()),
                10 => (f.clone(), f),
                _ => (s.x.clone(), f),
            };
            (kind, f, t, op.variant)
        };
        let doc = answering(doc_for(kind, variant, now), case.as_ref());
        let officer = if kind == "supervision.overdue" {
            from.as_str().to_owned()
        } else {
            "officer-7".to_owned()
        };
        let step = Step {
            case_ref: s.case_ref,
            kind,
            from: &from,
            to: &to,
            at: now,
            doc: &doc,
            action: Digest::of(format!("{kind}/{now}/{from}").as_bytes()),
            officer: &officer,
        };
        let before = case.clone();
        let result = apply(case.as_ref(), &step, &roster);
        // Deterministic.
        prop_assert_eq!(&apply(case.as_ref(), &step, &roster), &result);
        let next = match result {
            Err(e) => {
                // A refused step changes nothing and says why.
                prop_assert_eq!(&case, &before);
                prop_assert!(!e.to_string().is_empty());
                if let WorkflowError::UnknownKind(k) = &e {
                    prop_assert!(false, "catalog kind {} unknown", k);
                }
                continue;
            }
            Ok(next) => next,
        };
        // The state belongs to the case's workflow.
        prop_assert!(
            next.workflow.states().contains(&next.state),
            "{} in {}",
            next.state,
            next.workflow
        );
        prop_assert_eq!(next.updated_at, now);
        prop_assert_eq!(next.steps, before.as_ref().map_or(0, |c| c.steps) + 1);
        if let Some(b) = &before {
            prop_assert_eq!(b.workflow, next.workflow);
            prop_assert_eq!(&b.case_ref, &next.case_ref);
            // Closed, cancelled, granted and denied are absorbing.
            if b.state.is_terminal() {
                prop_assert_eq!(b.state, next.state, "{} left {}", kind, b.state);
            }
            // Supervision steps never move a business case.
            if b.workflow != Workflow::Supervision && kind.starts_with("supervision.") {
                prop_assert_eq!(b.state, next.state);
            }
        }
        match next.state {
            State::Accepted => seen_accepted = true,
            State::Answered => prop_assert!(seen_accepted, "answered without being accepted"),
            _ => {}
        }
        // 7-day checks.
        if kind == "assist.request" {
            let action = doc.text("action").unwrap();
            if ["identity_check", "age_check", "criminal_record_check"].contains(&action) {
                prop_assert_eq!(next.deadline, Some(now + 7 * 24 * 3600 * 1000));
            }
        }
        // Marriage answers only ever come from minimised documents.
        if kind == "marriage_check.answer"
            && matches!(
                next.state,
                State::AnsweredMatch | State::AnsweredDiscrepancy
            )
        {
            for (k, _) in doc.iter() {
                prop_assert!(MINIMISED.contains(&k), "field {} accepted", k);
            }
            for f in doc.list("flags").unwrap_or_default() {
                prop_assert!(FLAGS.contains(&f.as_text().unwrap()));
            }
            let want_match = doc.bool("record_found") == Some(true)
                && doc.bool("lawful_entry") == Some(true)
                && doc.list("flags").is_none_or(<[Field]>::is_empty);
            prop_assert_eq!(next.state == State::AnsweredMatch, want_match);
        }
        // Handover: two sides over one record.
        if kind == "repatriation.handover_record" {
            // A side that signs again before the countersignature replaces its signature.
            let digest = doc.map("record").unwrap().digest();
            match signed.iter_mut().find(|(n, _)| n == &from) {
                Some(mine) if signed_len_one(&next) => mine.1 = digest,
                _ => signed.push((from.clone(), digest)),
            }
        }
        let sigs = next.handover_signatures();
        if next.state == State::HandedOver {
            prop_assert_eq!(sigs.len(), 2);
            prop_assert_ne!(&sigs[0].node, &sigs[1].node);
            prop_assert_eq!(signed.len(), 2);
            prop_assert_eq!(signed[0].1, signed[1].1);
            prop_assert_ne!(&signed[0].0, &signed[1].0);
        } else {
            prop_assert!(
                sigs.len() < 2
                    || matches!(
                        next.state,
                        State::ReceiptConfirmed
                            | State::Closed
                            | State::SuspendedLegalProceedings
                            | State::SuspendedSafetyRisk
                    )
            );
        }
        prop_assert!(sigs.len() <= 2);
        // The ticker's index: the case goes overdue exactly from `overdue_from` on, and not
        // before (so a node may leave the case alone until then).
        match next.overdue_from() {
            Some(from) => {
                prop_assert!(!next.is_overdue_at(from - 1));
                prop_assert!(next.is_overdue_at(from));
                prop_assert!(next.is_overdue_at(from.saturating_add(op.dt).saturating_add(DAY)));
            }
            None => {
                for t in [now, now + DAY, now + 400 * DAY] {
                    prop_assert!(
                        !next.is_overdue_at(t),
                        "overdue at {} with no overdue_from",
                        t
                    );
                }
            }
        }
        seen.insert((next.workflow, next.state));
        // Serde round trip.
        let json = serde_json::to_string(&next).unwrap();
        prop_assert_eq!(&serde_json::from_str::<Case>(&json).unwrap(), &next);
        case = Some(next);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn invariants_hold_after_every_step(
        w in prop::sample::select(Workflow::ALL.to_vec()),
        ops in prop::collection::vec(op(), 1..70),
    ) {
        run(w, &ops, &mut BTreeSet::new())?;
    }

    #[test]
    fn alert_radius_is_monotonic(since in 0u64..4_000_000_000_000, a in 0u64..(10 * DAY), b in 0u64..(10 * DAY)) {
        let (lo, hi) = (a.min(b), a.max(b));
        let r1 = alert_radius_m(since, since.saturating_sub(HOUR) + lo);
        let r2 = alert_radius_m(since, since.saturating_sub(HOUR) + hi);
        prop_assert!(r1 <= r2);
        for r in [r1, r2] {
            prop_assert!([100_000, 200_000, 300_000, 500_000].contains(&r));
        }
    }

    #[test]
    fn alert_widens_exactly_at_the_next_widening(since in 0u64..4_000_000_000_000, dt in 0u64..(5 * HOUR)) {
        let now = since + dt;
        let r = alert_radius_m(since, now);
        match alert_next_widening(since, now) {
            Some(t) => {
                prop_assert!(t > now);
                prop_assert_eq!(alert_radius_m(since, t - 1), r);
                prop_assert!(alert_radius_m(since, t) > r);
            }
            None => {
                prop_assert_eq!(r, 500_000);
                prop_assert_eq!(alert_radius_m(since, now + 100 * DAY), r);
            }
        }
    }

    #[test]
    fn year_of_is_monotonic(a in 0u64..10_000_000_000_000, b in 0u64..10_000_000_000_000) {
        let (lo, hi) = (a.min(b), a.max(b));
        prop_assert!(year_of(lo) <= year_of(hi));
        prop_assert!(year_of(hi) - year_of(lo) <= i32::try_from((hi - lo) / (365 * DAY)).unwrap() + 1);
    }
}

#[test]
fn the_happy_paths_reach_their_end() {
    let ends = [
        (Workflow::Assist, State::Closed),
        (Workflow::Bulletin, State::Closed),
        (Workflow::Marriage, State::Closed),
        (Workflow::Repatriation, State::Closed),
        (Workflow::Alert, State::Cancelled),
        (Workflow::Supervision, State::Closed),
        (Workflow::Report, State::Submitted),
        (Workflow::Permission, State::Granted),
    ];
    let roster = roster();
    for (w, end) in ends {
        let s = scenario(w);
        let mut case: Option<Case> = None;
        let mut now = T0;
        for (kind, f, t, v) in s.happy() {
            now += HOUR / 4;
            let doc = answering(doc_for(kind, v, now), case.as_ref());
            let (from, to) = (s.node(f).clone(), s.node(t).clone());
            let officer = if kind == "supervision.overdue" {
                from.to_string()
            } else {
                "officer-1".into()
            };
            let step = Step {
                case_ref: s.case_ref,
                kind,
                from: &from,
                to: &to,
                at: now,
                doc: &doc,
                action: Digest::of(kind.as_bytes()),
                officer: &officer,
            };
            let next =
                apply(case.as_ref(), &step, &roster).unwrap_or_else(|e| panic!("{w}: {kind}: {e}"));
            case = Some(next);
        }
        assert_eq!(case.map(|c| c.state), Some(end), "{w}");
    }
}

#[test]
fn year_of_known_dates() {
    for (ms, year) in [
        (0, 1970),                 // 1970-01-01
        (951_782_400_000, 2000),   // 2000-02-29
        (1_795_392_000_000, 2026), // 2026-11-23
        (4_107_542_400_000, 2100), // 2100-03-01
        (1_767_225_599_999, 2025), // 2025-12-31T23:59:59.999
        (4_102_444_800_000, 2100), // 2100-01-01
    ] {
        assert_eq!(year_of(ms), year, "{ms}");
    }
}

/// The random walks of the property test are not vacuous: from a fixed seed they reach
/// every state of every workflow.
#[test]
fn random_walks_reach_every_state() {
    let mut runner = TestRunner::deterministic();
    let ops = prop::collection::vec(op(), 1..70);
    let mut seen = BTreeSet::new();
    for w in Workflow::ALL {
        for _ in 0..300 {
            let walk = ops.new_tree(&mut runner).unwrap().current();
            run(w, &walk, &mut seen).unwrap();
        }
    }
    for w in Workflow::ALL {
        for s in w.states() {
            assert!(seen.contains(&(w, *s)), "{w}: {s} never reached");
        }
    }
}

/// Whether the case holds exactly one handover signature (a replacement, not a countersign).
fn signed_len_one(case: &Case) -> bool {
    case.handover_signatures().len() == 1
}
