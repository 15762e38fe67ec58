//! C. Repatriation handoff: case owner (`opened_by`, who repatriates) and foreign
//! counterpart (`counterpart`, set by the nationality request).

use super::{
    Case, Detail, HandoverProposal, HandoverSignature, RepatriationDetail, State, Step, Workflow,
    WorkflowError, bad, counterpart, direction, existing, exists, expect_state, fresh, hhmm,
    member, not_local, open, opt_text, rule, text, wrong_party,
};
use crate::document::Document;
use crate::ids::{Digest, NodeId};
use crate::roster::Roster;
use State::{
    Closed, DocumentsPending, HandedOver, HandoverScheduled, Identified, InTransit,
    NationalityConfirmed, NationalityPending, NationalityRejected, Ready, ReceiptConfirmed,
    SuspendedLegalProceedings, SuspendedSafetyRisk,
};

const SUSPENDABLE: &[State] = &[
    Identified,
    NationalityPending,
    NationalityConfirmed,
    NationalityRejected,
    DocumentsPending,
    Ready,
    HandoverScheduled,
    InTransit,
    HandedOver,
    ReceiptConfirmed,
];

pub(super) fn apply(
    case: Option<&Case>,
    step: &Step<'_>,
    roster: &Roster,
) -> Result<Case, WorkflowError> {
    let doc = step.doc;
    match step.kind {
        "repatriation.open" => {
            fresh(case, step)?;
            let victim = doc.map("victim").cloned().unwrap_or_default();
            return Ok(open(
                step,
                Workflow::Repatriation,
                Identified,
                None,
                Detail::Repatriation(RepatriationDetail {
                    nationality: text(&victim, "nationality"),
                    minor: victim.bool("minor").unwrap_or(false),
                    consent_notify_origin: doc.bool("consent_notify_origin").unwrap_or(false),
                    consent_recorded_by: opt_text(doc, "consent_recorded_by"),
                    ..RepatriationDetail::default()
                }),
            ));
        }
        "repatriation.nationality_request" => {
            not_local(step)?;
            let consent = doc.bool("consent_notify_origin").unwrap_or(false);
            let nationality = doc
                .map("person")
                .map(|p| text(p, "nationality"))
                .unwrap_or_default();
            let Some(c) = case else {
                // The counterpart's mirror of the case starts here.
                check_consent(roster, step, step.from, consent)?;
                return Ok(open(
                    step,
                    Workflow::Repatriation,
                    NationalityPending,
                    Some(step.to.clone()),
                    Detail::Repatriation(RepatriationDetail {
                        nationality,
                        consent_notify_origin: consent,
                        ..RepatriationDetail::default()
                    }),
                ));
            };
            if step.from != &c.opened_by {
                return Err(wrong_party(
                    c,
                    step,
                    "only the case owner asks for verification",
                ));
            }
            if c.counterpart.as_ref().is_some_and(|cp| cp != step.to) {
                return Err(wrong_party(
                    c,
                    step,
                    "the verification continues with the same counterpart",
                ));
            }
            expect_state(c, step, &[Identified, NationalityPending])?;
            let Detail::Repatriation(d) = &c.detail else {
                return Err(exists(c, step));
            };
            if consent != d.consent_notify_origin {
                return Err(bad(
                    "consent_notify_origin",
                    format!(
                        "{consent} differs from the case's consent record ({})",
                        d.consent_notify_origin
                    ),
                ));
            }
            check_consent(roster, step, &c.opened_by, d.consent_notify_origin)?;
            let mut next = c.clone();
            next.state = NationalityPending;
            next.counterpart = Some(step.to.clone());
            return Ok(next);
        }
        _ => {}
    }
    let c = existing(
        case,
        step,
        "follows a repatriation case that was never opened",
    )?;
    let Detail::Repatriation(d) = &c.detail else {
        return Err(rule(step, "the case has no repatriation data"));
    };
    let owner = &c.opened_by;
    let mut next = c.clone();
    let mut det = d.clone();
    match step.kind {
        "repatriation.nationality_answer" => {
            let cp = counterpart(c, step)?;
            direction(
                c,
                step,
                cp,
                owner,
                "only the counterpart answers, to the case owner",
            )?;
            expect_state(c, step, &[NationalityPending])?;
            match doc.text("result") {
                Some("confirmed") => {
                    next.state = NationalityConfirmed;
                    det.nationality_reference = opt_text(doc, "reference");
                }
                Some("not_national") => next.state = NationalityRejected,
                _ => next.state = NationalityPending,
            }
        }
        "repatriation.request_documents" => {
            let cp = counterpart(c, step)?;
            direction(
                c,
                step,
                owner,
                cp,
                "only the case owner asks, to the counterpart",
            )?;
            expect_state(c, step, &[NationalityConfirmed])?;
            next.state = DocumentsPending;
        }
        "repatriation.travel_document" => {
            let cp = counterpart(c, step)?;
            direction(
                c,
                step,
                cp,
                owner,
                "only the counterpart issues it, to the case owner",
            )?;
            expect_state(c, step, &[NationalityConfirmed, DocumentsPending])?;
            let issued = doc.text("issued_at").unwrap_or_default();
            let until = doc.text("valid_until").unwrap_or_default();
            if until < issued {
                return Err(bad(
                    "valid_until",
                    format!("{until} is before the date of issue {issued}"),
                ));
            }
            next.state = Ready;
            det.travel_document_no = opt_text(doc, "document_no");
        }
        "repatriation.handover_proposal" => {
            let cp = counterpart(c, step)?;
            direction(
                c,
                step,
                owner,
                cp,
                "only the case owner proposes, to the counterpart",
            )?;
            expect_state(c, step, &[Ready])?;
            let from = hhmm("window_from", doc.text("window_from").unwrap_or_default())?;
            let to = hhmm("window_to", doc.text("window_to").unwrap_or_default())?;
            if to <= from {
                return Err(bad("window_to", "the window ends before it starts"));
            }
            det.proposal = Some(HandoverProposal {
                port: text(doc, "port"),
                date: text(doc, "date"),
                window_from: text(doc, "window_from"),
                window_to: text(doc, "window_to"),
                persons: u32::try_from(doc.list("persons").map_or(0, <[_]>::len))
                    .unwrap_or(u32::MAX),
            });
            det.fixed_time = None;
        }
        "repatriation.handover_confirmation" => {
            let cp = counterpart(c, step)?;
            direction(
                c,
                step,
                cp,
                owner,
                "only the counterpart confirms, to the case owner",
            )?;
            expect_state(c, step, &[Ready])?;
            let Some(p) = &d.proposal else {
                return Err(rule(step, "there is no handover proposal to confirm"));
            };
            if doc.bool("persons_verified") != Some(true) {
                return Err(bad(
                    "persons_verified",
                    "the counterpart confirms only after pre-verifying the persons",
                ));
            }
            let fixed = doc.text("fixed_time").unwrap_or_default();
            let t = hhmm("fixed_time", fixed)?;
            let lo = hhmm("window_from", &p.window_from)?;
            let hi = hhmm("window_to", &p.window_to)?;
            if !(lo..=hi).contains(&t) {
                return Err(bad(
                    "fixed_time",
                    format!(
                        "{fixed} is outside the proposed window {}-{}",
                        p.window_from, p.window_to
                    ),
                ));
            }
            next.state = HandoverScheduled;
            det.fixed_time = Some(fixed.to_owned());
        }
        "repatriation.in_transit" => {
            let cp = counterpart(c, step)?;
            if step.from != owner || (step.to != owner && step.to != cp) {
                return Err(wrong_party(
                    c,
                    step,
                    "only the case owner reports it (locally or to the counterpart)",
                ));
            }
            expect_state(c, step, &[HandoverScheduled])?;
            next.state = InTransit;
        }
        "repatriation.handover_record" => {
            let cp = counterpart(c, step)?;
            let ok = (step.from == owner && step.to == cp) || (step.from == cp && step.to == owner);
            if !ok {
                return Err(wrong_party(
                    c,
                    step,
                    "each side signs the record and sends it to the other",
                ));
            }
            expect_state(c, step, &[HandoverScheduled, InTransit])?;
            let digest = doc.map("record").map_or(Digest([0; 32]), Document::digest);
            let sig = HandoverSignature {
                node: step.from.clone(),
                officer: step.officer.to_owned(),
                action: step.action,
                at: step.at,
            };
            match (det.signatures.first(), det.record) {
                (None, _) => {
                    det.record = Some(digest);
                    det.signatures.push(sig);
                }
                // A side that signed a record the other side has not countersigned may
                // replace it with a corrected one (otherwise two different records would
                // leave the case stuck); signing the same record twice is refused.
                (Some(first), Some(record)) if &first.node == step.from && record != digest => {
                    det.record = Some(digest);
                    det.signatures = vec![sig];
                }
                (Some(first), _) if &first.node == step.from => {
                    return Err(WorkflowError::HandoverSameSide(first.node.to_string()));
                }
                (Some(_), Some(record)) if record != digest => {
                    return Err(WorkflowError::HandoverMismatch {
                        first: record.to_hex(),
                        second: digest.to_hex(),
                    });
                }
                (Some(_), _) => {
                    det.signatures.push(sig);
                    det.handed_over_at = Some(step.at);
                    next.state = HandedOver;
                }
            }
        }
        "repatriation.receipt_confirmation" => {
            let cp = counterpart(c, step)?;
            direction(
                c,
                step,
                cp,
                owner,
                "only the receiving side confirms, to the case owner",
            )?;
            expect_state(c, step, &[HandedOver])?;
            next.state = ReceiptConfirmed;
            det.return_certificate_no = opt_text(doc, "return_certificate_no");
        }
        "repatriation.follow_up" => {
            let cp = counterpart(c, step)?;
            let ok = (step.from == owner && step.to == cp) || (step.from == cp && step.to == owner);
            if !ok {
                return Err(wrong_party(c, step, "either side, to the other"));
            }
            expect_state(c, step, &[ReceiptConfirmed])?;
            det.follow_ups = det.follow_ups.saturating_add(1);
        }
        "repatriation.suspend" | "repatriation.resume" | "repatriation.close" => {
            let to_ok = step.to == owner || c.counterpart.as_ref() == Some(step.to);
            if step.from != owner || !to_ok {
                return Err(wrong_party(
                    c,
                    step,
                    "only the case owner decides it (locally or towards the counterpart)",
                ));
            }
            match step.kind {
                "repatriation.suspend" => {
                    expect_state(c, step, SUSPENDABLE)?;
                    next.state = if doc.text("reason") == Some("safety_risk") {
                        SuspendedSafetyRisk
                    } else {
                        SuspendedLegalProceedings
                    };
                    det.suspended_from = Some(c.state);
                }
                "repatriation.resume" => {
                    expect_state(c, step, &[SuspendedLegalProceedings, SuspendedSafetyRisk])?;
                    let Some(prev) = det.suspended_from.take() else {
                        return Err(rule(
                            step,
                            "the case does not remember its state before the suspension",
                        ));
                    };
                    next.state = prev;
                }
                _ => {
                    expect_state(c, step, &[ReceiptConfirmed, NationalityRejected])?;
                    next.state = Closed;
                }
            }
        }
        _ => return Err(WorkflowError::UnknownKind(step.kind.to_owned())),
    }
    next.detail = Detail::Repatriation(det);
    Ok(next)
}

/// The consent rule: without the victim's consent, nothing goes to a node of another
/// country than the case owner's.
fn check_consent(
    roster: &Roster,
    step: &Step<'_>,
    owner: &NodeId,
    consent: bool,
) -> Result<(), WorkflowError> {
    if consent {
        return Ok(());
    }
    let own = member(roster, step, owner, "the sender", None)?;
    let to = member(roster, step, step.to, "the recipient", None)?;
    if own.country == to.country {
        Ok(())
    } else {
        Err(WorkflowError::ConsentRefused)
    }
}
