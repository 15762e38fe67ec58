//! `Document::decode` on arbitrary bytes: what decodes re-encodes to the input (one encoding
//! per document), and every kind's schema check (`workflow::validate`) runs on it without
//! panicking.
#![no_main]

use liaison_protocol::document::Document;
use liaison_protocol::workflow;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = Document::decode(data) {
        assert_eq!(d.encode(), data, "document re-encoding differs");
        for k in workflow::catalog() {
            let _ = workflow::validate(k.kind, &d);
        }
    }
});
