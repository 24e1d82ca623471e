//! Reading a consumer's call: the `/r1/{provider}/{code}[/{subpath}]` path and
//! the `MConnect-*` headers of PROTOCOL.md section 2, checked for form.
//!
//! Invariant: everything here is a pure function of the request head; any
//! malformed value is a 400 `request.malformed` naming the header to fix.

use http::HeaderMap;

use super::error::{ErrorKind, ExchangeError};
use mconnect_sdk::ids::{is_valid_national_id, is_valid_participant_id, is_valid_request_id};

pub use mconnect_sdk::protocol::{headers, labels};

/// The service a call addresses and what follows it.
#[derive(Debug, PartialEq, Eq)]
pub struct Route<'a> {
    /// Provider participant id.
    pub provider: &'a str,
    /// Service code.
    pub code: &'a str,
    /// Everything after `/r1/{provider}/{code}`, starting with `/`, or empty.
    pub subpath: &'a str,
    /// The raw query, without `?`.
    pub query: Option<&'a str>,
}

/// Parses the request path.
pub fn parse_route<'a>(path: &'a str, query: Option<&'a str>) -> Result<Route<'a>, ExchangeError> {
    let bad = || {
        ExchangeError::new(
            ErrorKind::Malformed,
            "path must be /r1/{provider}/{service-code}[/{subpath}]",
        )
    };
    let rest = path.strip_prefix("/r1/").ok_or_else(bad)?;
    let (provider, rest) = rest.split_once('/').ok_or_else(bad)?;
    let (code, subpath) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if !is_valid_participant_id(provider) || !is_valid_participant_id(code) {
        return Err(bad());
    }
    if !is_safe_subpath(subpath) {
        return Err(ExchangeError::new(
            ErrorKind::Malformed,
            "subpath must not contain dot segments (in any encoding), backslashes, control characters or bad escapes",
        ));
    }
    Ok(Route {
        provider,
        code,
        subpath,
        query,
    })
}

/// Whether a subpath may be passed to the provider as it is.
///
/// Dot segments would let a subpath climb out of the provider's service path,
/// and stacks disagree on what counts as one: some decode `%2e` and `%2f`,
/// some decode twice (`%252e`), some treat `\` as `/`, some strip `;params`
/// from a segment (`..;`). So the subpath is decoded repeatedly until it no
/// longer changes, and every stage is refused if it holds a segment that is
/// `.` or `..` (before any `;`), a backslash, a control character or a `%`
/// that starts no valid escape.
pub fn is_safe_subpath(subpath: &str) -> bool {
    let mut stage = subpath.as_bytes().to_vec();
    // Each round removes at least two bytes, so this ends; eight rounds is
    // more decoding than any real stack does.
    for _ in 0..8 {
        if stage
            .iter()
            .any(|&b| b == b'\\' || b.is_ascii_control() || b == 0x7f)
        {
            return false;
        }
        let dot_segment = stage.split(|&b| b == b'/').any(|segment| {
            let name = segment.split(|&b| b == b';').next().unwrap_or_default();
            name == b"." || name == b".."
        });
        if dot_segment {
            return false;
        }
        if !stage.contains(&b'%') {
            return true;
        }
        let mut decoded = Vec::with_capacity(stage.len());
        let mut i = 0;
        while i < stage.len() {
            if stage[i] == b'%' {
                let hex = stage
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => decoded.push(byte),
                    None => return false,
                }
                i += 3;
            } else {
                decoded.push(stage[i]);
                i += 1;
            }
        }
        stage = decoded;
    }
    false
}

/// The protocol headers of a call, validated for form.
#[derive(Debug, Clone)]
pub struct CallHeaders {
    /// `MConnect-Client`.
    pub client: String,
    /// `MConnect-Calling-User`.
    pub calling_user: String,
    /// `MConnect-Call-Basis`.
    pub basis: String,
    /// `MConnect-Call-Reason`.
    pub reason: String,
    /// `MConnect-Subject`.
    pub subject: Option<String>,
    /// `MConnect-Represented-Party`.
    pub represented_party: Option<String>,
    /// `MConnect-Request-Id`.
    pub request_id: uuid::Uuid,
}

/// Reads one header as a single ASCII value.
pub fn single<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ExchangeError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ExchangeError::new(
            ErrorKind::Malformed,
            format!("header {name} must appear once"),
        ));
    }
    first.to_str().map(|s| Some(s.trim())).map_err(|_| {
        ExchangeError::new(
            ErrorKind::Malformed,
            format!("header {name} must be visible ASCII"),
        )
    })
}

fn required<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, ExchangeError> {
    match single(headers, name)? {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(ExchangeError::new(
            ErrorKind::Malformed,
            format!("header {name} is required"),
        )),
    }
}

fn token(name: &str, value: &str) -> Result<String, ExchangeError> {
    let ok = value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:/".contains(&b));
    if ok {
        Ok(value.to_string())
    } else {
        Err(ExchangeError::new(
            ErrorKind::Malformed,
            format!(
                "header {name} must be an identifier of letters, digits and -._:/ (at most 128)"
            ),
        ))
    }
}

fn national_id(name: &str, value: &str, what: &str) -> Result<String, ExchangeError> {
    if is_valid_national_id(value) {
        Ok(value.to_string())
    } else {
        Err(ExchangeError::new(
            ErrorKind::Malformed,
            format!("header {name} must be {what}: 13 digits with a valid control digit"),
        ))
    }
}

impl CallHeaders {
    /// The consumer id alone, read first so later refusals can name the client.
    pub fn client(headers: &HeaderMap) -> Result<&str, ExchangeError> {
        let client = required(headers, headers::CLIENT)?;
        if is_valid_participant_id(client) {
            Ok(client)
        } else {
            Err(ExchangeError::new(
                ErrorKind::Malformed,
                "header mconnect-client must be a participant id",
            ))
        }
    }

    /// Reads and checks every protocol header.
    pub fn parse(headers: &HeaderMap) -> Result<CallHeaders, ExchangeError> {
        let client = Self::client(headers)?.to_string();
        let calling_user = national_id(
            headers::CALLING_USER,
            required(headers, headers::CALLING_USER)?,
            "an IDNP",
        )?;
        let basis = token(headers::CALL_BASIS, required(headers, headers::CALL_BASIS)?)?;
        let reason = token(
            headers::CALL_REASON,
            required(headers, headers::CALL_REASON)?,
        )?;
        let subject = single(headers, headers::SUBJECT)?
            .map(|v| national_id(headers::SUBJECT, v, "an IDNP or IDNO"))
            .transpose()?;
        let represented_party = single(headers, headers::REPRESENTED_PARTY)?
            .map(|v| national_id(headers::REPRESENTED_PARTY, v, "an IDNP or IDNO"))
            .transpose()?;
        let raw_id = required(headers, headers::REQUEST_ID)?;
        if !is_valid_request_id(raw_id) {
            return Err(ExchangeError::new(
                ErrorKind::Malformed,
                "header mconnect-request-id must be a UUID such as 0190a8c2-6d1e-7b4a-9c55-3f1e2d3c4b5a",
            ));
        }
        let request_id = uuid::Uuid::try_parse(raw_id).map_err(|_| {
            ExchangeError::new(
                ErrorKind::Malformed,
                "header mconnect-request-id must be a UUID",
            )
        })?;
        Ok(CallHeaders {
            client,
            calling_user,
            basis,
            reason,
            subject,
            represented_party,
            request_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let ok = [
            ("/r1/asp-rsp/person-by-idnp", "", None),
            ("/r1/asp-rsp/person-by-idnp/extra/x", "/extra/x", None),
            (
                "/r1/asp-rsp/person-by-idnp/a.b/..c/c..",
                "/a.b/..c/c..",
                None,
            ),
            (
                "/r1/asp-rsp/person-by-idnp/%C8%98tefan",
                "/%C8%98tefan",
                None,
            ),
            ("/r1/asp-rsp/person-by-idnp", "", Some("idnp=1")),
        ];
        for (path, sub, q) in ok {
            let r = parse_route(path, q).unwrap();
            assert_eq!(
                (r.provider, r.code, r.subpath, r.query),
                ("asp-rsp", "person-by-idnp", sub, q)
            );
        }
        for bad in [
            "/r2/a/b",
            "/r1/a",
            "/r1//b",
            "/r1/A/b",
            "/r1/a/b/../c",
            "/r1/a/b/%2E%2E/c",
            "/r1/a/b/..%2f..%2fadmin",
            "/r1/a/b/..\\x",
            "/r1/a/b/x\\..",
            "/r1/a/b/%252e%252e/x",
            "/r1/a/b/%25252e%25252e/x",
            "/r1/a/b/..;/x",
            "/r1/a/b/.;x=1/y",
            "/r1/a/b/.",
            "/r1/a/b/%2e",
            "/r1/a/b/x%5c..",
            "/r1/a/b/x%00",
            "/r1/a/b/x%zz",
            "/r1/a/b/x%2",
            // The route fuzz target's reproducers (fuzz/regressions/route/).
            "/r1/a/b/.;/x",
            "/r1/a/b/..%2fx",
            "/r1/a/b/..;/x",
            "/r1/a/b/%252e%252e/x",
            "/r1/a/b/%5%4%33",
        ] {
            let err = parse_route(bad, None).unwrap_err();
            assert_eq!(err.code(), "request.malformed", "{bad}");
        }
    }

    fn base() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("mconnect-client", "apl-cahul".parse().unwrap());
        h.insert("mconnect-calling-user", "2000000000015".parse().unwrap());
        h.insert(
            "mconnect-call-basis",
            "md-law-142-2018-art-6".parse().unwrap(),
        );
        h.insert("mconnect-call-reason", "social-aid".parse().unwrap());
        h.insert(
            "mconnect-request-id",
            "0190a8c2-6d1e-7b4a-9c55-3f1e2d3c4b5a".parse().unwrap(),
        );
        h
    }

    #[test]
    fn headers_table() {
        assert!(CallHeaders::parse(&base()).is_ok());
        let cases: &[(&str, Option<&str>)] = &[
            ("mconnect-client", None),
            ("mconnect-client", Some("Bad Id")),
            ("mconnect-calling-user", Some("2000000000016")),
            ("mconnect-calling-user", None),
            ("mconnect-call-basis", Some("has space")),
            ("mconnect-call-reason", None),
            ("mconnect-subject", Some("123")),
            ("mconnect-represented-party", Some("abc")),
            ("mconnect-request-id", Some("nope")),
        ];
        for (name, value) in cases {
            let mut h = base();
            match value {
                Some(v) => {
                    h.insert(*name, v.parse().unwrap());
                }
                None => {
                    h.remove(*name);
                }
            }
            let err = CallHeaders::parse(&h).unwrap_err();
            assert_eq!(err.code(), "request.malformed", "{name}={value:?}");
            assert!(err.detail().contains(name), "{}", err.detail());
        }
        let mut dup = base();
        dup.append("mconnect-client", "apl-balti".parse().unwrap());
        assert!(CallHeaders::parse(&dup).is_err());
    }
}
