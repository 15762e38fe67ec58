//! `SignedObject::parse` (COSE_Sign1, liaison profile) on arbitrary bytes: never panics; what
//! parses is exactly the input, parses again to the same object, and has the digest of its
//! ToBeSigned.
#![no_main]

use ed25519_dalek::SigningKey;
use liaison_protocol::cose::TYP_MESSAGE;
use liaison_protocol::roster::MAX_ROSTER_LEN;
use liaison_protocol::{Digest, SignedObject};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(obj) = SignedObject::parse(data, MAX_ROSTER_LEN) else {
        return;
    };
    assert_eq!(obj.bytes(), data, "parsed object is not its input");
    assert_eq!(
        SignedObject::parse(obj.bytes(), data.len()),
        Ok(obj.clone())
    );
    // The cap is a hard limit.
    assert!(SignedObject::parse(data, data.len() - 1).is_err());
    assert_eq!(obj.digest(), Digest::of(&obj.tbs()));
    assert_eq!(obj.kid().len(), 8);
    let _ = obj.expect_typ(TYP_MESSAGE);

    let pk = liaison_fuzz::public_key();
    if obj.verify_with(&pk).is_ok() {
        // Only the test key's own (deterministic, RFC 8032) signatures verify here, so signing
        // the same payload and typ again must give back the same bytes.
        let again = SignedObject::sign(
            obj.typ(),
            obj.payload().to_vec(),
            &liaison_fuzz::signing_key(),
        );
        assert_eq!(
            again.bytes(),
            data,
            "re-signing does not reproduce the object"
        );
    }
    // Another key (same kid is impossible) is refused without panicking.
    let other = liaison_protocol::PublicKey::from(&SigningKey::from_bytes(&[1; 32]));
    assert!(obj.verify_with(&other).is_err());
});
