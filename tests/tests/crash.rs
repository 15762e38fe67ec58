//! Crash safety: the recipient is killed with SIGKILL in the middle of a burst.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::Duration;

use liaison_node::api::{Client, Request};
use liaison_protocol::NodeId;
use liaison_protocol::action::{Action, Handling};
use liaison_tests::{
    Federation, assist_request_doc, case_state, count_state, member, msg, spec, wait_for,
};

const BIN: &str = env!("CARGO_BIN_EXE_liaison-test-node");
const BURST: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipient_sigkilled_mid_burst_loses_nothing_and_duplicates_nothing() {
    let mut fed = Federation::new(&spec(vec![
        member("fj", "public_security", "CHN", None),
        member("sx", "public_security", "CHN", None),
    ]))
    .unwrap();
    let api = fed.spawn_process("sx", BIN).await.unwrap();
    let fj = fed.start("fj").await.unwrap();
    let sender = fj.clone();
    let burst = tokio::spawn(async move {
        for i in 0..BURST {
            sender
                .send(msg("sx", "bus.test", format!("burst {i}").as_bytes()))
                .await
                .unwrap();
        }
    });
    // Kill the recipient once part of the burst is receipted.
    wait_for(Duration::from_secs(60), async || {
        count_state(&fj, "outgoing", "delivered").await >= 40
    })
    .await
    .unwrap();
    fed.kill_process("sx").unwrap();
    let at_kill = count_state(&fj, "outgoing", "delivered").await;
    assert!(at_kill < BURST, "the burst finished before the kill");
    burst.await.unwrap();

    let api = {
        let restarted = fed.spawn_process("sx", BIN).await.unwrap();
        assert_eq!(restarted, api);
        restarted
    };
    let done = wait_for(Duration::from_secs(90), async || {
        count_state(&fj, "outgoing", "delivered").await == BURST
    })
    .await;
    assert!(
        done.is_ok(),
        "not all delivered: {} of {BURST}; peers {:?}",
        count_state(&fj, "outgoing", "delivered").await,
        fj.peers()
    );

    let mut client = Client::connect(&api).await.unwrap();
    let inbox = client
        .call(&Request::Inbox {
            limit: 10 * BURST,
            body: false,
        })
        .await
        .unwrap();
    let ids: Vec<String> = inbox
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message_id"].as_str().unwrap().to_owned())
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a message reached the inbox twice");
    // Every message the sender holds a receipt for is in the recipient's inbox.
    let receipted: HashSet<String> = fj
        .messages()
        .await
        .unwrap()
        .into_iter()
        .filter(|m| serde_json::to_value(&m.state).unwrap()["state"] == "delivered")
        .map(|m| m.message_id)
        .collect();
    assert_eq!(receipted.len(), BURST);
    for id in &receipted {
        assert!(
            unique.contains(id),
            "receipted message {id} missing after the crash"
        );
    }
    assert_eq!(ids.len(), BURST);
    client.call(&Request::Shutdown).await.unwrap();
    assert!(fed.wait_process("sx").unwrap().success());

    // The crash left no event without its audit entry and no entry without its event: every
    // stored message has its "received" entry (same envelope) and every such entry its
    // message, and the whole log recomputes and verifies.
    let sx = fed.start("sx").await.unwrap();
    let received: HashSet<String> = sx
        .log_entries(0, sx.log_len())
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, e)| e.kind == liaison_protocol::audit::EntryKind::MessageReceived)
        .map(|(_, e)| {
            liaison_protocol::Envelope::peek_unverified(&e.object)
                .unwrap()
                .1
                .id
                .to_hex()
        })
        .collect();
    let stored: HashSet<String> = sx
        .messages()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.message_id)
        .collect();
    assert_eq!(received, stored);
    assert_eq!(received.len(), BURST);
    let report = sx.audit_verify().await.unwrap();
    assert!(report.first_problem.is_none(), "{report:?}");
    fed.stop("sx").await;
    fed.stop("fj").await;
}

/// The sender of a case step is killed with SIGKILL as the recipient's receipt comes back:
/// the receipt and the case change it causes (`sent` → `received`) are one change, so after
/// the restart the case has moved on (the receipt was recorded with it, or the step is sent
/// again and the recipient answers with the receipt it kept).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_killed_as_its_receipt_arrives_moves_the_case_on_after_restart() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut fed = Federation::new(&spec(vec![
        member("fj", "public_security", "CHN", None),
        member("sx", "public_security", "CHN", None),
    ]))
    .unwrap();
    let sx = fed.start("sx").await.unwrap();
    let mut api = fed.spawn_process("fj", BIN).await.unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let mut client = Client::connect(&api).await.unwrap();
    let view = client
        .call(&Request::EnrollOfficer(liaison_node::EnrollRequest {
            id: "fj/lin.wei".into(),
            name: "Lin Wei".into(),
            number: "350102".into(),
            unit: "CID".into(),
            role: "investigator".into(),
            public_key: hex::encode(key.verifying_key().to_bytes()),
        }))
        .await
        .unwrap();
    let credential = b64.decode(view["credential"].as_str().unwrap()).unwrap();
    for round in 0..4 {
        let case = format!("FJ-KILL-{round}");
        let action = Action {
            federation: "test-fed".into(),
            node: NodeId::new("fj").unwrap(),
            kind: "assist.request".into(),
            case_ref: case.clone(),
            at: liaison_node::now_ms(),
            purpose: "criminal_investigation".into(),
            handling: Handling::H0,
            sensitivity: Vec::new(),
            retention_days: 365,
            abroad: false,
            document: assist_request_doc("identity_check", None),
            derived_from: Vec::new(),
            credential: Some(credential.clone()),
        };
        let mut client = Client::connect(&api).await.unwrap();
        client
            .call(&Request::Act(liaison_node::ActRequest {
                action: b64.encode(action.sign(&key).bytes()),
                to: vec![NodeId::new("sx").unwrap()],
                priority: None,
                in_reply_to: None,
            }))
            .await
            .unwrap();
        // The recipient has applied the step and sent its receipt: kill the sender now.
        wait_for(Duration::from_secs(30), async || {
            case_state(&sx, &case).await == "received"
        })
        .await
        .unwrap();
        fed.kill_process("fj").unwrap();
        api = fed.spawn_process("fj", BIN).await.unwrap();
        let moved = wait_for(Duration::from_secs(30), async || {
            let Ok(mut c) = Client::connect(&api).await else {
                return false;
            };
            c.call(&Request::Case {
                case_ref: case.clone(),
            })
            .await
            .is_ok_and(|v| v["case"]["state"] == "received")
        })
        .await;
        assert!(moved.is_ok(), "case {case} stayed `sent` at the sender");
    }
    let mut client = Client::connect(&api).await.unwrap();
    let report = client.call(&Request::AuditVerify).await.unwrap();
    assert!(report["first_problem"].is_null(), "{report}");
    client.call(&Request::Shutdown).await.unwrap();
    fed.wait_process("fj").unwrap();
    fed.stop("sx").await;
}
