//! The project's own signed-object vectors (docs/formats.md §6): `tests/data/liaison-objects-v1.json`
//! holds an envelope, a delivery receipt, a rejection receipt, a receipt batch with the proofs
//! of its three receipts, a non-delivery record, a roster,
//! an evidence bundle, the same bundle with its checkpoint cosigned by a witness, and a case
//! evidence file (general, and made for a court with an H1 record withheld), each with the test keys (Ed25519 seeds) that made it, the payload
//! that was signed, the ToBeSigned digest, and the full COSE_Sign1 bytes. Another
//! implementation can check its encoder and verifier against it.
//!
//! This test rebuilds the file and requires the stored copy to be identical, then verifies
//! every stored object from its bytes. To regenerate after a deliberate change:
//! `LIAISON_REGENERATE_VECTORS=1 cargo test -p liaison-protocol --test object_vectors`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use liaison_protocol::action::{Action, Handling, Officer};
use liaison_protocol::audit::{Entry, EntryKind};
use liaison_protocol::document::Document;
use liaison_protocol::evidence::{CaseEvidence, Evidence, Withheld};
use liaison_protocol::merkle::{inclusion_proof, leaf_hash};
use liaison_protocol::note::{Checkpoint, SignedNote};
use liaison_protocol::roster::PreviousKeys;
use liaison_protocol::workflow::Role;
use liaison_protocol::{
    Digest, Envelope, Header, Location, Member, MemberStatus, MessageId, NodeId, NonDelivery,
    Priority, PublicKey, Receipt, ReceiptStatus, Roster, Rule, SignedNonDelivery, SignedObject,
    SignedReceipt, SignedRoster,
};
use serde_json::{Value, json};

const SENDER_SEED: [u8; 32] = [0x09; 32];
const RECIPIENT_SEED: [u8; 32] = [0x0a; 32];
const AUTHORITY_SEED: [u8; 32] = [0x0b; 32];
const OFFICER_SEED: [u8; 32] = [0x20; 32];
const CASE: &str = "FJ-2026-0042";

fn path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/liaison-objects-v1.json")
}

fn key(seed: [u8; 32]) -> SigningKey {
    SigningKey::from_bytes(&seed)
}

fn node(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

fn member(id: &str, agency: &str, seed: [u8; 32], spki: u8) -> Member {
    let k = PublicKey::from(&key(seed));
    Member {
        id: node(id),
        agency: agency.into(),
        name: id.into(),
        country: "CHN".into(),
        division: None,
        signing_key: k,
        log_key: PublicKey::from(&key([seed[0] + 3; 32])),
        witness_key: PublicKey::from(&key([seed[0] + 6; 32])),
        tls_spki_sha256: [spki; 32],
        endpoints: vec![format!("127.0.0.1:71{spki:02}")],
        via: None,
        location: Some(Location {
            lat_e6: 26_074_500,
            lon_e6: 119_296_500,
        }),
        status: MemberStatus::Active,
        previous: None,
        tls_cert: None,
    }
}

fn object(signed: &SignedObject, seed: [u8; 32], note: &str) -> Value {
    json!({
        "note": note,
        "signer_seed": hex::encode(seed),
        "signer_public_key": hex::encode(key(seed).verifying_key().to_bytes()),
        "typ": signed.typ(),
        "payload": hex::encode(signed.payload()),
        "to_be_signed_sha256": signed.digest().to_hex(),
        "cose_sign1": hex::encode(signed.bytes()),
    })
}

fn build() -> String {
    let body = b"hello".to_vec();
    let header = Header {
        federation: "cn-atip-demo".into(),
        id: MessageId([7; 16]),
        from: node("cn-35-psb"),
        to: node("cn-61-psb"),
        sent_at: 1_790_000_000_000,
        kind: "assist.request".into(),
        body_len: body.len() as u64,
        body_hash: Digest::of(&body).0,
        priority: Priority::Routine,
        in_reply_to: None,
        expires_at: Some(1_790_086_400_000),
        case_ref: Some("FJ-2026-0042".into()),
    };
    let env = Envelope::seal(header.clone(), &key(SENDER_SEED));
    let receipt = |status| Receipt {
        federation: "cn-atip-demo".into(),
        message_digest: env.digest(),
        message_id: header.id,
        sender: header.from.clone(),
        recipient: header.to.clone(),
        at: 1_790_000_000_250,
        status,
        log_ref: Some(("cn-61-psb/log".into(), 1)),
    };
    let delivered = SignedReceipt::sign(receipt(ReceiptStatus::Delivered), &key(RECIPIENT_SEED));
    let mut rejected = receipt(ReceiptStatus::Rejected(
        "policy forbids assist.request".into(),
    ));
    rejected.log_ref = None;
    let rejected = SignedReceipt::sign(rejected, &key(RECIPIENT_SEED));
    // A batch of three delivery receipts (liaison/2, protocol.md §4.3a): the envelope's, and two
    // for messages of ids 08.. and 09.. (their digests 08.., 09..), log_refs #1, #3, #5.
    let batched: Vec<Receipt> = [
        (env.digest(), header.id, 1),
        (Digest([8; 32]), MessageId([8; 16]), 3),
        (Digest([9; 32]), MessageId([9; 16]), 5),
    ]
    .into_iter()
    .map(|(message_digest, message_id, index)| Receipt {
        message_digest,
        message_id,
        log_ref: Some(("cn-61-psb/log".into(), index)),
        ..receipt(ReceiptStatus::Delivered)
    })
    .collect();
    let (batch, proofs) =
        SignedReceipt::sign_batch("cn-atip-demo", &header.to, batched, &key(RECIPIENT_SEED));
    let nd = SignedNonDelivery::sign(
        NonDelivery {
            federation: "cn-atip-demo".into(),
            message_digest: env.digest(),
            message_id: header.id,
            sender: header.from.clone(),
            recipient: header.to.clone(),
            at: 1_790_086_400_001,
            dropped_by: header.from.clone(),
            reason: "expired before delivery".into(),
        },
        &key(SENDER_SEED),
    );
    let roster = Roster {
        federation: "cn-atip-demo".into(),
        serial: 1,
        issued_at: 1_789_000_000_000,
        valid_until: None,
        members: vec![
            member("cn-35-psb", "public_security", SENDER_SEED, 1),
            member("cn-61-psb", "public_security", RECIPIENT_SEED, 2),
        ],
        rules: vec![Rule {
            from: "public_security".into(),
            to: "public_security".into(),
            kinds: vec!["assist.*".into()],
            abroad: false,
        }],
        max_body_len: 1 << 20,
        dev: true,
        next_authority: None,
    }
    .sign(&key(AUTHORITY_SEED));
    // Serial 2: cn-61-psb rotated its signing key (new seed 0x30..) and TLS key (pin 03..)
    // with the old ones still listed as previous (key 14), and the authority hands over to a
    // new key (seed 0x33.., key 10).
    let mut rotated = roster.roster().clone();
    rotated.serial = 2;
    rotated.issued_at += 1;
    rotated.next_authority = Some(PublicKey::from(&key([0x33; 32])));
    {
        let m = &mut rotated.members[1];
        m.previous = Some(PreviousKeys {
            signing_key: Some(m.signing_key),
            tls_spki_sha256: Some(m.tls_spki_sha256),
            until_ms: 1_790_604_800_000,
            ..PreviousKeys::default()
        });
        m.signing_key = PublicKey::from(&key([0x30; 32]));
        m.tls_spki_sha256 = [3; 32];
    }
    let rotated = rotated.sign(&key(AUTHORITY_SEED));

    // A three-entry log of cn-61-psb, its checkpoint, and the bundle for entry 1.
    let log_key = key([RECIPIENT_SEED[0] + 3; 32]);
    let entries: Vec<Vec<u8>> = [
        (EntryKind::RosterApplied, b"\xa1\x01\x61x".to_vec()),
        (EntryKind::MessageReceived, env.bytes().to_vec()),
        (EntryKind::ReceiptSent, delivered.bytes().to_vec()),
    ]
    .into_iter()
    .map(|(kind, object)| {
        Entry {
            kind,
            at: 1_790_000_000_250,
            node: node("cn-61-psb"),
            object,
        }
        .encode()
    })
    .collect();
    let leaves: Vec<[u8; 32]> = entries.iter().map(|e| leaf_hash(e)).collect();
    let root = liaison_protocol::merkle::root_from_leaves(&leaves);
    let cp = Checkpoint::new("cn-61-psb/log", 3, root).unwrap();
    let note = SignedNote::sign_checkpoint(&cp, "cn-61-psb/log", &log_key).unwrap();
    let bundle = Evidence {
        entry: entries[1].clone(),
        index: 1,
        checkpoint: note.to_text().into_bytes(),
        path: inclusion_proof(&leaves, 1).unwrap(),
    };
    // The same bundle, its checkpoint cosigned by cn-35-psb's witness key (seed 0f..).
    let mut cosigned_note = note.clone();
    cosigned_note
        .add_cosignature(
            "cn-35-psb/witness",
            &key([SENDER_SEED[0] + 6; 32]),
            1_790_000_100,
        )
        .unwrap();
    let cosigned = Evidence {
        checkpoint: cosigned_note.to_text().into_bytes(),
        ..bundle.clone()
    };
    let (case_log, general, court, record) = case_files(&env, &delivered, &roster, &log_key);
    let v = json!({
        "source": "liaison protocol v1 (docs/protocol.md); generated by protocol/tests/object_vectors.rs",
        "body_hex": hex::encode(&body),
        "authority_seed": hex::encode(AUTHORITY_SEED),
        "authority_public_key": hex::encode(key(AUTHORITY_SEED).verifying_key().to_bytes()),
        "envelope": object(&SignedObject::parse(env.bytes(), 1 << 14).unwrap(), SENDER_SEED, "message envelope, body 'hello'"),
        "receipt_delivered": object(&SignedObject::parse(delivered.bytes(), 1 << 14).unwrap(), RECIPIENT_SEED, "delivery receipt for the envelope, log_ref cn-61-psb/log #1"),
        "receipt_rejected": object(&SignedObject::parse(rejected.bytes(), 1 << 14).unwrap(), RECIPIENT_SEED, "rejection receipt (status 1) for the envelope"),
        "receipt_batch": {
            "note": "a receipt batch (liaison/2, protocol.md §4.3a) over three delivery receipts: the envelope's (log_ref #1) and two for message ids 0808.. and 0909.. (digests 0808.., 0909.., log_refs #3, #5); each proof is the batch, the receipt payload, its index and its RFC 9162 inclusion path",
            "batch": object(&batch, RECIPIENT_SEED, "the signed batch: size 3 and the root over the three receipt payloads"),
            "proofs": proofs.iter().map(|p| hex::encode(p.bytes())).collect::<Vec<_>>(),
        },
        "non_delivery": object(&SignedObject::parse(nd.bytes(), 1 << 14).unwrap(), SENDER_SEED, "non-delivery record: the envelope expired at its sender"),
        "roster": object(&SignedObject::parse(roster.bytes(), 1 << 20).unwrap(), AUTHORITY_SEED, "roster serial 1 (dev), two members; their log keys are seeds 0x0c.. and 0x0d.., witness keys 0x0f.. and 0x10.."),
        "roster_rotated": object(&SignedObject::parse(rotated.bytes(), 1 << 20).unwrap(), AUTHORITY_SEED, "roster serial 2: cn-61-psb's signing key rotated to seed 0x30.. and its TLS pin to 03.., the old ones listed as previous (member key 14, until 1790604800000); the authority hands over to the key of seed 0x33.. (roster key 10). The delivery receipt above, by cn-61-psb's previous key, verifies under it"),
        "evidence_bundle": {
            "note": "entry 1 (message received) of cn-61-psb's three-entry log, checkpoint signed with log seed 0d..",
            "log_seed": hex::encode([RECIPIENT_SEED[0] + 3; 32]),
            "entries": entries.iter().map(hex::encode).collect::<Vec<_>>(),
            "checkpoint": note.to_text(),
            "cbor": hex::encode(bundle.encode()),
        },
        "cosigned_evidence_bundle": {
            "note": "the evidence bundle above, its checkpoint cosigned (tlog-cosignature/v1, time 1790000100) by cn-35-psb's witness key, seed 0f..",
            "witness_seed": hex::encode([SENDER_SEED[0] + 6; 32]),
            "checkpoint": cosigned_note.to_text(),
            "cbor": hex::encode(cosigned.encode()),
        },
        "case_evidence": {
            "note": "case FJ-2026-0042 in cn-61-psb's five-entry log (roster applied; the envelope received and its receipt; an envelope carrying an officer-signed H1 handover record, and its receipt): entries 1-4 under one checkpoint of size 5, signed with log seed 0d.., cosigned by cn-35-psb's witness; officer seed 20.., credential signed by cn-35-psb",
            "officer_seed": hex::encode(OFFICER_SEED),
            "entries": case_log.iter().map(hex::encode).collect::<Vec<_>>(),
            "handover_record": hex::encode(&record),
            "general": hex::encode(general.encode()),
            "court": hex::encode(court.encode()),
            "court_note": "the same file made for a court: the H1 record of cn-35-psb is withheld (no permission of judicial use)",
        },
    });
    serde_json::to_string_pretty(&v).unwrap() + "\n"
}

/// A case file of cn-61-psb's log: its entries, the general and the court file, and the signed
/// handover record.
fn case_files(
    env: &Envelope,
    delivered: &SignedReceipt,
    roster: &SignedRoster,
    log_key: &SigningKey,
) -> (Vec<Vec<u8>>, CaseEvidence, CaseEvidence, Vec<u8>) {
    let officer_key = key(OFFICER_SEED);
    let credential = Officer {
        federation: "cn-atip-demo".into(),
        node: node("cn-35-psb"),
        id: "cn-35-psb/chen.hui".into(),
        name: "Chen Hui".into(),
        number: "350001".into(),
        unit: "criminal investigation".into(),
        role: Role::Investigator,
        key: PublicKey::from(&officer_key),
        enrolled_at: 1_789_500_000_000,
    }
    .certify(&key(SENDER_SEED));
    let record = Action {
        federation: "cn-atip-demo".into(),
        node: node("cn-35-psb"),
        kind: "repatriation.handover_record".into(),
        case_ref: CASE.into(),
        at: 1_790_000_001_000,
        purpose: "repatriation".into(),
        handling: Handling::H1,
        sensitivity: vec![],
        retention_days: 365,
        abroad: false,
        document: Document::new().with(
            "record",
            Document::new()
                .with("record_no", "HK-JJ-1")
                .with("port", "Hekou-Lao Cai"),
        ),
        derived_from: vec![],
        credential: Some(credential.bytes().to_vec()),
    }
    .sign(&officer_key)
    .bytes()
    .to_vec();
    let header = Header {
        id: MessageId([8; 16]),
        sent_at: 1_790_000_001_000,
        kind: "repatriation.handover_record".into(),
        body_len: record.len() as u64,
        body_hash: Digest::of(&record).0,
        expires_at: None,
        ..env.header().clone()
    };
    let carrier = Envelope::seal(header.clone(), &key(SENDER_SEED));
    let receipt = SignedReceipt::sign(
        Receipt {
            message_digest: carrier.digest(),
            message_id: header.id,
            at: 1_790_000_001_250,
            log_ref: Some(("cn-61-psb/log".into(), 3)),
            ..delivered.receipt().clone()
        },
        &key(RECIPIENT_SEED),
    );
    let entries: Vec<Vec<u8>> = [
        (EntryKind::RosterApplied, b"\xa1\x01\x61x".to_vec()),
        (EntryKind::MessageReceived, env.bytes().to_vec()),
        (EntryKind::ReceiptSent, delivered.bytes().to_vec()),
        (EntryKind::MessageReceived, carrier.bytes().to_vec()),
        (EntryKind::ReceiptSent, receipt.bytes().to_vec()),
    ]
    .into_iter()
    .map(|(kind, object)| {
        Entry {
            kind,
            at: 1_790_000_001_250,
            node: node("cn-61-psb"),
            object,
        }
        .encode()
    })
    .collect();
    let leaves: Vec<[u8; 32]> = entries.iter().map(|e| leaf_hash(e)).collect();
    let root = liaison_protocol::merkle::root_from_leaves(&leaves);
    let cp = Checkpoint::new("cn-61-psb/log", 5, root).unwrap();
    let mut note = SignedNote::sign_checkpoint(&cp, "cn-61-psb/log", log_key).unwrap();
    note.add_cosignature(
        "cn-35-psb/witness",
        &key([SENDER_SEED[0] + 6; 32]),
        1_790_000_200,
    )
    .unwrap();
    let bundles = (1..5)
        .map(|i| Evidence {
            entry: entries[i].clone(),
            index: i as u64,
            checkpoint: note.to_text().into_bytes(),
            path: inclusion_proof(&leaves, i as u64).unwrap(),
        })
        .collect();
    let general = CaseEvidence {
        case_ref: CASE.into(),
        roster: roster.bytes().to_vec(),
        bundles,
        records: vec![record.clone()],
        for_court: false,
        permissions: vec![],
        withheld: vec![],
        rosters: vec![],
    };
    let court = CaseEvidence {
        records: vec![],
        for_court: true,
        withheld: vec![Withheld {
            message: header.id,
            handling: 1,
            provider: node("cn-35-psb"),
            reason: "H1: not for judicial proceedings without the permission of cn-35-psb".into(),
        }],
        ..general.clone()
    };
    (entries, general, court, record)
}

#[test]
fn stored_object_vectors_match_the_code_and_verify() {
    let built = build();
    if std::env::var_os("LIAISON_REGENERATE_VECTORS").is_some() {
        std::fs::write(path(), &built).unwrap();
    }
    let stored = std::fs::read_to_string(path()).unwrap();
    assert!(
        stored == built,
        "tests/data/liaison-objects-v1.json differs from what the code makes; if the change is \
         deliberate, regenerate it (see this file's header) and review the diff"
    );
    // Verify from the stored JSON alone.
    let v: Value = serde_json::from_str(&stored).unwrap();
    let bytes = |o: &Value| hex::decode(o["cose_sign1"].as_str().unwrap()).unwrap();
    let pk = |o: &Value| {
        PublicKey::from_bytes(
            &hex::decode(o.as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap(),
        )
        .unwrap()
    };
    let authority = pk(&v["authority_public_key"]);
    let roster = SignedRoster::open(&bytes(&v["roster"]), &authority).unwrap();
    let r = roster.roster();
    let env = Envelope::open(&bytes(&v["envelope"]), |kid| r.signer(kid)).unwrap();
    env.check_body(&hex::decode(v["body_hex"].as_str().unwrap()).unwrap())
        .unwrap();
    assert_eq!(env.digest().to_hex(), v["envelope"]["to_be_signed_sha256"]);
    let d = SignedReceipt::open(&bytes(&v["receipt_delivered"]), |kid| r.signer(kid)).unwrap();
    assert_eq!(d.receipt().message_digest, env.digest());
    assert_eq!(d.receipt().status, ReceiptStatus::Delivered);
    let j = SignedReceipt::open(&bytes(&v["receipt_rejected"]), |kid| r.signer(kid)).unwrap();
    assert!(matches!(j.receipt().status, ReceiptStatus::Rejected(_)));
    let nd = SignedNonDelivery::open(&bytes(&v["non_delivery"]), |kid| r.signer(kid)).unwrap();
    assert_eq!(nd.record().message_digest, env.digest());
    let bundle =
        Evidence::decode(&hex::decode(v["evidence_bundle"]["cbor"].as_str().unwrap()).unwrap())
            .unwrap();
    let proven = bundle.verify(r).unwrap();
    assert_eq!(proven.entry.kind, EntryKind::MessageReceived);
    assert_eq!(proven.entry.object, env.bytes());
    // The cosigned bundle: the witness's cosignature verifies.
    let cosigned = Evidence::decode(
        &hex::decode(v["cosigned_evidence_bundle"]["cbor"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    let proven = cosigned.verify(r).unwrap();
    assert_eq!(proven.cosigned_by, vec![(node("cn-35-psb"), 1_790_000_100)]);
    // The case files, from their bytes and the authority key alone.
    let case = &v["case_evidence"];
    let file = |k: &str| CaseEvidence::decode(&hex::decode(case[k].as_str().unwrap()).unwrap());
    let general = file("general").unwrap().verify(&authority).unwrap();
    assert_eq!(general.proven.len(), 4);
    assert!(
        general
            .proven
            .iter()
            .all(|p| p.size == 5 && p.cosigned_by.len() == 1)
    );
    assert_eq!(general.records.len(), 1);
    assert_eq!(general.records[0].officer, "cn-35-psb/chen.hui");
    assert_eq!(general.records[0].handling, Handling::H1);
    let court = file("court").unwrap().verify(&authority).unwrap();
    assert!(court.for_court && court.records.is_empty());
    assert_eq!(court.withheld[0].provider, node("cn-35-psb"));
    // The court file with the H1 record slipped back in, without a permission: refused.
    let mut slipped = file("court").unwrap();
    slipped.records = vec![hex::decode(case["handover_record"].as_str().unwrap()).unwrap()];
    slipped.withheld.clear();
    assert!(matches!(
        slipped.verify(&authority),
        Err(liaison_protocol::evidence::EvidenceError::NoPermission { record: 0, .. })
    ));
    // The rotated roster: previous keys still verify, the handover names the next key.
    let rotated = SignedRoster::open(&bytes(&v["roster_rotated"]), &authority).unwrap();
    let rr = rotated.roster();
    assert_eq!(rr.next_authority, Some(PublicKey::from(&key([0x33; 32]))));
    let by_previous =
        SignedReceipt::open(&bytes(&v["receipt_delivered"]), |kid| rr.signer(kid)).unwrap();
    assert_eq!(by_previous.receipt().message_digest, env.digest());
    assert_eq!(
        rr.by_tls_key(&[2; 32]).map(|m| m.id.as_str()),
        Some("cn-61-psb")
    );
    // The receipt batch: every proof opens alone, and names its message.
    let rb = &v["receipt_batch"];
    let proofs: Vec<SignedReceipt> = rb["proofs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            SignedReceipt::open(&hex::decode(p.as_str().unwrap()).unwrap(), |kid| {
                r.signer(kid)
            })
            .unwrap()
        })
        .collect();
    assert_eq!(proofs.len(), 3);
    assert_eq!(proofs[0].receipt().message_digest, env.digest());
    assert_eq!(proofs[2].receipt().message_id, MessageId([9; 16]));
    assert!(
        proofs
            .iter()
            .all(|p| p.batch().map(SignedObject::bytes) == Some(&bytes(&rb["batch"])[..]))
    );
    let (_, batch) =
        liaison_protocol::receipt::open_batch(&bytes(&rb["batch"]), |kid| r.signer(kid)).unwrap();
    assert_eq!(batch.size, 3);
    // Types are domain-separated: a receipt never opens as an envelope.
    assert!(Envelope::open(&bytes(&v["receipt_delivered"]), |kid| r.signer(kid)).is_err());
}
