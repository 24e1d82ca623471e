//! `parse_route` and the SDK's `query_param` on hostile paths and queries.
//!
//! Invariant checked: a subpath the broker accepts has, at every
//! percent-decoding depth up to four, no dot segment (also not before a `;`
//! path parameter, as servlet containers read `..;x`) and no backslash, so a provider that decodes once, twice or "helpfully"
//! cannot be walked out of the service's path. The SDK's query decoder must
//! not panic and must return the value of the first matching parameter only.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mconnect::exchange::call::parse_route;
use mconnect_sdk::query_param;

// One round of percent-decoding, `%XX` only (a path has no `+` rule).
fn decode_once(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
        match (bytes[i], hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn check_subpath(subpath: &str) {
    let mut text = subpath.to_owned();
    for depth in 0..4 {
        assert!(
            !text.contains('\\'),
            "accepted subpath {subpath:?} has a backslash at decoding depth {depth}"
        );
        for segment in text.split('/') {
            let name = segment.split(';').next().unwrap_or_default();
            assert!(
                name != "." && name != "..",
                "accepted subpath {subpath:?} has a dot segment at decoding depth {depth}"
            );
        }
        // An encoded slash becomes a real separator here, so the segment
        // checks of the next round see what it hid.
        let next = decode_once(&text);
        if next == text {
            break;
        }
        text = next;
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query) = match text.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (text, None),
    };
    if let Ok(route) = parse_route(path, query) {
        assert_eq!(route.query, query);
        assert!(route.subpath.is_empty() || route.subpath.starts_with('/'));
        check_subpath(route.subpath);
    }
    if let Some(query) = query {
        // The name is the first key of the query, so a match always exists.
        let first = query.split('&').next().unwrap_or_default();
        let name = first.split_once('=').map_or(first, |(k, _)| k);
        let value = query_param(query, name);
        assert!(
            value.is_some(),
            "first parameter {name:?} not found in {query:?}"
        );
        let _ = query_param(query, "idnp");
    }
});
