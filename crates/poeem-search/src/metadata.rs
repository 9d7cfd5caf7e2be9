//! The metadata section's contents, typed: [`IndexMetadata`] (the provenance fields poeem's
//! builders write, as typed members, plus every other entry in [`IndexMetadata::extra`]) and
//! [`MetadataValue`] (a JSON value owned by this crate, so that no JSON library appears in the
//! public API).
//!
//! The section holds a JSON object. Parsing it checks the type of each known key
//! ([`IndexMetadata::from_map`]) and keeps every other key as it is, so a file written by
//! another version re-saves with the same entries. The writer emits the keys sorted, so a file
//! whose metadata this crate wrote re-saves byte for byte.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::SearchError;

/// A JSON value, as stored in the metadata section.
///
/// Numbers keep the form they were read in: an integer that fits `u64` is [`UInt`], a negative
/// one that fits `i64` is [`Int`], anything else [`Float`]. A non-finite [`Float`] is written as
/// `null`.
///
/// [`UInt`]: MetadataValue::UInt
/// [`Int`]: MetadataValue::Int
/// [`Float`]: MetadataValue::Float
#[derive(Debug, Clone, PartialEq, Default)]
pub enum MetadataValue {
    /// `null`.
    #[default]
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A non-negative integer.
    UInt(u64),
    /// A negative integer (a non-negative one is read back as [`MetadataValue::UInt`]).
    Int(i64),
    /// A number with a fraction or an exponent, or an integer too large for 64 bits.
    Float(f64),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<MetadataValue>),
    /// An object; its keys are written sorted.
    Object(BTreeMap<String, MetadataValue>),
}

impl MetadataValue {
    /// The value of `key` when this is an object that has it.
    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        match self {
            Self::Object(map) => map.get(key),
            _ => None,
        }
    }

    /// The string, when this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean, when this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The integer, when this is a non-negative one.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::UInt(v) => Some(v),
            Self::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The number as an `f64`, when this is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::UInt(v) => Some(v as f64),
            Self::Int(v) => Some(v as f64),
            Self::Float(v) => Some(v),
            _ => None,
        }
    }

    /// The entries, when this is an object.
    pub fn as_object(&self) -> Option<&BTreeMap<String, MetadataValue>> {
        match self {
            Self::Object(map) => Some(map),
            _ => None,
        }
    }

    /// What kind of JSON value this is, for messages: "null", "a boolean", "a number", ...
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "a boolean",
            Self::UInt(_) | Self::Int(_) | Self::Float(_) => "a number",
            Self::String(_) => "a string",
            Self::Array(_) => "an array",
            Self::Object(_) => "an object",
        }
    }
}

impl From<bool> for MetadataValue {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

impl From<u64> for MetadataValue {
    fn from(v: u64) -> Self {
        Self::UInt(v)
    }
}

impl From<usize> for MetadataValue {
    fn from(v: usize) -> Self {
        Self::UInt(v as u64)
    }
}

impl From<u32> for MetadataValue {
    fn from(v: u32) -> Self {
        Self::UInt(v.into())
    }
}

impl From<i64> for MetadataValue {
    fn from(v: i64) -> Self {
        u64::try_from(v).map_or(Self::Int(v), Self::UInt)
    }
}

impl From<f64> for MetadataValue {
    fn from(v: f64) -> Self {
        Self::Float(v)
    }
}

impl From<&str> for MetadataValue {
    fn from(v: &str) -> Self {
        Self::String(v.to_owned())
    }
}

impl From<String> for MetadataValue {
    fn from(v: String) -> Self {
        Self::String(v)
    }
}

impl<T: Into<MetadataValue>> From<Option<T>> for MetadataValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(Self::Null, Into::into)
    }
}

impl<T: Into<MetadataValue>> From<Vec<T>> for MetadataValue {
    fn from(v: Vec<T>) -> Self {
        Self::Array(v.into_iter().map(Into::into).collect())
    }
}

impl From<BTreeMap<String, MetadataValue>> for MetadataValue {
    fn from(v: BTreeMap<String, MetadataValue>) -> Self {
        Self::Object(v)
    }
}

impl Serialize for MetadataValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Null => serializer.serialize_unit(),
            Self::Bool(b) => serializer.serialize_bool(*b),
            Self::UInt(v) => serializer.serialize_u64(*v),
            Self::Int(v) => serializer.serialize_i64(*v),
            Self::Float(v) if v.is_finite() => serializer.serialize_f64(*v),
            Self::Float(_) => serializer.serialize_unit(),
            Self::String(s) => serializer.serialize_str(s),
            Self::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Self::Object(map) => {
                let mut out = serializer.serialize_map(Some(map.len()))?;
                for (key, value) in map {
                    out.serialize_entry(key, value)?;
                }
                out.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for MetadataValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = MetadataValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<MetadataValue, E> {
        Ok(MetadataValue::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<MetadataValue, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<MetadataValue, E> {
        Ok(MetadataValue::UInt(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<MetadataValue, E> {
        Ok(MetadataValue::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<MetadataValue, E> {
        Ok(v.into())
    }

    fn visit_string<E>(self, v: String) -> Result<MetadataValue, E> {
        Ok(MetadataValue::String(v))
    }

    fn visit_unit<E>(self) -> Result<MetadataValue, E> {
        Ok(MetadataValue::Null)
    }

    fn visit_none<E>(self) -> Result<MetadataValue, E> {
        Ok(MetadataValue::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<MetadataValue, D::Error> {
        MetadataValue::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MetadataValue, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(MetadataValue::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MetadataValue, A::Error> {
        let mut out = BTreeMap::new();
        while let Some((key, value)) = map.next_entry::<String, MetadataValue>()? {
            out.insert(key, value);
        }
        Ok(MetadataValue::Object(out))
    }
}

/// The metadata section of an index: provenance, how and from what the index was built.
///
/// The keys poeem's builders write for every index are typed members; a file whose metadata
/// holds one of them with another type is rejected ([`SearchError::BadMetadata`]). Every other
/// key (the builders' records `params`, `training`, `timings`, ..., and whatever another
/// writer put there) lives in [`extra`](Self::extra) as written. Members that are `None` are
/// not written. Two metadata values are equal when they write the same entries.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct IndexMetadata {
    /// `builder`: what built the index, e.g. `"poeem-search build_index"`.
    pub builder: Option<String>,
    /// `crate_version`: the version of the crate that built it.
    pub crate_version: Option<String>,
    /// `created`: when it was built, in seconds since the Unix epoch.
    pub created: Option<u64>,
    /// `rotation`: `"identity"` or `"learned"`.
    pub rotation: Option<String>,
    /// `coarse_level`: whether the codec had a coarse level (else one list at the origin).
    pub coarse_level: Option<bool>,
    /// `distortion`: mean squared quantization error of the indexed vectors (`NaN` is written,
    /// and read, as `null`).
    pub distortion: Option<f64>,
    /// `relative_distortion`: `distortion` over the vectors' mean squared norm (`NaN` as for
    /// `distortion`).
    pub relative_distortion: Option<f64>,
    /// Every other entry, by key.
    pub extra: BTreeMap<String, MetadataValue>,
}

/// The keys of the typed members, in the order of the struct.
const KNOWN_KEYS: [&str; 7] = [
    "builder",
    "crate_version",
    "created",
    "rotation",
    "coarse_level",
    "distortion",
    "relative_distortion",
];

impl IndexMetadata {
    /// Empty metadata: no typed member set, no extra entry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Metadata from the entries of a JSON object: the known keys go to their typed members,
    /// every other key to [`extra`](Self::extra).
    ///
    /// # Errors
    /// [`SearchError::BadMetadata`] naming the key when a known key holds a value of another
    /// type (a float member also accepts any number and `null`, read as `NaN`).
    pub fn from_map(map: BTreeMap<String, MetadataValue>) -> Result<Self, SearchError> {
        let mut out = Self::default();
        for (key, value) in map {
            out.insert(key, value)?;
        }
        Ok(out)
    }

    /// Sets the entry `key`: its typed member for a known key, else an entry of
    /// [`extra`](Self::extra). Replaces an entry already there.
    ///
    /// # Errors
    /// [`SearchError::BadMetadata`] when `key` is known and `value` has another type; nothing
    /// is changed then.
    pub fn insert(&mut self, key: String, value: MetadataValue) -> Result<(), SearchError> {
        let wrong = |expected: &str, value: &MetadataValue| SearchError::BadMetadata {
            reason: format!("key \"{key}\" must be {expected}, found {}", value.kind()),
        };
        let string = |value: MetadataValue| match value {
            MetadataValue::String(s) => Ok(s),
            other => Err(wrong("a string", &other)),
        };
        let float = |value: MetadataValue| match value {
            MetadataValue::Null => Ok(f64::NAN),
            other => other
                .as_f64()
                .ok_or_else(|| wrong("a number or null", &other)),
        };
        match key.as_str() {
            "builder" => self.builder = Some(string(value)?),
            "crate_version" => self.crate_version = Some(string(value)?),
            "rotation" => self.rotation = Some(string(value)?),
            "created" => {
                self.created = Some(match value {
                    MetadataValue::UInt(v) => v,
                    other => return Err(wrong("a non-negative integer", &other)),
                });
            }
            "coarse_level" => {
                self.coarse_level =
                    Some(value.as_bool().ok_or_else(|| wrong("a boolean", &value))?);
            }
            "distortion" => self.distortion = Some(float(value)?),
            "relative_distortion" => self.relative_distortion = Some(float(value)?),
            _ => {
                self.extra.insert(key, value);
            }
        }
        Ok(())
    }

    /// The value of `key`, typed member or extra entry, as it is written.
    pub fn get(&self, key: &str) -> Option<MetadataValue> {
        let string = |s: &Option<String>| s.as_deref().map(MetadataValue::from);
        match key {
            "builder" => string(&self.builder),
            "crate_version" => string(&self.crate_version),
            "rotation" => string(&self.rotation),
            "created" => self.created.map(MetadataValue::from),
            "coarse_level" => self.coarse_level.map(MetadataValue::from),
            "distortion" => self.distortion.map(float_value),
            "relative_distortion" => self.relative_distortion.map(float_value),
            _ => self.extra.get(key).cloned(),
        }
    }

    /// Every entry, typed members included, as it is written (keys sorted).
    pub fn to_map(&self) -> BTreeMap<String, MetadataValue> {
        let mut map = self.extra.clone();
        for key in KNOWN_KEYS {
            if let Some(value) = self.get(key) {
                map.insert(key.to_owned(), value);
            }
        }
        map
    }

    /// The section's bytes: the entries as a compact JSON object, keys sorted.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, SearchError> {
        serde_json::to_vec(&self.to_map()).map_err(|e| SearchError::BadMetadata {
            reason: e.to_string(),
        })
    }

    /// Parses the section's bytes: UTF-8 text holding a JSON object whose known keys have
    /// their types.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, SearchError> {
        let text = std::str::from_utf8(bytes).map_err(|e| SearchError::BadMetadata {
            reason: format!("not UTF-8: {e}"),
        })?;
        let value: MetadataValue =
            serde_json::from_str(text).map_err(|e| SearchError::BadMetadata {
                reason: e.to_string(),
            })?;
        match value {
            MetadataValue::Object(map) => Self::from_map(map),
            _ => Err(SearchError::BadMetadata {
                reason: "not a JSON object".to_owned(),
            }),
        }
    }
}

/// A float member as written: non-finite values become `null`.
fn float_value(v: f64) -> MetadataValue {
    if v.is_finite() {
        MetadataValue::Float(v)
    } else {
        MetadataValue::Null
    }
}

impl PartialEq for IndexMetadata {
    fn eq(&self, other: &Self) -> bool {
        self.to_map() == other.to_map()
    }
}

impl Serialize for IndexMetadata {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_map().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for IndexMetadata {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, MetadataValue>::deserialize(deserializer)?;
        Self::from_map(map).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys_are_typed_and_the_rest_is_kept() {
        let text = br#"{"builder":"b","created":17,"distortion":null,"name":"x","nested":{"a":[1,-2,0.5,null,true]},"relative_distortion":0.25}"#;
        let meta = IndexMetadata::decode(text).unwrap();
        assert_eq!(meta.builder.as_deref(), Some("b"));
        assert_eq!(meta.created, Some(17));
        assert!(meta.distortion.unwrap().is_nan());
        assert_eq!(meta.relative_distortion, Some(0.25));
        assert_eq!(meta.extra.len(), 2);
        assert_eq!(meta.encode().unwrap(), text);
    }

    #[test]
    fn a_known_key_of_the_wrong_type_is_an_error() {
        let err = IndexMetadata::decode(br#"{"created":"yesterday"}"#).unwrap_err();
        let SearchError::BadMetadata { reason } = err else {
            panic!("{err:?}")
        };
        assert_eq!(
            reason,
            "key \"created\" must be a non-negative integer, found a string"
        );
        for text in [
            &br#"{"builder":1}"#[..],
            br#"{"coarse_level":"yes"}"#,
            br#"{"distortion":"0.1"}"#,
            br#"{"created":-1}"#,
            br#"{"created":1.5}"#,
            br#"{"rotation":null}"#,
        ] {
            assert!(matches!(
                IndexMetadata::decode(text),
                Err(SearchError::BadMetadata { .. })
            ));
        }
    }
}
