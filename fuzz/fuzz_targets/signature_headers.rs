//! Signature-Input / Signature parsing and signature-base construction must
//! never panic, whatever the network sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mconnect::httpsig::{self, MessageView, RequestView};

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let (input, signature) = data.split_at(split);
    let mut headers = http::HeaderMap::new();
    let (Ok(input), Ok(signature)) = (
        http::HeaderValue::from_bytes(input),
        http::HeaderValue::from_bytes(signature.get(1..).unwrap_or_default()),
    ) else {
        return;
    };
    headers.insert("signature-input", input);
    headers.insert("signature", signature);
    headers.insert(
        "content-digest",
        http::HeaderValue::from_static("sha-256=:AA==:"),
    );
    if let Ok(parsed) = httpsig::parse_signature(&headers, "mconnect") {
        let view = MessageView::Request(RequestView {
            method: "GET",
            target_uri: "https://example.com/r1/a/b?x=1",
            headers: &headers,
        });
        let _ = httpsig::signature_base(&view, &parsed.params);
    }
});
