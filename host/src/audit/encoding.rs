//! The format of an outbox entry (docs/audit.md, "The outbox entry").
//!
//! An entry holds one field, [`RECORD_FIELD`] (`r`), whose value is the record's fields as
//! one JSON object of strings under the column names (`{"job_id":"…","decision":"retried",
//! …}`): one field to read instead of ~26, and one string to decode instead of 52. Entries of
//! the earlier format (one stream field per record field) are still read: any entry that is
//! not exactly one field `r` is one of those. `AuditRecord::from_entry` reads both.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::ser::{Serialize, Serializer};

/// The one field of an outbox entry; its value is the record, a JSON object of strings.
pub const RECORD_FIELD: &str = "r";

/// The value of an entry's [`RECORD_FIELD`]: the fields as a JSON object of strings.
pub fn encode<K: AsRef<str>, V: AsRef<str>>(fields: &[(K, V)]) -> String {
    struct Object<'a, K, V>(&'a [(K, V)]);
    impl<K: AsRef<str>, V: AsRef<str>> Serialize for Object<'_, K, V> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_map(self.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref())))
        }
    }
    // Maps of strings always serialize.
    serde_json::to_string(&Object(fields)).unwrap_or_default()
}

/// The encoded record when the entry's fields are those of the one-field format.
pub fn encoded(fields: &[(String, String)]) -> Option<&str> {
    match fields {
        [(k, v)] if k == RECORD_FIELD => Some(v),
        _ => None,
    }
}

/// Calls `set` with each field of an encoded record, in order, without copying the values
/// that need no unescaping. Lenient like the reading of the earlier format: a number or a
/// boolean is passed as its text, a null, an array or an object is skipped, and a value that
/// is not JSON (or not an object) ends the decoding where it breaks, keeping the fields
/// before.
pub fn decode(json: &str, set: impl FnMut(&str, Cow<'_, str>)) {
    let mut de = serde_json::Deserializer::from_str(json);
    // The fields before an error are set; the rest are lost, as an unparsable field is.
    let _ = Fields(set).deserialize(&mut de);
}

/// The fields of an entry in either format, as (name, value) pairs (tools and tests; the
/// writer decodes straight into a record).
pub fn pairs(fields: &[(String, String)]) -> Vec<(String, String)> {
    match encoded(fields) {
        Some(json) => {
            let mut out = Vec::new();
            decode(json, |k, v| out.push((k.to_string(), v.into_owned())));
            out
        }
        None => fields.to_vec(),
    }
}

/// Visits a JSON object, passing each field to the closure.
struct Fields<F>(F);

impl<'de, F: FnMut(&str, Cow<'_, str>)> DeserializeSeed<'de> for Fields<F> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, F: FnMut(&str, Cow<'_, str>)> Visitor<'de> for Fields<F> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object of strings")
    }
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            if let Some(value) = map.next_value::<Lenient<'de>>()?.0 {
                (self.0)(&key, value);
            }
        }
        Ok(())
    }
}

/// A string, borrowed from the input when it has no escapes.
struct Text<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(TextVisitor).map(Text)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// A field's value as text: a string, or a number or boolean as its text; `None` for null,
/// arrays and objects (skipped whole).
struct Lenient<'de>(Option<Cow<'de, str>>);

impl<'de> de::Deserialize<'de> for Lenient<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LenientVisitor).map(Lenient)
    }
}

struct LenientVisitor;

impl<'de> Visitor<'de> for LenientVisitor {
    type Value = Option<Cow<'de, str>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_string())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v)))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Some(Cow::Borrowed(if v { "true" } else { "false" })))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_string())))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_string())))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_string())))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn fields_round_trip_through_the_encoding() {
        let fields = owned(&[
            ("job_id", "j/1"),
            ("error_message", "line\n\"quoted\" \\ tab\t é ✓ \u{1}"),
            ("params", r#"{"a":"1"}"#),
            ("retry_reason", ""),
        ]);
        let json = encode(&fields);
        let entry = vec![(RECORD_FIELD.to_string(), json)];
        assert_eq!(pairs(&entry), fields);
        // The earlier format passes through.
        assert_eq!(pairs(&fields), fields);
        assert_eq!(encoded(&fields), None);
        // Two fields, one of them `r`, are the earlier format.
        let two = owned(&[("r", "{}"), ("decision", "retried")]);
        assert_eq!(encoded(&two), None);
    }

    #[test]
    fn values_without_escapes_are_borrowed() {
        let mut borrowed = Vec::new();
        decode(r#"{"a":"plain","b":"esc\/aped"}"#, |k, v| {
            borrowed.push((k.to_string(), matches!(v, Cow::Borrowed(_)), v.into_owned()));
        });
        assert_eq!(
            borrowed,
            vec![
                ("a".into(), true, "plain".into()),
                ("b".into(), false, "esc/aped".into())
            ]
        );
    }

    #[test]
    fn decoding_is_lenient() {
        let got = |json: &str| pairs(&owned(&[("r", json)]));
        // cjson's escapes (`\/`), numbers and booleans as text, nulls and nesting skipped.
        assert_eq!(
            got(
                r#"{"queue":"a\/b","n":5,"f":-1.5,"ok":true,"x":null,"o":{"k":[1]},"l":[{}],"z":"1"}"#
            ),
            owned(&[
                ("queue", "a/b"),
                ("n", "5"),
                ("f", "-1.5"),
                ("ok", "true"),
                ("z", "1")
            ])
        );
        // Broken JSON keeps the fields before the break.
        assert_eq!(
            got(r#"{"decision":"retried","job_id":"j"#),
            owned(&[("decision", "retried")])
        );
        assert_eq!(got("[]"), owned(&[]));
        assert_eq!(got("not json"), owned(&[]));
        assert_eq!(got(""), owned(&[]));
    }
}
