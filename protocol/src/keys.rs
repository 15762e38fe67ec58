//! Ed25519 public keys, registered strictly: weak (small-order) and non-canonical keys are
//! refused, and signatures are checked only with `verify_strict`.

use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use sha2::{Digest as _, Sha256};

use crate::error::VerifyError;

/// The 8-byte COSE `kid` of a key: the first 8 bytes of SHA-256 of the public key.
pub type Kid = [u8; 8];

/// An Ed25519 public key that passed registration checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Registers a key: refuses non-canonical encodings and small-order points.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, VerifyError> {
        let vk = VerifyingKey::from_bytes(bytes)
            .map_err(|_| VerifyError::WeakKey("not a valid curve point"))?;
        if vk.to_edwards().compress().to_bytes() != *bytes {
            return Err(VerifyError::WeakKey("not canonically encoded"));
        }
        if vk.is_weak() {
            return Err(VerifyError::WeakKey("small-order point"));
        }
        Ok(Self(vk))
    }

    /// The key as raw bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The COSE key id of this key.
    pub fn kid(&self) -> Kid {
        kid_of(&self.0.to_bytes())
    }

    /// Verifies with `verify_strict` (no malleable or small-order signatures).
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), VerifyError> {
        let sig: [u8; 64] = sig.try_into().map_err(|_| VerifyError::BadSignature)?;
        let sig = Signature::from_bytes(&sig);
        self.0
            .verify_strict(msg, &sig)
            .map_err(|_| VerifyError::BadSignature)
    }

    /// Plain (non-strict) check; only for comparing behaviour in tests.
    #[doc(hidden)]
    pub fn verify_lenient(&self, msg: &[u8], sig: &[u8; 64]) -> bool {
        self.0.verify(msg, &Signature::from_bytes(sig)).is_ok()
    }

    /// The underlying dalek key.
    pub fn as_dalek(&self) -> &VerifyingKey {
        &self.0
    }
}

impl From<&ed25519_dalek::SigningKey> for PublicKey {
    fn from(sk: &ed25519_dalek::SigningKey) -> Self {
        Self(sk.verifying_key())
    }
}

/// The COSE key id for raw public key bytes.
pub fn kid_of(public: &[u8; 32]) -> Kid {
    let h = Sha256::digest(public);
    let mut kid = [0u8; 8];
    kid.copy_from_slice(&h[..8]);
    kid
}
