//! D. Missing-child urgent alert: the issuer (`opened_by`, a public-security node) sends
//! one message per unit within the radius, all with the same case reference.

use super::{
    AlertDetail, Case, Detail, HOUR_MS, State, Step, Workflow, WorkflowError, bad, existing,
    exists, expect_state, member, open, opt_text, text, wrong_party,
};
use crate::document::Document;
use crate::ids::NodeId;
use crate::roster::{Location, Roster};

/// Missing-child alert radius in metres for a child missing since `missing_since` at
/// `now`: 100 km within the first hour, 200 km within 2 h, 300 km within 3 h, 500 km after
/// (docs/domain.md §3.D).
pub fn alert_radius_m(missing_since: u64, now: u64) -> u64 {
    let elapsed = now.saturating_sub(missing_since);
    if elapsed <= HOUR_MS {
        100_000
    } else if elapsed <= 2 * HOUR_MS {
        200_000
    } else if elapsed <= 3 * HOUR_MS {
        300_000
    } else {
        500_000
    }
}

/// The next time after `now` at which [`alert_radius_m`] grows for a child missing since
/// `missing_since`; None once the radius is at its largest.
pub fn alert_next_widening(missing_since: u64, now: u64) -> Option<u64> {
    (1..=3u64)
        .map(|h| missing_since.saturating_add(h * HOUR_MS).saturating_add(1))
        .find(|t| *t > now)
}

/// Active members (other than `issuer`) with a location within `radius_m` of `origin`,
/// sorted by distance then id.
pub fn alert_recipients(
    roster: &Roster,
    issuer: &NodeId,
    origin: &Location,
    radius_m: u64,
) -> Vec<NodeId> {
    let mut near: Vec<(u64, &NodeId)> = roster
        .members
        .iter()
        .filter(|m| m.is_active() && &m.id != issuer)
        .filter_map(|m| m.location.map(|l| (l.distance_m(origin), &m.id)))
        .filter(|(d, _)| *d <= radius_m)
        .collect();
    near.sort();
    near.into_iter().map(|(_, id)| id.clone()).collect()
}

/// The last-seen place and location of an alert document's `last_seen` map.
/// Where and since when the child of an `alert.issue` document is missing (the fields the
/// alert's radius is computed from).
pub fn alert_origin_of(doc: &Document) -> Result<(Location, u64), WorkflowError> {
    let (_, loc) = last_seen(doc.map("last_seen").ok_or(WorkflowError::NoLocation)?)?;
    let since = doc
        .uint("missing_since")
        .ok_or_else(|| WorkflowError::MissingField {
            field: "missing_since".into(),
            help: "when the child went missing, Unix ms".into(),
        })?;
    Ok((loc, since))
}

fn last_seen(m: &Document) -> Result<(String, Location), WorkflowError> {
    let coord = |key: &str, limit: i64| -> Result<i64, WorkflowError> {
        let field = format!("last_seen.{key}");
        let s = m.text(key).ok_or(WorkflowError::NoLocation)?;
        let v: i64 = s.parse().map_err(|_| {
            bad(
                &field,
                format!("{} is not a decimal integer", super::catalog::quoted(s)),
            )
        })?;
        if (-limit..=limit).contains(&v) {
            Ok(v)
        } else {
            Err(bad(
                &field,
                format!("{v} is out of range (±{limit} millionths of a degree)"),
            ))
        }
    };
    Ok((
        text(m, "place"),
        Location {
            lat_e6: coord("lat_e6", 90_000_000)?,
            lon_e6: coord("lon_e6", 180_000_000)?,
        },
    ))
}

pub(super) fn apply(
    case: Option<&Case>,
    step: &Step<'_>,
    roster: &Roster,
) -> Result<Case, WorkflowError> {
    let doc = step.doc;
    // `from == to`: the issuer files the alert locally (no unit within the radius yet).
    let local = step.from == step.to;
    if step.kind == "alert.issue" {
        member(
            roster,
            step,
            step.from,
            "the sender",
            Some("public_security"),
        )?;
        let (place, loc) = last_seen(doc.map("last_seen").ok_or(WorkflowError::NoLocation)?)?;
        let since = doc.uint("missing_since").unwrap_or_default();
        if since > step.at {
            return Err(bad(
                "missing_since",
                format!("{since} is after the alert itself ({})", step.at),
            ));
        }
        let radius = alert_radius_m(since, step.at);
        return match case {
            None => Ok(open(
                step,
                Workflow::Alert,
                State::Active,
                None,
                Detail::Alert(AlertDetail {
                    place,
                    lat_e6: loc.lat_e6,
                    lon_e6: loc.lon_e6,
                    missing_since: since,
                    radius_m: radius,
                    recipients: if local { vec![] } else { vec![step.to.clone()] },
                    updates: 0,
                    cancel_reason: None,
                }),
            )),
            // Fan-out and widening: the issuer sends the same alert to more units. Where the
            // child was last seen moves only by updates, so it is not taken from the (older)
            // issue again.
            Some(c) if &c.opened_by == step.from => {
                expect_state(c, step, &[State::Active])?;
                let _ = (place, loc);
                let mut next = c.clone();
                if let Detail::Alert(a) = &mut next.detail {
                    a.radius_m = a.radius_m.max(radius);
                    if !local && !a.recipients.contains(step.to) {
                        a.recipients.push(step.to.clone());
                    }
                }
                Ok(next)
            }
            Some(c) => Err(exists(c, step)),
        };
    }
    let c = existing(case, step, "follows an alert that was never issued")?;
    let Detail::Alert(a) = &c.detail else {
        return Err(super::rule(step, "the case has no alert data"));
    };
    if step.from != &c.opened_by || !(local || a.recipients.contains(step.to)) {
        return Err(wrong_party(
            c,
            step,
            "only the issuer sends it, to the units it alerted",
        ));
    }
    let mut next = c.clone();
    let mut det = a.clone();
    match step.kind {
        "alert.update" => {
            expect_state(c, step, &[State::Active])?;
            if let Some(m) = doc.map("last_seen") {
                let (place, loc) = last_seen(m)?;
                det.place = place;
                det.lat_e6 = loc.lat_e6;
                det.lon_e6 = loc.lon_e6;
            }
            det.updates = det.updates.saturating_add(1);
        }
        "alert.cancel" => {
            // A repeated cancel is the fan-out of the same cancellation.
            expect_state(c, step, &[State::Active, State::Cancelled])?;
            if c.state == State::Active {
                det.cancel_reason = opt_text(doc, "reason");
            }
            next.state = State::Cancelled;
        }
        _ => return Err(WorkflowError::UnknownKind(step.kind.to_owned())),
    }
    next.detail = Detail::Alert(det);
    Ok(next)
}
