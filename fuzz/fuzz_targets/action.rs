//! `Action::decode` on arbitrary bytes, and `SignedAction::open` on the input and on the input
//! signed as an action payload with the test key (the node key of `fuzz-node` in a one-member
//! roster), so the payload decoder and the credential checks are reached past the signature.
//! Never panics; what decodes re-encodes to its input; what opens runs through the state
//! machine without panicking.
#![no_main]

use liaison_protocol::action::{Action, MAX_ACTION_LEN, SignedAction};
use liaison_protocol::cose::TYP_ACTION;
use liaison_protocol::workflow::{self, Step};
use liaison_protocol::SignedObject;
use libfuzzer_sys::fuzz_target;

/// Room for the COSE_Sign1 around a payload.
const COSE_OVERHEAD: usize = 256;

fuzz_target!(|data: &[u8]| {
    let roster = liaison_fuzz::roster();
    if let Ok(a) = Action::decode(data) {
        assert_eq!(a.encode(), data, "action re-encoding differs");
    }
    if let Ok(a) = SignedAction::open(data, &roster) {
        exercise(&a, &roster);
    }
    if data.len() + COSE_OVERHEAD <= MAX_ACTION_LEN {
        let signed = SignedObject::sign(TYP_ACTION, data.to_vec(), &liaison_fuzz::signing_key());
        if let Ok(a) = SignedAction::open(signed.bytes(), &roster) {
            assert_eq!(a.action().encode(), data);
            exercise(&a, &roster);
        }
    }
});

fn exercise(a: &SignedAction, roster: &liaison_protocol::Roster) {
    let action = a.action();
    let step = Step {
        case_ref: &action.case_ref,
        kind: &action.kind,
        from: &action.node,
        to: &action.node,
        at: action.at,
        doc: &action.document,
        action: a.digest(),
        officer: a.actor(),
    };
    if let Ok(case) = workflow::apply(None, &step, roster) {
        let _ = workflow::mark_overdue(&case, action.at.saturating_add(1));
        let _ = workflow::delivered(&case);
        let _ = workflow::apply(Some(&case), &step, roster);
    }
}
