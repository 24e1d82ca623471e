//! `Content-Digest` (RFC 9530): computing it for bodies MConnect sends and
//! checking it on bodies it receives.
//!
//! Invariants: only `sha-256` and `sha-512` count; other algorithms in a
//! received field (including the deprecated `md5`, `sha`, ...) are ignored,
//! but at least one supported digest must be present and every supported one
//! present must match. The field is parsed strictly as an RFC 8941
//! Dictionary with byte-sequence values; a repeated algorithm is malformed.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::HeaderValue;
use sfv::{BareItem, ListEntry};

use crate::crypto::{sha256, sha512};

/// Why a `Content-Digest` does not vouch for a body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// The field is not a dictionary of byte sequences.
    #[error("malformed Content-Digest: {0}")]
    Malformed(String),
    /// No `sha-256` or `sha-512` member.
    #[error("Content-Digest has no sha-256 or sha-512 digest: send one of them")]
    Unsupported,
    /// A supported digest does not match the body.
    #[error("Content-Digest does not match the body")]
    Mismatch,
}

/// The `Content-Digest` value for `body`: `sha-256=:<base64>:`.
pub fn content_digest_header(body: &[u8]) -> HeaderValue {
    let mut value = String::with_capacity(9 + 44 + 1);
    value.push_str("sha-256=:");
    BASE64.encode_string(sha256(body), &mut value);
    value.push(':');
    // Base64 and the fixed prefix are always a valid header value; the
    // fallback is unreachable but keeps this function total.
    HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The one `Content-Digest` field of a message. A message with two lines is
/// malformed: RFC 9110 would join them, and a checker that read only the
/// first (as `HeaderMap::get` does) would vouch for a body the second line
/// contradicts, so MConnect refuses to choose.
pub fn content_digest_field(
    headers: &http::HeaderMap,
) -> Result<Option<&HeaderValue>, DigestError> {
    let mut lines = headers
        .get_all(crate::protocol::headers::CONTENT_DIGEST)
        .iter();
    let first = lines.next();
    if lines.next().is_some() {
        return Err(DigestError::Malformed(
            "Content-Digest must appear once; send one field with every digest in it".into(),
        ));
    }
    Ok(first)
}

/// Checks a received `Content-Digest` against the body it came with.
///
/// When a message carries several `Content-Digest` lines, join them with
/// `", "` first (RFC 9110 section 5.3).
pub fn verify_content_digest(header: &HeaderValue, body: &[u8]) -> Result<(), DigestError> {
    let dict = super::parse_dictionary(header.as_bytes())
        .map_err(|e| DigestError::Malformed(format!("not a structured dictionary: {e}")))?;
    let mut checked = false;
    for (algorithm, member) in &dict {
        let expected: &[u8] = match algorithm.as_str() {
            "sha-256" | "sha-512" => match member {
                ListEntry::Item(sfv::Item {
                    bare_item: BareItem::ByteSequence(bytes),
                    ..
                }) => bytes,
                _ => {
                    return Err(DigestError::Malformed(format!(
                        "{} must be a byte sequence (:base64:)",
                        algorithm.as_str()
                    )));
                }
            },
            // RFC 9530 section 2: unknown algorithms are ignored.
            _ => continue,
        };
        let matches = if algorithm.as_str() == "sha-256" {
            expected == sha256(body).as_slice()
        } else {
            expected == sha512(body).as_slice()
        };
        if !matches {
            return Err(DigestError::Mismatch);
        }
        checked = true;
    }
    if checked {
        Ok(())
    } else {
        Err(DigestError::Unsupported)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // A failed unwrap is how a test reports failure.
mod tests {
    use super::*;

    const HELLO_LF: &[u8] = b"{\"hello\": \"world\"}\n";

    fn value(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    #[test]
    fn rfc9530_examples() {
        // RFC 9530 section 2 (sha-512 single member) and Appendix B.1, B.2.
        let cases: &[(&[u8], &str)] = &[
            (
                HELLO_LF,
                "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:",
            ),
            (
                HELLO_LF,
                "sha-512=:YMAam51Jz/jOATT6/zvHrLVgOYTGFy1d6GJiOHTohq4yP+pgk4vf2aCsyRZOtw8MjkM7iw7yZ/WkppmM44T3qg==:",
            ),
            (
                b"",
                "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:",
            ),
            // RFC 9421 Appendix B.2 test-request and test-response bodies.
            (
                b"{\"hello\": \"world\"}",
                "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:",
            ),
            (
                b"{\"message\": \"good dog\"}",
                "sha-512=:mEWXIS7MaLRuGgxOBdODa3xqM1XdEvxoYhvlCFJ41QJgJc4GTsPp29l5oGX69wWdXymyU0rjJuahq4l5aGgfLQ==:",
            ),
        ];
        for (body, header) in cases {
            verify_content_digest(&value(header), body).unwrap();
        }
        assert_eq!(
            content_digest_header(HELLO_LF),
            "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:"
        );
        assert_eq!(
            content_digest_header(b""),
            "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"
        );
    }

    #[test]
    fn every_supported_digest_must_match() {
        let both = "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:, \
                    sha-512=:YMAam51Jz/jOATT6/zvHrLVgOYTGFy1d6GJiOHTohq4yP+pgk4vf2aCsyRZOtw8MjkM7iw7yZ/WkppmM44T3qg==:";
        verify_content_digest(&value(both), HELLO_LF).unwrap();
        // RFC 9530 section 2's two-member example pairs a sha-512 of this body
        // with a sha-256 of something else: under "every supported digest must
        // match" it is refused.
        let section2 = "sha-256=:d435Qo+nKZ+gLcUHn7GQtQ72hiBVAgqoLsZnZPiTGPk=:, \
                        sha-512=:YMAam51Jz/jOATT6/zvHrLVgOYTGFy1d6GJiOHTohq4yP+pgk4vf2aCsyRZOtw8MjkM7iw7yZ/WkppmM44T3qg==:";
        assert_eq!(
            verify_content_digest(&value(section2), HELLO_LF),
            Err(DigestError::Mismatch)
        );
    }

    #[test]
    fn unknown_algorithms_are_ignored_but_not_enough() {
        let with_md5 = "md5=:XrY7u+Ae7tCTyyK7j1rNww==:, sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:";
        verify_content_digest(&value(with_md5), HELLO_LF).unwrap();
        assert_eq!(
            verify_content_digest(&value("md5=:XrY7u+Ae7tCTyyK7j1rNww==:"), HELLO_LF),
            Err(DigestError::Unsupported)
        );
    }

    #[test]
    fn tampered_bodies_and_digests_mismatch() {
        let header = content_digest_header(b"{\"amount\": 10}");
        verify_content_digest(&header, b"{\"amount\": 10}").unwrap();
        assert_eq!(
            verify_content_digest(&header, b"{\"amount\": 1000}"),
            Err(DigestError::Mismatch)
        );
        // A truncated digest is a mismatch, not a prefix match.
        assert_eq!(
            verify_content_digest(&value("sha-256=:RK/0qy18MlBSVnWg:"), HELLO_LF),
            Err(DigestError::Mismatch)
        );
    }

    #[test]
    fn malformed_fields_are_errors() {
        for bad in [
            "",
            "sha-256",
            "sha-256=RK",
            "sha-256=\"RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=\"",
            "sha-256=:@@@:",
            "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:,",
            "SHA-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:",
            "sha-256=(:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:)",
            "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:, sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:",
        ] {
            let result = verify_content_digest(&value(bad), HELLO_LF);
            assert!(
                matches!(
                    result,
                    Err(DigestError::Malformed(_) | DigestError::Unsupported)
                ),
                "{bad}: {result:?}"
            );
        }
        // Non-ASCII bytes in the field value.
        let raw = HeaderValue::from_bytes(b"sha-256=:\xff:").unwrap();
        assert!(matches!(
            verify_content_digest(&raw, HELLO_LF),
            Err(DigestError::Malformed(_))
        ));
    }
}
