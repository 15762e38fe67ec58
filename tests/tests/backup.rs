//! Online backup and restore (issue 11): a node backed up while it runs, then restored into a
//! new directory and started from there, resumes with its queue, inbox, log and keys: what it
//! had queued goes out once, what it had received is still there once, what peers queued for
//! it arrives once, and its log still verifies, grows and is cosigned by its witness.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::Duration;

use liaison_node::{Config, Node};
use liaison_tests::{count_state, msg, two_bureaus, wait_for};

async fn inbox_ids(node: &Node) -> Vec<String> {
    node.messages()
        .await
        .unwrap()
        .into_iter()
        .filter(|m| serde_json::to_value(m.direction).unwrap() == "incoming")
        .map(|m| m.message_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_backed_up_while_running_resumes_from_the_restore() {
    let mut fed = two_bureaus();
    let fj = fed.start("fj").await.unwrap();
    let sx = fed.start("sx").await.unwrap();
    // sx has received 30 messages (in its inbox).
    for i in 0..30 {
        fj.send(msg("sx", "bus.test", format!("to sx {i}").as_bytes()))
            .await
            .unwrap();
    }
    wait_for(Duration::from_secs(30), async || {
        count_state(&fj, "outgoing", "delivered").await == 30
    })
    .await
    .unwrap();
    // fj witnesses sx's log as it is now.
    let round = sx.witness_round().await.unwrap();
    assert!(round.iter().all(|o| o.result.is_ok()), "{round:?}");
    // fj goes away; sx queues 25 messages for it, and is backed up with the queue full, while
    // it keeps taking sends.
    fed.stop("fj").await;
    drop(fj);
    for i in 0..25 {
        sx.send(msg(
            "fj",
            "bus.test",
            format!("queued at sx {i}").as_bytes(),
        ))
        .await
        .unwrap();
    }
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("sx.backup");
    let summary = sx.backup(file.clone()).await.unwrap();
    assert_eq!(summary.header.node, "sx");
    assert!(summary.files.iter().any(|f| f == "signing.key.pem"));
    let log_at_backup = summary.header.log_size;
    // The node, and its directory, are gone.
    fed.stop("sx").await;
    drop(sx);
    std::fs::remove_dir_all(fed.config("sx").unwrap().data_dir).unwrap();

    // Restored into a new directory and started from the restored config (same address).
    let dir = work.path().join("restored");
    let restored = liaison_node::backup::restore(&file, &dir, None)
        .await
        .unwrap();
    assert_eq!(restored.header.log_size, log_at_backup);
    // A second restore into the same place is refused.
    let again = liaison_node::backup::restore(&file, &dir, None).await;
    assert!(again.is_err());
    let cfg = Config::load(&restored.config).unwrap();
    assert_eq!(cfg.data_dir, dir.join("data"));
    let sx = fed
        .start_with("sx", |c| {
            let listen = c.listen;
            *c = cfg;
            c.listen = listen;
        })
        .await
        .unwrap();
    // Its inbox is whole, its log verifies and is the one backed up.
    let inbox = inbox_ids(&sx).await;
    assert_eq!(inbox.len(), 30);
    let report = sx.audit_verify().await.unwrap();
    assert!(report.first_problem.is_none(), "{report:?}");
    assert!(report.entries >= log_at_backup);

    // fj returns: sx's queue drains to it once; what fj sends now reaches sx once.
    let fj = fed.start("fj").await.unwrap();
    for i in 0..10 {
        fj.send(msg(
            "sx",
            "bus.test",
            format!("after the restore {i}").as_bytes(),
        ))
        .await
        .unwrap();
    }
    wait_for(Duration::from_secs(60), async || {
        count_state(&sx, "outgoing", "delivered").await == 25
            && count_state(&fj, "outgoing", "delivered").await == 40
    })
    .await
    .unwrap();
    let at_fj = inbox_ids(&fj).await;
    assert_eq!(at_fj.len(), 25);
    assert_eq!(at_fj.iter().collect::<HashSet<_>>().len(), 25);
    let at_sx = inbox_ids(&sx).await;
    assert_eq!(at_sx.len(), 40);
    assert_eq!(at_sx.iter().collect::<HashSet<_>>().len(), 40);
    let report = sx.audit_verify().await.unwrap();
    assert!(report.first_problem.is_none(), "{report:?}");
    assert!(report.entries > log_at_backup);
    // Its witness accepts the restored log as the same log, grown.
    let round = sx.witness_round().await.unwrap();
    assert!(
        !round.is_empty() && round.iter().all(|o| o.result.is_ok()),
        "{round:?}"
    );
}
