//! What a call carries besides its body, as the catalog types it: the format
//! of each query parameter, and where a service's request holds the ids of
//! the people it asks about (PROTOCOL.md sections 2 and 4).
//!
//! Invariants: every check here is pure; a query string is decoded once, by
//! [`parse_query`], which refuses what two HTTP stacks could read two ways
//! (a repeated or unknown parameter, a bad escape, a `;` separator), so the
//! values the broker checks are the values the provider reads.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::QueryParameter;

/// The format of a query parameter's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ParamFormat {
    /// A natural person's IDNP (13 digits, control digit).
    Idnp,
    /// A legal entity's IDNO (13 digits, control digit).
    Idno,
    /// Either of the two.
    IdnpOrIdno,
    /// A UUID in its hyphenated form.
    Uuid,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// A date (`YYYY-MM-DD`) or an RFC 3339 time.
    DateOrTime,
    /// A non-negative decimal integer of at most 9 digits.
    Integer,
    /// An identifier of letters, digits and `._:-`, 1 to 128 characters.
    Code,
    /// Free text (at most 256 bytes once decoded, no control characters).
    #[default]
    Text,
}

impl ParamFormat {
    /// The name the catalog uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamFormat::Idnp => "idnp",
            ParamFormat::Idno => "idno",
            ParamFormat::IdnpOrIdno => "idnp-or-idno",
            ParamFormat::Uuid => "uuid",
            ParamFormat::Date => "date",
            ParamFormat::DateOrTime => "date-or-time",
            ParamFormat::Integer => "integer",
            ParamFormat::Code => "code",
            ParamFormat::Text => "text",
        }
    }

    /// Whether values of this format identify a person (and so are audit subjects).
    pub fn is_person_id(self) -> bool {
        matches!(
            self,
            ParamFormat::Idnp | ParamFormat::Idno | ParamFormat::IdnpOrIdno
        )
    }

    /// Whether `value` (decoded) has this format.
    pub fn accepts(self, value: &str) -> bool {
        match self {
            ParamFormat::Idnp | ParamFormat::Idno | ParamFormat::IdnpOrIdno => {
                crate::ids::is_valid_national_id(value)
            }
            ParamFormat::Uuid => crate::ids::is_valid_request_id(value),
            ParamFormat::Date => is_date(value),
            ParamFormat::DateOrTime => {
                is_date(value)
                    || time::OffsetDateTime::parse(
                        value,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .is_ok()
            }
            ParamFormat::Integer => {
                (1..=9).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_digit())
            }
            ParamFormat::Code => {
                (1..=128).contains(&value.len())
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
            }
            ParamFormat::Text => value.len() <= 256 && !value.chars().any(char::is_control),
        }
    }

    /// What a value of this format looks like, for refusals.
    pub fn describe(self) -> &'static str {
        match self {
            ParamFormat::Idnp => "an IDNP (13 digits with a valid control digit)",
            ParamFormat::Idno => "an IDNO (13 digits with a valid control digit)",
            ParamFormat::IdnpOrIdno => "an IDNP or IDNO (13 digits with a valid control digit)",
            ParamFormat::Uuid => "a UUID such as 0190a8c2-6d1e-7b4a-9c55-3f1e2d3c4b5a",
            ParamFormat::Date => "a date YYYY-MM-DD",
            ParamFormat::DateOrTime => "a date YYYY-MM-DD or an RFC 3339 time",
            ParamFormat::Integer => "a whole number of at most 9 digits",
            ParamFormat::Code => "an identifier of letters, digits and ._:- (1 to 128)",
            ParamFormat::Text => "text of at most 256 bytes without control characters",
        }
    }
}

fn is_date(value: &str) -> bool {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    value.len() == 10 && time::Date::parse(value, &format).is_ok()
}

/// Where a request holds the id of a person it asks about, as the catalog
/// names it: `{"query": "idnp"}` or `{"body": "/idnps/*"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum SubjectLocation {
    /// A query parameter (one of the service's catalogued, id-typed ones).
    Query(String),
    /// A JSON pointer into the request body; a `*` segment stands for every
    /// element of an array, so `/persons/*/idnp` names each person's id.
    Body(String),
}

/// A body pointer split into its segments (`~1` and `~0` unescaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    /// An object member.
    Key(String),
    /// Every element of an array.
    Each,
}

/// Splits a subject pointer; `None` when it is not an RFC 6901 pointer.
pub(crate) fn parse_pointer(pointer: &str) -> Option<Vec<Segment>> {
    let rest = pointer.strip_prefix('/')?;
    rest.split('/')
        .map(|raw| {
            if raw == "*" {
                return Some(Segment::Each);
            }
            let mut out = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                match c {
                    '~' => match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => return None,
                    },
                    c => out.push(c),
                }
            }
            Some(Segment::Key(out))
        })
        .collect()
}

/// Why a body does not hold person ids where the catalog says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdProblem {
    /// JSON pointer (RFC 6901) of the offending value.
    pub pointer: String,
}

/// Collects the values at `segments` in `body`. A missing member or an
/// element that is not an array under `*` yields nothing (the request schema
/// says what is required); a value that is there but is not a valid IDNP or
/// IDNO is a problem, because the provider would read it as one.
pub(crate) fn ids_at(
    body: &Value,
    segments: &[Segment],
    at: &mut String,
    out: &mut Vec<String>,
) -> Result<(), IdProblem> {
    let Some((first, rest)) = segments.split_first() else {
        return match body {
            Value::String(s) if crate::ids::is_valid_national_id(s) => {
                out.push(s.clone());
                Ok(())
            }
            Value::Null => Ok(()),
            _ => Err(IdProblem {
                pointer: at.clone(),
            }),
        };
    };
    let len = at.len();
    match (first, body) {
        (Segment::Key(key), Value::Object(map)) => {
            if let Some(value) = map.get(key) {
                at.push('/');
                at.push_str(&key.replace('~', "~0").replace('/', "~1"));
                ids_at(value, rest, at, out)?;
                at.truncate(len);
            }
        }
        (Segment::Each, Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                at.push('/');
                at.push_str(&i.to_string());
                ids_at(item, rest, at, out)?;
                at.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Who a call is about, from its query and body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallSubjects {
    /// Every IDNP/IDNO the call asks about, each once.
    pub ids: Vec<String>,
    /// The ids `MConnect-Subject` must be one of; `None` when the request
    /// names nobody the header could be checked against (the service's
    /// request carries no person id).
    pub bound: Option<Vec<String>>,
}

/// One decoded query parameter.
#[derive(Debug, Clone)]
pub struct QueryValue<'c> {
    /// Its catalog entry.
    pub parameter: &'c QueryParameter,
    /// The decoded value.
    pub value: String,
}

/// Why a query string was refused; the text says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryProblem(pub String);

/// Decodes and checks a query string against the service's catalogued
/// parameters: every name known, none repeated, each value of its format,
/// every required one present. `+` is a space, as in HTML forms and the SDK.
pub fn parse_query<'c>(
    raw: Option<&str>,
    parameters: &'c [QueryParameter],
) -> Result<Vec<QueryValue<'c>>, QueryProblem> {
    let mut values: Vec<QueryValue<'c>> = Vec::new();
    let raw = raw.unwrap_or("");
    if raw.contains(';') {
        // Some stacks split on `;` as well as `&`: refuse rather than guess.
        return Err(QueryProblem(
            "the query must not contain `;` (separate parameters with &, escape as %3B)".into(),
        ));
    }
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(raw_name).ok_or_else(|| {
            QueryProblem("a query parameter name is not valid percent-encoded UTF-8".into())
        })?;
        let parameter = parameters.iter().find(|p| p.name == name).ok_or_else(|| {
            let known: Vec<&str> = parameters.iter().map(|p| p.name.as_str()).collect();
            QueryProblem(format!(
                "query parameter `{}` is not catalogued for this service (it takes: {})",
                name.escape_debug(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })?;
        if values.iter().any(|v| v.parameter.name == parameter.name) {
            return Err(QueryProblem(format!(
                "query parameter `{name}` must appear once"
            )));
        }
        let value = decode(raw_value).ok_or_else(|| {
            QueryProblem(format!(
                "query parameter `{name}` is not valid percent-encoded UTF-8"
            ))
        })?;
        if !parameter.format.accepts(&value) {
            return Err(QueryProblem(format!(
                "query parameter `{name}` must be {}",
                parameter.format.describe()
            )));
        }
        values.push(QueryValue { parameter, value });
    }
    if let Some(missing) = parameters
        .iter()
        .find(|p| p.required && !values.iter().any(|v| v.parameter.name == p.name))
    {
        return Err(QueryProblem(format!(
            "query parameter `{}` is required ({})",
            missing.name,
            missing.format.describe()
        )));
    }
    Ok(values)
}

/// Strict percent-decoding: a `%` must start a valid escape, and the result
/// must be UTF-8.
fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Text;

    fn param(name: &str, required: bool, format: ParamFormat) -> QueryParameter {
        QueryParameter {
            name: name.into(),
            required,
            format,
            example: None,
            meaning: Text::default(),
        }
    }

    #[test]
    fn formats_table() {
        let table: &[(ParamFormat, &str, bool)] = &[
            (ParamFormat::Idnp, "2000000000015", true),
            (ParamFormat::Idnp, "2000000000016", false),
            (ParamFormat::Idnp, "200000000001", false),
            (ParamFormat::Idno, "1003603000063", true),
            (ParamFormat::IdnpOrIdno, " 2000000000015", false),
            (
                ParamFormat::Uuid,
                "0190a8c2-6d1e-7b4a-9c55-3f1e2d3c4b5a",
                true,
            ),
            (ParamFormat::Uuid, "0190a8c26d1e7b4a9c553f1e2d3c4b5a", false),
            (ParamFormat::Date, "2025-02-28", true),
            (ParamFormat::Date, "2025-02-30", false),
            (ParamFormat::Date, "+2025-02-28", false),
            (ParamFormat::DateOrTime, "2025-02-01T00:00:00Z", true),
            (ParamFormat::DateOrTime, "yesterday", false),
            (ParamFormat::Integer, "50", true),
            (ParamFormat::Integer, "-1", false),
            (ParamFormat::Integer, "1234567890", false),
            (ParamFormat::Code, "order-17.a:b_c", true),
            (ParamFormat::Code, "a b", false),
            (ParamFormat::Code, "", false),
            (ParamFormat::Text, "Ștefan cel Mare", true),
            (ParamFormat::Text, "a\nb", false),
        ];
        for (format, value, ok) in table {
            assert_eq!(format.accepts(value), *ok, "{format:?} {value:?}");
        }
    }

    #[test]
    fn queries_table() {
        let params = [
            param("idnp", true, ParamFormat::Idnp),
            param("from", false, ParamFormat::Date),
        ];
        let ok: &[(&str, &[&str])] = &[
            ("idnp=2000000000015", &["2000000000015"]),
            (
                "idnp=2000000000015&from=2025-01-01",
                &["2000000000015", "2025-01-01"],
            ),
            ("id%6Ep=2000000000015", &["2000000000015"]),
            ("idnp=2000000000015&", &["2000000000015"]),
        ];
        for (raw, want) in ok {
            let got = parse_query(Some(raw), &params).unwrap_or_default();
            let got: Vec<&str> = got.iter().map(|v| v.value.as_str()).collect();
            assert_eq!(&got, want, "{raw}");
        }
        for bad in [
            None,
            Some(""),
            Some("idnp=2000000000016"),
            Some("idnp=2000000000015&idnp=2000000000026"),
            Some("idnp=2000000000015&id%6Ep=2000000000026"),
            Some("idnp=2000000000015;idnp=2000000000026"),
            Some("idnp=2000000000015&IDNP=2000000000026"),
            Some("idnp=2000000000015&extra=1"),
            Some("idnp=%zz"),
            Some("idnp=%C3"),
            Some("idnp=2000000000015&from=2025-13-01"),
        ] {
            assert!(parse_query(bad, &params).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids_at_pointers() {
        let body = serde_json::json!({
            "idnps": ["2000000000015", "2000000000026"],
            "persons": [{"idnp": "2000000000015"}, {"name": "x"}],
            "bad": ["2000000000016"],
            "n": 5
        });
        let collect = |p: &str| {
            let segments = parse_pointer(p).unwrap_or_default();
            let mut out = Vec::new();
            ids_at(&body, &segments, &mut String::new(), &mut out).map(|()| out)
        };
        assert_eq!(
            collect("/idnps/*"),
            Ok(vec![
                "2000000000015".to_string(),
                "2000000000026".to_string()
            ])
        );
        assert_eq!(
            collect("/persons/*/idnp"),
            Ok(vec!["2000000000015".to_string()])
        );
        assert_eq!(collect("/missing"), Ok(vec![]));
        assert_eq!(
            collect("/bad/*"),
            Err(IdProblem {
                pointer: "/bad/0".into()
            })
        );
        assert!(collect("/n").is_err());
        assert!(collect("/idnps").is_err(), "an array is not an id");
        assert!(parse_pointer("idnps").is_none());
        assert!(parse_pointer("/a~2").is_none());
        assert_eq!(
            parse_pointer("/a~1b/*"),
            Some(vec![Segment::Key("a/b".into()), Segment::Each])
        );
    }
}
