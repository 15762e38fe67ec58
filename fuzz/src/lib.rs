//! Fixtures shared by the `liaison-protocol` fuzz targets (`fuzz_targets/`) and the seed
//! generator (`examples/gen_seeds.rs`).
//!
//! Every signed object a fuzz target opens is checked against one fixed test key, so the seed
//! corpus (signed with that key) gets through signature verification, and a target can also sign
//! its input as a *payload* to reach the private payload decoders (receipt, non-delivery record,
//! roster) through the public API.

use ed25519_dalek::SigningKey;
use liaison_protocol::keys::Kid;
use liaison_protocol::{NodeId, PublicKey};

/// Seed of the test key that signs envelopes, receipts, non-delivery records, rosters (as the
/// federation authority) and checkpoints (as the log key). Never a real key.
pub const SIGNER_SEED: [u8; 32] = [0x5a; 32];

/// Seed of the test witness key (tlog-cosignature/v1).
pub const WITNESS_SEED: [u8; 32] = [0xa5; 32];

/// The node that owns [`SIGNER_SEED`].
pub const SIGNER_NODE: &str = "fuzz-node";

/// Key name of the log key in checkpoint notes.
pub const LOG_NAME: &str = "fuzz-node/log";

/// Key name of the witness in cosignatures.
pub const WITNESS_NAME: &str = "fuzz-witness/witness";

/// The test signing key.
pub fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&SIGNER_SEED)
}

/// Its public key.
pub fn public_key() -> PublicKey {
    PublicKey::from(&signing_key())
}

/// A one-member roster: `fuzz-node` (a public-security node in CHN) with the test key as its
/// node, log and witness key; officer credentials signed with the test key verify against it.
pub fn roster() -> liaison_protocol::Roster {
    use liaison_protocol::{Location, Member, MemberStatus, Roster};
    Roster {
        federation: "fuzz-fed".into(),
        serial: 1,
        issued_at: 0,
        valid_until: None,
        members: vec![Member {
            id: signer_node(),
            agency: "public_security".into(),
            name: "fuzz node".into(),
            country: "CHN".into(),
            division: None,
            signing_key: public_key(),
            log_key: public_key(),
            witness_key: PublicKey::from(&witness_key()),
            tls_spki_sha256: [0; 32],
            endpoints: Vec::new(),
            via: None,
            location: Some(Location {
                lat_e6: 34_341_600,
                lon_e6: 108_939_800,
            }),
            status: MemberStatus::Active,
            previous: None,
            tls_cert: None,
        }],
        rules: Vec::new(),
        max_body_len: 1 << 20,
        dev: true,
        next_authority: None,
    }
}

/// The test witness key.
pub fn witness_key() -> SigningKey {
    SigningKey::from_bytes(&WITNESS_SEED)
}

/// The node id [`SIGNER_NODE`].
pub fn signer_node() -> NodeId {
    // A constant that satisfies the node id syntax; checked by the seed generator too.
    NodeId::new(SIGNER_NODE).unwrap_or_else(|e| panic!("fixture node id: {e}"))
}

/// The `signer` callback of the `open` functions: the test key is the only known signer, owned
/// by [`SIGNER_NODE`].
pub fn signer(kid: &Kid) -> Option<(NodeId, PublicKey)> {
    let pk = public_key();
    (pk.kid() == *kid).then(|| (signer_node(), pk))
}

/// A little-endian reader over fuzz input; reads past the end yield zeros, so every input maps
/// to some value.
#[derive(Debug)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads from `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// The next byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    /// The next `width` bytes (1..=8) as a little-endian u64.
    pub fn uint(&mut self, width: usize) -> u64 {
        let mut v = [0u8; 8];
        for b in v.iter_mut().take(width.clamp(1, 8)) {
            *b = self.u8();
        }
        u64::from_le_bytes(v)
    }

    /// The next 32 bytes (zero-padded past the end).
    pub fn hash(&mut self) -> [u8; 32] {
        let mut h = [0u8; 32];
        for b in &mut h {
            *b = self.u8();
        }
        h
    }

    /// The rest as whole 32-byte hashes (a trailing partial hash is dropped).
    pub fn hashes(self) -> Vec<[u8; 32]> {
        self.data
            .chunks_exact(32)
            .map(|c| {
                let mut h = [0u8; 32];
                h.copy_from_slice(c);
                h
            })
            .collect()
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.data
    }
}

/// Width in bytes of the sizes and indices a `merkle` input encodes, from the mode byte's bits
/// 2..4: 1, 2, 4 or 8 bytes. Small widths make proof lengths that match the sizes likely.
pub fn merkle_width(mode: u8) -> usize {
    [1, 2, 4, 8][usize::from((mode >> 2) & 3)]
}
