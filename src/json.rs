//! JSON from outside the broker (request bodies, provider answers), parsed
//! strictly and within a budget.
//!
//! Invariants: an object with a repeated member name is refused, because two
//! parsers would read it two ways (serde_json keeps the last value, many
//! others the first) and the broker must check what the provider reads; a
//! document holds at most `max_values` values and nests at most `MAX_DEPTH`
//! deep, so a small body cannot become a large tree in memory (4 MiB of
//! `[],` would otherwise be about 1.4 million `Value`s, some 45 MB).

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Deepest nesting accepted (serde_json's own limit is 128).
pub const MAX_DEPTH: usize = 64;

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JsonError {
    message: String,
    content_free: String,
}

/// This module's own refusals: they name no part of the document.
const OWN_MESSAGES: [&str; 3] = [
    "the document has too many values",
    "the document nests deeper than",
    "a member name appears twice in one object",
];

impl JsonError {
    fn from_serde(e: &serde_json::Error) -> JsonError {
        let message = e.to_string();
        let content_free = if OWN_MESSAGES.iter().any(|own| message.starts_with(own)) {
            message.clone()
        } else {
            // serde_json's own messages may quote the document ("invalid
            // type: string \"...\""); the category and position never do.
            let what = match e.classify() {
                serde_json::error::Category::Syntax => "not valid JSON",
                serde_json::error::Category::Eof => "the document ends too early",
                serde_json::error::Category::Data => "a value of an unexpected kind",
                serde_json::error::Category::Io => "the document could not be read",
            };
            format!("{what} at line {} column {}", e.line(), e.column())
        };
        JsonError {
            message,
            content_free,
        }
    }

    /// The refusal without any part of the document: what to say about a
    /// document that holds someone else's data (a provider's answer), where
    /// a member name can itself be a personal number.
    pub fn content_free(&self) -> &str {
        &self.content_free
    }
}

/// Parses `bytes` as one JSON document of at most `max_values` values.
pub fn parse(bytes: &[u8], max_values: usize) -> Result<Value, JsonError> {
    let budget = Cell::new(max_values);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Seed {
        budget: &budget,
        depth: 0,
    }
    .deserialize(&mut de)
    .map_err(|e| JsonError::from_serde(&e))?;
    de.end().map_err(|e| JsonError::from_serde(&e))?;
    Ok(value)
}

#[derive(Clone, Copy)]
struct Seed<'b> {
    budget: &'b Cell<usize>,
    depth: usize,
}

impl Seed<'_> {
    fn take<E: de::Error>(&self) -> Result<(), E> {
        match self.budget.get().checked_sub(1) {
            Some(left) => {
                self.budget.set(left);
                Ok(())
            }
            None => Err(E::custom("the document has too many values")),
        }
    }

    fn deeper<E: de::Error>(&self) -> Result<Self, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format!(
                "the document nests deeper than {MAX_DEPTH}"
            )));
        }
        Ok(Seed {
            budget: self.budget,
            depth: self.depth + 1,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.take()?;
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.take()?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.take()?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.take()?;
        let inner = self.deeper()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.take()?;
        let inner = self.deeper()?;
        let mut members = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            // One search of the map per member: the slot found vacant is
            // the one filled.
            let serde_json::map::Entry::Vacant(slot) = members.entry(key) else {
                // The name is not repeated back: it may be a personal number,
                // and the position (added by serde_json) finds it.
                return Err(de::Error::custom(
                    "a member name appears twice in one object",
                ));
            };
            slot.insert(map.next_value_seed(inner)?);
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_parse_table() {
        let ok: &[&str] = &[
            r#"{"a":1,"b":[true,null,"x",1.5,-2]}"#,
            "[]",
            r#""s""#,
            r#"{"a":{"a":1}}"#,
        ];
        for text in ok {
            let want: Value = serde_json::from_str(text).unwrap_or_default();
            assert_eq!(parse(text.as_bytes(), 100).ok(), Some(want), "{text}");
        }
        let bad: &[(&str, usize)] = &[
            (r#"{"a":1,"a":2}"#, 100),
            (r#"{"x":{"a":1,"b":2,"a":3}}"#, 100),
            // The same name spelled two ways is the same name.
            (r#"{"a":1,"\u0061":2}"#, 100),
            (r#"{"a":{"b":1},"a":2}"#, 100),
            ("[[],[],[]]", 3),
            ("{} {}", 100),
            ("", 100),
            ("[1,]", 100),
        ];
        for (text, budget) in bad {
            assert!(parse(text.as_bytes(), *budget).is_err(), "{text}");
        }
        // A repeat of the first name after enough members to split the map's
        // nodes.
        let members: Vec<String> = (0..40).map(|i| format!(r#""k{i}":{i}"#)).collect();
        let repeated = format!(r#"{{{},"k0":0}}"#, members.join(","));
        assert!(parse(repeated.as_bytes(), 100).is_err());
        let distinct = format!("{{{}}}", members.join(","));
        assert!(parse(distinct.as_bytes(), 100).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(parse(deep.as_bytes(), 10_000).is_err());
        let ok_deep = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(ok_deep.as_bytes(), 10_000).is_ok());
    }

    #[test]
    fn refusals_can_be_told_without_the_document() {
        // A personal number as a member name or value must not come back in
        // what is said about someone else's document.
        let secret = "2004000000035";
        let cases = [
            format!(r#"{{"{secret}":1,"{secret}":2}}"#),
            format!(r#"{{"a":"{secret}"#),
            format!(r#"{{"a":{secret}x}}"#),
            format!(r#"["{secret}" "#),
        ];
        for text in &cases {
            let Err(e) = parse(text.as_bytes(), 100) else {
                panic!("{text} parsed");
            };
            assert!(
                !e.content_free().contains(secret),
                "{text}: {}",
                e.content_free()
            );
            assert!(!e.to_string().contains(secret), "{text}: {e}");
            assert!(
                e.content_free().contains("line 1"),
                "{text}: {}",
                e.content_free()
            );
        }
    }

    #[test]
    fn budget_bounds_many_small_values() {
        let many = format!("[{}[]]", "[],".repeat(200_000));
        assert!(parse(many.as_bytes(), 100_000).is_err());
        assert!(parse(many.as_bytes(), 300_000).is_ok());
    }
}
