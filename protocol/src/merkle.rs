//! RFC 6962 / RFC 9162 §2.1 Merkle tree hashing, inclusion and consistency proofs.
