//! C2SP signed notes and checkpoints on arbitrary bytes: `note::SignedNote::parse`,
//! `note::Checkpoint::parse` and `note::NoteSignature::parse_line`. Never panic; a note that
//! parses prints back (`to_text`) as exactly its input, a checkpoint's `body()` is exactly its
//! input, and a signature line prints back as its input (plus the final newline).
#![no_main]

use liaison_protocol::note::{Checkpoint, MAX_NOTE_LEN, NoteSignature, SignedNote};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(note) = SignedNote::parse(data, MAX_NOTE_LEN) {
        let text = note.to_text();
        assert_eq!(
            text.as_bytes(),
            data,
            "signed note does not print back as its input"
        );
        assert_eq!(SignedNote::parse(&text, data.len()), Ok(note.clone()));
        assert!(SignedNote::parse(data, data.len() - 1).is_err());
        assert!(!note.signatures().is_empty());
        for sig in note.signatures() {
            assert_eq!(NoteSignature::parse_line(&sig.to_line()).as_ref(), Ok(sig));
        }
        if let Ok(cp) = note.checkpoint() {
            assert_eq!(cp.body(), note.body());
        }
        // Signature checks with the test keys: any answer, no panic.
        let _ = note.verify_signature(liaison_fuzz::LOG_NAME, &liaison_fuzz::public_key());
        let witness = liaison_protocol::PublicKey::from(&liaison_fuzz::witness_key());
        let _ = note.verify_cosignature(liaison_fuzz::WITNESS_NAME, &witness);
    }

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cp) = Checkpoint::parse(text) {
        assert_eq!(cp.body(), text, "checkpoint body differs from its input");
        assert_eq!(Checkpoint::parse(&cp.body()), Ok(cp));
    }
    if let Ok(sig) = NoteSignature::parse_line(text) {
        let line = sig.to_line();
        let expected = text.strip_suffix('\n').unwrap_or(text);
        assert_eq!(
            line.strip_suffix('\n'),
            Some(expected),
            "signature line differs"
        );
        assert_eq!(NoteSignature::parse_line(&line), Ok(sig));
    }
});
