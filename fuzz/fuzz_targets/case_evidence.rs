//! `CaseEvidence::decode` on arbitrary bytes: what decodes re-encodes to its input, and
//! `verify` (test key as the federation authority) never panics on it.
#![no_main]

use liaison_protocol::evidence::CaseEvidence;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = CaseEvidence::decode(data) {
        assert_eq!(c.encode(), data, "case evidence re-encoding differs");
        let _ = c.verify(&liaison_fuzz::public_key());
    }
});
