//! Identifiers: node ids, message ids and digests, parsed into validated newtypes.

use std::fmt;

use sha2::{Digest as _, Sha256};

use crate::error::DecodeError;

/// Longest node or federation id.
pub const MAX_ID_LEN: usize = 64;

/// A member node's id: 1..64 characters of `a-z 0-9 - .`, starting with a letter or digit
/// (for example `cn-35-psb`). It is also the DNS name in the node's TLS certificate.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    /// Parses and validates a node id.
    pub fn new(s: impl Into<String>) -> Result<Self, DecodeError> {
        let s = s.into();
        check_id("node id", &s)?;
        Ok(Self(s))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for NodeId {
    type Err = DecodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl<'de> serde::Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

pub(crate) fn check_id(what: &'static str, s: &str) -> Result<(), DecodeError> {
    let problem = if s.is_empty() || s.len() > MAX_ID_LEN {
        Some(format!("must be 1 to {MAX_ID_LEN} characters"))
    } else if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        Some(format!("{s:?} may hold only a-z, 0-9, '-' and '.'"))
    } else if !s.as_bytes()[0].is_ascii_alphanumeric() {
        Some(format!("{s:?} must start with a letter or digit"))
    } else {
        None
    };
    match problem {
        Some(problem) => Err(DecodeError::Invalid { what, problem }),
        None => Ok(()),
    }
}

/// A 16-byte message id (UUIDv7 when made by a liaison node).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(pub [u8; 16]);

impl MessageId {
    /// Lower-case hex, 32 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 32 hex characters (dashes allowed, as in a UUID).
    pub fn from_hex(s: &str) -> Result<Self, DecodeError> {
        let clean: String = s.chars().filter(|c| *c != '-').collect();
        fixed_hex("message id", &clean).map(Self)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", self.to_hex())
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A SHA-256 digest; the identity of a signed object is the digest of its ToBeSigned.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// SHA-256 of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Result<Self, DecodeError> {
        fixed_hex("digest", s).map(Self)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Exactly `N` bytes from hex.
fn fixed_hex<const N: usize>(what: &'static str, s: &str) -> Result<[u8; N], DecodeError> {
    let bytes = hex::decode(s).map_err(|_| DecodeError::Invalid {
        what,
        problem: format!("{s:?} is not hex"),
    })?;
    bytes.try_into().map_err(|_| DecodeError::Invalid {
        what,
        problem: format!("must be {N} bytes ({} hex characters)", 2 * N),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids() {
        assert!(NodeId::new("cn-35-psb").is_ok());
        assert!(NodeId::new("vn.laocai-bg").is_ok());
        assert!(NodeId::new("").is_err());
        assert!(NodeId::new("-x").is_err());
        assert!(NodeId::new("CN").is_err());
        assert!(NodeId::new("a b").is_err());
        assert!(NodeId::new("a".repeat(65)).is_err());
    }

    #[test]
    fn message_id_hex() {
        let id = MessageId([0xab; 16]);
        assert_eq!(MessageId::from_hex(&id.to_hex()).unwrap(), id);
        assert!(MessageId::from_hex("abcd").is_err());
    }
}
