//! E'. Annual report (member unit → joint-meeting office) and the figures it carries.

use super::{
    Case, DAY_MS, Detail, ReportDetail, State, Step, Workflow, WorkflowError, bad, exists,
    expect_state, member, not_local, open, rule,
};
use crate::document::{Document, Field};
use crate::ids::NodeId;
use crate::roster::Roster;

/// Calendar year of a Unix ms time (UTC), by the days-from-civil algorithm.
pub fn year_of(ms: u64) -> i32 {
    civil_from_days(i64::try_from(ms / DAY_MS).unwrap_or(i64::MAX / 2)).0
}

/// (year, month, day) of a count of days since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i32, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (
        i32::try_from(y).unwrap_or(i32::MAX),
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

/// Days since 1970-01-01 of 1 January of `year` (for year ≥ 1970).
fn days_to_year(year: i32) -> u64 {
    let y = i64::from(year) - 1;
    let leaps = |y: i64| y / 4 - y / 100 + y / 400;
    let days = 365 * (i64::from(year) - 1970) + leaps(y) - leaps(1969);
    u64::try_from(days).unwrap_or(0)
}

/// A member unit's annual figures for `year` from its cases as seen by node `me`: the
/// document for `report.annual` (`year`, `figures`; the officer may add `submitted_by`).
/// Error if `year` is after the current year.
pub fn annual_figures(
    cases: &[Case],
    me: &NodeId,
    year: i32,
    now: u64,
) -> Result<Document, WorkflowError> {
    let now_year = year_of(now);
    if year > now_year {
        return Err(WorkflowError::FutureYear {
            year: i64::from(year),
            now: now_year,
        });
    }
    if year < 1970 {
        return Err(bad("year", format!("{year} is before the bus existed")));
    }
    let start = days_to_year(year).saturating_mul(DAY_MS);
    let end = days_to_year(year.saturating_add(1))
        .saturating_mul(DAY_MS)
        .saturating_sub(1);
    let cutoff = now.min(end);
    let in_year = |t: u64| (start..=end).contains(&t);
    let opened = |c: &Case| in_year(c.opened_at);
    let mine = |c: &Case| &c.opened_by == me;
    let theirs = |c: &Case| c.counterpart.as_ref() == Some(me);
    let count = |f: &dyn Fn(&Case) -> bool| cases.iter().filter(|c| f(c)).count() as u64;
    let of = |w: Workflow| move |c: &Case| c.workflow == w;
    let assist = of(Workflow::Assist);
    let marriage = of(Workflow::Marriage);

    let answered = |late: bool| {
        count(&|c| match &c.detail {
            Detail::Assist(d) if theirs(c) => {
                d.answered_at.is_some_and(in_year) && d.answered_late == late
            }
            _ => false,
        })
    };
    let referral_case = |c: &Case| match &c.detail {
        Detail::Marriage(d) => d.referred_to.is_some() && d.referred_to == c.counterpart,
        _ => false,
    };
    let figures = Document::new()
        .with("checks_sent", count(&|c| assist(c) && mine(c) && opened(c)))
        .with(
            "checks_received",
            count(&|c| assist(c) && theirs(c) && opened(c)),
        )
        .with("checks_answered_on_time", answered(false))
        .with("checks_answered_late", answered(true))
        .with(
            "checks_overdue_open",
            count(&|c| {
                assist(c) && c.opened_at <= end && (mine(c) || theirs(c)) && c.is_overdue_at(cutoff)
            }),
        )
        .with(
            "bulletins_issued",
            count(&|c| c.workflow == Workflow::Bulletin && mine(c) && opened(c)),
        )
        .with(
            "bulletins_received",
            count(&|c| c.workflow == Workflow::Bulletin && !mine(c) && opened(c)),
        )
        .with(
            "marriage_checks_sent",
            count(&|c| marriage(c) && mine(c) && !referral_case(c) && opened(c)),
        )
        .with(
            "marriage_checks_answered",
            count(&|c| match &c.detail {
                Detail::Marriage(d) => theirs(c) && d.answered_at.is_some_and(in_year),
                _ => false,
            }),
        )
        .with(
            "marriage_referrals_sent",
            count(&|c| match &c.detail {
                Detail::Marriage(d) => mine(c) && d.referred_to.is_some() && in_year(c.updated_at),
                _ => false,
            }),
        )
        .with(
            "marriage_referrals_received",
            count(&|c| marriage(c) && referral_case(c) && theirs(c) && opened(c)),
        )
        .with(
            "repatriation_cases_opened",
            count(&|c| c.workflow == Workflow::Repatriation && mine(c) && opened(c)),
        )
        .with(
            "handoffs_completed",
            count(&|c| match &c.detail {
                Detail::Repatriation(d) => {
                    (mine(c) || theirs(c)) && d.handed_over_at.is_some_and(in_year)
                }
                _ => false,
            }),
        )
        .with(
            "alerts_issued",
            count(&|c| c.workflow == Workflow::Alert && mine(c) && opened(c)),
        )
        .with(
            "alerts_received",
            count(&|c| c.workflow == Workflow::Alert && !mine(c) && opened(c)),
        )
        .with(
            "cases_under_supervision",
            count(&|c| {
                c.workflow != Workflow::Supervision
                    && c.supervisor.is_some()
                    && c.opened_at <= end
                    && (!c.state.is_terminal() || c.updated_at >= start)
            }),
        )
        .with(
            "supervisions",
            count(&|c| {
                c.workflow == Workflow::Supervision
                    && mine(c)
                    && c.opened_at <= end
                    && (!c.state.is_terminal() || c.updated_at >= start)
            }),
        );
    Ok(Document::new()
        .with("year", u64::try_from(year).unwrap_or_default())
        .with("figures", figures))
}

pub(super) fn apply(
    case: Option<&Case>,
    step: &Step<'_>,
    roster: &Roster,
) -> Result<Case, WorkflowError> {
    let doc = step.doc;
    not_local(step)?;
    let year = doc.uint("year").unwrap_or_default();
    let now = year_of(step.at);
    if i64::try_from(year).map_or(true, |y| y > i64::from(now)) {
        return Err(WorkflowError::FutureYear {
            year: i64::try_from(year).unwrap_or(i64::MAX),
            now,
        });
    }
    let expected_ref = format!("report-{}-{year}", step.from);
    if step.case_ref != expected_ref {
        return Err(rule(
            step,
            format!(
                "an annual report's case reference is {expected_ref}, not {}",
                step.case_ref
            ),
        ));
    }
    if let Some(figures) = doc.map("figures") {
        if let Some((k, _)) = figures.iter().find(|(_, v)| !matches!(v, Field::Uint(_))) {
            return Err(bad(
                &format!("figures.{k}"),
                "figures are unsigned integers",
            ));
        }
    }
    member(
        roster,
        step,
        step.to,
        "the recipient",
        Some("joint_meeting"),
    )?;
    match case {
        None => Ok(open(
            step,
            Workflow::Report,
            State::Submitted,
            Some(step.to.clone()),
            Detail::Report(ReportDetail {
                year,
                submissions: 1,
            }),
        )),
        // A corrected report replaces the previous one.
        Some(c) if &c.opened_by == step.from && c.counterpart.as_ref() == Some(step.to) => {
            expect_state(c, step, &[State::Submitted])?;
            let mut next = c.clone();
            if let Detail::Report(d) = &mut next.detail {
                d.submissions = d.submissions.saturating_add(1);
            }
            Ok(next)
        }
        Some(c) => Err(exists(c, step)),
    }
}
