//! Delivery receipts (docs/formats.md §3), signed by the final recipient, and non-delivery records,
//! signed by whichever node dropped an expired message.

use ciborium::Value;
use ed25519_dalek::SigningKey;

use crate::cbor::{self, MapBuilder, MapReader};
use crate::cose::{SignedObject, TYP_NONDELIVERY, TYP_RECEIPT};
use crate::envelope::MAX_ENVELOPE_LEN;
use crate::error::{DecodeError, VerifyError};
use crate::ids::{Digest, MessageId, NodeId, check_id};
use crate::keys::{Kid, PublicKey};

/// Longest reason text in a receipt.
pub const MAX_REASON_LEN: usize = 1024;

/// What the recipient did with the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptStatus {
    /// Verified, body checked, durably stored.
    Delivered,
    /// Refused, with the reason.
    Rejected(String),
}

/// A delivery receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Federation id.
    pub federation: String,
    /// Digest of the acknowledged envelope.
    pub message_digest: Digest,
    /// Its message id.
    pub message_id: MessageId,
    /// The original sender.
    pub sender: NodeId,
    /// The original recipient, who signs the receipt.
    pub recipient: NodeId,
    /// Accepted (or rejected) at, Unix ms.
    pub at: u64,
    /// Delivered or rejected with reason.
    pub status: ReceiptStatus,
    /// The recipient's log origin and the index of its "received" entry.
    pub log_ref: Option<(String, u64)>,
}

impl Receipt {
    fn encode(&self) -> Vec<u8> {
        let (status, reason) = match &self.status {
            ReceiptStatus::Delivered => (0u64, None),
            ReceiptStatus::Rejected(r) => (1, Some(r.as_str())),
        };
        let map = MapBuilder::new()
            .put(1, 1u64)
            .put(2, self.federation.as_str())
            .put(3, Value::Bytes(self.message_digest.0.to_vec()))
            .put(4, Value::Bytes(self.message_id.0.to_vec()))
            .put(5, self.sender.as_str())
            .put(6, self.recipient.as_str())
            .put(7, self.at)
            .put(8, status)
            .put_opt(9, reason)
            .put_opt(
                10,
                self.log_ref.as_ref().map(|(origin, index)| {
                    Value::Array(vec![Value::Text(origin.clone()), Value::from(*index)])
                }),
            )
            .build();
        cbor::encode(&map)
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        const OBJ: &str = "receipt";
        let v = cbor::decode_strict(bytes, MAX_ENVELOPE_LEN, None)?;
        let mut m = MapReader::new(OBJ, v)?;
        if m.uint(1)? != 1 {
            return Err(DecodeError::Field {
                object: OBJ,
                key: 1,
                problem: "unsupported version",
            });
        }
        let federation = m.text(2)?;
        check_id("federation id", &federation)?;
        let message_digest = Digest(m.fixed(3)?);
        let message_id = MessageId(m.fixed(4)?);
        let sender = NodeId::new(m.text(5)?)?;
        let recipient = NodeId::new(m.text(6)?)?;
        let at = m.uint(7)?;
        let status = match (m.uint(8)?, m.opt_text(9)?) {
            (0, None) => ReceiptStatus::Delivered,
            (1, Some(r)) if r.len() <= MAX_REASON_LEN => ReceiptStatus::Rejected(r),
            _ => {
                return Err(DecodeError::Field {
                    object: OBJ,
                    key: 8,
                    problem: "status 0 without reason, or 1 with a reason of at most 1024 bytes",
                });
            }
        };
        let log_ref = match m.opt_array(10)? {
            None => None,
            Some(a) => Some(log_ref_from(a).ok_or(DecodeError::Field {
                object: OBJ,
                key: 10,
                problem: "expected [origin, index]",
            })?),
        };
        // Only a delivery is in the recipient's log, and only in its own log.
        if let Some((origin, _)) = &log_ref {
            if status != ReceiptStatus::Delivered || *origin != format!("{recipient}/log") {
                return Err(DecodeError::Field {
                    object: OBJ,
                    key: 10,
                    problem: "a log reference goes only on a delivery (status 0) and names the \
                              recipient's own log, \"<recipient>/log\"",
                });
            }
        }
        m.finish()?;
        Ok(Self {
            federation,
            message_digest,
            message_id,
            sender,
            recipient,
            at,
            status,
            log_ref,
        })
    }
}

fn log_ref_from(a: Vec<Value>) -> Option<(String, u64)> {
    let [origin, index]: [Value; 2] = a.try_into().ok()?;
    Some((cbor::as_text(origin)?, cbor::as_uint(&index)?))
}

/// A receipt whose signature was checked against the recipient's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedReceipt {
    signed: SignedObject,
    receipt: Receipt,
}

impl SignedReceipt {
    /// Signs a receipt with the recipient node's key.
    pub fn sign(receipt: Receipt, key: &SigningKey) -> Self {
        let signed = SignedObject::sign(TYP_RECEIPT, receipt.encode(), key);
        Self { signed, receipt }
    }

    /// Parses and verifies; `signer` maps the kid to its node and key. The signer must be the
    /// receipt's recipient.
    pub fn open(
        bytes: &[u8],
        signer: impl FnOnce(&Kid) -> Option<(NodeId, PublicKey)>,
    ) -> Result<Self, VerifyError> {
        let (signed, node) =
            crate::cose::open_by_member(bytes, MAX_ENVELOPE_LEN, TYP_RECEIPT, signer)?;
        let receipt = Receipt::decode(signed.payload())?;
        if receipt.recipient != node {
            return Err(VerifyError::UnknownKey(format!(
                "receipt for {} signed by {node}",
                receipt.recipient
            )));
        }
        Ok(Self { signed, receipt })
    }

    /// The verified receipt.
    pub fn receipt(&self) -> &Receipt {
        &self.receipt
    }

    /// The encoded receipt.
    pub fn bytes(&self) -> &[u8] {
        self.signed.bytes()
    }

    /// The receipt's own identity.
    pub fn digest(&self) -> Digest {
        self.signed.digest()
    }
}

/// A record that a message was dropped undelivered because it expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonDelivery {
    /// Federation id.
    pub federation: String,
    /// Digest of the dropped envelope.
    pub message_digest: Digest,
    /// Its message id.
    pub message_id: MessageId,
    /// The original sender.
    pub sender: NodeId,
    /// The intended recipient.
    pub recipient: NodeId,
    /// Dropped at, Unix ms.
    pub at: u64,
    /// The node that held the message and dropped it (signer of this record).
    pub dropped_by: NodeId,
    /// Why (e.g. "expired").
    pub reason: String,
}

impl NonDelivery {
    fn encode(&self) -> Vec<u8> {
        cbor::encode(
            &MapBuilder::new()
                .put(1, 1u64)
                .put(2, self.federation.as_str())
                .put(3, Value::Bytes(self.message_digest.0.to_vec()))
                .put(4, Value::Bytes(self.message_id.0.to_vec()))
                .put(5, self.sender.as_str())
                .put(6, self.recipient.as_str())
                .put(7, self.at)
                .put(8, self.dropped_by.as_str())
                .put(9, self.reason.as_str())
                .build(),
        )
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        const OBJ: &str = "non-delivery record";
        let v = cbor::decode_strict(bytes, MAX_ENVELOPE_LEN, None)?;
        let mut m = MapReader::new(OBJ, v)?;
        if m.uint(1)? != 1 {
            return Err(DecodeError::Field {
                object: OBJ,
                key: 1,
                problem: "unsupported version",
            });
        }
        let federation = m.text(2)?;
        check_id("federation id", &federation)?;
        let out = Self {
            federation,
            message_digest: Digest(m.fixed(3)?),
            message_id: MessageId(m.fixed(4)?),
            sender: NodeId::new(m.text(5)?)?,
            recipient: NodeId::new(m.text(6)?)?,
            at: m.uint(7)?,
            dropped_by: NodeId::new(m.text(8)?)?,
            reason: m.text(9)?,
        };
        m.finish()?;
        Ok(out)
    }
}

/// A non-delivery record whose signature was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNonDelivery {
    signed: SignedObject,
    record: NonDelivery,
}

impl SignedNonDelivery {
    /// Signs the record with the dropping node's key.
    pub fn sign(record: NonDelivery, key: &SigningKey) -> Self {
        let signed = SignedObject::sign(TYP_NONDELIVERY, record.encode(), key);
        Self { signed, record }
    }

    /// Parses and verifies; the signer must be `dropped_by`.
    pub fn open(
        bytes: &[u8],
        signer: impl FnOnce(&Kid) -> Option<(NodeId, PublicKey)>,
    ) -> Result<Self, VerifyError> {
        let (signed, node) =
            crate::cose::open_by_member(bytes, MAX_ENVELOPE_LEN, TYP_NONDELIVERY, signer)?;
        let record = NonDelivery::decode(signed.payload())?;
        if record.dropped_by != node {
            return Err(VerifyError::UnknownKey(format!(
                "non-delivery record by {} signed by {node}",
                record.dropped_by
            )));
        }
        Ok(Self { signed, record })
    }

    /// The verified record.
    pub fn record(&self) -> &NonDelivery {
        &self.record
    }

    /// The encoded record.
    pub fn bytes(&self) -> &[u8] {
        self.signed.bytes()
    }

    /// The record's identity.
    pub fn digest(&self) -> Digest {
        self.signed.digest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_round_trip_and_signer_check() {
        let sk = SigningKey::from_bytes(&[5; 32]);
        let r = Receipt {
            federation: "cn-atip-demo".into(),
            message_digest: Digest([1; 32]),
            message_id: MessageId([2; 16]),
            sender: NodeId::new("cn-35-psb").unwrap(),
            recipient: NodeId::new("cn-61-psb").unwrap(),
            at: 42,
            status: ReceiptStatus::Delivered,
            log_ref: Some(("cn-61-psb/log".into(), 9)),
        };
        let s = SignedReceipt::sign(r.clone(), &sk);
        let pk = PublicKey::from(&sk);
        let ok = SignedReceipt::open(s.bytes(), |_| Some((r.recipient.clone(), pk))).unwrap();
        assert_eq!(ok.receipt(), &r);
        assert!(SignedReceipt::open(s.bytes(), |_| Some((r.sender.clone(), pk))).is_err());
        let open = |r: &Receipt| {
            SignedReceipt::open(SignedReceipt::sign(r.clone(), &sk).bytes(), |_| {
                Some((r.recipient.clone(), pk))
            })
        };
        // Without a log reference a receipt of either status is valid.
        let mut plain = r.clone();
        plain.log_ref = None;
        assert!(open(&plain).is_ok());
        plain.status = ReceiptStatus::Rejected("bad".into());
        assert!(open(&plain).is_ok());
        // A log reference goes only on a delivery, to the recipient's own log.
        let mut rejected = r.clone();
        rejected.status = ReceiptStatus::Rejected("bad".into());
        assert!(open(&rejected).is_err());
        let mut elsewhere = r.clone();
        elsewhere.log_ref = Some(("cn-35-psb/log".into(), 9));
        assert!(open(&elsewhere).is_err());
    }
}
