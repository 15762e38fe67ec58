//! Errors of the protocol layer, one enum per failure domain.

/// Bytes that are not a well-formed liaison object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The object is larger than its cap; nothing was decoded.
    #[error("object is {len} bytes, over the {cap}-byte limit")]
    TooLarge { len: usize, cap: usize },
    /// Not well-formed CBOR.
    #[error("not well-formed CBOR: {0}")]
    Malformed(String),
    /// Well-formed but not in deterministic encoding (non-shortest head, indefinite length,
    /// trailing bytes).
    #[error("CBOR is not in deterministic encoding (RFC 8949 §4.2)")]
    NonCanonical,
    /// Map keys not in ascending order, or duplicated.
    #[error("CBOR map keys are unsorted or duplicated")]
    MapOrder,
    /// Floats are not used by any liaison object.
    #[error("CBOR floats are not allowed")]
    Float,
    /// Optional fields are omitted, never null.
    #[error("CBOR null/undefined is not allowed (omit optional fields)")]
    Null,
    /// A tag where none is allowed.
    #[error("CBOR tag {0} is not allowed here")]
    Tag(u64),
    /// A map key that is not an unsigned integer 0..23.
    #[error("{object}: map keys must be unsigned integers 0..23")]
    MapKey { object: &'static str },
    /// A key this version does not know.
    #[error("{object}: unknown field {key}")]
    UnknownField { object: &'static str, key: u64 },
    /// A required field is absent.
    #[error("{object}: missing field {key}")]
    Missing { object: &'static str, key: u64 },
    /// A field has the wrong type or an invalid value.
    #[error("{object}: field {key}: {problem}")]
    Field {
        object: &'static str,
        key: u64,
        problem: &'static str,
    },
    /// The item is not of the expected shape.
    #[error("{object}: expected {expected}")]
    Shape {
        object: &'static str,
        expected: &'static str,
    },
    /// An identifier that breaks its syntax rules.
    #[error("invalid {what}: {problem}")]
    Invalid { what: &'static str, problem: String },
}

/// A signed object that fails its checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The bytes are not a well-formed object.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The protected header is not exactly `{1: -19, 4: kid, 16: typ}`.
    #[error("COSE protected header is not the liaison profile ({0})")]
    Header(&'static str),
    /// The `typ` is not the one expected here (a receipt offered as a message, say).
    #[error("wrong object type: expected {expected}, got {got}")]
    WrongType { expected: &'static str, got: String },
    /// The `kid` names no key that may sign this object.
    #[error("signed by an unknown key (kid {0})")]
    UnknownKey(String),
    /// The signer is not who the object says may sign it (an officer credential signed by
    /// another node, an action signed by a key other than the officer's).
    #[error("wrong signer: {0}")]
    UnknownSigner(String),
    /// Signed parts that contradict each other or the federation.
    #[error("{0}")]
    Mismatch(String),
    /// `verify_strict` refused the signature.
    #[error("bad signature")]
    BadSignature,
    /// A public key that is weak (small order) or not canonically encoded.
    #[error("public key refused: {0}")]
    WeakKey(&'static str),
}
