//! The officers' workflows through real nodes: officer-signed actions, case state on both
//! sides, handling rules, deadlines and supervision, alerts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use base64::Engine as _;
use liaison_certs_dev::MemberSpec;
use liaison_node::store::{Checks, StepDirection, Verified};
use liaison_node::{ActRefusal, Node, NodeError};
use liaison_protocol::action::{Handling, SignedAction};
use liaison_protocol::audit::EntryKind;
use liaison_protocol::document::{Document, Field};
use liaison_protocol::workflow::WorkflowError;
use liaison_protocol::{MessageId, NodeId, Priority};
use liaison_tests::{
    Federation, Officer, assist_request_doc, case_state, count_state, entries_of, member, msg,
    spec, wait_for,
};

const LIMIT: Duration = Duration::from_secs(60);

fn at(mut m: MemberSpec, lat_e6: i64, lon_e6: i64) -> MemberSpec {
    m.location = Some((lat_e6, lon_e6));
    m
}

/// Fujian and Shaanxi bureaus, the joint-meeting office, Hekou border station and the Lao Cai
/// border guard behind it: real coordinates.
fn federation() -> Federation {
    Federation::new(&spec(vec![
        at(
            member("fj", "public_security", "CHN", None),
            26_074_500,
            119_296_500,
        ),
        at(
            member("sx", "public_security", "CHN", None),
            34_341_600,
            108_939_800,
        ),
        at(
            member("xa", "marriage_registry", "CHN", None),
            34_260_000,
            108_940_000,
        ),
        at(
            member("jmo", "joint_meeting", "CHN", None),
            39_904_200,
            116_407_400,
        ),
        at(
            member("hk", "border_station", "CHN", None),
            22_512_000,
            103_954_000,
        ),
        at(
            member("vn", "foreign_counterpart", "VNM", Some("hk")),
            22_485_600,
            103_970_700,
        ),
        // Honghe prefecture police, a few kilometres from the border.
        at(
            member("hh", "public_security", "CHN", None),
            22_520_000,
            103_960_000,
        ),
        // Baoji city police, about 150 km west of Xi'an.
        at(
            member("bj", "public_security", "CHN", None),
            34_361_900,
            107_237_900,
        ),
    ]))
    .unwrap()
}

fn refused(r: Result<liaison_node::ActResult, NodeError>) -> String {
    match r {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

/// The action digest of the permission request a provider holds in case `case` (its answer
/// names it).
async fn request_of(node: &Node, case: &str) -> String {
    let view = node.case(case).await.unwrap().unwrap();
    match view.case.detail {
        liaison_protocol::workflow::Detail::Permission(p) => p.request,
        other => panic!("not a permission case: {other:?}"),
    }
}

/// The typed refusal of an officer's action (panics on success or on another error).
fn refusal(r: Result<liaison_node::ActResult, NodeError>) -> ActRefusal {
    match r {
        Err(NodeError::Refused(r)) => *r,
        other => panic!("expected a refused action, got {other:?}"),
    }
}

async fn delivered(node: &Node, result: &liaison_node::ActResult) {
    for m in &result.messages {
        let id = m.message_id.clone();
        wait_for(LIMIT, async || {
            node.message(&id)
                .await
                .unwrap()
                .is_some_and(|v| serde_json::to_value(&v.state).unwrap()["state"] == "delivered")
        })
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assistance_check_is_signed_by_officers_and_tracked_on_both_sides() {
    let mut fed = federation();
    let fj = fed.start("fj").await.unwrap();
    let sx = fed.start("sx").await.unwrap();
    let lin = Officer::enroll(&fj, "fj/lin.wei", "investigator")
        .await
        .unwrap();
    let zhao = Officer::enroll(&sx, "sx/zhao.lei", "investigator")
        .await
        .unwrap();
    let case = "FJ-2026-0042";

    let r = lin
        .act(
            "assist.request",
            case,
            assist_request_doc("identity_check", None),
            &["sx"],
        )
        .await
        .unwrap();
    assert_eq!(r.state.name(), "sent");
    // 7 days for an identity check, from the officer's signing time.
    let deadline = r.deadline.unwrap();
    delivered(&fj, &r).await;
    wait_for(LIMIT, async || case_state(&fj, case).await == "received")
        .await
        .unwrap();
    assert_eq!(case_state(&sx, case).await, "received");
    assert_eq!(
        sx.case(case).await.unwrap().unwrap().case.deadline,
        Some(deadline)
    );

    let r = zhao
        .act("assist.accept", case, Document::new(), &["fj"])
        .await
        .unwrap();
    delivered(&sx, &r).await;
    let answer = zhao
        .act(
            "assist.answer",
            case,
            Document::new().with("result", "identity confirmed"),
            &["fj"],
        )
        .await
        .unwrap();
    delivered(&sx, &answer).await;
    assert_eq!(case_state(&fj, case).await, "answered");
    assert_eq!(case_state(&sx, case).await, "answered");

    // The receiver shows who acted, with every signature checked.
    let view = fj.case(case).await.unwrap().unwrap();
    let kinds: Vec<&str> = view.timeline.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["assist.request", "assist.accept", "assist.answer"]);
    let last = view.timeline.last().unwrap();
    assert_eq!(last.actor, "sx/zhao.lei");
    assert_eq!(last.direction, StepDirection::Received);
    assert_eq!(
        last.verified,
        Verified::Checked(Checks::Officer {
            officer: "sx/zhao.lei".into(),
            node: NodeId::new("sx").unwrap(),
            envelope: true,
            not_sent_to: vec![],
        })
    );
    assert!(
        last.verified
            .to_string()
            .starts_with("officer sx/zhao.lei signature ✓, credential by sx node key ✓"),
        "{}",
        last.verified
    );
    assert!(last.officer.as_deref().unwrap().contains("investigator"));
    // The body the recipient holds is the officer's signed action, verifiable by anyone
    // with the roster.
    let inbox = fj.inbox(10, true).await.unwrap();
    let body = inbox
        .iter()
        .find(|m| m.kind == "assist.answer")
        .and_then(|m| m.body.clone())
        .unwrap();
    let body = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    let action = SignedAction::open(&body, fj.roster().roster()).unwrap();
    assert_eq!(action.officer().unwrap().id, "sx/zhao.lei");

    // Audit: officer actions and state changes on both sides, logs verify.
    // Officer actions are logged where the officer acted: one request here, accept and
    // answer there.
    assert_eq!(entries_of(&fj, EntryKind::OfficerAction).await.len(), 1);
    assert_eq!(entries_of(&sx, EntryKind::OfficerAction).await.len(), 2);
    for node in [&fj, &sx] {
        assert!(entries_of(node, EntryKind::CaseStateChanged).await.len() >= 3);
        assert!(entries_of(node, EntryKind::KeyChanged).await.len() == 1);
        assert!(node.audit_verify().await.unwrap().first_problem.is_none());
    }
    for id in ["fj", "sx"] {
        fed.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_officers_and_illegal_steps_are_refused_and_audited() {
    let mut fed = federation();
    let fj = fed.start("fj").await.unwrap();
    let sx = fed.start("sx").await.unwrap();
    let lin = Officer::enroll(&fj, "fj/lin.wei", "investigator")
        .await
        .unwrap();
    let clerk = Officer::enroll(&fj, "fj/clerk", "registrar").await.unwrap();
    let case = "FJ-2026-0099";
    let rejected_before = entries_of(&fj, EntryKind::Rejected).await.len();

    // An officer the node never enrolled (credential forged with another node's key is
    // caught by the signature check; here the credential is genuine but for a key the
    // officer does not hold).
    let mut stranger = Officer::enroll(&fj, "fj/stranger", "investigator")
        .await
        .unwrap();
    stranger.key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let e = refusal(
        stranger
            .act(
                "assist.request",
                case,
                assist_request_doc("identity_check", None),
                &["sx"],
            )
            .await,
    );
    assert!(matches!(e, ActRefusal::DoesNotVerify(_)), "{e:?}");

    // Revoked officer.
    let gone = Officer::enroll(&fj, "fj/gone", "investigator")
        .await
        .unwrap();
    fj.revoke_officer("fj/gone").await.unwrap();
    let e = refusal(
        gone.act(
            "assist.request",
            case,
            assist_request_doc("identity_check", None),
            &["sx"],
        )
        .await,
    );
    assert!(
        matches!(&e, ActRefusal::OfficerRevoked { officer, .. } if officer == "fj/gone"),
        "{e:?}"
    );

    // An officer enrolled at another node.
    let zhao = Officer::enroll(&sx, "sx/zhao.lei", "investigator")
        .await
        .unwrap();
    let a = zhao.action(
        "assist.request",
        case,
        assist_request_doc("identity_check", None),
    );
    let signed = a.sign(&zhao.key);
    let e = fj
        .act(liaison_node::ActRequest {
            action: base64::engine::general_purpose::STANDARD.encode(signed.bytes()),
            to: vec!["sx".parse().unwrap()],
            priority: None,
            in_reply_to: None,
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("for node sx"), "{e}");

    // Role not allowed.
    let e = refusal(
        clerk
            .act(
                "assist.request",
                case,
                assist_request_doc("identity_check", None),
                &["sx"],
            )
            .await,
    );
    assert!(
        matches!(
            e,
            ActRefusal::Role(WorkflowError::RoleNotAllowed {
                role: "registrar",
                ..
            })
        ),
        "{e:?}"
    );

    // Missing legal instrument.
    let mut doc = assist_request_doc("identity_check", None);
    doc.set("legal_instruments", Field::List(vec![]));
    let e = refusal(lin.act("assist.request", case, doc, &["sx"]).await);
    assert!(
        matches!(&e, ActRefusal::Workflow(WorkflowError::MissingField { field, .. })
            if field == "legal_instruments"),
        "{e:?}"
    );

    // An answer to a request that was never sent.
    let e = refused(
        zhao.act(
            "assist.answer",
            "NEVER-SENT-1",
            Document::new().with("result", "x"),
            &["fj"],
        )
        .await,
    );
    assert!(
        e.to_lowercase().contains("never") || e.contains("unknown case"),
        "{e}"
    );

    // Illegal transition: the requester answers its own request.
    let r = lin
        .act(
            "assist.request",
            case,
            assist_request_doc("identity_check", None),
            &["sx"],
        )
        .await
        .unwrap();
    delivered(&fj, &r).await;
    let before = fj.case(case).await.unwrap().unwrap();
    let e = refused(
        lin.act(
            "assist.answer",
            case,
            Document::new().with("result", "x"),
            &["sx"],
        )
        .await,
    );
    assert!(e.contains("only the assisting bureau"), "{e}");
    let after = fj.case(case).await.unwrap().unwrap();
    assert_eq!(before.case, after.case, "a refused step changes nothing");
    assert_eq!(before.timeline.len(), after.timeline.len());

    // Every refusal above is an audit entry with its reason.
    assert!(entries_of(&fj, EntryKind::Rejected).await.len() >= rejected_before + 6);
    assert!(fj.audit_verify().await.unwrap().first_problem.is_none());
    for id in ["fj", "sx"] {
        fed.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overdue_check_is_marked_and_the_supervisor_is_told() {
    // In virtual time: three days pass when the test says so, and not a moment earlier.
    let mut fed = federation().in_virtual_time();
    let fj = fed.start("fj").await.unwrap();
    let sx = fed.start("sx").await.unwrap();
    let jmo = fed.start("jmo").await.unwrap();
    let lin = Officer::enroll(&fj, "fj/lin.wei", "investigator")
        .await
        .unwrap();
    let sun = Officer::enroll(&jmo, "jmo/sun.ming", "supervisor")
        .await
        .unwrap();
    let case = "FJ-2026-0100";
    // "locate" has a per-request deadline: three days from now.
    let three_days = Duration::from_secs(3 * 24 * 3600);
    let due = fj.now_ms() + 3 * 24 * 3600 * 1000;
    let r = lin
        .act(
            "assist.request",
            case,
            assist_request_doc("locate", Some(due)),
            &["sx"],
        )
        .await
        .unwrap();
    delivered(&fj, &r).await;
    let r = sun
        .act(
            "supervision.attach",
            case,
            Document::new()
                .with("interval_days", 7u64)
                .with("instruction", "listed case"),
            &["fj"],
        )
        .await
        .unwrap();
    delivered(&jmo, &r).await;
    assert_eq!(
        fj.case(case)
            .await
            .unwrap()
            .unwrap()
            .case
            .supervisor
            .unwrap()
            .node
            .as_str(),
        "jmo"
    );
    assert!(!fj.case(case).await.unwrap().unwrap().case.overdue);

    // One ms before the deadline (and a tick later): not overdue.
    fed.advance(three_days - Duration::from_millis(1));
    fj.case_tick().await.unwrap();
    assert!(!fj.case(case).await.unwrap().unwrap().case.overdue);
    // Past the deadline with no answer: overdue on both sides, the supervisor is told by a
    // node-signed notice.
    fed.advance(Duration::from_secs(1));
    wait_for(LIMIT, async || {
        fj.case(case).await.unwrap().unwrap().case.overdue
    })
    .await
    .unwrap();
    wait_for(LIMIT, async || {
        sx.case(case).await.unwrap().unwrap().case.overdue
    })
    .await
    .unwrap();
    wait_for(LIMIT, async || {
        jmo.case(case)
            .await
            .unwrap()
            .is_some_and(|c| c.timeline.iter().any(|e| e.kind == "supervision.overdue"))
    })
    .await
    .unwrap();
    let jview = jmo.case(case).await.unwrap().unwrap();
    let notice = jview
        .timeline
        .iter()
        .find(|e| e.kind == "supervision.overdue")
        .unwrap();
    assert_eq!(notice.actor, "fj");
    assert_eq!(notice.direction, StepDirection::Automatic);
    assert_eq!(
        notice.verified,
        Verified::Checked(Checks::Node {
            node: NodeId::new("fj").unwrap(),
            envelope: true,
        })
    );
    // Told once, not every tick: a day of ticks later the sender has sent no other notice.
    for _ in 0..24 {
        fed.advance(Duration::from_secs(3600));
        fj.case_tick().await.unwrap();
    }
    for node in [&fj, &jmo] {
        let notices = node
            .case(case)
            .await
            .unwrap()
            .unwrap()
            .timeline
            .iter()
            .filter(|e| e.kind == "supervision.overdue")
            .count();
        assert_eq!(notices, 1, "at {}", node.id());
    }
    for id in ["fj", "sx", "jmo"] {
        let t = std::time::Instant::now();
        fed.stop(id).await;
        eprintln!("STOP {id} {:?}", t.elapsed());
    }
}

fn handover_record(no: &str) -> Document {
    Document::new().with(
        "record",
        Document::new()
            .with("record_no", no)
            .with("port", "Hekou-Lao Cai")
            .with("time", 1_764_000_000_000u64)
            .with(
                "persons",
                Field::List(vec![Field::Map(
                    Document::new()
                        .with("name", "TRAN Thi B")
                        .with("sex", "female")
                        .with("nationality", "VNM")
                        .with("minor", false),
                )]),
            )
            .with(
                "dossier",
                Field::List(vec![Field::Map(
                    Document::new()
                        .with("name", "identification record")
                        .with("sha256", "cd".repeat(32)),
                )]),
            )
            .with(
                "officers",
                Field::List(vec![
                    Field::Text("Chen Hui".into()),
                    Field::Text("Nguyen Van An".into()),
                ]),
            ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handover_is_complete_only_with_both_signatures_over_one_record() {
    let mut fed = federation();
    let fj = fed.start("fj").await.unwrap();
    let _hk = fed.start("hk").await.unwrap();
    let vn = fed.start("vn").await.unwrap();
    let chen = Officer::enroll(&fj, "fj/chen.hui", "investigator")
        .await
        .unwrap();
    let an = Officer::enroll(&vn, "vn/nguyen.van.an", "foreign_liaison")
        .await
        .unwrap();
    let case = "FJ-REP-2026-007";
    let abroad = |o: &Officer, kind: &str, doc: Document| {
        let mut a = o.action(kind, case, doc);
        a.abroad = true;
        a
    };
    let victim = Document::new()
        .with("name", "TRAN Thi B")
        .with("sex", "female")
        .with("nationality", "VNM")
        .with("minor", false);
    chen.act(
        "repatriation.open",
        case,
        Document::new()
            .with("victim", victim.clone())
            .with("consent_notify_origin", true)
            .with("consent_recorded_by", "Chen Hui"),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(case_state(&fj, case).await, "identified");
    // Without the abroad flag the node refuses to send identity data to a foreign node.
    let person = Document::new()
        .with("name", "TRAN Thi B")
        .with("sex", "female")
        .with("nationality", "VNM");
    let e = refusal(
        chen.act(
            "repatriation.nationality_request",
            case,
            Document::new()
                .with("person", person.clone())
                .with("consent_notify_origin", true),
            &["vn"],
        )
        .await,
    );
    assert!(
        matches!(&e, ActRefusal::NotForAbroad { to, .. } if to.as_str() == "vn"),
        "{e:?}"
    );
    let steps: Vec<(&Officer, &str, Document, &str)> = vec![
        (
            &chen,
            "repatriation.nationality_request",
            Document::new()
                .with("person", person)
                .with("consent_notify_origin", true),
            "vn",
        ),
        (
            &an,
            "repatriation.nationality_answer",
            Document::new()
                .with("result", "confirmed")
                .with("reference", "LC-2026-1187"),
            "fj",
        ),
        (
            &an,
            "repatriation.travel_document",
            Document::new()
                .with("document_no", "LC-TD-1")
                .with("issued_at", "2026-11-20")
                .with("valid_until", "2027-02-20"),
            "fj",
        ),
        (
            &chen,
            "repatriation.handover_proposal",
            Document::new()
                .with("port", "Hekou-Lao Cai")
                .with("date", "2026-11-25")
                .with("window_from", "09:00")
                .with("window_to", "11:00")
                .with("escorts", Field::List(vec![Field::Text("Chen Hui".into())]))
                .with(
                    "persons",
                    Field::List(vec![Field::Text("TRAN Thi B".into())]),
                ),
            "vn",
        ),
        (
            &an,
            "repatriation.handover_confirmation",
            Document::new()
                .with("fixed_time", "09:30")
                .with("persons_verified", true),
            "fj",
        ),
    ];
    for (o, kind, doc, to) in steps {
        let r = o.submit(&abroad(o, kind, doc), &[to]).await.unwrap();
        delivered(&o.node, &r).await;
    }
    assert_eq!(case_state(&fj, case).await, "handover_scheduled");
    assert_eq!(case_state(&vn, case).await, "handover_scheduled");

    // One side signs: still scheduled on both sides.
    let r = chen
        .submit(
            &abroad(
                &chen,
                "repatriation.handover_record",
                handover_record("HK-JJ-1"),
            ),
            &["vn"],
        )
        .await
        .unwrap();
    delivered(&fj, &r).await;
    assert_eq!(case_state(&fj, case).await, "handover_scheduled");
    assert_eq!(case_state(&vn, case).await, "handover_scheduled");
    assert_eq!(
        vn.case(case)
            .await
            .unwrap()
            .unwrap()
            .case
            .handover_signatures()
            .len(),
        1
    );

    // The other side signs a different record: refused, nothing changes.
    let e = refused(
        an.submit(
            &abroad(
                &an,
                "repatriation.handover_record",
                handover_record("HK-JJ-2"),
            ),
            &["fj"],
        )
        .await,
    );
    assert!(e.contains("different"), "{e}");
    assert_eq!(case_state(&vn, case).await, "handover_scheduled");

    // The same record: handed over on both sides, with both signatures. Vietnam marks its
    // signed record H1: not for judicial proceedings without its permission.
    let mut theirs = abroad(
        &an,
        "repatriation.handover_record",
        handover_record("HK-JJ-1"),
    );
    theirs.handling = Handling::H1;
    let r = an.submit(&theirs, &["fj"]).await.unwrap();
    delivered(&vn, &r).await;
    assert_eq!(case_state(&vn, case).await, "handed_over");
    assert_eq!(case_state(&fj, case).await, "handed_over");
    let sigs = fj
        .case(case)
        .await
        .unwrap()
        .unwrap()
        .case
        .handover_signatures()
        .to_vec();
    assert_eq!(sigs.len(), 2);
    assert_ne!(sigs[0].node, sigs[1].node);

    // The case evidence carries both signed handover records, bound to their logged
    // envelopes, verifiable offline with the authority key alone.
    let evidence = fj.case_evidence(case, false).await.unwrap();
    assert_eq!(evidence.records.len(), 2);
    let bytes = evidence.encode();
    let decoded = liaison_protocol::evidence::CaseEvidence::decode(&bytes).unwrap();
    let authority = fed.authority();
    let checked = decoded.verify(&authority).unwrap();
    let signers: Vec<&str> = checked.records.iter().map(|r| r.officer.as_str()).collect();
    assert_eq!(signers.len(), 2);
    assert!(signers.contains(&"fj/chen.hui"), "{signers:?}");
    assert!(signers.contains(&"vn/nguyen.van.an"), "{signers:?}");
    let mut forged = decoded.clone();
    let n = forged.records[0].len();
    forged.records[0][n - 1] ^= 1;
    assert!(matches!(
        forged.verify(&authority),
        Err(liaison_protocol::evidence::EvidenceError::Record { index: 0, .. })
    ));
    let vn_record = checked
        .records
        .iter()
        .find(|r| r.node.as_str() == "vn")
        .unwrap();
    assert_eq!(vn_record.handling, Handling::H1);
    assert_eq!(vn_record.permission, None);

    // For a court, Vietnam's H1 record is withheld until Vietnam permits its judicial use.
    let court = fj.case_evidence(case, true).await.unwrap();
    assert!(court.for_court);
    assert_eq!(court.records.len(), 1);
    assert!(court.permissions.is_empty());
    assert_eq!(court.withheld.len(), 1);
    let withheld = court.withheld[0].clone();
    assert_eq!((withheld.provider.as_str(), withheld.handling), ("vn", 1));
    assert!(
        withheld.reason.contains("--use judicial"),
        "{}",
        withheld.reason
    );
    let decoded = liaison_protocol::evidence::CaseEvidence::decode(&court.encode()).unwrap();
    let checked = decoded.verify(&authority).unwrap();
    assert_eq!(checked.withheld, vec![withheld.clone()]);
    assert_eq!(checked.records[0].node.as_str(), "fj");
    // A court file that slips the H1 record in without a permission is refused.
    let mut slipped = court.clone();
    slipped.records = evidence.records.clone();
    slipped.withheld.clear();
    assert!(matches!(
        slipped.verify(&authority),
        Err(liaison_protocol::evidence::EvidenceError::NoPermission { provider, .. })
            if provider.as_str() == "vn"
    ));
    // Fujian asks; Vietnam grants.
    let perm = "FJ-PERM-2026-001";
    let mut ask = chen.action(
        "permission.request",
        perm,
        Document::new()
            .with("message_id", withheld.message.to_hex())
            .with("use", "judicial")
            .with("purpose", "prosecution of the trafficking case")
            .with("reason", "the handover record proves the victims' return"),
    );
    ask.abroad = true;
    let r = chen.submit(&ask, &["vn"]).await.unwrap();
    delivered(&fj, &r).await;
    let mut grant = an.action(
        "permission.grant",
        perm,
        Document::new().with("request", request_of(&vn, perm).await),
    );
    grant.abroad = true;
    let r = an.submit(&grant, &["fj"]).await.unwrap();
    delivered(&vn, &r).await;
    assert_eq!(case_state(&fj, perm).await, "granted");
    let court = fj.case_evidence(case, true).await.unwrap();
    assert_eq!((court.records.len(), court.permissions.len()), (2, 2));
    assert!(court.withheld.is_empty());
    let checked = court.verify(&authority).unwrap();
    let vn_record = checked
        .records
        .iter()
        .find(|r| r.node.as_str() == "vn")
        .unwrap();
    assert_eq!(vn_record.permission.as_deref(), Some(perm));
    // Without the grant (only Fujian's own request) the record is not allowed.
    let mut no_grant = court.clone();
    no_grant.permissions.retain(|p| {
        SignedAction::open(p, fj.roster().roster())
            .unwrap()
            .action()
            .kind
            != "permission.grant"
    });
    assert!(matches!(
        no_grant.verify(&authority),
        Err(liaison_protocol::evidence::EvidenceError::NoPermission { .. })
    ));
    // Fujian, with its own keys, claims it sent Vietnam's record itself: the envelope that
    // carried it from Vietnam is dropped and one from Fujian, carrying the same bytes, forged
    // into a log Fujian rebuilds and signs. The record is signed for Vietnam, not the sender.
    let keys = fed.keys("fj").unwrap();
    let vn_bytes = court
        .records
        .iter()
        .find(|b| {
            SignedAction::open(b, fj.roster().roster())
                .unwrap()
                .action()
                .node
                .as_str()
                == "vn"
        })
        .unwrap()
        .clone();
    let body_hash = liaison_protocol::Digest::of(&vn_bytes).0;
    let mut list: Vec<liaison_protocol::audit::Entry> = court
        .bundles
        .iter()
        .map(|b| liaison_protocol::audit::Entry::decode(&b.entry).unwrap())
        .collect();
    let carrier = list
        .iter()
        .position(|e| {
            liaison_protocol::Envelope::peek_unverified(&e.object)
                .is_some_and(|(_, h)| h.body_hash == body_hash)
        })
        .unwrap();
    let (old, mut h) = liaison_protocol::Envelope::peek_unverified(&list[carrier].object).unwrap();
    assert_eq!(h.from.as_str(), "vn");
    (h.from, h.to) = (h.to, h.from);
    list[carrier] = liaison_protocol::audit::Entry {
        kind: EntryKind::MessageSent,
        object: liaison_protocol::Envelope::seal(h, &keys.signing)
            .bytes()
            .to_vec(),
        ..list[carrier].clone()
    };
    // Fujian's receipt for Vietnam's envelope goes too.
    let roster = fj.roster();
    list.retain(|e| {
        liaison_protocol::SignedReceipt::open(&e.object, |k| roster.roster().signer(k))
            .map_or(true, |r| r.receipt().message_digest != old)
    });
    let claimed = liaison_protocol::evidence::CaseEvidence {
        bundles: liaison_tests::forge_log(&keys.log, "fj", &list),
        ..court.clone()
    };
    match claimed.verify(&authority) {
        Err(liaison_protocol::evidence::EvidenceError::Record { problem, .. }) => assert!(
            problem.contains("signed for vn, but sent by fj"),
            "{problem}"
        ),
        other => panic!("expected the record refused, got {other:?}"),
    }
    // A grant answers one request: Fujian makes up another request in the grant's case
    // (its own officer's signature, another reason) and puts it in place of the one Vietnam
    // answered. The grant names the first request's digest: no permission.
    let mut reused = court.clone();
    let mut other = ask.clone();
    other.document.set("reason", "another proceeding");
    let other = other.sign(&chen.key).bytes().to_vec();
    for p in &mut reused.permissions {
        if SignedAction::open(p, fj.roster().roster())
            .unwrap()
            .action()
            .kind
            == "permission.request"
        {
            *p = other.clone();
        }
    }
    assert!(matches!(
        reused.verify(&authority),
        Err(liaison_protocol::evidence::EvidenceError::NoPermission { .. })
    ));
    // A record listed as withheld must be a message of the case from its named provider.
    let mut wrong = court.clone();
    wrong.withheld.push(liaison_protocol::evidence::Withheld {
        provider: NodeId::new("hk").unwrap(),
        ..withheld
    });
    assert!(matches!(
        wrong.verify(&authority),
        Err(liaison_protocol::evidence::EvidenceError::Withheld { .. })
    ));
    for id in ["fj", "hk", "vn"] {
        fed.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_refusal_and_policy_keep_data_at_home() {
    let mut fed = federation();
    let fj = fed.start("fj").await.unwrap();
    let _hk = fed.start("hk").await.unwrap();
    let lin = Officer::enroll(&fj, "fj/lin.wei", "investigator")
        .await
        .unwrap();
    let case = "FJ-REP-2026-008";
    lin.act(
        "repatriation.open",
        case,
        Document::new()
            .with(
                "victim",
                Document::new()
                    .with("name", "LE Thi C")
                    .with("sex", "female")
                    .with("nationality", "VNM")
                    .with("minor", false),
            )
            .with("consent_notify_origin", false)
            .with("consent_recorded_by", "Lin Wei"),
        &[],
    )
    .await
    .unwrap();
    let mut a = lin.action(
        "repatriation.nationality_request",
        case,
        Document::new()
            .with(
                "person",
                Document::new()
                    .with("name", "LE Thi C")
                    .with("sex", "female")
                    .with("nationality", "VNM"),
            )
            .with("consent_notify_origin", false),
    );
    a.abroad = true;
    let e = refused(lin.submit(&a, &["vn"]).await);
    assert!(e.contains("consent"), "{e}");
    assert_eq!(case_state(&fj, case).await, "identified");

    // A domestic criminal-record check never goes to a foreign counterpart.
    let mut a = lin.action(
        "assist.request",
        "FJ-2026-0200",
        assist_request_doc("criminal_record_check", None),
    );
    a.abroad = true;
    let e = refused(lin.submit(&a, &["vn"]).await);
    assert!(e.contains("policy forbids assist.request"), "{e}");
    assert!(!entries_of(&fj, EntryKind::RefusedByPolicy).await.is_empty());
    assert_eq!(case_state(&fj, "FJ-2026-0200").await, "missing");
    for id in ["fj", "hk"] {
        fed.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marriage_check_answer_is_minimised() {
    let mut fed = federation();
    let xa = fed.start("xa").await.unwrap();
    let hk = fed.start("hk").await.unwrap();
    let liu = Officer::enroll(&xa, "xa/liu.fang", "registrar")
        .await
        .unwrap();
    let yang = Officer::enroll(&hk, "hk/yang.bo", "border_officer")
        .await
        .unwrap();
    let case = "XA-MR-2026-0311";
    let r = liu
        .act(
            "marriage_check.request",
            case,
            Document::new().with("request_no", "XA-MR-2026-0311").with(
                "foreign_party",
                Document::new()
                    .with("names", "NGUYEN Thi A")
                    .with("sex", "female")
                    .with("birth_date", "2001-07-02")
                    .with("nationality", "VNM")
                    .with("passport_no", "C1234567")
                    .with("passport_issuer", "VNM"),
            ),
            &["hk"],
        )
        .await
        .unwrap();
    delivered(&xa, &r).await;
    let answer = Document::new()
        .with("record_found", true)
        .with("lawful_entry", true)
        .with("last_entry_date", "2026-09-30")
        .with("last_entry_port", "Hekou");
    // The travel history is not part of the answer: the node refuses it.
    let mut leaky = answer.clone();
    leaky.set(
        "travel_history",
        Field::List(vec![Field::Text("2025-01-02 Hekou in".into())]),
    );
    let e = refused(
        yang.act("marriage_check.answer", case, leaky, &["xa"])
            .await,
    );
    assert!(e.contains("travel_history"), "{e}");
    assert_eq!(case_state(&hk, case).await, "submitted");

    let r = yang
        .act("marriage_check.answer", case, answer, &["xa"])
        .await
        .unwrap();
    delivered(&hk, &r).await;
    assert_eq!(case_state(&xa, case).await, "answered_match");
    // What the registry holds has only the minimised fields.
    let inbox = xa.inbox(10, true).await.unwrap();
    let body = inbox
        .iter()
        .find(|m| m.kind == "marriage_check.answer")
        .and_then(|m| m.body.clone())
        .unwrap();
    let body = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    let action = SignedAction::open(&body, xa.roster().roster()).unwrap();
    let keys: Vec<&str> = action.action().document.keys().collect();
    let allowed = [
        "record_found",
        "lawful_entry",
        "last_entry_date",
        "last_entry_port",
        "visa_type",
        "authorised_stay_until",
        "flags",
    ];
    assert!(keys.iter().all(|k| allowed.contains(k)), "{keys:?}");
    for id in ["xa", "hk"] {
        fed.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_material_is_not_passed_on_without_the_providers_permission() {
    let mut fed = federation();
    let fj = fed.start("fj").await.unwrap();
    let sx = fed.start("sx").await.unwrap();
    let _hk = fed.start("hk").await.unwrap();
    let lin = Officer::enroll(&fj, "fj/lin.wei", "investigator")
        .await
        .unwrap();
    let zhao = Officer::enroll(&sx, "sx/zhao.lei", "investigator")
        .await
        .unwrap();
    let case = "FJ-2026-0300";
    let r = lin
        .act(
            "assist.request",
            case,
            assist_request_doc("identity_check", None),
            &["sx"],
        )
        .await
        .unwrap();
    delivered(&fj, &r).await;
    let r = zhao
        .act("assist.accept", case, Document::new(), &["fj"])
        .await
        .unwrap();
    delivered(&sx, &r).await;
    let mut a = zhao.action(
        "assist.answer",
        case,
        Document::new().with("result", "identity confirmed; address in Xi'an"),
    );
    a.handling = Handling::H2;
    let answer = zhao.submit(&a, &["fj"]).await.unwrap();
    delivered(&sx, &answer).await;
    let h2_id = answer.messages[0].message_id.clone();

    // Fujian passes the answer on to Hekou in a new request: refused without permission.
    let onward = |lin: &Officer| {
        let mut a = lin.action(
            "assist.request",
            "FJ-2026-0301",
            assist_request_doc("identity_check", None),
        );
        a.derived_from = vec![MessageId::from_hex(&h2_id).unwrap()];
        a
    };
    let e = refusal(lin.submit(&onward(&lin), &["hk"]).await);
    assert!(
        matches!(&e, ActRefusal::Onward(why) if why.contains("H2") && why.contains("permission")),
        "{e:?}"
    );
    assert_eq!(case_state(&fj, "FJ-2026-0301").await, "missing");
    let policy_refusals = entries_of(&fj, EntryKind::RefusedByPolicy).await.len();
    assert!(policy_refusals >= 1);

    // Passing it back to its provider needs no permission.
    let mut back = onward(&lin);
    back.case_ref = "FJ-2026-0302".into();
    let r = lin.submit(&back, &["sx"]).await.unwrap();
    delivered(&fj, &r).await;

    // Ask, get the grant, pass it on.
    let ask = lin
        .act(
            "permission.request",
            "FJ-PERM-1",
            Document::new()
                .with("message_id", h2_id.as_str())
                .with("recipient", "hk")
                .with("purpose", "criminal_investigation")
                .with("reason", "Hekou checks the subject's border crossings"),
            &["sx"],
        )
        .await
        .unwrap();
    delivered(&fj, &ask).await;
    let grant = zhao
        .act(
            "permission.grant",
            "FJ-PERM-1",
            Document::new()
                .with("request", request_of(&sx, "FJ-PERM-1").await)
                .with("conditions", "for this case only"),
            &["fj"],
        )
        .await
        .unwrap();
    delivered(&sx, &grant).await;
    assert_eq!(case_state(&fj, "FJ-PERM-1").await, "granted");
    let r = lin.submit(&onward(&lin), &["hk"]).await.unwrap();
    delivered(&fj, &r).await;
    for id in ["fj", "sx", "hk"] {
        fed.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_the_radius_and_overtake_ten_thousand_routine_messages() {
    let mut fed = federation();
    let sx = fed.start("sx").await.unwrap();
    let zhao = Officer::enroll(&sx, "sx/zhao.lei", "investigator")
        .await
        .unwrap();
    // 10,000 routine messages wait for the Xi'an registry while it is down.
    const ROUTINE: usize = 10_000;
    for i in 0..ROUTINE {
        sx.send(msg("xa", "bus.test", format!("routine {i}").as_bytes()))
            .await
            .unwrap();
    }
    let case = "SX-ALERT-2026-0093";
    // No location: refused.
    let mut no_place = Document::new()
        .with(
            "child",
            Document::new()
                .with("name", "WANG Xiaoming")
                .with("sex", "male")
                .with("description", "red jacket"),
        )
        .with("missing_since", liaison_node::now_ms())
        .with("contact", "desk 1");
    let e = refused(zhao.act("alert.issue", case, no_place.clone(), &[]).await);
    assert!(e.contains("location"), "{e}");
    assert_eq!(case_state(&sx, case).await, "missing");

    // Last seen at Xi'an railway station, 30 minutes ago: 100 km, the Xi'an registry only.
    no_place.set(
        "last_seen",
        Document::new()
            .with("place", "Xi'an railway station")
            .with("lat_e6", "34278500")
            .with("lon_e6", "108961700"),
    );
    no_place.set("missing_since", liaison_node::now_ms() - 30 * 60 * 1000);
    let r = zhao.act("alert.issue", case, no_place, &[]).await.unwrap();
    assert_eq!(r.messages.len(), 1, "{r:?}");
    assert_eq!(
        sx.case(case).await.unwrap().unwrap().alerted,
        ["xa".parse().unwrap()]
    );
    let alert_id = r.messages[0].message_id.clone();
    let msg_view = sx.message(&alert_id).await.unwrap().unwrap();
    assert_eq!(msg_view.priority, Priority::Flash.name());

    let xa = fed.start("xa").await.unwrap();
    wait_for(Duration::from_secs(300), async || {
        count_state(&sx, "outgoing", "delivered").await == ROUTINE + 1
    })
    .await
    .unwrap();
    let inbox = xa.inbox(ROUTINE + 1, false).await.unwrap();
    let pos = inbox.iter().position(|m| m.message_id == alert_id).unwrap();
    assert!(
        pos < liaison_node::config::DEFAULT_WINDOW,
        "alert arrived at position {pos} of {}",
        inbox.len()
    );
    assert_eq!(case_state(&xa, case).await, "active");
    for id in ["sx", "xa"] {
        fed.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annual_report_counts_the_year_and_refuses_a_future_one() {
    let mut fed = federation();
    let fj = fed.start("fj").await.unwrap();
    let sx = fed.start("sx").await.unwrap();
    let jmo = fed.start("jmo").await.unwrap();
    let lin = Officer::enroll(&fj, "fj/lin.wei", "investigator")
        .await
        .unwrap();
    let r = lin
        .act(
            "assist.request",
            "FJ-2026-0400",
            assist_request_doc("age_check", None),
            &["sx"],
        )
        .await
        .unwrap();
    delivered(&fj, &r).await;
    let year = liaison_protocol::workflow::year_of(liaison_node::now_ms());
    let figures = fj.annual_figures(year).await.unwrap();
    assert!(fj.annual_figures(year + 5).await.is_err());
    let e = refused(
        lin.act(
            "report.annual",
            &format!("report-fj-{}", year + 5),
            Document::new()
                .with("year", (year + 5) as u64)
                .with("figures", Document::new()),
            &["jmo"],
        )
        .await,
    );
    assert!(e.contains("future"), "{e}");
    let r = lin
        .act(
            "report.annual",
            &format!("report-fj-{year}"),
            figures,
            &["jmo"],
        )
        .await
        .unwrap();
    delivered(&fj, &r).await;
    assert_eq!(
        case_state(&jmo, &format!("report-fj-{year}")).await,
        "submitted"
    );
    drop((sx, jmo));
    for id in ["fj", "sx", "jmo"] {
        fed.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_unauthorised_actions_over_the_wire_get_signed_rejections() {
    use liaison_protocol::action::{Action, Officer};
    use liaison_protocol::workflow::Role;
    use liaison_protocol::{Digest, Envelope, Frame, Header, ReceiptStatus, SignedReceipt};

    let mut fed = federation();
    let sx = fed.start("sx").await.unwrap();
    let raw = fed.raw("fj", "sx").await.unwrap();
    let fj_key =
        liaison_node::identity::load_signing_key(&fed.member_dir("fj").join("signing.key.pem"))
            .unwrap();
    let personal = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let credential = |role: Role, signer: &ed25519_dalek::SigningKey| {
        Officer {
            federation: "test-fed".into(),
            node: "fj".parse().unwrap(),
            id: "fj/lin.wei".into(),
            name: "Lin Wei".into(),
            number: "350102".into(),
            unit: "CID".into(),
            role,
            key: liaison_protocol::PublicKey::from(&personal),
            enrolled_at: liaison_node::now_ms(),
        }
        .certify(signer)
        .bytes()
        .to_vec()
    };
    let action = |kind: &str, case: &str, doc: Document, cred: Vec<u8>| Action {
        federation: "test-fed".into(),
        node: "fj".parse().unwrap(),
        kind: kind.into(),
        case_ref: case.into(),
        at: liaison_node::now_ms(),
        purpose: "criminal_investigation".into(),
        handling: Handling::H0,
        sensitivity: vec![],
        retention_days: 30,
        abroad: false,
        document: doc,
        derived_from: vec![],
        credential: Some(cred),
    };
    let (sxr, rawr) = (&sx, &raw);
    let send = |kind: &str, case: &str, body: Vec<u8>| {
        let h = Header {
            federation: "test-fed".into(),
            id: MessageId(*uuid::Uuid::now_v7().as_bytes()),
            from: NodeId::new("fj").unwrap(),
            to: NodeId::new("sx").unwrap(),
            sent_at: liaison_node::now_ms(),
            kind: kind.into(),
            body_len: body.len() as u64,
            body_hash: Digest::of(&body).0,
            priority: Priority::Routine,
            in_reply_to: None,
            expires_at: None,
            case_ref: Some(case.into()),
        };
        let env = Envelope::seal(h, &fj_key);
        async move {
            let answer = rawr
                .exchange(&Frame::Deliver {
                    envelope: env.bytes().to_vec(),
                    body,
                })
                .await
                .unwrap();
            let bytes = match answer {
                Frame::Receipt(bytes) => bytes,
                // Not applicable yet (its predecessor may still come): try later.
                Frame::Error { reason, .. } => return Err(reason),
                other => panic!("expected a signed receipt, got {other:?}"),
            };
            let roster = sxr.roster();
            let r = SignedReceipt::open(&bytes, |kid| roster.roster().signer(kid)).unwrap();
            match &r.receipt().status {
                ReceiptStatus::Rejected(why) => Err(why.clone()),
                ReceiptStatus::Delivered => Ok(()),
            }
        }
    };
    let request = || assist_request_doc("identity_check", None);
    let case = "FJ-2026-0500";

    // Signed by a key that is not the officer's.
    let a = action(
        "assist.request",
        case,
        request(),
        credential(Role::Investigator, &fj_key),
    );
    let e = send("assist.request", case, a.sign(&fed_key(7)).bytes().to_vec())
        .await
        .unwrap_err();
    assert!(
        e.contains("case step refused") && e.contains("officer"),
        "{e}"
    );
    // A credential the node did not sign.
    let a = action(
        "assist.request",
        case,
        request(),
        credential(Role::Investigator, &fed_key(8)),
    );
    let e = send("assist.request", case, a.sign(&personal).bytes().to_vec())
        .await
        .unwrap_err();
    assert!(e.contains("credential"), "{e}");
    // A role that may not sign the kind.
    let a = action(
        "assist.request",
        case,
        request(),
        credential(Role::Registrar, &fj_key),
    );
    let e = send("assist.request", case, a.sign(&personal).bytes().to_vec())
        .await
        .unwrap_err();
    assert!(e.contains("registrar"), "{e}");
    // The envelope says one kind, the signed action another.
    let a = action(
        "assist.request",
        case,
        request(),
        credential(Role::Investigator, &fj_key),
    );
    let e = send("assist.close", case, a.sign(&personal).bytes().to_vec())
        .await
        .unwrap_err();
    assert!(e.contains("differs"), "{e}");
    // A body that is not an action at all.
    let e = send("assist.request", case, b"identity check please".to_vec())
        .await
        .unwrap_err();
    assert!(e.contains("does not verify"), "{e}");
    // An answer to a request that was never sent.
    let a = action(
        "assist.close",
        "FJ-NEVER",
        Document::new(),
        credential(Role::Investigator, &fj_key),
    );
    let e = send(
        "assist.close",
        "FJ-NEVER",
        a.sign(&personal).bytes().to_vec(),
    )
    .await
    .unwrap_err();
    assert!(e.contains("try later"), "{e}");
    assert_eq!(case_state(&sx, case).await, "missing");
    assert_eq!(case_state(&sx, "FJ-NEVER").await, "missing");
    // Each refusal is in the audit log with its reason.
    let rejected = entries_of(&sx, EntryKind::Rejected).await;
    assert!(rejected.len() >= 5, "{}", rejected.len());

    // The genuine step is accepted and opens the case.
    let a = action(
        "assist.request",
        case,
        request(),
        credential(Role::Investigator, &fj_key),
    );
    send("assist.request", case, a.sign(&personal).bytes().to_vec())
        .await
        .unwrap();
    assert_eq!(case_state(&sx, case).await, "received");
    fed.stop("sx").await;
}

fn fed_key(n: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[n; 32])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_goes_when_its_own_retention_ends_and_the_record_stays() {
    let mut fed = federation();
    let fj = fed.start("fj").await.unwrap();
    let sx = fed.start("sx").await.unwrap();
    let lin = Officer::enroll(&fj, "fj/lin.wei", "investigator")
        .await
        .unwrap();
    // A request whose provider allows the body to be kept for no time at all, and one kept
    // for a year.
    let mut short = lin.action(
        "assist.request",
        "FJ-2026-0600",
        assist_request_doc("identity_check", None),
    );
    short.retention_days = 0;
    let short = lin.submit(&short, &["sx"]).await.unwrap();
    let long = lin
        .act(
            "assist.request",
            "FJ-2026-0601",
            assist_request_doc("identity_check", None),
            &["sx"],
        )
        .await
        .unwrap();
    delivered(&fj, &short).await;
    delivered(&fj, &long).await;
    // Bodies still in the inbox are kept until the application took them.
    for m in sx.inbox(10, false).await.unwrap() {
        sx.ack(m.inbox_seq.unwrap()).await.unwrap();
    }
    let purged = sx.purge_bodies(liaison_node::now_ms() + 1).await.unwrap();
    assert_eq!(purged, 1);
    // Only the short-lived body went; the message record stays.
    let short_id = &short.messages[0].message_id;
    assert!(sx.message(short_id).await.unwrap().is_some());
    assert_eq!(entries_of(&sx, EntryKind::BodyPurged).await.len(), 1);
    assert!(sx.audit_verify().await.unwrap().first_problem.is_none());
    for id in ["fj", "sx"] {
        fed.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_the_recipient_refuses_shows_in_the_senders_timeline() {
    let mut fed = federation();
    let fj = fed.start("fj").await.unwrap();
    let jmo = fed.start("jmo").await.unwrap();
    let sun = Officer::enroll(&jmo, "jmo/sun.ming", "supervisor")
        .await
        .unwrap();
    // Supervision of a case Fujian does not hold: Fujian refuses it with a signed receipt.
    let r = sun
        .act(
            "supervision.attach",
            "FJ-NO-SUCH-CASE",
            Document::new()
                .with("interval_days", 7u64)
                .with("instruction", "report weekly"),
            &["fj"],
        )
        .await
        .unwrap();
    let id = r.messages[0].message_id.clone();
    wait_for(LIMIT, async || {
        jmo.case("FJ-NO-SUCH-CASE").await.unwrap().is_some_and(|c| {
            c.timeline
                .iter()
                .any(|e| e.direction == StepDirection::Refused)
        })
    })
    .await
    .unwrap();
    let view = jmo.message(&id).await.unwrap().unwrap();
    let state = serde_json::to_value(&view.state).unwrap();
    assert_eq!(state["state"], "rejected");
    assert!(
        state["reason"]
            .as_str()
            .unwrap()
            .contains("no case FJ-NO-SUCH-CASE"),
        "{state}"
    );
    assert_eq!(case_state(&fj, "FJ-NO-SUCH-CASE").await, "missing");
    for id in ["fj", "jmo"] {
        fed.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_at_the_border_reaches_the_domestic_units_and_a_lonely_one_can_be_cancelled() {
    let mut fed = federation();
    let hh = fed.start("hh").await.unwrap();
    let hk = fed.start("hk").await.unwrap();
    let _vn = fed.start("vn").await.unwrap();
    let ma = Officer::enroll(&hh, "hh/ma.jun", "investigator")
        .await
        .unwrap();
    let child = || {
        Document::new()
            .with(
                "child",
                Document::new()
                    .with("name", "LI Hua")
                    .with("sex", "female")
                    .with("description", "6 years old, yellow raincoat"),
            )
            .with("missing_since", liaison_node::now_ms() - 10 * 60 * 1000)
            .with("contact", "desk 2")
    };
    // Last seen at Hekou: the border station is within 100 km, and so is Lao Cai across the
    // river; the alert is not released abroad (and the policy keeps alerts domestic), so it
    // goes to Hekou only, and nothing is refused.
    let mut doc = child();
    doc.set(
        "last_seen",
        Document::new()
            .with("place", "Hekou bus station")
            .with("lat_e6", "22510000")
            .with("lon_e6", "103950000"),
    );
    let refusals = entries_of(&hh, EntryKind::RefusedByPolicy).await.len();
    let r = ma.act("alert.issue", "HH-ALERT-1", doc, &[]).await.unwrap();
    assert_eq!(r.messages.len(), 1, "{r:?}");
    assert_eq!(r.messages[0].hop.as_str(), "hk");
    delivered(&hh, &r).await;
    assert_eq!(case_state(&hk, "HH-ALERT-1").await, "active");
    hh.case_tick().await.unwrap();
    assert_eq!(
        entries_of(&hh, EntryKind::RefusedByPolicy).await.len(),
        refusals
    );

    // Last seen far from every unit: filed here; cancelling it needs no recipient and stops
    // it from ever going out.
    let mut doc = child();
    doc.set(
        "last_seen",
        Document::new()
            .with("place", "Nansha islands")
            .with("lat_e6", "10000000")
            .with("lon_e6", "114000000"),
    );
    let r = ma.act("alert.issue", "HH-ALERT-2", doc, &[]).await.unwrap();
    assert!(r.messages.is_empty());
    assert_eq!(case_state(&hh, "HH-ALERT-2").await, "active");
    let r = ma
        .act(
            "alert.cancel",
            "HH-ALERT-2",
            Document::new().with("reason", "found"),
            &[],
        )
        .await
        .unwrap();
    assert!(r.messages.is_empty());
    assert_eq!(case_state(&hh, "HH-ALERT-2").await, "cancelled");
    assert!(
        hh.case("HH-ALERT-2")
            .await
            .unwrap()
            .unwrap()
            .alerted
            .is_empty()
    );
    for id in ["hh", "hk", "vn"] {
        fed.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_that_arrive_out_of_order_are_applied_in_order() {
    let mut fed = federation();
    let fj = fed.start("fj").await.unwrap();
    let sx = fed.start("sx").await.unwrap();
    let lin = Officer::enroll(&fj, "fj/lin.wei", "investigator")
        .await
        .unwrap();
    let zhao = Officer::enroll(&sx, "sx/zhao.lei", "investigator")
        .await
        .unwrap();
    let case = "FJ-2026-0700";
    let r = lin
        .act(
            "assist.request",
            case,
            assist_request_doc("locate", Some(liaison_node::now_ms() + 3_600_000)),
            &["sx"],
        )
        .await
        .unwrap();
    delivered(&fj, &r).await;
    // Fujian goes down; Shaanxi accepts (routine) and then reports an arrest (urgent): the
    // urgent notice leaves first when Fujian is back.
    drop((fj, lin));
    fed.stop("fj").await;
    let accept = zhao
        .act("assist.accept", case, Document::new(), &["fj"])
        .await
        .unwrap();
    let notice = zhao
        .act(
            "assist.custody_notice",
            case,
            Document::new()
                .with("detained_at", liaison_node::now_ms())
                .with("place", "Yanta detention centre"),
            &["fj"],
        )
        .await
        .unwrap();
    assert_eq!(
        sx.message(&notice.messages[0].message_id)
            .await
            .unwrap()
            .unwrap()
            .priority,
        "urgent"
    );
    let fj = fed.start("fj").await.unwrap();
    delivered(&sx, &accept).await;
    delivered(&sx, &notice).await;
    let view = fj.case(case).await.unwrap().unwrap();
    let kinds: Vec<&str> = view.timeline.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["assist.request", "assist.accept", "assist.custody_notice"]
    );
    assert_eq!(view.case.state.name(), "accepted");
    for id in ["fj", "sx"] {
        fed.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_plain_messages_in_workflow_namespaces_and_consent_shortcuts_are_refused() {
    let mut fed = federation();
    let fj = fed.start("fj").await.unwrap();
    let _sx = fed.start("sx").await.unwrap();
    let lin = Officer::enroll(&fj, "fj/lin.wei", "investigator")
        .await
        .unwrap();
    // The same signed action twice.
    let a = lin.action(
        "assist.request",
        "FJ-2026-0800",
        assist_request_doc("identity_check", None),
    );
    lin.submit(&a, &["sx"]).await.unwrap();
    let e = refusal(lin.submit(&a, &["sx"]).await);
    assert!(matches!(e, ActRefusal::AlreadySubmitted { .. }), "{e:?}");
    // A plain message in a workflow's namespace, even with a kind the catalog does not list.
    for (to, kind) in [("sx", "assist.request"), ("vn", "repatriation.notes")] {
        let e = fj
            .send(msg(to, kind, b"victim details"))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("officer-signed"), "{kind}: {e}");
    }
    // A nationality request without the case (and its consent record) opened here.
    let mut a = lin.action(
        "repatriation.nationality_request",
        "FJ-REP-2026-900",
        Document::new()
            .with(
                "person",
                Document::new()
                    .with("name", "LE Thi C")
                    .with("sex", "female")
                    .with("nationality", "VNM"),
            )
            .with("consent_notify_origin", true),
    );
    a.abroad = true;
    let e = refusal(lin.submit(&a, &["vn"]).await);
    assert!(matches!(e, ActRefusal::CaseNotOpenHere(_)), "{e:?}");
    // An alert derived from a message this node does not hold (a mistyped id) is refused,
    // not quietly sent to nobody.
    let mut alert = lin.action(
        "alert.issue",
        "FJ-ALERT-9",
        Document::new()
            .with(
                "child",
                Document::new()
                    .with("name", "CHEN Li")
                    .with("sex", "female")
                    .with("description", "green coat"),
            )
            .with(
                "last_seen",
                Document::new()
                    .with("place", "Fuzhou station")
                    .with("lat_e6", "26074500")
                    .with("lon_e6", "119296500"),
            )
            .with("missing_since", liaison_node::now_ms())
            .with("contact", "desk 4"),
    );
    alert.derived_from = vec![MessageId([7; 16])];
    let e = refusal(lin.submit(&alert, &[]).await);
    assert!(
        matches!(&e, ActRefusal::Onward(why) if why.contains("not held")),
        "{e:?}"
    );
    assert_eq!(case_state(&fj, "FJ-ALERT-9").await, "missing");
    for id in ["fj", "sx"] {
        fed.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_widened_alert_reaches_the_next_ring_and_its_cancellation_reaches_every_unit() {
    // In virtual time: the hour after which the alert widens passes when the test says so.
    let mut fed = federation().in_virtual_time();
    let sx = fed.start("sx").await.unwrap();
    let xa = fed.start("xa").await.unwrap();
    let bj = fed.start("bj").await.unwrap();
    let zhao = Officer::enroll(&sx, "sx/zhao.lei", "investigator")
        .await
        .unwrap();
    let case = "SX-ALERT-WIDE";
    // Missing since now: 100 km for the first hour (the Xi'an registry), then 200 km
    // (Baoji).
    let doc = Document::new()
        .with(
            "child",
            Document::new()
                .with("name", "WANG Xiaoming")
                .with("sex", "male")
                .with("description", "red jacket"),
        )
        .with(
            "last_seen",
            Document::new()
                .with("place", "Xi'an railway station")
                .with("lat_e6", "34278500")
                .with("lon_e6", "108961700"),
        )
        .with("missing_since", sx.now_ms())
        .with("contact", "desk 1");
    let r = zhao.act("alert.issue", case, doc, &[]).await.unwrap();
    assert_eq!(r.messages.len(), 1);
    assert_eq!(r.messages[0].hop.as_str(), "xa");
    wait_for(LIMIT, async || case_state(&xa, case).await == "active")
        .await
        .unwrap();
    // A moment short of the hour, a tick widens nothing.
    fed.advance(Duration::from_millis(3_600_000 - 1));
    sx.case_tick().await.unwrap();
    assert_eq!(sx.case(case).await.unwrap().unwrap().alerted.len(), 1);
    // The ticker's next tick (every second) after the hour widens it.
    fed.advance(Duration::from_secs(1));
    wait_for(LIMIT, async || case_state(&bj, case).await == "active")
        .await
        .unwrap();
    assert_eq!(case_state(&xa, case).await, "active");
    let view = sx.case(case).await.unwrap().unwrap();
    assert_eq!(view.alerted.len(), 2);
    assert!(
        view.timeline
            .iter()
            .any(|e| e.direction == StepDirection::Widened)
    );
    // Cancelled: every unit reached, the widened one too, and nothing widens any more.
    let r = zhao
        .act(
            "alert.cancel",
            case,
            Document::new().with("reason", "found"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.messages.len(), 2, "{r:?}");
    delivered(&sx, &r).await;
    assert_eq!(case_state(&xa, case).await, "cancelled");
    assert_eq!(case_state(&bj, case).await, "cancelled");
    assert!(
        sx.case(case)
            .await
            .unwrap()
            .unwrap()
            .case
            .state
            .is_terminal()
    );
    for id in ["sx", "xa", "bj"] {
        fed.stop(id).await;
    }
}
