//! C2SP signed notes: tlog-checkpoint, Ed25519 note signatures and tlog-cosignature/v1.
//!
//! ```text
//!  Frontier::root ─► Checkpoint ─► SignedNote::sign_checkpoint (log key, type 0x01)
//!                                   └► text ─► witness: parse, verify_signature, check a
//!                                      consistency proof, cosign (witness key, type 0x04)
//!                                   ◄─ NoteSignature line ─┘  SignedNote::add_signature
//! ```
//!
//! A signed note is UTF-8 text: the body (lines ending in `\n`), a blank line, then one line per
//! signature, `— <key name> <base64(key id ‖ signature)>\n` (`— ` is U+2014 U+0020). The key id
//! is `SHA-256(key name ‖ 0x0A ‖ type ‖ public key)[0..4]`, type 0x01 for an Ed25519 note
//! signature over the body bytes, 0x04 for a tlog-cosignature/v1, whose signature bytes are
//! `u64be(time) ‖ Ed25519(witness key, "cosignature/v1\ntime <time>\n" ‖ body)`.
//!
//! A checkpoint body is `<origin>\n<size>\n<base64 root>\n`. Liaison v1 accepts no extension
//! lines. Signature lines by other keys are kept (and re-emitted) but not trusted.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer as _, SigningKey};
use sha2::{Digest as _, Sha256};

use crate::keys::PublicKey;
use crate::merkle::Hash;

/// A generous cap for a checkpoint note: a few hundred bytes of body and up to
/// [`MAX_SIGNATURES`] signature lines of about 130 bytes each.
pub const MAX_NOTE_LEN: usize = 16 * 1024;

/// Most signature lines a note may carry (as Go's `golang.org/x/mod/sumdb/note`).
pub const MAX_SIGNATURES: usize = 100;

/// Key id type byte of an Ed25519 note signature.
pub const SIG_TYPE_ED25519: u8 = 0x01;

/// Key id type byte of a tlog-cosignature/v1 (Ed25519, with a timestamp).
pub const SIG_TYPE_COSIGNATURE_V1: u8 = 0x04;

/// The first line of the message a tlog-cosignature/v1 signs.
const COSIGNATURE_HEADER: &str = "cosignature/v1\n";

/// Starts every signature line: U+2014 EM DASH, U+0020 SPACE.
const SIG_LINE_PREFIX: &str = "\u{2014} ";

/// A 4-byte key id: `SHA-256(key name ‖ 0x0A ‖ type ‖ public key)[0..4]`.
pub type KeyId = [u8; 4];

/// Why a signed note or checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// The note is over the caller's size cap; nothing was parsed.
    #[error("signed note is {len} bytes, over the {max}-byte limit")]
    TooLong {
        /// Length of the text.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The text is not UTF-8.
    #[error("signed note is not valid UTF-8")]
    NotUtf8,
    /// A control character (other than newline) somewhere in the note.
    #[error("signed note contains control character U+{code:04X} at byte {at}")]
    ControlCharacter {
        /// The character's code point.
        code: u32,
        /// Its byte offset in the text.
        at: usize,
    },
    /// No blank line separates the text from the signatures.
    #[error("signed note has no blank line between its text and its signatures")]
    MissingBlankLine,
    /// The note text is empty or does not end in a newline.
    #[error("note text must be non-empty and end in a newline")]
    BadText,
    /// The note has no signature lines.
    #[error("signed note has no signature lines")]
    NoSignatures,
    /// More signature lines than [`MAX_SIGNATURES`].
    #[error("signed note has more than {max} signature lines")]
    TooManySignatures {
        /// The limit.
        max: usize,
    },
    /// A signature line that does not follow `— <name> <base64>`.
    #[error("signature line {line} is malformed: {problem}")]
    BadSignatureLine {
        /// 1-based position among the signature lines.
        line: usize,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// Two signature lines with the same key name and key id.
    #[error("two signatures by {name} with the same key id")]
    DuplicateSignature {
        /// The key name.
        name: String,
    },
    /// A key name (or checkpoint origin) that is empty, holds a space or a '+', or a control
    /// character.
    #[error(
        "invalid key name {name:?}: must be non-empty, without spaces, '+' or control characters"
    )]
    BadKeyName {
        /// The name as given.
        name: String,
    },
    /// A checkpoint whose origin line is empty.
    #[error("checkpoint origin line is empty")]
    EmptyOrigin,
    /// A cosignature time over 2^63 - 1 (tlog-cosignature forbids it).
    #[error("cosignature time {time} is over 2^63 - 1")]
    CosignatureTime {
        /// The time, Unix seconds.
        time: u64,
    },
    /// A checkpoint body that is not three lines.
    #[error("checkpoint must be three lines (origin, size, root hash), got {lines}")]
    CheckpointLines {
        /// Lines found.
        lines: usize,
    },
    /// A checkpoint with extension lines after the root hash.
    #[error("checkpoint has {count} extension line(s); liaison v1 accepts none")]
    ExtensionLines {
        /// How many.
        count: usize,
    },
    /// A tree size that is not a canonical decimal u64.
    #[error("checkpoint tree size {text:?} is not a decimal number without leading zeros")]
    BadSize {
        /// The size line.
        text: String,
    },
    /// A root hash that is not canonical standard base64 of 32 bytes.
    #[error("checkpoint root hash {text:?} is not padded standard base64 of 32 bytes")]
    BadRoot {
        /// The root line.
        text: String,
    },
    /// No signature line with the expected key name.
    #[error("no signature by {name}")]
    MissingSignature {
        /// The key name looked for.
        name: String,
    },
    /// A line with the expected name but another key id.
    #[error(
        "checkpoint signed by the wrong key: {name} signed with key id {}, expected {}",
        hex::encode(.got), hex::encode(.expected)
    )]
    WrongKey {
        /// The key name.
        name: String,
        /// Key id on the line.
        got: KeyId,
        /// Key id of the key we trust for that name.
        expected: KeyId,
    },
    /// A signature of the wrong length for its type.
    #[error("signature by {name} is {len} bytes, expected {expected}")]
    SignatureLength {
        /// The key name.
        name: String,
        /// Bytes after the key id.
        len: usize,
        /// Bytes its type has.
        expected: usize,
    },
    /// The note signature does not verify (`verify_strict`): the text was altered or the
    /// signature forged.
    #[error(
        "signature by {name} does not verify: the note text was altered or the signature forged"
    )]
    BadSignature {
        /// The key name.
        name: String,
    },
    /// The cosignature does not verify over this checkpoint and its time.
    #[error("cosignature by {name} is over a different tree (or time), or forged")]
    CosignatureMismatch {
        /// The witness name.
        name: String,
    },
}

/// A tlog-checkpoint: the log's origin, tree size and root hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    origin: String,
    size: u64,
    root: Hash,
}

impl Checkpoint {
    /// A checkpoint; `origin` (for a liaison node, `<node id>/log`, also the log's key name)
    /// must be a valid key name: non-empty, without spaces, '+' or control characters.
    pub fn new(origin: impl Into<String>, size: u64, root: Hash) -> Result<Self, NoteError> {
        let origin = origin.into();
        check_name(&origin)?;
        Ok(Self { origin, size, root })
    }

    /// Parses a checkpoint body strictly: exactly three lines, a non-empty origin, a canonical
    /// decimal size, a root in padded standard base64 of exactly 32 bytes, no extension lines,
    /// no control characters. The origin may be any text (C2SP only recommends the key-name
    /// form); compare it with the origin you expect.
    pub fn parse(body: &str) -> Result<Self, NoteError> {
        let Some(text) = body.strip_suffix('\n') else {
            return Err(NoteError::BadText);
        };
        let lines: Vec<&str> = text.split('\n').collect();
        let [origin, size, root, extensions @ ..] = lines.as_slice() else {
            return Err(NoteError::CheckpointLines { lines: lines.len() });
        };
        if !extensions.is_empty() {
            return Err(NoteError::ExtensionLines {
                count: extensions.len(),
            });
        }
        // C2SP: the origin MUST be non-empty; that it is a key-name-like URL is only a SHOULD
        // that clients must not assume. Callers compare it with the origin they expect.
        if origin.is_empty() {
            return Err(NoteError::EmptyOrigin);
        }
        check_controls(body)?;
        let size = parse_size(size).ok_or_else(|| NoteError::BadSize {
            text: (*size).to_owned(),
        })?;
        let root = decode_base64(root)
            .and_then(|b| Hash::try_from(b).ok())
            .ok_or_else(|| NoteError::BadRoot {
                text: (*root).to_owned(),
            })?;
        Ok(Self {
            origin: (*origin).to_owned(),
            size,
            root,
        })
    }

    /// The note body: `<origin>\n<size>\n<base64 root>\n`.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root)
        )
    }

    /// The log's origin line (its identity).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The tree size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root hash of the tree of that size.
    pub fn root(&self) -> &Hash {
        &self.root
    }
}

/// One signature line of a note: a key name, a key id and the signature bytes after the id
/// (64 for an Ed25519 note signature, 72 for a tlog-cosignature/v1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    name: String,
    key_id: KeyId,
    signature: Vec<u8>,
}

impl NoteSignature {
    /// Parses one line, `— <name> <base64>` with or without its final newline (as a witness
    /// returns it).
    pub fn parse_line(line: &str) -> Result<Self, NoteError> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        if line.contains('\n') {
            return Err(NoteError::BadSignatureLine {
                line: 1,
                problem: "more than one line",
            });
        }
        check_controls(line)?;
        parse_signature_line(line, 1)
    }

    /// The line, with its final newline.
    pub fn to_line(&self) -> String {
        let mut raw = Vec::with_capacity(4 + self.signature.len());
        raw.extend_from_slice(&self.key_id);
        raw.extend_from_slice(&self.signature);
        format!("{SIG_LINE_PREFIX}{} {}\n", self.name, BASE64.encode(raw))
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key id.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The signature bytes after the key id.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }
}

/// A signed note: its body text and its signature lines, checked for form but not trusted
/// until [`SignedNote::verify_signature`] passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    body: String,
    signatures: Vec<NoteSignature>,
}

impl SignedNote {
    /// Parses a signed note of at most `max_len` bytes (checked first): valid UTF-8, no control
    /// characters but newline, a non-empty body ending in a newline, a blank line, then 1 to
    /// [`MAX_SIGNATURES`] well-formed signature lines, no two with the same name and key id.
    pub fn parse(text: impl AsRef<[u8]>, max_len: usize) -> Result<Self, NoteError> {
        let bytes = text.as_ref();
        if bytes.len() > max_len {
            return Err(NoteError::TooLong {
                len: bytes.len(),
                max: max_len,
            });
        }
        let text = std::str::from_utf8(bytes).map_err(|_| NoteError::NotUtf8)?;
        check_controls(text)?;
        // Signature lines hold no blank line, so the last one ends the body.
        let Some(split) = text.rfind("\n\n") else {
            return Err(NoteError::MissingBlankLine);
        };
        // `split` is the offset of an ASCII newline, so both ends are character boundaries.
        let (Some(body), Some(sigs)) = (text.get(..=split), text.get(split + 2..)) else {
            return Err(NoteError::MissingBlankLine);
        };
        if sigs.is_empty() {
            return Err(NoteError::NoSignatures);
        }
        let Some(sigs) = sigs.strip_suffix('\n') else {
            return Err(NoteError::BadSignatureLine {
                line: sigs.split('\n').count(),
                problem: "does not end in a newline",
            });
        };
        let mut note = Self {
            body: body.to_owned(),
            signatures: Vec::new(),
        };
        for (i, line) in sigs.split('\n').enumerate() {
            if i == MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures {
                    max: MAX_SIGNATURES,
                });
            }
            note.add_signature(parse_signature_line(line, i + 1)?)?;
        }
        Ok(note)
    }

    /// Signs `body` (non-empty text ending in a newline, no control characters but newline)
    /// as key `key_name`.
    pub fn sign(
        body: impl Into<String>,
        key_name: &str,
        key: &SigningKey,
    ) -> Result<Self, NoteError> {
        let body = body.into();
        if body.is_empty() || !body.ends_with('\n') {
            return Err(NoteError::BadText);
        }
        check_controls(&body)?;
        check_name(key_name)?;
        let signature = key.sign(body.as_bytes()).to_bytes().to_vec();
        let key_id = note_key_id(key_name, &PublicKey::from(key));
        Ok(Self {
            signatures: vec![NoteSignature {
                name: key_name.to_owned(),
                key_id,
                signature,
            }],
            body,
        })
    }

    /// Signs a checkpoint as the log key `key_name` (for a liaison node, `<node id>/log`).
    pub fn sign_checkpoint(
        checkpoint: &Checkpoint,
        key_name: &str,
        key: &SigningKey,
    ) -> Result<Self, NoteError> {
        Self::sign(checkpoint.body(), key_name, key)
    }

    /// The note as text: body, blank line, signature lines.
    pub fn to_text(&self) -> String {
        let mut text = String::with_capacity(self.body.len() + 1 + 128 * self.signatures.len());
        text.push_str(&self.body);
        text.push('\n');
        for sig in &self.signatures {
            text.push_str(&sig.to_line());
        }
        text
    }

    /// The body text (what a note signature signs).
    pub fn body(&self) -> &str {
        &self.body
    }

    /// The signature lines, in order, including those of unknown keys.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// The body parsed as a checkpoint (trust it only after [`Self::verify_signature`]).
    pub fn checkpoint(&self) -> Result<Checkpoint, NoteError> {
        Checkpoint::parse(&self.body)
    }

    /// Appends a signature line (a cosignature a witness sent back, say). Refuses a second line
    /// with the same name and key id, and more than [`MAX_SIGNATURES`] lines.
    pub fn add_signature(&mut self, signature: NoteSignature) -> Result<(), NoteError> {
        if self
            .signatures
            .iter()
            .any(|s| s.name == signature.name && s.key_id == signature.key_id)
        {
            return Err(NoteError::DuplicateSignature {
                name: signature.name,
            });
        }
        if self.signatures.len() >= MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures {
                max: MAX_SIGNATURES,
            });
        }
        self.signatures.push(signature);
        Ok(())
    }

    /// Adds a tlog-cosignature/v1 by `witness_name` at `time_secs` (Unix seconds). The body
    /// must be a checkpoint. The caller (a witness) has checked the log's signature and a
    /// consistency proof from the last tree it cosigned before it calls this.
    pub fn add_cosignature(
        &mut self,
        witness_name: &str,
        key: &SigningKey,
        time_secs: u64,
    ) -> Result<(), NoteError> {
        let sig = cosign(&self.checkpoint()?, witness_name, key, time_secs)?;
        self.add_signature(sig)
    }

    /// Checks the Ed25519 note signature by `key_name` with `key` (`verify_strict`). Other
    /// lines are ignored.
    pub fn verify_signature(&self, key_name: &str, key: &PublicKey) -> Result<(), NoteError> {
        let sig = self.find(key_name, note_key_id(key_name, key))?;
        if sig.signature.len() != 64 {
            return Err(NoteError::SignatureLength {
                name: key_name.to_owned(),
                len: sig.signature.len(),
                expected: 64,
            });
        }
        key.verify(self.body.as_bytes(), &sig.signature)
            .map_err(|_| NoteError::BadSignature {
                name: key_name.to_owned(),
            })
    }

    /// [`Self::verify_signature`] with the first of `keys` (a member's current key, then a
    /// previous one still listed) whose line the note holds; with none, the first key's error.
    pub fn verify_signature_by_any<'k>(
        &self,
        key_name: &str,
        keys: impl IntoIterator<Item = &'k PublicKey>,
    ) -> Result<(), NoteError> {
        let mut first = None;
        for key in keys {
            match self.verify_signature(key_name, key) {
                Err(e @ (NoteError::MissingSignature { .. } | NoteError::WrongKey { .. })) => {
                    first.get_or_insert(e);
                }
                other => return other,
            }
        }
        Err(first.unwrap_or(NoteError::MissingSignature {
            name: key_name.to_owned(),
        }))
    }

    /// [`Self::verify_cosignature`] with the first of `keys` whose line the note holds; with
    /// none, the first key's error.
    pub fn verify_cosignature_by_any<'k>(
        &self,
        witness_name: &str,
        keys: impl IntoIterator<Item = &'k PublicKey>,
    ) -> Result<u64, NoteError> {
        let mut first = None;
        for key in keys {
            match self.verify_cosignature(witness_name, key) {
                Err(e @ (NoteError::MissingSignature { .. } | NoteError::WrongKey { .. })) => {
                    first.get_or_insert(e);
                }
                other => return other,
            }
        }
        Err(first.unwrap_or(NoteError::MissingSignature {
            name: witness_name.to_owned(),
        }))
    }

    /// Checks the tlog-cosignature/v1 by `witness_name` with `key` (`verify_strict`) and returns
    /// its time (Unix seconds; at most 2^63 - 1). The body must be a checkpoint. This does not
    /// check the log's own signature ([`Self::verify_signature`]) nor whether the time is in
    /// the future (the caller has the clock).
    pub fn verify_cosignature(
        &self,
        witness_name: &str,
        key: &PublicKey,
    ) -> Result<u64, NoteError> {
        let checkpoint = self.checkpoint()?;
        let sig = self.find(witness_name, cosignature_key_id(witness_name, key))?;
        let (Some(time), Some(ed25519)) =
            (sig.signature.first_chunk::<8>(), sig.signature.get(8..))
        else {
            return Err(cosignature_length(witness_name, sig.signature.len()));
        };
        if ed25519.len() != 64 {
            return Err(cosignature_length(witness_name, sig.signature.len()));
        }
        let time = u64::from_be_bytes(*time);
        check_time(time)?;
        key.verify(&cosignature_message(&checkpoint, time), ed25519)
            .map_err(|_| NoteError::CosignatureMismatch {
                name: witness_name.to_owned(),
            })?;
        Ok(time)
    }

    /// The line by `name` with key id `key_id`; tells a missing line from a wrong key.
    fn find(&self, name: &str, key_id: KeyId) -> Result<&NoteSignature, NoteError> {
        let mut by_name = self.signatures.iter().filter(|s| s.name == name).peekable();
        let other = by_name.peek().map(|s| s.key_id);
        match by_name.find(|s| s.key_id == key_id) {
            Some(sig) => Ok(sig),
            None => Err(match other {
                Some(got) => NoteError::WrongKey {
                    name: name.to_owned(),
                    got,
                    expected: key_id,
                },
                None => NoteError::MissingSignature {
                    name: name.to_owned(),
                },
            }),
        }
    }
}

/// A tlog-cosignature/v1 line by `witness_name` over `checkpoint` at `time_secs` (Unix seconds,
/// at most 2^63 - 1), as a witness sends it back to the log.
pub fn cosign(
    checkpoint: &Checkpoint,
    witness_name: &str,
    key: &SigningKey,
    time_secs: u64,
) -> Result<NoteSignature, NoteError> {
    check_name(witness_name)?;
    check_time(time_secs)?;
    let ed25519 = key.sign(&cosignature_message(checkpoint, time_secs));
    let mut signature = Vec::with_capacity(72);
    signature.extend_from_slice(&time_secs.to_be_bytes());
    signature.extend_from_slice(&ed25519.to_bytes());
    Ok(NoteSignature {
        name: witness_name.to_owned(),
        key_id: cosignature_key_id(witness_name, &PublicKey::from(key)),
        signature,
    })
}

/// The message a tlog-cosignature/v1 signs: `"cosignature/v1\ntime <t>\n" ‖ checkpoint body`.
pub fn cosignature_message(checkpoint: &Checkpoint, time_secs: u64) -> Vec<u8> {
    format!(
        "{COSIGNATURE_HEADER}time {time_secs}\n{}",
        checkpoint.body()
    )
    .into_bytes()
}

/// The key id of an Ed25519 note signing key (type 0x01).
pub fn note_key_id(key_name: &str, key: &PublicKey) -> KeyId {
    key_id(key_name, SIG_TYPE_ED25519, key)
}

/// The key id of a tlog-cosignature/v1 witness key (type 0x04).
pub fn cosignature_key_id(witness_name: &str, key: &PublicKey) -> KeyId {
    key_id(witness_name, SIG_TYPE_COSIGNATURE_V1, key)
}

/// `SHA-256(name ‖ 0x0A ‖ type ‖ public key)[0..4]`.
fn key_id(name: &str, sig_type: u8, key: &PublicKey) -> KeyId {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', sig_type]);
    h.update(key.to_bytes());
    let digest: [u8; 32] = h.finalize().into();
    let mut id = [0u8; 4];
    id.copy_from_slice(&digest[..4]);
    id
}

/// tlog-cosignature: the timestamp "MUST NOT exceed 2^63 - 1".
fn check_time(time: u64) -> Result<(), NoteError> {
    if time > i64::MAX as u64 {
        return Err(NoteError::CosignatureTime { time });
    }
    Ok(())
}

fn cosignature_length(name: &str, len: usize) -> NoteError {
    NoteError::SignatureLength {
        name: name.to_owned(),
        len,
        expected: 72,
    }
}

/// A key name (or origin): non-empty, no Unicode white space, no '+', no control character.
fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
    {
        return Err(NoteError::BadKeyName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Refuses ASCII control characters (below U+0020) other than newline, as C2SP signed-note says.
fn check_controls(text: &str) -> Result<(), NoteError> {
    match text.char_indices().find(|(_, c)| *c < ' ' && *c != '\n') {
        Some((at, c)) => Err(NoteError::ControlCharacter {
            code: u32::from(c),
            at,
        }),
        None => Ok(()),
    }
}

/// Parses `— <name> <base64(key id ‖ signature)>` (no newline); `line` numbers errors.
fn parse_signature_line(text: &str, line: usize) -> Result<NoteSignature, NoteError> {
    let bad = |problem| NoteError::BadSignatureLine { line, problem };
    let rest = text
        .strip_prefix(SIG_LINE_PREFIX)
        .ok_or_else(|| bad("does not start with \"— \" (U+2014, space)"))?;
    let (name, b64) = rest
        .split_once(' ')
        .ok_or_else(|| bad("no space between key name and signature"))?;
    check_name(name).map_err(|_| bad("invalid key name"))?;
    if b64.is_empty() {
        return Err(bad("no signature after the key name"));
    }
    let raw = decode_base64(b64).ok_or_else(|| bad("signature is not padded standard base64"))?;
    let (Some(key_id), Some(signature)) = (raw.first_chunk::<4>(), raw.get(4..)) else {
        return Err(bad("signature is shorter than 5 bytes"));
    };
    if signature.is_empty() {
        return Err(bad("signature is shorter than 5 bytes"));
    }
    Ok(NoteSignature {
        name: name.to_owned(),
        key_id: *key_id,
        signature: signature.to_vec(),
    })
}

/// Strict standard base64: padded, canonical trailing bits, nothing else.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let bytes = BASE64.decode(text).ok()?;
    (BASE64.encode(&bytes) == text).then_some(bytes)
}

/// A decimal u64 with no sign and no leading zero (except "0").
fn parse_size(text: &str) -> Option<u64> {
    let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = text.len() > 1 && text.starts_with('0');
    if !digits_only || leading_zero {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "cn-35-psb/log";
    const WITNESS: &str = "cn-61-psb/witness";
    const TIME: u64 = 1_700_000_000;

    /// Made with Python's `cryptography` (an independent Ed25519) from the same seeds: log key
    /// seed 32 × 0x01, witness key seed 32 × 0x02, root = RFC 6962 root of the 8 test leaves.
    const GOLDEN: &str = "cn-35-psb/log\n\
        8\n\
        XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n\
        \n\
        \u{2014} cn-35-psb/log tTPiZzIwfzQ+i8I4+wGz0AoUkxnVs5JJcRCPFE7L39G1wPVuODX5MlOSxJqAJ3pQtFFf//wZlccC4K9PYGnbq65hUQI=\n\
        \u{2014} cn-61-psb/witness vQMTYAAAAABlU/EAPhCtuw6pMvUKi558ezP2r/ugGU7ra9M76GEWRy8ijovnSKE8I6IFsAXliYUH/Mm/J5U1OLQt8CXA/V6ko/YpAw==\n";

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn public(seed: u8) -> PublicKey {
        PublicKey::from(&key(seed))
    }

    fn checkpoint(size: u64) -> Checkpoint {
        Checkpoint::new(LOG, size, crate::merkle::leaf_hash(&size.to_be_bytes())).unwrap()
    }

    fn signed(size: u64) -> SignedNote {
        SignedNote::sign_checkpoint(&checkpoint(size), LOG, &key(1)).unwrap()
    }

    fn cosigned(size: u64) -> SignedNote {
        let mut note = signed(size);
        note.add_cosignature(WITNESS, &key(2), TIME).unwrap();
        note
    }

    fn parse(text: &str) -> Result<SignedNote, NoteError> {
        SignedNote::parse(text, MAX_NOTE_LEN)
    }

    #[test]
    fn golden_checkpoint_text() {
        let root: Hash =
            hex::decode("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")
                .unwrap()
                .try_into()
                .unwrap();
        let cp = Checkpoint::new(LOG, 8, root).unwrap();
        assert_eq!(
            cp.body(),
            "cn-35-psb/log\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n"
        );
        let mut note = SignedNote::sign_checkpoint(&cp, LOG, &key(1)).unwrap();
        note.add_cosignature(WITNESS, &key(2), TIME).unwrap();
        assert_eq!(note.to_text(), GOLDEN);

        assert_eq!(hex::encode(note_key_id(LOG, &public(1))), "b533e267");
        assert_eq!(
            hex::encode(cosignature_key_id(WITNESS, &public(2))),
            "bd031360"
        );
        let parsed = parse(GOLDEN).unwrap();
        assert_eq!(parsed.checkpoint().unwrap(), cp);
        parsed.verify_signature(LOG, &public(1)).unwrap();
        assert_eq!(parsed.verify_cosignature(WITNESS, &public(2)), Ok(TIME));
    }

    #[test]
    fn round_trip() {
        let note = cosigned(42);
        let text = note.to_text();
        let parsed = parse(&text).unwrap();
        assert_eq!(parsed, note);
        assert_eq!(parsed.to_text(), text);
        assert_eq!(parsed.checkpoint().unwrap(), checkpoint(42));
        assert_eq!(parsed.signatures().len(), 2);
        parsed.verify_signature(LOG, &public(1)).unwrap();
        assert_eq!(parsed.verify_cosignature(WITNESS, &public(2)), Ok(TIME));
        // Parsing takes bytes as well as text.
        assert_eq!(
            SignedNote::parse(text.as_bytes(), text.len()).unwrap(),
            note
        );
    }

    #[test]
    fn witness_line_travels_alone() {
        let line = cosign(&checkpoint(7), WITNESS, &key(2), TIME)
            .unwrap()
            .to_line();
        let sig = NoteSignature::parse_line(&line).unwrap();
        assert_eq!(sig.name(), WITNESS);
        assert_eq!(sig.signature().len(), 72);
        let mut note = signed(7);
        note.add_signature(sig.clone()).unwrap();
        assert_eq!(note.verify_cosignature(WITNESS, &public(2)), Ok(TIME));
        assert_eq!(
            note.add_signature(sig),
            Err(NoteError::DuplicateSignature {
                name: WITNESS.to_owned()
            })
        );
        assert!(NoteSignature::parse_line(&format!("{line}{line}")).is_err());
    }

    #[test]
    fn wrong_key_refused() {
        let note = cosigned(5);
        let err = note.verify_signature(LOG, &public(3)).unwrap_err();
        assert!(matches!(err, NoteError::WrongKey { .. }));
        assert!(
            err.to_string()
                .starts_with("checkpoint signed by the wrong key"),
            "{err}"
        );
        assert!(matches!(
            note.verify_cosignature(WITNESS, &public(3)),
            Err(NoteError::WrongKey { .. })
        ));
        // The log key under another name, and the witness key as a log key, are other key ids.
        assert_eq!(
            note.verify_signature("vn-laocai-bg/log", &public(1)),
            Err(NoteError::MissingSignature {
                name: "vn-laocai-bg/log".to_owned()
            })
        );
        assert!(matches!(
            note.verify_signature(WITNESS, &public(2)),
            Err(NoteError::WrongKey { .. })
        ));
        // A note signature is not a cosignature, even by the same key and name.
        let by_log_key_as_witness =
            SignedNote::sign(checkpoint(5).body(), WITNESS, &key(2)).unwrap();
        assert!(matches!(
            by_log_key_as_witness.verify_cosignature(WITNESS, &public(2)),
            Err(NoteError::WrongKey { .. })
        ));
    }

    #[test]
    fn cosignature_over_a_different_tree_refused() {
        let line = cosigned(42).signatures()[1].clone();
        let mut other = signed(43);
        other.add_signature(line).unwrap();
        let err = other.verify_cosignature(WITNESS, &public(2)).unwrap_err();
        assert_eq!(
            err,
            NoteError::CosignatureMismatch {
                name: WITNESS.to_owned()
            }
        );
        assert!(
            err.to_string()
                .starts_with("cosignature by cn-61-psb/witness is over a different tree")
        );
    }

    #[test]
    fn tampered_size_root_or_time_refused() {
        let text = cosigned(8).to_text();
        let tampered_size = text.replacen("\n8\n", "\n9\n", 1);
        let root_line = text.lines().nth(2).unwrap();
        let mut root = root_line.as_bytes().to_vec();
        root[0] = if root[0] == b'A' { b'B' } else { b'A' };
        let tampered_root = text.replacen(root_line, std::str::from_utf8(&root).unwrap(), 1);
        for t in [tampered_size, tampered_root] {
            let note = parse(&t).unwrap();
            assert_eq!(
                note.verify_signature(LOG, &public(1)),
                Err(NoteError::BadSignature {
                    name: LOG.to_owned()
                })
            );
            assert!(matches!(
                note.verify_cosignature(WITNESS, &public(2)),
                Err(NoteError::CosignatureMismatch { .. })
            ));
        }

        // The cosignature's time is signed too.
        let note = cosigned(8);
        let sig = &note.signatures()[1];
        let mut raw = sig.signature().to_vec();
        raw[7] ^= 1;
        let forged = NoteSignature {
            name: sig.name().to_owned(),
            key_id: sig.key_id(),
            signature: raw,
        };
        let mut tampered = signed(8);
        tampered.add_signature(forged).unwrap();
        assert!(matches!(
            tampered.verify_cosignature(WITNESS, &public(2)),
            Err(NoteError::CosignatureMismatch { .. })
        ));
    }

    #[test]
    fn every_altered_byte_is_refused() {
        // One bit per byte, its position rotating (a strict Ed25519 check in a debug build is
        // slow; every bit of every byte would take twenty seconds).
        let text = cosigned(3).to_text();
        for i in 0..text.len() {
            let mut b = text.as_bytes().to_vec();
            b[i] ^= 1 << (i % 8);
            let ok = SignedNote::parse(&b, MAX_NOTE_LEN).and_then(|n| {
                n.verify_signature(LOG, &public(1))?;
                n.verify_cosignature(WITNESS, &public(2))?;
                n.checkpoint()
            });
            assert!(ok.is_err(), "flip of byte {i} accepted");
        }
    }

    #[test]
    fn unknown_signature_lines_are_kept_and_ignored() {
        let mut note = signed(9);
        let other = SignedNote::sign(note.body().to_owned(), "example.org/other", &key(9)).unwrap();
        note.add_signature(other.signatures()[0].clone()).unwrap();
        // An opaque signature type with a short signature.
        let odd = format!(
            "{SIG_LINE_PREFIX}example.org/odd {}\n",
            BASE64.encode([1, 2, 3, 4, 5])
        );
        note.add_signature(NoteSignature::parse_line(&odd).unwrap())
            .unwrap();
        let parsed = parse(&note.to_text()).unwrap();
        assert_eq!(parsed.signatures().len(), 3);
        assert!(parsed.to_text().ends_with(&odd));
        parsed.verify_signature(LOG, &public(1)).unwrap();
    }

    #[test]
    fn signature_of_the_wrong_length_refused() {
        let mut note = Checkpoint::new(LOG, 1, [0; 32])
            .map(|cp| SignedNote {
                body: cp.body(),
                signatures: Vec::new(),
            })
            .unwrap();
        note.add_signature(NoteSignature {
            name: LOG.to_owned(),
            key_id: note_key_id(LOG, &public(1)),
            signature: vec![0; 63],
        })
        .unwrap();
        note.add_signature(NoteSignature {
            name: WITNESS.to_owned(),
            key_id: cosignature_key_id(WITNESS, &public(2)),
            signature: vec![0; 8],
        })
        .unwrap();
        let note = parse(&note.to_text()).unwrap();
        assert!(matches!(
            note.verify_signature(LOG, &public(1)),
            Err(NoteError::SignatureLength {
                len: 63,
                expected: 64,
                ..
            })
        ));
        assert!(matches!(
            note.verify_cosignature(WITNESS, &public(2)),
            Err(NoteError::SignatureLength {
                len: 8,
                expected: 72,
                ..
            })
        ));
    }

    #[test]
    fn malformed_notes_refused() {
        let good = signed(4).to_text();
        let (body, sig_line) = good.split_once("\n\n").unwrap();
        let b64 = sig_line.trim_end().rsplit_once(' ').unwrap().1.to_owned();
        let line = |name: &str, b64: &str| format!("{SIG_LINE_PREFIX}{name} {b64}\n");
        let note = |sigs: &str| format!("{body}\n\n{sigs}");
        let malformed = |text: &str, problem: &str| match parse(text) {
            Err(NoteError::BadSignatureLine { problem: p, .. }) => {
                assert!(p.contains(problem), "{text:?}: {p}");
            }
            other => panic!("{text:?}: {other:?}"),
        };

        assert_eq!(
            parse(&format!("{body}\n{sig_line}")),
            Err(NoteError::MissingBlankLine)
        );
        assert_eq!(parse(&format!("{body}\n\n")), Err(NoteError::NoSignatures));
        assert!(parse("").is_err());
        malformed(&note(sig_line.trim_end()), "newline");
        malformed(&note(&format!("-- {LOG} {b64}\n")), "U+2014");
        malformed(&note(&format!("\u{2014}{LOG} {b64}\n")), "U+2014");
        malformed(&note(&format!("{SIG_LINE_PREFIX}{LOG}\n")), "no space");
        malformed(&note(&line("", &b64)), "key name");
        malformed(&note(&line("a+b", &b64)), "key name");
        malformed(&note(&line(LOG, "")), "no signature");
        malformed(&note(&line(LOG, &b64.replace('=', ""))), "base64");
        malformed(&note(&line(LOG, &format!("{b64}="))), "base64");
        malformed(&note(&line(LOG, &format!("{b64} "))), "base64");
        malformed(
            &note(&line(LOG, &b64.replacen('/', "_", 1).replacen('+', "-", 1))),
            "base64",
        );
        // Non-zero trailing bits: a lenient decoder reads "AQIDBAV=" as [1, 2, 3, 4, 5] too.
        malformed(&note(&line(LOG, "AQIDBAV=")), "base64"); // "AQIDBAU=" with trailing bits set
        malformed(
            &note(&line(LOG, &BASE64.encode([1, 2, 3, 4]))),
            "shorter than 5",
        );
        assert_eq!(
            parse(&note(&format!("{}{}", line(LOG, &b64), line(LOG, &b64)))),
            Err(NoteError::DuplicateSignature {
                name: LOG.to_owned()
            })
        );

        // Control characters, anywhere.
        for bad in ["\r", "\t", "\u{1b}", "\0"] {
            let text = good.replacen("/log\n", &format!("/log{bad}\n"), 1);
            assert!(
                matches!(parse(&text), Err(NoteError::ControlCharacter { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(
            SignedNote::parse([0xff, b'\n', b'\n'], 100),
            Err(NoteError::NotUtf8)
        );

        // Too many signature lines.
        let many: String = (0..=MAX_SIGNATURES)
            .map(|i| line(&format!("w{i}"), &b64))
            .collect();
        assert_eq!(
            parse(&note(&many)),
            Err(NoteError::TooManySignatures {
                max: MAX_SIGNATURES
            })
        );
    }

    #[test]
    fn too_long_refused_before_any_work() {
        let text = signed(4).to_text();
        assert_eq!(
            SignedNote::parse(&text, text.len() - 1),
            Err(NoteError::TooLong {
                len: text.len(),
                max: text.len() - 1
            })
        );
        // Even garbage is measured before it is looked at.
        assert_eq!(
            SignedNote::parse(vec![0xff; 1000], 999),
            Err(NoteError::TooLong {
                len: 1000,
                max: 999
            })
        );
    }

    #[test]
    fn checkpoint_parsing_is_strict() {
        let root = BASE64.encode([7u8; 32]);
        let cp = |size: &str| Checkpoint::parse(&format!("{LOG}\n{size}\n{root}\n"));
        assert_eq!(cp("0").unwrap().size(), 0);
        assert_eq!(cp("18446744073709551615").unwrap().size(), u64::MAX);
        for bad in [
            "",
            "08",
            "00",
            "+8",
            "-1",
            " 8",
            "8 ",
            "1e3",
            "18446744073709551616",
            "٣",
        ] {
            assert!(matches!(cp(bad), Err(NoteError::BadSize { .. })), "{bad:?}");
        }

        let with_root = |root: &str| Checkpoint::parse(&format!("{LOG}\n1\n{root}\n"));
        assert_eq!(with_root(&root).unwrap().root(), &[7u8; 32]);
        let bad_roots = [
            BASE64.encode([7u8; 31]),
            BASE64.encode([7u8; 33]),
            root.trim_end_matches('=').to_owned(),
            root.replace('B', "_"),
            format!("{root} "),
            String::new(),
        ];
        for bad in bad_roots {
            assert!(
                matches!(with_root(&bad), Err(NoteError::BadRoot { .. })),
                "{bad:?}"
            );
        }

        let body = format!("{LOG}\n1\n{root}\n");
        assert_eq!(
            Checkpoint::parse(&format!("{body}extension line\n")),
            Err(NoteError::ExtensionLines { count: 1 })
        );
        assert_eq!(
            Checkpoint::parse(&format!("{LOG}\n1\n")),
            Err(NoteError::CheckpointLines { lines: 2 })
        );
        assert_eq!(Checkpoint::parse(body.trim_end()), Err(NoteError::BadText));
        assert_eq!(
            Checkpoint::parse(&format!("\n1\n{root}\n")),
            Err(NoteError::EmptyOrigin)
        );
        assert!(matches!(
            Checkpoint::parse(&format!("{LOG}\r\n1\n{root}\n")),
            Err(NoteError::ControlCharacter { .. })
        ));
        // C2SP only recommends key-name-like origins: another log's checkpoint may have any
        // origin, but liaison makes none that is not a key name.
        for origin in ["cn 35", "cn+35", "cn\u{a0}35"] {
            let parsed = Checkpoint::parse(&format!("{origin}\n1\n{root}\n")).unwrap();
            assert_eq!(parsed.origin(), origin);
            assert!(matches!(
                Checkpoint::new(origin, 1, [0; 32]),
                Err(NoteError::BadKeyName { .. })
            ));
        }
        assert!(Checkpoint::new("", 1, [0; 32]).is_err());

        // A signed note whose body has extension lines parses, but is no checkpoint: it cannot
        // be cosigned or have its cosignatures checked.
        let mut note = SignedNote::sign(format!("{body}extension\n"), LOG, &key(1)).unwrap();
        let mut reparsed = parse(&note.to_text()).unwrap();
        reparsed.verify_signature(LOG, &public(1)).unwrap();
        assert_eq!(
            reparsed.checkpoint(),
            Err(NoteError::ExtensionLines { count: 1 })
        );
        assert!(note.add_cosignature(WITNESS, &key(2), TIME).is_err());
        assert!(reparsed.add_cosignature(WITNESS, &key(2), TIME).is_err());
        assert!(reparsed.verify_cosignature(WITNESS, &public(2)).is_err());
    }

    #[test]
    fn cosignature_times_over_i64_max_refused() {
        let max = i64::MAX as u64;
        let mut note = signed(2);
        note.add_cosignature(WITNESS, &key(2), max).unwrap();
        assert_eq!(note.verify_cosignature(WITNESS, &public(2)), Ok(max));
        assert_eq!(
            cosign(&checkpoint(2), WITNESS, &key(2), max + 1),
            Err(NoteError::CosignatureTime { time: max + 1 })
        );
        // A line claiming time 2^63, made by hand, is refused before its signature is checked.
        let mut raw = note.signatures()[1].signature().to_vec();
        raw[0] = 0x80;
        raw[1..8].fill(0);
        let mut forged = signed(2);
        forged
            .add_signature(NoteSignature {
                name: WITNESS.to_owned(),
                key_id: cosignature_key_id(WITNESS, &public(2)),
                signature: raw,
            })
            .unwrap();
        assert_eq!(
            forged.verify_cosignature(WITNESS, &public(2)),
            Err(NoteError::CosignatureTime { time: 1 << 63 })
        );
    }

    #[test]
    fn key_names_are_checked_when_signing() {
        for name in ["", "a b", "a+b", "a\tb"] {
            assert!(matches!(
                SignedNote::sign_checkpoint(&checkpoint(1), name, &key(1)),
                Err(NoteError::BadKeyName { .. })
            ));
            assert!(cosign(&checkpoint(1), name, &key(2), TIME).is_err());
        }
        assert_eq!(
            SignedNote::sign("no newline", LOG, &key(1)),
            Err(NoteError::BadText)
        );
        assert_eq!(SignedNote::sign("", LOG, &key(1)), Err(NoteError::BadText));
    }
}
