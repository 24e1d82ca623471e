//! RFC 9530 Content-Digest parsing must refuse, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = http::HeaderValue::from_bytes(data) {
        let _ = mconnect::httpsig::digest::verify_content_digest(&value, data);
    }
});
