//! Crash safety: the recipient is killed with SIGKILL in the middle of a burst.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::Duration;

use liaison_node::api::{Client, Request};
use liaison_tests::{Federation, count_state, member, msg, spec, wait_for};

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
