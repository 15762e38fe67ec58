//! `liaison demo`: the demo federation of DOMAIN.md §5, started on this machine (temporary
//! stores, development certificates, free loopback ports), with real nodes exchanging real
//! signed messages over QUIC. Every envelope and receipt is then verified independently of
//! the nodes that made them, against the signed roster; the command exits 0 only if all of
//! them verify.

use std::collections::HashMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use liaison_node::{Config, Node, SendRequest, StartOptions};
use liaison_protocol::audit::EntryKind;
use liaison_protocol::{Envelope, NodeId, Priority, ReceiptStatus, SignedReceipt, SignedRoster};
use serde_json::{Value, json};

/// One step of the demo: who sends what to whom.
struct Step {
    from: &'static str,
    to: &'static str,
    kind: &'static str,
    priority: Priority,
    case: &'static str,
    body: Value,
    /// Index of the step this one answers.
    answers: Option<usize>,
}

fn steps() -> Vec<Step> {
    let step = |from, to, kind, case, body, answers| Step {
        from,
        to,
        kind,
        priority: Priority::Routine,
        case,
        body,
        answers,
    };
    vec![
        step(
            "cn-35-psb",
            "cn-61-psb",
            "assist.request",
            "FJ-2026-0042",
            json!({"request_no": "闽公协〔2026〕042", "case_no": "FJ-2026-0042",
                   "action": "identity_check",
                   "subject": {"name": "ZHANG San", "sex": "M", "birth_date": "1988-03-14"},
                   "legal_instruments": [{"type": "case_filing_decision", "number": "闽公立〔2026〕17"}],
                   "deadline_days": 7}),
            None,
        ),
        step(
            "cn-61-psb",
            "cn-35-psb",
            "assist.answer",
            "FJ-2026-0042",
            json!({"result": "identity_confirmed", "household_registration": "Xi'an, Yanta district"}),
            Some(0),
        ),
        step(
            "cn-6101-mca",
            "cn-5325-hekou",
            "marriage_check.request",
            "XA-MR-2026-0311",
            json!({"foreign_party": {"names": "NGUYEN Thi A", "sex": "F", "birth_date": "2001-07-02",
                   "nationality": "VNM", "passport": "C1234567"}, "claimed_entry": "2026-09-30"}),
            None,
        ),
        step(
            "cn-5325-hekou",
            "cn-6101-mca",
            "marriage_check.answer",
            "XA-MR-2026-0311",
            json!({"record_found": true, "lawful_entry": false,
                   "flags": ["illegal_entry_suspected"]}),
            Some(2),
        ),
        step(
            "cn-35-psb",
            "vn-laocai-bg",
            "repatriation.nationality_check",
            "FJ-REP-2026-007",
            json!({"person": {"name": "TRAN Thi B", "sex": "F", "birth_date": "2004-01-20"},
                   "consent_to_notify": true}),
            None,
        ),
        step(
            "vn-laocai-bg",
            "cn-35-psb",
            "repatriation.nationality_answer",
            "FJ-REP-2026-007",
            json!({"result": "confirmed", "reference": "LC-2026-1187"}),
            Some(4),
        ),
    ]
}

/// The flash alert that goes from Shaanxi to every domestic unit.
const ALERT_TO: [&str; 3] = ["cn-35-psb", "cn-6101-mca", "cn-5325-hekou"];

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
    if !json_out {
        println!(
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
                api_socket: false,
            },
        )
        .await
        .with_context(|| format!("starting {id}"))?;
        nodes.insert(id.to_string(), node);
    }

    // Run the exchanges: each answer waits for the message it answers.
    let mut sent: Vec<(String, String)> = Vec::new(); // (sender, message id)
    for s in steps() {
        let reply_to = match s.answers {
            Some(i) => {
                let (sender, id) = sent[i].clone();
                wait_delivered(&nodes[&sender], &id).await?;
                Some(id)
            }
            None => None,
        };
        let r = nodes[s.from]
            .send(SendRequest {
                to: NodeId::new(s.to)?,
                kind: s.kind.into(),
                body: serde_json::to_vec(&s.body)?,
                priority: s.priority,
                expires_in_ms: Some(24 * 3600 * 1000),
                case_ref: Some(s.case.into()),
                in_reply_to: reply_to,
            })
            .await
            .with_context(|| format!("{} sending {}", s.from, s.kind))?;
        sent.push((s.from.into(), r.message_id));
    }
    for to in ALERT_TO {
        let r = nodes["cn-61-psb"]
            .send(SendRequest {
                to: NodeId::new(to)?,
                kind: "alert.issue".into(),
                body: serde_json::to_vec(&json!({
                    "alert_no": "SX-ALERT-2026-0093", "child": {"sex": "M", "age": 4},
                    "last_seen": "Xi'an railway station", "missing_hours": 1, "radius_km": 100
                }))?,
                priority: Priority::Flash,
                expires_in_ms: Some(6 * 3600 * 1000),
                case_ref: Some("SX-ALERT-2026-0093".into()),
                in_reply_to: None,
            })
            .await?;
        sent.push(("cn-61-psb".into(), r.message_id));
    }
    for (sender, id) in &sent {
        wait_delivered(&nodes[sender], id).await?;
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
        rows.push(verify(&nodes, &roster, sender, id)?);
    }
    rows.sort_by_key(|r| r.sent_at);
    let mut ok = rows
        .iter()
        .all(|r| r.envelope_ok.is_ok() && r.receipt_ok.is_ok() && r.inbox_ok);

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
        let report = node.audit_verify()?;
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
    report(&rows, &audits, ok, json_out, started.elapsed());
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn wait_delivered(node: &Node, id: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(m) = node.message(id)? {
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
fn verify(
    nodes: &HashMap<String, Node>,
    roster: &SignedRoster,
    sender: &str,
    id: &str,
) -> Result<Row> {
    use base64::Engine as _;
    let r = roster.roster();
    let node = &nodes[sender];
    let view = node.message(id)?.context("message vanished")?;
    let envelope = node
        .log_entries(0, node.log_len())?
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
                let logged = rc.log_ref.as_ref().is_some_and(|(origin, index)| {
                    *origin == format!("{}/log", rc.recipient)
                        && recipient
                            .log_entries(*index, index + 1)
                            .ok()
                            .and_then(|v| v.into_iter().next())
                            .is_some_and(|(_, e)| {
                                e.kind == EntryKind::MessageReceived && e.object == envelope
                            })
                });
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
        .inbox(1000, false)?
        .iter()
        .filter(|m| m.message_id == id)
        .count()
        == 1;
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
    })
}

fn report(rows: &[Row], audits: &[Value], ok: bool, json_out: bool, took: Duration) {
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
                })
            })
            .collect();
        let v = json!({"ok": ok, "messages": items, "audit_logs": audits, "seconds": took.as_secs_f64()});
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return;
    }
    println!();
    println!(
        "{:>7}  {:<40}  {:<32}  {:<8}  {:>8}  checks",
        "+ms", "from → to", "kind", "priority", "receipt"
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
        println!(
            "{:>7}  {:<40}  {:<32}  {:<8}  {:>8}  {env}; {rc}; {inbox}",
            r.sent_at.saturating_sub(t0),
            route,
            r.kind,
            r.priority.name(),
            latency,
        );
    }
    println!();
    println!(
        "audit logs (recomputed from the store, newest checkpoint cosigned by peer agencies):"
    );
    for a in audits {
        let mark = if a["ok"] == true { "✓" } else { "✗" };
        let by: Vec<&str> = a["cosigned_by"]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        println!(
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
    println!();
    if ok {
        println!(
            "all {} messages delivered once, every envelope and receipt signature verified against the roster, every audit log verified and witnessed ({:.1} s)",
            rows.len(),
            took.as_secs_f64()
        );
    } else {
        println!("VERIFICATION FAILED: see ✗ above");
    }
}
