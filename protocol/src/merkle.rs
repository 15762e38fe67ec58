//! RFC 6962 / RFC 9162 §2.1 Merkle tree hashing, inclusion and consistency proofs.
//!
//! ```text
//!  entry ─► leaf_hash ─► Frontier::push ─► Frontier::root ─► Checkpoint (note.rs)
//!                  └──► (node stores leaf hashes) ─► SubtreeHashes ─► inclusion_proof_with
//!                                                                   └► consistency_proof_with
//!  auditor / witness: verify_inclusion, verify_consistency (RFC 9162 §2.1.3.2, §2.1.4.2)
//! ```
//!
//! Hashing is RFC 6962: a leaf is `SHA-256(0x00 ‖ entry)`, an inner node is
//! `SHA-256(0x01 ‖ left ‖ right)`, and the empty tree is `SHA-256("")`. A tree of `n > 1` leaves
//! splits at `k`, the largest power of two below `n`.
//!
//! Verification is strict: a proof with the wrong number of hashes is refused before any hashing,
//! as are an index outside the tree, an old tree larger than the new one, and any proof where the
//! RFC 9162 algorithm stops early. Proof generation works over an in-memory slice of leaf hashes
//! or over any [`SubtreeHashes`] source (a store that can give the hash of a perfect subtree).

use sha2::{Digest as _, Sha256};

/// A SHA-256 tree hash (leaf hash, inner node hash or root).
pub type Hash = [u8; 32];

/// Root of the empty tree: `SHA-256("")`.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// Why a Merkle proof was refused, or could not be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is outside a tree of {size}")]
    IndexOutOfRange {
        /// The leaf index asked for.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// An inclusion proof with the wrong number of hashes (truncated or padded).
    #[error(
        "inclusion proof has {got} hashes, expected {expected} for index {index} in a tree of {size}"
    )]
    InclusionProofLength {
        /// Hashes in the proof.
        got: usize,
        /// Hashes a proof for this index and size has.
        expected: usize,
        /// The leaf index.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// The inclusion proof is well-formed but leads to another root: the leaf is not in the tree
    /// with that root (or the leaf, index, proof or root was altered).
    #[error("inclusion proof leads to root {}, not to the expected root {}", hex::encode(.computed), hex::encode(.expected))]
    InclusionRootMismatch {
        /// The root the proof leads to.
        computed: Hash,
        /// The root it should lead to.
        expected: Hash,
    },
    /// The old tree is larger than the new one: logs only grow.
    #[error("old tree size {old_size} is larger than new tree size {new_size}")]
    OldSizeLarger {
        /// Size of the old tree.
        old_size: u64,
        /// Size of the new tree.
        new_size: u64,
    },
    /// A consistency proof from the empty tree to a non-empty tree: every tree extends the empty
    /// tree, so such a proof proves nothing and callers handle a first sighting separately.
    #[error(
        "a consistency proof from the empty tree to size {new_size} proves nothing: \
         accept the first checkpoint of a log without one"
    )]
    FromEmptyTree {
        /// Size of the new tree.
        new_size: u64,
    },
    /// Two trees of the same size need an empty consistency proof.
    #[error("trees of equal size {size} need an empty consistency proof, got {got} hashes")]
    SameSizeProofNotEmpty {
        /// The tree size.
        size: u64,
        /// Hashes in the proof.
        got: usize,
    },
    /// Two different roots for one tree size: the log has forked (or a root was altered).
    #[error("two different roots for the same tree size {size}: the log forked or a root is wrong")]
    SameSizeRootsDiffer {
        /// The tree size.
        size: u64,
    },
    /// A root claimed for the empty tree that is not `SHA-256("")`.
    #[error("the root of the empty tree must be SHA-256(\"\") (e3b0c442…), got {}", hex::encode(.got))]
    EmptyTreeRoot {
        /// The root given.
        got: Hash,
    },
    /// A consistency proof with the wrong number of hashes (truncated or padded).
    #[error(
        "consistency proof has {got} hashes, expected {expected} from size {old_size} to size {new_size}"
    )]
    ConsistencyProofLength {
        /// Hashes in the proof.
        got: usize,
        /// Hashes a proof between these sizes has.
        expected: usize,
        /// Size of the old tree.
        old_size: u64,
        /// Size of the new tree.
        new_size: u64,
    },
    /// The consistency proof does not rebuild the old root: the old tree is not a prefix of the
    /// new one as proved (or the proof or old root was altered).
    #[error("consistency proof leads to old root {}, not to the expected old root {}", hex::encode(.computed), hex::encode(.expected))]
    OldRootMismatch {
        /// The old root the proof leads to.
        computed: Hash,
        /// The old root given.
        expected: Hash,
    },
    /// The consistency proof does not rebuild the new root: the new tree does not extend the old
    /// one (a fork or rewritten history), or the proof or new root was altered.
    #[error("consistency proof leads to new root {}, not to the expected new root {}", hex::encode(.computed), hex::encode(.expected))]
    NewRootMismatch {
        /// The new root the proof leads to.
        computed: Hash,
        /// The new root given.
        expected: Hash,
    },
    /// A subtree range outside the leaves a source holds.
    #[error("subtree range {start}..{end} is outside the {size} leaves available")]
    RangeOutOfBounds {
        /// First leaf of the range.
        start: u64,
        /// One past the last leaf of the range.
        end: u64,
        /// Leaves available.
        size: u64,
    },
    /// A frontier whose stored hashes do not match its size (a corrupted saved state).
    #[error("a frontier of size {size} holds {expected} hashes, got {got}")]
    FrontierShape {
        /// The tree size.
        size: u64,
        /// Hashes a frontier of that size holds (one per bit set in the size).
        expected: usize,
        /// Hashes given.
        got: usize,
    },
    /// The tree holds 2^64 - 1 leaves and cannot grow.
    #[error("the tree is full (2^64 - 1 leaves)")]
    TreeFull,
}

/// Hash of a log entry: `SHA-256(0x00 ‖ entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([LEAF_PREFIX]);
    h.update(entry);
    h.finalize().into()
}

/// Hash of an inner node: `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([NODE_PREFIX]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The Merkle tree hash (MTH) of a list of leaf hashes; [`EMPTY_ROOT`] for no leaves.
///
/// Runs in O(n) time and O(log n) memory.
pub fn root_from_leaves(leaf_hashes: &[Hash]) -> Hash {
    let mut frontier = Frontier::new();
    for leaf in leaf_hashes {
        frontier.push_unchecked(*leaf);
    }
    frontier.root()
}

/// A source of perfect subtree hashes, from which proofs are generated.
///
/// `subtree(start, end)` is only called for a *perfect, aligned* subtree: `end - start` is a power
/// of two `2^h` and `start` is a multiple of it, so the answer is the hash of the node at height
/// `h` (a leaf hash when `h = 0`). A store can keep those nodes, or compute them from leaf hashes.
/// The generators combine them into the hashes of ragged right edges themselves.
pub trait SubtreeHashes {
    /// Why a hash could not be obtained (a store read failure, say). It must be able to carry a
    /// [`MerkleError`] for invalid arguments.
    type Error: From<MerkleError>;

    /// The hash of the perfect subtree over leaves `start..end`.
    fn subtree(&self, start: u64, end: u64) -> Result<Hash, Self::Error>;
}

/// Leaf hashes held in memory.
impl SubtreeHashes for [Hash] {
    type Error = MerkleError;

    fn subtree(&self, start: u64, end: u64) -> Result<Hash, MerkleError> {
        let out_of_bounds = MerkleError::RangeOutOfBounds {
            start,
            end,
            size: self.len() as u64,
        };
        let (Ok(s), Ok(e)) = (usize::try_from(start), usize::try_from(end)) else {
            return Err(out_of_bounds);
        };
        match self.get(s..e) {
            Some(leaves) if !leaves.is_empty() => Ok(root_from_leaves(leaves)),
            _ => Err(out_of_bounds),
        }
    }
}

/// A [`SubtreeHashes`] source made from a closure `|start, end| -> Result<Hash, E>`.
#[derive(Debug, Clone, Copy)]
pub struct SubtreeFn<F>(pub F);

impl<F, E> SubtreeHashes for SubtreeFn<F>
where
    F: Fn(u64, u64) -> Result<Hash, E>,
    E: From<MerkleError>,
{
    type Error = E;

    fn subtree(&self, start: u64, end: u64) -> Result<Hash, E> {
        (self.0)(start, end)
    }
}

/// The Merkle tree hash of the first `size` leaves of `source` (at most `log2(size) + 1`
/// subtree lookups).
pub fn root_with<S>(source: &S, size: u64) -> Result<Hash, S::Error>
where
    S: SubtreeHashes + ?Sized,
{
    if size == 0 {
        return Ok(EMPTY_ROOT);
    }
    range_hash(source, 0, size)
}

/// The inclusion proof (audit path, leaf to root) of leaf `index` in the tree of all
/// `leaf_hashes`, as RFC 9162 §2.1.3.1 `PATH(index, D[n])`.
pub fn inclusion_proof(leaf_hashes: &[Hash], index: u64) -> Result<Vec<Hash>, MerkleError> {
    inclusion_proof_with(leaf_hashes, leaf_hashes.len() as u64, index)
}

/// The root of the tree of all `leaf_hashes` and the inclusion proof of every leaf, in
/// leaf order: each proof as [`inclusion_proof`] gives it, all of them with `n - 1` node
/// hashes and `O(n log n)` copies (one proof at a time from the leaves costs `O(n)` hashes
/// each).
pub fn all_inclusion_proofs(leaf_hashes: &[Hash]) -> (Hash, Vec<Vec<Hash>>) {
    // PATH(m, D[n]) is PATH(m, D[0:k]) : MTH(D[k:n]) for m < k, and PATH(m - k, D[k:n]) :
    // MTH(D[0:k]) otherwise (RFC 9162 §2.1.3.1): each half's proofs get the other's root.
    fn walk(leaves: &[Hash], proofs: &mut [Vec<Hash>]) -> Hash {
        match leaves {
            [] => EMPTY_ROOT,
            [leaf] => *leaf,
            _ => {
                let k = split_point(leaves.len() as u64) as usize;
                let (left, right) = leaves.split_at(k);
                let (lp, rp) = proofs.split_at_mut(k);
                let l = walk(left, lp);
                let r = walk(right, rp);
                lp.iter_mut().for_each(|p| p.push(r));
                rp.iter_mut().for_each(|p| p.push(l));
                node_hash(&l, &r)
            }
        }
    }
    let len = leaf_hashes.len() as u64;
    let mut proofs: Vec<Vec<Hash>> = (0..len)
        .map(|i| Vec::with_capacity(inclusion_proof_len(i, len)))
        .collect();
    let root = walk(leaf_hashes, &mut proofs);
    (root, proofs)
}

/// The inclusion proof of leaf `index` in the tree of the first `size` leaves of `source`.
///
/// Asks `source` for at most about `2·log2(size)` perfect subtrees.
pub fn inclusion_proof_with<S>(source: &S, size: u64, index: u64) -> Result<Vec<Hash>, S::Error>
where
    S: SubtreeHashes + ?Sized,
{
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size }.into());
    }
    // Walk down from the root; each step records the sibling subtree, so the list is root-first.
    let mut proof = Vec::with_capacity(inclusion_proof_len(index, size));
    let (mut start, mut end) = (0u64, size);
    while end - start > 1 {
        let k = split_point(end - start);
        if index < start + k {
            proof.push(range_hash(source, start + k, end)?);
            end = start + k;
        } else {
            proof.push(range_hash(source, start, start + k)?);
            start += k;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// The consistency proof from the tree of the first `old_size` leaves to the tree of all
/// `leaf_hashes`, as RFC 9162 §2.1.4.1 `PROOF(old_size, D[n])`.
pub fn consistency_proof(leaf_hashes: &[Hash], old_size: u64) -> Result<Vec<Hash>, MerkleError> {
    consistency_proof_with(leaf_hashes, old_size, leaf_hashes.len() as u64)
}

/// The consistency proof from the tree of the first `old_size` leaves of `source` to the tree of
/// its first `new_size` leaves. Equal sizes give an empty proof; `old_size` must be at least 1.
pub fn consistency_proof_with<S>(
    source: &S,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, S::Error>
where
    S: SubtreeHashes + ?Sized,
{
    if old_size > new_size {
        return Err(MerkleError::OldSizeLarger { old_size, new_size }.into());
    }
    if old_size == new_size {
        return Ok(Vec::new());
    }
    if old_size == 0 {
        return Err(MerkleError::FromEmptyTree { new_size }.into());
    }
    // SUBPROOF(m, D[start:end], b), unrolled; the list is built root-first.
    let mut proof = Vec::with_capacity(consistency_proof_len(old_size, new_size));
    let (mut start, mut end) = (0u64, new_size);
    let mut whole_old_tree = true; // RFC 9162 `b`: the old tree is still the whole subtree so far
    loop {
        let n = end - start;
        let m = old_size - start;
        if m == n {
            if !whole_old_tree {
                proof.push(range_hash(source, start, end)?);
            }
            break;
        }
        let k = split_point(n);
        if m <= k {
            proof.push(range_hash(source, start + k, end)?);
            end = start + k;
        } else {
            proof.push(range_hash(source, start, start + k)?);
            start += k;
            whole_old_tree = false;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// Checks that `leaf_hash` is leaf `index` of the tree of `size` leaves with root `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), MerkleError> {
    let computed = root_from_inclusion_proof(leaf_hash, index, size, proof)?;
    if computed == *root {
        Ok(())
    } else {
        Err(MerkleError::InclusionRootMismatch {
            computed,
            expected: *root,
        })
    }
}

/// The root that an inclusion proof leads to, for leaf `index` of a tree of `size` leaves
/// (RFC 9162 §2.1.3.2 steps 1 to 5). Compare it with a trusted root, or use [`verify_inclusion`].
pub fn root_from_inclusion_proof(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
) -> Result<Hash, MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let expected = inclusion_proof_len(index, size);
    let length_error = MerkleError::InclusionProofLength {
        got: proof.len(),
        expected,
        index,
        size,
    };
    if proof.len() != expected {
        return Err(length_error);
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf_hash;
    for p in proof {
        if s_n == 0 {
            return Err(length_error);
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(length_error);
    }
    Ok(r)
}

/// Checks that the tree of `new_size` leaves with root `new_root` extends the tree of `old_size`
/// leaves with root `old_root` (RFC 9162 §2.1.4.2).
///
/// Equal sizes need an empty proof and equal roots (and, for size 0, the empty-tree root).
/// `old_size == 0 < new_size` is refused ([`MerkleError::FromEmptyTree`]): a witness that sees a
/// log for the first time has nothing to check and must not call this.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), MerkleError> {
    if old_size > new_size {
        return Err(MerkleError::OldSizeLarger { old_size, new_size });
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(MerkleError::SameSizeProofNotEmpty {
                size: old_size,
                got: proof.len(),
            });
        }
        if old_size == 0 {
            for root in [old_root, new_root] {
                if *root != EMPTY_ROOT {
                    return Err(MerkleError::EmptyTreeRoot { got: *root });
                }
            }
        }
        if old_root != new_root {
            return Err(MerkleError::SameSizeRootsDiffer { size: old_size });
        }
        return Ok(());
    }
    if old_size == 0 {
        return Err(MerkleError::FromEmptyTree { new_size });
    }
    let expected = consistency_proof_len(old_size, new_size);
    let length_error = MerkleError::ConsistencyProofLength {
        got: proof.len(),
        expected,
        old_size,
        new_size,
    };
    // Step 1: an empty proof fails (expected is at least 1 here).
    if proof.len() != expected {
        return Err(length_error);
    }
    // Step 2: when the old tree is a perfect subtree, its root is the first path element.
    let first = old_size.is_power_of_two().then_some(old_root);
    let mut path = first.into_iter().chain(proof);
    // Step 3, 4.
    let (mut f_n, mut s_n) = (old_size - 1, new_size - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    // Step 5.
    let Some(&seed) = path.next() else {
        return Err(length_error);
    };
    let (mut f_r, mut s_r) = (seed, seed);
    // Step 6.
    for c in path {
        if s_n == 0 {
            return Err(length_error);
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    // Step 7.
    if s_n != 0 {
        return Err(length_error);
    }
    if f_r != *old_root {
        return Err(MerkleError::OldRootMismatch {
            computed: f_r,
            expected: *old_root,
        });
    }
    if s_r != *new_root {
        return Err(MerkleError::NewRootMismatch {
            computed: s_r,
            expected: *new_root,
        });
    }
    Ok(())
}

/// Number of hashes in the inclusion proof of leaf `index` in a tree of `size` (0 when `index`
/// is outside the tree, which has no proof).
pub fn inclusion_proof_len(index: u64, size: u64) -> usize {
    if index >= size {
        return 0;
    }
    // Levels where the paths to `index` and to the last leaf differ always have a sibling
    // ("inner"); above them, the path follows the right border and has a sibling wherever the
    // index has a left neighbour ("border").
    let inner = 64 - (index ^ (size - 1)).leading_zeros();
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner + border) as usize
}

/// Number of hashes in the consistency proof from `old_size` to `new_size` (0 when the sizes
/// are equal, or when no proof exists).
pub fn consistency_proof_len(old_size: u64, new_size: u64) -> usize {
    if old_size == 0 || old_size >= new_size {
        return 0;
    }
    // The proof is the inclusion path of the old tree's last leaf, minus the levels inside the
    // old tree's rightmost perfect subtree, plus that subtree's root unless it is the whole old
    // tree (whose root the verifier already has).
    let shift = old_size.trailing_zeros();
    let full = inclusion_proof_len(old_size - 1, new_size);
    let own_root = usize::from(!old_size.is_power_of_two());
    full - shift as usize + own_root
}

/// The RFC 6962 split point of a tree of `n > 1` leaves: the largest power of two below `n`.
fn split_point(n: u64) -> u64 {
    debug_assert!(n > 1);
    1u64 << (n - 1).ilog2()
}

/// The Merkle tree hash of leaves `start..end` of an aligned range (one that appears while
/// splitting a tree: `start` is a multiple of a power of two at least `end - start`), from the
/// perfect subtrees that make it up, largest first.
fn range_hash<S>(source: &S, start: u64, end: u64) -> Result<Hash, S::Error>
where
    S: SubtreeHashes + ?Sized,
{
    let mut parts = Vec::with_capacity((end - start).count_ones() as usize);
    let mut pos = start;
    while pos < end {
        let width = 1u64 << (end - pos).ilog2();
        parts.push(source.subtree(pos, pos + width)?);
        pos += width;
    }
    Ok(fold_right(&parts).unwrap_or(EMPTY_ROOT))
}

/// Combines perfect subtree hashes, largest (leftmost) first, into the hash of their union.
fn fold_right(parts: &[Hash]) -> Option<Hash> {
    let (last, rest) = parts.split_last()?;
    Some(
        rest.iter()
            .rev()
            .fold(*last, |acc, left| node_hash(left, &acc)),
    )
}

/// The right edge of a growing tree: the roots of its perfect subtrees, one per bit set in its
/// size, largest first. Lets a log append leaves one by one and get the current root in
/// O(log n) memory, or a verifier rebuild the root of a million-entry log in one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    stack: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Restores a saved frontier: `stack` holds the perfect subtree roots, largest first, one
    /// for each bit set in `size`.
    pub fn from_parts(size: u64, stack: Vec<Hash>) -> Result<Self, MerkleError> {
        let expected = size.count_ones() as usize;
        if stack.len() != expected {
            return Err(MerkleError::FrontierShape {
                size,
                expected,
                got: stack.len(),
            });
        }
        Ok(Self { size, stack })
    }

    /// Number of leaves so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The perfect subtree roots, largest (leftmost) first; with [`Self::size`], what
    /// [`Self::from_parts`] takes back.
    pub fn stack(&self) -> &[Hash] {
        &self.stack
    }

    /// Appends a leaf hash and returns its index.
    pub fn push(&mut self, leaf_hash: Hash) -> Result<u64, MerkleError> {
        if self.size == u64::MAX {
            return Err(MerkleError::TreeFull);
        }
        Ok(self.push_unchecked(leaf_hash))
    }

    /// Appends a leaf hash and tells `on_node` every interior node the leaf completes, as
    /// `(height, index, hash)`: the perfect subtree over leaves `index·2^height ..
    /// (index+1)·2^height`. A store that keeps those nodes can answer every
    /// [`SubtreeHashes::subtree`] call with one lookup. Returns the leaf's index.
    pub fn push_with_nodes(
        &mut self,
        leaf_hash: Hash,
        mut on_node: impl FnMut(u32, u64, &Hash),
    ) -> Result<u64, MerkleError> {
        if self.size == u64::MAX {
            return Err(MerkleError::TreeFull);
        }
        let index = self.size;
        let mut h = leaf_hash;
        // Each trailing 1 bit of the old size is a perfect subtree that the new leaf completes.
        let mut carry = index;
        let mut height = 0u32;
        while carry & 1 == 1 {
            match self.stack.pop() {
                Some(left) => h = node_hash(&left, &h),
                None => break, // unreachable: the stack has one hash per bit set
            }
            carry >>= 1;
            height += 1;
            on_node(height, index >> height, &h);
        }
        self.stack.push(h);
        self.size = index.wrapping_add(1);
        Ok(index)
    }

    /// Appends a leaf hash; the caller knows the size is below `u64::MAX`.
    fn push_unchecked(&mut self, leaf_hash: Hash) -> u64 {
        let index = self.size;
        let mut h = leaf_hash;
        // Each trailing 1 bit of the old size is a perfect subtree that the new leaf completes.
        let mut carry = index;
        while carry & 1 == 1 {
            match self.stack.pop() {
                Some(left) => h = node_hash(&left, &h),
                None => break, // unreachable: the stack has one hash per bit set
            }
            carry >>= 1;
        }
        self.stack.push(h);
        self.size = index.wrapping_add(1);
        index
    }

    /// The frontier of the first `size` leaves of `source`: one perfect subtree per bit set in
    /// `size`, so `popcount(size)` lookups.
    pub fn from_source<S>(source: &S, size: u64) -> Result<Self, S::Error>
    where
        S: SubtreeHashes + ?Sized,
    {
        let mut stack = Vec::with_capacity(size.count_ones() as usize);
        let mut pos = 0u64;
        while pos < size {
            let width = 1u64 << (size - pos).ilog2();
            stack.push(source.subtree(pos, pos + width)?);
            pos += width;
        }
        Ok(Self { size, stack })
    }

    /// The Merkle tree hash of the leaves so far ([`EMPTY_ROOT`] when there are none).
    pub fn root(&self) -> Hash {
        fold_right(&self.stack).unwrap_or(EMPTY_ROOT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn all_inclusion_proofs_are_the_proofs_one_at_a_time() {
        for n in 0..=70u64 {
            let l = leaves(n);
            let (root, proofs) = all_inclusion_proofs(&l);
            assert_eq!(root, root_from_leaves(&l), "n = {n}");
            assert_eq!(proofs.len() as u64, n);
            for (i, p) in proofs.iter().enumerate() {
                assert_eq!(
                    *p,
                    inclusion_proof(&l, i as u64).unwrap(),
                    "n = {n}, i = {i}"
                );
            }
        }
    }

    /// The RFC 6962 recursive definition, written plainly, to check the iterative code against.
    fn mth(d: &[Hash]) -> Hash {
        match d.len() {
            0 => EMPTY_ROOT,
            1 => d[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&mth(&d[..k]), &mth(&d[k..]))
            }
        }
    }

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(EMPTY_ROOT, <[u8; 32]>::from(Sha256::digest(b"")));
        assert_eq!(root_from_leaves(&[]), EMPTY_ROOT);
    }

    #[test]
    fn split_points() {
        let cases = [
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 4),
            (8, 4),
            (9, 8),
            (1 << 40, 1 << 39),
        ];
        for (n, k) in cases {
            assert_eq!(split_point(n), k, "n = {n}");
        }
        assert_eq!(split_point(u64::MAX), 1 << 63);
    }

    #[test]
    fn roots_match_the_recursive_definition() {
        for n in 0..70 {
            let d = leaves(n);
            assert_eq!(root_from_leaves(&d), mth(&d), "n = {n}");
        }
    }

    #[test]
    fn frontier_matches_root_from_leaves_at_every_size() {
        let d = leaves(300);
        let mut f = Frontier::new();
        assert_eq!(f.root(), EMPTY_ROOT);
        for (i, leaf) in d.iter().enumerate() {
            assert_eq!(f.push(*leaf).unwrap(), i as u64);
            assert_eq!(f.size(), i as u64 + 1);
            assert_eq!(f.stack().len(), f.size().count_ones() as usize);
            assert_eq!(f.root(), mth(&d[..=i]), "size {}", i + 1);
        }
        let restored = Frontier::from_parts(f.size(), f.stack().to_vec()).unwrap();
        assert_eq!(restored, f);
    }

    #[test]
    fn frontier_refuses_bad_shapes() {
        assert_eq!(
            Frontier::from_parts(3, vec![EMPTY_ROOT]),
            Err(MerkleError::FrontierShape {
                size: 3,
                expected: 2,
                got: 1
            })
        );
        let mut full = Frontier::from_parts(u64::MAX, vec![EMPTY_ROOT; 64]).unwrap();
        assert_eq!(full.push(EMPTY_ROOT), Err(MerkleError::TreeFull));
    }

    #[test]
    fn proof_lengths_match_generated_proofs() {
        for n in 1..70u64 {
            let d = leaves(n);
            for i in 0..n {
                assert_eq!(
                    inclusion_proof(&d, i).unwrap().len(),
                    inclusion_proof_len(i, n)
                );
            }
            for m in 1..=n {
                assert_eq!(
                    consistency_proof(&d, m).unwrap().len(),
                    consistency_proof_len(m, n)
                );
            }
        }
    }

    #[test]
    fn generation_refuses_bad_arguments() {
        let d = leaves(5);
        assert_eq!(
            inclusion_proof(&d, 5),
            Err(MerkleError::IndexOutOfRange { index: 5, size: 5 })
        );
        assert_eq!(
            inclusion_proof(&[], 0),
            Err(MerkleError::IndexOutOfRange { index: 0, size: 0 })
        );
        assert_eq!(
            consistency_proof(&d, 6),
            Err(MerkleError::OldSizeLarger {
                old_size: 6,
                new_size: 5
            })
        );
        assert_eq!(
            consistency_proof(&d, 0),
            Err(MerkleError::FromEmptyTree { new_size: 5 })
        );
        assert_eq!(consistency_proof(&d, 5), Ok(vec![]));
        // A slice source asked for more leaves than it holds says so instead of panicking.
        assert!(matches!(
            inclusion_proof_with(&d[..], 8, 7),
            Err(MerkleError::RangeOutOfBounds { size: 5, .. })
        ));
    }

    #[test]
    fn closure_source_only_gets_perfect_aligned_subtrees() {
        let d = leaves(37);
        let source = SubtreeFn(|start: u64, end: u64| -> Result<Hash, MerkleError> {
            let width = end - start;
            assert!(
                width.is_power_of_two() && start % width == 0,
                "{start}..{end}"
            );
            d[..].subtree(start, end)
        });
        for i in 0..37 {
            assert_eq!(
                inclusion_proof_with(&source, 37, i).unwrap(),
                inclusion_proof(&d, i).unwrap()
            );
        }
        for m in 1..=37 {
            assert_eq!(
                consistency_proof_with(&source, m, 37).unwrap(),
                consistency_proof(&d, m).unwrap()
            );
        }
    }

    #[test]
    fn error_messages_are_precise() {
        let d = leaves(8);
        let proof = inclusion_proof(&d, 5).unwrap();
        let err = verify_inclusion(&d[5], 5, 8, &proof[..2], &root_from_leaves(&d)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "inclusion proof has 2 hashes, expected 3 for index 5 in a tree of 8"
        );
        let err = verify_consistency(3, 2, &EMPTY_ROOT, &EMPTY_ROOT, &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "old tree size 3 is larger than new tree size 2"
        );
    }

    #[test]
    fn verification_edge_cases() {
        let d = leaves(8);
        let root = root_from_leaves(&d);
        let r3 = root_from_leaves(&d[..3]);
        // Index outside the tree, even with a "proof".
        assert!(matches!(
            verify_inclusion(&d[0], 8, 8, &[], &root),
            Err(MerkleError::IndexOutOfRange { .. })
        ));
        assert!(matches!(
            verify_inclusion(&d[0], u64::MAX, 0, &[], &root),
            Err(MerkleError::IndexOutOfRange { .. })
        ));
        // Equal sizes.
        assert_eq!(verify_consistency(8, 8, &root, &root, &[]), Ok(()));
        assert_eq!(
            verify_consistency(8, 8, &root, &r3, &[]),
            Err(MerkleError::SameSizeRootsDiffer { size: 8 })
        );
        assert_eq!(
            verify_consistency(8, 8, &root, &root, &[root]),
            Err(MerkleError::SameSizeProofNotEmpty { size: 8, got: 1 })
        );
        assert_eq!(
            verify_consistency(0, 0, &EMPTY_ROOT, &EMPTY_ROOT, &[]),
            Ok(())
        );
        assert!(matches!(
            verify_consistency(0, 0, &root, &root, &[]),
            Err(MerkleError::EmptyTreeRoot { .. })
        ));
        // From the empty tree: refused with or without a proof.
        assert_eq!(
            verify_consistency(0, 8, &EMPTY_ROOT, &root, &[]),
            Err(MerkleError::FromEmptyTree { new_size: 8 })
        );
        assert_eq!(
            verify_consistency(0, 8, &EMPTY_ROOT, &root, &[root]),
            Err(MerkleError::FromEmptyTree { new_size: 8 })
        );
        // Swapped roots.
        let proof = consistency_proof(&d, 3).unwrap();
        assert_eq!(verify_consistency(3, 8, &r3, &root, &proof), Ok(()));
        assert!(verify_consistency(3, 8, &root, &r3, &proof).is_err());
        assert!(verify_consistency(8, 3, &root, &r3, &proof).is_err());
        // An empty proof between different sizes.
        assert!(matches!(
            verify_consistency(3, 8, &r3, &root, &[]),
            Err(MerkleError::ConsistencyProofLength { .. })
        ));
    }

    #[test]
    fn huge_sizes_do_not_overflow() {
        // Only the arithmetic is exercised: the proofs are of the right length but wrong.
        let h = [7u8; 32];
        let n = u64::MAX;
        let len = inclusion_proof_len(n - 1, n);
        // 2^64 - 1 leaves make 64 perfect subtrees; the last leaf is the smallest, alone, and
        // its path has the other 63 as siblings.
        assert_eq!(len, 63);
        let proof = vec![h; len];
        assert!(matches!(
            verify_inclusion(&h, n - 1, n, &proof, &h),
            Err(MerkleError::InclusionRootMismatch { .. })
        ));
        let len = consistency_proof_len(n - 1, n);
        let proof = vec![h; len];
        assert!(verify_consistency(n - 1, n, &h, &h, &proof).is_err());
        assert!(verify_consistency(1, n, &h, &h, &vec![h; consistency_proof_len(1, n)]).is_err());
    }

    /// Flips bit `bit` (0..256) of hash `which` of a proof.
    fn flipped(proof: &[Hash], which: usize, bit: usize) -> Vec<Hash> {
        let mut p = proof.to_vec();
        p[which][bit / 8] ^= 1 << (bit % 8);
        p
    }

    /// Every perfect subtree hash of a tree, level by level, as a store would keep them.
    fn levels(leaves: &[Hash]) -> Vec<Vec<Hash>> {
        let mut levels = vec![leaves.to_vec()];
        while let Some(below) = levels.last().filter(|l| l.len() > 1) {
            let above = below
                .chunks_exact(2)
                .map(|p| node_hash(&p[0], &p[1]))
                .collect();
            levels.push(above);
        }
        levels
    }

    #[test]
    fn every_bit_of_every_proof_matters() {
        let n = 11u64;
        let d = leaves(n);
        let root = root_from_leaves(&d);
        for i in 0..n {
            let proof = inclusion_proof(&d, i).unwrap();
            for (which, bit) in (0..proof.len()).flat_map(|w| (0..256).map(move |b| (w, b))) {
                let bad = flipped(&proof, which, bit);
                assert!(verify_inclusion(&d[i as usize], i, n, &bad, &root).is_err());
            }
        }
        for m in 1..n {
            let old_root = root_from_leaves(&d[..m as usize]);
            let proof = consistency_proof(&d, m).unwrap();
            for (which, bit) in (0..proof.len()).flat_map(|w| (0..256).map(move |b| (w, b))) {
                let bad = flipped(&proof, which, bit);
                assert!(verify_consistency(m, n, &old_root, &root, &bad).is_err());
            }
        }
    }

    /// The nodes `push_with_nodes` reports are exactly the perfect subtrees of the tree, each
    /// once, and a frontier or root rebuilt from them equals the one built leaf by leaf.
    #[test]
    fn pushed_nodes_are_the_perfect_subtrees() {
        let d = leaves(300);
        let levels = levels(&d);
        let mut nodes = std::collections::HashMap::new();
        let mut frontier = Frontier::new();
        for leaf in &d {
            frontier
                .push_with_nodes(*leaf, |h, i, hash| {
                    assert!(
                        nodes.insert((h, i), *hash).is_none(),
                        "node ({h}, {i}) twice"
                    );
                })
                .unwrap();
        }
        let expected: usize = (1..levels.len()).map(|h| levels[h].len()).sum();
        assert_eq!(nodes.len(), expected);
        for (h, level) in levels.iter().enumerate().skip(1) {
            for (i, hash) in level.iter().enumerate() {
                assert_eq!(nodes[&(h as u32, i as u64)], *hash, "node ({h}, {i})");
            }
        }
        let source = SubtreeFn(|start: u64, end: u64| -> Result<Hash, MerkleError> {
            let h = (end - start).trailing_zeros();
            Ok(if h == 0 {
                d[start as usize]
            } else {
                nodes[&(h, start >> h)]
            })
        });
        for n in 0..=300u64 {
            let rebuilt = Frontier::from_source(&source, n).unwrap();
            assert_eq!(
                rebuilt.root(),
                root_from_leaves(&d[..n as usize]),
                "n = {n}"
            );
            assert_eq!(root_with(&source, n).unwrap(), rebuilt.root(), "n = {n}");
        }
        assert_eq!(Frontier::from_source(&source, 300).unwrap(), frontier);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// For a random size, every inclusion and consistency proof verifies, and flipping a
        /// random bit of any one of its hashes makes it fail. (A SHA-256 input changes whichever
        /// bit flips, so one random bit per hash stands for all 256; the test above flips every
        /// bit of every proof of one tree.)
        #[test]
        fn every_generated_proof_verifies_and_flipped_ones_do_not(
            n in 1u64..200,
            seed in any::<u64>(),
            bits in proptest::collection::vec(0usize..256, 16),
        ) {
            let d: Vec<Hash> = (0..n)
                .map(|i| leaf_hash(&[seed.to_be_bytes(), i.to_be_bytes()].concat()))
                .collect();
            let levels = levels(&d);
            let store = SubtreeFn(|start: u64, end: u64| -> Result<Hash, MerkleError> {
                let height = (end - start).trailing_zeros();
                Ok(levels[height as usize][(start >> height) as usize])
            });
            let mut prefix_roots = vec![EMPTY_ROOT];
            let mut frontier = Frontier::new();
            for leaf in &d {
                frontier.push(*leaf).unwrap();
                prefix_roots.push(frontier.root());
            }
            let root = root_from_leaves(&d);
            prop_assert_eq!(frontier.root(), root);

            for i in 0..n {
                let proof = inclusion_proof_with(&store, n, i).unwrap();
                let leaf = &d[i as usize];
                prop_assert_eq!(verify_inclusion(leaf, i, n, &proof, &root), Ok(()));
                for (which, bit) in bits.iter().enumerate().take(proof.len()) {
                    let bad = flipped(&proof, which, *bit);
                    prop_assert!(verify_inclusion(leaf, i, n, &bad, &root).is_err());
                }
            }
            for m in 1..=n {
                let old_root = &prefix_roots[m as usize];
                let proof = consistency_proof_with(&store, m, n).unwrap();
                prop_assert_eq!(verify_consistency(m, n, old_root, &root, &proof), Ok(()));
                for (which, bit) in bits.iter().enumerate().take(proof.len()) {
                    let bad = flipped(&proof, which, *bit);
                    prop_assert!(verify_consistency(m, n, old_root, &root, &bad).is_err());
                }
            }
        }
    }
}
