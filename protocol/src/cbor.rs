//! Deterministic CBOR (RFC 8949 §4.2) with strict decoding.
//!
//! Every object the bus signs or checks is decoded here: the input length is capped before
//! anything is allocated, the bytes are decoded, re-encoded and compared (so non-shortest heads,
//! indefinite lengths, trailing bytes and unsorted or duplicate map keys are refused), and floats,
//! nulls and tags are refused. Maps in signed objects use unsigned integer keys 0..23 in
//! ascending order; [`MapReader`] reads such a map field by field and refuses unknown keys.

use ciborium::Value;

use crate::error::DecodeError;

/// Nesting depth that no liaison object comes near; deeper input is refused.
const MAX_DEPTH: usize = 16;

/// Encodes a value; deterministic when the value was built with sorted maps (as all builders
/// in this crate do).
pub(crate) fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail, and every Value is encodable.
    if ciborium::into_writer(value, &mut out).is_err() {
        out.clear();
    }
    out
}

/// Decodes `bytes` as one deterministic CBOR item of at most `cap` bytes.
///
/// `allow_top_tag` names the one tag accepted on the outermost item (tag 18 for COSE_Sign1).
pub(crate) fn decode_strict(
    bytes: &[u8],
    cap: usize,
    allow_top_tag: Option<u64>,
) -> Result<Value, DecodeError> {
    if bytes.len() > cap {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            cap,
        });
    }
    let value: Value = ciborium::de::from_reader_with_recursion_limit(bytes, MAX_DEPTH * 2)
        .map_err(|e| DecodeError::Malformed(short_error(&e)))?;
    check_value(&value, 0, allow_top_tag)?;
    if encode(&value) != bytes {
        return Err(DecodeError::NonCanonical);
    }
    Ok(value)
}

fn short_error<E: std::fmt::Debug>(e: &ciborium::de::Error<E>) -> String {
    match e {
        ciborium::de::Error::Io(_) => "input ends inside an item".to_owned(),
        ciborium::de::Error::Syntax(off) => format!("syntax error at byte {off}"),
        ciborium::de::Error::Semantic(off, msg) => match off {
            Some(off) => format!("{msg} at byte {off}"),
            None => msg.clone(),
        },
        ciborium::de::Error::RecursionLimitExceeded => "nested too deeply".to_owned(),
    }
}

fn check_value(value: &Value, depth: usize, allow_tag: Option<u64>) -> Result<(), DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::Malformed("nested too deeply".to_owned()));
    }
    match value {
        Value::Integer(_) | Value::Bytes(_) | Value::Text(_) | Value::Bool(_) => Ok(()),
        Value::Float(_) => Err(DecodeError::Float),
        Value::Null => Err(DecodeError::Null),
        Value::Tag(tag, inner) => {
            if allow_tag == Some(*tag) {
                check_value(inner, depth + 1, None)
            } else {
                Err(DecodeError::Tag(*tag))
            }
        }
        Value::Array(items) => items
            .iter()
            .try_for_each(|v| check_value(v, depth + 1, None)),
        Value::Map(entries) => {
            // RFC 8949 §4.2.1: keys sorted by their encoded bytes, no duplicates.
            let mut prev: Option<Vec<u8>> = None;
            for (k, v) in entries {
                check_value(k, depth + 1, None)?;
                check_value(v, depth + 1, None)?;
                let key = encode(k);
                if prev.as_ref().is_some_and(|p| *p >= key) {
                    return Err(DecodeError::MapOrder);
                }
                prev = Some(key);
            }
            Ok(())
        }
        _ => Err(DecodeError::Malformed("unsupported CBOR item".to_owned())),
    }
}

/// Builds a map with integer keys; keys must be pushed in ascending order (checked in debug).
#[derive(Debug, Default)]
pub(crate) struct MapBuilder {
    entries: Vec<(Value, Value)>,
    last: Option<u64>,
}

impl MapBuilder {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn put(mut self, key: u64, value: impl Into<Value>) -> Self {
        debug_assert!(self.last.is_none_or(|l| l < key), "keys out of order");
        self.last = Some(key);
        self.entries.push((Value::from(key), value.into()));
        self
    }

    pub(crate) fn put_opt<V: Into<Value>>(self, key: u64, value: Option<V>) -> Self {
        match value {
            Some(v) => self.put(key, v),
            None => self,
        }
    }

    pub(crate) fn build(self) -> Value {
        Value::Map(self.entries)
    }
}

/// Reads a strictly decoded map with keys 0..23, field by field; [`MapReader::finish`]
/// refuses any key that was not read.
#[derive(Debug)]
pub(crate) struct MapReader {
    object: &'static str,
    entries: Vec<(u64, Option<Value>)>,
}

impl MapReader {
    pub(crate) fn new(object: &'static str, value: Value) -> Result<Self, DecodeError> {
        let Value::Map(raw) = value else {
            return Err(DecodeError::Shape {
                object,
                expected: "a map",
            });
        };
        let mut entries = Vec::with_capacity(raw.len());
        for (k, v) in raw {
            let key = match k {
                Value::Integer(i) => u64::try_from(i128::from(i)).ok().filter(|k| *k <= 23),
                _ => None,
            };
            let Some(key) = key else {
                return Err(DecodeError::MapKey { object });
            };
            entries.push((key, Some(v)));
        }
        Ok(Self { object, entries })
    }

    fn take(&mut self, key: u64) -> Option<Value> {
        self.entries
            .iter_mut()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.take())
    }

    fn bad(&self, key: u64, problem: &'static str) -> DecodeError {
        DecodeError::Field {
            object: self.object,
            key,
            problem,
        }
    }

    fn required(&mut self, key: u64) -> Result<Value, DecodeError> {
        self.take(key).ok_or(DecodeError::Missing {
            object: self.object,
            key,
        })
    }

    pub(crate) fn uint(&mut self, key: u64) -> Result<u64, DecodeError> {
        let v = self.required(key)?;
        as_uint(&v).ok_or_else(|| self.bad(key, "expected an unsigned integer"))
    }

    pub(crate) fn opt_uint(&mut self, key: u64) -> Result<Option<u64>, DecodeError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => as_uint(&v)
                .map(Some)
                .ok_or_else(|| self.bad(key, "expected an unsigned integer")),
        }
    }

    pub(crate) fn text(&mut self, key: u64) -> Result<String, DecodeError> {
        match self.required(key)? {
            Value::Text(t) => Ok(t),
            _ => Err(self.bad(key, "expected a text string")),
        }
    }

    pub(crate) fn opt_text(&mut self, key: u64) -> Result<Option<String>, DecodeError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Text(t)) => Ok(Some(t)),
            Some(_) => Err(self.bad(key, "expected a text string")),
        }
    }

    pub(crate) fn bytes(&mut self, key: u64) -> Result<Vec<u8>, DecodeError> {
        match self.required(key)? {
            Value::Bytes(b) => Ok(b),
            _ => Err(self.bad(key, "expected a byte string")),
        }
    }

    pub(crate) fn fixed<const N: usize>(&mut self, key: u64) -> Result<[u8; N], DecodeError> {
        let b = self.bytes(key)?;
        b.try_into()
            .map_err(|_| self.bad(key, "byte string has the wrong length"))
    }

    pub(crate) fn opt_fixed<const N: usize>(
        &mut self,
        key: u64,
    ) -> Result<Option<[u8; N]>, DecodeError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bytes(b)) => b
                .try_into()
                .map(Some)
                .map_err(|_| self.bad(key, "byte string has the wrong length")),
            Some(_) => Err(self.bad(key, "expected a byte string")),
        }
    }

    pub(crate) fn opt_bytes(&mut self, key: u64) -> Result<Option<Vec<u8>>, DecodeError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bytes(b)) => Ok(Some(b)),
            Some(_) => Err(self.bad(key, "expected a byte string")),
        }
    }

    /// An optional field of any type (nested documents).
    pub(crate) fn opt_value(&mut self, key: u64) -> Option<Value> {
        self.take(key)
    }

    /// A required field of any type (nested documents).
    pub(crate) fn value(&mut self, key: u64) -> Result<Value, DecodeError> {
        self.required(key)
    }

    pub(crate) fn opt_bool(&mut self, key: u64) -> Result<Option<bool>, DecodeError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => Err(self.bad(key, "expected a boolean")),
        }
    }

    pub(crate) fn array(&mut self, key: u64) -> Result<Vec<Value>, DecodeError> {
        match self.required(key)? {
            Value::Array(a) => Ok(a),
            _ => Err(self.bad(key, "expected an array")),
        }
    }

    pub(crate) fn opt_array(&mut self, key: u64) -> Result<Option<Vec<Value>>, DecodeError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(_) => Err(self.bad(key, "expected an array")),
        }
    }

    /// Refuses any key that was present but not read.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        match self.entries.iter().find(|(_, v)| v.is_some()) {
            Some((key, _)) => Err(DecodeError::UnknownField {
                object: self.object,
                key: *key,
            }),
            None => Ok(()),
        }
    }
}

pub(crate) fn as_uint(v: &Value) -> Option<u64> {
    match v {
        Value::Integer(i) => u64::try_from(i128::from(*i)).ok(),
        _ => None,
    }
}

pub(crate) fn as_text(v: Value) -> Option<String> {
    match v {
        Value::Text(t) => Some(t),
        _ => None,
    }
}

pub(crate) fn text_array(values: &[String]) -> Value {
    Value::Array(values.iter().map(|s| Value::Text(s.clone())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    #[test]
    fn accepts_shortest_forms() {
        assert!(decode_strict(&hex("a20102030a"), 100, None).is_ok()); // {1:2, 3:10}
        assert!(decode_strict(&hex("1817"), 100, None).is_err()); // 23 in two bytes
        assert_eq!(
            decode_strict(&hex("1817"), 100, None),
            Err(DecodeError::NonCanonical)
        );
    }

    #[test]
    fn refuses_indefinite_lengths() {
        // [_ 1, 2]
        assert_eq!(
            decode_strict(&hex("9f0102ff"), 100, None),
            Err(DecodeError::NonCanonical)
        );
    }

    #[test]
    fn refuses_unsorted_and_duplicate_keys() {
        assert_eq!(
            decode_strict(&hex("a203040102"), 100, None),
            Err(DecodeError::MapOrder)
        );
        assert_eq!(
            decode_strict(&hex("a201020103"), 100, None),
            Err(DecodeError::MapOrder)
        );
    }

    #[test]
    fn refuses_floats_nulls_tags_and_trailing_bytes() {
        assert_eq!(
            decode_strict(&hex("f93c00"), 100, None),
            Err(DecodeError::Float)
        );
        assert_eq!(decode_strict(&hex("f6"), 100, None), Err(DecodeError::Null));
        assert_eq!(
            decode_strict(&hex("c11a514b67b0"), 100, None),
            Err(DecodeError::Tag(1))
        );
        assert_eq!(
            decode_strict(&hex("0101"), 100, None),
            Err(DecodeError::NonCanonical)
        );
    }

    #[test]
    fn caps_before_decoding() {
        assert_eq!(
            decode_strict(&[0u8; 17], 16, None),
            Err(DecodeError::TooLarge { len: 17, cap: 16 })
        );
        // A byte string that claims 2^63 bytes inside a 10-byte input: refused, no allocation.
        assert!(matches!(
            decode_strict(&hex("5b7fffffffffffffff00"), 100, None),
            Err(DecodeError::Malformed(_))
        ));
        // An array that claims 2^32 items.
        assert!(decode_strict(&hex("9b0000000100000000"), 100, None).is_err());
    }

    #[test]
    fn map_reader_refuses_unknown_and_reads_known() {
        let v = decode_strict(&hex("a2016161026162"), 100, None).unwrap();
        let mut r = MapReader::new("test", v).unwrap();
        assert_eq!(r.text(1).unwrap(), "a");
        assert_eq!(
            r.finish(),
            Err(DecodeError::UnknownField {
                object: "test",
                key: 2
            })
        );
    }
}
