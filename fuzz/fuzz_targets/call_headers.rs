//! The path and MConnect-* header checks must refuse, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mconnect::exchange::call::{CallHeaders, parse_route};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (path, query) = match text.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (text.as_ref(), None),
    };
    let _ = parse_route(path, query);
    let mut headers = http::HeaderMap::new();
    for (i, name) in [
        "mconnect-client",
        "mconnect-calling-user",
        "mconnect-call-basis",
        "mconnect-call-reason",
        "mconnect-subject",
        "mconnect-request-id",
    ]
    .iter()
    .enumerate()
    {
        let part = data.chunks(8).nth(i).unwrap_or_default();
        if let Ok(value) = http::HeaderValue::from_bytes(part) {
            headers.insert(*name, value);
        }
    }
    let _ = CallHeaders::parse(&headers);
});
