use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;

use liaison_protocol::audit::{Entry, EntryKind};
use liaison_protocol::merkle::{self, SubtreeHashes as _};
use liaison_protocol::{Digest, NodeId, Priority};

use super::*;

/// sled opened directly, once the store that had it released its lock.
fn raw_open(path: &Path) -> sled::Db {
    let mut last = None;
    for _ in 0..100 {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("cannot open {}: {last:?}", path.display());
}

fn node() -> NodeId {
    NodeId::new("cn-35-psb").unwrap()
}

async fn open(dir: &Path) -> Result<Store, StoreError> {
    Store::open(&dir.join("store"), StoreOptions::default(), node()).await
}

/// A message record holding `body` (and no log entry).
fn with_body(body: &[u8]) -> MessageRecord {
    MessageRecord {
        envelope: vec![1, 2, 3],
        direction: Direction::Incoming,
        state: MsgState::Delivered,
        hop: None,
        stored_at: 1,
        updated_at: 1,
        proof: None,
        inbox_seq: None,
        handed_over: false,
        attempts: 0,
        out_key: None,
        retain_ms: None,
        log_index: None,
        body: Some(body.to_vec()),
    }
}

/// An officer record used as a plain counter cell in these tests.
fn cell(n: u64) -> OfficerRecord {
    OfficerRecord {
        credential: Vec::new(),
        revoked_at: Some(n),
    }
}

#[tokio::test]
async fn batch_with_log_entry_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let d = Digest([1; 32]);
    {
        let s = open(dir.path()).await.unwrap();
        let q = s
            .write(5, move |t| {
                t.put_message(&d, &with_body(b"body"));
                let q = t.push_out(
                    &node(),
                    Priority::Flash,
                    OutItem::Message { digest: d.0 },
                    None,
                );
                t.log(EntryKind::MessageSent, vec![1]);
                Ok(q)
            })
            .await
            .unwrap();
        assert_eq!(q.seq, 0);
        s.close().await.unwrap();
    }
    let s = open(dir.path()).await.unwrap();
    assert_eq!(s.log_len(), 1);
    let (body, out, entries) = s
        .read(move |r| Ok((r.body(&d)?, r.outbox()?, r.log_entries(0, 1)?)))
        .await
        .unwrap();
    assert_eq!(body.unwrap(), b"body");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1.priority, Priority::Flash);
    assert_eq!(
        Entry::decode(&entries[0].1).unwrap().kind,
        EntryKind::MessageSent
    );
}

#[tokio::test]
async fn outbox_orders_by_priority_then_fifo() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).await.unwrap();
    let hop = NodeId::new("cn-61-psb").unwrap();
    s.write(1, move |t| {
        for (i, p) in [
            Priority::Routine,
            Priority::Flash,
            Priority::Routine,
            Priority::Urgent,
        ]
        .into_iter()
        .enumerate()
        {
            t.push_out(
                &hop,
                p,
                OutItem::Message {
                    digest: [i as u8; 32],
                },
                None,
            );
        }
        Ok(())
    })
    .await
    .unwrap();
    let order: Vec<u8> = s
        .read(|r| r.outbox())
        .await
        .unwrap()
        .into_iter()
        .map(|(_, q)| match q.item {
            OutItem::Message { digest } => digest[0],
            _ => 99,
        })
        .collect();
    assert_eq!(order, vec![1, 3, 0, 2]);
}

/// A thousand changes at once: they share few group commits, each sees the writes of those
/// committed with it before it (the counter ends at exactly 1000), every one gets its own
/// audit entry, and the log's root is the root of those entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_changes_share_groups_and_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(open(dir.path()).await.unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000u64 {
        let s = s.clone();
        tasks.spawn(async move {
            s.write(i, move |t| {
                let n = t
                    .officer("counter")?
                    .and_then(|c| c.revoked_at)
                    .unwrap_or(0);
                t.put_officer("counter", &cell(n + 1));
                t.put_officer(&format!("change-{i}"), &cell(i));
                let index = t.log(EntryKind::Rejected, i.to_be_bytes().to_vec());
                Ok((i, n, index))
            })
            .await
            .unwrap()
        });
    }
    let mut seen_counts = Vec::new();
    let mut indices = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (_, n, index) = r.unwrap();
        seen_counts.push(n);
        indices.push(index);
    }
    seen_counts.sort_unstable();
    indices.sort_unstable();
    // Each change saw a different count: they ran one after the other on one state.
    assert_eq!(seen_counts, (0..1000).collect::<Vec<_>>());
    assert_eq!(indices, (0..1000).collect::<Vec<_>>());
    assert_eq!(s.log_len(), 1000);
    let (counter, cells, entries, leaves) = s
        .read(|r| {
            let cells = (0..1000)
                .map(|i| r.officer(&format!("change-{i}")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((
                r.officer("counter")?,
                cells,
                r.log_entries(0, 1000)?,
                r.leaf_hashes(0, 1000)?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(counter.unwrap().revoked_at, Some(1000));
    assert!(cells.iter().all(Option::is_some));
    let mut logged: Vec<u64> = entries
        .iter()
        .map(|(_, b)| {
            let e = Entry::decode(b).unwrap();
            u64::from_be_bytes(e.object.try_into().unwrap())
        })
        .collect();
    logged.sort_unstable();
    assert_eq!(logged, (0..1000).collect::<Vec<_>>());
    let root = merkle::root_from_leaves(&leaves);
    assert_eq!(s.log_root(), (1000, root));
    let stats = s.stats();
    assert_eq!(stats.changes, 1000);
    assert!(
        stats.groups < 1000,
        "every change had a group of its own: {stats:?}"
    );
}

/// A change that fails inside a group leaves nothing; the others commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_change_leaves_nothing_and_the_others_commit() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(open(dir.path()).await.unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u64 {
        let s = s.clone();
        tasks.spawn(async move {
            let r = s
                .write(i, move |t| {
                    t.put_officer(&format!("c-{i}"), &cell(i));
                    t.log(EntryKind::Rejected, i.to_be_bytes().to_vec());
                    if i % 3 == 0 {
                        return Err(StoreError::Corrupt {
                            key: format!("c-{i}"),
                            problem: "refused by the test".into(),
                        });
                    }
                    Ok(())
                })
                .await;
            (i, r)
        });
    }
    while let Some(r) = tasks.join_next().await {
        let (i, r) = r.unwrap();
        assert_eq!(r.is_err(), i % 3 == 0, "change {i}: {r:?}");
    }
    let kept = (0..200).filter(|i| i % 3 != 0).count() as u64;
    assert_eq!(s.log_len(), kept);
    let (cells, entries) = s
        .read(|r| {
            let cells = (0..200u64)
                .map(|i| r.officer(&format!("c-{i}")).map(|c| (i, c.is_some())))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((cells, r.log_entries(0, 1000)?))
        })
        .await
        .unwrap();
    for (i, present) in cells {
        assert_eq!(present, i % 3 != 0, "cell {i}");
    }
    // The log is contiguous and holds only the kept changes' entries.
    assert_eq!(
        entries.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        (0..kept).collect::<Vec<_>>()
    );
    for (_, b) in entries {
        let e = Entry::decode(&b).unwrap();
        let i = u64::from_be_bytes(e.object.try_into().unwrap());
        assert_ne!(i % 3, 0);
    }
}

/// Check-then-write inside the change: of two takes of one inbox entry, one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_takes_of_one_entry_succeed_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(open(dir.path()).await.unwrap());
    let d = Digest([9; 32]);
    let seq = s.write(1, move |t| Ok(t.push_inbox(&d))).await.unwrap();
    for _round in 0..20 {
        let seq = s.write(1, move |t| Ok(t.push_inbox(&d))).await.unwrap();
        let take = |s: Arc<Store>| async move {
            s.write(2, move |t| match t.inbox_entry(seq)? {
                None => Err(StoreError::Corrupt {
                    key: format!("i/{seq}"),
                    problem: "already taken".into(),
                }),
                Some(_) => {
                    t.remove_inbox(seq);
                    t.log(EntryKind::HandedToApplication, vec![]);
                    Ok(())
                }
            })
            .await
        };
        let (a, b) = tokio::join!(take(s.clone()), take(s.clone()));
        assert!(a.is_ok() != b.is_ok(), "{a:?} {b:?}");
    }
    assert_eq!(s.log_len(), 20);
    assert!(seq == 0);
}

/// A failed flush: nothing is acknowledged, and the store refuses every later change and
/// read (the failed batch is still readable inside sled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_flush_answers_nothing_and_fails_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).await.unwrap();
    let d = Digest([3; 32]);
    s.write(1, move |t| {
        t.put_message(&d, &with_body(b"before"));
        t.log(EntryKind::Rejected, vec![1]);
        Ok(())
    })
    .await
    .unwrap();
    s.dangerous_inject_fault(Fault::Flush);
    let e = Digest([4; 32]);
    let r = s
        .write(2, move |t| {
            t.put_message(&e, &with_body(b"lost"));
            t.log(EntryKind::Rejected, vec![2]);
            Ok(())
        })
        .await;
    assert!(matches!(r, Err(StoreError::Db(_))), "{r:?}");
    s.dangerous_inject_fault(Fault::None);
    // The log did not move; nothing is read, nothing is written.
    assert_eq!(s.log_len(), 1);
    assert!(matches!(
        s.read(move |r| r.body(&e)).await,
        Err(StoreError::Failed(_))
    ));
    assert!(matches!(
        s.read(move |r| r.body(&d)).await,
        Err(StoreError::Failed(_))
    ));
    assert!(matches!(
        s.write(3, |t| {
            t.log(EntryKind::Rejected, vec![3]);
            Ok(())
        })
        .await,
        Err(StoreError::Failed(_))
    ));
    assert!(s.failure().is_some());
}

/// An injected apply fault: nothing reaches sled and the store fails the same way.
#[tokio::test]
async fn a_failed_apply_fails_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).await.unwrap();
    s.dangerous_inject_fault(Fault::Apply);
    let r = s
        .write(1, |t| {
            t.log(EntryKind::Rejected, vec![]);
            Ok(())
        })
        .await;
    assert!(r.is_err());
    assert_eq!(s.log_len(), 0);
    s.dangerous_inject_fault(Fault::None);
    assert!(matches!(
        s.read(|r| Ok(r.log_len())).await,
        Err(StoreError::Failed(_))
    ));
}

async fn fill(s: &Store, from: u64, to: u64) {
    s.write(1, move |t| {
        for i in from..to {
            t.log(EntryKind::Rejected, i.to_be_bytes().to_vec());
        }
        Ok(())
    })
    .await
    .unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
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

/// sled files replaced by an older copy: refused at open, naming what is missing.
#[tokio::test]
async fn an_older_copy_of_the_files_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let old = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path()).await.unwrap();
        fill(&s, 0, 10).await;
        s.close().await.unwrap();
    }
    copy_dir(&dir.path().join("store"), old.path());
    {
        let s = open(dir.path()).await.unwrap();
        fill(&s, 10, 25).await;
        s.close().await.unwrap();
    }
    std::fs::remove_dir_all(dir.path().join("store")).unwrap();
    copy_dir(old.path(), &dir.path().join("store"));
    let e = open(dir.path()).await.unwrap_err();
    match &e {
        StoreError::RolledBack { problem, .. } => {
            assert!(problem.contains("holds 10 entries"), "{e}");
            assert!(problem.contains("had committed 25"), "{e}");
        }
        other => panic!("expected a rollback refusal, got {other}"),
    }
    // A wholly new store in place of the old one is refused the same way.
    std::fs::remove_dir_all(dir.path().join("store")).unwrap();
    assert!(matches!(
        open(dir.path()).await.unwrap_err(),
        StoreError::RolledBack { .. }
    ));
}

/// A log with the same length but other entries than the head recorded is refused.
#[tokio::test]
async fn a_rewritten_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path()).await.unwrap();
        fill(&s, 0, 8).await;
        s.close().await.unwrap();
    }
    {
        let s = open(other.path()).await.unwrap();
        fill(&s, 100, 108).await;
        s.close().await.unwrap();
    }
    std::fs::remove_dir_all(dir.path().join("store")).unwrap();
    copy_dir(&other.path().join("store"), &dir.path().join("store"));
    let e = open(dir.path()).await.unwrap_err();
    assert!(
        matches!(&e, StoreError::RolledBack { problem, .. } if problem.contains("rewritten")),
        "{e}"
    );
}

/// Damaged sled files: an error (damaged, or behind the head), never a panic, and never a
/// store that opens with less than it had.
#[tokio::test]
async fn damaged_files_give_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path()).await.unwrap();
        for i in 0..40 {
            fill(&s, i * 50, (i + 1) * 50).await;
        }
        s.close().await.unwrap();
    }
    let db_file = dir.path().join("store").join("db");
    let len = std::fs::metadata(&db_file).unwrap().len();
    let mut refused = 0;
    for k in 1..8u64 {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), copy.path());
        let f = copy.path().join("store").join("db");
        let mut bytes = std::fs::read(&f).unwrap();
        let at = (len * k / 8) as usize;
        for b in &mut bytes[at..(at + 64).min(len as usize)] {
            *b ^= 0xff;
        }
        std::fs::write(&f, bytes).unwrap();
        match open(copy.path()).await {
            Err(StoreError::Damaged(m)) => {
                assert!(m.contains("damaged"), "{m}");
                refused += 1;
            }
            Err(StoreError::RolledBack { .. } | StoreError::Corrupt { .. }) => refused += 1,
            Err(e) => panic!("unexpected error for damage at {at}: {e}"),
            // The flipped bytes were not in use: everything is still there.
            Ok(s) => assert_eq!(s.log_len(), 2000, "damage at {at} lost entries silently"),
        }
    }
    assert!(refused > 0, "no damage was noticed at all");
}

#[tokio::test]
async fn schema_mismatch_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path().join("store")).unwrap();
        db.insert(K_SCHEMA, &99u32.to_be_bytes()[..]).unwrap();
        db.flush().unwrap();
    }
    let r = open(dir.path()).await.map(|_| ());
    assert!(matches!(r, Err(StoreError::Schema { found: 99, .. })));
}

/// The stored interior nodes answer every perfect subtree, so proofs cost O(log n) reads; a
/// store written before they were kept gets them at open.
#[tokio::test]
async fn interior_nodes_give_the_same_proofs_as_the_leaves() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path()).await.unwrap();
        for i in 0..13 {
            fill(&s, i * 37, (i + 1) * 37).await;
        }
        s.close().await.unwrap();
    }
    let check = |s: Store| async move {
        let n = s.log_len();
        let root = s.log_root().1;
        s.read(move |r| {
            let leaves = r.leaf_hashes(0, n)?;
            let tree = r.tree();
            assert_eq!(merkle::root_with(&tree, n)?, root);
            assert_eq!(merkle::root_from_leaves(&leaves), root);
            for (i, size) in [(0u64, n), (5, 200), (480, n), (200, 201)] {
                assert_eq!(
                    merkle::inclusion_proof_with(&tree, size, i)?,
                    merkle::inclusion_proof_with(&leaves[..], size, i).unwrap()
                );
            }
            for (old, new) in [(1u64, n), (64, 300), (300, n)] {
                assert_eq!(
                    merkle::consistency_proof_with(&tree, old, new)?,
                    merkle::consistency_proof_with(&leaves[..], old, new).unwrap()
                );
            }
            assert!(tree.subtree(0, 3).is_err());
            Ok(())
        })
        .await
        .unwrap();
        s.close().await.unwrap();
    };
    check(open(dir.path()).await.unwrap()).await;
    // As a schema-1 store from before interior nodes: none of them, no marker.
    {
        let db = raw_open(&dir.path().join("store"));
        for k in db.scan_prefix(b"n/").keys() {
            db.remove(k.unwrap()).unwrap();
        }
        db.insert(K_SCHEMA, &1u32.to_be_bytes()[..]).unwrap();
        db.flush().unwrap();
    }
    check(open(dir.path()).await.unwrap()).await;
}

/// A record written without copying (envelope left out when its log entry holds it) reads
/// back as the record, field for field.
#[test]
fn a_message_record_encodes_as_written() {
    let mut rec = with_body(b"the body");
    rec.proof = Some(vec![9; 40]);
    rec.out_key = Some(b"o/x".to_vec());
    rec.inbox_seq = Some(7);
    rec.retain_ms = Some(5);
    rec.state = MsgState::Rejected {
        reason: "no".into(),
    };
    let back: MessageRecord = decode_record(b"m/", &encode_message(&rec)).unwrap();
    assert_eq!(
        encode_record(&back),
        encode_record(&rec),
        "the borrowed encoding differs"
    );
    rec.log_index = Some(3);
    let back: MessageRecord = decode_record(b"m/", &encode_message(&rec)).unwrap();
    assert!(back.envelope.is_empty());
    assert_eq!(back.body, rec.body);
    assert_eq!(back.log_index, Some(3));
}

/// A small body lives in its record, a large one beside it; both read back and purge alike.
#[tokio::test]
async fn small_bodies_in_the_record_large_ones_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).await.unwrap();
    let (small, large) = (Digest([5; 32]), Digest([6; 32]));
    let big = vec![7u8; INLINE_BODY_MAX + 1];
    let b2 = big.clone();
    s.write(1, move |t| {
        for (d, body) in [(small, b"tiny".to_vec()), (large, b2)] {
            let mut rec = with_body(b"");
            t.keep_body(&d, &body, &mut rec);
            t.put_message(&d, &rec);
        }
        Ok(())
    })
    .await
    .unwrap();
    let (a, b, rec_large) = s
        .read(move |r| Ok((r.body(&small)?, r.body(&large)?, r.message(&large)?)))
        .await
        .unwrap();
    assert_eq!(a.unwrap(), b"tiny");
    assert_eq!(b.unwrap(), big);
    assert!(
        rec_large.unwrap().body.is_none(),
        "a large body went into the record"
    );
    let purged = s
        .write(2, move |t| {
            Ok((
                t.purge_body(&small)?,
                t.purge_body(&large)?,
                t.purge_body(&large)?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(purged, (true, true, false));
    let gone = s
        .read(move |r| Ok((r.body(&small)?, r.body(&large)?)))
        .await
        .unwrap();
    assert_eq!(gone, (None, None));
}

/// A backup taken while changes go on is one cut of them: each change is in it whole or not
/// at all, the restored store opens with the log the backup names, and a restore refuses a
/// directory that holds a store and a damaged file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_changes_is_one_moment_and_restores() {
    const BEFORE: u64 = 400;
    const DURING: u64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(open(dir.path()).await.unwrap());
    // Before: cells, inbox entries and log entries (several thousand keys, copied in chunks of
    // 16 in tests, so the copy spans many groups).
    let seqs = s
        .write(1, |t| {
            let mut seqs = Vec::new();
            for i in 0..BEFORE {
                t.put_officer(&format!("cell-{i:04}"), &cell(i));
                seqs.push(t.push_inbox(&Digest([(i % 251) as u8; 32])));
                t.log(EntryKind::Rejected, i.to_be_bytes().to_vec());
            }
            Ok(seqs)
        })
        .await
        .unwrap();
    let out = dir.path().join("node.backup");
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let backup = {
        let (s, out, done) = (s.clone(), out.clone(), done.clone());
        tokio::spawn(async move {
            let files = vec![("node.toml".to_owned(), b"node_id = \"x\"\n".to_vec())];
            let r = s.backup(out, files, 7).await;
            done.store(true, Ordering::SeqCst);
            r
        })
    };
    // During: each change overwrites a cell, deletes an inbox entry, adds a cell and logs.
    let mut while_copying = 0;
    for j in 0..DURING {
        let seq = seqs[j as usize];
        s.write(2, move |t| {
            t.put_officer(&format!("cell-{j:04}"), &cell(10_000 + j));
            t.remove_inbox(seq);
            t.put_officer(&format!("new-{j:04}"), &cell(j));
            t.log(EntryKind::Rejected, (1_000_000 + j).to_be_bytes().to_vec());
            Ok(())
        })
        .await
        .unwrap();
        if !done.load(Ordering::SeqCst) {
            while_copying += 1;
        }
    }
    let summary = backup.await.unwrap().unwrap();
    assert!(
        while_copying > 0,
        "the backup finished before any change: nothing tested"
    );
    assert_eq!(summary.header.node, "cn-35-psb");
    assert_eq!(summary.header.created_ms, 7);
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    s.close().await.unwrap();

    let restored = tempfile::tempdir().unwrap();
    let store = restored.path().join("store");
    let b = Store::restore(&out, &store, StoreOptions::default())
        .await
        .unwrap();
    assert_eq!(
        b.files,
        vec![("node.toml".to_owned(), b"node_id = \"x\"\n".to_vec())]
    );
    let r = open(restored.path()).await.unwrap();
    let size = b.header.log_size;
    assert_eq!(r.log_len(), size);
    assert!((BEFORE..=BEFORE + DURING).contains(&size));
    let (cells, news, inbox, entries) = r
        .read(move |rd| {
            let cells = (0..BEFORE)
                .map(|i| rd.officer(&format!("cell-{i:04}")))
                .collect::<Result<Vec<_>, _>>()?;
            let news = (0..DURING)
                .map(|j| rd.officer(&format!("new-{j:04}")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((cells, news, rd.inbox(10_000)?, rd.log_entries(0, size)?))
        })
        .await
        .unwrap();
    // The changes in the backup: those whose log entry it holds.
    let in_log: std::collections::HashSet<u64> = entries
        .iter()
        .filter_map(|(_, e)| {
            let v = u64::from_be_bytes(Entry::decode(e).unwrap().object.try_into().unwrap());
            v.checked_sub(1_000_000)
        })
        .collect();
    assert_eq!(in_log.len() as u64, size - BEFORE);
    let inbox: std::collections::HashSet<u64> = inbox.iter().map(|(q, _)| *q).collect();
    for j in 0..DURING {
        let inside = in_log.contains(&j);
        let c = cells[j as usize].as_ref().unwrap().revoked_at;
        assert_eq!(c, Some(if inside { 10_000 + j } else { j }), "cell {j}");
        assert_eq!(news[j as usize].is_some(), inside, "new cell {j}");
        assert_eq!(
            !inbox.contains(&seqs[j as usize]),
            inside,
            "inbox entry {j}"
        );
    }
    for i in DURING..BEFORE {
        assert_eq!(cells[i as usize].as_ref().unwrap().revoked_at, Some(i));
    }
    r.close().await.unwrap();

    // A directory that holds a store is refused; so is a damaged or cut backup.
    let e = Store::restore(&out, &store, StoreOptions::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already holds a store"), "{e}");
    let mut bytes = std::fs::read(&out).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let damaged = dir.path().join("damaged.backup");
    std::fs::write(&damaged, &bytes).unwrap();
    let e = Backup::read(&damaged).unwrap_err();
    assert!(matches!(e, StoreError::Damaged(_)), "{e}");
    bytes[mid] ^= 0x40;
    bytes.truncate(bytes.len() - 10);
    std::fs::write(&damaged, &bytes).unwrap();
    let e = Backup::read(&damaged).unwrap_err();
    assert!(e.to_string().contains("cut short"), "{e}");
}

/// Where the store written by the previous schema is kept (written by
/// `the_fixture_content_written_by_this_schema_reopens_whole` with `LIAISON_WRITE_STORE_FIXTURE`
/// set, before the schema moved on).
fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "tests/fixtures/store-schema-{}",
        SCHEMA_VERSION - 1
    ))
}

/// What the fixture holds, written through the store's own changes: messages with bodies,
/// inbox, outbox, dedupe and id indexes, log entries of several kinds with a checkpoint,
/// witness state, a roster, officers.
async fn write_fixture_content(s: &Store) {
    let fj = NodeId::new("fj").unwrap();
    for i in 0u8..12 {
        let d = Digest([i; 32]);
        let id = liaison_protocol::MessageId([i; 16]);
        let fj = fj.clone();
        s.write(1_000 + u64::from(i), move |t| {
            let mut rec = with_body(format!("body {i}").as_bytes());
            rec.log_index = Some(t.next_log_index());
            t.log(EntryKind::MessageReceived, vec![i; 40]);
            t.put_message(&d, &rec);
            t.index_id(&id, &d);
            t.put_seen(&fj, &id, &d);
            if i % 2 == 0 {
                t.push_inbox(&d);
            } else {
                t.push_out(
                    &fj,
                    Priority::Routine,
                    OutItem::Message { digest: d.0 },
                    None,
                );
            }
            t.log(EntryKind::ReceiptSent, vec![i; 20]);
            Ok(())
        })
        .await
        .unwrap();
    }
    s.write(2_000, |t| {
        let size = t.next_log_index();
        t.put_checkpoint(size, "fixture checkpoint\n");
        t.put_witnessed(
            "fj/log",
            &Witnessed {
                size: 3,
                root: [7; 32],
                note: "fixture note\n".into(),
            },
        );
        t.put_cosigned(&NodeId::new("fj").unwrap(), size);
        t.put_roster(b"fixture roster bytes");
        t.put_officer("officer-1", &cell(1));
        Ok(())
    })
    .await
    .unwrap();
}

/// The fixture content written by this schema reopens whole. With
/// `LIAISON_WRITE_STORE_FIXTURE=1` it is written into `node/tests/fixtures/store-schema-<N>`
/// instead of a temporary directory: do that before a schema change, and commit it.
#[tokio::test]
async fn the_fixture_content_written_by_this_schema_reopens_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = if std::env::var_os("LIAISON_WRITE_STORE_FIXTURE").is_some() {
        let d = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/fixtures/store-schema-{SCHEMA_VERSION}"));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    } else {
        tmp.path().to_owned()
    };
    let s = open(&dir).await.unwrap();
    write_fixture_content(&s).await;
    let written = (s.log_root(), fixture_state(&s).await);
    s.close().await.unwrap();
    drop(s);
    let s = open(&dir).await.unwrap();
    assert_eq!((s.log_root(), fixture_state(&s).await), written);
    assert!(written.1.starts_with("(12, "), "{}", written.1);
    s.close().await.unwrap();
}

/// Everything the fixture content put in a store, as text to compare.
async fn fixture_state(s: &Store) -> String {
    let fj = NodeId::new("fj").unwrap();
    let v = s
        .read(move |r| {
            Ok((
                r.messages()?.len(),
                r.inbox(100)?,
                r.outbox()?.len(),
                r.seen(&fj, &liaison_protocol::MessageId([3; 16]))?,
                r.digests_for_id(&liaison_protocol::MessageId([5; 16]))?,
                r.latest_checkpoint()?,
                r.witnessed("fj/log")?.map(|w| w.size),
                r.cosigned_size(&fj)?,
                r.roster()?,
                r.officer("officer-1")?.and_then(|o| o.revoked_at),
                r.body(&Digest([4; 32]))?,
            ))
        })
        .await
        .unwrap();
    format!("{v:?}")
}

/// The store the previous schema wrote (committed) opens after the upgrade: migrated to this
/// schema, with its log, checkpoint, messages, queues, indexes and witness state intact; and
/// opened again, it is not migrated twice.
#[tokio::test]
async fn a_store_of_the_previous_schema_opens_after_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture_dir().join("store"), &dir.path().join("store"));
    std::fs::copy(fixture_dir().join("log-head"), dir.path().join("log-head")).unwrap();
    {
        let db = raw_open(&dir.path().join("store"));
        assert_eq!(
            db.get(K_SCHEMA).unwrap().unwrap().as_ref(),
            (SCHEMA_VERSION - 1).to_be_bytes()
        );
    }
    // What a store of this schema with the same content holds, to compare with.
    let fresh = tempfile::tempdir().unwrap();
    let expected = open(fresh.path()).await.unwrap();
    write_fixture_content(&expected).await;
    for round in 0..2 {
        let s = open(dir.path()).await.unwrap();
        assert_eq!(s.log_root(), expected.log_root(), "round {round}");
        let got = fixture_state(&s).await;
        let want = fixture_state(&expected).await;
        assert_eq!(got, want, "round {round}");
        assert!(got.starts_with("(12, "), "{got}");
        // Proofs come from the interior nodes the migration left.
        let (size, _) = s.log_root();
        let (proof, leaves) = s
            .read(move |r| {
                Ok((
                    merkle::inclusion_proof_with(&r.tree(), size, 3)?,
                    r.leaf_hashes(0, size)?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(proof, merkle::inclusion_proof(&leaves, 3).unwrap());
        s.close().await.unwrap();
        drop(s);
        let db = raw_open(&dir.path().join("store"));
        assert_eq!(
            db.get(K_SCHEMA).unwrap().unwrap().as_ref(),
            SCHEMA_VERSION.to_be_bytes()
        );
        assert!(db.get(K_TREE).unwrap().is_none());
        drop(db);
    }
    expected.close().await.unwrap();
}

/// A store written by a newer liaison is refused, naming both schemas.
#[tokio::test]
async fn a_store_of_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path().join("store")).unwrap();
        db.insert(K_SCHEMA, &(SCHEMA_VERSION + 1).to_be_bytes()[..])
            .unwrap();
        db.flush().unwrap();
    }
    let e = open(dir.path()).await.map(|_| ()).unwrap_err();
    assert!(matches!(e, StoreError::Schema { .. }), "{e}");
}
