//! `SignedNonDelivery::open` on arbitrary bytes, two ways: the input as a whole signed record,
//! and the input as a record *payload* signed with the test key (so the private payload decoder
//! is fuzzed past the signature check). Never panics; what opens re-signs to exactly its bytes
//! (Ed25519 signatures are deterministic), so the payload re-encodes to its input.
#![no_main]

use liaison_protocol::cose::TYP_NONDELIVERY;
use liaison_protocol::envelope::MAX_ENVELOPE_LEN;
use liaison_protocol::{SignedNonDelivery, SignedObject};
use libfuzzer_sys::fuzz_target;

/// Room for the COSE_Sign1 around a payload (tag, header, signature), well over what it takes.
const COSE_OVERHEAD: usize = 256;

fuzz_target!(|data: &[u8]| {
    let sk = liaison_fuzz::signing_key();

    if let Ok(r) = SignedNonDelivery::open(data, liaison_fuzz::signer) {
        assert_eq!(r.bytes(), data);
        assert_eq!(r.record().dropped_by.as_str(), liaison_fuzz::SIGNER_NODE);
        let obj = SignedObject::parse(data, MAX_ENVELOPE_LEN).expect("it opened");
        assert_eq!(r.digest(), obj.digest());
        let again = SignedNonDelivery::sign(r.record().clone(), &sk);
        assert_eq!(
            again.bytes(),
            data,
            "re-signing does not reproduce the record"
        );
    }

    if data.len() + COSE_OVERHEAD <= MAX_ENVELOPE_LEN {
        let signed = SignedObject::sign(TYP_NONDELIVERY, data.to_vec(), &sk);
        if let Ok(r) = SignedNonDelivery::open(signed.bytes(), liaison_fuzz::signer) {
            assert_eq!(r.bytes(), signed.bytes());
            let again = SignedNonDelivery::sign(r.record().clone(), &sk);
            assert_eq!(
                SignedObject::parse(again.bytes(), MAX_ENVELOPE_LEN)
                    .expect("a signed record parses")
                    .payload(),
                data,
                "non-delivery record re-encoding differs from its input"
            );
        }
    }
});
