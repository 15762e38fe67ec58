//! Writes a small seed corpus for every fuzz target to `seeds/<target>/` (next to this crate's
//! Cargo.toml): valid objects signed with the fuzz test key, and the bare payloads the targets
//! also sign themselves. Deterministic: running it again rewrites the same files.
//!
//!     cargo run --example gen_seeds

use std::fs;
use std::path::Path;

use ed25519_dalek::SigningKey;
use liaison_fuzz::{LOG_NAME, SIGNER_NODE, WITNESS_NAME, merkle_width, signing_key, witness_key};
use liaison_protocol::audit::{Entry, EntryKind};
use liaison_protocol::cose::TYP_ACTION;
use liaison_protocol::merkle::{self, Frontier, Hash};
use liaison_protocol::note::{Checkpoint, SignedNote};
use liaison_protocol::{
    Digest, Envelope, ErrorCode, Frame, Header, Location, Member, MemberStatus, MessageId, NodeId,
    NonDelivery, Priority, PublicKey, Receipt, ReceiptStatus, Roster, Rule, SignedNonDelivery,
    SignedObject, SignedReceipt,
};

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let sk = signing_key();

    let body = b"{\"case\":\"FJ-2026-0042\"}".to_vec();
    let header = sample_header(&body);
    let envelope = Envelope::seal(header.clone(), &sk);
    let receipt = SignedReceipt::sign(
        sample_receipt(&envelope, ReceiptStatus::Delivered, None),
        &sk,
    );
    let rejected = SignedReceipt::sign(
        sample_receipt(
            &envelope,
            ReceiptStatus::Rejected("policy forbids assist.request".into()),
            Some(("fuzz-node/log".into(), 41)),
        ),
        &sk,
    );
    let nondelivery = SignedNonDelivery::sign(sample_nondelivery(&envelope), &sk);
    let roster = sample_roster().sign(&sk);

    let mut seeds: Vec<(&str, &str, Vec<u8>)> = Vec::new();

    // frame
    let frames = [
        (
            "deliver",
            Frame::Deliver {
                envelope: envelope.bytes().to_vec(),
                body: body.clone(),
            },
        ),
        ("receipt", Frame::Receipt(receipt.bytes().to_vec())),
        (
            "nondelivery",
            Frame::NonDelivery(nondelivery.bytes().to_vec()),
        ),
        ("custody", Frame::Custody(envelope.digest())),
        ("ack", Frame::Ack(receipt.digest())),
        ("roster", Frame::Roster(roster.bytes().to_vec())),
        (
            "error",
            Frame::Error {
                code: ErrorCode::Unavailable,
                reason: "disk".into(),
            },
        ),
    ];
    for (name, f) in frames {
        seeds.push(("frame", name, f.to_bytes()));
    }

    // cose
    seeds.push(("cose", "envelope", envelope.bytes().to_vec()));
    seeds.push(("cose", "receipt", receipt.bytes().to_vec()));
    seeds.push((
        "cose",
        "action",
        SignedObject::sign(TYP_ACTION, vec![0xa1, 0x01, 0x02], &sk)
            .bytes()
            .to_vec(),
    ));

    // envelope: a sealed envelope and a bare header
    seeds.push(("envelope", "sealed", envelope.bytes().to_vec()));
    seeds.push(("envelope", "header", header.encode()));
    let minimal = Header {
        in_reply_to: Some(MessageId([9; 16])),
        expires_at: None,
        case_ref: None,
        priority: Priority::Flash,
        ..header
    };
    seeds.push(("envelope", "header_reply", minimal.encode()));

    // receipt, nondelivery, roster: whole signed objects and bare payloads
    seeds.push(("receipt", "delivered", receipt.bytes().to_vec()));
    seeds.push(("receipt", "rejected", rejected.bytes().to_vec()));
    let (_, proofs) = SignedReceipt::sign_batch(
        &receipt.receipt().federation,
        &receipt.receipt().recipient,
        vec![receipt.receipt().clone(); 3],
        &sk,
    );
    seeds.push(("receipt", "proof", proofs[1].bytes().to_vec()));
    seeds.push(("receipt", "payload_delivered", payload(receipt.bytes())));
    seeds.push(("receipt", "payload_rejected", payload(rejected.bytes())));
    seeds.push(("nondelivery", "signed", nondelivery.bytes().to_vec()));
    seeds.push(("nondelivery", "payload", payload(nondelivery.bytes())));
    seeds.push(("roster", "signed", roster.bytes().to_vec()));
    seeds.push(("roster", "payload", roster.roster().encode()));

    // audit_entry
    for (name, kind, object) in [
        ("sent", EntryKind::MessageSent, envelope.bytes().to_vec()),
        ("receipt", EntryKind::ReceiptSent, receipt.bytes().to_vec()),
        (
            "rejected",
            EntryKind::Rejected,
            liaison_protocol::audit::event_record("bad signature", Some("cn-61-psb"), None, None),
        ),
    ] {
        let entry = Entry {
            kind,
            at: 1_790_000_000_000,
            node: node(SIGNER_NODE),
            object,
        };
        seeds.push(("audit_entry", name, entry.encode()));
    }

    // document and action: one valid example document per kind, and an officer-signed
    // action carrying it (credential signed by the test node key).
    let officer_key = SigningKey::from_bytes(&[0x33; 32]);
    let credential = liaison_protocol::action::Officer {
        federation: "fuzz-fed".into(),
        node: NodeId::new(SIGNER_NODE).expect("node id"),
        id: "fuzz-node/officer".into(),
        name: "Fuzz Officer".into(),
        number: "000001".into(),
        unit: "fuzzing".into(),
        role: liaison_protocol::workflow::Role::Investigator,
        key: PublicKey::from(&officer_key),
        enrolled_at: 1_763_900_000_000,
    }
    .certify(&sk);
    for kind in ["assist.request", "alert.issue", "repatriation.handover_record", "marriage_check.answer"] {
        let doc = liaison_protocol::workflow::catalog::example(kind).expect("example");
        seeds.push(("document", kind, doc.encode()));
        let action = liaison_protocol::action::Action {
            federation: "fuzz-fed".into(),
            node: NodeId::new(SIGNER_NODE).expect("node id"),
            kind: kind.into(),
            case_ref: "FJ-2026-0042".into(),
            at: 1_763_900_000_000,
            purpose: liaison_protocol::workflow::spec(kind).expect("kind").purpose.into(),
            handling: liaison_protocol::action::Handling::H2,
            sensitivity: vec!["identity".into()],
            retention_days: 365,
            abroad: false,
            document: doc,
            derived_from: Vec::new(),
            credential: Some(credential.bytes().to_vec()),
        };
        seeds.push(("action", kind, action.sign(&officer_key).bytes().to_vec()));
        // case evidence: the roster and the signed record (no bundle proves its envelope, so
        // it decodes but does not verify: the verifier's record checks are reached).
        let evidence = liaison_protocol::evidence::CaseEvidence {
            case_ref: "FJ-2026-0042".into(),
            roster: roster.bytes().to_vec(),
            bundles: Vec::new(),
            records: vec![action.sign(&officer_key).bytes().to_vec()],
            for_court: true,
            permissions: vec![action.sign(&officer_key).bytes().to_vec()],
            withheld: Vec::new(),
            rosters: vec![roster.bytes().to_vec()],
        };
        seeds.push(("case_evidence", kind, evidence.encode()));
    }

    // note: a log-signed and witness-cosigned checkpoint, its body, a signature line
    let leaves: Vec<Hash> = (0u64..8)
        .map(|i| merkle::leaf_hash(&i.to_be_bytes()))
        .collect();
    let checkpoint = Checkpoint::new(LOG_NAME, 8, merkle::root_from_leaves(&leaves))
        .unwrap_or_else(|e| panic!("checkpoint: {e}"));
    let mut note = SignedNote::sign_checkpoint(&checkpoint, LOG_NAME, &sk)
        .unwrap_or_else(|e| panic!("note: {e}"));
    seeds.push(("note", "signed", note.to_text().into_bytes()));
    note.add_cosignature(WITNESS_NAME, &witness_key(), 1_790_000_000)
        .unwrap_or_else(|e| panic!("cosignature: {e}"));
    seeds.push(("note", "cosigned", note.to_text().into_bytes()));
    seeds.push(("note", "checkpoint", checkpoint.body().into_bytes()));
    seeds.push((
        "note",
        "signature_line",
        note.signatures()[1].to_line().into_bytes(),
    ));

    // merkle (input format: see fuzz_targets/merkle.rs)
    for (name, bytes) in merkle_seeds(&leaves) {
        seeds.push(("merkle", name, bytes));
    }

    for (target, name, bytes) in seeds {
        let d = dir.join(target);
        fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        let path = d.join(name);
        fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        println!("{:>5} bytes  {}", bytes.len(), path.display());
    }
}

fn node(id: &str) -> NodeId {
    NodeId::new(id).unwrap_or_else(|e| panic!("node id {id}: {e}"))
}

fn payload(signed: &[u8]) -> Vec<u8> {
    SignedObject::parse(signed, 1 << 20)
        .unwrap_or_else(|e| panic!("seed object: {e}"))
        .payload()
        .to_vec()
}

fn sample_header(body: &[u8]) -> Header {
    Header {
        federation: "fuzz-federation".into(),
        id: MessageId([7; 16]),
        from: node(SIGNER_NODE),
        to: node("cn-61-psb"),
        sent_at: 1_790_000_000_000,
        kind: "assist.request".into(),
        body_len: body.len() as u64,
        body_hash: Digest::of(body).0,
        priority: Priority::Urgent,
        in_reply_to: None,
        expires_at: Some(1_790_086_400_000),
        case_ref: Some("FJ-2026-0042".into()),
    }
}

fn sample_receipt(
    envelope: &Envelope,
    status: ReceiptStatus,
    log_ref: Option<(String, u64)>,
) -> Receipt {
    Receipt {
        federation: "fuzz-federation".into(),
        message_digest: envelope.digest(),
        message_id: envelope.header().id,
        sender: node("cn-61-psb"),
        recipient: node(SIGNER_NODE),
        at: 1_790_000_000_500,
        status,
        log_ref,
    }
}

fn sample_nondelivery(envelope: &Envelope) -> NonDelivery {
    NonDelivery {
        federation: "fuzz-federation".into(),
        message_digest: envelope.digest(),
        message_id: envelope.header().id,
        sender: node("cn-61-psb"),
        recipient: node("vn-laocai-bg"),
        at: 1_790_086_400_001,
        dropped_by: node(SIGNER_NODE),
        reason: "expired".into(),
    }
}

fn key(seed: u8) -> PublicKey {
    PublicKey::from(&SigningKey::from_bytes(&[seed; 32]))
}

fn member(id: &str, agency: &str, country: &str, seed: u8, via: Option<&str>) -> Member {
    Member {
        id: node(id),
        agency: agency.into(),
        name: format!("{id} ({agency})"),
        country: country.into(),
        division: (country == "CHN").then(|| "350000".into()),
        signing_key: key(seed),
        log_key: key(seed.wrapping_add(1)),
        witness_key: key(seed.wrapping_add(2)),
        tls_spki_sha256: Digest::of(&[seed]).0,
        endpoints: vec![format!("{id}.example:7443")],
        via: via.map(node),
        location: Some(Location {
            lat_e6: 26_074_500 + i64::from(seed),
            lon_e6: 119_296_500 - i64::from(seed),
        }),
        status: MemberStatus::Active,
        previous: None,
        tls_cert: None,
    }
}

fn sample_roster() -> Roster {
    let mut suspended = member("cn-61-psb", "public_security", "CHN", 20, None);
    suspended.status = MemberStatus::Suspended;
    suspended.location = None;
    Roster {
        federation: "fuzz-federation".into(),
        serial: 3,
        issued_at: 1_790_000_000_000,
        valid_until: None,
        members: vec![
            member(SIGNER_NODE, "joint_meeting", "CHN", 10, None),
            suspended,
            member(
                "vn-laocai-bg",
                "border_station",
                "VNM",
                30,
                Some(SIGNER_NODE),
            ),
        ],
        rules: vec![
            Rule {
                from: "*".into(),
                to: "joint_meeting".into(),
                kinds: vec!["assist.*".into(), "alert.missing_child".into()],
                abroad: true,
            },
            Rule {
                from: "joint_meeting".into(),
                to: "*".into(),
                kinds: vec!["*".into()],
                abroad: false,
            },
        ],
        max_body_len: 8 * 1024 * 1024,
        dev: true,
        next_authority: None,
    }
}

fn merkle_seeds(leaves: &[Hash]) -> Vec<(&'static str, Vec<u8>)> {
    let n = leaves.len() as u64;
    let root = merkle::root_from_leaves(leaves);
    let mut out = Vec::new();

    // mode 0 (inclusion), 1-byte sizes: index 5 of 8.
    let proof = merkle::inclusion_proof(leaves, 5).unwrap_or_else(|e| panic!("{e}"));
    let mut b = vec![0b0000_0000, 5, n as u8];
    b.extend_from_slice(&leaves[5]);
    b.extend_from_slice(&root);
    proof.iter().for_each(|h| b.extend_from_slice(h));
    out.push(("inclusion", b));

    // mode 1 (consistency), 8-byte sizes: 3 -> 8.
    let proof = merkle::consistency_proof(leaves, 3).unwrap_or_else(|e| panic!("{e}"));
    let mut b = vec![0b0000_1101];
    b.extend_from_slice(&3u64.to_le_bytes());
    b.extend_from_slice(&n.to_le_bytes());
    b.extend_from_slice(&merkle::root_from_leaves(&leaves[..3]));
    b.extend_from_slice(&root);
    proof.iter().for_each(|h| b.extend_from_slice(h));
    out.push(("consistency", b));

    // mode 2 (generated): 300 leaves, index 123, old size 77, tamper 0x2a, salt.
    let mut b = vec![0b0000_0010];
    b.extend_from_slice(&299u16.to_le_bytes());
    b.extend_from_slice(&123u16.to_le_bytes());
    b.extend_from_slice(&77u16.to_le_bytes());
    b.push(0x2a);
    b.extend_from_slice(b"salt");
    out.push(("generated", b));

    // mode 3 (frontier), 2-byte size: the frontier of the 8-leaf tree, plus a leaf.
    let mut f = Frontier::new();
    leaves.iter().for_each(|l| {
        f.push(*l).unwrap_or_else(|e| panic!("{e}"));
    });
    let mut b = vec![0b0000_0111];
    b.extend_from_slice(&(f.size() as u16).to_le_bytes());
    b.extend_from_slice(&merkle::leaf_hash(b"next"));
    f.stack().iter().for_each(|h| b.extend_from_slice(h));
    out.push(("frontier", b));

    // Check the widths the seeds rely on.
    assert_eq!(merkle_width(0b0000_0000), 1);
    assert_eq!(merkle_width(0b0000_1101), 8);
    assert_eq!(merkle_width(0b0000_0111), 2);
    out
}
