//! The offline checkers against the node that made the file: each forgery is built with the
//! producing node's own keys (its node signing key and its log key, read from its key files),
//! the strongest adversary an offline check faces. The forger rebuilds a whole log around its
//! change and signs a checkpoint of it, so every Merkle proof holds: only opening the signed
//! objects inside the entries, against the roster, can refuse the file. Each test asserts the
//! precise refusal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use ed25519_dalek::SigningKey;
use liaison_protocol::audit::{Entry, EntryKind};
use liaison_protocol::envelope::Header;
use liaison_protocol::evidence::{CaseEvidence, EvidenceError};
use liaison_protocol::note::{MAX_NOTE_LEN, SignedNote};
use liaison_protocol::{Envelope, PublicKey, SignedReceipt};
use liaison_tests::{Federation, NodeKeys, count_state, forge_log, member, msg, spec, wait_for};

const LIMIT: Duration = Duration::from_secs(30);
const CASE: &str = "FJ-2026-0099";

struct Setup {
    fed: Federation,
    fj: liaison_node::Node,
    /// Fujian's keys, as the forger holds them.
    keys: NodeKeys,
    authority: PublicKey,
    /// Fujian's genuine case file (cosigned by Shaanxi).
    genuine: CaseEvidence,
}

/// Fujian and Shaanxi exchange two messages of a case; Shaanxi cosigns Fujian's log.
async fn setup() -> Setup {
    let mut fed = Federation::new(&spec(vec![
        member("fj", "public_security", "CHN", None),
        member("sx", "public_security", "CHN", None),
    ]))
    .unwrap();
    let fj = fed.start("fj").await.unwrap();
    let sx = fed.start("sx").await.unwrap();
    let mut m = msg("sx", "bus.test", b"request of the case");
    m.case_ref = Some(CASE.into());
    fj.send(m).await.unwrap();
    let mut m = msg("fj", "bus.test", b"answer of the case");
    m.case_ref = Some(CASE.into());
    sx.send(m).await.unwrap();
    wait_for(LIMIT, async || {
        count_state(&fj, "outgoing", "delivered").await == 1
            && count_state(&sx, "outgoing", "delivered").await == 1
    })
    .await
    .unwrap();
    let rounds = fj.witness_round().await.unwrap();
    assert!(
        rounds.iter().all(|w| w.result.is_ok()),
        "witness round: {rounds:?}"
    );
    let genuine = fj.case_evidence(CASE, false).await.unwrap();
    let keys = fed.keys("fj").unwrap();
    let authority = fed.authority();
    Setup {
        fed,
        fj,
        keys,
        authority,
        genuine,
    }
}

/// The entries of a file, in order.
fn entries(file: &CaseEvidence) -> Vec<Entry> {
    file.bundles
        .iter()
        .map(|b| Entry::decode(&b.entry).unwrap())
        .collect()
}

/// The genuine file with its log rebuilt by the forger after `change` to its entries.
fn forged(s: &Setup, change: impl FnOnce(&mut Vec<Entry>)) -> CaseEvidence {
    let mut list = entries(&s.genuine);
    change(&mut list);
    CaseEvidence {
        bundles: forge_log(&s.keys.log, "fj", &list),
        ..s.genuine.clone()
    }
}

/// The entry of `kind` in the file.
fn of_kind(list: &[Entry], kind: EntryKind) -> usize {
    list.iter().position(|e| e.kind == kind).unwrap()
}

fn header(envelope: &[u8]) -> Header {
    Envelope::peek_unverified(envelope).unwrap().1
}

async fn stop(mut s: Setup) {
    s.fed.stop("fj").await;
    s.fed.stop("sx").await;
}

/// What the forged file's refusal says about entry `index`.
fn object_refusal(file: &CaseEvidence, authority: &PublicKey) -> (u64, String) {
    match file.verify(authority) {
        Err(EvidenceError::Object { index, problem }) => (index, problem),
        other => panic!("expected a refused entry, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_genuine_file_and_a_faithful_rebuild_verify() {
    let s = setup().await;
    let checked = s.genuine.verify(&s.authority).unwrap();
    assert_eq!(
        checked.proven.len(),
        5,
        "two envelopes, two receipts and the roster record in force"
    );
    assert_eq!(checked.proven[0].entry.kind, EntryKind::RosterApplied);
    assert!(
        checked.proven[0]
            .cosigned_by
            .iter()
            .any(|(w, _)| w.as_str() == "sx"),
        "{:?}",
        checked.proven[0].cosigned_by
    );
    // The forger's machinery is sound: the same entries in a log it rebuilt verify, so each
    // refusal below comes from the one thing changed.
    let rebuilt = forged(&s, |_| {});
    assert_eq!(rebuilt.verify(&s.authority).unwrap().proven.len(), 5);
    stop(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_entries_are_refused_by_what_they_hold() {
    let s = setup().await;
    let genuine = entries(&s.genuine);
    let received = of_kind(&genuine, EntryKind::MessageReceived) as u64;
    let receipt = of_kind(&genuine, EntryKind::ReceiptReceived) as u64;

    // A "received" envelope whose signature is broken.
    let file = forged(&s, |l| {
        let i = of_kind(l, EntryKind::MessageReceived);
        let n = l[i].object.len();
        l[i].object[n - 1] ^= 1;
    });
    let (index, problem) = object_refusal(&file, &s.authority);
    assert_eq!(index, received);
    assert!(
        problem.contains("the envelope in the entry does not verify"),
        "{problem}"
    );

    // A made-up "received" envelope claiming Shaanxi as sender, signed with Fujian's key.
    let file = forged(&s, |l| {
        let i = of_kind(l, EntryKind::MessageReceived);
        let mut h = header(&l[i].object);
        h.id = liaison_protocol::MessageId([7; 16]);
        assert_eq!(h.from.as_str(), "sx");
        let made_up = Envelope::seal(h, &s.keys.signing);
        l.push(Entry {
            object: made_up.bytes().to_vec(),
            ..l[i].clone()
        });
    });
    let (index, problem) = object_refusal(&file, &s.authority);
    assert_eq!(index, genuine.len() as u64);
    assert!(
        problem.contains("the envelope in the entry does not verify"),
        "{problem}"
    );

    // A receipt put where a "received" envelope belongs.
    let file = forged(&s, |l| {
        let i = of_kind(l, EntryKind::MessageReceived);
        let r = of_kind(l, EntryKind::ReceiptReceived);
        l[i].object = l[r].object.clone();
    });
    let (index, problem) = object_refusal(&file, &s.authority);
    assert_eq!(index, received);
    assert!(problem.contains("does not verify"), "{problem}");

    // A receipt re-issued by Fujian in Shaanxi's name (Fujian's key, Shaanxi as recipient).
    let file = forged(&s, |l| {
        let r = of_kind(l, EntryKind::ReceiptReceived);
        let genuine = SignedReceipt::open(&l[r].object, |k| s.genuine_roster().signer(k)).unwrap();
        let mut receipt = genuine.receipt().clone();
        receipt.at += 1;
        l[r].object = SignedReceipt::sign(receipt, &s.keys.signing)
            .bytes()
            .to_vec();
    });
    let (index, problem) = object_refusal(&file, &s.authority);
    assert_eq!(index, receipt);
    assert!(
        problem.contains("the receipt in the entry does not verify"),
        "{problem}"
    );

    // A receipt Fujian signs itself, as recipient, for the envelope it sent to Shaanxi: its
    // digest names that envelope but its recipient is not the envelope's.
    let file = forged(&s, |l| {
        let r = of_kind(l, EntryKind::ReceiptReceived);
        let genuine = SignedReceipt::open(&l[r].object, |k| s.genuine_roster().signer(k)).unwrap();
        let mut receipt = genuine.receipt().clone();
        receipt.recipient = liaison_protocol::NodeId::new("fj").unwrap();
        receipt.sender = liaison_protocol::NodeId::new("sx").unwrap();
        receipt.log_ref = None;
        l.push(Entry {
            kind: EntryKind::ReceiptSent,
            object: SignedReceipt::sign(receipt, &s.keys.signing)
                .bytes()
                .to_vec(),
            ..l[r].clone()
        });
    });
    let (index, problem) = object_refusal(&file, &s.authority);
    assert_eq!(index, genuine.len() as u64);
    assert!(problem.contains("answers envelope"), "{problem}");

    // A "sent" envelope put in as received: in the wrong place for the log's node.
    let file = forged(&s, |l| {
        let sent = of_kind(l, EntryKind::MessageSent);
        let i = of_kind(l, EntryKind::MessageReceived);
        l[i].object = l[sent].object.clone();
    });
    let (index, problem) = object_refusal(&file, &s.authority);
    assert_eq!(index, received);
    assert!(
        problem.contains("a received envelope addressed to sx, not to fj"),
        "{problem}"
    );
    stop(s).await;
}

impl Setup {
    fn genuine_roster(&self) -> liaison_protocol::Roster {
        liaison_protocol::SignedRoster::open(&self.genuine.roster, &self.authority)
            .unwrap()
            .roster()
            .clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_histories_rosters_and_cosignatures_are_refused() {
    let s = setup().await;

    // A fork: two checkpoints of one size with different roots in one file.
    let mut file = s.genuine.clone();
    let other = forged(&s, |l| l.swap(0, 1));
    let (size, first, second) = (
        other.bundles.len() as u64,
        s.genuine.bundles[0].checkpoint.clone(),
        other.bundles[0].checkpoint.clone(),
    );
    file.bundles = forge_log(&s.keys.log, "fj", &entries(&s.genuine));
    file.bundles[1] = other.bundles[1].clone();
    assert_ne!(first, second);
    match file.verify(&s.authority) {
        Err(EvidenceError::Fork { node, size: at, .. }) => {
            assert_eq!((node.as_str(), at), ("fj", size))
        }
        other => panic!("expected a fork, got {other:?}"),
    }

    // Two checkpoints of different sizes: a file is one log under one checkpoint.
    let mut list = entries(&s.genuine);
    list.truncate(4);
    let longer = {
        let mut l = list.clone();
        l.push(l[1].clone());
        forge_log(&s.keys.log, "fj", &l)
    };
    let mut file = CaseEvidence {
        bundles: forge_log(&s.keys.log, "fj", &list),
        ..s.genuine.clone()
    };
    file.bundles[3] = longer[3].clone();
    assert!(
        matches!(
            file.verify(&s.authority),
            Err(EvidenceError::SeveralCheckpoints {
                first_size: 4,
                second_index: 3,
                second_size: 5,
                ..
            })
        ),
        "{:?}",
        file.verify(&s.authority)
    );

    // A roster signed by someone else than the federation authority (here Fujian's own key).
    let mut file = s.genuine.clone();
    file.roster = s.genuine_roster().sign(&s.keys.signing).bytes().to_vec();
    assert!(
        matches!(file.verify(&s.authority), Err(EvidenceError::Roster(_))),
        "{:?}",
        file.verify(&s.authority)
    );

    // A cosignature by Shaanxi's witness key that does not verify (a byte changed).
    let mut file = s.genuine.clone();
    let note = String::from_utf8(file.bundles[0].checkpoint.clone()).unwrap();
    let line = note
        .lines()
        .find(|l| l.starts_with("— sx/witness "))
        .unwrap();
    let mut sig = line.rsplit_once(' ').unwrap().1.as_bytes().to_vec();
    sig[20] = if sig[20] == b'A' { b'B' } else { b'A' };
    let bad = note.replace(
        line,
        &format!(
            "{} {}",
            line.rsplit_once(' ').unwrap().0,
            String::from_utf8(sig).unwrap()
        ),
    );
    for b in &mut file.bundles {
        b.checkpoint = bad.clone().into_bytes();
    }
    match file.verify(&s.authority) {
        Err(EvidenceError::Cosignature { witness, .. }) => assert_eq!(witness.as_str(), "sx"),
        other => panic!("expected the cosignature refused, got {other:?}"),
    }

    // A cosignature line claiming Shaanxi, made by the forger with Fujian's witness key under
    // Shaanxi's name: not Shaanxi's key id, so it is not counted as Shaanxi's.
    let mut file = forged(&s, |_| {});
    let mut note = SignedNote::parse(&file.bundles[0].checkpoint, MAX_NOTE_LEN).unwrap();
    let cp = note.checkpoint().unwrap();
    note.add_cosignature("sx/witness", &s.keys.witness, 1_800_000_000)
        .unwrap();
    let text = note.to_text();
    for b in &mut file.bundles {
        b.checkpoint = text.clone().into_bytes();
    }
    let checked = file.verify(&s.authority).unwrap();
    assert!(
        checked.proven[0].cosigned_by.is_empty(),
        "a forged line counted as a witness: {:?}",
        checked.proven[0].cosigned_by
    );
    assert_eq!(checked.proven[0].size, cp.size());
    stop(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_officer_credential_is_refused_in_a_bundle() {
    let s = setup().await;
    // Fujian logs an officer credential in Shaanxi's name, signed with its own node key: a
    // kind-12 entry checked on its own (audit check-bundle).
    let roster = s.genuine_roster();
    let officer = liaison_protocol::action::Officer {
        federation: roster.federation.clone(),
        node: liaison_protocol::NodeId::new("sx").unwrap(),
        id: "sx/forged.officer".into(),
        name: "Forged Officer".into(),
        number: "000000".into(),
        unit: "none".into(),
        role: liaison_protocol::workflow::Role::Investigator,
        key: PublicKey::from(&SigningKey::from_bytes(&[9; 32])),
        enrolled_at: 1,
    };
    let credential = officer.certify(&s.keys.signing);
    let entry = Entry {
        kind: EntryKind::KeyChanged,
        at: 1,
        node: liaison_protocol::NodeId::new("fj").unwrap(),
        object: credential.bytes().to_vec(),
    };
    let bundle = forge_log(&s.keys.log, "fj", &[entry]).remove(0);
    match bundle.verify(&roster) {
        Err(EvidenceError::Object { index: 0, problem }) => assert!(
            problem.contains("the officer credential in the entry does not verify"),
            "{problem}"
        ),
        other => panic!("expected the credential refused, got {other:?}"),
    }
    let _ = &s.fj;
    stop(s).await;
}
