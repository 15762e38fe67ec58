//! RFC 6962/9162 Merkle verification on arbitrary bytes: `merkle::verify_inclusion`,
//! `merkle::verify_consistency`, the proof-length functions and `merkle::Frontier` must never
//! panic (a debug build checks every overflow); proofs generated from a tree built from the
//! input must verify, and a tampered one must not.
//!
//! Input: a mode byte, then (little-endian) sizes/indices of 1, 2, 4 or 8 bytes each (the mode
//! byte's bits 2..4 pick the width; see `liaison_fuzz::merkle_width`), then 32-byte hashes.
//!
//! - mode % 4 == 0, inclusion: index, size, leaf hash, root, proof hashes.
//! - mode % 4 == 1, consistency: old size, new size, old root, new root, proof hashes.
//! - mode % 4 == 2, generated: leaf count (1..=512), index, old size, tamper byte, salt; builds
//!   the tree, generates both proofs, verifies them, tampers with them.
//! - mode % 4 == 3, frontier: size, leaf hash, stack hashes; `Frontier::from_parts` and `push`.
#![no_main]

use liaison_fuzz::{Input, merkle_width};
use liaison_protocol::merkle::{
    self, EMPTY_ROOT, Frontier, Hash, MerkleError, consistency_proof_len, inclusion_proof_len,
    verify_consistency, verify_inclusion,
};
use libfuzzer_sys::fuzz_target;

const MAX_GENERATED_LEAVES: u64 = 512;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mode = input.u8();
    let width = merkle_width(mode);
    match mode % 4 {
        0 => inclusion(input, width),
        1 => consistency(input, width),
        2 => generated(input),
        _ => frontier(input, width),
    }
});

fn inclusion(mut input: Input<'_>, width: usize) {
    let index = input.uint(width);
    let size = input.uint(width);
    let leaf = input.hash();
    let root = input.hash();
    let proof = input.hashes();
    let expected_len = inclusion_proof_len(index, size);
    let computed = merkle::root_from_inclusion_proof(&leaf, index, size, &proof);
    let verified = verify_inclusion(&leaf, index, size, &proof, &root);
    match &computed {
        Ok(r) => {
            assert!(index < size);
            assert_eq!(proof.len(), expected_len);
            assert!(expected_len <= 64);
            assert_eq!(verified.is_ok(), *r == root);
        }
        Err(e) => {
            assert_eq!(verified.as_ref(), Err(e));
            if index >= size {
                assert_eq!(*e, MerkleError::IndexOutOfRange { index, size });
            }
        }
    }
}

fn consistency(mut input: Input<'_>, width: usize) {
    let old_size = input.uint(width);
    let new_size = input.uint(width);
    let old_root = input.hash();
    let new_root = input.hash();
    let proof = input.hashes();
    let expected_len = consistency_proof_len(old_size, new_size);
    assert!(expected_len <= 128);
    let verified = verify_consistency(old_size, new_size, &old_root, &new_root, &proof);
    if verified.is_ok() {
        assert!(old_size <= new_size);
        if old_size == new_size {
            assert!(proof.is_empty());
            assert_eq!(old_root, new_root);
            if old_size == 0 {
                assert_eq!(old_root, EMPTY_ROOT);
            }
        } else {
            assert!(old_size > 0);
            assert_eq!(proof.len(), expected_len);
        }
    }
}

fn generated(mut input: Input<'_>) {
    let n = input.uint(2) % MAX_GENERATED_LEAVES + 1;
    let index = input.uint(2) % n;
    let old_size = input.uint(2) % (n + 1);
    let tamper = input.u8();
    let salt = input.rest();
    let leaves: Vec<Hash> = (0..n)
        .map(|i| {
            let mut entry = i.to_be_bytes().to_vec();
            entry.extend_from_slice(salt);
            merkle::leaf_hash(&entry)
        })
        .collect();

    // The frontier and the one-shot root agree, and a frontier restores from its parts.
    let mut frontier = Frontier::new();
    let mut old_root = EMPTY_ROOT;
    for (i, leaf) in leaves.iter().enumerate() {
        if i as u64 == old_size {
            old_root = frontier.root();
        }
        assert_eq!(frontier.push(*leaf), Ok(i as u64));
    }
    if old_size == n {
        old_root = frontier.root();
    }
    let root = merkle::root_from_leaves(&leaves);
    assert_eq!(frontier.root(), root);
    assert_eq!(
        merkle::root_from_leaves(&leaves[..old_size as usize]),
        old_root
    );
    assert_eq!(
        Frontier::from_parts(frontier.size(), frontier.stack().to_vec()),
        Ok(frontier.clone())
    );

    // Inclusion: the generated proof verifies; a tampered proof or root does not.
    let leaf = leaves[index as usize];
    let proof = merkle::inclusion_proof(&leaves, index).expect("index is inside the tree");
    assert_eq!(proof.len(), inclusion_proof_len(index, n));
    assert_eq!(verify_inclusion(&leaf, index, n, &proof, &root), Ok(()));
    if let Some(bad) = tampered(&proof, tamper) {
        assert!(verify_inclusion(&leaf, index, n, &bad, &root).is_err());
    }
    let mut bad_root = root;
    bad_root[usize::from(tamper) % 32] ^= 1;
    assert!(verify_inclusion(&leaf, index, n, &proof, &bad_root).is_err());
    assert!(
        verify_inclusion(
            &leaf,
            index,
            n,
            &proof[..proof.len().saturating_sub(1)],
            &root
        )
        .is_err()
            || proof.is_empty()
    );

    // Consistency from old_size to n.
    match merkle::consistency_proof(&leaves, old_size) {
        Ok(proof) => {
            assert!(old_size > 0 || n == 0);
            assert_eq!(proof.len(), consistency_proof_len(old_size, n));
            assert_eq!(
                verify_consistency(old_size, n, &old_root, &root, &proof),
                Ok(())
            );
            if let Some(bad) = tampered(&proof, tamper) {
                assert!(verify_consistency(old_size, n, &old_root, &root, &bad).is_err());
            }
            assert!(verify_consistency(old_size, n, &old_root, &bad_root, &proof).is_err());
        }
        Err(e) => {
            assert_eq!(old_size, 0);
            assert_eq!(e, MerkleError::FromEmptyTree { new_size: n });
        }
    }
}

/// The proof with one bit of one hash flipped (`None` for an empty proof).
fn tampered(proof: &[Hash], tamper: u8) -> Option<Vec<Hash>> {
    if proof.is_empty() {
        return None;
    }
    let mut bad = proof.to_vec();
    let which = usize::from(tamper) % bad.len();
    bad[which][usize::from(tamper) % 32] ^= 1 << (tamper % 8);
    Some(bad)
}

fn frontier(mut input: Input<'_>, width: usize) {
    let size = input.uint(width);
    let leaf = input.hash();
    let stack = input.hashes();
    let Ok(mut f) = Frontier::from_parts(size, stack.clone()) else {
        assert_ne!(stack.len(), size.count_ones() as usize);
        return;
    };
    assert_eq!(f.size(), size);
    assert_eq!(f.stack(), &stack[..]);
    let _ = f.root();
    match f.push(leaf) {
        Ok(i) => {
            assert_eq!(i, size);
            assert_eq!(f.size(), size + 1);
            assert_eq!(f.stack().len(), (size + 1).count_ones() as usize);
        }
        Err(e) => {
            assert_eq!(size, u64::MAX);
            assert_eq!(e, MerkleError::TreeFull);
        }
    }
    let _ = f.root();
}
