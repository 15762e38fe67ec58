//! The message catalog: every case-step kind, who may sign it, its default priority and
//! purpose, and the schema of its business document. The schema is closed: a field the
//! catalog does not name is refused, so a minimised answer cannot carry more than it may.

use crate::document::{Document, Field};
use crate::envelope::Priority;

use super::WorkflowError;

/// An officer's role, as bound in the officer's certificate.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Police investigator (public security): assistance checks, bulletins, alerts,
    /// repatriation cases.
    Investigator,
    /// Marriage registrar (civil affairs): foreign-marriage checks.
    Registrar,
    /// Exit-entry / border inspection officer: entry checks, handoffs at the port.
    BorderOfficer,
    /// Officer of a foreign counterpart (border liaison office, border guard).
    ForeignLiaison,
    /// Joint-meeting office: listed supervision.
    Supervisor,
}

impl Role {
    /// Every role.
    pub const ALL: [Self; 5] = [
        Self::Investigator,
        Self::Registrar,
        Self::BorderOfficer,
        Self::ForeignLiaison,
        Self::Supervisor,
    ];

    /// The snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Investigator => "investigator",
            Self::Registrar => "registrar",
            Self::BorderOfficer => "border_officer",
            Self::ForeignLiaison => "foreign_liaison",
            Self::Supervisor => "supervisor",
        }
    }

    /// Parses the snake_case name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A workflow (docs/domain.md §3).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Workflow {
    /// Cross-province case assistance check (two parties).
    Assist,
    /// Assistance bulletin (one issuer, many addressees).
    Bulletin,
    /// Foreign-marriage identity check.
    Marriage,
    /// Repatriation handoff at the border.
    Repatriation,
    /// Missing-child urgent alert.
    Alert,
    /// Listed supervision of a case.
    Supervision,
    /// Annual report to the joint meeting.
    Report,
    /// Permission to pass an H2 message on.
    Permission,
}

impl Workflow {
    /// Every workflow.
    pub const ALL: [Self; 8] = [
        Self::Assist,
        Self::Bulletin,
        Self::Marriage,
        Self::Repatriation,
        Self::Alert,
        Self::Supervision,
        Self::Report,
        Self::Permission,
    ];

    /// The snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Assist => "assist",
            Self::Bulletin => "bulletin",
            Self::Marriage => "marriage",
            Self::Repatriation => "repatriation",
            Self::Alert => "alert",
            Self::Supervision => "supervision",
            Self::Report => "report",
            Self::Permission => "permission",
        }
    }

    /// Parses the snake_case name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.name() == s)
    }
}

impl std::fmt::Display for Workflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The type of a document field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// Text.
    Text,
    /// Unsigned integer (times are Unix ms).
    Uint,
    /// Boolean.
    Bool,
    /// List (item type in [`FieldSpec::item`]).
    List,
    /// Nested map (schema in [`FieldSpec::fields`]; free-form when that is empty).
    Map,
    /// SHA-256 as 64 lowercase hex characters.
    Hash,
    /// Calendar date `YYYY-MM-DD` as text.
    Date,
    /// ISO 3166 alpha-3 country code as text (`VNM`).
    Country,
}

impl FieldType {
    /// The snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Uint => "uint",
            Self::Bool => "bool",
            Self::List => "list",
            Self::Map => "map",
            Self::Hash => "hash",
            Self::Date => "date",
            Self::Country => "country",
        }
    }
}

/// One field of a document schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec {
    /// Field name.
    pub name: &'static str,
    /// Field type.
    pub ty: FieldType,
    /// Whether the field must be present (a required list must also be non-empty).
    pub required: bool,
    /// One line of help: what the field holds.
    pub help: &'static str,
    /// For lists: the type of every item (`None`: any).
    pub item: Option<FieldType>,
    /// For text fields and lists of text: the allowed values (empty: any).
    pub values: &'static [&'static str],
    /// For maps and lists of maps: the nested schema (empty: free-form map).
    pub fields: &'static [Self],
}

impl FieldSpec {
    const fn new(name: &'static str, ty: FieldType, required: bool, help: &'static str) -> Self {
        Self {
            name,
            ty,
            required,
            help,
            item: None,
            values: &[],
            fields: &[],
        }
    }

    /// A required field.
    const fn req(name: &'static str, ty: FieldType, help: &'static str) -> Self {
        Self::new(name, ty, true, help)
    }

    /// An optional field.
    const fn opt(name: &'static str, ty: FieldType, help: &'static str) -> Self {
        Self::new(name, ty, false, help)
    }

    const fn one_of(self, values: &'static [&'static str]) -> Self {
        Self { values, ..self }
    }

    const fn items(self, item: FieldType) -> Self {
        Self {
            item: Some(item),
            ..self
        }
    }

    const fn of(self, fields: &'static [Self]) -> Self {
        Self { fields, ..self }
    }
}

/// One message kind of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindSpec {
    /// Kind, e.g. `assist.request`.
    pub kind: &'static str,
    /// Workflow it belongs to.
    pub workflow: Workflow,
    /// Officer roles that may sign it (empty for automatic node steps).
    pub roles: &'static [Role],
    /// Signed by the node itself (e.g. `supervision.overdue`).
    pub automatic: bool,
    /// Default priority.
    pub priority: Priority,
    /// Default purpose.
    pub purpose: &'static str,
    /// Applied locally only, never sent (e.g. `repatriation.open`).
    pub local: bool,
    /// May start a new case (apply with no case).
    pub opens_case: bool,
    /// Who receives a step the officer names no recipients for.
    pub recipients: Recipients,
    /// Which copies of the case must exist before the step (beyond what the state machine
    /// asks).
    pub needs_case: NeedsCase,
    /// Issued once per case, and sent again, unchanged, to units a widening radius reaches
    /// later (`alert.issue`): a second issue is refused, the signed action is kept with the
    /// case while it is active, and its signing time is not bound to the envelope's.
    pub reissued: bool,
    /// Puts a (new) supervisor on the case: an overdue case is notified to it afresh.
    pub attaches_supervisor: bool,
    /// Its signed body goes into the case's evidence files while the body is held (the
    /// handover record both countries sign).
    pub in_evidence: bool,
    /// Document schema; unknown fields are refused.
    pub fields: &'static [FieldSpec],
    /// One line for CLI help and docs.
    pub help: &'static str,
}

use FieldType::{Bool, Country, Date, List, Map, Text, Uint};
use Priority::{Flash, Routine, Urgent};

/// Who receives a step when the officer names no recipients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipients {
    /// The officer names them (none: the step goes to the other parties the state machine
    /// knows, or is recorded here only where the workflow allows it).
    Named,
    /// The units within the alert's radius around the last-seen place, as policy allows
    /// (`alert.issue`).
    AlertRadius,
    /// Every unit the alert reached so far that is still a member reachable now; none: the
    /// step is recorded here only (`alert.update`, `alert.cancel`).
    Alerted,
}

/// Which copies of a case must exist before a step of a kind, beyond the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeedsCase {
    /// No more than the state machine asks.
    No,
    /// The sending node's copy (it holds the consent record: `repatriation.nationality_request`,
    /// after the local `repatriation.open`).
    AtSender,
    /// The receiving node's copy (a supervisor attaches to a case the bureau holds:
    /// `supervision.attach`).
    AtReceiver,
}

/// Requested actions of an assistance request.
pub const ASSIST_ACTIONS: &[&str] = &[
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
/// Actions answered within 7 days by rule (docs/domain.md §3.A).
pub const SEVEN_DAY_CHECKS: &[&str] = &["identity_check", "age_check", "criminal_record_check"];
/// Flags of a minimised marriage-check answer.
pub const MARRIAGE_FLAGS: &[&str] = &[
    "overstay",
    "illegal_entry_suspected",
    "document_lost_stolen",
    "name_birth_date_mismatch",
    "reported_missing_or_victim",
];
/// Reason codes of a marriage-check referral to the police.
pub const REFERRAL_REASONS: &[&str] = &[
    "broker_involvement",
    "no_entry_stamp",
    "inconsistent_consent",
    "document_doubt",
    "other",
];

const SEX: &[&str] = &["male", "female", "unknown"];

const SUBJECT: &[FieldSpec] = &[
    FieldSpec::req("name", Text, "full name"),
    FieldSpec::req("sex", Text, "male, female or unknown").one_of(SEX),
    FieldSpec::opt("birth_date", Date, "date of birth"),
    FieldSpec::opt("id_number", Text, "resident ID number"),
    FieldSpec::opt(
        "household_registration",
        Text,
        "household registration (hukou) place",
    ),
    FieldSpec::opt("features", Text, "distinguishing features"),
];

const INSTRUMENT: &[FieldSpec] = &[
    FieldSpec::req(
        "type",
        Text,
        "instrument type (case_filing_decision, detention_warrant, search_warrant …)",
    ),
    FieldSpec::req("number", Text, "document number"),
    FieldSpec::req(
        "sha256",
        FieldType::Hash,
        "SHA-256 of the scanned instrument",
    ),
];

const FILE: &[FieldSpec] = &[
    FieldSpec::req("name", Text, "document name"),
    FieldSpec::req("sha256", FieldType::Hash, "SHA-256 of the document"),
];

const FOREIGN_PARTY: &[FieldSpec] = &[
    FieldSpec::req("names", Text, "surname and given names as in the passport"),
    FieldSpec::req("sex", Text, "male, female or unknown").one_of(SEX),
    FieldSpec::req("birth_date", Date, "date of birth"),
    FieldSpec::req("nationality", Country, "nationality (ISO alpha-3)"),
    FieldSpec::req(
        "passport_no",
        Text,
        "passport, travel document or border pass number",
    ),
    FieldSpec::req("passport_issuer", Country, "issuing state (ISO alpha-3)"),
    FieldSpec::opt("claimed_entry_date", Date, "entry date the party claims"),
];

const CHINESE_PARTY: &[FieldSpec] = &[
    FieldSpec::req("name", Text, "full name"),
    FieldSpec::opt("id_number", Text, "resident ID number, only if needed"),
];

const VICTIM: &[FieldSpec] = &[
    FieldSpec::req("name", Text, "full name"),
    FieldSpec::req("sex", Text, "male, female or unknown").one_of(SEX),
    FieldSpec::opt("birth_date", Date, "date of birth"),
    FieldSpec::req("nationality", Country, "claimed nationality (ISO alpha-3)"),
    FieldSpec::req("minor", Bool, "whether the victim is under 18"),
];

const PERSON: &[FieldSpec] = &[
    FieldSpec::req("name", Text, "full name"),
    FieldSpec::req("sex", Text, "male, female or unknown").one_of(SEX),
    FieldSpec::opt("birth_date", Date, "date of birth"),
    FieldSpec::req("nationality", Country, "claimed nationality (ISO alpha-3)"),
    FieldSpec::opt("place_of_origin", Text, "home village / district as stated"),
    FieldSpec::opt("id_document_no", Text, "identity document number, if any"),
];

const HANDOVER_PERSON: &[FieldSpec] = &[
    FieldSpec::req("name", Text, "full name"),
    FieldSpec::req("sex", Text, "male, female or unknown").one_of(SEX),
    FieldSpec::opt("birth_date", Date, "date of birth"),
    FieldSpec::req("nationality", Country, "nationality (ISO alpha-3)"),
    FieldSpec::opt(
        "document_no",
        Text,
        "travel document number (none: leave out)",
    ),
    FieldSpec::opt(
        "nationality_reference",
        Text,
        "reference of the nationality confirmation",
    ),
    FieldSpec::opt("belongings", Text, "belongings handed over"),
    FieldSpec::req("minor", Bool, "whether the person is under 18"),
    FieldSpec::opt("guardian", Text, "accompanying guardian of a minor"),
];

const HANDOVER_RECORD: &[FieldSpec] = &[
    FieldSpec::req("record_no", Text, "handover record number"),
    FieldSpec::opt("organisations", List, "both organisations").items(Text),
    FieldSpec::req("port", Text, "border port"),
    FieldSpec::req("time", Uint, "exact handover time, Unix ms"),
    FieldSpec::req("persons", List, "every person handed over")
        .items(Map)
        .of(HANDOVER_PERSON),
    FieldSpec::req("dossier", List, "dossier documents with their hashes")
        .items(Map)
        .of(FILE),
    FieldSpec::req("officers", List, "officers of both sides").items(Text),
    FieldSpec::opt("discrepancies", Text, "discrepancies found at the check"),
];

const CHILD: &[FieldSpec] = &[
    FieldSpec::req("name", Text, "child's name"),
    FieldSpec::req("sex", Text, "male, female or unknown").one_of(SEX),
    FieldSpec::opt("birth_date", Date, "date of birth"),
    FieldSpec::req("description", Text, "appearance and clothing"),
];

const LAST_SEEN: &[FieldSpec] = &[
    FieldSpec::req("place", Text, "where the child was last seen"),
    FieldSpec::req(
        "lat_e6",
        Text,
        "latitude × 10⁶ as a decimal integer (may be negative)",
    ),
    FieldSpec::req(
        "lon_e6",
        Text,
        "longitude × 10⁶ as a decimal integer (may be negative)",
    ),
];

const INVESTIGATOR: &[Role] = &[Role::Investigator];
const REGISTRAR: &[Role] = &[Role::Registrar];
const BORDER: &[Role] = &[Role::BorderOfficer];
const REPATRIATION: &[Role] = &[
    Role::Investigator,
    Role::BorderOfficer,
    Role::ForeignLiaison,
];
const SUPERVISOR: &[Role] = &[Role::Supervisor];
const CASE_OFFICERS: &[Role] = &[
    Role::Investigator,
    Role::Registrar,
    Role::BorderOfficer,
    Role::ForeignLiaison,
];
const MEMBER_OFFICERS: &[Role] = &[
    Role::Investigator,
    Role::Registrar,
    Role::BorderOfficer,
    Role::Supervisor,
];

const CI: &str = "criminal_investigation";
const MRC: &str = "marriage_registration_check";
const REP: &str = "repatriation";
const CHILD_ALERT: &str = "child_alert";
const SUP: &str = "supervision";
const ANNUAL: &str = "annual_report";

const fn kind(
    kind: &'static str,
    workflow: Workflow,
    roles: &'static [Role],
    priority: Priority,
    purpose: &'static str,
    fields: &'static [FieldSpec],
    help: &'static str,
) -> KindSpec {
    KindSpec {
        kind,
        workflow,
        roles,
        automatic: false,
        priority,
        purpose,
        local: false,
        opens_case: false,
        recipients: Recipients::Named,
        needs_case: NeedsCase::No,
        reissued: false,
        attaches_supervisor: false,
        in_evidence: false,
        fields,
        help,
    }
}

const fn opens(k: KindSpec) -> KindSpec {
    KindSpec {
        opens_case: true,
        ..k
    }
}

/// Sent, when the officer names no one, to the units within the alert's radius; issued once
/// and sent again as the radius widens.
const fn alert_issue(k: KindSpec) -> KindSpec {
    KindSpec {
        recipients: Recipients::AlertRadius,
        reissued: true,
        ..k
    }
}

/// Sent, when the officer names no one, to every unit the alert reached so far.
const fn to_alerted(k: KindSpec) -> KindSpec {
    KindSpec {
        recipients: Recipients::Alerted,
        ..k
    }
}

const fn needs(k: KindSpec, needs_case: NeedsCase) -> KindSpec {
    KindSpec { needs_case, ..k }
}

const fn in_evidence(k: KindSpec) -> KindSpec {
    KindSpec {
        in_evidence: true,
        ..k
    }
}

const fn attaches_supervisor(k: KindSpec) -> KindSpec {
    KindSpec {
        attaches_supervisor: true,
        ..k
    }
}

static CATALOG: &[KindSpec] = &[
    // A. Assistance check.
    opens(kind(
        "assist.request",
        Workflow::Assist,
        INVESTIGATOR,
        Routine,
        CI,
        &[
            FieldSpec::req("request_no", Text, "assistance letter number"),
            FieldSpec::req("case_no", Text, "requesting bureau's case number"),
            FieldSpec::req("action", Text, "requested action").one_of(ASSIST_ACTIONS),
            FieldSpec::req("subject", Map, "the person concerned").of(SUBJECT),
            FieldSpec::req(
                "legal_instruments",
                List,
                "an assistance request needs the legal instruments (case-filing decision, warrant …)",
            )
            .items(Map)
            .of(INSTRUMENT),
            FieldSpec::req("case_summary", Text, "short case summary"),
            FieldSpec::req("contact", Text, "requesting officer's contact"),
            FieldSpec::opt(
                "deadline",
                Uint,
                "answer due, Unix ms (required except for identity/age/criminal-record checks, which are due in 7 days)",
            ),
        ],
        "ask another bureau to act on a case (identity check, locate, detain …)",
    )),
    kind(
        "assist.accept",
        Workflow::Assist,
        INVESTIGATOR,
        Routine,
        CI,
        &[
            FieldSpec::opt("assigned_department", Text, "competent department named"),
            FieldSpec::opt("assigned_officer", Text, "officer in charge"),
        ],
        "assisting bureau accepts the request and names who handles it",
    ),
    kind(
        "assist.clarify",
        Workflow::Assist,
        INVESTIGATOR,
        Routine,
        CI,
        &[FieldSpec::req("question", Text, "what needs clarifying")],
        "assisting bureau asks the requester a question",
    ),
    kind(
        "assist.clarification",
        Workflow::Assist,
        INVESTIGATOR,
        Routine,
        CI,
        &[
            FieldSpec::req("answer", Text, "the requester's answer"),
            FieldSpec::opt("documents", List, "further documents")
                .items(Map)
                .of(FILE),
        ],
        "requester answers the assisting bureau's question",
    ),
    kind(
        "assist.answer",
        Workflow::Assist,
        INVESTIGATOR,
        Routine,
        CI,
        &[
            FieldSpec::req("result", Text, "the result of the requested action"),
            FieldSpec::opt("findings", Map, "structured findings"),
            FieldSpec::opt("documents", List, "documents produced")
                .items(Map)
                .of(FILE),
        ],
        "assisting bureau answers the request",
    ),
    kind(
        "assist.refuse",
        Workflow::Assist,
        INVESTIGATOR,
        Routine,
        CI,
        &[
            FieldSpec::req(
                "reason_code",
                Text,
                "incomplete_papers: the only lawful reason to refuse",
            ),
            FieldSpec::req("missing", List, "the missing papers").items(Text),
            FieldSpec::req("reason", Text, "explanation"),
        ],
        "assisting bureau refuses because the papers are incomplete",
    ),
    kind(
        "assist.extend",
        Workflow::Assist,
        INVESTIGATOR,
        Routine,
        CI,
        &[
            FieldSpec::req("new_deadline", Uint, "new due time, Unix ms"),
            FieldSpec::req("reason", Text, "why the extension is granted"),
        ],
        "requester extends the deadline",
    ),
    kind(
        "assist.custody_notice",
        Workflow::Assist,
        INVESTIGATOR,
        Urgent,
        CI,
        &[
            FieldSpec::req("detained_at", Uint, "time of detention, Unix ms"),
            FieldSpec::req("place", Text, "place of custody"),
            FieldSpec::opt("measure", Text, "coercive measure taken"),
        ],
        "assisting bureau notifies the requester of an arrest at once",
    ),
    kind(
        "assist.refer",
        Workflow::Assist,
        INVESTIGATOR,
        Routine,
        CI,
        &[
            FieldSpec::req("referred_to", Text, "bureau the request is referred to"),
            FieldSpec::req("reason", Text, "why"),
        ],
        "assisting bureau refers the request to the competent bureau",
    ),
    kind(
        "assist.close",
        Workflow::Assist,
        INVESTIGATOR,
        Routine,
        CI,
        &[FieldSpec::opt("note", Text, "closing note")],
        "requester closes the case",
    ),
    // A'. Assistance bulletin.
    opens(kind(
        "bulletin.issue",
        Workflow::Bulletin,
        INVESTIGATOR,
        Routine,
        CI,
        &[
            FieldSpec::req("serial_no", Text, "bulletin serial number"),
            FieldSpec::req("addressees", List, "addressed bureaus").items(Text),
            FieldSpec::req("case_summary", Text, "short case summary"),
            FieldSpec::req("subject", Map, "the person sought").of(SUBJECT),
            FieldSpec::req("asked", Text, "what the addressees are asked to do"),
            FieldSpec::req("contact", Text, "issuing officer's contact"),
        ],
        "publish an assistance bulletin to many bureaus",
    )),
    kind(
        "bulletin.reply",
        Workflow::Bulletin,
        INVESTIGATOR,
        Routine,
        CI,
        &[
            FieldSpec::req("result", Text, "what the addressee found"),
            FieldSpec::opt("findings", Map, "structured findings"),
        ],
        "an addressee answers a bulletin",
    ),
    kind(
        "bulletin.close",
        Workflow::Bulletin,
        INVESTIGATOR,
        Routine,
        CI,
        &[FieldSpec::opt("note", Text, "closing note")],
        "issuer withdraws the bulletin",
    ),
    // B. Foreign-marriage identity check.
    opens(kind(
        "marriage_check.request",
        Workflow::Marriage,
        REGISTRAR,
        Priority::Priority,
        MRC,
        &[
            FieldSpec::req("request_no", Text, "registry's request number"),
            FieldSpec::req("foreign_party", Map, "the foreign party").of(FOREIGN_PARTY),
            FieldSpec::opt("chinese_party", Map, "the Chinese party, only as needed")
                .of(CHINESE_PARTY),
            FieldSpec::opt("deadline", Uint, "answer due, Unix ms (default: 2 hours)"),
        ],
        "marriage registry asks exit-entry to verify the foreign party's identity and entry",
    )),
    kind(
        "marriage_check.answer",
        Workflow::Marriage,
        BORDER,
        Priority::Priority,
        MRC,
        &[
            FieldSpec::req("record_found", Bool, "an entry-exit record was found"),
            FieldSpec::req("lawful_entry", Bool, "the party entered lawfully"),
            FieldSpec::opt("last_entry_date", Date, "date of last entry"),
            FieldSpec::opt("last_entry_port", Text, "port of last entry"),
            FieldSpec::opt("visa_type", Text, "visa or permit type"),
            FieldSpec::opt("authorised_stay_until", Date, "end of authorised stay"),
            FieldSpec::opt("flags", List, "warning flags")
                .items(Text)
                .one_of(MARRIAGE_FLAGS),
        ],
        "exit-entry answers a marriage check (minimised: never the travel history)",
    ),
    opens(kind(
        "marriage_check.referral",
        Workflow::Marriage,
        REGISTRAR,
        Priority::Priority,
        MRC,
        &[
            FieldSpec::req("reason_codes", List, "why the police are alerted")
                .items(Text)
                .one_of(REFERRAL_REASONS),
            FieldSpec::req("summary", Text, "what the registrar observed"),
            FieldSpec::opt("request_no", Text, "registry's request number"),
        ],
        "marriage registry refers suspected trafficking to the local police",
    )),
    kind(
        "marriage_check.close",
        Workflow::Marriage,
        REGISTRAR,
        Priority::Priority,
        MRC,
        &[FieldSpec::opt("note", Text, "outcome (registered, refused …)")],
        "marriage registry closes the check",
    ),
    // C. Repatriation.
    KindSpec {
        local: true,
        ..opens(kind(
            "repatriation.open",
            Workflow::Repatriation,
            REPATRIATION,
            Routine,
            REP,
            &[
                FieldSpec::req("victim", Map, "the identified victim").of(VICTIM),
                FieldSpec::req(
                    "consent_notify_origin",
                    Bool,
                    "the victim agrees that the origin country is notified",
                ),
                FieldSpec::req(
                    "consent_recorded_by",
                    Text,
                    "officer who recorded the consent",
                ),
                FieldSpec::opt("notes", Text, "notes"),
            ],
            "open a repatriation case for an identified victim (local)",
        ))
    },
    needs(
        opens(kind(
        "repatriation.nationality_request",
        Workflow::Repatriation,
        REPATRIATION,
        Routine,
        REP,
        &[
            FieldSpec::req("person", Map, "identity to verify (not the exploitation narrative)")
                .of(PERSON),
            FieldSpec::req(
                "consent_notify_origin",
                Bool,
                "the victim's recorded consent to notify the origin country",
            ),
            FieldSpec::opt("documents", List, "supporting documents")
                .items(Map)
                .of(FILE),
        ],
        "ask the origin country to verify nationality",
    )),
        NeedsCase::AtSender,
    ),
    kind(
        "repatriation.nationality_answer",
        Workflow::Repatriation,
        REPATRIATION,
        Routine,
        REP,
        &[
            FieldSpec::req("result", Text, "confirmed, not_national or more_information")
                .one_of(&["confirmed", "not_national", "more_information"]),
            FieldSpec::req("reference", Text, "nationality confirmation reference"),
            FieldSpec::opt("note", Text, "what more is needed, or remarks"),
        ],
        "origin country answers the nationality verification",
    ),
    kind(
        "repatriation.request_documents",
        Workflow::Repatriation,
        REPATRIATION,
        Routine,
        REP,
        &[
            FieldSpec::req("reference", Text, "nationality confirmation reference"),
            FieldSpec::opt("documents", List, "file for the travel document")
                .items(Map)
                .of(FILE),
        ],
        "ask the origin country for travel documents",
    ),
    kind(
        "repatriation.travel_document",
        Workflow::Repatriation,
        REPATRIATION,
        Routine,
        REP,
        &[
            FieldSpec::req("document_no", Text, "travel document number"),
            FieldSpec::req("issued_at", Date, "date of issue"),
            FieldSpec::req("valid_until", Date, "end of validity"),
        ],
        "origin country reports the travel document issued",
    ),
    kind(
        "repatriation.handover_proposal",
        Workflow::Repatriation,
        REPATRIATION,
        Routine,
        REP,
        &[
            FieldSpec::req("port", Text, "border port"),
            FieldSpec::req("date", Date, "handover date"),
            FieldSpec::req("window_from", Text, "start of the time window, HH:MM"),
            FieldSpec::req("window_to", Text, "end of the time window, HH:MM"),
            FieldSpec::req("escorts", List, "escorting officers").items(Text),
            FieldSpec::req("persons", List, "persons to hand over").items(Text),
        ],
        "propose the handover at the port",
    ),
    kind(
        "repatriation.handover_confirmation",
        Workflow::Repatriation,
        REPATRIATION,
        Routine,
        REP,
        &[
            FieldSpec::req("fixed_time", Text, "agreed handover time, HH:MM"),
            FieldSpec::req(
                "persons_verified",
                Bool,
                "personal data pre-verified by the counterpart",
            ),
        ],
        "counterpart confirms the handover time",
    ),
    kind(
        "repatriation.in_transit",
        Workflow::Repatriation,
        REPATRIATION,
        Routine,
        REP,
        &[
            FieldSpec::opt("departed_at", Uint, "departure time, Unix ms"),
            FieldSpec::opt("note", Text, "note"),
        ],
        "the escort has left for the port (local or sent)",
    ),
    in_evidence(kind(
        "repatriation.handover_record",
        Workflow::Repatriation,
        REPATRIATION,
        Routine,
        REP,
        &[FieldSpec::req("record", Map, "the handover record both sides sign")
            .of(HANDOVER_RECORD)],
        "sign the handover record (both sides sign the same record)",
    )),
    kind(
        "repatriation.receipt_confirmation",
        Workflow::Repatriation,
        REPATRIATION,
        Routine,
        REP,
        &[
            FieldSpec::req("return_certificate_no", Text, "return certificate number"),
            FieldSpec::opt("note", Text, "note"),
        ],
        "receiving side confirms receipt",
    ),
    kind(
        "repatriation.follow_up",
        Workflow::Repatriation,
        REPATRIATION,
        Routine,
        REP,
        &[FieldSpec::req("feedback", Text, "follow-up feedback")],
        "follow-up feedback after the return",
    ),
    kind(
        "repatriation.suspend",
        Workflow::Repatriation,
        REPATRIATION,
        Routine,
        REP,
        &[
            FieldSpec::req("reason", Text, "legal_proceedings or safety_risk")
                .one_of(&["legal_proceedings", "safety_risk"]),
            FieldSpec::opt("note", Text, "note"),
        ],
        "case owner suspends the repatriation",
    ),
    kind(
        "repatriation.resume",
        Workflow::Repatriation,
        REPATRIATION,
        Routine,
        REP,
        &[FieldSpec::opt("note", Text, "note")],
        "case owner resumes a suspended repatriation",
    ),
    kind(
        "repatriation.close",
        Workflow::Repatriation,
        REPATRIATION,
        Routine,
        REP,
        &[FieldSpec::opt("note", Text, "closing note")],
        "case owner closes the repatriation case",
    ),
    // D. Missing-child alert.
    alert_issue(opens(kind(
        "alert.issue",
        Workflow::Alert,
        INVESTIGATOR,
        Flash,
        CHILD_ALERT,
        &[
            FieldSpec::req("child", Map, "the missing child").of(CHILD),
            FieldSpec::opt(
                "last_seen",
                Map,
                "where the child was last seen (an alert needs it)",
            )
            .of(LAST_SEEN),
            FieldSpec::req("missing_since", Uint, "when the child went missing, Unix ms"),
            FieldSpec::req("contact", Text, "issuing officer's contact"),
        ],
        "push a missing-child alert to nearby units",
    ))),
    to_alerted(kind(
        "alert.update",
        Workflow::Alert,
        INVESTIGATOR,
        Flash,
        CHILD_ALERT,
        &[
            FieldSpec::req("update", Text, "new information"),
            FieldSpec::opt("last_seen", Map, "new last-seen place").of(LAST_SEEN),
        ],
        "update a missing-child alert",
    )),
    to_alerted(kind(
        "alert.cancel",
        Workflow::Alert,
        INVESTIGATOR,
        Flash,
        CHILD_ALERT,
        &[
            FieldSpec::req("reason", Text, "found, false_report or other")
                .one_of(&["found", "false_report", "other"]),
            FieldSpec::opt("note", Text, "note"),
        ],
        "cancel a missing-child alert",
    )),
    // E. Supervision and annual report.
    attaches_supervisor(needs(
        opens(kind(
        "supervision.attach",
        Workflow::Supervision,
        SUPERVISOR,
        Routine,
        SUP,
        &[
            FieldSpec::req("interval_days", Uint, "reporting interval in days"),
            FieldSpec::opt("due", Uint, "date the case must be concluded, Unix ms"),
            FieldSpec::req("instruction", Text, "supervision instruction"),
        ],
        "joint-meeting office puts a case under listed supervision",
        )),
        NeedsCase::AtReceiver,
    )),
    kind(
        "supervision.report",
        Workflow::Supervision,
        CASE_OFFICERS,
        Routine,
        SUP,
        &[FieldSpec::req("progress", Text, "progress since the last report")],
        "case owner reports progress to the supervisor",
    ),
    KindSpec {
        automatic: true,
        roles: &[],
        ..kind(
            "supervision.overdue",
            Workflow::Supervision,
            &[],
            Routine,
            SUP,
            &[
                FieldSpec::req("overdue_case", Text, "case reference"),
                FieldSpec::req("deadline", Uint, "the missed deadline, Unix ms"),
                FieldSpec::req("state", Text, "the case's state"),
            ],
            "node tells the supervisor that a supervised case missed its deadline (automatic)",
        )
    },
    kind(
        "supervision.close",
        Workflow::Supervision,
        SUPERVISOR,
        Routine,
        SUP,
        &[FieldSpec::opt("note", Text, "conclusion")],
        "supervisor ends the listed supervision",
    ),
    opens(kind(
        "report.annual",
        Workflow::Report,
        MEMBER_OFFICERS,
        Routine,
        ANNUAL,
        &[
            FieldSpec::req("year", Uint, "calendar year reported"),
            FieldSpec::req("figures", Map, "the year's figures (unsigned integers)"),
            FieldSpec::opt("submitted_by", Text, "officer responsible"),
        ],
        "member unit's annual report to the joint-meeting office (due 15 December)",
    )),
    // The provider's permission: H2 onward passing, H1 use in judicial proceedings.
    opens(kind(
        "permission.request",
        Workflow::Permission,
        &Role::ALL,
        Routine,
        CI,
        &[
            FieldSpec::req("message_id", Text, "id of the H2 or H1 message (32 hex)"),
            FieldSpec::opt(
                "use",
                Text,
                "onward (default: pass an H2 message on to recipient) or judicial (use an H1 \
                 message in judicial proceedings, e.g. in a case evidence file for a court)",
            ),
            FieldSpec::opt(
                "recipient",
                Text,
                "node id it would be passed to (onward only, required there)",
            ),
            FieldSpec::req("purpose", Text, "purpose of passing it on or using it"),
            FieldSpec::req("reason", Text, "why"),
        ],
        "ask the provider's permission to pass an H2 message on, or to use an H1 message in \
         judicial proceedings",
    )),
    kind(
        "permission.grant",
        Workflow::Permission,
        &Role::ALL,
        Routine,
        CI,
        &[
            FieldSpec::req(
                "request",
                Text,
                "the action digest (64 hex) of the permission.request answered",
            ),
            FieldSpec::opt("conditions", Text, "conditions of the permission"),
        ],
        "provider grants the permission asked",
    ),
    kind(
        "permission.deny",
        Workflow::Permission,
        &Role::ALL,
        Routine,
        CI,
        &[
            FieldSpec::req(
                "request",
                Text,
                "the action digest (64 hex) of the permission.request answered",
            ),
            FieldSpec::req("reason", Text, "why not"),
        ],
        "provider refuses the permission asked",
    ),
];

/// Every kind of the catalog.
pub fn catalog() -> &'static [KindSpec] {
    CATALOG
}

/// The spec of `kind`, if the catalog has it.
pub fn spec(kind: &str) -> Option<&'static KindSpec> {
    CATALOG.iter().find(|k| k.kind == kind)
}

/// Checks `doc` against the schema of `kind`: every required field present (required lists
/// non-empty), every field of the right type and allowed value, no unknown field (also in
/// nested maps with a schema).
pub fn validate(kind: &str, doc: &Document) -> Result<&'static KindSpec, WorkflowError> {
    let spec = spec(kind).ok_or_else(|| WorkflowError::UnknownKind(kind.to_owned()))?;
    // Field names too, also inside maps the schema leaves open (findings, figures): a
    // document built from JSON is checked here, before anyone signs it.
    doc.check_keys().map_err(|e| WorkflowError::BadValue {
        field: "(field name)".into(),
        problem: e.to_string(),
    })?;
    check_map(kind, "", spec.fields, doc).map_err(|e| match e {
        // The alert rule names the missing location itself.
        WorkflowError::MissingField { field, .. }
            if kind == "alert.issue" && field.starts_with("last_seen") =>
        {
            WorkflowError::NoLocation
        }
        e => e,
    })?;
    Ok(spec)
}

/// A valid example document for `kind` (for CLI help, docs and tests). Times in it are
/// placeholders: `assist.extend` and `supervision.attach` need times after the step's own.
pub fn example(kind: &str) -> Option<Document> {
    let hash = "5f1d3c0a9b8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a392817060f1e";
    let file = |name: &str| Field::Map(Document::new().with("name", name).with("sha256", hash));
    let subject = Document::new()
        .with("name", "LIN Mou")
        .with("sex", "male")
        .with("birth_date", "1988-03-14")
        .with("id_number", "350102198803140000")
        .with("household_registration", "Gulou District, Fuzhou");
    let last_seen = Document::new()
        .with("place", "Xi'an North railway station")
        .with("lat_e6", "34376800")
        .with("lon_e6", "108939400");
    let doc = match kind {
        "assist.request" => Document::new()
            .with("request_no", "FJ-XC-2026-0117")
            .with("case_no", "FZ-2026-0042")
            .with("action", "identity_check")
            .with("subject", subject)
            .with(
                "legal_instruments",
                vec![Field::Map(
                    Document::new()
                        .with("type", "case_filing_decision")
                        .with("number", "FZ-LA-2026-0042")
                        .with("sha256", hash),
                )],
            )
            .with(
                "case_summary",
                "suspected sale of two women across provinces",
            )
            .with("contact", "Officer WANG, +86 591 0000 0000"),
        "assist.accept" => Document::new()
            .with("assigned_department", "criminal investigation detachment")
            .with("assigned_officer", "ZHAO"),
        "assist.clarify" => Document::new().with("question", "which address is meant?"),
        "assist.clarification" => Document::new().with("answer", "the Yanta district address"),
        "assist.answer" => Document::new()
            .with("result", "identity confirmed")
            .with("documents", vec![file("household record")]),
        "assist.refuse" => Document::new()
            .with("reason_code", "incomplete_papers")
            .with("missing", vec![Field::from("detention warrant")])
            .with("reason", "a detention needs the warrant"),
        "assist.extend" => Document::new()
            .with("new_deadline", 1_800_000_000_000u64)
            .with("reason", "subject travelling"),
        "assist.custody_notice" => Document::new()
            .with("detained_at", 1_780_000_000_000u64)
            .with("place", "Xi'an No. 1 detention centre"),
        "assist.refer" => Document::new()
            .with("referred_to", "cn-6101-psb")
            .with("reason", "the subject lives in another city's jurisdiction"),
        "assist.close"
        | "bulletin.close"
        | "marriage_check.close"
        | "repatriation.resume"
        | "repatriation.close"
        | "supervision.close" => Document::new().with("note", "done"),
        "bulletin.issue" => Document::new()
            .with("serial_no", "FJ-TB-2026-007")
            .with("addressees", vec![Field::from("Shaanxi PSB")])
            .with("case_summary", "suspect in a trafficking case")
            .with("subject", subject)
            .with("asked", "report any trace of the subject")
            .with("contact", "Officer WANG"),
        "bulletin.reply" => Document::new().with("result", "no trace"),
        "marriage_check.request" => Document::new().with("request_no", "XA-HY-2026-0311").with(
            "foreign_party",
            Document::new()
                .with("names", "NGUYEN Thi A")
                .with("sex", "female")
                .with("birth_date", "2001-04-09")
                .with("nationality", "VNM")
                .with("passport_no", "C1234567")
                .with("passport_issuer", "VNM"),
        ),
        "marriage_check.answer" => Document::new()
            .with("record_found", true)
            .with("lawful_entry", true)
            .with("last_entry_date", "2026-02-01")
            .with("last_entry_port", "Hekou")
            .with("visa_type", "L"),
        "marriage_check.referral" => Document::new()
            .with("reason_codes", vec![Field::from("broker_involvement")])
            .with("summary", "a broker answered for the bride"),
        "repatriation.open" => Document::new()
            .with(
                "victim",
                Document::new()
                    .with("name", "NGUYEN Thi B")
                    .with("sex", "female")
                    .with("nationality", "VNM")
                    .with("minor", false),
            )
            .with("consent_notify_origin", true)
            .with("consent_recorded_by", "Officer LIN"),
        "repatriation.nationality_request" => Document::new()
            .with(
                "person",
                Document::new()
                    .with("name", "NGUYEN Thi B")
                    .with("sex", "female")
                    .with("nationality", "VNM")
                    .with("place_of_origin", "Bat Xat district, Lao Cai"),
            )
            .with("consent_notify_origin", true),
        "repatriation.nationality_answer" => Document::new()
            .with("result", "confirmed")
            .with("reference", "LC-QT-2026-15"),
        "repatriation.request_documents" => Document::new().with("reference", "LC-QT-2026-15"),
        "repatriation.travel_document" => Document::new()
            .with("document_no", "LC-GT-2026-88")
            .with("issued_at", "2026-11-20")
            .with("valid_until", "2026-12-20"),
        "repatriation.handover_proposal" => Document::new()
            .with("port", "Hekou")
            .with("date", "2026-11-30")
            .with("window_from", "09:00")
            .with("window_to", "11:00")
            .with("escorts", vec![Field::from("Officer LIN")])
            .with("persons", vec![Field::from("NGUYEN Thi B")]),
        "repatriation.handover_confirmation" => Document::new()
            .with("fixed_time", "10:00")
            .with("persons_verified", true),
        "repatriation.in_transit" => Document::new().with("note", "left Fuzhou"),
        "repatriation.handover_record" => Document::new().with(
            "record",
            Document::new()
                .with("record_no", "HK-JJ-2026-031")
                .with("port", "Hekou")
                .with("time", 1_795_000_000_000u64)
                .with(
                    "persons",
                    vec![Field::Map(
                        Document::new()
                            .with("name", "NGUYEN Thi B")
                            .with("sex", "female")
                            .with("nationality", "VNM")
                            .with("document_no", "LC-GT-2026-88")
                            .with("minor", false),
                    )],
                )
                .with("dossier", vec![file("identification report")])
                .with(
                    "officers",
                    vec![Field::from("LIN (CHN)"), Field::from("PHAM (VNM)")],
                ),
        ),
        "repatriation.receipt_confirmation" => {
            Document::new().with("return_certificate_no", "LC-TN-2026-31")
        }
        "repatriation.follow_up" => Document::new().with("feedback", "returned to her family"),
        "repatriation.suspend" => Document::new().with("reason", "legal_proceedings"),
        "alert.issue" => Document::new()
            .with(
                "child",
                Document::new()
                    .with("name", "ZHANG Xiaoming")
                    .with("sex", "male")
                    .with("description", "4 years old, red jacket"),
            )
            .with("last_seen", last_seen)
            .with("missing_since", 0u64)
            .with("contact", "Shaanxi PSB duty desk"),
        "alert.update" => Document::new().with("update", "seen boarding a bus to Baoji"),
        "alert.cancel" => Document::new().with("reason", "found"),
        "supervision.attach" => Document::new()
            .with("interval_days", 7u64)
            .with("instruction", "report weekly"),
        "supervision.report" => Document::new().with("progress", "two suspects identified"),
        "supervision.overdue" => Document::new()
            .with("overdue_case", "FJ-XC-2026-0117")
            .with("deadline", 1_790_000_000_000u64)
            .with("state", "accepted"),
        "report.annual" => Document::new()
            .with("year", 2026u64)
            .with("figures", Document::new().with("checks_sent", 12u64)),
        "permission.request" => Document::new()
            .with("message_id", "0193a1b2c3d47e5f8a9b0c1d2e3f4a5b")
            .with("recipient", "cn-6101-psb")
            .with("purpose", "criminal_investigation")
            .with("reason", "the Xi'an bureau handles the linked case"),
        "permission.grant" => Document::new()
            .with("request", "01".repeat(32))
            .with("conditions", "not for court use"),
        "permission.deny" => Document::new()
            .with("request", "01".repeat(32))
            .with("reason", "source protection"),
        _ => return None,
    };
    Some(doc)
}

fn path(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

fn check_map(
    kind: &str,
    prefix: &str,
    fields: &'static [FieldSpec],
    doc: &Document,
) -> Result<(), WorkflowError> {
    for (name, _) in doc.iter() {
        if !fields.iter().any(|f| f.name == name) {
            let known: Vec<&str> = fields.iter().map(|f| f.name).collect();
            return Err(WorkflowError::UnknownField {
                kind: kind.to_owned(),
                field: path(prefix, name),
                known: known.join(", "),
            });
        }
    }
    for f in fields {
        let p = path(prefix, f.name);
        match doc.get(f.name) {
            None => {
                if f.required {
                    return Err(WorkflowError::MissingField {
                        field: p,
                        help: f.help.to_owned(),
                    });
                }
            }
            Some(v) => check_field(kind, &p, f, f.ty, v, true)?,
        }
    }
    Ok(())
}

fn check_field(
    kind: &str,
    p: &str,
    f: &'static FieldSpec,
    ty: FieldType,
    v: &Field,
    top: bool,
) -> Result<(), WorkflowError> {
    let wrong = || WorkflowError::WrongType {
        kind: kind.to_owned(),
        field: p.to_owned(),
        expected: ty.name(),
    };
    let bad = |problem: String| WorkflowError::BadValue {
        field: p.to_owned(),
        problem,
    };
    match ty {
        Text | FieldType::Hash | Date | Country => {
            let s = v.as_text().ok_or_else(wrong)?;
            if s.is_empty() && f.required {
                return Err(WorkflowError::MissingField {
                    field: p.to_owned(),
                    help: f.help.to_owned(),
                });
            }
            match ty {
                FieldType::Hash if !is_hash(s) => {
                    return Err(bad(format!(
                        "{} is not a SHA-256 (64 lowercase hex characters)",
                        quoted(s)
                    )));
                }
                Date if !is_date(s) => {
                    return Err(bad(format!("{} is not a date YYYY-MM-DD", quoted(s))));
                }
                Country if !is_country(s) => {
                    return Err(bad(format!(
                        "{} is not an ISO 3166 alpha-3 country code",
                        quoted(s)
                    )));
                }
                _ => {}
            }
            if !f.values.is_empty() && !f.values.contains(&s) {
                return Err(bad(format!(
                    "{} is not one of: {}",
                    quoted(s),
                    f.values.join(", ")
                )));
            }
        }
        Uint => {
            v.as_uint().ok_or_else(wrong)?;
        }
        Bool => {
            v.as_bool().ok_or_else(wrong)?;
        }
        Map => {
            let m = v.as_map().ok_or_else(wrong)?;
            if !f.fields.is_empty() {
                check_map(kind, p, f.fields, m)?;
            }
        }
        List => {
            if !top {
                return Err(wrong());
            }
            let items = v.as_list().ok_or_else(wrong)?;
            if items.is_empty() && f.required {
                return Err(WorkflowError::MissingField {
                    field: p.to_owned(),
                    help: f.help.to_owned(),
                });
            }
            if let Some(item) = f.item {
                for (i, it) in items.iter().enumerate() {
                    check_field(kind, &format!("{p}[{i}]"), f, item, it, false)?;
                }
            }
        }
    }
    Ok(())
}

/// 64 lowercase hex characters.
pub fn is_hash(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Three uppercase ASCII letters.
pub fn is_country(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase())
}

/// A valid calendar date `YYYY-MM-DD` (Gregorian).
pub fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = &s[r];
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

/// A value quoted for an error message, cut to 40 characters: errors are logged and sent in
/// rejection receipts, so they never repeat a whole (possibly huge or sensitive) value.
pub(crate) fn quoted(s: &str) -> String {
    match cut(s) {
        None => format!("{s:?}"),
        Some(head) => format!("{head:?}… ({} bytes)", s.len()),
    }
}

/// Like [`quoted`] without the quotes (for errors that quote the value themselves).
pub(crate) fn quoted_raw(s: &str) -> String {
    cut(s).map_or_else(|| s.to_owned(), |head| format!("{head}…"))
}

/// The first 40 characters of `s` when it is longer.
fn cut(s: &str) -> Option<&str> {
    s.char_indices().nth(40).map(|(end, _)| &s[..end])
}

/// Whether `kind` lies in a workflow's namespace (`assist.`, `repatriation.` …): such kinds
/// are case steps, carried only as officer-signed actions; a kind there that the catalog does
/// not list is refused rather than sent as a plain message.
pub fn reserved(kind: &str) -> bool {
    kind.split_once('.').is_some_and(|(prefix, _)| {
        catalog()
            .iter()
            .any(|k| k.kind.split_once('.').is_some_and(|(p, _)| p == prefix))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_case_rules_of_the_few_kinds_that_have_them() {
        for k in catalog() {
            let expected = match k.kind {
                "alert.issue" => (Recipients::AlertRadius, NeedsCase::No, true, false, false),
                "alert.update" | "alert.cancel" => {
                    (Recipients::Alerted, NeedsCase::No, false, false, false)
                }
                "repatriation.nationality_request" => {
                    (Recipients::Named, NeedsCase::AtSender, false, false, false)
                }
                "supervision.attach" => {
                    (Recipients::Named, NeedsCase::AtReceiver, false, true, false)
                }
                "repatriation.handover_record" => {
                    (Recipients::Named, NeedsCase::No, false, false, true)
                }
                _ => (Recipients::Named, NeedsCase::No, false, false, false),
            };
            let rules = (
                k.recipients,
                k.needs_case,
                k.reissued,
                k.attaches_supervisor,
                k.in_evidence,
            );
            assert_eq!(rules, expected, "{}", k.kind);
        }
    }

    #[test]
    fn every_kind_is_unique_and_parses() {
        for (i, k) in CATALOG.iter().enumerate() {
            assert!(
                CATALOG[i + 1..].iter().all(|o| o.kind != k.kind),
                "{}",
                k.kind
            );
            assert!(k.kind.starts_with(match k.workflow {
                Workflow::Marriage => "marriage_check.",
                w => w.name(),
            }));
            assert_eq!(k.automatic, k.roles.is_empty());
            assert_eq!(spec(k.kind), Some(k));
        }
        for r in Role::ALL {
            assert_eq!(Role::parse(r.name()), Some(r));
        }
        for w in Workflow::ALL {
            assert_eq!(Workflow::parse(w.name()), Some(w));
        }
        assert_eq!(spec("alert.issue").map(|s| s.priority), Some(Flash));
        assert_eq!(
            spec("assist.custody_notice").map(|s| s.priority),
            Some(Urgent)
        );
        assert!(spec("repatriation.open").is_some_and(|s| s.local));
        for k in CATALOG {
            let doc = example(k.kind).unwrap_or_else(|| panic!("no example for {}", k.kind));
            validate(k.kind, &doc).unwrap_or_else(|e| panic!("{}: {e}", k.kind));
        }
    }

    #[test]
    fn dates_hashes_countries() {
        assert!(is_date("2000-02-29"));
        assert!(!is_date("1900-02-29"));
        assert!(!is_date("2026-13-01"));
        assert!(!is_date("2026-1-01"));
        assert!(!is_date("+026-01-01"));
        assert!(is_hash(&"ab".repeat(32)));
        assert!(!is_hash(&"AB".repeat(32)));
        assert!(is_country("VNM"));
        assert!(!is_country("VN"));
    }

    #[test]
    fn schema_errors_name_the_field() {
        // A field name that a strict decoder would refuse, inside a map with no schema: refused
        // before anyone signs it.
        let d = Document::new().with("result", "ok").with(
            "findings",
            serde_json::from_str::<Document>(r#"{"Bad Key": 1}"#).unwrap(),
        );
        let e = validate("assist.answer", &d).unwrap_err();
        assert!(e.to_string().contains("Bad Key"), "{e}");
        let d = Document::new().with("question", 3u64);
        let e = validate("assist.clarify", &d).unwrap_err();
        assert!(e.to_string().contains("question"), "{e}");
        let d = Document::new().with("question", "why").with("extra", "x");
        let e = validate("assist.clarify", &d).unwrap_err();
        assert!(e.to_string().contains("unknown field extra"), "{e}");
        let e = validate("assist.nope", &d).unwrap_err();
        assert_eq!(e, WorkflowError::UnknownKind("assist.nope".into()));
        let e = validate("assist.clarify", &Document::new()).unwrap_err();
        assert!(e.to_string().starts_with("missing field question"), "{e}");
        let d = Document::new()
            .with("record_found", true)
            .with("lawful_entry", true)
            .with("flags", vec![Field::from("bribery")]);
        let e = validate("marriage_check.answer", &d).unwrap_err();
        assert!(e.to_string().contains("flags[0]"), "{e}");
    }
}
