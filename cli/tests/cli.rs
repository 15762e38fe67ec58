//! The `liaison` binary as an operator uses it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{BIN, json, liaison, start_nodes, wait_until};

#[test]
fn demo_verifies_everything() {
    let out = liaison(None, &["demo", "--json"]);
    let v = json(&out);
    assert_eq!(v["ok"], true);
    let msgs = v["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 19);
    assert!(
        msgs.iter()
            .all(|m| m["envelope_signature"]["Ok"] == "verified")
    );
    // Every body is an action signed by a named officer.
    assert!(
        msgs.iter()
            .all(|m| m["signed_by_officer"]["Ok"].is_string())
    );
    assert!(msgs.iter().any(|m| m["via"] == "cn-5325-hekou"));
    // The three workflows and the alert end where they should, on both sides.
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 9);
    assert!(cases.iter().all(|c| c["ok"] == true), "{cases:?}");
    let handover = cases
        .iter()
        .find(|c| c["case_ref"] == "FJ-REP-2026-007")
        .unwrap();
    assert_eq!(handover["handover_signatures"].as_array().unwrap().len(), 2);
}

#[test]
fn operator_session_with_two_node_processes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fed");
    // A free base port: the OS picks one, the nodes take it and the next ones.
    let base = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .min(60_000);
    let v = json(&liaison(
        None,
        &[
            "dev-certs",
            "--out",
            out.to_str().unwrap(),
            "--base-port",
            &base.to_string(),
            "--json",
        ],
    ));
    assert_eq!(v["federation"], "cn-atip-demo");
    let fj = out.join("nodes/cn-35-psb/node.toml");
    let sx = out.join("nodes/cn-61-psb/node.toml");

    // A config that does not say dev_mode: development material is refused, with a hint,
    // unless the operator passes --dev.
    for cfg in [&fj, &sx] {
        let text = std::fs::read_to_string(cfg).unwrap();
        std::fs::write(cfg, text.replace("dev_mode = true", "dev_mode = false")).unwrap();
    }
    let refused = liaison(Some(&fj), &["node", "start"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("development roster"), "{err}");

    let mut nodes = start_nodes(&[&fj, &sx], &["--dev"]);
    let sent = json(&liaison(
        Some(&fj),
        &[
            "send",
            "--to",
            "cn-61-psb",
            "--kind",
            "bus.test",
            "--body",
            "identity check: ZHANG San",
            "--priority",
            "urgent",
            "--case",
            "FJ-2026-0042",
            "--json",
        ],
    ));
    let id = sent["message_id"].as_str().unwrap().to_owned();
    wait_until(Duration::from_secs(20), || {
        let v = json(&liaison(Some(&fj), &["show", &id, "--json"]));
        v["state"]["state"] == "delivered"
    });
    let inbox = json(&liaison(Some(&sx), &["inbox", "--body", "--json"]));
    assert_eq!(inbox.as_array().unwrap().len(), 1);
    assert_eq!(inbox[0]["message_id"], id.as_str());
    assert_eq!(inbox[0]["case_ref"], "FJ-2026-0042");
    let seq = inbox[0]["inbox_seq"].as_u64().unwrap().to_string();
    json(&liaison(Some(&sx), &["ack", &seq, "--json"]));
    assert!(
        json(&liaison(Some(&sx), &["inbox", "--json"]))
            .as_array()
            .unwrap()
            .is_empty()
    );
    // Human output too.
    let text = liaison(Some(&fj), &["outbox"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("delivered") && text.contains("cn-61-psb"),
        "{text}"
    );
    // The roster in force, for an auditor: members with status and keys, and the signed bytes
    // as the authority signed them.
    let exported = dir.path().join("roster-export.cbor");
    let r = json(&liaison(
        Some(&fj),
        &[
            "roster",
            "show",
            "--json",
            "--out",
            exported.to_str().unwrap(),
        ],
    ));
    let ids: Vec<&str> = r["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"cn-35-psb") && ids.contains(&"cn-61-psb"),
        "{r}"
    );
    assert!(r["members"][0]["status"] == "active", "{r}");
    assert_eq!(r["members"][0]["signing_key"].as_str().unwrap().len(), 64);
    assert_eq!(
        std::fs::read(&exported).unwrap(),
        std::fs::read(out.join("roster.cbor")).unwrap()
    );
    let text = liaison(Some(&fj), &["roster", "show"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("cn-61-psb") && text.contains("active"),
        "{text}"
    );
    // The recipient's audit log verifies, and it can prove receipt to anyone with the roster.
    let report = json(&liaison(Some(&sx), &["audit", "verify", "--json"]));
    assert!(report["first_problem"].is_null(), "{report}");
    let bundle = dir.path().join("receipt-evidence.cbor");
    json(&liaison(
        Some(&sx),
        &[
            "audit",
            "prove",
            &id,
            "--out",
            bundle.to_str().unwrap(),
            "--json",
        ],
    ));
    let authority = v["authority_key"].as_str().unwrap();
    let roster = out.join("roster.cbor");
    let checked = json(&liaison(
        None,
        &[
            "audit",
            "check-bundle",
            bundle.to_str().unwrap(),
            "--roster",
            roster.to_str().unwrap(),
            "--authority-key",
            authority,
            "--json",
        ],
    ));
    assert_eq!(checked["ok"], true);
    assert_eq!(checked["node"], "cn-61-psb");
    let export = dir.path().join("export");
    let exported = json(&liaison(
        Some(&sx),
        &[
            "audit",
            "export",
            "--from",
            "0",
            "--to",
            "3",
            "--out",
            export.to_str().unwrap(),
            "--json",
        ],
    ));
    for f in exported["files"].as_array().unwrap() {
        let checked = json(&liaison(
            None,
            &[
                "audit",
                "check-bundle",
                f.as_str().unwrap(),
                "--roster",
                roster.to_str().unwrap(),
                "--authority-key",
                authority,
                "--json",
            ],
        ));
        assert_eq!(checked["ok"], true);
    }
    // The whole case, in one file, checkable with the authority key alone.
    let case = dir.path().join("case.cbor");
    let made = json(&liaison(
        Some(&fj),
        &[
            "case",
            "evidence",
            "FJ-2026-0042",
            "--out",
            case.to_str().unwrap(),
            "--json",
        ],
    ));
    assert!(made["entries"].as_u64().unwrap() >= 2, "{made}");
    let checked = json(&liaison(
        None,
        &[
            "case",
            "check",
            case.to_str().unwrap(),
            "--authority-key",
            authority,
            "--json",
        ],
    ));
    assert_eq!(checked["ok"], true);
    let kinds: Vec<&str> = checked["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"message_sent") && kinds.contains(&"receipt_received"),
        "{kinds:?}"
    );
    // The log only grows: a consistency proof between two of fj's checkpoints, checked offline.
    let size_of = |cfg: &Path| -> String {
        let v = json(&liaison(Some(cfg), &["audit", "checkpoint", "--json"]));
        v["checkpoint"]
            .as_str()
            .unwrap()
            .lines()
            .nth(1)
            .unwrap()
            .to_owned()
    };
    let older = size_of(&fj);
    json(&liaison(
        Some(&fj),
        &[
            "send",
            "--to",
            "cn-61-psb",
            "--kind",
            "bus.test",
            "--body",
            "more",
            "--json",
        ],
    ));
    let newer = size_of(&fj);
    assert!(newer.parse::<u64>().unwrap() > older.parse::<u64>().unwrap());
    let proof = dir.path().join("consistency.cbor");
    json(&liaison(
        Some(&fj),
        &[
            "audit",
            "prove",
            "--consistency",
            &older,
            &newer,
            "--out",
            proof.to_str().unwrap(),
            "--json",
        ],
    ));
    let checked = json(&liaison(
        None,
        &[
            "audit",
            "check-bundle",
            proof.to_str().unwrap(),
            "--roster",
            roster.to_str().unwrap(),
            "--authority-key",
            authority,
            "--json",
        ],
    ));
    assert_eq!(checked["ok"], true, "{checked}");
    assert_eq!(checked["node"], "cn-35-psb");
    assert_eq!(checked["new_size"].to_string(), newer);
    let mut tampered = std::fs::read(&bundle).unwrap();
    tampered[40] ^= 1;
    std::fs::write(&bundle, tampered).unwrap();
    let bad = liaison(
        None,
        &[
            "audit",
            "check-bundle",
            bundle.to_str().unwrap(),
            "--roster",
            roster.to_str().unwrap(),
            "--authority-key",
            authority,
        ],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stdout).contains("DOES NOT VERIFY"));
    let peers = json(&liaison(Some(&fj), &["peers", "--json"]));
    assert_eq!(peers[0]["peer"], "cn-61-psb");
    // Errors say what to do.
    let bad = liaison(
        Some(&fj),
        &[
            "send",
            "--to",
            "cn-61-psb",
            "--kind",
            "bus.test",
            "--body",
            "x",
            "--priority",
            "asap",
        ],
    );
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("use routine, priority, urgent or flash")
    );
    let forbidden = liaison(
        Some(&fj),
        &[
            "send",
            "--to",
            "cn-6101-mca",
            "--kind",
            "marriage_check.answer",
            "--body",
            "x",
        ],
    );
    assert!(String::from_utf8_lossy(&forbidden.stderr).contains("policy forbids"));
    officer_session(dir.path(), &fj, &sx);
    // The border: Hekou, Lao Cai behind it, and the Xi'an registry.
    let hk = out.join("nodes/cn-5325-hekou/node.toml");
    let vn = out.join("nodes/vn-laocai-bg/node.toml");
    let xa = out.join("nodes/cn-6101-mca/node.toml");
    nodes
        .0
        .append(&mut start_nodes(&[&hk, &vn, &xa], &["--dev"]).0);
    border_session(dir.path(), &fj, &hk, &vn, &xa, authority);
    for cfg in [&fj, &sx, &hk, &vn, &xa] {
        liaison(Some(cfg), &["node", "stop"]);
    }
    for c in &mut nodes.0 {
        let status = c.wait().unwrap();
        assert!(status.success());
    }
    nodes.0.clear();
    // A stopped node: the error says how to start it.
    let down = liaison(Some(&fj), &["status"]);
    assert!(String::from_utf8_lossy(&down.stderr).contains("liaison node start"));
}

/// Officers work a case through the CLI: keys, enrollment, request, accept, answer,
/// timeline, refusals with a reason.
fn officer_session(dir: &Path, fj: &Path, sx: &Path) {
    let path = |n: &str| dir.join(n).to_str().unwrap().to_owned();
    let enroll = |cfg: &Path, key: &str, id: &str, name: &str, role: &str| {
        let k = json(&liaison(
            None,
            &["officer", "keygen", "--out", &path(key), "--json"],
        ));
        let pk = k["public_key"].as_str().unwrap().to_owned();
        let v = json(&liaison(
            Some(cfg),
            &[
                "officer",
                "enroll",
                "--id",
                id,
                "--name",
                name,
                "--number",
                "350102",
                "--unit",
                "CID",
                "--role",
                role,
                "--public-key",
                &pk,
                "--json",
            ],
        ));
        assert_eq!(v["id"], id);
    };
    enroll(
        fj,
        "lin.key",
        "cn-35-psb/lin.wei",
        "Lin Wei",
        "investigator",
    );
    enroll(
        sx,
        "zhao.key",
        "cn-61-psb/zhao.lei",
        "Zhao Lei",
        "investigator",
    );
    std::fs::write(dir.join("decision.pdf"), b"case-filing decision (scan)").unwrap();
    let instrument = format!(
        "case_filing_decision:FJ-LA-2026-117:{}",
        path("decision.pdf")
    );
    let lin = path("lin.key");
    let zhao = path("zhao.key");
    let r = json(&liaison(
        Some(fj),
        &[
            "--officer",
            &lin,
            "assist",
            "request",
            "--to",
            "cn-61-psb",
            "--case",
            "FJ-2026-0050",
            "--request-no",
            "FJ-XC-2026-050",
            "--case-no",
            "FJ-2026-0050",
            "--action",
            "identity_check",
            "--subject-name",
            "ZHANG San",
            "--subject-sex",
            "male",
            "--instrument",
            &instrument,
            "--summary",
            "identity of a suspect",
            "--contact",
            "Lin Wei",
            "--handling",
            "H2",
            "--sensitivity",
            "identity",
            "--json",
        ],
    ));
    assert_eq!(r["state"], "sent");
    let state = |cfg: &Path| {
        json(&liaison(
            Some(cfg),
            &["case", "timeline", "FJ-2026-0050", "--json"],
        ))["case"]["state"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    wait_until(Duration::from_secs(20), || {
        liaison(Some(sx), &["case", "timeline", "FJ-2026-0050", "--json"])
            .status
            .success()
    });
    assert_eq!(state(sx), "received");
    json(&liaison(
        Some(sx),
        &[
            "--officer",
            &zhao,
            "assist",
            "accept",
            "FJ-2026-0050",
            "--json",
        ],
    ));
    wait_until(Duration::from_secs(20), || state(fj) == "accepted");
    // The requester cannot answer its own request: a clear error, nothing changes.
    let wrong = liaison(
        Some(fj),
        &[
            "--officer",
            &lin,
            "assist",
            "answer",
            "FJ-2026-0050",
            "--result",
            "x",
        ],
    );
    assert!(!wrong.status.success());
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("refused"), "{err}");
    assert_eq!(state(fj), "accepted");
    // No officer key: the error says how to get one.
    let none = liaison(
        Some(sx),
        &["assist", "answer", "FJ-2026-0050", "--result", "x"],
    );
    assert!(String::from_utf8_lossy(&none.stderr).contains("liaison officer keygen"));
    json(&liaison(
        Some(sx),
        &[
            "--officer",
            &zhao,
            "assist",
            "answer",
            "FJ-2026-0050",
            "--result",
            "identity confirmed",
            "--handling",
            "H2",
            "--json",
        ],
    ));
    wait_until(Duration::from_secs(20), || state(fj) == "answered");
    let text = liaison(Some(fj), &["case", "timeline", "FJ-2026-0050"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("Zhao Lei") && text.contains("signature ✓") && text.contains("answered"),
        "{text}"
    );
    let status = json(&liaison(Some(fj), &["status", "--json"]));
    assert_eq!(status["cases"], 1);
    assert_eq!(status["overdue_cases"], 0);
    let list = String::from_utf8_lossy(&liaison(Some(sx), &["case", "list"]).stdout).to_string();
    assert!(list.contains("FJ-2026-0050"), "{list}");
    let year = liaison_protocol::workflow::year_of(liaison_node::now_ms()).to_string();
    let figures = json(&liaison(
        Some(fj),
        &["report", "annual", "--year", &year, "--dry-run", "--json"],
    ));
    assert_eq!(figures["figures"]["checks_sent"], 1);
}

/// Whether the node's timeline of `case` holds a step of `kind`.
fn has_step(cfg: &Path, case: &str, kind: &str) -> bool {
    let out = liaison(Some(cfg), &["case", "timeline", case, "--json"]);
    out.status.success()
        && serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["timeline"]
            .as_array()
            .is_some_and(|t| t.iter().any(|e| e["kind"] == kind))
}

fn case_state(cfg: &Path, case: &str) -> String {
    let out = liaison(Some(cfg), &["case", "timeline", case, "--json"]);
    if !out.status.success() {
        return "missing".into();
    }
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["case"]["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A marriage check and a repatriation through the officers' commands, across the Hekou relay.
fn border_session(dir: &Path, fj: &Path, hk: &Path, vn: &Path, xa: &Path, authority: &str) {
    let path = |n: &str| dir.join(n).to_str().unwrap().to_owned();
    let enroll = |cfg: &Path, key: &str, id: &str, role: &str| {
        let k = json(&liaison(
            None,
            &["officer", "keygen", "--out", &path(key), "--json"],
        ));
        let pk = k["public_key"].as_str().unwrap().to_owned();
        json(&liaison(
            Some(cfg),
            &[
                "officer",
                "enroll",
                "--id",
                id,
                "--name",
                id,
                "--number",
                "1",
                "--unit",
                "u",
                "--role",
                role,
                "--public-key",
                &pk,
                "--json",
            ],
        ));
        path(key)
    };
    let yang = enroll(hk, "yang.key", "cn-5325-hekou/yang.bo", "border_officer");
    let an = enroll(
        vn,
        "an.key",
        "vn-laocai-bg/nguyen.van.an",
        "foreign_liaison",
    );
    let liu = enroll(xa, "liu.key", "cn-6101-mca/liu.fang", "registrar");
    let lin = path("lin.key");
    let wait = |cfg: &Path, case: &str, state: &str| {
        wait_until(Duration::from_secs(30), || case_state(cfg, case) == state);
    };
    let run = |cfg: &Path, args: &[&str]| {
        let mut a = args.to_vec();
        a.push("--json");
        json(&liaison(Some(cfg), &a))
    };

    // Marriage check, answered with the minimised record.
    run(
        xa,
        &[
            "--officer",
            &liu,
            "marriage",
            "check",
            "--to",
            "cn-5325-hekou",
            "--case",
            "XA-MR-1",
            "--request-no",
            "XA-MR-2026-0311",
            "--names",
            "NGUYEN Thi A",
            "--sex",
            "female",
            "--birth-date",
            "2001-07-02",
            "--nationality",
            "VNM",
            "--passport-no",
            "C1234567",
            "--passport-issuer",
            "VNM",
            "--sensitivity",
            "identity",
        ],
    );
    wait(hk, "XA-MR-1", "submitted");
    run(
        hk,
        &[
            "--officer",
            &yang,
            "marriage",
            "answer",
            "XA-MR-1",
            "--record-found",
            "--last-entry-date",
            "2026-09-30",
            "--flags",
            "illegal_entry_suspected",
        ],
    );
    wait(xa, "XA-MR-1", "answered_discrepancy");

    // Repatriation: Fujian and Lao Cai, every message through Hekou.
    run(
        fj,
        &[
            "--officer",
            &lin,
            "repatriation",
            "open",
            "--case",
            "FJ-REP-1",
            "--name",
            "TRAN Thi B",
            "--sex",
            "female",
            "--nationality",
            "VNM",
            "--consent-notify",
            "yes",
            "--consent-recorded-by",
            "Lin Wei",
        ],
    );
    assert_eq!(case_state(fj, "FJ-REP-1"), "identified");
    // Without --abroad the node refuses to send identity data to a foreign node.
    let refused = liaison(
        Some(fj),
        &[
            "--officer",
            &lin,
            "repatriation",
            "verify-nationality",
            "FJ-REP-1",
            "--to",
            "vn-laocai-bg",
            "--name",
            "TRAN Thi B",
            "--sex",
            "female",
            "--nationality",
            "VNM",
        ],
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("abroad"));
    let abroad = |cfg: &Path, officer: &str, args: &[&str]| {
        let mut a = vec!["--officer", officer, "--abroad"];
        a.extend_from_slice(args);
        run(cfg, &a)
    };
    abroad(
        fj,
        &lin,
        &[
            "repatriation",
            "verify-nationality",
            "FJ-REP-1",
            "--to",
            "vn-laocai-bg",
            "--name",
            "TRAN Thi B",
            "--sex",
            "female",
            "--nationality",
            "VNM",
        ],
    );
    wait(vn, "FJ-REP-1", "nationality_pending");
    abroad(
        vn,
        &an,
        &[
            "repatriation",
            "answer-nationality",
            "FJ-REP-1",
            "--result",
            "confirmed",
            "--reference",
            "LC-2026-1187",
        ],
    );
    wait(fj, "FJ-REP-1", "nationality_confirmed");
    abroad(
        vn,
        &an,
        &[
            "repatriation",
            "travel-document",
            "FJ-REP-1",
            "--document-no",
            "LC-TD-1",
            "--issued",
            "2026-11-20",
            "--valid-until",
            "2027-02-20",
        ],
    );
    wait(fj, "FJ-REP-1", "ready");
    abroad(
        fj,
        &lin,
        &[
            "repatriation",
            "propose-handover",
            "FJ-REP-1",
            "--port",
            "Hekou-Lao Cai",
            "--date",
            "2026-11-25",
            "--window",
            "09:00-11:00",
            "--escorts",
            "Chen Hui",
            "--persons",
            "TRAN Thi B",
        ],
    );
    // The proposal leaves the state at ready: wait for the step itself.
    wait_until(Duration::from_secs(30), || {
        has_step(vn, "FJ-REP-1", "repatriation.handover_proposal")
    });
    abroad(
        vn,
        &an,
        &[
            "repatriation",
            "confirm-handover",
            "FJ-REP-1",
            "--time",
            "09:30",
        ],
    );
    wait(fj, "FJ-REP-1", "handover_scheduled");
    let record = dir.join("record.json");
    std::fs::write(
        &record,
        r#"{"record_no": "HK-JJ-1", "port": "Hekou-Lao Cai", "time": 1764050000000,
            "persons": [{"name": "TRAN Thi B", "sex": "female", "nationality": "VNM", "minor": false}],
            "dossier": [{"name": "identification record", "sha256": "0000000000000000000000000000000000000000000000000000000000000000"}],
            "officers": ["Chen Hui", "Nguyen Van An"]}"#,
    )
    .unwrap();
    let record = record.to_str().unwrap();
    abroad(
        fj,
        &lin,
        &[
            "repatriation",
            "sign-record",
            "FJ-REP-1",
            "--record",
            record,
        ],
    );
    wait_until(Duration::from_secs(30), || {
        json(&liaison(
            Some(vn),
            &["case", "timeline", "FJ-REP-1", "--json"],
        ))["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "repatriation.handover_record")
    });
    // One signature: still scheduled.
    assert_eq!(case_state(vn, "FJ-REP-1"), "handover_scheduled");
    // Vietnam marks its signed record H1: not for judicial proceedings without its permission.
    abroad(
        vn,
        &an,
        &[
            "--handling",
            "H1",
            "repatriation",
            "sign-record",
            "FJ-REP-1",
            "--record",
            record,
        ],
    );
    wait(fj, "FJ-REP-1", "handed_over");
    court_file(dir, fj, vn, &lin, &an, authority);
    abroad(
        vn,
        &an,
        &[
            "repatriation",
            "confirm-receipt",
            "FJ-REP-1",
            "--certificate",
            "VN-RC-1",
        ],
    );
    wait(fj, "FJ-REP-1", "receipt_confirmed");
    let text = liaison(Some(fj), &["repatriation", "show", "FJ-REP-1"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("receipt confirmed") && text.contains("vn-laocai-bg/nguyen.van.an"),
        "{text}"
    );
}

/// A case file for a court through the officers' commands: Vietnam's H1 record is withheld
/// until Vietnam grants its judicial use.
fn court_file(dir: &Path, fj: &Path, vn: &Path, lin: &str, an: &str, authority: &str) {
    let file = dir.join("court.cbor");
    let file = file.to_str().unwrap();
    let make = || {
        json(&liaison(
            Some(fj),
            &[
                "case",
                "evidence",
                "FJ-REP-1",
                "--for-court",
                "--out",
                file,
                "--json",
            ],
        ))
    };
    let check = |json_out: bool| {
        let mut a = vec!["case", "check", file, "--authority-key", authority];
        if json_out {
            a.push("--json");
        }
        liaison(None, &a)
    };
    let made = make();
    assert_eq!(made["records"], 1, "{made}");
    let withheld = made["withheld"][0].clone();
    assert_eq!(withheld["provider"], "vn-laocai-bg", "{made}");
    let message = withheld["message_id"].as_str().unwrap().to_owned();
    let out = check(false);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("(file for a court)")
            && text.contains("handling codes held: H0, H1")
            && text.contains(&format!("WITHHELD: message {message} from vn-laocai-bg")),
        "{text}"
    );
    // Fujian asks for the judicial use; Vietnam grants it.
    let asked = json(&liaison(
        Some(fj),
        &[
            "--officer",
            lin,
            "--abroad",
            "permission",
            "request",
            "--use",
            "judicial",
            "--message",
            &message,
            "--to",
            "vn-laocai-bg",
            "--reason",
            "prosecution of the trafficking case",
            "--json",
        ],
    ));
    let perm = asked["case_ref"].as_str().unwrap().to_owned();
    wait_until(Duration::from_secs(30), || {
        case_state(vn, &perm) == "requested"
    });
    json(&liaison(
        Some(vn),
        &[
            "--officer",
            an,
            "--abroad",
            "permission",
            "grant",
            &perm,
            "--json",
        ],
    ));
    wait_until(Duration::from_secs(30), || {
        case_state(fj, &perm) == "granted"
    });
    let made = make();
    assert_eq!(
        (made["records"].as_u64(), made["permissions"].as_u64()),
        (Some(2), Some(2)),
        "{made}"
    );
    let checked = json(&check(true));
    assert_eq!(checked["ok"], true);
    assert_eq!(checked["withheld"].as_array().unwrap().len(), 0);
    let vn_record = checked["handover_records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["node"] == "vn-laocai-bg")
        .unwrap()
        .clone();
    assert_eq!(vn_record["handling"], "H1");
    assert_eq!(vn_record["permission_case"], perm.as_str());
    // A judicial permission names no recipient.
    let out = liaison(
        Some(fj),
        &[
            "--officer",
            lin,
            "permission",
            "request",
            "--use",
            "judicial",
            "--message",
            &message,
            "--recipient",
            "cn-61-psb",
            "--to",
            "vn-laocai-bg",
            "--reason",
            "x",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--recipient goes only with --use onward"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_reader_that_stops_early_ends_the_output_quietly() {
    // `liaison … | head`: the reader is gone before anything is written.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(BIN)
        .args(["step", "--list"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A real (non-dev) federation from the authority's commands and `liaison init` alone: two
/// provinces join, exchange a message, one is suspended by a newer roster.
#[test]
fn a_federation_founded_with_the_authority_tools() {
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("authority");
    let a = auth.to_str().unwrap();
    let founded = json(&liaison(
        None,
        &[
            "federation",
            "init",
            "--dir",
            a,
            "--id",
            "cn-atip",
            "--json",
        ],
    ));
    let authority_key = founded["authority_key"].as_str().unwrap().to_owned();
    let port = |p: u16| {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
            .saturating_add(p)
            .min(60_000)
    };
    let members = [("cn-35-psb", port(0)), ("cn-61-psb", port(1))];
    for (id, p) in members {
        let listen = format!("127.0.0.1:{p}");
        common::Enrol {
            auth: &auth,
            authority_key: &authority_key,
            id,
            agency: "public_security",
            listen: &listen,
            location: Some("26.07,119.30"),
        }
        .run(&dir.path().join(id));
    }
    // The same join request twice is refused.
    let again = liaison(
        None,
        &[
            "federation",
            "add-member",
            "--dir",
            a,
            "--request",
            dir.path()
                .join("cn-35-psb/join-request.json")
                .to_str()
                .unwrap(),
            "--csr",
            dir.path().join("cn-35-psb/tls.csr.pem").to_str().unwrap(),
            "--agency",
            "public_security",
            "--name",
            "x",
            "--country",
            "CHN",
            "--endpoint",
            "127.0.0.1:1",
        ],
    );
    assert!(!again.status.success());
    // A join request with a certificate request made for another key of the same id: refused.
    let twin = |n: &str| {
        let d = dir.path().join(n);
        json(&liaison(
            None,
            &[
                "init",
                "--id",
                "cn-45-psb",
                "--federation",
                "cn-atip",
                "--authority-key",
                &authority_key,
                "--dir",
                d.to_str().unwrap(),
                "--json",
            ],
        ));
        d
    };
    let (one, two) = (twin("gx-1"), twin("gx-2"));
    let mismatch = liaison(
        None,
        &[
            "federation",
            "add-member",
            "--dir",
            a,
            "--request",
            one.join("join-request.json").to_str().unwrap(),
            "--csr",
            two.join("tls.csr.pem").to_str().unwrap(),
            "--agency",
            "public_security",
            "--name",
            "gx",
            "--country",
            "CHN",
            "--endpoint",
            "127.0.0.1:1",
        ],
    );
    assert!(!mismatch.status.success());
    let err = String::from_utf8_lossy(&mismatch.stderr);
    assert!(
        err.contains("is not the TLS key of the join request"),
        "{err}"
    );
    // A key a member already holds is never given to another use.
    let fj_request: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("cn-35-psb/join-request.json")).unwrap(),
    )
    .unwrap();
    let reused = liaison(
        None,
        &[
            "federation",
            "rotate-key",
            "--dir",
            a,
            "cn-61-psb",
            "--kind",
            "signing",
            "--key",
            fj_request["log_key"].as_str().unwrap(),
        ],
    );
    assert!(!reused.status.success());
    assert!(
        String::from_utf8_lossy(&reused.stderr).contains("a new key must be new"),
        "{}",
        String::from_utf8_lossy(&reused.stderr)
    );
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nfrom = \"public_security\"\nto = \"public_security\"\nkinds = [\"bus.*\", \"assist.*\"]\n",
    )
    .unwrap();
    json(&liaison(
        None,
        &[
            "federation",
            "set-policy",
            "--dir",
            a,
            "--rules",
            rules.to_str().unwrap(),
            "--json",
        ],
    ));
    let signed = json(&liaison(
        None,
        &[
            "federation",
            "sign",
            "--dir",
            a,
            "--valid-days",
            "30",
            "--json",
        ],
    ));
    assert_eq!(signed["serial"], 1);
    for (id, _) in members {
        std::fs::copy(
            auth.join("roster.cbor"),
            dir.path().join(id).join("roster.cbor"),
        )
        .unwrap();
    }
    let fj = dir.path().join("cn-35-psb/node.toml");
    let sx = dir.path().join("cn-61-psb/node.toml");
    // The configuration is checked as the node checks it at start, without starting it.
    let checked = json(&liaison(Some(&fj), &["node", "check-config", "--json"]));
    assert_eq!(checked["ok"], true, "{checked}");
    let key = dir.path().join("cn-61-psb/signing.key.pem");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let unsafe_key = liaison(Some(&sx), &["node", "check-config"]);
    assert!(!unsafe_key.status.success());
    let err = String::from_utf8_lossy(&unsafe_key.stderr);
    assert!(err.contains("signing.key.pem"), "{err}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut nodes = start_nodes(&[&fj, &sx], &[]);
    let sent = json(&liaison(
        Some(&fj),
        &[
            "send",
            "--to",
            "cn-61-psb",
            "--kind",
            "bus.test",
            "--body",
            "hello",
            "--json",
        ],
    ));
    let id = sent["message_id"].as_str().unwrap().to_owned();
    wait_until(Duration::from_secs(20), || {
        json(&liaison(Some(&fj), &["show", &id, "--json"]))["state"]["state"] == "delivered"
    });

    // Shaanxi is suspended: the next roster, applied at Fujian, refuses sending to it.
    json(&liaison(
        None,
        &[
            "federation",
            "suspend",
            "--dir",
            a,
            "cn-61-psb",
            "--reason",
            "audit pending",
            "--json",
        ],
    ));
    json(&liaison(
        None,
        &["federation", "sign", "--dir", a, "--json"],
    ));
    let diff = json(&liaison(
        None,
        &[
            "federation",
            "diff",
            "--dir",
            a,
            auth.join("rosters/0000000001.cbor").to_str().unwrap(),
            auth.join("rosters/0000000002.cbor").to_str().unwrap(),
            "--json",
        ],
    ));
    assert_eq!(diff["changed"][0]["node"], "cn-61-psb", "{diff}");
    assert_eq!(
        diff["changed"][0]["changes"][0]["new"], "suspended",
        "{diff}"
    );
    json(&liaison(
        Some(&fj),
        &[
            "roster",
            "apply",
            auth.join("roster.cbor").to_str().unwrap(),
            "--json",
        ],
    ));
    let refused = liaison(
        Some(&fj),
        &[
            "send",
            "--to",
            "cn-61-psb",
            "--kind",
            "bus.test",
            "--body",
            "after",
        ],
    );
    assert!(!refused.status.success());
    let journal = std::fs::read_to_string(auth.join("journal.log")).unwrap();
    assert!(
        journal.contains("suspended cn-61-psb: audit pending"),
        "{journal}"
    );
    // The node knows when its certificate expires (a year from now: no warning yet), and
    // renewal is one command at each end.
    let status = json(&liaison(Some(&fj), &["status", "--json"]));
    let left = status["tls_not_after"].as_u64().unwrap() / 1000
        - std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
    assert!((360 * 86_400..=366 * 86_400).contains(&left), "{status}");
    assert_eq!(status["tls_renew_now"], false);
    let renewal = json(&liaison(Some(&fj), &["node", "renew-tls", "--json"]));
    let rotated = json(&liaison(
        None,
        &[
            "federation",
            "rotate-key",
            "--dir",
            a,
            "cn-35-psb",
            "--kind",
            "tls",
            "--csr",
            renewal["csr"].as_str().unwrap(),
            "--overlap-days",
            "0",
            "--json",
        ],
    ));
    assert_eq!(rotated["new"], renewal["tls_spki_sha256"]);
    // A second renewal while one is under way is refused.
    assert!(!liaison(Some(&fj), &["node", "renew-tls"]).status.success());
    // Fujian's signing key is rotated too, by one command at each end.
    let rotation = json(&liaison(
        Some(&fj),
        &["node", "rotate-key", "--kind", "signing", "--json"],
    ));
    let new_key = rotation["public_key"].as_str().unwrap().to_owned();
    json(&liaison(
        None,
        &[
            "federation",
            "rotate-key",
            "--dir",
            a,
            "cn-35-psb",
            "--kind",
            "signing",
            "--key",
            &new_key,
            "--json",
        ],
    ));
    json(&liaison(
        None,
        &[
            "federation",
            "reinstate",
            "--dir",
            a,
            "cn-61-psb",
            "--reason",
            "audit closed",
            "--json",
        ],
    ));
    let signed = json(&liaison(
        None,
        &["federation", "sign", "--dir", a, "--json"],
    ));
    // Applied at both while they run (a TLS rotation without overlap takes effect at once):
    // Fujian serves with the new TLS key and the certificate the roster carries, and signs
    // with the new key, without a restart.
    for cfg in [&fj, &sx] {
        json(&liaison(
            Some(cfg),
            &[
                "roster",
                "apply",
                auth.join("roster.cbor").to_str().unwrap(),
                "--json",
            ],
        ));
    }
    let status = json(&liaison(Some(&fj), &["status", "--json"]));
    assert_eq!(status["roster_serial"], signed["serial"], "{status}");
    assert_eq!(status["tls_spki_sha256"], rotated["new"], "{status}");
    assert_eq!(
        status["keys_in_use"]["signing"],
        new_key.as_str(),
        "{status}"
    );
    let roster = json(&liaison(Some(&fj), &["roster", "show", "--json"]));
    let me = roster["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "cn-35-psb")
        .unwrap()
        .clone();
    assert!(
        me["tls_cert_pem"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    assert!(me["previous"]["signing_key"].is_string(), "{me}");
    assert!(me["previous"]["tls_spki_sha256"].is_null(), "{me}");

    // Shaanxi is backed up while it runs (a bare name: into its data directory), stopped,
    // restored into a new directory and started from there, with its inbox as it was.
    let inbox = json(&liaison(Some(&sx), &["inbox", "--json"]));
    assert_eq!(inbox.as_array().unwrap().len(), 1, "{inbox}");
    let backup = json(&liaison(
        Some(&sx),
        &["node", "backup", "--out", "sx.backup", "--json"],
    ));
    let file = backup["path"].as_str().unwrap().to_owned();
    assert!(file.ends_with("/sx.backup"), "{backup}");
    assert_eq!(backup["header"]["node"], "cn-61-psb");
    liaison(Some(&sx), &["node", "stop"]);
    assert!(nodes.0[1].wait().unwrap().success());
    let restored_dir = dir.path().join("cn-61-psb-restored");
    let r = restored_dir.to_str().unwrap();
    let restored = json(&liaison(
        None,
        &["node", "restore", "--from", &file, "--dir", r, "--json"],
    ));
    let restored_cfg = restored_dir.join("node.toml");
    assert_eq!(restored["config"], restored_cfg.to_str().unwrap());
    assert_eq!(restored["header"], backup["header"]);
    let again = liaison(None, &["node", "restore", "--from", &file, "--dir", r]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    let _restored = start_nodes(&[&restored_cfg], &[]);
    assert_eq!(
        json(&liaison(Some(&restored_cfg), &["inbox", "--json"])),
        inbox
    );
    let verified = json(&liaison(
        Some(&restored_cfg),
        &["audit", "verify", "--json"],
    ));
    assert!(verified["first_problem"].is_null(), "{verified}");
    // Fujian dials the restarted Shaanxi afresh: the handshake uses its new TLS key, the
    // message its new signing key, and Shaanxi takes both.
    let sent = json(&liaison(
        Some(&fj),
        &[
            "send",
            "--to",
            "cn-61-psb",
            "--kind",
            "bus.test",
            "--body",
            "after both rotations",
            "--json",
        ],
    ));
    let id = sent["message_id"].as_str().unwrap().to_owned();
    wait_until(Duration::from_secs(20), || {
        json(&liaison(Some(&fj), &["show", &id, "--json"]))["state"]["state"] == "delivered"
    });
    let there = json(&liaison(Some(&restored_cfg), &["status", "--json"]));
    assert_eq!(there["roster_serial"], signed["serial"], "{there}");
    for cfg in [&fj, &restored_cfg] {
        liaison(Some(cfg), &["node", "stop"]);
    }
}

#[test]
fn an_officers_flag_given_to_another_command_is_refused_not_ignored() {
    for args in [
        &["status", "--handling", "H1"][..],
        &["dev-certs", "--officer", "x.pem", "--out", "unused"][..],
        &[
            "send",
            "--to",
            "cn-61-psb",
            "--kind",
            "bus.test",
            "--body",
            "x",
            "--abroad",
        ][..],
    ] {
        let out = liaison(None, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("applies only to an officer's step"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn an_authority_key_under_a_passphrase_signs_only_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("fed");
    let run = |args: &[&str], pass: Option<&str>| {
        let mut c = Command::new(BIN);
        c.args(args).env_remove("LIAISON_AUTHORITY_PASSPHRASE");
        if let Some(p) = pass {
            c.env("LIAISON_AUTHORITY_PASSPHRASE", p);
        }
        c.output().unwrap()
    };
    let dir_s = a.to_str().unwrap();
    let init = [
        "federation",
        "init",
        "--dir",
        dir_s,
        "--id",
        "cn-atip",
        "--encrypt",
    ];
    // Without the passphrase, or with a short one: refused.
    assert!(!run(&init, None).status.success());
    assert!(!run(&init, Some("short")).status.success());
    let pass = "correct horse battery staple";
    assert!(run(&init, Some(pass)).status.success());
    let pem = std::fs::read_to_string(a.join("authority.key.pem")).unwrap();
    assert!(
        pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
        "{pem}"
    );
    let sign = ["federation", "sign", "--dir", dir_s, "--json"];
    let out = run(&sign, None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("LIAISON_AUTHORITY_PASSPHRASE"));
    assert!(!run(&sign, Some("a wrong passphrase here")).status.success());
    let out = run(&sign, Some(pass));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(&out)["serial"], 1);
    // Reading needs no passphrase.
    let show = run(
        &[
            "federation",
            "show",
            "--dir",
            dir_s,
            "--roster",
            a.join("roster.cbor").to_str().unwrap(),
        ],
        None,
    );
    assert!(
        show.status.success(),
        "{}",
        String::from_utf8_lossy(&show.stderr)
    );
}

#[test]
fn the_authority_key_is_handed_over_by_a_roster_it_signs() {
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("authority");
    let a = auth.to_str().unwrap();
    let founded = json(&liaison(
        None,
        &[
            "federation",
            "init",
            "--dir",
            a,
            "--id",
            "cn-atip",
            "--json",
        ],
    ));
    let first_key = founded["authority_key"].as_str().unwrap().to_owned();
    json(&liaison(
        None,
        &["federation", "sign", "--dir", a, "--json"],
    ));
    let rotation = json(&liaison(
        None,
        &["federation", "rotate-authority", "--dir", a, "--json"],
    ));
    let next_key = rotation["next_authority_key"].as_str().unwrap().to_owned();
    assert_ne!(next_key, first_key);
    // A second rotation while one is under way is refused.
    assert!(
        !liaison(None, &["federation", "rotate-authority", "--dir", a])
            .status
            .success()
    );
    // The next roster is signed by the key in force and names the new one; after it, the
    // new key is the authority's.
    let handover = json(&liaison(
        None,
        &["federation", "sign", "--dir", a, "--json"],
    ));
    assert_eq!(handover["authority_key"], next_key.as_str(), "{handover}");
    let shown = json(&liaison(
        None,
        &[
            "federation",
            "show",
            "--dir",
            a,
            "--roster",
            auth.join("rosters/0000000002.cbor").to_str().unwrap(),
            "--json",
        ],
    ));
    assert_eq!(shown["next_authority"], next_key.as_str());
    let after = json(&liaison(
        None,
        &["federation", "sign", "--dir", a, "--json"],
    ));
    assert_eq!(after["serial"], 3);
    assert!(after["authority_key"].is_null());
    let toml = std::fs::read_to_string(auth.join("federation.toml")).unwrap();
    assert!(
        toml.contains(&next_key) && toml.contains(&first_key),
        "{toml}"
    );
    assert!(auth.join("authority.retired-0000000002.key.pem").exists());
    // Rosters signed by either key are the authority's; diff and show read them all.
    let diff = json(&liaison(
        None,
        &[
            "federation",
            "diff",
            "--dir",
            a,
            auth.join("rosters/0000000001.cbor").to_str().unwrap(),
            auth.join("rosters/0000000003.cbor").to_str().unwrap(),
            "--json",
        ],
    ));
    assert!(diff["changed"].as_array().unwrap().is_empty(), "{diff}");
}
