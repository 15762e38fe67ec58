//! Framing on QUIC streams: `type: u8 ‖ length: u32 big-endian ‖ payload`.
//!
//! Each exchange uses its own bidirectional stream: the opener writes one frame and finishes
//! its side; the other side answers with one frame and finishes. See docs/protocol.md.

use crate::ids::Digest;

/// Length of the frame head.
pub const HEAD_LEN: usize = 5;

/// Frame type bytes.
mod ty {
    pub(super) const DELIVER: u8 = 0x01;
    pub(super) const RECEIPT: u8 = 0x02;
    pub(super) const NONDELIVERY: u8 = 0x03;
    pub(super) const CUSTODY: u8 = 0x04;
    pub(super) const ACK: u8 = 0x05;
    pub(super) const ROSTER: u8 = 0x06;
    pub(super) const WITNESS: u8 = 0x07;
    pub(super) const COSIGNATURE: u8 = 0x08;
    pub(super) const WITNESS_SIZE: u8 = 0x09;
    pub(super) const ERROR: u8 = 0x7f;
}

/// Error codes carried by an [`Frame::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The frame could not be decoded.
    MalformedFrame,
    /// The frame is larger than allowed.
    TooLarge,
    /// The object inside could not be parsed, so no receipt can name it.
    MalformedObject,
    /// The peer may not send this (not the sender, not a relay for it).
    Unauthorized,
    /// The receiver could not store the message (disk full, store error): try again later.
    Unavailable,
    /// The object was refused (bad signature, policy, expired …) and no receipt can be signed.
    Refused,
    /// The receiver is shutting down: try again later.
    ShuttingDown,
    /// A code this version does not know (kept as sent; treated as permanent).
    Other(u16),
}

impl ErrorCode {
    /// From the wire value; unknown codes are kept as [`ErrorCode::Other`].
    pub fn from_u16(v: u16) -> Self {
        match v {
            1 => Self::MalformedFrame,
            2 => Self::TooLarge,
            3 => Self::MalformedObject,
            4 => Self::Unauthorized,
            5 => Self::Unavailable,
            6 => Self::Refused,
            7 => Self::ShuttingDown,
            other => Self::Other(other),
        }
    }

    /// The wire value.
    pub fn to_u16(self) -> u16 {
        match self {
            Self::MalformedFrame => 1,
            Self::TooLarge => 2,
            Self::MalformedObject => 3,
            Self::Unauthorized => 4,
            Self::Unavailable => 5,
            Self::Refused => 6,
            Self::ShuttingDown => 7,
            Self::Other(v) => v,
        }
    }

    /// Whether the sender should keep the item and try again later.
    pub fn is_temporary(self) -> bool {
        matches!(self, Self::Unavailable | Self::ShuttingDown)
    }
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A message: envelope and body.
    Deliver { envelope: Vec<u8>, body: Vec<u8> },
    /// A signed delivery receipt (from the final recipient; forwarded by relays).
    Receipt(Vec<u8>),
    /// A signed non-delivery record (forwarded by relays to the sender).
    NonDelivery(Vec<u8>),
    /// A relay has durably stored the message with this digest and will forward it.
    Custody(Digest),
    /// The receiver has durably stored the receipt or record with this digest.
    Ack(Digest),
    /// A signed roster being spread.
    Roster(Vec<u8>),
    /// A checkpoint of the sender's log for the receiver to witness, with a consistency
    /// proof from the size the receiver last cosigned.
    Witness {
        /// The tree size the proof starts from (the witness's last cosigned size, or 0).
        old_size: u64,
        /// Consistency proof from `old_size` to the checkpoint's size.
        proof: Vec<[u8; 32]>,
        /// The signed checkpoint note.
        checkpoint: Vec<u8>,
    },
    /// The witness's cosignature line (C2SP tlog-cosignature v1) for a `Witness`.
    Cosignature(Vec<u8>),
    /// The witness knows the log at another size: resend with a proof from this size.
    WitnessSize(u64),
    /// The exchange failed.
    Error { code: ErrorCode, reason: String },
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Declared length over the cap; nothing allocated.
    #[error("frame of {len} bytes is over the {cap}-byte limit")]
    TooLarge { len: usize, cap: usize },
    /// Unknown type byte.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    /// Payload does not fit the type.
    #[error("malformed {0} frame")]
    Malformed(&'static str),
    /// Bytes after the frame.
    #[error("{0} bytes after the frame")]
    Trailing(usize),
}

impl Frame {
    fn type_byte(&self) -> u8 {
        match self {
            Self::Deliver { .. } => ty::DELIVER,
            Self::Receipt(_) => ty::RECEIPT,
            Self::NonDelivery(_) => ty::NONDELIVERY,
            Self::Custody(_) => ty::CUSTODY,
            Self::Ack(_) => ty::ACK,
            Self::Roster(_) => ty::ROSTER,
            Self::Witness { .. } => ty::WITNESS,
            Self::Cosignature(_) => ty::COSIGNATURE,
            Self::WitnessSize(_) => ty::WITNESS_SIZE,
            Self::Error { .. } => ty::ERROR,
        }
    }

    fn payload_len(&self) -> usize {
        match self {
            Self::Deliver { envelope, body } => 2 + envelope.len() + body.len(),
            Self::Receipt(b) | Self::NonDelivery(b) | Self::Roster(b) => b.len(),
            Self::Custody(_) | Self::Ack(_) => 32,
            Self::Witness {
                proof, checkpoint, ..
            } => 8 + 1 + 32 * proof.len() + checkpoint.len(),
            Self::Cosignature(b) => b.len(),
            Self::WitnessSize(_) => 8,
            Self::Error { reason, .. } => 2 + reason.len(),
        }
    }

    /// Exact encoded length.
    pub fn encoded_len(&self) -> usize {
        HEAD_LEN + self.payload_len()
    }

    /// Appends the encoded frame to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        out.push(self.type_byte());
        out.extend_from_slice(&(self.payload_len() as u32).to_be_bytes());
        match self {
            Self::Deliver { envelope, body } => {
                out.extend_from_slice(&(envelope.len() as u16).to_be_bytes());
                out.extend_from_slice(envelope);
                out.extend_from_slice(body);
            }
            Self::Receipt(b) | Self::NonDelivery(b) | Self::Roster(b) => out.extend_from_slice(b),
            Self::Custody(d) | Self::Ack(d) => out.extend_from_slice(&d.0),
            Self::Witness {
                old_size,
                proof,
                checkpoint,
            } => {
                out.extend_from_slice(&old_size.to_be_bytes());
                out.push(proof.len() as u8);
                for h in proof {
                    out.extend_from_slice(h);
                }
                out.extend_from_slice(checkpoint);
            }
            Self::Cosignature(b) => out.extend_from_slice(b),
            Self::WitnessSize(n) => out.extend_from_slice(&n.to_be_bytes()),
            Self::Error { code, reason } => {
                out.extend_from_slice(&code.to_u16().to_be_bytes());
                out.extend_from_slice(reason.as_bytes());
            }
        }
    }

    /// The encoded frame.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_to(&mut v);
        v
    }

    /// Decodes one frame from the front of `buf`. `Ok(None)` means more bytes are needed;
    /// the declared length is checked against `cap` before anything is allocated. Returns the
    /// frame and the bytes it used.
    pub fn decode(buf: &[u8], cap: usize) -> Result<Option<(Self, usize)>, FrameError> {
        let Some(head) = buf.get(..HEAD_LEN) else {
            return Ok(None);
        };
        let t = head[0];
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > cap {
            return Err(FrameError::TooLarge { len, cap });
        }
        if !matches!(
            t,
            ty::DELIVER
                | ty::RECEIPT
                | ty::NONDELIVERY
                | ty::CUSTODY
                | ty::ACK
                | ty::ROSTER
                | ty::WITNESS
                | ty::COSIGNATURE
                | ty::WITNESS_SIZE
                | ty::ERROR
        ) {
            return Err(FrameError::UnknownType(t));
        }
        let Some(p) = buf.get(HEAD_LEN..HEAD_LEN + len) else {
            return Ok(None);
        };
        let frame = match t {
            ty::DELIVER => {
                let (n, rest) = p
                    .split_at_checked(2)
                    .ok_or(FrameError::Malformed("deliver"))?;
                let n = u16::from_be_bytes([n[0], n[1]]) as usize;
                let (envelope, body) = rest
                    .split_at_checked(n)
                    .ok_or(FrameError::Malformed("deliver"))?;
                Self::Deliver {
                    envelope: envelope.to_vec(),
                    body: body.to_vec(),
                }
            }
            ty::RECEIPT => Self::Receipt(p.to_vec()),
            ty::NONDELIVERY => Self::NonDelivery(p.to_vec()),
            ty::ROSTER => Self::Roster(p.to_vec()),
            ty::COSIGNATURE => Self::Cosignature(p.to_vec()),
            ty::WITNESS_SIZE => {
                let n: [u8; 8] = p
                    .try_into()
                    .map_err(|_| FrameError::Malformed("witness size"))?;
                Self::WitnessSize(u64::from_be_bytes(n))
            }
            ty::WITNESS => {
                let bad = FrameError::Malformed("witness");
                let (size, rest) = p.split_at_checked(8).ok_or(bad.clone())?;
                let (count, rest) = rest.split_first().ok_or(bad.clone())?;
                let n = usize::from(*count);
                if n > 64 {
                    return Err(bad);
                }
                let (hashes, checkpoint) = rest.split_at_checked(32 * n).ok_or(bad.clone())?;
                let proof = hashes
                    .chunks_exact(32)
                    .map(|c| <[u8; 32]>::try_from(c).map_err(|_| bad.clone()))
                    .collect::<Result<Vec<_>, _>>()?;
                Self::Witness {
                    old_size: u64::from_be_bytes(size.try_into().map_err(|_| bad.clone())?),
                    proof,
                    checkpoint: checkpoint.to_vec(),
                }
            }
            ty::CUSTODY | ty::ACK => {
                let d: [u8; 32] = p.try_into().map_err(|_| FrameError::Malformed("ack"))?;
                if t == ty::ACK {
                    Self::Ack(Digest(d))
                } else {
                    Self::Custody(Digest(d))
                }
            }
            _ => {
                let (c, reason) = p
                    .split_at_checked(2)
                    .ok_or(FrameError::Malformed("error"))?;
                let reason = std::str::from_utf8(reason)
                    .map_err(|_| FrameError::Malformed("error"))?
                    .to_owned();
                Self::Error {
                    code: ErrorCode::from_u16(u16::from_be_bytes([c[0], c[1]])),
                    reason,
                }
            }
        };
        Ok(Some((frame, HEAD_LEN + len)))
    }

    /// Decodes a buffer that must hold exactly one whole frame.
    pub fn decode_exact(buf: &[u8], cap: usize) -> Result<Self, FrameError> {
        match Self::decode(buf, cap)? {
            None => Err(FrameError::Malformed("truncated")),
            Some((f, used)) if used == buf.len() => Ok(f),
            Some((_, used)) => Err(FrameError::Trailing(buf.len() - used)),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn golden_deliver() {
        let f = Frame::Deliver {
            envelope: vec![0xd2, 0x84],
            body: b"hi".to_vec(),
        };
        // type 01 | length 00000006 | envelope length 0002 | envelope d284 | body 6869
        assert_eq!(hex::encode(f.to_bytes()), "01000000060002d2846869");
    }

    #[test]
    fn golden_error() {
        let f = Frame::Error {
            code: ErrorCode::Unavailable,
            reason: "disk".into(),
        };
        // type 7f | length 00000006 | code 0005 | "disk"
        assert_eq!(hex::encode(f.to_bytes()), "7f0000000600056469736b");
    }

    #[test]
    fn unknown_error_codes_round_trip() {
        let b = hex::decode("7f000000020000").unwrap();
        let f = Frame::decode_exact(&b, 100).unwrap();
        assert_eq!(f.to_bytes(), b);
    }

    #[test]
    fn incomplete_is_not_an_error() {
        let b = Frame::Receipt(vec![1, 2, 3]).to_bytes();
        for i in 0..b.len() {
            assert_eq!(Frame::decode(&b[..i], 100), Ok(None));
        }
    }

    #[test]
    fn cap_checked_before_allocation() {
        let head = [ty::RECEIPT, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            Frame::decode(&head, 1 << 20),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn trailing_bytes_refused() {
        let mut b = Frame::Ack(Digest([1; 32])).to_bytes();
        b.push(0);
        assert_eq!(Frame::decode_exact(&b, 100), Err(FrameError::Trailing(1)));
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..300);
        prop_oneof![
            (proptest::collection::vec(any::<u8>(), 0..300), bytes())
                .prop_map(|(envelope, body)| Frame::Deliver { envelope, body }),
            bytes().prop_map(Frame::Receipt),
            bytes().prop_map(Frame::NonDelivery),
            bytes().prop_map(Frame::Roster),
            any::<[u8; 32]>().prop_map(|d| Frame::Custody(Digest(d))),
            any::<[u8; 32]>().prop_map(|d| Frame::Ack(Digest(d))),
            (
                any::<u64>(),
                proptest::collection::vec(any::<[u8; 32]>(), 0..64),
                bytes()
            )
                .prop_map(|(old_size, proof, checkpoint)| Frame::Witness {
                    old_size,
                    proof,
                    checkpoint
                }),
            bytes().prop_map(Frame::Cosignature),
            any::<u64>().prop_map(Frame::WitnessSize),
            (any::<u16>(), ".{0,40}").prop_map(|(c, reason)| Frame::Error {
                code: ErrorCode::from_u16(c),
                reason
            }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(f in arb_frame()) {
            let b = f.to_bytes();
            prop_assert_eq!(b.len(), f.encoded_len());
            prop_assert_eq!(Frame::decode_exact(&b, 1 << 20), Ok(f));
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(Some((f, used))) = Frame::decode(&b, 1 << 20) {
                prop_assert_eq!(&f.to_bytes()[..], &b[..used]);
            }
        }
    }
}
