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

/// A private key as a key file: PKCS#8 **v1** (RFC 5208 `PrivateKeyInfo`: version 0, the RFC
/// 8410 Ed25519 algorithm identifier `1.3.101.112` without parameters, the 32-byte seed as an
/// OCTET STRING inside the `privateKey` OCTET STRING, no attributes and no public key), PEM
/// with the label `PRIVATE KEY`. The form OpenSSL, Go's `x509.ParsePKCS8PrivateKey`, Java and
/// Python's `cryptography` read (OpenSSL 3.0 refuses the v2 form with the public key).
/// Readers here accept v1 and v2.
pub fn private_key_pem(
    key: &ed25519_dalek::SigningKey,
) -> Result<ed25519_dalek::pkcs8::spki::der::zeroize::Zeroizing<String>, ed25519_dalek::pkcs8::Error>
{
    use ed25519_dalek::pkcs8::EncodePrivateKey as _;
    ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn key_files_are_pkcs8_v1() {
        use ed25519_dalek::pkcs8::DecodePrivateKey as _;
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let pem = super::private_key_pem(&key).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        // 30 2e 02 01 00 30 05 06 03 2b 65 70 04 22 04 20 <seed>: version 0, no public key.
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        use base64::Engine as _;
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(hex::encode(&der[..16]), "302e020100300506032b657004220420");
        assert_eq!(der[16..], [7; 32]);
        let back = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(back.to_bytes(), key.to_bytes());
    }
}
