//! `Envelope::open` (with the test key as the only signer), `Envelope::peek_unverified` and
//! `Header::decode` on arbitrary bytes: never panic; what decodes re-encodes to its input.
#![no_main]

use liaison_protocol::cose::TYP_MESSAGE;
use liaison_protocol::envelope::MAX_ENVELOPE_LEN;
use liaison_protocol::{Envelope, Header, SignedObject};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The whole input as a signed envelope.
    let opened = Envelope::open(data, liaison_fuzz::signer);
    let peeked = Envelope::peek_unverified(data);
    if let Some((digest, header)) = &peeked {
        let obj = SignedObject::parse(data, MAX_ENVELOPE_LEN).expect("peek parsed it");
        assert_eq!(*digest, obj.digest());
        assert_eq!(header.encode(), obj.payload(), "header re-encoding differs");
    }
    if let Ok(env) = &opened {
        assert_eq!(env.bytes(), data);
        let (digest, header) = peeked.expect("an envelope that opens can be peeked");
        assert_eq!(env.digest(), digest);
        assert_eq!(env.header(), &header);
        assert_eq!(env.header().from.as_str(), liaison_fuzz::SIGNER_NODE);
        // Sealing the same header again with the same (deterministic) key gives the same bytes.
        let again = Envelope::seal(env.header().clone(), &liaison_fuzz::signing_key());
        assert_eq!(
            again.bytes(),
            data,
            "re-sealing does not reproduce the envelope"
        );
        let _ = env.check_body(data);
    }

    // The whole input as a bare header (the payload decoder on its own).
    if let Ok(h) = Header::decode(data) {
        assert_eq!(h.encode(), data, "header re-encoding differs");
        assert_eq!(Header::decode(&h.encode()), Ok(h.clone()));
        // A header that decodes, signed by the test key: opens exactly when it claims to be from
        // the key's owner.
        let signed = SignedObject::sign(TYP_MESSAGE, data.to_vec(), &liaison_fuzz::signing_key());
        let env = Envelope::open(signed.bytes(), liaison_fuzz::signer);
        assert_eq!(
            env.is_ok(),
            h.from.as_str() == liaison_fuzz::SIGNER_NODE,
            "{env:?}"
        );
        if let Ok(env) = env {
            assert_eq!(env.header(), &h);
            assert_eq!(env.bytes(), signed.bytes());
            assert_eq!(env.digest(), signed.digest());
        }
    }
});
