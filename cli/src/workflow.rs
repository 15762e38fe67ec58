//! The officers' workflow commands: assistance checks, marriage checks, repatriation,
//! alerts, supervision, reports, permissions and case timelines. Each command turns its
//! flags into the kind's document (docs/protocol.md §16), signs it with the officer's key and
//! submits it; the node checks it and sends it.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use liaison_node::api::{Client, Request};
use liaison_protocol::NodeId;
use liaison_protocol::document::{Document, Field};
use serde_json::Value;
use sha2::Digest as _;

use crate::officer::{ActOpts, act, new_case_ref, other_party, set_fields};
use crate::output;

/// Options of every step on an existing case.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct On {
    /// Case reference.
    pub(crate) case_ref: String,
    /// Recipient (default: the case's other party).
    #[arg(long, conflicts_with = "local")]
    pub(crate) to: Option<String>,
    /// Record the step on this node only, sending nothing (where the workflow allows it:
    /// in-transit and suspension notes, the police closing a referred check …).
    #[arg(long)]
    pub(crate) local: bool,
    /// Extra document fields, name=value (repeatable).
    #[arg(long = "set")]
    pub(crate) set: Vec<String>,
}

/// Assistance checks between bureaus (协查).
#[derive(Debug, clap::Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per run
pub(crate) enum AssistCmd {
    /// Ask another bureau to act (identity / age / criminal-record check, locate, detain …).
    Request {
        /// Assisting bureau (node id).
        #[arg(long)]
        to: String,
        /// Case reference (default: a new one).
        #[arg(long)]
        case: Option<String>,
        /// Assistance letter number.
        #[arg(long)]
        request_no: String,
        /// Your case number.
        #[arg(long)]
        case_no: String,
        /// identity_check, age_check, criminal_record_check, locate, summons, detain, search,
        /// seize, freeze, interview, serve_documents.
        #[arg(long)]
        action: String,
        /// Subject's full name.
        #[arg(long)]
        subject_name: String,
        /// male, female or unknown.
        #[arg(long, default_value = "unknown")]
        subject_sex: String,
        /// Subject's birth date, YYYY-MM-DD.
        #[arg(long)]
        subject_birth_date: Option<String>,
        /// Subject's resident ID number.
        #[arg(long)]
        subject_id: Option<String>,
        /// Legal instrument, `type:number:file` (the file's SHA-256 is sent, not the file;
        /// repeatable), e.g. case_filing_decision:FJ-2026-117:decision.pdf.
        #[arg(long = "instrument")]
        instruments: Vec<String>,
        /// Short case summary.
        #[arg(long)]
        summary: String,
        /// Your contact (phone, desk).
        #[arg(long)]
        contact: String,
        /// Answer due in (e.g. 3d, 12h); identity/age/criminal-record checks are due in 7 days.
        #[arg(long)]
        due_in: Option<String>,
        /// Extra document fields, name=value.
        #[arg(long = "set")]
        set: Vec<String>,
    },
    /// Assistance cases on this node.
    List,
    /// One case: state, deadline and every step with who signed it.
    Show {
        /// Case reference.
        case_ref: String,
    },
    /// Accept a request and name the department / officer in charge.
    Accept {
        #[command(flatten)]
        on: On,
        /// Competent department.
        #[arg(long)]
        department: Option<String>,
        /// Officer in charge.
        #[arg(long)]
        assigned_officer: Option<String>,
    },
    /// Ask the requester to clarify.
    Clarify {
        #[command(flatten)]
        on: On,
        /// The question.
        #[arg(long)]
        question: String,
    },
    /// Answer a clarification question (requester).
    Clarification {
        #[command(flatten)]
        on: On,
        /// The answer.
        #[arg(long)]
        answer: String,
    },
    /// Answer the request.
    Answer {
        #[command(flatten)]
        on: On,
        /// The result.
        #[arg(long)]
        result: String,
    },
    /// Refuse a request whose papers are incomplete (the only allowed refusal).
    Refuse {
        #[command(flatten)]
        on: On,
        /// The missing papers (comma-separated).
        #[arg(long, value_delimiter = ',')]
        missing: Vec<String>,
        /// Explanation.
        #[arg(long)]
        reason: String,
    },
    /// Extend the deadline (requester).
    Extend {
        #[command(flatten)]
        on: On,
        /// New deadline from now (e.g. 3d).
        #[arg(long)]
        due_in: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Tell the requester at once that the subject was taken into custody.
    CustodyNotice {
        #[command(flatten)]
        on: On,
        /// Place of custody.
        #[arg(long)]
        place: String,
        /// Coercive measure.
        #[arg(long)]
        measure: Option<String>,
    },
    /// Refer the request to another bureau.
    Refer {
        #[command(flatten)]
        on: On,
        /// The bureau it is referred to.
        #[arg(long)]
        referred_to: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Close the case (requester).
    Close {
        #[command(flatten)]
        on: On,
    },
}

/// Foreign-marriage identity checks (涉外婚姻).
#[derive(Debug, clap::Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per run
pub(crate) enum MarriageCmd {
    /// Ask exit-entry to verify the foreign party's identity and entry.
    Check {
        /// Exit-entry / border station (node id).
        #[arg(long)]
        to: String,
        /// Case reference (default: a new one).
        #[arg(long)]
        case: Option<String>,
        /// Registry's request number.
        #[arg(long)]
        request_no: String,
        /// Foreign party's names as in the passport.
        #[arg(long)]
        names: String,
        /// male, female or unknown.
        #[arg(long)]
        sex: String,
        /// Birth date, YYYY-MM-DD.
        #[arg(long)]
        birth_date: String,
        /// Nationality, ISO alpha-3 (e.g. VNM).
        #[arg(long)]
        nationality: String,
        /// Passport / travel document / border pass number.
        #[arg(long)]
        passport_no: String,
        /// Issuing state, ISO alpha-3.
        #[arg(long)]
        passport_issuer: String,
        /// Entry date the party claims, YYYY-MM-DD.
        #[arg(long)]
        claimed_entry_date: Option<String>,
    },
    /// Answer a check with the minimised result (never the travel history).
    Answer {
        #[command(flatten)]
        on: On,
        /// An entry-exit record was found.
        #[arg(long)]
        record_found: bool,
        /// The party entered lawfully.
        #[arg(long)]
        lawful_entry: bool,
        /// Date of last entry.
        #[arg(long)]
        last_entry_date: Option<String>,
        /// Port of last entry.
        #[arg(long)]
        last_entry_port: Option<String>,
        /// Visa or permit type.
        #[arg(long)]
        visa_type: Option<String>,
        /// End of authorised stay.
        #[arg(long)]
        stay_until: Option<String>,
        /// Flags: overstay, illegal_entry_suspected, document_lost_stolen,
        /// name_birth_date_mismatch, reported_missing_or_victim (comma-separated).
        #[arg(long, value_delimiter = ',')]
        flags: Vec<String>,
    },
    /// Refer a suspicious marriage to the police.
    Refer {
        #[command(flatten)]
        on: On,
        /// Reason codes: broker_involvement, no_entry_stamp, inconsistent_consent,
        /// document_doubt, other (comma-separated).
        #[arg(long, value_delimiter = ',')]
        reason_codes: Vec<String>,
        /// What the registrar observed.
        #[arg(long)]
        summary: String,
    },
    /// Close the check.
    Close {
        #[command(flatten)]
        on: On,
    },
}

/// Repatriation of rescued foreign victims (遣返).
#[derive(Debug, clap::Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per run
pub(crate) enum RepatriationCmd {
    /// Open a case for an identified victim and record the victim's consent.
    Open {
        /// Case reference (default: a new one).
        #[arg(long)]
        case: Option<String>,
        /// Victim's full name.
        #[arg(long)]
        name: String,
        /// male, female or unknown.
        #[arg(long)]
        sex: String,
        /// Birth date, YYYY-MM-DD.
        #[arg(long)]
        birth_date: Option<String>,
        /// Claimed nationality, ISO alpha-3.
        #[arg(long)]
        nationality: String,
        /// The victim is under 18.
        #[arg(long)]
        minor: bool,
        /// Whether the victim agrees that the origin country is notified: yes or no.
        #[arg(long)]
        consent_notify: String,
        /// Officer who recorded the consent.
        #[arg(long)]
        consent_recorded_by: String,
    },
    /// Ask the origin country to verify the victim's nationality (identity only: not the
    /// exploitation narrative). Refused when the victim's consent record says no.
    VerifyNationality {
        #[command(flatten)]
        on: On,
        /// Full name.
        #[arg(long)]
        name: String,
        /// male, female or unknown.
        #[arg(long)]
        sex: String,
        /// Claimed nationality, ISO alpha-3.
        #[arg(long)]
        nationality: String,
        /// Birth date, YYYY-MM-DD.
        #[arg(long)]
        birth_date: Option<String>,
        /// Home village / district as stated.
        #[arg(long)]
        place_of_origin: Option<String>,
    },
    /// Answer a nationality verification (origin country).
    AnswerNationality {
        #[command(flatten)]
        on: On,
        /// confirmed, not_national or more_information.
        #[arg(long)]
        result: String,
        /// Confirmation reference.
        #[arg(long)]
        reference: String,
    },
    /// Issue the travel document (origin country).
    TravelDocument {
        #[command(flatten)]
        on: On,
        /// Document number.
        #[arg(long)]
        document_no: String,
        /// Issued, YYYY-MM-DD.
        #[arg(long)]
        issued: String,
        /// Valid until, YYYY-MM-DD.
        #[arg(long)]
        valid_until: String,
    },
    /// Propose the handover at the port.
    ProposeHandover {
        #[command(flatten)]
        on: On,
        /// Border port.
        #[arg(long)]
        port: String,
        /// Date, YYYY-MM-DD.
        #[arg(long)]
        date: String,
        /// Time window, HH:MM-HH:MM.
        #[arg(long)]
        window: String,
        /// Escorting officers (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        escorts: Vec<String>,
        /// Persons to hand over (comma-separated names).
        #[arg(long, value_delimiter = ',', required = true)]
        persons: Vec<String>,
    },
    /// Confirm the proposed handover (counterpart).
    ConfirmHandover {
        #[command(flatten)]
        on: On,
        /// Agreed time, HH:MM.
        #[arg(long)]
        time: String,
    },
    /// Record that the victim left for the port.
    InTransit {
        #[command(flatten)]
        on: On,
    },
    /// Sign the handover record (each side signs the same record file).
    SignRecord {
        #[command(flatten)]
        on: On,
        /// The handover record (JSON): record_no, port, time, persons, dossier, officers.
        #[arg(long)]
        record: PathBuf,
    },
    /// Confirm receipt of the returned person (receiving side).
    ConfirmReceipt {
        #[command(flatten)]
        on: On,
        /// Return certificate number.
        #[arg(long)]
        certificate: String,
    },
    /// Follow-up feedback.
    FollowUp {
        #[command(flatten)]
        on: On,
        /// Feedback.
        #[arg(long)]
        feedback: String,
    },
    /// Suspend the case: legal_proceedings or safety_risk.
    Suspend {
        #[command(flatten)]
        on: On,
        /// legal_proceedings or safety_risk.
        #[arg(long)]
        reason: String,
    },
    /// Resume a suspended case.
    Resume {
        #[command(flatten)]
        on: On,
    },
    /// Close the case.
    Close {
        #[command(flatten)]
        on: On,
    },
    /// One case: state, deadline, handover signatures, every step.
    Show {
        /// Case reference.
        case_ref: String,
    },
}

/// Urgent missing-child alerts (紧急寻人).
#[derive(Debug, clap::Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per run
pub(crate) enum AlertCmd {
    /// Issue an alert: it reaches every unit within 100 km at once and widens with time
    /// (200 km after 1 h, 300 km after 2 h, 500 km after 3 h).
    Issue {
        /// Case reference (default: a new one).
        #[arg(long)]
        case: Option<String>,
        /// Child's name.
        #[arg(long)]
        child_name: String,
        /// male, female or unknown.
        #[arg(long)]
        sex: String,
        /// Birth date, YYYY-MM-DD.
        #[arg(long)]
        birth_date: Option<String>,
        /// Appearance and clothing.
        #[arg(long)]
        description: String,
        /// Where the child was last seen.
        #[arg(long)]
        place: Option<String>,
        /// Latitude of the last-seen place, degrees (e.g. 34.3416).
        #[arg(long, allow_hyphen_values = true)]
        lat: Option<String>,
        /// Longitude of the last-seen place, degrees (e.g. 108.9398).
        #[arg(long, allow_hyphen_values = true)]
        lon: Option<String>,
        /// Missing for how long already (e.g. 30m, 2h).
        #[arg(long, default_value = "0s")]
        missing_for: String,
        /// Your contact.
        #[arg(long)]
        contact: String,
    },
    /// Send an update to every unit alerted so far.
    Update {
        /// Case reference.
        case_ref: String,
        /// New information.
        #[arg(long)]
        text: String,
    },
    /// Cancel the alert: found, false_report or other.
    Cancel {
        /// Case reference.
        case_ref: String,
        /// found, false_report or other.
        #[arg(long)]
        reason: String,
        /// Note.
        #[arg(long)]
        note: Option<String>,
    },
}

/// Listed supervision (挂牌督办).
#[derive(Debug, clap::Subcommand)]
pub(crate) enum SuperviseCmd {
    /// Put a case under supervision (supervising office → case owner).
    Attach {
        #[command(flatten)]
        on: On,
        /// Reporting interval, days.
        #[arg(long)]
        interval_days: u64,
        /// The case must be concluded within (e.g. 30d).
        #[arg(long)]
        due_in: Option<String>,
        /// Instruction.
        #[arg(long)]
        instruction: String,
    },
    /// Report progress to the supervisor (case owner).
    Report {
        #[command(flatten)]
        on: On,
        /// Progress since the last report.
        #[arg(long)]
        progress: String,
    },
    /// End the supervision (supervisor).
    Close {
        #[command(flatten)]
        on: On,
    },
    /// Supervised cases and overdue cases on this node.
    List,
}

/// Annual reports.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ReportCmd {
    /// Compute this unit's figures for a year and send them to the joint-meeting office.
    Annual {
        /// Calendar year.
        #[arg(long)]
        year: i32,
        /// The joint-meeting office (node id).
        #[arg(long)]
        to: Option<String>,
        /// Only print the figures; send nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// The provider's permission: to pass H2 material on, or to use H1 material in judicial
/// proceedings.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum PermissionCmd {
    /// Ask the provider for permission to pass a message on (H2, with --recipient) or to use
    /// it in judicial proceedings (H1, with --use judicial).
    Request {
        /// The message (id).
        #[arg(long)]
        message: String,
        /// What for: onward (pass an H2 message on to --recipient) or judicial (use an H1
        /// message in judicial proceedings, e.g. `liaison case evidence --for-court`).
        #[arg(long = "use", value_parser = ["onward", "judicial"], default_value = "onward")]
        use_: String,
        /// Who it would be passed to (onward only).
        #[arg(long, required_if_eq("use_", "onward"))]
        recipient: Option<String>,
        /// The provider (node that sent the message).
        #[arg(long)]
        to: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Grant a permission request (provider).
    Grant {
        #[command(flatten)]
        on: On,
        /// Conditions.
        #[arg(long)]
        conditions: Option<String>,
    },
    /// Deny a permission request (provider).
    Deny {
        #[command(flatten)]
        on: On,
        /// Why not.
        #[arg(long)]
        reason: String,
    },
}

/// Any catalog step.
#[derive(Debug, clap::Args)]
pub(crate) struct StepArgs {
    /// Print every kind with its fields and roles, and exit.
    #[arg(long)]
    pub(crate) list: bool,
    /// The kind, e.g. bulletin.issue.
    #[arg(required_unless_present = "list")]
    kind: Option<String>,
    /// Case reference (default for steps that open a case: a new one).
    #[arg(long)]
    case: Option<String>,
    /// Recipients (repeatable; none: recorded here, or the units an alert reaches).
    #[arg(long)]
    to: Vec<String>,
    /// Document fields, name=value (repeatable; with --doc-file for nested fields).
    #[arg(long = "set")]
    set: Vec<String>,
}

/// `liaison step --list`.
pub(crate) fn list_kinds(json: bool) {
    use liaison_protocol::workflow::catalog;
    let kinds: Vec<Value> = catalog()
        .iter()
        .map(|k| {
            serde_json::json!({
                "kind": k.kind,
                "roles": k.roles.iter().map(|r| r.name()).collect::<Vec<_>>(),
                "help": k.help,
                "fields": k.fields.iter().map(|f| serde_json::json!({
                    "name": f.name, "type": f.ty.name(), "required": f.required, "help": f.help,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    output::print(json, &Value::Array(kinds), |v| {
        let mut out = String::new();
        for k in v.as_array().into_iter().flatten() {
            out.push_str(&format!(
                "{}  ({})\n    {}\n",
                k["kind"].as_str().unwrap_or("-"),
                k["roles"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
                k["help"].as_str().unwrap_or("-"),
            ));
            for f in k["fields"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "      {}{} ({}): {}\n",
                    f["name"].as_str().unwrap_or("-"),
                    if f["required"] == true { "*" } else { "" },
                    f["type"].as_str().unwrap_or("-"),
                    f["help"].as_str().unwrap_or("-"),
                ));
            }
        }
        out.trim_end().to_owned()
    });
}

/// `liaison step <kind> …`.
pub(crate) async fn any_step(
    client: &mut Client,
    opts: &ActOpts,
    json: bool,
    args: StepArgs,
) -> Result<()> {
    let Some(kind) = args.kind else {
        bail!("which kind? (liaison step --list)");
    };
    let Some(spec) = liaison_protocol::workflow::spec(&kind) else {
        bail!("unknown kind {kind}: see `liaison step --list`");
    };
    if args.case.is_none() && !spec.opens_case {
        bail!("which case? --case <ref>");
    }
    let mut doc = Document::new();
    set_fields(&mut doc, &args.set)?;
    let to = args
        .to
        .iter()
        .map(|t| NodeId::new(t.as_str()))
        .collect::<Result<Vec<_>, _>>()?;
    open(client, opts, json, &kind, args.case, doc, to).await
}

/// A duration like `90s`, `30m`, `2h`, `7d` in ms.
pub(crate) fn duration_ms(s: &str) -> Result<u64> {
    crate::parse_duration_ms(s)
}

fn sha256_file(path: &str) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading instrument file {path}"))?;
    Ok(hex::encode(sha2::Sha256::digest(&bytes)))
}

fn opt(doc: &mut Document, key: &str, v: Option<String>) {
    if let Some(v) = v {
        doc.set(key, v);
    }
}

fn texts(v: &[String]) -> Field {
    Field::List(v.iter().map(|s| Field::Text(s.clone())).collect())
}

fn degrees_e6(s: &str, what: &str, max: i64) -> Result<String> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty()
        || frac.len() > 6
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        bail!("--{what} {s}: give degrees like 34.3416");
    }
    let v: i64 = format!("{int}{frac:0<6}")
        .parse()
        .with_context(|| format!("--{what} {s}"))?;
    if v > max * 1_000_000 {
        bail!("--{what} {s} is out of range");
    }
    Ok(if neg { format!("-{v}") } else { v.to_string() })
}

async fn recipient(client: &mut Client, on: &On) -> Result<NodeId> {
    match &on.to {
        Some(t) => Ok(NodeId::new(t.as_str())?),
        None => other_party(client, &on.case_ref).await,
    }
}

async fn step(
    client: &mut Client,
    opts: &ActOpts,
    json: bool,
    kind: &str,
    on: &On,
    mut doc: Document,
) -> Result<()> {
    set_fields(&mut doc, &on.set)?;
    let local = on.local || liaison_protocol::workflow::spec(kind).is_some_and(|s| s.local);
    let to = if local {
        Vec::new()
    } else {
        vec![recipient(client, on).await?]
    };
    let v = act(client, opts, kind, &on.case_ref, doc, to).await?;
    output::print(json, &v, output::act);
    Ok(())
}

/// Signs and submits a step that opens a case: `case` or a new reference
/// `<node>/<workflow>/<id>`.
async fn open(
    client: &mut Client,
    opts: &ActOpts,
    json: bool,
    kind: &str,
    case: Option<String>,
    doc: Document,
    to: Vec<NodeId>,
) -> Result<()> {
    let case_ref = match case {
        Some(c) => c,
        None => {
            let what = liaison_protocol::workflow::spec(kind).map_or("case", |s| s.workflow.name());
            new_case_ref(&me(client).await?, what)
        }
    };
    let v = act(client, opts, kind, &case_ref, doc, to).await?;
    output::print(json, &v, output::act);
    Ok(())
}

async fn me(client: &mut Client) -> Result<String> {
    let s = client.call(&Request::Status).await?;
    Ok(s["node"].as_str().unwrap_or_default().to_owned())
}

async fn show(client: &mut Client, json: bool, case_ref: &str) -> Result<()> {
    let v = client
        .call(&Request::Case {
            case_ref: case_ref.to_owned(),
        })
        .await?;
    output::print(json, &v, output::timeline);
    Ok(())
}

async fn list(client: &mut Client, json: bool, workflow: Option<&str>) -> Result<()> {
    let v = client.call(&Request::Cases).await?;
    let filtered: Vec<Value> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| workflow.is_none_or(|w| c["workflow"] == w))
        .cloned()
        .collect();
    output::print(json, &Value::Array(filtered), output::cases);
    Ok(())
}

fn due(s: Option<&str>) -> Result<Option<u64>> {
    s.map(|d| Ok(liaison_node::now_ms() + duration_ms(d)?))
        .transpose()
}

pub(crate) async fn assist(
    client: &mut Client,
    opts: &ActOpts,
    json: bool,
    cmd: AssistCmd,
) -> Result<()> {
    match cmd {
        AssistCmd::Request {
            to,
            case,
            request_no,
            case_no,
            action,
            subject_name,
            subject_sex,
            subject_birth_date,
            subject_id,
            instruments,
            summary,
            contact,
            due_in,
            set,
        } => {
            let mut subject = Document::new()
                .with("name", subject_name)
                .with("sex", subject_sex);
            opt(&mut subject, "birth_date", subject_birth_date);
            opt(&mut subject, "id_number", subject_id);
            let mut list = Vec::new();
            for i in &instruments {
                let parts: Vec<&str> = i.splitn(3, ':').collect();
                let [ty, number, file] = parts[..] else {
                    bail!("--instrument {i}: use type:number:file");
                };
                list.push(Field::Map(
                    Document::new()
                        .with("type", ty)
                        .with("number", number)
                        .with("sha256", sha256_file(file)?),
                ));
            }
            let mut doc = Document::new()
                .with("request_no", request_no)
                .with("case_no", case_no)
                .with("action", action)
                .with("subject", subject)
                .with("legal_instruments", Field::List(list))
                .with("case_summary", summary)
                .with("contact", contact);
            if let Some(d) = due(due_in.as_deref())? {
                doc.set("deadline", d);
            }
            set_fields(&mut doc, &set)?;
            open(
                client,
                opts,
                json,
                "assist.request",
                case,
                doc,
                vec![NodeId::new(to)?],
            )
            .await
        }
        AssistCmd::List => list(client, json, Some("assist")).await,
        AssistCmd::Show { case_ref } => show(client, json, &case_ref).await,
        AssistCmd::Accept {
            on,
            department,
            assigned_officer,
        } => {
            let mut doc = Document::new();
            opt(&mut doc, "assigned_department", department);
            opt(&mut doc, "assigned_officer", assigned_officer);
            step(client, opts, json, "assist.accept", &on, doc).await
        }
        AssistCmd::Clarify { on, question } => {
            let doc = Document::new().with("question", question);
            step(client, opts, json, "assist.clarify", &on, doc).await
        }
        AssistCmd::Clarification { on, answer } => {
            let doc = Document::new().with("answer", answer);
            step(client, opts, json, "assist.clarification", &on, doc).await
        }
        AssistCmd::Answer { on, result } => {
            let doc = Document::new().with("result", result);
            step(client, opts, json, "assist.answer", &on, doc).await
        }
        AssistCmd::Refuse {
            on,
            missing,
            reason,
        } => {
            let doc = Document::new()
                .with("reason_code", "incomplete_papers")
                .with("missing", texts(&missing))
                .with("reason", reason);
            step(client, opts, json, "assist.refuse", &on, doc).await
        }
        AssistCmd::Extend { on, due_in, reason } => {
            let doc = Document::new()
                .with(
                    "new_deadline",
                    liaison_node::now_ms() + duration_ms(&due_in)?,
                )
                .with("reason", reason);
            step(client, opts, json, "assist.extend", &on, doc).await
        }
        AssistCmd::CustodyNotice { on, place, measure } => {
            let mut doc = Document::new()
                .with("detained_at", liaison_node::now_ms())
                .with("place", place);
            opt(&mut doc, "measure", measure);
            step(client, opts, json, "assist.custody_notice", &on, doc).await
        }
        AssistCmd::Refer {
            on,
            referred_to,
            reason,
        } => {
            let doc = Document::new()
                .with("referred_to", referred_to)
                .with("reason", reason);
            step(client, opts, json, "assist.refer", &on, doc).await
        }
        AssistCmd::Close { on } => {
            step(client, opts, json, "assist.close", &on, Document::new()).await
        }
    }
}

pub(crate) async fn marriage(
    client: &mut Client,
    opts: &ActOpts,
    json: bool,
    cmd: MarriageCmd,
) -> Result<()> {
    match cmd {
        MarriageCmd::Check {
            to,
            case,
            request_no,
            names,
            sex,
            birth_date,
            nationality,
            passport_no,
            passport_issuer,
            claimed_entry_date,
        } => {
            let mut party = Document::new()
                .with("names", names)
                .with("sex", sex)
                .with("birth_date", birth_date)
                .with("nationality", nationality)
                .with("passport_no", passport_no)
                .with("passport_issuer", passport_issuer);
            opt(&mut party, "claimed_entry_date", claimed_entry_date);
            let doc = Document::new()
                .with("request_no", request_no)
                .with("foreign_party", party);
            open(
                client,
                opts,
                json,
                "marriage_check.request",
                case,
                doc,
                vec![NodeId::new(to)?],
            )
            .await
        }
        MarriageCmd::Answer {
            on,
            record_found,
            lawful_entry,
            last_entry_date,
            last_entry_port,
            visa_type,
            stay_until,
            flags,
        } => {
            let mut doc = Document::new()
                .with("record_found", record_found)
                .with("lawful_entry", lawful_entry);
            opt(&mut doc, "last_entry_date", last_entry_date);
            opt(&mut doc, "last_entry_port", last_entry_port);
            opt(&mut doc, "visa_type", visa_type);
            opt(&mut doc, "authorised_stay_until", stay_until);
            if !flags.is_empty() {
                doc.set("flags", texts(&flags));
            }
            step(client, opts, json, "marriage_check.answer", &on, doc).await
        }
        MarriageCmd::Refer {
            on,
            reason_codes,
            summary,
        } => {
            let doc = Document::new()
                .with("reason_codes", texts(&reason_codes))
                .with("summary", summary);
            if on.to.is_none() {
                bail!("say which police bureau receives the referral: --to <node>");
            }
            step(client, opts, json, "marriage_check.referral", &on, doc).await
        }
        MarriageCmd::Close { on } => {
            step(
                client,
                opts,
                json,
                "marriage_check.close",
                &on,
                Document::new(),
            )
            .await
        }
    }
}

pub(crate) async fn repatriation(
    client: &mut Client,
    opts: &ActOpts,
    json: bool,
    cmd: RepatriationCmd,
) -> Result<()> {
    match cmd {
        RepatriationCmd::Open {
            case,
            name,
            sex,
            birth_date,
            nationality,
            minor,
            consent_notify,
            consent_recorded_by,
        } => {
            let consent = match consent_notify.as_str() {
                "yes" => true,
                "no" => false,
                other => bail!("--consent-notify {other}: answer yes or no"),
            };
            let mut victim = Document::new()
                .with("name", name)
                .with("sex", sex)
                .with("nationality", nationality)
                .with("minor", minor);
            opt(&mut victim, "birth_date", birth_date);
            let doc = Document::new()
                .with("victim", victim)
                .with("consent_notify_origin", consent)
                .with("consent_recorded_by", consent_recorded_by);
            open(
                client,
                opts,
                json,
                "repatriation.open",
                case,
                doc,
                Vec::new(),
            )
            .await
        }
        RepatriationCmd::VerifyNationality {
            on,
            name,
            sex,
            nationality,
            birth_date,
            place_of_origin,
        } => {
            // The consent comes from the case's own record, never from a flag.
            let v = client
                .call(&Request::Case {
                    case_ref: on.case_ref.clone(),
                })
                .await?;
            let Some(consent) =
                v["case"]["detail"]["repatriation"]["consent_notify_origin"].as_bool()
            else {
                bail!(
                    "case {} is not a repatriation case opened here: open it first with \
                     `liaison repatriation open`",
                    on.case_ref
                );
            };
            let mut person = Document::new()
                .with("name", name)
                .with("sex", sex)
                .with("nationality", nationality);
            opt(&mut person, "birth_date", birth_date);
            opt(&mut person, "place_of_origin", place_of_origin);
            let doc = Document::new()
                .with("person", person)
                .with("consent_notify_origin", consent);
            step(
                client,
                opts,
                json,
                "repatriation.nationality_request",
                &on,
                doc,
            )
            .await
        }
        RepatriationCmd::AnswerNationality {
            on,
            result,
            reference,
        } => {
            let doc = Document::new()
                .with("result", result)
                .with("reference", reference);
            step(
                client,
                opts,
                json,
                "repatriation.nationality_answer",
                &on,
                doc,
            )
            .await
        }
        RepatriationCmd::TravelDocument {
            on,
            document_no,
            issued,
            valid_until,
        } => {
            let doc = Document::new()
                .with("document_no", document_no)
                .with("issued_at", issued)
                .with("valid_until", valid_until);
            step(client, opts, json, "repatriation.travel_document", &on, doc).await
        }
        RepatriationCmd::ProposeHandover {
            on,
            port,
            date,
            window,
            escorts,
            persons,
        } => {
            let Some((from, until)) = window.split_once('-') else {
                bail!("--window {window}: use HH:MM-HH:MM");
            };
            let doc = Document::new()
                .with("port", port)
                .with("date", date)
                .with("window_from", from)
                .with("window_to", until)
                .with("escorts", texts(&escorts))
                .with("persons", texts(&persons));
            step(
                client,
                opts,
                json,
                "repatriation.handover_proposal",
                &on,
                doc,
            )
            .await
        }
        RepatriationCmd::ConfirmHandover { on, time } => {
            let doc = Document::new()
                .with("fixed_time", time)
                .with("persons_verified", true);
            step(
                client,
                opts,
                json,
                "repatriation.handover_confirmation",
                &on,
                doc,
            )
            .await
        }
        RepatriationCmd::InTransit { on } => {
            let doc = Document::new().with("departed_at", liaison_node::now_ms());
            step(client, opts, json, "repatriation.in_transit", &on, doc).await
        }
        RepatriationCmd::SignRecord { on, record } => {
            let text = std::fs::read_to_string(&record)
                .with_context(|| format!("reading {}", record.display()))?;
            let rec: Document = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a handover record (JSON)", record.display()))?;
            let doc = Document::new().with("record", rec);
            step(client, opts, json, "repatriation.handover_record", &on, doc).await
        }
        RepatriationCmd::ConfirmReceipt { on, certificate } => {
            let doc = Document::new().with("return_certificate_no", certificate);
            step(
                client,
                opts,
                json,
                "repatriation.receipt_confirmation",
                &on,
                doc,
            )
            .await
        }
        RepatriationCmd::FollowUp { on, feedback } => {
            let doc = Document::new().with("feedback", feedback);
            step(client, opts, json, "repatriation.follow_up", &on, doc).await
        }
        RepatriationCmd::Suspend { on, reason } => {
            let doc = Document::new().with("reason", reason);
            step(client, opts, json, "repatriation.suspend", &on, doc).await
        }
        RepatriationCmd::Resume { on } => {
            step(
                client,
                opts,
                json,
                "repatriation.resume",
                &on,
                Document::new(),
            )
            .await
        }
        RepatriationCmd::Close { on } => {
            step(
                client,
                opts,
                json,
                "repatriation.close",
                &on,
                Document::new(),
            )
            .await
        }
        RepatriationCmd::Show { case_ref } => show(client, json, &case_ref).await,
    }
}

pub(crate) async fn alert(
    client: &mut Client,
    opts: &ActOpts,
    json: bool,
    cmd: AlertCmd,
) -> Result<()> {
    match cmd {
        AlertCmd::Issue {
            case,
            child_name,
            sex,
            birth_date,
            description,
            place,
            lat,
            lon,
            missing_for,
            contact,
        } => {
            let mut child = Document::new()
                .with("name", child_name)
                .with("sex", sex)
                .with("description", description);
            opt(&mut child, "birth_date", birth_date);
            let now = liaison_node::now_ms();
            let mut doc = Document::new()
                .with("child", child)
                .with(
                    "missing_since",
                    now.saturating_sub(duration_ms(&missing_for)?),
                )
                .with("contact", contact);
            match (place, lat, lon) {
                (Some(place), Some(lat), Some(lon)) => {
                    doc.set(
                        "last_seen",
                        Document::new()
                            .with("place", place)
                            .with("lat_e6", degrees_e6(&lat, "lat", 90)?)
                            .with("lon_e6", degrees_e6(&lon, "lon", 180)?),
                    );
                }
                (None, None, None) => {
                    bail!(
                        "an alert needs the last-seen place: --place <text> --lat <degrees> --lon <degrees>"
                    )
                }
                _ => bail!("give all of --place, --lat and --lon"),
            }
            open(client, opts, json, "alert.issue", case, doc, Vec::new()).await
        }
        AlertCmd::Update { case_ref, text } => {
            let doc = Document::new().with("update", text);
            let v = act(client, opts, "alert.update", &case_ref, doc, Vec::new()).await?;
            output::print(json, &v, output::act);
            Ok(())
        }
        AlertCmd::Cancel {
            case_ref,
            reason,
            note,
        } => {
            let mut doc = Document::new().with("reason", reason);
            opt(&mut doc, "note", note);
            let v = act(client, opts, "alert.cancel", &case_ref, doc, Vec::new()).await?;
            output::print(json, &v, output::act);
            Ok(())
        }
    }
}

pub(crate) async fn supervise(
    client: &mut Client,
    opts: &ActOpts,
    json: bool,
    cmd: SuperviseCmd,
) -> Result<()> {
    match cmd {
        SuperviseCmd::Attach {
            on,
            interval_days,
            due_in,
            instruction,
        } => {
            if on.to.is_none() {
                bail!("say which unit owns the case: --to <node>");
            }
            let mut doc = Document::new()
                .with("interval_days", interval_days)
                .with("instruction", instruction);
            if let Some(d) = due(due_in.as_deref())? {
                doc.set("due", d);
            }
            step(client, opts, json, "supervision.attach", &on, doc).await
        }
        SuperviseCmd::Report { on, progress } => {
            let on = match on.to {
                Some(_) => on,
                None => {
                    let v = client
                        .call(&Request::Case {
                            case_ref: on.case_ref.clone(),
                        })
                        .await?;
                    let Some(sup) = v["case"]["supervisor"]["node"].as_str() else {
                        bail!("case {} is not under supervision", on.case_ref);
                    };
                    On {
                        to: Some(sup.to_owned()),
                        ..on
                    }
                }
            };
            let doc = Document::new().with("progress", progress);
            step(client, opts, json, "supervision.report", &on, doc).await
        }
        SuperviseCmd::Close { on } => {
            step(
                client,
                opts,
                json,
                "supervision.close",
                &on,
                Document::new(),
            )
            .await
        }
        SuperviseCmd::List => {
            let v = client.call(&Request::Cases).await?;
            let filtered: Vec<Value> = v
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| {
                    c["workflow"] == "supervision"
                        || !c["supervisor"].is_null()
                        || c["overdue"] == true
                })
                .cloned()
                .collect();
            output::print(json, &Value::Array(filtered), output::cases);
            Ok(())
        }
    }
}

pub(crate) async fn report(
    client: &mut Client,
    opts: &ActOpts,
    json: bool,
    cmd: ReportCmd,
) -> Result<()> {
    let ReportCmd::Annual { year, to, dry_run } = cmd;
    let figures = client.call(&Request::AnnualFigures { year }).await?;
    if dry_run {
        output::print(json, &figures, output::figures);
        return Ok(());
    }
    let Some(to) = to else {
        bail!("say which joint-meeting office receives the report: --to <node> (or --dry-run)");
    };
    let doc: Document = serde_json::from_value(figures)
        .context("the node returned figures that are not a document")?;
    let node = me(client).await?;
    let case_ref = format!("report-{node}-{year}");
    open(
        client,
        opts,
        json,
        "report.annual",
        Some(case_ref),
        doc,
        vec![NodeId::new(to)?],
    )
    .await
}

/// The action digest of the permission request case `on` holds: an answer names it.
async fn request_of(client: &mut Client, on: &On) -> Result<String> {
    let v = client
        .call(&Request::Case {
            case_ref: on.case_ref.clone(),
        })
        .await?;
    match v["case"]["detail"]["permission"]["request"].as_str() {
        Some(d) if !d.is_empty() => Ok(d.to_owned()),
        _ => bail!(
            "case {} is not a permission request this node received (liaison case list \
             --workflow permission)",
            on.case_ref
        ),
    }
}

pub(crate) async fn permission(
    client: &mut Client,
    opts: &ActOpts,
    json: bool,
    cmd: PermissionCmd,
) -> Result<()> {
    match cmd {
        PermissionCmd::Request {
            message,
            use_,
            recipient,
            to,
            reason,
        } => {
            let mut doc = Document::new()
                .with("message_id", message)
                .with("purpose", "criminal_investigation")
                .with("reason", reason);
            if use_ == "judicial" {
                if recipient.is_some() {
                    bail!(
                        "--recipient goes only with --use onward: judicial use names no recipient"
                    );
                }
                doc.set("use", "judicial");
            }
            opt(&mut doc, "recipient", recipient);
            open(
                client,
                opts,
                json,
                "permission.request",
                None,
                doc,
                vec![NodeId::new(to)?],
            )
            .await
        }
        PermissionCmd::Grant { on, conditions } => {
            let mut doc = Document::new().with("request", request_of(client, &on).await?);
            opt(&mut doc, "conditions", conditions);
            step(client, opts, json, "permission.grant", &on, doc).await
        }
        PermissionCmd::Deny { on, reason } => {
            let doc = Document::new()
                .with("request", request_of(client, &on).await?)
                .with("reason", reason);
            step(client, opts, json, "permission.deny", &on, doc).await
        }
    }
}

pub(crate) async fn case_list(client: &mut Client, json: bool) -> Result<()> {
    list(client, json, None).await
}

pub(crate) async fn case_timeline(client: &mut Client, json: bool, case_ref: &str) -> Result<()> {
    show(client, json, case_ref).await
}
