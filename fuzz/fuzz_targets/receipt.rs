//! `SignedReceipt::open` on arbitrary bytes, two ways: the input as a whole signed receipt or
//! receipt proof (protocol.md §4.3a), and the input as a receipt *payload* signed with the test
//! key (so the private payload decoder is fuzzed past the signature check). Never panics; a
//! signed receipt that opens re-signs to exactly its bytes (Ed25519 signatures are
//! deterministic), so the payload re-encodes to its input; a proof that opens is identified by
//! the SHA-256 of its bytes and its batch opens on its own.
#![no_main]

use liaison_protocol::cose::TYP_RECEIPT;
use liaison_protocol::envelope::MAX_ENVELOPE_LEN;
use liaison_protocol::{SignedObject, SignedReceipt};
use libfuzzer_sys::fuzz_target;

/// Room for the COSE_Sign1 around a payload (tag, header, signature), well over what it takes.
const COSE_OVERHEAD: usize = 256;

fuzz_target!(|data: &[u8]| {
    let sk = liaison_fuzz::signing_key();

    if let Ok(r) = SignedReceipt::open(data, liaison_fuzz::signer) {
        assert_eq!(r.bytes(), data);
        assert_eq!(r.receipt().recipient.as_str(), liaison_fuzz::SIGNER_NODE);
        if let Some(batch) = r.batch() {
            assert_eq!(r.digest(), liaison_protocol::Digest::of(data));
            liaison_protocol::receipt::open_batch(batch.bytes(), liaison_fuzz::signer)
                .expect("the batch of a proof that opened opens alone");
            return;
        }
        let obj = SignedObject::parse(data, MAX_ENVELOPE_LEN).expect("it opened");
        assert_eq!(r.digest(), obj.digest());
        let again = SignedReceipt::sign(r.receipt().clone(), &sk);
        assert_eq!(
            again.bytes(),
            data,
            "re-signing does not reproduce the receipt"
        );
    }

    if data.len() + COSE_OVERHEAD <= MAX_ENVELOPE_LEN {
        let signed = SignedObject::sign(TYP_RECEIPT, data.to_vec(), &sk);
        if let Ok(r) = SignedReceipt::open(signed.bytes(), liaison_fuzz::signer) {
            assert_eq!(r.bytes(), signed.bytes());
            let again = SignedReceipt::sign(r.receipt().clone(), &sk);
            assert_eq!(
                SignedObject::parse(again.bytes(), MAX_ENVELOPE_LEN)
                    .expect("a signed receipt parses")
                    .payload(),
                data,
                "receipt re-encoding differs from its input"
            );
        }
    }
});
