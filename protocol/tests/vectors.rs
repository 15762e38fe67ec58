//! Independent test vectors, read from `tests/data/` (see its README for origins and licences):
//! the RFC 6962 Merkle vectors, the transparency-dev Merkle proof probes, and Wycheproof Ed25519.

// Test helpers outside `#[test]` functions, where clippy.toml already allows these.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use liaison_protocol::keys::PublicKey;
use liaison_protocol::merkle::{
    self, Frontier, Hash, consistency_proof, inclusion_proof, leaf_hash, root_from_leaves,
    verify_consistency, verify_inclusion,
};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(path)
}

fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn hex32(v: &Value) -> Hash {
    let bytes = hex::decode(v.as_str().unwrap()).unwrap();
    bytes.try_into().unwrap()
}

fn hex_list(v: &Value) -> Vec<Hash> {
    v.as_array().unwrap().iter().map(hex32).collect()
}

fn u64_of(v: &Value) -> u64 {
    v.as_u64().unwrap()
}

// ---------------------------------------------------------------------------------------------
// (a) RFC 6962 vectors

#[test]
fn rfc6962_roots_and_proofs() {
    let v = read_json(&data("rfc6962.json"));
    let leaves: Vec<Hash> = v["leaf_inputs_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| leaf_hash(&hex::decode(x.as_str().unwrap()).unwrap()))
        .collect();
    assert_eq!(leaves.len(), 8);

    let roots = hex_list(&v["roots_by_size_hex"]);
    assert_eq!(roots.len(), 9, "roots for sizes 0..=8");
    let mut frontier = Frontier::new();
    for (size, root) in roots.iter().enumerate() {
        assert_eq!(
            &root_from_leaves(&leaves[..size]),
            root,
            "root of size {size}"
        );
        assert_eq!(&frontier.root(), root, "frontier root of size {size}");
        if let Some(leaf) = leaves.get(size) {
            frontier.push(*leaf).unwrap();
        }
    }
    assert_eq!(roots[0], merkle::EMPTY_ROOT);

    let inclusion = v["inclusion"].as_array().unwrap();
    assert!(!inclusion.is_empty());
    for case in inclusion {
        let (index, size) = (u64_of(&case["leaf_index"]), u64_of(&case["tree_size"]));
        let leaf = hex32(&case["leaf_hash_hex"]);
        let proof = hex_list(&case["proof_hex"]);
        let root = hex32(&case["root_hex"]);
        assert_eq!(leaf, leaves[index as usize]);
        assert_eq!(root, roots[size as usize]);
        assert_eq!(verify_inclusion(&leaf, index, size, &proof, &root), Ok(()));
        let generated = inclusion_proof(&leaves[..size as usize], index).unwrap();
        assert_eq!(generated, proof, "inclusion proof of {index} in {size}");
    }

    let consistency = v["consistency"].as_array().unwrap();
    assert!(!consistency.is_empty());
    for case in consistency {
        let (old, new) = (u64_of(&case["size1"]), u64_of(&case["size2"]));
        let (old_root, new_root) = (hex32(&case["root1_hex"]), hex32(&case["root2_hex"]));
        let proof = hex_list(&case["proof_hex"]);
        assert_eq!(old_root, roots[old as usize]);
        assert_eq!(new_root, roots[new as usize]);
        assert_eq!(
            verify_consistency(old, new, &old_root, &new_root, &proof),
            Ok(())
        );
        let generated = consistency_proof(&leaves[..new as usize], old).unwrap();
        assert_eq!(generated, proof, "consistency proof {old} -> {new}");
    }

    // Every other inclusion and consistency proof of the 8 vectors round-trips too.
    for size in 1..=8u64 {
        let d = &leaves[..size as usize];
        for index in 0..size {
            let proof = inclusion_proof(d, index).unwrap();
            let root = &roots[size as usize];
            assert_eq!(
                verify_inclusion(&d[index as usize], index, size, &proof, root),
                Ok(())
            );
        }
        for old in 1..=size {
            let proof = consistency_proof(d, old).unwrap();
            let (old_root, new_root) = (&roots[old as usize], &roots[size as usize]);
            assert_eq!(
                verify_consistency(old, size, old_root, new_root, &proof),
                Ok(())
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (b) transparency-dev Merkle probes

/// A probe root or proof element as a 32-byte hash.
///
/// Some probes hold values that are not 32 bytes: empty strings as "garbage" proof elements,
/// `"WrongRoot"`, and the placeholders `"don't care 1"` / `"don't care 2"` for roots that the
/// verifier should not need to look at (one probe, two equal trees of size 1, expects success
/// with such roots). Our API takes typed 32-byte hashes, because a root or proof element of
/// another length is already refused where it is decoded (checkpoint, evidence bundle). So that
/// the *verifier* still has to answer every probe, such a value is replaced by
/// `SHA-256("liaison probe placeholder" ‖ value)`: 32 bytes that equal no tree hash and keep
/// equal placeholders equal. `placeholders` counts the replacements.
fn probe_hash(v: &Value, placeholders: &mut usize) -> Hash {
    let bytes = BASE64.decode(v.as_str().unwrap()).unwrap();
    match Hash::try_from(bytes.as_slice()) {
        Ok(hash) => hash,
        Err(_) => {
            *placeholders += 1;
            let mut h = Sha256::new();
            h.update(b"liaison probe placeholder");
            h.update(&bytes);
            h.finalize().into()
        }
    }
}

/// A probe leaf hash, decoded as our API does: a leaf hash that is not 32 bytes is refused
/// before verification (as the reference Go verifier also refuses it), so `None`.
fn probe_leaf(v: &Value) -> Option<Hash> {
    let bytes = BASE64.decode(v.as_str().unwrap()).unwrap();
    Hash::try_from(bytes.as_slice()).ok()
}

fn probe_proof(v: &Value, placeholders: &mut usize) -> Vec<Hash> {
    match v {
        Value::Null => Vec::new(),
        Value::Array(items) => items.iter().map(|x| probe_hash(x, placeholders)).collect(),
        other => panic!("proof is {other}"),
    }
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            json_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
}

/// Runs one probe file; returns whether verification failed.
fn run_probe(kind: &str, v: &Value, placeholders: &mut usize) -> bool {
    match kind {
        "inclusion" => {
            let Some(leaf) = probe_leaf(&v["leafHash"]) else {
                return true;
            };
            let root = probe_hash(&v["root"], placeholders);
            let proof = probe_proof(&v["proof"], placeholders);
            let (index, size) = (u64_of(&v["leafIdx"]), u64_of(&v["treeSize"]));
            verify_inclusion(&leaf, index, size, &proof, &root).is_err()
        }
        "consistency" => {
            let old_root = probe_hash(&v["root1"], placeholders);
            let new_root = probe_hash(&v["root2"], placeholders);
            let proof = probe_proof(&v["proof"], placeholders);
            let (old, new) = (u64_of(&v["size1"]), u64_of(&v["size2"]));
            verify_consistency(old, new, &old_root, &new_root, &proof).is_err()
        }
        other => panic!("unknown probe kind {other}"),
    }
}

#[test]
fn merkle_probes() {
    let mut counts = [0usize; 2]; // inclusion, consistency
    let mut placeholders = 0;
    let mut wrong = Vec::new();
    for (i, kind) in ["inclusion", "consistency"].into_iter().enumerate() {
        let mut files = Vec::new();
        json_files(&data(&format!("merkle-probes/{kind}")), &mut files);
        files.sort();
        for path in files {
            let v = read_json(&path);
            let want_err = v["wantErr"].as_bool().unwrap();
            if run_probe(kind, &v, &mut placeholders) != want_err {
                wrong.push(format!("{} (wantErr {want_err})", path.display()));
            }
            counts[i] += 1;
        }
    }
    assert!(
        wrong.is_empty(),
        "probes answered wrongly:\n{}",
        wrong.join("\n")
    );
    assert!(
        counts[0] > 0 && counts[1] > 0,
        "no probes found: {counts:?}"
    );
    // The copy in tests/data holds 98 inclusion and 98 consistency probes.
    assert_eq!(counts, [98, 98]);
    assert!(placeholders > 0);
}

// ---------------------------------------------------------------------------------------------
// (c) Wycheproof Ed25519

#[test]
fn wycheproof_ed25519() {
    let v = read_json(&data("wycheproof/ed25519_test.json"));
    let mut checked = 0u64;
    let mut mismatches = Vec::new();
    for group in v["testGroups"].as_array().unwrap() {
        let pk = hex::decode(group["publicKey"]["pk"].as_str().unwrap()).unwrap();
        // Registration refuses a key of the wrong length, a non-canonical encoding or a
        // small-order point; then every signature under it is refused.
        let key = <[u8; 32]>::try_from(pk.as_slice())
            .ok()
            .and_then(|pk| PublicKey::from_bytes(&pk).ok());
        for case in group["tests"].as_array().unwrap() {
            let msg = hex::decode(case["msg"].as_str().unwrap()).unwrap();
            let sig = hex::decode(case["sig"].as_str().unwrap()).unwrap();
            let accepted = match &key {
                Some(key) => key.verify(&msg, &sig).is_ok(),
                None => false,
            };
            let expected = match case["result"].as_str().unwrap() {
                "valid" => true,
                "invalid" => false,
                // The current file has no "acceptable" case. Should one appear (historically:
                // small-order keys or non-canonical encodings some libraries accept), liaison
                // refuses it: a signature that only some verifiers accept lets a signed object
                // be valid for one party and invalid for another, and docs/formats.md §1.2 asks for
                // verify_strict with weak keys refused.
                "acceptable" => false,
                other => panic!("tcId {}: unknown result {other}", case["tcId"]),
            };
            if accepted != expected {
                mismatches.push(format!(
                    "tcId {} ({}): expected {}, got {}",
                    case["tcId"],
                    case["comment"],
                    case["result"],
                    if accepted { "accepted" } else { "refused" }
                ));
            }
            checked += 1;
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    assert_eq!(checked, u64_of(&v["numberOfTests"]));
    assert_eq!(checked, 151);
}
