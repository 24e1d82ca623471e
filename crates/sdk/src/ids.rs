//! Identifiers of the bus: participant ids, Moldovan IDNP/IDNO with their
//! control digit, and client request ids.
//!
//! Invariant: these checks are pure and allocation-free, so the exchange path
//! can call them on every request.

/// Checks a participant id against `[a-z0-9][a-z0-9-]{0,62}` (PROTOCOL.md section 1).
pub fn is_valid_participant_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    match bytes.first() {
        Some(first) if first.is_ascii_lowercase() || first.is_ascii_digit() => {}
        _ => return false,
    }
    bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// Checks a 13-digit Moldovan personal or organisation number (IDNP or IDNO).
///
/// Both use the same control digit: the first twelve digits weighted
/// 7, 3, 1 repeated, summed, modulo 10, must equal the thirteenth.
pub fn is_valid_national_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    if bytes.len() != 13 || !bytes.iter().all(u8::is_ascii_digit) {
        return false;
    }
    const WEIGHTS: [u32; 3] = [7, 3, 1];
    let sum: u32 = bytes[..12]
        .iter()
        .enumerate()
        .map(|(i, b)| u32::from(b - b'0') * WEIGHTS[i % 3])
        .sum();
    sum % 10 == u32::from(bytes[12] - b'0')
}

/// Checks an IDNP (natural person). Structurally the same check as an IDNO;
/// the register, not the number, tells the two apart.
pub fn is_valid_idnp(id: &str) -> bool {
    is_valid_national_id(id)
}

/// Checks an IDNO (legal entity).
pub fn is_valid_idno(id: &str) -> bool {
    is_valid_national_id(id)
}

/// Checks a client request id: a UUID in its hyphenated textual form.
pub fn is_valid_request_id(id: &str) -> bool {
    id.len() == 36 && uuid::Uuid::try_parse(id).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participant_ids() {
        for (id, ok) in [
            ("asp-rsp", true),
            ("apl-cahul", true),
            ("0abc", true),
            ("", false),
            ("-abc", false),
            ("Abc", false),
            ("a_b", false),
            (&"a".repeat(63), true),
            (&"a".repeat(64), false),
        ] {
            assert_eq!(is_valid_participant_id(id), ok, "{id}");
        }
    }

    #[test]
    fn national_ids() {
        for (id, ok) in [
            ("1003600000017", true),
            ("2000000000015", true),
            ("2000000000016", false),
            ("200000000001", false),
            ("20000000000155", false),
            ("200000000001a", false),
            ("", false),
        ] {
            assert_eq!(is_valid_national_id(id), ok, "{id}");
        }
    }

    #[test]
    fn request_ids() {
        assert!(is_valid_request_id("0190a8c2-6d1e-7b4a-9c55-3f1e2d3c4b5a"));
        assert!(!is_valid_request_id("0190a8c26d1e7b4a9c553f1e2d3c4b5a"));
        assert!(!is_valid_request_id("not-a-uuid"));
    }
}
