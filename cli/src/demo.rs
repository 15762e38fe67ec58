//! `liaison demo`: the demo federation of docs/domain.md §5, started on this machine (temporary
//! stores, development certificates, free loopback ports), with real nodes exchanging real
//! signed messages over QUIC. Every envelope and receipt is then verified independently of
//! the nodes that made them, against the signed roster; the command exits 0 only if all of
//! them verify.

use std::collections::HashMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use liaison_node::{ActRequest, Config, EnrollRequest, Node, StartOptions};
use liaison_protocol::action::{Action, Handling, SignedAction};
use liaison_protocol::audit::EntryKind;
use liaison_protocol::document::{Document, Field};
use liaison_protocol::{
    Digest, Envelope, NodeId, Priority, ReceiptStatus, SignedReceipt, SignedRoster,
};
use serde_json::{Value, json};

/// An officer of the demo federation.
struct DemoOfficer {
    node: &'static str,
    id: &'static str,
    name: &'static str,
    number: &'static str,
    unit: &'static str,
    role: &'static str,
}

const OFFICERS: [DemoOfficer; 7] = [
    DemoOfficer {
        node: "cn-35-psb",
        id: "cn-35-psb/lin.wei",
        name: "Lin Wei",
        number: "350102",
        unit: "Criminal Investigation Corps, anti-trafficking unit",
        role: "investigator",
    },
    DemoOfficer {
        node: "cn-35-psb",
        id: "cn-35-psb/chen.hui",
        name: "Chen Hui",
        number: "350117",
        unit: "Escort team",
        role: "investigator",
    },
    DemoOfficer {
        node: "cn-61-psb",
        id: "cn-61-psb/zhao.lei",
        name: "Zhao Lei",
        number: "610231",
        unit: "Criminal Investigation Corps",
        role: "investigator",
    },
    DemoOfficer {
        node: "cn-6101-mca",
        id: "cn-6101-mca/liu.fang",
        name: "Liu Fang",
        number: "MCA-0415",
        unit: "Foreign-related marriage registration",
        role: "registrar",
    },
    DemoOfficer {
        node: "cn-5325-hekou",
        id: "cn-5325-hekou/yang.bo",
        name: "Yang Bo",
        number: "532501",
        unit: "Hekou port border inspection station",
        role: "border_officer",
    },
    DemoOfficer {
        node: "vn-laocai-bg",
        id: "vn-laocai-bg/nguyen.van.an",
        name: "Nguyen Van An",
        number: "BP-LC-2207",
        unit: "Lao Cai border guard, border liaison office",
        role: "foreign_liaison",
    },
    DemoOfficer {
        node: "cn-jmo",
        id: "cn-jmo/sun.ming",
        name: "Sun Ming",
        number: "110009",
        unit: "Joint-meeting office, supervision division",
        role: "supervisor",
    },
];

/// One officer's step in the demo.
struct DemoStep {
    officer: &'static str,
    kind: &'static str,
    case: &'static str,
    to: &'static [&'static str],
    doc: Document,
    handling: Handling,
    sensitivity: &'static [&'static str],
    abroad: bool,
}

fn text_list(items: &[&str]) -> Field {
    Field::List(items.iter().map(|s| Field::Text((*s).to_owned())).collect())
}

fn demo_steps(now: u64) -> Vec<DemoStep> {
    let step = |officer, kind, case, to, doc| DemoStep {
        officer,
        kind,
        case,
        to,
        doc,
        handling: Handling::H0,
        sensitivity: &[],
        abroad: false,
    };
    let instrument_hash = hex::encode(Digest::of(b"case-filing decision FJ-2026-117 (scan)").0);
    let record = Document::new()
        .with("record_no", "HK-JJ-2026-0311")
        .with(
            "organisations",
            text_list(&["Fujian PSB (escort)", "Lao Cai border guard"]),
        )
        .with("port", "Hekou-Lao Cai")
        .with("time", now)
        .with(
            "persons",
            Field::List(vec![Field::Map(
                Document::new()
                    .with("name", "TRAN Thi B")
                    .with("sex", "female")
                    .with("birth_date", "2004-01-20")
                    .with("nationality", "VNM")
                    .with("document_no", "LC-TD-2026-0093")
                    .with("nationality_reference", "LC-2026-1187")
                    .with("belongings", "one bag, personal papers")
                    .with("minor", false),
            )]),
        )
        .with(
            "dossier",
            Field::List(vec![Field::Map(
                Document::new().with("name", "identification record").with(
                    "sha256",
                    hex::encode(Digest::of(b"identification record").0),
                ),
            )]),
        )
        .with(
            "officers",
            text_list(&["Chen Hui (350117)", "Nguyen Van An (BP-LC-2207)"]),
        );
    vec![
        // A. Cross-province assistance check, Fujian → Shaanxi, under supervision.
        DemoStep {
            handling: Handling::H2,
            sensitivity: &["identity"],
            ..step(
                "cn-35-psb/lin.wei",
                "assist.request",
                "FJ-2026-0042",
                &["cn-61-psb"],
                Document::new()
                    .with("request_no", "FJ-XC-2026-042")
                    .with("case_no", "FJ-2026-0042")
                    .with("action", "identity_check")
                    .with(
                        "subject",
                        Document::new()
                            .with("name", "ZHANG San")
                            .with("sex", "male")
                            .with("birth_date", "1988-03-14")
                            .with("id_number", "610113198803140000"),
                    )
                    .with(
                        "legal_instruments",
                        Field::List(vec![Field::Map(
                            Document::new()
                                .with("type", "case_filing_decision")
                                .with("number", "FJ-LA-2026-117")
                                .with("sha256", instrument_hash),
                        )]),
                    )
                    .with("case_summary", "suspected buyer of a trafficked woman; identity to confirm")
                    .with("contact", "Lin Wei, +86 591 0000 0000"),
            )
        },
        step(
            "cn-jmo/sun.ming",
            "supervision.attach",
            "FJ-2026-0042",
            &["cn-35-psb"],
            Document::new()
                .with("interval_days", 7u64)
                .with("instruction", "listed case: report weekly until concluded"),
        ),
        step(
            "cn-61-psb/zhao.lei",
            "assist.accept",
            "FJ-2026-0042",
            &["cn-35-psb"],
            Document::new()
                .with("assigned_department", "Yanta district criminal investigation brigade")
                .with("assigned_officer", "Zhao Lei"),
        ),
        DemoStep {
            handling: Handling::H2,
            sensitivity: &["identity"],
            ..step(
                "cn-61-psb/zhao.lei",
                "assist.answer",
                "FJ-2026-0042",
                &["cn-35-psb"],
                Document::new().with(
                    "result",
                    "identity confirmed: ZHANG San, household registration Xi'an Yanta district, no criminal record",
                ),
            )
        },
        step(
            "cn-35-psb/lin.wei",
            "supervision.report",
            "FJ-2026-0042",
            &["cn-jmo"],
            Document::new().with("progress", "identity confirmed by Shaanxi within the deadline"),
        ),
        step(
            "cn-35-psb/lin.wei",
            "assist.close",
            "FJ-2026-0042",
            &["cn-61-psb"],
            Document::new().with("note", "answer received"),
        ),
        // B. Foreign-marriage identity check, Xi'an registry → Hekou border station.
        DemoStep {
            sensitivity: &["identity"],
            ..step(
                "cn-6101-mca/liu.fang",
                "marriage_check.request",
                "XA-MR-2026-0311",
                &["cn-5325-hekou"],
                Document::new().with("request_no", "XA-MR-2026-0311").with(
                    "foreign_party",
                    Document::new()
                        .with("names", "NGUYEN Thi A")
                        .with("sex", "female")
                        .with("birth_date", "2001-07-02")
                        .with("nationality", "VNM")
                        .with("passport_no", "C1234567")
                        .with("passport_issuer", "VNM")
                        .with("claimed_entry_date", "2026-09-30"),
                ),
            )
        },
        step(
            "cn-5325-hekou/yang.bo",
            "marriage_check.answer",
            "XA-MR-2026-0311",
            &["cn-6101-mca"],
            Document::new()
                .with("record_found", true)
                .with("lawful_entry", false)
                .with("flags", text_list(&["illegal_entry_suspected"])),
        ),
        DemoStep {
            sensitivity: &["identity", "victim"],
            ..step(
                "cn-6101-mca/liu.fang",
                "marriage_check.referral",
                "XA-MR-2026-0311",
                &["cn-61-psb"],
                Document::new()
                    .with("reason_codes", text_list(&["no_entry_stamp", "broker_involvement"]))
                    .with("summary", "no lawful entry on record; a broker accompanied the couple"),
            )
        },
        // C. Repatriation of a rescued Vietnamese victim, Fujian ↔ Lao Cai (via Hekou).
        DemoStep {
            sensitivity: &["victim"],
            ..step(
                "cn-35-psb/lin.wei",
                "repatriation.open",
                "FJ-REP-2026-007",
                &[],
                Document::new()
                    .with(
                        "victim",
                        Document::new()
                            .with("name", "TRAN Thi B")
                            .with("sex", "female")
                            .with("birth_date", "2004-01-20")
                            .with("nationality", "VNM")
                            .with("minor", false),
                    )
                    .with("consent_notify_origin", true)
                    .with("consent_recorded_by", "Lin Wei, with an interpreter"),
            )
        },
        DemoStep {
            sensitivity: &["identity", "victim"],
            abroad: true,
            ..step(
                "cn-35-psb/lin.wei",
                "repatriation.nationality_request",
                "FJ-REP-2026-007",
                &["vn-laocai-bg"],
                Document::new()
                    .with(
                        "person",
                        Document::new()
                            .with("name", "TRAN Thi B")
                            .with("sex", "female")
                            .with("birth_date", "2004-01-20")
                            .with("nationality", "VNM")
                            .with("place_of_origin", "Bat Xat district, Lao Cai"),
                    )
                    .with("consent_notify_origin", true),
            )
        },
        DemoStep {
            abroad: true,
            ..step(
                "vn-laocai-bg/nguyen.van.an",
                "repatriation.nationality_answer",
                "FJ-REP-2026-007",
                &["cn-35-psb"],
                Document::new()
                    .with("result", "confirmed")
                    .with("reference", "LC-2026-1187"),
            )
        },
        DemoStep {
            abroad: true,
            ..step(
                "vn-laocai-bg/nguyen.van.an",
                "repatriation.travel_document",
                "FJ-REP-2026-007",
                &["cn-35-psb"],
                Document::new()
                    .with("document_no", "LC-TD-2026-0093")
                    .with("issued_at", "2026-11-20")
                    .with("valid_until", "2027-02-20"),
            )
        },
        DemoStep {
            abroad: true,
            ..step(
                "cn-35-psb/lin.wei",
                "repatriation.handover_proposal",
                "FJ-REP-2026-007",
                &["vn-laocai-bg"],
                Document::new()
                    .with("port", "Hekou-Lao Cai")
                    .with("date", "2026-11-25")
                    .with("window_from", "09:00")
                    .with("window_to", "11:00")
                    .with("escorts", text_list(&["Chen Hui (350117)"]))
                    .with("persons", text_list(&["TRAN Thi B"])),
            )
        },
        DemoStep {
            abroad: true,
            ..step(
                "vn-laocai-bg/nguyen.van.an",
                "repatriation.handover_confirmation",
                "FJ-REP-2026-007",
                &["cn-35-psb"],
                Document::new()
                    .with("fixed_time", "09:30")
                    .with("persons_verified", true),
            )
        },
        DemoStep {
            abroad: true,
            sensitivity: &["identity", "victim"],
            ..step(
                "cn-35-psb/chen.hui",
                "repatriation.handover_record",
                "FJ-REP-2026-007",
                &["vn-laocai-bg"],
                Document::new().with("record", record.clone()),
            )
        },
        DemoStep {
            abroad: true,
            sensitivity: &["identity", "victim"],
            ..step(
                "vn-laocai-bg/nguyen.van.an",
                "repatriation.handover_record",
                "FJ-REP-2026-007",
                &["cn-35-psb"],
                Document::new().with("record", record),
            )
        },
        DemoStep {
            abroad: true,
            ..step(
                "vn-laocai-bg/nguyen.van.an",
                "repatriation.receipt_confirmation",
                "FJ-REP-2026-007",
                &["cn-35-psb"],
                Document::new().with("return_certificate_no", "VN-RC-2026-5521"),
            )
        },
        // D. Urgent missing-child alert from Xi'an: every unit within 100 km at once.
        DemoStep {
            sensitivity: &["child", "whereabouts"],
            ..step(
                "cn-61-psb/zhao.lei",
                "alert.issue",
                "SX-ALERT-2026-0093",
                &[],
                Document::new()
                    .with(
                        "child",
                        Document::new()
                            .with("name", "WANG Xiaoming")
                            .with("sex", "male")
                            .with("birth_date", "2022-05-01")
                            .with("description", "4 years old, red jacket, blue trousers"),
                    )
                    .with(
                        "last_seen",
                        Document::new()
                            .with("place", "Xi'an railway station, east square")
                            .with("lat_e6", "34278500")
                            .with("lon_e6", "108961700"),
                    )
                    .with("missing_since", now.saturating_sub(30 * 60 * 1000))
                    .with("contact", "Zhao Lei, +86 29 0000 0000"),
            )
        },
        step(
            "cn-61-psb/zhao.lei",
            "alert.cancel",
            "SX-ALERT-2026-0093",
            &[],
            Document::new()
                .with("reason", "found")
                .with("note", "found safe at the station's police post"),
        ),
    ]
}

/// The state each case must end in, on each node that holds it.
const EXPECTED: [(&str, &str, &str); 9] = [
    ("cn-35-psb", "FJ-2026-0042", "closed"),
    ("cn-61-psb", "FJ-2026-0042", "closed"),
    ("cn-jmo", "FJ-2026-0042", "supervising"),
    ("cn-6101-mca", "XA-MR-2026-0311", "referred"),
    ("cn-5325-hekou", "XA-MR-2026-0311", "answered_discrepancy"),
    ("cn-35-psb", "FJ-REP-2026-007", "receipt_confirmed"),
    ("vn-laocai-bg", "FJ-REP-2026-007", "receipt_confirmed"),
    ("cn-61-psb", "SX-ALERT-2026-0093", "cancelled"),
    ("cn-6101-mca", "SX-ALERT-2026-0093", "cancelled"),
];
/// One message of the timeline, verified.
struct Row {
    from: String,
    to: String,
    via: Option<String>,
    kind: String,
    priority: Priority,
    sent_at: u64,
    receipt_at: Option<u64>,
    envelope_ok: Result<(), String>,
    receipt_ok: Result<String, String>,
    inbox_ok: bool,
    /// The officer-signed action in the body: who signed it.
    action_ok: Result<String, String>,
    case_ref: Option<String>,
}

pub(crate) async fn run(json_out: bool) -> Result<ExitCode> {
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let spec = liaison_certs_dev::demo_spec();
    let mut sockets = HashMap::new();
    for m in &spec.members {
        sockets.insert(m.id.clone(), UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?);
    }
    let addrs: HashMap<String, _> = sockets
        .iter()
        .map(|(k, s)| Ok((k.clone(), s.local_addr()?)))
        .collect::<Result<_>>()?;
    let generated = liaison_certs_dev::generate(&spec, dir.path(), &|id| addrs[id])?;
    let spec_federation = spec.federation.clone();
    if !json_out {
        outln!(
            "liaison demo: federation {} with {} nodes on 127.0.0.1 (development certificates, stores in a temporary directory)",
            spec.federation,
            spec.members.len()
        );
    }

    let mut nodes: HashMap<String, Node> = HashMap::new();
    for (id, path) in &generated.configs {
        let cfg = Config::load(path)?;
        let socket = sockets.remove(id.as_str()).context("socket")?;
        let node = Node::start(
            cfg,
            StartOptions {
                socket: Some(socket),
                clock: None,
            },
        )
        .await
        .with_context(|| format!("starting {id}"))?;
        nodes.insert(id.to_string(), node);
    }

    // Officers: personal keys (files, mode 0600) enrolled at their nodes.
    let mut officers: HashMap<&str, (SigningKey, Vec<u8>)> = HashMap::new();
    for o in &OFFICERS {
        let key = liaison_node::identity::generate_signing_key(
            &dir.path()
                .join(format!("{}.key.pem", o.id.replace('/', "_"))),
        )?;
        let view = nodes[o.node]
            .enroll_officer(EnrollRequest {
                id: o.id.into(),
                name: o.name.into(),
                number: o.number.into(),
                unit: o.unit.into(),
                role: o.role.into(),
                public_key: hex::encode(key.verifying_key().to_bytes()),
            })
            .await
            .with_context(|| format!("enrolling {}", o.id))?;
        let credential = base64::engine::general_purpose::STANDARD.decode(view.credential)?;
        officers.insert(o.id, (key, credential));
    }

    // The workflows: each step waits until the previous one reached its recipients.
    let mut sent: Vec<(String, String)> = Vec::new(); // (sender, message id)
    for s in demo_steps(liaison_node::now_ms()) {
        let o = OFFICERS
            .iter()
            .find(|o| o.id == s.officer)
            .context("demo officer")?;
        let (key, credential) = &officers[s.officer];
        let spec = liaison_protocol::workflow::spec(s.kind).context("demo kind")?;
        let action = Action {
            federation: spec_federation.clone(),
            node: NodeId::new(o.node)?,
            kind: s.kind.into(),
            case_ref: s.case.into(),
            at: liaison_node::now_ms(),
            purpose: spec.purpose.into(),
            handling: s.handling,
            sensitivity: s.sensitivity.iter().map(|f| (*f).to_owned()).collect(),
            retention_days: 1825,
            abroad: s.abroad,
            document: s.doc,
            derived_from: Vec::new(),
            credential: Some(credential.clone()),
        };
        let signed = action.sign(key);
        let to =
            s.to.iter()
                .map(|t| NodeId::new(*t))
                .collect::<Result<Vec<_>, _>>()?;
        let r = nodes[o.node]
            .act(ActRequest {
                action: base64::engine::general_purpose::STANDARD.encode(signed.bytes()),
                to,
                priority: None,
                in_reply_to: None,
            })
            .await
            .with_context(|| format!("{} signing {} on {}", s.officer, s.kind, s.case))?;
        for m in r.messages {
            wait_delivered(&nodes[o.node], &m.message_id).await?;
            sent.push((o.node.to_owned(), m.message_id));
        }
    }
    // Verify everything from the bytes, against the signed roster alone.
    let roster_bytes = std::fs::read(generated.dir.join("roster.cbor"))?;
    let authority = liaison_protocol::PublicKey::from_bytes(
        &hex::decode(&generated.authority_key_hex)?
            .try_into()
            .map_err(|_| anyhow::anyhow!("authority key"))?,
    )?;
    let roster = SignedRoster::open(&roster_bytes, &authority)?;
    let mut rows = Vec::new();
    for (sender, id) in &sent {
        rows.push(verify(&nodes, &roster, sender, id).await?);
    }
    rows.sort_by_key(|r| r.sent_at);
    let mut ok = rows.iter().all(|r| {
        r.envelope_ok.is_ok() && r.receipt_ok.is_ok() && r.inbox_ok && r.action_ok.is_ok()
    });

    // Every case ended where the workflow says, on both sides.
    let mut cases = Vec::new();
    for (node, case_ref, expected) in EXPECTED {
        let view = nodes[node].case(case_ref).await?;
        let state = view
            .as_ref()
            .map_or("missing".to_owned(), |v| v.case.state.name().to_owned());
        let mut good = state == expected;
        let mut signatures = Vec::new();
        if let Some(v) = &view {
            for sig in v.case.handover_signatures() {
                signatures.push(format!("{} ({})", sig.officer, sig.node));
            }
            if v.case.workflow == liaison_protocol::workflow::Workflow::Repatriation {
                good &= signatures.len() == 2;
            }
        }
        ok &= good;
        cases.push(json!({
            "node": node, "case_ref": case_ref, "state": state, "expected": expected,
            "handover_signatures": signatures, "ok": good,
            "timeline": view.map(|v| v.timeline),
        }));
    }

    // Every node's audit log: recomputed, checkpointed, and witnessed by its direct peers.
    let mut ids: Vec<&String> = nodes.keys().collect();
    ids.sort();
    let mut audits = Vec::new();
    for id in ids {
        let node = &nodes[id];
        let outcomes = node.witness_round().await?;
        let cosigners: Vec<String> = outcomes
            .iter()
            .filter(|o| o.result.is_ok())
            .map(|o| o.witness.clone())
            .collect();
        let report = node.audit_verify().await?;
        let good = report.first_problem.is_none() && cosigners.len() == outcomes.len();
        ok &= good;
        audits.push(json!({
            "node": id, "entries": report.entries, "signatures_checked": report.signatures_checked,
            "problem": report.first_problem, "cosigned_by": cosigners, "ok": good,
        }));
    }

    for node in nodes.values() {
        node.shutdown().await;
    }
    report(&rows, &cases, &audits, ok, json_out, started.elapsed());
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn wait_delivered(node: &Node, id: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(m) = node.message(id).await? {
            let state = serde_json::to_value(&m.state)?;
            match state["state"].as_str() {
                Some("delivered") => return Ok(()),
                Some("queued" | "in_custody") => {}
                _ => bail!("message {id} from {} ended as {state}", node.id()),
            }
        }
        if Instant::now() > deadline {
            bail!("message {id} from {} not delivered within 60 s", node.id());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Verifies one message: the sender's envelope (from its audit log), the receipt it holds,
/// the recipient's "received" log entry the receipt points to, and the recipient's inbox.
async fn verify(
    nodes: &HashMap<String, Node>,
    roster: &SignedRoster,
    sender: &str,
    id: &str,
) -> Result<Row> {
    use base64::Engine as _;
    let r = roster.roster();
    let node = &nodes[sender];
    let view = node.message(id).await?.context("message vanished")?;
    let envelope = node
        .log_entries(0, node.log_len())
        .await?
        .into_iter()
        .find(|(_, e)| {
            e.kind == EntryKind::MessageSent
                && Envelope::peek_unverified(&e.object).is_some_and(|(_, h)| h.id.to_hex() == id)
        })
        .map(|(_, e)| e.object)
        .context("no audit entry for a sent message")?;
    let env = Envelope::open(&envelope, |kid| r.signer(kid));
    let envelope_ok = env.as_ref().map(|_| ()).map_err(ToString::to_string);
    let (h, digest) = match &env {
        Ok(e) => (e.header().clone(), e.digest()),
        Err(_) => bail!("envelope of {id} does not verify"),
    };
    let proof = view
        .proof
        .as_deref()
        .map(|p| base64::engine::general_purpose::STANDARD.decode(p))
        .transpose()?;
    let mut receipt_at = None;
    let receipt_ok = match proof {
        None => Err("no receipt".to_owned()),
        Some(p) => match SignedReceipt::open(&p, |kid| r.signer(kid)) {
            Err(e) => Err(e.to_string()),
            Ok(rc) => {
                let rc = rc.receipt();
                receipt_at = Some(rc.at);
                let recipient = &nodes[rc.recipient.as_str()];
                let logged = match rc.log_ref.as_ref() {
                    Some((origin, index)) if *origin == format!("{}/log", rc.recipient) => {
                        recipient
                            .log_entries(*index, index + 1)
                            .await
                            .ok()
                            .and_then(|v| v.into_iter().next())
                            .is_some_and(|(_, e)| {
                                e.kind == EntryKind::MessageReceived && e.object == envelope
                            })
                    }
                    _ => false,
                };
                if rc.message_digest != digest {
                    Err("receipt names another envelope".into())
                } else if rc.recipient != h.to {
                    Err(format!(
                        "receipt signed by {}, not the recipient",
                        rc.recipient
                    ))
                } else if rc.status != ReceiptStatus::Delivered {
                    Err(format!("receipt status {:?}", rc.status))
                } else if !logged {
                    Err("receipt's log reference does not point at the received entry".into())
                } else {
                    Ok(format!(
                        "{}/log#{}",
                        rc.recipient,
                        rc.log_ref.as_ref().map_or(0, |l| l.1)
                    ))
                }
            }
        },
    };
    let inbox_ok = nodes[h.to.as_str()]
        .inbox(1000, false)
        .await?
        .iter()
        .filter(|m| m.message_id == id)
        .count()
        == 1;
    let body = nodes[h.to.as_str()]
        .inbox(1000, true)
        .await?
        .into_iter()
        .find(|m| m.message_id == id)
        .and_then(|m| m.body);
    let action_ok = match body {
        None => Err("body missing at the recipient".to_owned()),
        Some(b) => {
            let b = base64::engine::general_purpose::STANDARD.decode(b)?;
            if Digest::of(&b).0 != h.body_hash {
                Err("body does not match the envelope's hash".to_owned())
            } else {
                SignedAction::open(&b, r)
                    .map(|a| match a.officer() {
                        Some(o) => format!("{} ({}, {})", o.name, o.id, o.role.name()),
                        None => format!("{} node key (automatic step)", a.action().node),
                    })
                    .map_err(|e| e.to_string())
            }
        }
    };
    let via = r
        .path(&h.from, &h.to)
        .ok()
        .filter(|p| p.len() > 2)
        .map(|p| {
            p[1..p.len() - 1]
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        });
    Ok(Row {
        from: h.from.to_string(),
        to: h.to.to_string(),
        via,
        kind: h.kind.clone(),
        priority: h.priority,
        sent_at: h.sent_at,
        receipt_at,
        envelope_ok,
        receipt_ok,
        inbox_ok,
        action_ok,
        case_ref: h.case_ref.clone(),
    })
}

fn report(
    rows: &[Row],
    cases: &[Value],
    audits: &[Value],
    ok: bool,
    json_out: bool,
    took: Duration,
) {
    let t0 = rows.first().map_or(0, |r| r.sent_at);
    if json_out {
        let items: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "from": r.from, "to": r.to, "via": r.via, "kind": r.kind,
                    "priority": r.priority.name(), "sent_at": r.sent_at,
                    "receipt_at": r.receipt_at,
                    "envelope_signature": r.envelope_ok.as_ref().map(|()| "verified").map_err(Clone::clone),
                    "receipt": r.receipt_ok.clone(),
                    "in_recipient_inbox_once": r.inbox_ok,
                    "case_ref": r.case_ref,
                    "signed_by_officer": r.action_ok.clone(),
                })
            })
            .collect();
        let v = json!({"ok": ok, "messages": items, "cases": cases, "audit_logs": audits, "seconds": took.as_secs_f64()});
        outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return;
    }
    outln!("");
    outln!(
        "{:>7}  {:<40}  {:<32}  {:<8}  {:>8}  checks",
        "+ms",
        "from → to",
        "kind",
        "priority",
        "receipt"
    );
    for r in rows {
        let route = match &r.via {
            Some(v) => format!("{} → {} (via {v})", r.from, r.to),
            None => format!("{} → {}", r.from, r.to),
        };
        let latency = r.receipt_at.map_or("-".to_owned(), |at| {
            format!("{} ms", at.saturating_sub(r.sent_at))
        });
        let env = match &r.envelope_ok {
            Ok(()) => format!("envelope signed by {} ✓", r.from),
            Err(e) => format!("envelope ✗ {e}"),
        };
        let rc = match &r.receipt_ok {
            Ok(at) => format!("receipt signed by {} ✓ (logged {at})", r.to),
            Err(e) => format!("receipt ✗ {e}"),
        };
        let inbox = if r.inbox_ok {
            "in inbox once ✓"
        } else {
            "inbox ✗"
        };
        let officer = match &r.action_ok {
            Ok(who) => format!("action signed by {who} ✓"),
            Err(e) => format!("action ✗ {e}"),
        };
        outln!(
            "{:>7}  {:<40}  {:<32}  {:<8}  {:>8}  {officer}; {env}; {rc}; {inbox}",
            r.sent_at.saturating_sub(t0),
            route,
            r.kind,
            r.priority.name(),
            latency,
        );
    }
    outln!("");
    outln!("cases (state on each node that holds them):");
    for c in cases {
        let mark = if c["ok"] == true { "✓" } else { "✗" };
        let sigs: Vec<&str> = c["handover_signatures"]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        outln!(
            "  {mark} {:<20} on {:<14} {:<22}{}{}",
            c["case_ref"].as_str().unwrap_or("?"),
            c["node"].as_str().unwrap_or("?"),
            c["state"].as_str().unwrap_or("?").replace('_', " "),
            if c["ok"] == true {
                String::new()
            } else {
                format!(" (expected {})", c["expected"].as_str().unwrap_or("?"))
            },
            if sigs.is_empty() {
                String::new()
            } else {
                format!("  handover record signed by {}", sigs.join(" and "))
            },
        );
        for e in c["timeline"].as_array().into_iter().flatten() {
            outln!(
                "        {:<36} {:<9} by {}",
                e["kind"].as_str().unwrap_or("?"),
                e["direction"].as_str().unwrap_or("?"),
                e["officer"]
                    .as_str()
                    .or_else(|| e["actor"].as_str())
                    .unwrap_or("?"),
            );
        }
    }
    outln!("");
    outln!("audit logs (recomputed from the store, newest checkpoint cosigned by peer agencies):");
    for a in audits {
        let mark = if a["ok"] == true { "✓" } else { "✗" };
        let by: Vec<&str> = a["cosigned_by"]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        outln!(
            "  {mark} {:<14} {:>3} entries, {:>3} signatures verified, checkpoint cosigned by {}{}",
            a["node"].as_str().unwrap_or("?"),
            a["entries"],
            a["signatures_checked"],
            if by.is_empty() {
                "-".to_owned()
            } else {
                by.join(", ")
            },
            a["problem"].as_array().map_or(String::new(), |p| format!(
                "; PROBLEM at entry {}: {}",
                p[0], p[1]
            )),
        );
    }
    outln!("");
    if ok {
        outln!(
            "all {} messages delivered once; every officer, envelope and receipt signature verified against the roster; {} case states as expected; every audit log verified and witnessed ({:.1} s)",
            rows.len(),
            cases.len(),
            took.as_secs_f64()
        );
    } else {
        outln!("VERIFICATION FAILED: see ✗ above");
    }
}
