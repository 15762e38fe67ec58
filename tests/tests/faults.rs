//! Faults of the store: a disk that fills up under a recipient and under a relay (real
//! write failures from the kernel, in a child process), concurrent takes of one inbox
//! entry, and a store put back from an older copy.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::Duration;

use liaison_node::api::{Client, Request};
use liaison_node::{NodeError, StoreError};
use liaison_protocol::audit::EntryKind;
use liaison_tests::{Federation, count_state, entries_of, member, msg, spec, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_liaison-test-node");
const LIMIT: Duration = Duration::from_secs(30);
/// Room left in the store's files beyond what they hold: a megabyte (sled needs some of
/// it to open), filled by the messages that follow.
const ROOM: u64 = 1024 * 1024;
/// Most messages sent before the disk must have filled.
const MAX_SENT: usize = 20_000;

/// A client of a child's API (which may take a moment to listen after its socket appears).
async fn client(api: &std::path::Path) -> Client {
    let mut last = None;
    for _ in 0..100 {
        match Client::connect(api).await {
            Ok(c) => return c,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot reach {}: {last:?}", api.display())
}

/// Starts `id` as a child once and stops it, so its store exists; returns its size.
async fn prepared(fed: &mut Federation, id: &str) -> u64 {
    let api = fed.spawn_process(id, BIN).await.unwrap();
    let mut c = client(&api).await;
    c.call(&Request::Shutdown).await.unwrap();
    assert!(fed.wait_process(id).unwrap().success());
    fed.store_bytes(id).unwrap()
}

/// Why the child's store failed, if it did.
async fn store_failure(api: &std::path::Path) -> Option<String> {
    let mut c = Client::connect(api).await.ok()?;
    let v = c.call(&Request::Status).await.ok()?;
    v["store_failure"].as_str().map(ToOwned::to_owned)
}

/// Sends 1 KiB messages from `from` to `to` in rounds of 100, each round waiting until the
/// messages left `from` (receipted, custodied, or refused by a node whose store failed),
/// until the store of the child at `api` fails. Returns the ids sent and why it failed.
async fn fill(from: &liaison_node::Node, to: &str, api: &std::path::Path) -> (Vec<String>, String) {
    let body = vec![0x42u8; 1024];
    let mut sent = Vec::new();
    loop {
        for _ in 0..100 {
            sent.push(
                from.send(msg(to, "bus.test", &body))
                    .await
                    .unwrap()
                    .message_id,
            );
        }
        let n = sent.len();
        let settled = wait_for(LIMIT, async || {
            let left = count_state(from, "outgoing", "delivered").await
                + count_state(from, "outgoing", "in_custody").await;
            left == n || store_failure(api).await.is_some()
        })
        .await;
        assert!(
            settled.is_ok(),
            "no progress at {n} messages: {} delivered, {} in custody, {} queued; peers {:?}; \
             store failure {:?}",
            count_state(from, "outgoing", "delivered").await,
            count_state(from, "outgoing", "in_custody").await,
            count_state(from, "outgoing", "queued").await,
            from.peers(),
            store_failure(api).await
        );
        if let Some(why) = store_failure(api).await {
            return (sent, why);
        }
        assert!(n < MAX_SENT, "the disk never filled");
    }
}

async fn inbox_ids(api: &std::path::Path, n: usize) -> Vec<String> {
    let mut c = client(api).await;
    c.call(&Request::Inbox {
        limit: 10 * n,
        body: false,
    })
    .await
    .unwrap()
    .as_array()
    .unwrap()
    .iter()
    .map(|m| m["message_id"].as_str().unwrap().to_owned())
    .collect()
}

/// The recipient's disk fills while messages arrive and are retried: nothing it cannot keep
/// is receipted. After the node is restarted with space, every message the sender holds a
/// receipt for is in its inbox, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_at_the_recipient_receipts_only_what_it_keeps() {
    let mut fed = Federation::new(&spec(vec![
        member("fj", "public_security", "CHN", None),
        member("sx", "public_security", "CHN", None),
    ]))
    .unwrap();
    let size = prepared(&mut fed, "sx").await;
    let api = fed
        .spawn_process_limited("sx", BIN, size + ROOM)
        .await
        .unwrap();
    let fj = fed.start("fj").await.unwrap();
    let (sent, why) = fill(&fj, "sx", &api).await;
    let burst = sent.len();
    assert!(why.contains("large") || why.contains("space"), "{why}");
    let receipted_before = count_state(&fj, "outgoing", "delivered").await;
    assert!(
        receipted_before < burst,
        "the disk never filled ({receipted_before} delivered)"
    );
    // The failed node is killed (whatever it still held in memory is gone), then started
    // again with space.
    fed.kill_process("sx").unwrap();
    let api = fed.spawn_process("sx", BIN).await.unwrap();
    wait_for(LIMIT, async || {
        count_state(&fj, "outgoing", "delivered").await == burst
    })
    .await
    .unwrap();
    let ids = inbox_ids(&api, burst).await;
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a message reached the inbox twice");
    for id in &sent {
        assert!(
            unique.contains(id),
            "message {id} was receipted but is not in the inbox"
        );
    }
    assert_eq!(ids.len(), burst);
    let mut c = client(&api).await;
    let report = c.call(&Request::AuditVerify).await.unwrap();
    assert!(report["first_problem"].is_null(), "{report}");
    c.call(&Request::Shutdown).await.unwrap();
    fed.wait_process("sx").unwrap();
    fed.stop("fj").await;
}

/// A relay's disk fills while it takes custody: nothing it cannot keep is custodied. After
/// it is restarted with space and the recipient comes up, every message is delivered; none
/// is left "in custody" of a relay that lost it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_at_a_relay_takes_custody_only_of_what_it_keeps() {
    let mut fed = Federation::new(&spec(vec![
        member("fj", "public_security", "CHN", None),
        member("hk", "border_station", "CHN", None),
        member("vn", "foreign_counterpart", "VNM", Some("hk")),
    ]))
    .unwrap();
    let size = prepared(&mut fed, "hk").await;
    let api = fed
        .spawn_process_limited("hk", BIN, size + ROOM)
        .await
        .unwrap();
    let fj = fed.start("fj").await.unwrap();
    let (sent, _) = fill(&fj, "vn", &api).await;
    let burst = sent.len();
    let custodied = count_state(&fj, "outgoing", "in_custody").await;
    assert!(custodied > 0 && custodied < burst, "{custodied} in custody");
    fed.kill_process("hk").unwrap();
    let api = fed.spawn_process("hk", BIN).await.unwrap();
    let vn = fed.start("vn").await.unwrap();
    let all = wait_for(LIMIT, async || {
        count_state(&fj, "outgoing", "delivered").await == burst
    })
    .await;
    assert!(
        all.is_ok(),
        "{} delivered, {} still in custody",
        count_state(&fj, "outgoing", "delivered").await,
        count_state(&fj, "outgoing", "in_custody").await
    );
    let ids: Vec<String> = vn
        .inbox(10 * burst, false)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.message_id)
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!((ids.len(), unique.len()), (burst, burst));
    let mut c = client(&api).await;
    c.call(&Request::Shutdown).await.unwrap();
    fed.wait_process("hk").unwrap();
    fed.stop("fj").await;
    fed.stop("vn").await;
}

/// Two applications take the same inbox entry at once: exactly one gets it, and one
/// "handed to application" entry is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_acks_of_one_entry_succeed_once() {
    let mut fed = Federation::new(&spec(vec![
        member("fj", "public_security", "CHN", None),
        member("sx", "public_security", "CHN", None),
    ]))
    .unwrap();
    let fj = fed.start("fj").await.unwrap();
    let sx = fed.start("sx").await.unwrap();
    for i in 0..20 {
        fj.send(msg("sx", "bus.test", format!("m{i}").as_bytes()))
            .await
            .unwrap();
    }
    wait_for(LIMIT, async || {
        count_state(&fj, "outgoing", "delivered").await == 20
    })
    .await
    .unwrap();
    for m in sx.inbox(100, false).await.unwrap() {
        let seq = m.inbox_seq.unwrap();
        let (a, b) = tokio::join!(sx.ack(seq), sx.ack(seq));
        assert!(a.is_ok() != b.is_ok(), "{a:?} / {b:?}");
        let err = a.err().or(b.err()).unwrap();
        assert!(
            matches!(&err, NodeError::Invalid(r) if r.contains("already taken")),
            "{err}"
        );
    }
    assert_eq!(
        entries_of(&sx, EntryKind::HandedToApplication).await.len(),
        20
    );
    assert!(sx.inbox(100, false).await.unwrap().is_empty());
    fed.stop("fj").await;
    fed.stop("sx").await;
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// The store's files put back from an older copy (a restore of yesterday's disk image, a
/// damaged file that sled recovered by dropping what followed): the node refuses to start
/// and says what is missing, instead of serving old state and taken messages again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_put_back_from_an_older_copy_is_refused_at_start() {
    let mut fed = Federation::new(&spec(vec![
        member("fj", "public_security", "CHN", None),
        member("sx", "public_security", "CHN", None),
    ]))
    .unwrap();
    let fj = fed.start("fj").await.unwrap();
    let sx = fed.start("sx").await.unwrap();
    let send = async |n: usize| {
        let before = count_state(&fj, "outgoing", "delivered").await;
        for i in 0..n {
            fj.send(msg("sx", "bus.test", format!("m{i}").as_bytes()))
                .await
                .unwrap();
        }
        wait_for(LIMIT, async || {
            count_state(&fj, "outgoing", "delivered").await == before + n
        })
        .await
        .unwrap();
    };
    send(5).await;
    let store = fed.config("sx").unwrap().data_dir.join("store");
    let old = tempfile::tempdir().unwrap();
    fed.stop("sx").await;
    drop(sx);
    copy_dir(&store, old.path());
    let sx = fed.start("sx").await.unwrap();
    send(5).await;
    for m in sx.inbox(100, false).await.unwrap() {
        sx.ack(m.inbox_seq.unwrap()).await.unwrap();
    }
    fed.stop("sx").await;
    drop(sx);
    std::fs::remove_dir_all(&store).unwrap();
    copy_dir(old.path(), &store);
    let err = fed.start("sx").await.unwrap_err();
    let err = err.downcast::<NodeError>().unwrap();
    match &err {
        NodeError::Store(StoreError::RolledBack { problem, .. }) => {
            assert!(problem.contains("entries"), "{err}");
        }
        other => panic!("expected a refusal to start, got: {other}"),
    }
    assert!(err.to_string().contains("backup"), "{err}");
    fed.stop("fj").await;
}

/// The whole data directory (store and log head) put back from an older copy, or lost: the
/// node's own files cannot tell, but its witnesses can. A store whose witnesses are known
/// to it is refused at start; a new, empty store is failed as soon as a witness it reaches
/// answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn witnesses_that_hold_more_of_the_log_stop_a_store_that_went_back() {
    let mut fed = Federation::new(&spec(vec![
        member("fj", "public_security", "CHN", None),
        member("sx", "public_security", "CHN", None),
    ]))
    .unwrap();
    let fj = fed.start("fj").await.unwrap();
    let sx = fed.start("sx").await.unwrap();
    let round = async |fj: &liaison_node::Node, n: usize| {
        let before = count_state(fj, "outgoing", "delivered").await;
        for i in 0..n {
            fj.send(msg("sx", "bus.test", format!("m{i}").as_bytes()))
                .await
                .unwrap();
        }
        wait_for(LIMIT, async || {
            count_state(fj, "outgoing", "delivered").await == before + n
        })
        .await
        .unwrap();
        let outcome = fj.witness_round().await.unwrap();
        assert!(outcome.iter().all(|o| o.result.is_ok()), "{outcome:?}");
    };
    round(&fj, 3).await;
    let data = fed.config("fj").unwrap().data_dir;
    let old = tempfile::tempdir().unwrap();
    fed.stop("fj").await;
    drop(fj);
    copy_dir(&data, old.path());
    let fj = fed.start("fj").await.unwrap();
    round(&fj, 3).await;
    fed.stop("fj").await;
    drop(fj);
    // The older copy of everything: consistent in itself, behind its witness.
    std::fs::remove_dir_all(&data).unwrap();
    copy_dir(old.path(), &data);
    let _ = std::fs::remove_file(data.join("api.sock"));
    let err = fed.start("fj").await.unwrap_err();
    let err = err.downcast::<NodeError>().unwrap();
    assert!(
        matches!(&err, NodeError::Store(StoreError::BehindWitness { witness, cosigned, held, .. })
            if witness == "sx" && cosigned > held),
        "{err}"
    );
    // The data directory lost altogether: the new store is failed once the witness answers.
    std::fs::remove_dir_all(&data).unwrap();
    let fj = fed.start("fj").await.unwrap();
    // The witness is asked as soon as a connection shows it is up (here: the first message).
    fj.send(msg("sx", "bus.test", b"after the loss"))
        .await
        .unwrap();
    wait_for(LIMIT, async || fj.store_failure().is_some())
        .await
        .unwrap();
    assert!(
        fj.store_failure()
            .unwrap()
            .contains("witness sx has cosigned"),
        "{:?}",
        fj.store_failure()
    );
    fed.stop("fj").await;
    fed.stop("sx").await;
    drop(sx);
}
