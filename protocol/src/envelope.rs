//! The message envelope (docs/formats.md §2): a COSE_Sign1 signed by the sender node over a header
//! that names the body by length and SHA-256. The body travels beside the envelope.

use ciborium::Value;
use ed25519_dalek::SigningKey;

use crate::cbor::{self, MapBuilder, MapReader};
use crate::cose::{SignedObject, TYP_MESSAGE};
use crate::error::{DecodeError, VerifyError};
use crate::ids::{Digest, MessageId, NodeId, check_id};
use crate::keys::{Kid, PublicKey};

/// Largest encoded envelope.
pub const MAX_ENVELOPE_LEN: usize = 16 * 1024;
/// Longest message kind (`assist.request`, …).
pub const MAX_KIND_LEN: usize = 64;
/// Longest case reference.
pub const MAX_CASE_REF_LEN: usize = 128;
/// Envelope format version.
pub const ENVELOPE_VERSION: u64 = 1;

/// Delivery priority; higher overtakes lower in every queue.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Ordinary traffic.
    Routine = 0,
    /// Ahead of routine.
    Priority = 1,
    /// Custody notices and the like.
    Urgent = 2,
    /// Missing-child alerts: overtake everything.
    Flash = 3,
}

impl Priority {
    /// All priorities, highest first.
    pub const ALL_DESC: [Self; 4] = [Self::Flash, Self::Urgent, Self::Priority, Self::Routine];

    /// From the wire value.
    pub fn from_u64(v: u64) -> Option<Self> {
        match v {
            0 => Some(Self::Routine),
            1 => Some(Self::Priority),
            2 => Some(Self::Urgent),
            3 => Some(Self::Flash),
            _ => None,
        }
    }

    /// Parses `routine|priority|urgent|flash`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "routine" => Some(Self::Routine),
            "priority" => Some(Self::Priority),
            "urgent" => Some(Self::Urgent),
            "flash" => Some(Self::Flash),
            _ => None,
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Routine => "routine",
            Self::Priority => "priority",
            Self::Urgent => "urgent",
            Self::Flash => "flash",
        }
    }
}

/// The signed header of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Federation (network) id.
    pub federation: String,
    /// Message id (UUIDv7).
    pub id: MessageId,
    /// Sender node (owner of the signing key).
    pub from: NodeId,
    /// Final recipient node (relays do not change it).
    pub to: NodeId,
    /// Sent at, Unix ms.
    pub sent_at: u64,
    /// Message kind, e.g. `assist.request`.
    pub kind: String,
    /// Body length in bytes.
    pub body_len: u64,
    /// SHA-256 of the body.
    pub body_hash: [u8; 32],
    /// Priority lane.
    pub priority: Priority,
    /// The message this one answers.
    pub in_reply_to: Option<MessageId>,
    /// Expiry, Unix ms: undelivered by then, it is dropped with a non-delivery record.
    pub expires_at: Option<u64>,
    /// Case reference, threading a case across messages.
    pub case_ref: Option<String>,
}

impl Header {
    /// Encodes the header as deterministic CBOR.
    pub fn encode(&self) -> Vec<u8> {
        let map = MapBuilder::new()
            .put(1, ENVELOPE_VERSION)
            .put(2, self.federation.as_str())
            .put(3, Value::Bytes(self.id.0.to_vec()))
            .put(4, self.from.as_str())
            .put(5, self.to.as_str())
            .put(6, self.sent_at)
            .put(7, self.kind.as_str())
            .put(8, self.body_len)
            .put(9, Value::Bytes(self.body_hash.to_vec()))
            .put(10, self.priority as u64)
            .put_opt(11, self.in_reply_to.map(|id| Value::Bytes(id.0.to_vec())))
            .put_opt(12, self.expires_at)
            .put_opt(13, self.case_ref.as_deref())
            .build();
        cbor::encode(&map)
    }

    /// Decodes a header strictly.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let v = cbor::decode_strict(bytes, MAX_ENVELOPE_LEN, None)?;
        let mut m = MapReader::new("envelope header", v)?;
        if m.uint(1)? != ENVELOPE_VERSION {
            return Err(DecodeError::Field {
                object: "envelope header",
                key: 1,
                problem: "unsupported format version",
            });
        }
        let federation = m.text(2)?;
        check_id("federation id", &federation)?;
        let id = MessageId(m.fixed(3)?);
        let from = NodeId::new(m.text(4)?)?;
        let to = NodeId::new(m.text(5)?)?;
        let sent_at = m.uint(6)?;
        let kind = m.text(7)?;
        check_kind(&kind)?;
        let body_len = m.uint(8)?;
        let body_hash = m.fixed(9)?;
        let priority = Priority::from_u64(m.uint(10)?).ok_or(DecodeError::Field {
            object: "envelope header",
            key: 10,
            problem: "priority must be 0..3",
        })?;
        let in_reply_to = m.opt_fixed(11)?.map(MessageId);
        let expires_at = m.opt_uint(12)?;
        let case_ref = m.opt_text(13)?;
        if case_ref
            .as_ref()
            .is_some_and(|c| c.is_empty() || c.len() > MAX_CASE_REF_LEN)
        {
            return Err(DecodeError::Field {
                object: "envelope header",
                key: 13,
                problem: "case reference must be 1..128 bytes",
            });
        }
        m.finish()?;
        Ok(Self {
            federation,
            id,
            from,
            to,
            sent_at,
            kind,
            body_len,
            body_hash,
            priority,
            in_reply_to,
            expires_at,
            case_ref,
        })
    }
}

/// A message kind: 1..64 characters of `a-z 0-9 _ .`.
pub fn check_kind(kind: &str) -> Result<(), DecodeError> {
    let ok = !kind.is_empty()
        && kind.len() <= MAX_KIND_LEN
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(DecodeError::Invalid {
            what: "message kind",
            problem: format!("{kind:?} must be 1..64 characters of a-z, 0-9, '_' and '.'"),
        })
    }
}

/// Why a body does not match its envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Length differs from the header.
    #[error("body is {got} bytes but the envelope says {expected}")]
    Length { expected: u64, got: u64 },
    /// SHA-256 differs from the header.
    #[error("body hash does not match the envelope")]
    Hash,
}

/// A message envelope whose signature was checked against its sender's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    signed: SignedObject,
    header: Header,
}

impl Envelope {
    /// Signs `header` with the sender node's key.
    pub fn seal(header: Header, key: &SigningKey) -> Self {
        let signed = SignedObject::sign(TYP_MESSAGE, header.encode(), key);
        Self { signed, header }
    }

    /// Parses and verifies an envelope. `signer` maps a kid to the node that owns that signing
    /// key and the key itself (from the roster); the header's `from` must be that node.
    pub fn open(
        bytes: &[u8],
        signer: impl FnOnce(&Kid) -> Option<(NodeId, PublicKey)>,
    ) -> Result<Self, VerifyError> {
        let signed = SignedObject::parse(bytes, MAX_ENVELOPE_LEN)?;
        signed.expect_typ(TYP_MESSAGE)?;
        let (node, key) = signer(&signed.kid())
            .ok_or_else(|| VerifyError::UnknownKey(hex::encode(signed.kid())))?;
        signed.verify_with(&key)?;
        let header = Header::decode(signed.payload())?;
        if header.from != node {
            return Err(VerifyError::UnknownKey(format!(
                "{} (key of {node}, but the envelope says from {})",
                hex::encode(signed.kid()),
                header.from
            )));
        }
        Ok(Self { signed, header })
    }

    /// Parses the structure only, to learn the digest and id of an envelope that will be
    /// rejected (for the rejection receipt). Never trust the result.
    pub fn peek_unverified(bytes: &[u8]) -> Option<(Digest, Header)> {
        let signed = SignedObject::parse(bytes, MAX_ENVELOPE_LEN).ok()?;
        let header = Header::decode(signed.payload()).ok()?;
        Some((signed.digest(), header))
    }

    /// Checks a body against the header's length and hash.
    pub fn check_body(&self, body: &[u8]) -> Result<(), BodyError> {
        if body.len() as u64 != self.header.body_len {
            return Err(BodyError::Length {
                expected: self.header.body_len,
                got: body.len() as u64,
            });
        }
        if Digest::of(body).0 != self.header.body_hash {
            return Err(BodyError::Hash);
        }
        Ok(())
    }

    /// The verified header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The envelope's identity.
    pub fn digest(&self) -> Digest {
        self.signed.digest()
    }

    /// The encoded envelope.
    pub fn bytes(&self) -> &[u8] {
        self.signed.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample_header(body: &[u8]) -> Header {
        Header {
            federation: "cn-atip-demo".into(),
            id: MessageId([7; 16]),
            from: NodeId::new("cn-35-psb").unwrap(),
            to: NodeId::new("cn-61-psb").unwrap(),
            sent_at: 1_790_000_000_000,
            kind: "assist.request".into(),
            body_len: body.len() as u64,
            body_hash: Digest::of(body).0,
            priority: Priority::Routine,
            in_reply_to: None,
            expires_at: Some(1_790_086_400_000),
            case_ref: Some("FJ-2026-0042".into()),
        }
    }

    #[test]
    fn seal_open_and_body() {
        let sk = SigningKey::from_bytes(&[9; 32]);
        let pk = PublicKey::from(&sk);
        let body = b"hello";
        let env = Envelope::seal(sample_header(body), &sk);
        let from = NodeId::new("cn-35-psb").unwrap();
        let opened = Envelope::open(env.bytes(), |_| Some((from.clone(), pk))).unwrap();
        assert_eq!(opened, env);
        opened.check_body(body).unwrap();
        assert_eq!(opened.check_body(b"hellO"), Err(BodyError::Hash));
        assert!(matches!(
            opened.check_body(b"hell"),
            Err(BodyError::Length { .. })
        ));
        // Key owned by another node: refused.
        let other = NodeId::new("cn-61-psb").unwrap();
        assert!(Envelope::open(env.bytes(), |_| Some((other, pk))).is_err());
    }

    /// The worked example of docs/protocol.md §4.6, computed independently (Python, seed
    /// 09×32): the Rust encoder must produce the same bytes.
    #[test]
    fn golden_envelope_matches_independent_encoding() {
        let sk = SigningKey::from_bytes(&[9; 32]);
        let env = Envelope::seal(sample_header(b"hello"), &sk);
        let expected = concat!(
            // tag 18, array(4), bstr(48) protected = {1: -19, 4: kid, 16: typ}
            "d2845830a301320448dbc298251c51321b1078206170706c69636174696f6e2f",
            "766e642e6c696169736f6e2e6d73672b63626f72",
            // unprotected {}, bstr(146) payload = header map (13 fields minus in_reply_to)
            "a05892ac0101026c636e2d61",
            "7469702d64656d6f0350070707070707070707070707070707070469636e2d33",
            "352d7073620569636e2d36312d707362061b000001a0c4506c00076e61737369",
            "73742e7265717565737408050958202cf24dba5fb0a30e26e83b2ac5b9e29e1b",
            "161e5c1fa7425e73043362938b98240a000c1b000001a0c976c8000d6c464a2d",
            "323032362d30303432",
            // bstr(64) signature
            "58408d6f942b2a93ac5e2adc185526d63beba170283d3a",
            "add76ebfeb9274321de85590ef137bbda635de4a3b48300e8f96dd4d297d08ea",
            "a6a9f4c8ddb69406c8110e",
        );
        assert_eq!(hex::encode(env.bytes()), expected);
        assert_eq!(
            env.digest().to_hex(),
            "00388fbae0b0f193308e2f15cfef3ad27db1e2e6cd654a3cdc2b1b679499e0e2"
        );
    }

    proptest::proptest! {
        #[test]
        fn header_round_trip(
            id in proptest::array::uniform16(0u8..),
            sent in 0u64..u64::MAX,
            len in 0u64..u64::MAX,
            prio in 0u64..4,
            reply in proptest::option::of(proptest::array::uniform16(0u8..)),
            exp in proptest::option::of(0u64..u64::MAX),
            case in proptest::option::of("[A-Z0-9-]{1,40}"),
            kind in "[a-z_]{1,20}\\.[a-z_]{1,20}",
        ) {
            let h = Header {
                federation: "fed".into(),
                id: MessageId(id),
                from: NodeId::new("a").unwrap(),
                to: NodeId::new("b-1.x").unwrap(),
                sent_at: sent,
                kind,
                body_len: len,
                body_hash: [3; 32],
                priority: Priority::from_u64(prio).unwrap(),
                in_reply_to: reply.map(MessageId),
                expires_at: exp,
                case_ref: case,
            };
            let b = h.encode();
            proptest::prop_assert_eq!(Header::decode(&b).unwrap(), h);
        }
    }

    #[test]
    fn header_refuses_unknown_field() {
        let h = sample_header(b"x");
        let mut v = cbor::decode_strict(&h.encode(), 1 << 14, None).unwrap();
        if let Value::Map(m) = &mut v {
            m.push((Value::from(14), Value::from(1)));
        }
        assert_eq!(
            Header::decode(&cbor::encode(&v)),
            Err(DecodeError::UnknownField {
                object: "envelope header",
                key: 14
            })
        );
    }
}
