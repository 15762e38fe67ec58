//! `audit::Entry::decode` on arbitrary bytes: never panics; an entry that decodes re-encodes to
//! exactly its input.
#![no_main]

use liaison_protocol::audit::{Entry, MAX_ENTRY_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(entry) = Entry::decode(data) else {
        return;
    };
    assert!(data.len() <= MAX_ENTRY_LEN);
    let again = entry.encode();
    assert_eq!(
        again, data,
        "audit entry re-encoding differs from its input"
    );
    assert_eq!(Entry::decode(&again), Ok(entry));
});
