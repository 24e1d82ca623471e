//! RFC 9421 signature bases over hostile messages: any `Signature-Input`
//! (structured-field parameters `sf`, `key`, `bs`, `req`, `name` included),
//! any header fields, any target URI and method, for requests and responses.
//!
//! Invariants checked:
//! - the base has exactly one line per covered component plus the
//!   `@signature-params` line (a value can never inject a line, which would let
//!   one signature cover a different message);
//! - the serialized `@signature-params` parses back to parameters that build
//!   the same base (what the verifier rebuilds is what the signer signed).
//!
//! Input: line 1 the method, line 2 the target URI, line 3 the
//! `Signature-Input` member value (after `mconnect=`), then `name: value`
//! header lines; a line `--` starts the response's header lines.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use mconnect::httpsig::{self, MessageView, RequestView, SignatureParams};

fn headers_from<'a>(lines: impl Iterator<Item = &'a [u8]>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let value = line[colon + 1..]
            .strip_prefix(b" ")
            .unwrap_or(&line[colon + 1..]);
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    headers
}

fn parse(signature_input: &[u8]) -> Option<SignatureParams> {
    let mut headers = HeaderMap::new();
    let mut value = b"mconnect=".to_vec();
    value.extend_from_slice(signature_input);
    headers.insert("signature-input", HeaderValue::from_bytes(&value).ok()?);
    headers.insert("signature", HeaderValue::from_static("mconnect=:AAAA:"));
    httpsig::parse_signature(&headers, "mconnect")
        .ok()
        .map(|p| p.params)
}

fn check(view: &MessageView<'_>, params: &SignatureParams) {
    let Ok(base) = httpsig::signature_base(view, params) else {
        return;
    };
    assert_eq!(
        base.split('\n').count(),
        params.components.len() + 1,
        "a component value spans lines: {base:?}"
    );
    let last = base.rsplit('\n').next().unwrap_or_default();
    let serialized = last
        .strip_prefix("\"@signature-params\": ")
        .expect("the last line is @signature-params");
    let reparsed = parse(serialized.as_bytes())
        .unwrap_or_else(|| panic!("serialized parameters do not parse back: {serialized:?}"));
    let again = httpsig::signature_base(view, &reparsed)
        .unwrap_or_else(|e| panic!("reparsed parameters fail: {e}; base was {base:?}"));
    assert_eq!(
        base, again,
        "the base does not survive a round trip of its parameters"
    );
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n');
    let (Some(method), Some(uri), Some(input)) = (lines.next(), lines.next(), lines.next()) else {
        return;
    };
    let (Ok(method), Ok(uri)) = (std::str::from_utf8(method), std::str::from_utf8(uri)) else {
        return;
    };
    let Some(params) = parse(input) else {
        return;
    };
    let rest: Vec<&[u8]> = lines.collect();
    let split = rest.iter().position(|l| *l == b"--").unwrap_or(rest.len());
    let request_headers = headers_from(rest[..split].iter().copied());
    let response_headers = headers_from(rest[split..].iter().skip(1).copied());
    let request = RequestView {
        method,
        target_uri: uri,
        headers: &request_headers,
    };
    check(&MessageView::Request(request), &params);
    check(
        &MessageView::Response {
            status: 200,
            headers: &response_headers,
            request: Some(request),
        },
        &params,
    );
});
