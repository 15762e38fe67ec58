//! C2SP signed notes: tlog-checkpoint, Ed25519 note signatures and tlog-cosignature/v1.
