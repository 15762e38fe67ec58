//! Why a step is refused.

/// Why a case step is refused. Messages are written for the officer who tried the step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkflowError {
    /// The kind is not in the catalog.
    #[error("unknown message kind {0}: not in the workflow catalog")]
    UnknownKind(String),
    /// A required field is missing (or a required list is empty).
    #[error("missing field {field}: {help}")]
    MissingField {
        /// Field path, e.g. `subject.name`.
        field: String,
        /// What the field holds.
        help: String,
    },
    /// A field has the wrong type.
    #[error("field {field} of {kind} must be {expected}")]
    WrongType {
        /// Message kind.
        kind: String,
        /// Field path.
        field: String,
        /// Expected type name.
        expected: &'static str,
    },
    /// A field the schema does not name.
    #[error("unknown field {field}: {kind} does not carry it (fields: {known})")]
    UnknownField {
        /// Message kind.
        kind: String,
        /// Field path.
        field: String,
        /// The fields the schema allows.
        known: String,
    },
    /// A field has the right type but a value the rules refuse.
    #[error("field {field}: {problem}")]
    BadValue {
        /// Field path.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// The officer's role may not sign the kind.
    #[error("role {role} may not sign {kind} (allowed: {allowed})")]
    RoleNotAllowed {
        /// The officer's role.
        role: &'static str,
        /// Message kind.
        kind: String,
        /// Roles that may sign it.
        allowed: String,
    },
    /// The step is not legal in the case's current state.
    #[error("illegal transition: {kind} in state {state} (expected one of: {expected})")]
    IllegalTransition {
        /// Message kind.
        kind: String,
        /// Current state.
        state: &'static str,
        /// States in which the kind is legal.
        expected: String,
    },
    /// The step needs an existing case and there is none.
    #[error("unknown case {case_ref}: {kind} {why}")]
    UnknownCase {
        /// Case reference.
        case_ref: String,
        /// Message kind.
        kind: String,
        /// Explanation.
        why: String,
    },
    /// The step would open a case that already exists.
    #[error(
        "case {case_ref} already exists ({workflow}, state {state}): {kind} cannot open it again"
    )]
    CaseExists {
        /// Case reference.
        case_ref: String,
        /// Message kind.
        kind: String,
        /// The existing case's workflow.
        workflow: &'static str,
        /// The existing case's state.
        state: &'static str,
    },
    /// The step belongs to another workflow than the case.
    #[error("{kind} does not apply to case {case_ref}, a {workflow} case")]
    WrongWorkflow {
        /// Case reference.
        case_ref: String,
        /// Message kind.
        kind: String,
        /// The case's workflow.
        workflow: &'static str,
    },
    /// The step's case reference is not the case's.
    #[error("step for case {step} applied to case {case}")]
    CaseMismatch {
        /// The step's case reference.
        step: String,
        /// The case's reference.
        case: String,
    },
    /// Sender or recipient are not the parties the step needs.
    #[error("{kind}: step from {from} to {to} but this case is between {parties} ({rule})")]
    WrongParty {
        /// Message kind.
        kind: String,
        /// Sender.
        from: String,
        /// Recipient.
        to: String,
        /// The case's parties.
        parties: String,
        /// Who may send it to whom.
        rule: String,
    },
    /// A node's agency does not fit the step.
    #[error("{kind} needs {side} to be a {expected} node, but {node} is {agency}")]
    WrongAgency {
        /// Message kind.
        kind: String,
        /// `the sender` / `the recipient`.
        side: &'static str,
        /// Expected agency kind.
        expected: &'static str,
        /// The node.
        node: String,
        /// Its agency kind (or `not in the roster`).
        agency: String,
    },
    /// An assisting bureau refused for another reason than incomplete papers.
    #[error(
        "refusal reason {0:?} is not allowed: an assisting bureau must act when the papers are complete and may refuse only with reason_code incomplete_papers"
    )]
    RefusalReason(String),
    /// A deadline that does not move forward or lies in the past.
    #[error("deadline: {0}")]
    Deadline(String),
    /// The second handover signature is over another record.
    #[error("second signature is over a different handover record ({first} vs {second})")]
    HandoverMismatch {
        /// Digest (hex) the first side signed.
        first: String,
        /// Digest (hex) of the record now signed.
        second: String,
    },
    /// The same side signs the handover record twice.
    #[error("handover record already signed by {0}: the other side must countersign it")]
    HandoverSameSide(String),
    /// The victim objected to notifying the origin country.
    #[error("the victim's consent record says the origin country must not be notified")]
    ConsentRefused,
    /// An alert without a last-seen location.
    #[error("alert has no location (last_seen)")]
    NoLocation,
    /// An annual report for a year that has not started.
    #[error("report for a future year {year} (now {now})")]
    FutureYear {
        /// Reported year.
        year: i64,
        /// Current year.
        now: i32,
    },
    /// Any other workflow rule.
    #[error("{kind}: {problem}")]
    Rule {
        /// Message kind.
        kind: String,
        /// What the rule says.
        problem: String,
    },
}
