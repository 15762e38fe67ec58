//! COSE_Sign1 (RFC 9052) in the liaison profile: Ed25519 (`alg = -19`), protected header
//! exactly `{1: -19, 4: kid, 16: typ}`, empty unprotected header, embedded payload, tag 18.
//!
//! [`SignedObject::parse`] checks the structure strictly but no signature; callers then check
//! `typ` with [`SignedObject::expect_typ`] and the signature with [`SignedObject::verify_with`]
//! before they read the payload.

use ciborium::Value;
use coset::{
    AsCborValue as _, CoseSign1, CoseSign1Builder, HeaderBuilder, TaggedCborSerializable as _, iana,
};
use ed25519_dalek::{Signer as _, SigningKey};

use crate::cbor;
use crate::error::{DecodeError, VerifyError};
use crate::ids::Digest;
use crate::keys::{Kid, PublicKey, kid_of};

/// `typ` of a message envelope.
pub const TYP_MESSAGE: &str = "application/vnd.liaison.msg+cbor";
/// `typ` of a delivery receipt.
pub const TYP_RECEIPT: &str = "application/vnd.liaison.receipt+cbor";
/// `typ` of a receipt batch: the recipient's signature over the receipts of one group commit.
pub const TYP_RECEIPT_BATCH: &str = "application/vnd.liaison.receipt-batch+cbor";
/// `typ` of a non-delivery record (message expired before delivery).
pub const TYP_NONDELIVERY: &str = "application/vnd.liaison.nondelivery+cbor";
/// `typ` of the federation roster.
pub const TYP_ROSTER: &str = "application/vnd.liaison.roster+cbor";
/// `typ` of an officer-signed action (a message body).
pub const TYP_ACTION: &str = "application/vnd.liaison.action+cbor";

const COSE_SIGN1_TAG: u64 = 18;
const LABEL_TYP: i64 = 16;

/// A parsed COSE_Sign1 whose signature has not been checked yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedObject {
    bytes: Vec<u8>,
    protected: Vec<u8>,
    kid: Kid,
    typ: String,
    payload: Vec<u8>,
    signature: [u8; 64],
    digest: Digest,
}

impl SignedObject {
    /// Signs `payload` as an object of type `typ`.
    pub fn sign(typ: &str, payload: Vec<u8>, key: &SigningKey) -> Self {
        let kid = kid_of(&key.verifying_key().to_bytes());
        let protected = HeaderBuilder::new()
            .algorithm(iana::Algorithm::Ed25519)
            .key_id(kid.to_vec())
            .value(LABEL_TYP, Value::Text(typ.to_owned()))
            .build();
        let sign1 = CoseSign1Builder::new()
            .protected(protected)
            .payload(payload)
            .create_signature(b"", |tbs| key.sign(tbs).to_bytes().to_vec())
            .build();
        let protected_bytes = expected_protected(&kid, typ);
        let tbs = sign1.tbs_data(b"");
        let signature: [u8; 64] = sign1.signature.clone().try_into().unwrap_or([0; 64]);
        let payload = sign1.payload.clone().unwrap_or_default();
        let bytes = sign1.to_tagged_vec().unwrap_or_default();
        Self {
            bytes,
            protected: protected_bytes,
            kid,
            typ: typ.to_owned(),
            payload,
            signature,
            digest: Digest::of(&tbs),
        }
    }

    /// Parses a COSE_Sign1 of at most `cap` bytes in the liaison profile. Checks structure and
    /// encoding only: no signature, no `typ`.
    pub fn parse(bytes: &[u8], cap: usize) -> Result<Self, VerifyError> {
        // Decoded once: the strict decoder's value is the one coset reads the structure from.
        let shape = || DecodeError::Shape {
            object: "COSE_Sign1",
            expected: "tag 18 [protected, unprotected, payload, signature]",
        };
        let inner = match cbor::decode_strict(bytes, cap, Some(COSE_SIGN1_TAG))? {
            Value::Tag(COSE_SIGN1_TAG, inner) => *inner,
            _ => return Err(shape().into()),
        };
        let mut sign1 = CoseSign1::from_cbor_value(inner).map_err(|_| shape())?;
        let protected = sign1
            .protected
            .original_data
            .clone()
            .ok_or(VerifyError::Header("missing"))?;
        if !sign1.unprotected.is_empty() {
            return Err(VerifyError::Header("unprotected header must be empty"));
        }
        let header = &sign1.protected.header;
        if header.alg != Some(coset::Algorithm::Assigned(iana::Algorithm::Ed25519)) {
            return Err(VerifyError::Header("alg must be -19 (Ed25519)"));
        }
        let kid: Kid = header
            .key_id
            .clone()
            .try_into()
            .map_err(|_| VerifyError::Header("kid must be 8 bytes"))?;
        let typ = header
            .rest
            .iter()
            .find_map(|(label, v)| match (label, v) {
                (coset::Label::Int(LABEL_TYP), Value::Text(t)) => Some(t.clone()),
                _ => None,
            })
            .ok_or(VerifyError::Header("typ must be a text string"))?;
        // Exactly {1: -19, 4: kid, 16: typ} in that order, deterministically encoded.
        if protected != expected_protected(&kid, &typ) {
            return Err(VerifyError::Header(
                "must be exactly {1: -19, 4: kid, 16: typ}",
            ));
        }
        let payload = sign1
            .payload
            .take()
            .ok_or(VerifyError::Header("payload must be embedded"))?;
        let signature: [u8; 64] = std::mem::take(&mut sign1.signature)
            .try_into()
            .map_err(|_| VerifyError::BadSignature)?;
        let digest = Digest::of(&coset::sig_structure_data(
            coset::SignatureContext::CoseSign1,
            sign1.protected,
            None,
            b"",
            &payload,
        ));
        Ok(Self {
            bytes: bytes.to_vec(),
            protected,
            kid,
            typ,
            payload,
            signature,
            digest,
        })
    }

    /// Refuses an object whose `typ` is not `expected`.
    pub fn expect_typ(&self, expected: &'static str) -> Result<(), VerifyError> {
        if self.typ == expected {
            Ok(())
        } else {
            Err(VerifyError::WrongType {
                expected,
                got: self.typ.clone(),
            })
        }
    }

    /// Checks the signature with `key` (whose kid must match the header's).
    pub fn verify_with(&self, key: &PublicKey) -> Result<(), VerifyError> {
        if key.kid() != self.kid {
            return Err(VerifyError::UnknownKey(hex::encode(self.kid)));
        }
        key.verify(&self.tbs(), &self.signature)
    }

    /// The Sig_structure that was signed: `["Signature1", protected, h'', payload]`.
    pub fn tbs(&self) -> Vec<u8> {
        cbor::encode(&Value::Array(vec![
            Value::Text("Signature1".to_owned()),
            Value::Bytes(self.protected.clone()),
            Value::Bytes(Vec::new()),
            Value::Bytes(self.payload.clone()),
        ]))
    }

    /// The encoded object.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The object's identity: SHA-256 of its ToBeSigned.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// The signer's key id.
    pub fn kid(&self) -> Kid {
        self.kid
    }

    /// The object type.
    pub fn typ(&self) -> &str {
        &self.typ
    }

    /// The payload bytes (read them only after `expect_typ` and `verify_with`).
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
}

/// Parses an object of type `typ` and verifies it with the key `signer` returns for its kid
/// (a roster member's node key); returns the object and that member. The payload is read
/// only after this succeeds.
pub(crate) fn open_by_member(
    bytes: &[u8],
    cap: usize,
    typ: &'static str,
    signer: impl FnOnce(&Kid) -> Option<(crate::ids::NodeId, PublicKey)>,
) -> Result<(SignedObject, crate::ids::NodeId), VerifyError> {
    let signed = SignedObject::parse(bytes, cap)?;
    signed.expect_typ(typ)?;
    let (node, key) =
        signer(&signed.kid()).ok_or_else(|| VerifyError::UnknownKey(hex::encode(signed.kid())))?;
    signed.verify_with(&key)?;
    Ok((signed, node))
}

/// The protected header bytes for `kid` and `typ`, deterministically encoded.
fn expected_protected(kid: &Kid, typ: &str) -> Vec<u8> {
    cbor::encode(&Value::Map(vec![
        (Value::from(1), Value::from(-19)),
        (Value::from(4), Value::Bytes(kid.to_vec())),
        (Value::from(16), Value::Text(typ.to_owned())),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn sign_parse_verify() {
        let k = key(1);
        let obj = SignedObject::sign(TYP_RECEIPT, vec![0xa0], &k);
        let parsed = SignedObject::parse(obj.bytes(), 1024).unwrap();
        assert_eq!(parsed, obj);
        parsed.expect_typ(TYP_RECEIPT).unwrap();
        parsed.verify_with(&PublicKey::from(&k)).unwrap();
        assert!(matches!(
            parsed.expect_typ(TYP_MESSAGE),
            Err(VerifyError::WrongType { .. })
        ));
        assert!(matches!(
            parsed.verify_with(&PublicKey::from(&key(2))),
            Err(VerifyError::UnknownKey(_))
        ));
    }

    #[test]
    fn any_flipped_bit_is_refused() {
        let k = key(3);
        let pk = PublicKey::from(&k);
        let obj = SignedObject::sign(TYP_MESSAGE, vec![0x01, 0x02], &k);
        for i in 0..obj.bytes().len() {
            for bit in 0..8 {
                let mut b = obj.bytes().to_vec();
                b[i] ^= 1 << bit;
                let ok = SignedObject::parse(&b, 1024).and_then(|o| {
                    o.expect_typ(TYP_MESSAGE)?;
                    o.verify_with(&pk)?;
                    Ok(o)
                });
                assert!(ok.is_err(), "flip of byte {i} bit {bit} accepted");
            }
        }
    }

    #[test]
    fn digest_is_over_tbs() {
        let k = key(4);
        let obj = SignedObject::sign(TYP_MESSAGE, vec![0x05], &k);
        assert_eq!(obj.digest(), Digest::of(&obj.tbs()));
    }
}
