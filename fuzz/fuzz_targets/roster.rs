//! `SignedRoster::open` (test key as the federation authority) on arbitrary bytes, two ways:
//! the input as a whole signed roster, and the input as a roster *payload* signed with the test
//! key (so the private payload decoder and its consistency checks are fuzzed past the
//! signature). Never panics; what opens re-encodes to its payload, and the policy functions
//! never panic on a roster that opened.
#![no_main]

use liaison_protocol::cose::TYP_ROSTER;
use liaison_protocol::roster::MAX_ROSTER_LEN;
use liaison_protocol::{Roster, SignedObject, SignedRoster};
use libfuzzer_sys::fuzz_target;

/// Room for the COSE_Sign1 around a payload (tag, header, signature), well over what it takes.
const COSE_OVERHEAD: usize = 256;

/// Member pairs to run the policy functions on (the roster can hold many members).
const MAX_PAIRS_SIDE: usize = 8;

fuzz_target!(|data: &[u8]| {
    let sk = liaison_fuzz::signing_key();
    let pk = liaison_fuzz::public_key();

    if let Ok(r) = SignedRoster::open(data, &pk) {
        assert_eq!(r.bytes(), data);
        let obj = SignedObject::parse(data, MAX_ROSTER_LEN).expect("it opened");
        assert_eq!(
            r.roster().encode(),
            obj.payload(),
            "roster re-encoding differs"
        );
        assert_eq!(
            r.roster().sign(&sk).bytes(),
            data,
            "re-signing does not reproduce it"
        );
        exercise(r.roster());
    }

    if data.len() + COSE_OVERHEAD <= MAX_ROSTER_LEN {
        let signed = SignedObject::sign(TYP_ROSTER, data.to_vec(), &sk);
        if let Ok(r) = SignedRoster::open(signed.bytes(), &pk) {
            assert_eq!(r.bytes(), signed.bytes());
            assert_eq!(
                r.roster().encode(),
                data,
                "roster re-encoding differs from its input"
            );
            exercise(r.roster());
        }
    }
});

/// Runs the roster's lookups and policy on its members: none may panic.
fn exercise(roster: &Roster) {
    let members = &roster.members[..roster.members.len().min(MAX_PAIRS_SIDE)];
    for a in members {
        assert_eq!(roster.member(&a.id).map(|m| &m.id), Some(&a.id));
        let _ = roster.active_member(&a.id);
        assert!(roster.signer(&a.signing_key.kid()).is_some());
        assert!(roster.by_tls_key(&a.tls_spki_sha256).is_some());
        for b in members {
            for kind in ["assist.request", "alert.missing_child", ""] {
                let _ = roster.check_send(&a.id, &b.id, kind);
            }
            let _ = roster.next_hop(&a.id, &b.id);
            if let (Some(la), Some(lb)) = (a.location, b.location) {
                let _ = la.distance_m(&lb);
            }
        }
    }
}
