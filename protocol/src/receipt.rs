//! Delivery receipts (docs/formats.md §3), signed by the final recipient, and non-delivery records,
//! signed by whichever node dropped an expired message.

use ciborium::Value;
use ed25519_dalek::SigningKey;

use crate::cbor::{self, MapBuilder, MapReader};
use crate::cose::{SignedObject, TYP_NONDELIVERY, TYP_RECEIPT, TYP_RECEIPT_BATCH};
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

/// Most receipts one batch covers (docs/protocol.md §4.3a).
pub const MAX_BATCH: u64 = 4096;

/// A receipt batch (docs/protocol.md §4.3a): the recipient's signature over the Merkle root of
/// the receipts it gave in one group commit. Each receipt is then proved by the batch, its own
/// payload and its inclusion path ([`SignedReceipt`] in its batched form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptBatch {
    /// Federation id.
    pub federation: String,
    /// The recipient, who signs the batch and every receipt in it.
    pub recipient: NodeId,
    /// How many receipts the tree holds.
    pub size: u64,
    /// RFC 9162 root of the tree whose leaves are the receipts' payloads, in order.
    pub root: crate::merkle::Hash,
}

impl ReceiptBatch {
    fn encode(&self) -> Vec<u8> {
        cbor::encode(
            &MapBuilder::new()
                .put(1, 1u64)
                .put(2, self.federation.as_str())
                .put(3, self.recipient.as_str())
                .put(4, self.size)
                .put(5, Value::Bytes(self.root.to_vec()))
                .build(),
        )
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        const OBJ: &str = "receipt batch";
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
        let recipient = NodeId::new(m.text(3)?)?;
        let size = m.uint(4)?;
        if size == 0 || size > MAX_BATCH {
            return Err(DecodeError::Field {
                object: OBJ,
                key: 4,
                problem: "a batch holds 1 to 4096 receipts",
            });
        }
        let root = m.fixed(5)?;
        m.finish()?;
        Ok(Self {
            federation,
            recipient,
            size,
            root,
        })
    }
}

/// The batches whose signatures a node has checked lately, so the receipts of one batch cost
/// one verification. Keyed by the digest of the whole signed batch (signature included) and
/// the key that verified it; holds the last [`BatchCache::CAPACITY`].
#[derive(Debug, Default)]
pub struct BatchCache(std::sync::Mutex<std::collections::VecDeque<(Digest, [u8; 32])>>);

impl BatchCache {
    /// Batches remembered.
    pub const CAPACITY: usize = 64;

    fn knows(&self, batch: &Digest, key: &PublicKey) -> bool {
        let q = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        q.iter().any(|(d, k)| d == batch && *k == key.to_bytes())
    }

    fn remember(&self, batch: Digest, key: &PublicKey) {
        let mut q = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if q.len() >= Self::CAPACITY {
            q.pop_front();
        }
        q.push_back((batch, key.to_bytes()));
    }
}

/// A receipt whose signature was checked against the recipient's key: either a signed
/// receipt of its own (`typ` receipt, docs/protocol.md §4.3) or a receipt proved by a signed
/// batch (§4.3a).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedReceipt {
    bytes: Vec<u8>,
    digest: Digest,
    receipt: Receipt,
    batch: Option<SignedObject>,
}

/// Keys of a receipt proof (docs/protocol.md §4.3a).
const PROOF_BATCH: u64 = 1;
const PROOF_RECEIPT: u64 = 2;
const PROOF_INDEX: u64 = 3;
const PROOF_PATH: u64 = 4;

impl SignedReceipt {
    /// Signs a receipt with the recipient node's key.
    pub fn sign(receipt: Receipt, key: &SigningKey) -> Self {
        let signed = SignedObject::sign(TYP_RECEIPT, receipt.encode(), key);
        Self {
            bytes: signed.bytes().to_vec(),
            digest: signed.digest(),
            receipt,
            batch: None,
        }
    }

    /// Signs one batch over `receipts` (1 to [`MAX_BATCH`], all of one federation, all by
    /// the key's node as recipient) and returns the signed batch and each receipt's proof, in
    /// order.
    pub fn sign_batch(
        federation: &str,
        recipient: &NodeId,
        receipts: Vec<Receipt>,
        key: &SigningKey,
    ) -> (SignedObject, Vec<Self>) {
        let payloads: Vec<Vec<u8>> = receipts.iter().map(Receipt::encode).collect();
        let leaves: Vec<crate::merkle::Hash> = payloads
            .iter()
            .map(|p| crate::merkle::leaf_hash(p))
            .collect();
        let (root, paths) = crate::merkle::all_inclusion_proofs(&leaves);
        let batch = ReceiptBatch {
            federation: federation.to_owned(),
            recipient: recipient.clone(),
            size: leaves.len() as u64,
            root,
        };
        let signed = SignedObject::sign(TYP_RECEIPT_BATCH, batch.encode(), key);
        let proofs = receipts
            .into_iter()
            .zip(payloads)
            .zip(paths)
            .enumerate()
            .map(|(i, ((receipt, payload), path))| {
                let bytes = cbor::encode(
                    &MapBuilder::new()
                        .put(PROOF_BATCH, Value::Bytes(signed.bytes().to_vec()))
                        .put(PROOF_RECEIPT, Value::Bytes(payload))
                        .put(PROOF_INDEX, i as u64)
                        .put(
                            PROOF_PATH,
                            Value::Array(path.iter().map(|h| Value::Bytes(h.to_vec())).collect()),
                        )
                        .build(),
                );
                Self {
                    digest: Digest::of(&bytes),
                    bytes,
                    receipt,
                    batch: Some(signed.clone()),
                }
            })
            .collect();
        (signed, proofs)
    }

    /// Parses and verifies either form; `signer` maps the kid to its node and key. The signer
    /// must be the receipt's recipient.
    pub fn open(
        bytes: &[u8],
        signer: impl FnOnce(&Kid) -> Option<(NodeId, PublicKey)>,
    ) -> Result<Self, VerifyError> {
        Self::open_cached(bytes, signer, None)
    }

    /// As [`SignedReceipt::open`]; a batch whose exact bytes `cache` saw verified by the same
    /// key is not verified again, and one verified here is remembered.
    pub fn open_cached(
        bytes: &[u8],
        signer: impl FnOnce(&Kid) -> Option<(NodeId, PublicKey)>,
        cache: Option<&BatchCache>,
    ) -> Result<Self, VerifyError> {
        // A COSE_Sign1 starts with tag 18 (0xd2); a proof is a map.
        if bytes.first() != Some(&0xa4) {
            let (signed, node) =
                crate::cose::open_by_member(bytes, MAX_ENVELOPE_LEN, TYP_RECEIPT, signer)?;
            let receipt = Receipt::decode(signed.payload())?;
            check_signer(&receipt, &node)?;
            return Ok(Self {
                bytes: signed.bytes().to_vec(),
                digest: signed.digest(),
                receipt,
                batch: None,
            });
        }
        const OBJ: &str = "receipt proof";
        let v = cbor::decode_strict(bytes, MAX_ENVELOPE_LEN, None)?;
        let mut m = MapReader::new(OBJ, v)?;
        let batch_bytes = m.bytes(PROOF_BATCH)?;
        let payload = m.bytes(PROOF_RECEIPT)?;
        let index = m.uint(PROOF_INDEX)?;
        let path = m
            .array(PROOF_PATH)?
            .into_iter()
            .map(|h| match h {
                Value::Bytes(b) => <[u8; 32]>::try_from(b).ok(),
                _ => None,
            })
            .collect::<Option<Vec<crate::merkle::Hash>>>()
            .ok_or(DecodeError::Field {
                object: OBJ,
                key: PROOF_PATH,
                problem: "expected an array of 32-byte hashes",
            })?;
        m.finish()?;
        let signed = SignedObject::parse(&batch_bytes, MAX_ENVELOPE_LEN)?;
        signed.expect_typ(TYP_RECEIPT_BATCH)?;
        let (node, key) = signer(&signed.kid())
            .ok_or_else(|| VerifyError::UnknownKey(hex::encode(signed.kid())))?;
        let batch_digest = Digest::of(&batch_bytes);
        if !cache.is_some_and(|c| c.knows(&batch_digest, &key)) {
            signed.verify_with(&key)?;
            if let Some(c) = cache {
                c.remember(batch_digest, &key);
            }
        }
        let batch = ReceiptBatch::decode(signed.payload())?;
        let receipt = Receipt::decode(&payload)?;
        check_signer(&receipt, &node)?;
        if batch.recipient != node || batch.federation != receipt.federation {
            return Err(VerifyError::UnknownKey(format!(
                "receipt batch of {} ({}) signed by {node}, for a receipt of {} ({})",
                batch.recipient, batch.federation, receipt.recipient, receipt.federation
            )));
        }
        crate::merkle::verify_inclusion(
            &crate::merkle::leaf_hash(&payload),
            index,
            batch.size,
            &path,
            &batch.root,
        )
        .map_err(|_| DecodeError::Field {
            object: OBJ,
            key: PROOF_PATH,
            problem: "the receipt is not in the signed batch: its path does not lead to the \
                      batch's root",
        })?;
        Ok(Self {
            bytes: bytes.to_vec(),
            digest: Digest::of(bytes),
            receipt,
            batch: Some(signed),
        })
    }

    /// The verified receipt.
    pub fn receipt(&self) -> &Receipt {
        &self.receipt
    }

    /// The encoded receipt: the signed receipt, or the receipt's proof.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The receipt's own identity: the digest of the signed receipt (§3), or the SHA-256 of
    /// the proof's bytes.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// The signed batch this receipt is proved by, if it is batched.
    pub fn batch(&self) -> Option<&SignedObject> {
        self.batch.as_ref()
    }
}

fn check_signer(receipt: &Receipt, node: &NodeId) -> Result<(), VerifyError> {
    if receipt.recipient != *node {
        return Err(VerifyError::UnknownKey(format!(
            "receipt for {} signed by {node}",
            receipt.recipient
        )));
    }
    Ok(())
}

/// Opens a signed receipt batch on its own (an audit entry of kind 3 may hold one): the
/// signer must be the batch's recipient.
pub fn open_batch(
    bytes: &[u8],
    signer: impl FnOnce(&Kid) -> Option<(NodeId, PublicKey)>,
) -> Result<(SignedObject, ReceiptBatch), VerifyError> {
    let (signed, node) =
        crate::cose::open_by_member(bytes, MAX_ENVELOPE_LEN, TYP_RECEIPT_BATCH, signer)?;
    let batch = ReceiptBatch::decode(signed.payload())?;
    if batch.recipient != node {
        return Err(VerifyError::UnknownKey(format!(
            "receipt batch of {} signed by {node}",
            batch.recipient
        )));
    }
    Ok((signed, batch))
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

    fn receipt(n: u8) -> Receipt {
        Receipt {
            federation: "cn-atip-demo".into(),
            message_digest: Digest([n; 32]),
            message_id: MessageId([n; 16]),
            sender: NodeId::new("cn-35-psb").unwrap(),
            recipient: NodeId::new("cn-61-psb").unwrap(),
            at: 42,
            status: ReceiptStatus::Delivered,
            log_ref: Some(("cn-61-psb/log".into(), u64::from(n))),
        }
    }

    #[test]
    fn every_receipt_of_a_batch_opens_by_its_proof_alone() {
        let sk = SigningKey::from_bytes(&[5; 32]);
        let pk = PublicKey::from(&sk);
        let me = NodeId::new("cn-61-psb").unwrap();
        for n in [1u8, 2, 3, 7, 8, 41] {
            let receipts: Vec<Receipt> = (0..n).map(receipt).collect();
            let (batch, proofs) =
                SignedReceipt::sign_batch("cn-atip-demo", &me, receipts.clone(), &sk);
            let (_, b) = open_batch(batch.bytes(), |_| Some((me.clone(), pk))).unwrap();
            assert_eq!(b.size, u64::from(n));
            for (p, r) in proofs.iter().zip(&receipts) {
                let ok = SignedReceipt::open(p.bytes(), |_| Some((me.clone(), pk))).unwrap();
                assert_eq!(ok.receipt(), r);
                assert_eq!(ok.digest(), Digest::of(p.bytes()));
                assert_eq!(ok.batch().unwrap().bytes(), batch.bytes());
                // Signed by another member: refused.
                let other = NodeId::new("cn-35-psb").unwrap();
                assert!(SignedReceipt::open(p.bytes(), |_| Some((other, pk))).is_err());
            }
        }
    }

    #[test]
    fn a_proof_with_any_byte_changed_is_refused_and_the_cache_holds_whole_batches() {
        let sk = SigningKey::from_bytes(&[5; 32]);
        let pk = PublicKey::from(&sk);
        let me = NodeId::new("cn-61-psb").unwrap();
        let (_, proofs) =
            SignedReceipt::sign_batch("cn-atip-demo", &me, (0..5).map(receipt).collect(), &sk);
        let cache = BatchCache::default();
        let bytes = proofs[3].bytes().to_vec();
        // Verified once, remembered: the other receipts of the batch need no verification.
        SignedReceipt::open_cached(&bytes, |_| Some((me.clone(), pk)), Some(&cache)).unwrap();
        SignedReceipt::open_cached(proofs[1].bytes(), |_| Some((me.clone(), pk)), Some(&cache))
            .unwrap();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            let open = SignedReceipt::open_cached(&b, |_| Some((me.clone(), pk)), Some(&cache));
            if let Ok(r) = open {
                panic!("byte {i} changed, still opens: {:?}", r.receipt());
            }
        }
        // Another receipt's index, or a path cut short: refused.
        let mut other = receipt(3);
        other.message_id = MessageId([9; 16]);
        let forged = cbor::encode(
            &MapBuilder::new()
                .put(
                    PROOF_BATCH,
                    Value::Bytes(proofs[3].batch().unwrap().bytes().to_vec()),
                )
                .put(PROOF_RECEIPT, Value::Bytes(other.encode()))
                .put(PROOF_INDEX, 3u64)
                .put(PROOF_PATH, Value::Array(vec![]))
                .build(),
        );
        assert!(SignedReceipt::open(&forged, |_| Some((me.clone(), pk))).is_err());
    }
}
