//! A case as the state machine keeps it: state, parties, deadline and workflow detail.

use crate::ids::{Digest, NodeId};
use crate::roster::Location;

use super::catalog::Workflow;

/// The state of a case (one enum for all workflows; [`Workflow::states`] lists each
/// workflow's own).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Assist: request sent, no delivery receipt yet.
    Sent,
    /// Assist: request delivered to the assisting bureau.
    Received,
    /// Assist: accepted, a department is assigned.
    Accepted,
    /// Assist: the assisting bureau asked a question.
    Clarification,
    /// Assist: answered.
    Answered,
    /// Assist: refused because the papers are incomplete.
    RefusedIncomplete,
    /// Assist: referred to the competent bureau. Marriage: referred to the police.
    Referred,
    /// Closed (assist, bulletin, marriage, repatriation, supervision).
    Closed,
    /// Bulletin: published.
    Published,
    /// Marriage check: submitted. Report: submitted.
    Submitted,
    /// Marriage check: record found, lawful entry, no flags.
    AnsweredMatch,
    /// Marriage check: anything else.
    AnsweredDiscrepancy,
    /// Repatriation: victim identified, consent recorded.
    Identified,
    /// Repatriation: nationality verification asked.
    NationalityPending,
    /// Repatriation: nationality confirmed.
    NationalityConfirmed,
    /// Repatriation: not a national.
    NationalityRejected,
    /// Repatriation: travel documents asked.
    DocumentsPending,
    /// Repatriation: travel document issued; handover can be proposed.
    Ready,
    /// Repatriation: handover time confirmed by the counterpart.
    HandoverScheduled,
    /// Repatriation: on the way to the port.
    InTransit,
    /// Repatriation: both sides signed the same handover record.
    HandedOver,
    /// Repatriation: receiving side confirmed receipt.
    ReceiptConfirmed,
    /// Repatriation: suspended for legal proceedings.
    SuspendedLegalProceedings,
    /// Repatriation: suspended for a safety risk.
    SuspendedSafetyRisk,
    /// Alert: active.
    Active,
    /// Alert: cancelled.
    Cancelled,
    /// Supervision (on the supervisor's node): under supervision.
    Supervising,
    /// Permission: asked.
    Requested,
    /// Permission: granted.
    Granted,
    /// Permission: denied.
    Denied,
}

impl State {
    /// Every state.
    pub const ALL: [Self; 30] = [
        Self::Sent,
        Self::Received,
        Self::Accepted,
        Self::Clarification,
        Self::Answered,
        Self::RefusedIncomplete,
        Self::Referred,
        Self::Closed,
        Self::Published,
        Self::Submitted,
        Self::AnsweredMatch,
        Self::AnsweredDiscrepancy,
        Self::Identified,
        Self::NationalityPending,
        Self::NationalityConfirmed,
        Self::NationalityRejected,
        Self::DocumentsPending,
        Self::Ready,
        Self::HandoverScheduled,
        Self::InTransit,
        Self::HandedOver,
        Self::ReceiptConfirmed,
        Self::SuspendedLegalProceedings,
        Self::SuspendedSafetyRisk,
        Self::Active,
        Self::Cancelled,
        Self::Supervising,
        Self::Requested,
        Self::Granted,
        Self::Denied,
    ];

    /// The snake_case name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Received => "received",
            Self::Accepted => "accepted",
            Self::Clarification => "clarification",
            Self::Answered => "answered",
            Self::RefusedIncomplete => "refused_incomplete",
            Self::Referred => "referred",
            Self::Closed => "closed",
            Self::Published => "published",
            Self::Submitted => "submitted",
            Self::AnsweredMatch => "answered_match",
            Self::AnsweredDiscrepancy => "answered_discrepancy",
            Self::Identified => "identified",
            Self::NationalityPending => "nationality_pending",
            Self::NationalityConfirmed => "nationality_confirmed",
            Self::NationalityRejected => "nationality_rejected",
            Self::DocumentsPending => "documents_pending",
            Self::Ready => "ready",
            Self::HandoverScheduled => "handover_scheduled",
            Self::InTransit => "in_transit",
            Self::HandedOver => "handed_over",
            Self::ReceiptConfirmed => "receipt_confirmed",
            Self::SuspendedLegalProceedings => "suspended_legal_proceedings",
            Self::SuspendedSafetyRisk => "suspended_safety_risk",
            Self::Active => "active",
            Self::Cancelled => "cancelled",
            Self::Supervising => "supervising",
            Self::Requested => "requested",
            Self::Granted => "granted",
            Self::Denied => "denied",
        }
    }

    /// Parses the snake_case name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.name() == s)
    }

    /// Whether no further workflow step is accepted: closed, cancelled, granted, denied.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Closed | Self::Cancelled | Self::Granted | Self::Denied
        )
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Workflow {
    /// The states a case of this workflow can be in.
    pub fn states(self) -> &'static [State] {
        use State::*;
        match self {
            Self::Assist => &[
                Sent,
                Received,
                Accepted,
                Clarification,
                Answered,
                RefusedIncomplete,
                Referred,
                Closed,
            ],
            Self::Bulletin => &[Published, Closed],
            Self::Marriage => &[
                Submitted,
                AnsweredMatch,
                AnsweredDiscrepancy,
                Referred,
                Closed,
            ],
            Self::Repatriation => &[
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
                SuspendedLegalProceedings,
                SuspendedSafetyRisk,
                Closed,
            ],
            Self::Alert => &[Active, Cancelled],
            Self::Supervision => &[Supervising, Closed],
            Self::Report => &[Submitted],
            Self::Permission => &[Requested, Granted, Denied],
        }
    }

    /// The states in which the case waits for an answer with a deadline (overdue applies).
    pub fn awaiting(self) -> &'static [State] {
        use State::*;
        match self {
            Self::Assist => &[Sent, Received, Accepted, Clarification],
            Self::Marriage => &[Submitted],
            Self::Supervision => &[Supervising],
            _ => &[],
        }
    }
}

/// Listed supervision attached to a case.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Supervision {
    /// The supervising node (joint-meeting office).
    pub node: NodeId,
    /// Reporting interval, ms.
    pub interval_ms: u64,
    /// Date the case must be concluded, Unix ms.
    pub due: Option<u64>,
    /// Time of the last progress report.
    pub last_report: Option<u64>,
}

/// One side's signature of the handover record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HandoverSignature {
    /// The signing side's node.
    pub node: NodeId,
    /// The signing officer.
    pub officer: String,
    /// Digest of the officer-signed action carrying the signature.
    #[serde(with = "hex_digest")]
    pub action: Digest,
    /// When it was signed, Unix ms.
    pub at: u64,
}

/// A case: what both parties' nodes know about it after the same steps.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Case {
    /// Case reference.
    pub case_ref: String,
    /// Workflow.
    pub workflow: Workflow,
    /// Current state.
    pub state: State,
    /// Node that opened the case (requester, case owner, alert issuer, supervisor …).
    pub opened_by: NodeId,
    /// The other party of a two-party workflow.
    pub counterpart: Option<NodeId>,
    /// When the case was opened, Unix ms.
    pub opened_at: u64,
    /// Time of the last step applied, Unix ms.
    pub updated_at: u64,
    /// When the awaited answer is due, Unix ms.
    pub deadline: Option<u64>,
    /// Marked overdue (deadline passed while waiting); cleared when the wait ends.
    pub overdue: bool,
    /// Listed supervision of this case (on the supervised node) or the supervision itself
    /// (on the supervisor's node).
    pub supervisor: Option<Supervision>,
    /// Number of steps applied.
    pub steps: u32,
    /// Workflow-specific data.
    pub detail: Detail,
}

impl Case {
    /// The handover signatures collected (empty unless repatriation).
    pub fn handover_signatures(&self) -> &[HandoverSignature] {
        match &self.detail {
            Detail::Repatriation(r) => &r.signatures,
            _ => &[],
        }
    }

    /// Whether the deadline passed at `now` while the case still waits for the answer.
    pub fn is_overdue_at(&self, now: u64) -> bool {
        let waiting = self.deadline.is_some_and(|d| now > d)
            && self.workflow.awaiting().contains(&self.state);
        // A supervised case must be concluded by the supervision's due date.
        let past_due = self
            .supervisor
            .as_ref()
            .and_then(|s| s.due)
            .is_some_and(|d| now > d)
            && !self.state.is_terminal()
            // The supervisor's own case waits for reports, not for the due date.
            && self.workflow != Workflow::Supervision;
        waiting || past_due
    }

    /// The first time at which [`Self::is_overdue_at`] holds, if the case as it stands can go
    /// overdue at all (a deadline while it waits, or a supervision's due date before it ends).
    /// Once it holds it keeps holding until the case changes, so a ticker need not look at the
    /// case before then.
    pub fn overdue_from(&self) -> Option<u64> {
        let waiting = self
            .deadline
            .filter(|_| self.workflow.awaiting().contains(&self.state))
            .map(|d| d.saturating_add(1));
        let due = self
            .supervisor
            .as_ref()
            .and_then(|s| s.due)
            .filter(|_| !self.state.is_terminal() && self.workflow != Workflow::Supervision)
            .map(|d| d.saturating_add(1));
        match (waiting, due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Where and since when the child of an alert is missing (alerts only).
    pub fn alert_origin(&self) -> Option<(Location, u64)> {
        match &self.detail {
            Detail::Alert(a) => Some((
                Location {
                    lat_e6: a.lat_e6,
                    lon_e6: a.lon_e6,
                },
                a.missing_since,
            )),
            _ => None,
        }
    }

    /// The two parties, as `a and b` text (for errors).
    pub(crate) fn parties(&self) -> String {
        match (&self.counterpart, self.workflow) {
            (Some(c), _) => format!("{} and {c}", self.opened_by),
            (None, Workflow::Bulletin | Workflow::Alert) => {
                format!("issuer {} and its recipients", self.opened_by)
            }
            (None, _) => format!("{} (no counterpart yet)", self.opened_by),
        }
    }

    /// Whether `n` is one of the case's parties.
    pub(crate) fn is_party(&self, n: &NodeId) -> bool {
        &self.opened_by == n || self.counterpart.as_ref() == Some(n)
    }
}

/// Workflow-specific data of a case.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detail {
    /// Assistance check.
    Assist(AssistDetail),
    /// Assistance bulletin.
    Bulletin(BulletinDetail),
    /// Foreign-marriage check.
    Marriage(MarriageDetail),
    /// Repatriation.
    Repatriation(RepatriationDetail),
    /// Missing-child alert.
    Alert(AlertDetail),
    /// Supervision (the supervisor's case).
    Supervision(SupervisionDetail),
    /// Annual report.
    Report(ReportDetail),
    /// Onward-passing permission.
    Permission(PermissionDetail),
}

/// Assistance check data.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AssistDetail {
    /// Assistance letter number.
    pub request_no: String,
    /// Requesting bureau's case number.
    pub case_no: String,
    /// Requested action (`identity_check`, `detain` …).
    pub action: String,
    /// When the assisting bureau accepted.
    pub accepted_at: Option<u64>,
    /// Department named by the assisting bureau.
    pub assigned_department: Option<String>,
    /// Officer named by the assisting bureau.
    pub assigned_officer: Option<String>,
    /// Questions asked.
    pub clarifications: u32,
    /// Deadline extensions granted.
    pub extensions: u32,
    /// When the requester was told of an arrest.
    pub custody_notified_at: Option<u64>,
    /// When the answer was given.
    pub answered_at: Option<u64>,
    /// Whether the answer came after the deadline.
    pub answered_late: bool,
    /// Missing papers named by a refusal.
    pub missing: Vec<String>,
    /// Bureau the request was referred to.
    pub referred_to: Option<String>,
}

/// Assistance bulletin data.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BulletinDetail {
    /// Bulletin serial number.
    pub serial_no: String,
    /// Nodes the bulletin was sent to (on an addressee's node: itself).
    pub recipients: Vec<NodeId>,
    /// Replies received.
    pub replies: u32,
}

/// Foreign-marriage check data (only the minimised answer is kept).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MarriageDetail {
    /// Registry's request number.
    pub request_no: Option<String>,
    /// Answer: record found.
    pub record_found: Option<bool>,
    /// Answer: lawful entry.
    pub lawful_entry: Option<bool>,
    /// Answer: flags.
    pub flags: Vec<String>,
    /// When the answer was given.
    pub answered_at: Option<u64>,
    /// Police node the registry referred the case to.
    pub referred_to: Option<NodeId>,
    /// Referral reason codes.
    pub reason_codes: Vec<String>,
}

/// A proposed handover.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HandoverProposal {
    /// Border port.
    pub port: String,
    /// Date `YYYY-MM-DD`.
    pub date: String,
    /// Window start `HH:MM`.
    pub window_from: String,
    /// Window end `HH:MM`.
    pub window_to: String,
    /// Number of persons.
    pub persons: u32,
}

/// Repatriation data (identity stays in the documents; the case keeps what the rules use).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RepatriationDetail {
    /// Claimed nationality of the victim (ISO alpha-3).
    pub nationality: String,
    /// Whether the victim is a minor (unknown on the counterpart's side: false).
    pub minor: bool,
    /// The victim agrees that the origin country is notified.
    pub consent_notify_origin: bool,
    /// Officer who recorded the consent (owner's side only).
    pub consent_recorded_by: Option<String>,
    /// Nationality confirmation reference.
    pub nationality_reference: Option<String>,
    /// Travel document number.
    pub travel_document_no: Option<String>,
    /// The handover proposal.
    pub proposal: Option<HandoverProposal>,
    /// Handover time fixed by the counterpart.
    pub fixed_time: Option<String>,
    /// Digest of the handover record being signed.
    #[serde(with = "opt_hex_digest")]
    pub record: Option<Digest>,
    /// Signatures of the handover record (at most one per side).
    pub signatures: Vec<HandoverSignature>,
    /// When the second side signed.
    pub handed_over_at: Option<u64>,
    /// Return certificate number.
    pub return_certificate_no: Option<String>,
    /// Follow-up reports.
    pub follow_ups: u32,
    /// State before a suspension.
    pub suspended_from: Option<State>,
}

/// Missing-child alert data.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AlertDetail {
    /// Last-seen place.
    pub place: String,
    /// Last-seen latitude × 10⁶.
    pub lat_e6: i64,
    /// Last-seen longitude × 10⁶.
    pub lon_e6: i64,
    /// When the child went missing, Unix ms.
    pub missing_since: u64,
    /// Largest radius reached by the issues applied, m.
    pub radius_m: u64,
    /// Units the alert was sent to (on a recipient's node: itself).
    pub recipients: Vec<NodeId>,
    /// Updates applied.
    pub updates: u32,
    /// Cancellation reason.
    pub cancel_reason: Option<String>,
}

/// The supervisor's own case.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SupervisionDetail {
    /// Progress reports received.
    pub reports: u32,
    /// Missed-deadline notices received.
    pub overdue_notices: u32,
}

/// Annual report data.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReportDetail {
    /// Reported year.
    pub year: u64,
    /// Submissions (a corrected report replaces the previous one).
    pub submissions: u32,
}

/// What a permission is for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PermissionUse {
    /// Passing an H2 message on to a named recipient.
    #[default]
    Onward,
    /// Using an H1 message in judicial proceedings.
    Judicial,
}

impl PermissionUse {
    /// The document value (`onward`, `judicial`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Onward => "onward",
            Self::Judicial => "judicial",
        }
    }
}

/// Permission data (onward passing of H2 material, judicial use of H1 material).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PermissionDetail {
    /// Id (32 hex) of the message.
    pub message_id: String,
    /// What the permission is for.
    #[serde(default, rename = "use")]
    pub use_: PermissionUse,
    /// Node id it would be passed to (onward passing; empty for judicial use).
    pub recipient: String,
    /// The request's action digest (hex): a grant or a refusal names it, so an answer is
    /// bound to the very request it answers. Empty in records from before it was kept.
    #[serde(default)]
    pub request: String,
    /// Purpose of passing it on.
    pub purpose: String,
    /// Conditions of the grant.
    pub conditions: Option<String>,
}

mod hex_digest {
    use crate::ids::Digest;

    pub(super) fn serialize<S: serde::Serializer>(d: &Digest, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&d.to_hex())
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        Digest::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

mod opt_hex_digest {
    use crate::ids::Digest;

    pub(super) fn serialize<S: serde::Serializer>(
        d: &Option<Digest>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.to_hex()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Digest>, D::Error> {
        let s = <Option<String> as serde::Deserialize>::deserialize(d)?;
        s.map(|s| Digest::from_hex(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}
