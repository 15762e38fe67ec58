//! The store signs the receipts of one group commit as one batch (protocol.md §4.3a):
//! concurrent changes that batch their receipts each get a proof that names their own
//! receipt, and a change that fails leaves nothing, not even a receipt in a batch.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ed25519_dalek::SigningKey;
use liaison_node::StoreError;
use liaison_node::store::{
    Direction, MessageRecord, MsgState, ProofSlot, ReceiptSealer, Store, StoreOptions,
};
use liaison_protocol::audit::{Entry, EntryKind};
use liaison_protocol::{
    Digest, MessageId, NodeId, PublicKey, Receipt, ReceiptStatus, SignedReceipt,
};

const CHANGES: usize = 200;
/// The change that fails after giving its receipt.
const FAILING: usize = CHANGES / 2;
const FEDERATION: &str = "test-fed";
const T0: u64 = 1_800_000_000_000;

fn me() -> NodeId {
    NodeId::new("sx").unwrap()
}

fn digest(i: usize) -> Digest {
    Digest::of(format!("envelope {i}").as_bytes())
}

fn receipt(i: usize) -> Receipt {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&(i as u64).to_be_bytes());
    Receipt {
        federation: FEDERATION.into(),
        message_digest: digest(i),
        message_id: MessageId(id),
        sender: NodeId::new("fj").unwrap(),
        recipient: me(),
        at: T0,
        status: ReceiptStatus::Delivered,
        log_ref: None,
    }
}

fn record(i: usize) -> MessageRecord {
    MessageRecord {
        envelope: format!("envelope {i}").into_bytes(),
        direction: Direction::Incoming,
        state: MsgState::Delivered,
        hop: None,
        stored_at: T0,
        updated_at: T0,
        proof: None,
        inbox_seq: None,
        handed_over: false,
        attempts: 0,
        out_key: None,
        retain_ms: None,
        log_index: None,
        body: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_get_proofs_of_their_own_and_a_failed_change_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        Store::open(&dir.path().join("store"), StoreOptions::default(), me())
            .await
            .unwrap(),
    );
    let key = SigningKey::from_bytes(&[7; 32]);
    let public = PublicKey::from(&key);
    // What the sealer was asked to sign, group by group.
    let signed: Arc<Mutex<Vec<Vec<MessageId>>>> = Arc::default();
    let seen = signed.clone();
    store.set_receipt_sealer(ReceiptSealer(Box::new(move |receipts: Vec<Receipt>| {
        seen.lock()
            .unwrap()
            .push(receipts.iter().map(|r| r.message_id).collect());
        let (batch, proofs) = SignedReceipt::sign_batch(FEDERATION, &me(), receipts, &key);
        (
            batch.bytes().to_vec(),
            proofs.into_iter().map(|p| p.bytes().to_vec()).collect(),
        )
    })));

    let failed_slot: Arc<Mutex<Option<ProofSlot>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CHANGES {
        let store = store.clone();
        let failed_slot = failed_slot.clone();
        tasks.spawn(async move {
            let res = store
                .write(T0, move |t| {
                    t.log(
                        EntryKind::MessageReceived,
                        format!("envelope {i}").into_bytes(),
                    );
                    let slot = t.put_message_batching_receipt(&digest(i), &record(i), receipt(i));
                    if i == FAILING {
                        *failed_slot.lock().unwrap() = Some(slot);
                        return Err(StoreError::Db("this change fails after its receipt".into()));
                    }
                    Ok(slot)
                })
                .await;
            (i, res)
        });
    }
    let results: HashMap<usize, Result<ProofSlot, StoreError>> =
        tasks.join_all().await.into_iter().collect();
    assert_eq!(results.len(), CHANGES);

    let signer = |_: &liaison_protocol::keys::Kid| Some((me(), public));
    let mut by_batch: HashMap<Vec<u8>, usize> = HashMap::new();
    for (i, res) in &results {
        if *i == FAILING {
            assert!(matches!(res, Err(StoreError::Db(_))), "{res:?}");
            continue;
        }
        let slot = res.as_ref().unwrap();
        let proof = slot
            .get()
            .unwrap_or_else(|| panic!("change {i}: durable, no proof"));
        let r = SignedReceipt::open(&proof, signer).unwrap();
        assert_eq!(
            r.receipt(),
            &receipt(*i),
            "change {i}'s proof names another"
        );
        let batch = r.batch().expect("a batched receipt");
        *by_batch.entry(batch.bytes().to_vec()).or_default() += 1;
        // The stored record holds the same proof.
        let d = digest(*i);
        let rec = store
            .read(move |r| r.message(&d))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("change {i}'s record missing"));
        assert_eq!(rec.proof.as_deref(), Some(proof.as_slice()), "change {i}");
    }

    // The failed change: no record, no proof, its receipt in no batch.
    let d = digest(FAILING);
    assert!(store.read(move |r| r.message(&d)).await.unwrap().is_none());
    let slot = failed_slot.lock().unwrap().clone().expect("the change ran");
    assert!(
        slot.get().is_none(),
        "the failed change's slot holds a proof"
    );
    let groups = signed.lock().unwrap().clone();
    let failing_id = receipt(FAILING).message_id;
    assert!(groups.iter().flatten().all(|id| *id != failing_id));
    assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), CHANGES - 1);
    assert!(
        groups.len() < CHANGES - 1,
        "every receipt in a batch of its own: {} batches",
        groups.len()
    );
    assert_eq!(by_batch.len(), groups.len());

    // The log: each kept change's entry, and each batch once (kind 3), nothing of the failed
    // change.
    let len = store.log_len();
    let entries = store.read(move |r| r.log_entries(0, len)).await.unwrap();
    let entries: Vec<Entry> = entries
        .iter()
        .map(|(_, b)| Entry::decode(b).unwrap())
        .collect();
    let failing_env = format!("envelope {FAILING}").into_bytes();
    assert!(entries.iter().all(|e| e.object != failing_env));
    let received = entries
        .iter()
        .filter(|e| e.kind == EntryKind::MessageReceived)
        .count();
    assert_eq!(received, CHANGES - 1);
    let batches: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.kind == EntryKind::ReceiptSent)
        .collect();
    assert_eq!(batches.len(), groups.len());
    for e in batches {
        let (_, b) = liaison_protocol::receipt::open_batch(&e.object, signer).unwrap();
        assert_eq!(
            by_batch.get(&e.object).copied(),
            Some(usize::try_from(b.size).unwrap())
        );
    }
    store.close().await.unwrap();
}
