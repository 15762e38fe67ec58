//! `Frame::decode` / `Frame::decode_exact` on arbitrary bytes: never panics, never reads past
//! the declared length, and a decoded frame re-encodes to exactly the bytes it used.
#![no_main]

use liaison_protocol::frame::HEAD_LEN;
use liaison_protocol::{Frame, FrameError};
use libfuzzer_sys::fuzz_target;

const CAP: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let decoded = Frame::decode(data, CAP);
    let exact = Frame::decode_exact(data, CAP);
    match decoded.clone() {
        Ok(Some((frame, used))) => {
            assert!(
                (HEAD_LEN..=data.len()).contains(&used),
                "used {used} of {}",
                data.len()
            );
            assert_eq!(frame.encoded_len(), used);
            let wire = &data[..used];
            let again = frame.to_bytes();
            assert_eq!(again, wire, "re-encoding differs from the input");
            // The re-encoding decodes to the same frame.
            assert_eq!(Frame::decode_exact(&again, CAP), Ok(frame.clone()));
            // decode_exact agrees with decode.
            if used == data.len() {
                assert_eq!(exact, Ok(frame));
            } else {
                assert_eq!(exact, Err(FrameError::Trailing(data.len() - used)));
            }
            // Trailing bytes do not change the frame; a cut frame asks for more.
            assert_eq!(Frame::decode(wire, CAP), decoded);
            assert_eq!(Frame::decode(&wire[..used - 1], CAP), Ok(None));
        }
        Ok(None) => {
            assert_eq!(exact, Err(FrameError::Malformed("truncated")));
            if data.len() >= HEAD_LEN {
                let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
                assert!(data.len() < HEAD_LEN + len);
            }
        }
        Err(e) => {
            assert_eq!(exact, Err(e.clone()));
            if let FrameError::TooLarge { len, cap } = e {
                assert!(len > cap);
            }
        }
    }
    // A tight cap: whatever fits is decoded the same way, whatever does not is refused.
    if data.len() >= HEAD_LEN {
        let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
        let tight = Frame::decode(data, len.saturating_sub(1));
        if len > 0 {
            // The declared length is checked before anything else.
            assert!(
                matches!(tight, Err(FrameError::TooLarge { .. })),
                "{tight:?}"
            );
        }
        if len <= CAP {
            assert_eq!(Frame::decode(data, len), decoded);
        }
    }
});
