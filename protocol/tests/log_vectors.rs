//! The project's own audit-log vectors (docs/formats.md §6): `tests/data/liaison-log-v1.json` holds a
//! small log (entries, leaf hashes, roots), two checkpoints signed by the log key and cosigned by
//! a witness, and inclusion and consistency proofs, with the test keys that made them. Another
//! implementation can check its Merkle, signed-note and cosignature code against it.
//!
//! This test rebuilds the file from the code and requires the stored copy to be identical, then
//! checks the stored copy on its own (from the JSON only). To regenerate after a deliberate
//! change: `LIAISON_REGENERATE_VECTORS=1 cargo test -p liaison-protocol --test log_vectors`.

// Test helpers outside `#[test]` functions, where clippy.toml already allows these.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use liaison_protocol::keys::PublicKey;
use liaison_protocol::merkle::{
    Frontier, Hash, consistency_proof, inclusion_proof, leaf_hash, root_from_leaves,
    verify_consistency, verify_inclusion,
};
use liaison_protocol::note::{
    Checkpoint, MAX_NOTE_LEN, SignedNote, cosignature_key_id, note_key_id,
};
use serde_json::{Value, json};

const LOG_NAME: &str = "cn-35-psb/log";
const WITNESS_NAME: &str = "cn-61-psb/witness";
const LOG_SEED: [u8; 32] = [0x4c; 32]; // 'L'
const WITNESS_SEED: [u8; 32] = [0x57; 32]; // 'W'
const SIZE: u64 = 13;
const CHECKPOINTS: [(u64, u64); 2] = [(7, 1_767_225_600), (SIZE, 1_767_229_200)];

fn path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/liaison-log-v1.json")
}

fn entry(i: u64) -> Vec<u8> {
    // Opaque bytes: Merkle hashing does not look inside an entry. The first is empty, the rest
    // vary in length.
    (0..i * 5).map(|j| (i * 31 + j) as u8).collect()
}

fn hexes(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(hex::encode).collect()
}

fn build() -> Value {
    let log_key = SigningKey::from_bytes(&LOG_SEED);
    let witness_key = SigningKey::from_bytes(&WITNESS_SEED);
    let (log_pub, witness_pub) = (PublicKey::from(&log_key), PublicKey::from(&witness_key));

    let entries: Vec<Vec<u8>> = (0..SIZE).map(entry).collect();
    let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
    let roots: Vec<Hash> = (0..=leaves.len())
        .map(|n| root_from_leaves(&leaves[..n]))
        .collect();

    let checkpoints: Vec<Value> = CHECKPOINTS
        .iter()
        .map(|&(size, time)| {
            let cp = Checkpoint::new(LOG_NAME, size, roots[size as usize]).unwrap();
            let mut note = SignedNote::sign_checkpoint(&cp, LOG_NAME, &log_key).unwrap();
            note.add_cosignature(WITNESS_NAME, &witness_key, time)
                .unwrap();
            json!({ "size": size, "cosigned_at": time, "note": note.to_text() })
        })
        .collect();

    let inclusion: Vec<Value> = (0..SIZE)
        .map(|i| {
            let proof = inclusion_proof(&leaves, i).unwrap();
            json!({ "leaf_index": i, "tree_size": SIZE, "proof_hex": hexes(&proof) })
        })
        .collect();
    let consistency: Vec<Value> = (1..=SIZE)
        .map(|m| {
            let proof = consistency_proof(&leaves, m).unwrap();
            json!({ "size1": m, "size2": SIZE, "proof_hex": hexes(&proof) })
        })
        .collect();

    json!({
        "description": "liaison audit log vectors, profile v1 (docs/formats.md §4): RFC 6962 hashing \
            (leaf = SHA-256(0x00 || entry), node = SHA-256(0x01 || left || right)), C2SP \
            tlog-checkpoint in a C2SP signed note with an Ed25519 note signature by the log key \
            (key id type 0x01) and a tlog-cosignature/v1 by a witness (key id type 0x04, time in \
            Unix seconds). Entries are opaque bytes here. Leaf indices are 0-based. The keys are \
            test keys: never use them elsewhere.",
        "log_key": {
            "name": LOG_NAME,
            "ed25519_seed_hex": hex::encode(LOG_SEED),
            "public_key_hex": hex::encode(log_pub.to_bytes()),
            "key_id_hex": hex::encode(note_key_id(LOG_NAME, &log_pub)),
        },
        "witness_key": {
            "name": WITNESS_NAME,
            "ed25519_seed_hex": hex::encode(WITNESS_SEED),
            "public_key_hex": hex::encode(witness_pub.to_bytes()),
            "cosignature_key_id_hex": hex::encode(cosignature_key_id(WITNESS_NAME, &witness_pub)),
        },
        "entries_hex": entries.iter().map(hex::encode).collect::<Vec<_>>(),
        "leaf_hashes_hex": hexes(&leaves),
        "roots_by_size_hex": hexes(&roots),
        "checkpoints": checkpoints,
        "inclusion": inclusion,
        "consistency": consistency,
    })
}

fn text_of(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap();
    text.push('\n');
    text
}

#[test]
fn stored_vectors_match_the_code() {
    let built = text_of(&build());
    if std::env::var_os("LIAISON_REGENERATE_VECTORS").is_some() {
        std::fs::write(path(), &built).unwrap();
    }
    let stored = std::fs::read_to_string(path()).unwrap();
    assert!(
        stored == built,
        "tests/data/liaison-log-v1.json differs from what the code makes; if the change is \
         deliberate, regenerate it (see this file's header) and review the diff"
    );
}

fn h32(v: &Value) -> Hash {
    hex::decode(v.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

fn key_of(v: &Value) -> PublicKey {
    PublicKey::from_bytes(&h32(&v["public_key_hex"])).unwrap()
}

/// Checks the stored file from its own content, as another implementation would.
#[test]
fn stored_vectors_verify() {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path()).unwrap()).unwrap();
    let log_key = key_of(&v["log_key"]);
    let witness_key = key_of(&v["witness_key"]);
    let log_name = v["log_key"]["name"].as_str().unwrap();
    let witness_name = v["witness_key"]["name"].as_str().unwrap();
    assert_eq!(
        hex::encode(note_key_id(log_name, &log_key)),
        v["log_key"]["key_id_hex"]
    );
    assert_eq!(
        hex::encode(cosignature_key_id(witness_name, &witness_key)),
        v["witness_key"]["cosignature_key_id_hex"]
    );
    for (role, seed) in [
        ("log_key", &v["log_key"]),
        ("witness_key", &v["witness_key"]),
    ] {
        let sk = SigningKey::from_bytes(&h32(&seed["ed25519_seed_hex"]));
        assert_eq!(PublicKey::from(&sk), key_of(seed), "{role}");
    }

    let leaves: Vec<Hash> = v["entries_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| leaf_hash(&hex::decode(e.as_str().unwrap()).unwrap()))
        .collect();
    let stored_leaves: Vec<Hash> = v["leaf_hashes_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(h32)
        .collect();
    assert_eq!(leaves, stored_leaves);
    let roots: Vec<Hash> = v["roots_by_size_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(h32)
        .collect();
    let mut frontier = Frontier::new();
    for (n, root) in roots.iter().enumerate() {
        assert_eq!(&frontier.root(), root, "root of size {n}");
        if let Some(leaf) = leaves.get(n) {
            frontier.push(*leaf).unwrap();
        }
    }

    let mut checkpoints = Vec::new();
    for c in v["checkpoints"].as_array().unwrap() {
        let note = SignedNote::parse(c["note"].as_str().unwrap(), MAX_NOTE_LEN).unwrap();
        note.verify_signature(log_name, &log_key).unwrap();
        let time = note.verify_cosignature(witness_name, &witness_key).unwrap();
        assert_eq!(time, c["cosigned_at"].as_u64().unwrap());
        let cp = note.checkpoint().unwrap();
        assert_eq!(cp.size(), c["size"].as_u64().unwrap());
        assert_eq!(cp.origin(), log_name);
        assert_eq!(cp.root(), &roots[cp.size() as usize]);
        checkpoints.push(cp);
    }
    let latest = checkpoints.last().unwrap();

    for case in v["inclusion"].as_array().unwrap() {
        let (i, n) = (
            case["leaf_index"].as_u64().unwrap(),
            case["tree_size"].as_u64().unwrap(),
        );
        let proof: Vec<Hash> = case["proof_hex"]
            .as_array()
            .unwrap()
            .iter()
            .map(h32)
            .collect();
        assert_eq!(n, latest.size());
        verify_inclusion(&leaves[i as usize], i, n, &proof, latest.root()).unwrap();
    }
    for case in v["consistency"].as_array().unwrap() {
        let (m, n) = (
            case["size1"].as_u64().unwrap(),
            case["size2"].as_u64().unwrap(),
        );
        let proof: Vec<Hash> = case["proof_hex"]
            .as_array()
            .unwrap()
            .iter()
            .map(h32)
            .collect();
        verify_consistency(m, n, &roots[m as usize], &roots[n as usize], &proof).unwrap();
    }
    // The two checkpoints are consistent: what a witness checks before it cosigns the second.
    let (old, new) = (&checkpoints[0], latest);
    let proof = v["consistency"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["size1"].as_u64() == Some(old.size()))
        .map(|c| {
            c["proof_hex"]
                .as_array()
                .unwrap()
                .iter()
                .map(h32)
                .collect::<Vec<_>>()
        })
        .unwrap();
    verify_consistency(old.size(), new.size(), old.root(), new.root(), &proof).unwrap();
}
