//! Business documents: the content of an officer's action (an assistance request, a
//! handover record, an alert …).
//!
//! A document is a deterministic CBOR map with **text** keys (readable field names, checked
//! against the per-kind schema in [`crate::workflow::catalog`]) whose values are text,
//! unsigned integers, booleans, lists and nested maps. No floats, no nulls, no bytes: hashes
//! and numbers that are not counts travel as text (hex for hashes). Keys are sorted as
//! RFC 8949 §4.2.1 requires (by their encoded bytes: shorter keys first), and decoding is
//! strict (decode, re-encode, compare), so a document has exactly one encoding and its
//! SHA-256 identifies it.
//!
//! Documents convert to and from JSON (`serde`) so officers can write them in files and the
//! CLI can print them.

use std::collections::BTreeMap;

use ciborium::Value;

use crate::cbor;
use crate::error::DecodeError;
use crate::ids::Digest;

/// Largest encoded document (a body is capped by the roster too; this is the parser's cap).
pub const MAX_DOCUMENT_LEN: usize = 1024 * 1024;
/// Longest field name.
pub const MAX_KEY_LEN: usize = 64;

/// One value in a document.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Field {
    /// `true` / `false`.
    Bool(bool),
    /// An unsigned integer (counts, times in Unix ms, distances in m).
    Uint(u64),
    /// Text (names, numbers with leading zeros, hex hashes, codes).
    Text(String),
    /// A list.
    List(Vec<Self>),
    /// A nested map.
    Map(Document),
}

impl Field {
    /// The text, if this is text.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is an unsigned integer.
    pub fn as_uint(&self) -> Option<u64> {
        match self {
            Self::Uint(n) => Some(*n),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The items, if this is a list.
    pub fn as_list(&self) -> Option<&[Self]> {
        match self {
            Self::List(l) => Some(l),
            _ => None,
        }
    }

    /// The map, if this is a nested map.
    pub fn as_map(&self) -> Option<&Document> {
        match self {
            Self::Map(m) => Some(m),
            _ => None,
        }
    }

    fn to_value(&self) -> Value {
        match self {
            Self::Bool(b) => Value::Bool(*b),
            Self::Uint(n) => Value::from(*n),
            Self::Text(s) => Value::Text(s.clone()),
            Self::List(l) => Value::Array(l.iter().map(Self::to_value).collect()),
            Self::Map(m) => m.to_value(),
        }
    }

    fn from_value(v: Value) -> Result<Self, DecodeError> {
        Ok(match v {
            Value::Bool(b) => Self::Bool(b),
            Value::Integer(i) => {
                Self::Uint(
                    u64::try_from(i128::from(i)).map_err(|_| DecodeError::Invalid {
                        what: "document",
                        problem: "negative numbers are not used in documents".into(),
                    })?,
                )
            }
            Value::Text(s) => Self::Text(s),
            Value::Array(a) => Self::List(
                a.into_iter()
                    .map(Self::from_value)
                    .collect::<Result<_, _>>()?,
            ),
            Value::Map(_) => Self::Map(Document::from_value(v)?),
            _ => {
                return Err(DecodeError::Invalid {
                    what: "document",
                    problem: "values are text, unsigned integers, booleans, lists or maps".into(),
                });
            }
        })
    }
}

impl From<&str> for Field {
    fn from(s: &str) -> Self {
        Self::Text(s.to_owned())
    }
}

impl From<String> for Field {
    fn from(s: String) -> Self {
        Self::Text(s)
    }
}

impl From<u64> for Field {
    fn from(n: u64) -> Self {
        Self::Uint(n)
    }
}

impl From<bool> for Field {
    fn from(b: bool) -> Self {
        Self::Bool(b)
    }
}

impl From<Document> for Field {
    fn from(d: Document) -> Self {
        Self::Map(d)
    }
}

impl From<Vec<Self>> for Field {
    fn from(l: Vec<Self>) -> Self {
        Self::List(l)
    }
}

/// A business document: field name → value.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Document(BTreeMap<String, Field>);

impl Document {
    /// An empty document.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a field (builder style).
    pub fn with(mut self, key: &str, value: impl Into<Field>) -> Self {
        self.0.insert(key.to_owned(), value.into());
        self
    }

    /// Sets a field.
    pub fn set(&mut self, key: &str, value: impl Into<Field>) {
        self.0.insert(key.to_owned(), value.into());
    }

    /// Removes a field, returning it.
    pub fn remove(&mut self, key: &str) -> Option<Field> {
        self.0.remove(key)
    }

    /// A field.
    pub fn get(&self, key: &str) -> Option<&Field> {
        self.0.get(key)
    }

    /// A text field.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Field::as_text)
    }

    /// An unsigned integer field.
    pub fn uint(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Field::as_uint)
    }

    /// A boolean field.
    pub fn bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(Field::as_bool)
    }

    /// A list field.
    pub fn list(&self, key: &str) -> Option<&[Field]> {
        self.get(key).and_then(Field::as_list)
    }

    /// A nested map field.
    pub fn map(&self, key: &str) -> Option<&Self> {
        self.get(key).and_then(Field::as_map)
    }

    /// Whether the field is present.
    pub fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// Field names, in name order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Fields, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Field)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the document has no fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The deterministic CBOR encoding.
    pub fn encode(&self) -> Vec<u8> {
        cbor::encode(&self.to_value())
    }

    /// SHA-256 of the deterministic encoding: the document's identity (a handover record
    /// signed by both sides is the same record when these agree).
    pub fn digest(&self) -> Digest {
        Digest::of(&self.encode())
    }

    /// Strictly decodes a document.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::from_value(cbor::decode_strict(bytes, MAX_DOCUMENT_LEN, None)?)
    }

    pub(crate) fn to_value(&self) -> Value {
        // RFC 8949 §4.2.1: sort by encoded key bytes (for text: shorter first, then bytewise).
        let mut entries: Vec<(&String, &Field)> = self.0.iter().collect();
        entries.sort_by(|(a, _), (b, _)| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
        Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (Value::Text(k.clone()), v.to_value()))
                .collect(),
        )
    }

    pub(crate) fn from_value(v: Value) -> Result<Self, DecodeError> {
        let Value::Map(entries) = v else {
            return Err(DecodeError::Shape {
                object: "document",
                expected: "a map",
            });
        };
        let mut out = BTreeMap::new();
        for (k, v) in entries {
            let Value::Text(k) = k else {
                return Err(DecodeError::Invalid {
                    what: "document",
                    problem: "field names must be text".into(),
                });
            };
            check_key(&k)?;
            let v = Field::from_value(v)?;
            if out.insert(k, v).is_some() {
                return Err(DecodeError::MapOrder);
            }
        }
        Ok(Self(out))
    }

    /// Checks every field name (also inside nested maps and lists): non-empty, at most
    /// [`MAX_KEY_LEN`] bytes of `a-z`, `0-9` and `_`.
    pub fn check_keys(&self) -> Result<(), DecodeError> {
        fn walk(f: &Field) -> Result<(), DecodeError> {
            match f {
                Field::Map(m) => m.check_keys(),
                Field::List(l) => l.iter().try_for_each(walk),
                _ => Ok(()),
            }
        }
        for (k, v) in &self.0 {
            check_key(k)?;
            walk(v)?;
        }
        Ok(())
    }
}

fn check_key(k: &str) -> Result<(), DecodeError> {
    let ok = !k.is_empty()
        && k.len() <= MAX_KEY_LEN
        && k.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(DecodeError::Invalid {
            what: "document field name",
            problem: format!("{k:?}: use 1-{MAX_KEY_LEN} characters of a-z, 0-9 and _"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Document {
        Document::new()
            .with("name", "NGUYEN Thi A")
            .with("birth_date", "2001-04-09")
            .with("count", 3u64)
            .with("minor", false)
            .with(
                "documents",
                vec![Field::Map(Document::new().with("sha256", "ab".repeat(32)))],
            )
    }

    #[test]
    fn round_trips_and_keys_sort_shortest_first() {
        let d = sample();
        let bytes = d.encode();
        assert_eq!(Document::decode(&bytes).unwrap(), d);
        // "name" (4) before "count" (5) before "birth_date" (10): length first.
        let v = cbor::decode_strict(&bytes, MAX_DOCUMENT_LEN, None).unwrap();
        let Value::Map(e) = v else { panic!() };
        let keys: Vec<_> = e.iter().map(|(k, _)| k.as_text().unwrap()).collect();
        assert_eq!(keys, ["name", "count", "minor", "documents", "birth_date"]);
    }

    #[test]
    fn refuses_unsorted_negative_float_and_bad_keys() {
        // {"b": 1, "a": 2}: unsorted.
        assert!(Document::decode(&[0xa2, 0x61, b'b', 0x01, 0x61, b'a', 0x02]).is_err());
        // {"a": -1}
        assert!(Document::decode(&[0xa1, 0x61, b'a', 0x20]).is_err());
        // {"a": 1.5}
        assert!(Document::decode(&[0xa1, 0x61, b'a', 0xf9, 0x3e, 0x00]).is_err());
        // {"A": 1}
        assert!(Document::decode(&[0xa1, 0x61, b'A', 0x01]).is_err());
        // {1: 1}
        assert!(Document::decode(&[0xa1, 0x01, 0x01]).is_err());
        // bytes value
        assert!(Document::decode(&[0xa1, 0x61, b'a', 0x41, 0x00]).is_err());
    }

    #[test]
    fn json_round_trip() {
        let d = sample();
        let j = serde_json::to_string(&d).unwrap();
        let back: Document = serde_json::from_str(&j).unwrap();
        assert_eq!(back, d);
        assert!(serde_json::from_str::<Document>(r#"{"a": 1.5}"#).is_err());
        assert!(serde_json::from_str::<Document>(r#"{"a": null}"#).is_err());
    }

    fn field() -> impl Strategy<Value = Field> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(Field::Bool),
            any::<u64>().prop_map(Field::Uint),
            "[ -~]{0,12}".prop_map(Field::Text),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Field::List),
                prop::collection::btree_map("[a-z_][a-z0-9_]{0,8}", inner, 0..4)
                    .prop_map(|m| Field::Map(Document(m))),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_document_round_trips(m in prop::collection::btree_map("[a-z_][a-z0-9_]{0,8}", field(), 0..6)) {
            let d = Document(m);
            let bytes = d.encode();
            prop_assert_eq!(Document::decode(&bytes).unwrap(), d.clone());
            prop_assert_eq!(Document::decode(&bytes).unwrap().digest(), d.digest());
        }
    }
}
