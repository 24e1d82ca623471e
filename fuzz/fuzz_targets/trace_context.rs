//! W3C trace context from a consumer (`traceparent`, `tracestate`), read as
//! the broker reads it (`mconnect_sdk::trace`).
//!
//! Invariants checked: reading never panics; a `traceparent` that parses is
//! sent on as version 00 that parses again to the same trace, span and
//! sampled flag; a `tracestate` that is passed on is within its bounds and
//! reads back unchanged.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use mconnect_sdk::trace::{
    MAX_TRACESTATE_LEN, TRACEPARENT, TRACESTATE, TraceContext, TraceParent,
    tracestate_from_headers,
};

fuzz_target!(|data: &[u8]| {
    let (parent, state) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    if let Ok(text) = std::str::from_utf8(parent)
        && let Some(parsed) = TraceParent::parse(text)
    {
        let again = TraceParent::parse(&parsed.to_string()).expect("sent on as a valid 00");
        assert_eq!(again.trace_id(), parsed.trace_id());
        assert_eq!(again.parent_id(), parsed.parent_id());
        assert_eq!(again.sampled(), parsed.sampled());
    }
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(parent) {
        headers.insert(TRACEPARENT, value);
    }
    if let Ok(value) = HeaderValue::from_bytes(state) {
        headers.insert(TRACESTATE, value);
    }
    let context = TraceContext::continue_from(&headers);
    if let Some(passed) = tracestate_from_headers(&headers) {
        assert!(passed.len() <= MAX_TRACESTATE_LEN);
        let mut back = HeaderMap::new();
        back.insert(TRACESTATE, HeaderValue::from_str(&passed).expect("a header value"));
        assert_eq!(tracestate_from_headers(&back).as_deref(), Some(passed.as_str()));
    }
    let mut sent = HeaderMap::new();
    context.insert_headers(&mut sent);
    let span = TraceParent::from_headers(&sent).expect("the hop's own traceparent");
    assert_eq!(span.trace_id(), context.trace_id());
});
