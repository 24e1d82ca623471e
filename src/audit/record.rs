//! The audit record: what one exchange leaves behind, and its canonical bytes.
//!
//! Invariants: the canonical bytes of a record are `serde_json` of [`AuditRecord`]
//! in field declaration order, with every field present (`null` for an unknown
//! optional value; the one exception is a field added after records were
//! first written, which is left out while empty so that every earlier leaf
//! stays canonical). Those bytes are the Merkle leaf, are stored verbatim in the
//! segment files and are served verbatim, so anyone can recompute the leaf hash.
//! Changing the order, names or types of the fields changes every leaf hash that
//! follows: it is a format change, never a refactoring.

use serde::{Deserialize, Serialize};
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use super::AuditError;

/// Largest canonical record accepted, in bytes. Records carry digests and ids,
/// never bodies, so a record near this size is a bug; the cap also bounds what
/// recovery will believe a frame length to be.
pub const MAX_RECORD_BYTES: usize = 256 * 1024;

/// What an exchange's canonical record usually takes (about 1 KB with its
/// ids, digests and key ids); only a first allocation's size.
const TYPICAL_RECORD_BYTES: usize = 1536;

/// The outcome of an exchange as the broker decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// The call passed every check and was forwarded to the provider.
    Accepted,
    /// The call was refused; `problem_code` says which rule failed.
    Refused,
}

/// One audit record: who asked, as whom, why, under which norm, and what they got.
///
/// Times are RFC 3339 UTC strings with exactly six fractional digits
/// (`2025-03-01T09:30:00.123456Z`); build them with [`format_timestamp`].
/// Optional fields are `None` when a refusal happened before the broker learnt
/// them (for example a request refused for a malformed header has no service).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// The broker's id of the exchange (UUIDv7).
    pub exchange_id: String,
    /// The client's `MConnect-Request-Id`, when it was readable.
    pub request_id: Option<String>,
    /// Event type: `exchange`, `audit.read`, `admin.change`, `connect.transition`, ...
    pub event: String,
    /// When the broker received the request.
    pub received_at: String,
    /// When the broker forwarded the request to the provider, if it did.
    pub forwarded_at: Option<String>,
    /// When the broker answered the consumer.
    pub answered_at: String,
    /// Consumer participant id (`MConnect-Client`).
    pub consumer: Option<String>,
    /// IDNO of the consumer's organisation.
    pub consumer_idno: Option<String>,
    /// IDNP of the official or end user (`MConnect-Calling-User`).
    pub calling_user: Option<String>,
    /// Provider participant id.
    pub provider: Option<String>,
    /// Service code (`person-by-idnp`) or full `provider/code`.
    pub service: Option<String>,
    /// Catalogued version of the service.
    pub service_version: Option<String>,
    /// Purpose code (`MConnect-Call-Reason`).
    pub purpose: Option<String>,
    /// Legal basis id (`MConnect-Call-Basis`).
    pub legal_basis: Option<String>,
    /// The grant that allowed the call.
    pub grant_id: Option<String>,
    /// IDNP or IDNO the data is about (`MConnect-Subject`).
    pub subject: Option<String>,
    /// Every IDNP/IDNO the call asked about: the header and each id in a
    /// typed query parameter or catalogued body field (a 50-person lookup has
    /// 50). Omitted from the canonical bytes when empty, so records written
    /// before the field existed keep their exact bytes and leaf hashes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<String>,
    /// IDNP/IDNO on whose behalf the user acts (`MConnect-Represented-Party`).
    pub represented_party: Option<String>,
    /// Accepted or refused.
    pub decision: Decision,
    /// The stable problem code of a refusal (PROTOCOL.md section 5).
    pub problem_code: Option<String>,
    /// HTTP status the consumer got.
    pub http_status: u16,
    /// Size of the request body in bytes.
    pub request_bytes: u64,
    /// Lowercase hex SHA-256 of the request body, when there was one.
    pub request_sha256: Option<String>,
    /// Size of the response body as delivered, in bytes.
    pub response_bytes: u64,
    /// Lowercase hex SHA-256 of the response body as delivered.
    pub response_sha256: Option<String>,
    /// Key ids of the signatures the broker verified.
    pub keyids_checked: Vec<String>,
    /// Key ids of the signatures the broker made.
    pub keyids_made: Vec<String>,
    /// Time from receipt to answer, in microseconds.
    pub duration_us: u64,
    /// For an aggregate of refusals (event `exchange.refusals`): how many
    /// refused exchanges of this client, code and second it stands for. Absent
    /// from every other record (and from its canonical bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal_count: Option<u64>,
    /// The single-use ids this exchange used up, once its signature had
    /// verified and the replay check passed: the request id, and
    /// `nonce:{hex}` (the first 16 bytes of the SHA-256 of the signature's
    /// `nonce`) when it had one. The broker refuses them from the same
    /// consumer for 24 hours, across restarts (PROTOCOL.md section 2); the
    /// audit index rebuilds that knowledge from this field. Left out while
    /// empty (records refused before the replay check, management events),
    /// so leaves written before the field existed stay canonical.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replay_ids: Vec<String>,
    /// The W3C trace id of the exchange (32 lower-case hex digits): the one
    /// of the consumer's `traceparent`, or the one the broker started when
    /// it sent none or an invalid one (PROTOCOL.md section 2). It links the
    /// record to the broker's log line, the provider's logs and the
    /// consumer's trace. Correlation, not evidence: no signature covers it.
    /// Left out while absent (management records, refusal aggregates), so
    /// leaves written before the field existed stay canonical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

impl AuditRecord {
    /// A record of a management event (an admin change, a rules reload, an
    /// audit read, a connection-request transition): a fresh event id, the
    /// action in `service`, received now or at `received`, answered now,
    /// accepted with 200, and every field only the data plane knows left
    /// empty. Callers set what differs with struct-update syntax.
    pub fn management(
        event: &str,
        action: impl Into<String>,
        received: std::time::SystemTime,
        started: std::time::Instant,
    ) -> AuditRecord {
        AuditRecord {
            exchange_id: uuid::Uuid::now_v7().to_string(),
            request_id: None,
            event: event.to_string(),
            received_at: format_timestamp(OffsetDateTime::from(received)),
            forwarded_at: None,
            answered_at: format_timestamp(OffsetDateTime::now_utc()),
            consumer: None,
            consumer_idno: None,
            calling_user: None,
            provider: None,
            service: Some(action.into()),
            service_version: None,
            purpose: None,
            legal_basis: None,
            grant_id: None,
            subject: None,
            subjects: Vec::new(),
            represented_party: None,
            decision: Decision::Accepted,
            problem_code: None,
            http_status: 200,
            request_bytes: 0,
            request_sha256: None,
            response_bytes: 0,
            response_sha256: None,
            keyids_checked: Vec::new(),
            keyids_made: Vec::new(),
            duration_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            refusal_count: None,
            replay_ids: Vec::new(),
            trace_id: None,
        }
    }

    /// True for a management record (admin change, transition, reload, audit
    /// read), which may use the audit filesystem's reserve below the free-space
    /// watermark; exchange records and refusal aggregates may not.
    pub fn is_management(&self) -> bool {
        !(self.event == "exchange" || self.event.starts_with("exchange."))
    }

    /// The canonical bytes: the Merkle leaf, stored and served as they are.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, AuditError> {
        // An exchange's record is about 1 KB: one allocation instead of the
        // eight doublings `to_vec` makes from an empty vector.
        let mut bytes = Vec::with_capacity(TYPICAL_RECORD_BYTES);
        serde_json::to_writer(&mut bytes, self)
            .map_err(|e| AuditError::InvalidRecord(e.to_string()))?;
        Ok(bytes)
    }

    /// Parses leaf bytes and checks they are canonical, i.e. that serialising the
    /// parsed record gives the same bytes back. A leaf that parses but is not
    /// canonical was not written by this code.
    pub fn from_canonical_bytes(leaf: &[u8]) -> Result<AuditRecord, AuditError> {
        let record: AuditRecord = serde_json::from_slice(leaf)
            .map_err(|e| AuditError::InvalidRecord(format!("leaf is not a record: {e}")))?;
        if record.canonical_bytes()? != leaf {
            return Err(AuditError::InvalidRecord(
                "leaf is not in canonical form".to_string(),
            ));
        }
        Ok(record)
    }

    /// Checks what the index and the auditors rely on: well-formed timestamps and
    /// a size that fits a frame. Called by [`super::AuditLog::append`].
    pub fn validate(&self) -> Result<(), AuditError> {
        if self.exchange_id.is_empty() {
            return Err(AuditError::InvalidRecord(
                "exchange_id must not be empty".to_string(),
            ));
        }
        if self.event.is_empty() {
            return Err(AuditError::InvalidRecord(
                "event must not be empty".to_string(),
            ));
        }
        let times = [
            ("received_at", Some(&self.received_at)),
            ("forwarded_at", self.forwarded_at.as_ref()),
            ("answered_at", Some(&self.answered_at)),
        ];
        for (name, value) in times {
            if let Some(value) = value
                && parse_timestamp(value).is_none()
            {
                return Err(AuditError::InvalidRecord(format!(
                    "{name} must be RFC 3339 UTC with microseconds \
                     (YYYY-MM-DDTHH:MM:SS.ffffffZ), got {value:?}"
                )));
            }
        }
        Ok(())
    }

    /// The received time in microseconds since the Unix epoch, as indexed.
    pub(crate) fn received_micros(&self) -> u64 {
        parse_timestamp(&self.received_at).map_or(0, |t| u64::try_from(t).unwrap_or(0))
    }

    /// The key the service index uses: `provider/code`, whichever form the
    /// record carries the service in.
    pub(crate) fn service_key(&self) -> Option<String> {
        let service = self.service.as_deref().filter(|s| !s.is_empty())?;
        if service.contains('/') {
            return Some(service.to_string());
        }
        match self.provider.as_deref().filter(|p| !p.is_empty()) {
            Some(provider) => Some(format!("{provider}/{service}")),
            None => Some(service.to_string()),
        }
    }
}

/// Formats a time the way records carry it: RFC 3339 in UTC with exactly six
/// fractional digits, so that equal instants always give equal bytes.
///
/// Written digit by digit rather than with `format!`: every exchange formats
/// three of these, and padded integer formatting was 14 % of an audit
/// append's CPU in the growth bench (benches/README.md, issue 17).
pub fn format_timestamp(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    let Ok(year @ 0..=9999) = u32::try_from(t.year()) else {
        // Outside the four digits a record carries (`parse_timestamp` refuses
        // it, so `validate` does too): spelled out, so the error shows it.
        return spelled_timestamp(t);
    };
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    put_digits(&mut text[0..4], year);
    put_digits(&mut text[5..7], u8::from(t.month()).into());
    put_digits(&mut text[8..10], t.day().into());
    put_digits(&mut text[11..13], t.hour().into());
    put_digits(&mut text[14..16], t.minute().into());
    put_digits(&mut text[17..19], t.second().into());
    put_digits(&mut text[20..26], t.microsecond());
    text.iter().copied().map(char::from).collect()
}

/// The record form spelled with `format!`: what [`format_timestamp`] gives
/// for a year outside 0-9999, and the reference its digits are tested
/// against. `t` is in UTC.
fn spelled_timestamp(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// Writes `value` into `slots` as zero-padded decimal digits; the caller
/// sizes `slots` to hold every digit of it.
fn put_digits(slots: &mut [u8], mut value: u32) {
    for slot in slots.iter_mut().rev() {
        // `value % 10` is below 10, so the narrowing is exact.
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Parses the record timestamp form (`YYYY-MM-DDTHH:MM:SS.ffffffZ`) into
/// microseconds since the Unix epoch. Anything else is `None`: the form is
/// strict so the canonical bytes of equal instants are equal.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 27
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[26] != b'Z'
    {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        let digits = b.get(from..to)?;
        digits.iter().try_fold(0u32, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
        })
    };
    let year = i32::try_from(num(0, 4)?).ok()?;
    let month = Month::try_from(u8::try_from(num(5, 7)?).ok()?).ok()?;
    let day = u8::try_from(num(8, 10)?).ok()?;
    let hour = u8::try_from(num(11, 13)?).ok()?;
    let minute = u8::try_from(num(14, 16)?).ok()?;
    let second = u8::try_from(num(17, 19)?).ok()?;
    let micro = num(20, 26)?;
    let date = Date::from_calendar_date(year, month, day).ok()?;
    let time = Time::from_hms_micro(hour, minute, second, micro).ok()?;
    let nanos = PrimitiveDateTime::new(date, time)
        .assume_utc()
        .unix_timestamp_nanos();
    i64::try_from(nanos / 1000).ok()
}

/// Microseconds since the Unix epoch of an [`OffsetDateTime`], as the index keys it.
pub(crate) fn micros_of(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample(i: u64) -> AuditRecord {
        AuditRecord {
            exchange_id: format!("0190f0e0-0000-7000-8000-{i:012}"),
            request_id: Some(format!("req-{i}")),
            event: "exchange".to_string(),
            received_at: "2025-03-01T09:30:00.123456Z".to_string(),
            forwarded_at: None,
            answered_at: "2025-03-01T09:30:00.223456Z".to_string(),
            consumer: Some("apl-cahul".to_string()),
            consumer_idno: None,
            calling_user: None,
            provider: Some("asp-rsp".to_string()),
            service: Some("person-by-idnp".to_string()),
            service_version: None,
            purpose: None,
            legal_basis: None,
            grant_id: None,
            subject: None,
            subjects: Vec::new(),
            represented_party: None,
            decision: Decision::Accepted,
            problem_code: None,
            http_status: 200,
            request_bytes: 0,
            request_sha256: None,
            response_bytes: 10,
            response_sha256: None,
            keyids_checked: vec![],
            keyids_made: vec![],
            duration_us: 100,
            refusal_count: None,
            replay_ids: Vec::new(),
            trace_id: None,
        }
    }

    #[test]
    fn canonical_bytes_round_trip_and_keep_declaration_order() {
        let record = sample(7);
        let bytes = record.canonical_bytes().unwrap_or_default();
        let text = String::from_utf8(bytes.clone()).unwrap_or_default();
        assert!(text.starts_with("{\"exchange_id\":"), "{text}");
        assert!(text.ends_with("\"duration_us\":100}"), "{text}");
        assert!(text.contains("\"decision\":\"accepted\""));
        let back = AuditRecord::from_canonical_bytes(&bytes);
        assert_eq!(back.ok(), Some(record));
    }

    /// A leaf as the broker wrote it before `trace_id` existed (sample 7's
    /// bytes, which must never change): it still parses as canonical, so
    /// logs written before the field verify, and a record with a trace id
    /// has it last.
    #[test]
    fn leaves_written_before_trace_ids_stay_canonical() {
        let before = concat!(
            r#"{"exchange_id":"0190f0e0-0000-7000-8000-000000000007","request_id":"req-7","#,
            r#""event":"exchange","received_at":"2025-03-01T09:30:00.123456Z","forwarded_at":null,"#,
            r#""answered_at":"2025-03-01T09:30:00.223456Z","consumer":"apl-cahul","consumer_idno":null,"#,
            r#""calling_user":null,"provider":"asp-rsp","service":"person-by-idnp","service_version":null,"#,
            r#""purpose":null,"legal_basis":null,"grant_id":null,"subject":null,"represented_party":null,"#,
            r#""decision":"accepted","problem_code":null,"http_status":200,"request_bytes":0,"#,
            r#""request_sha256":null,"response_bytes":10,"response_sha256":null,"keyids_checked":[],"#,
            r#""keyids_made":[],"duration_us":100}"#
        );
        let old = AuditRecord::from_canonical_bytes(before.as_bytes());
        assert_eq!(old.as_ref().ok(), Some(&sample(7)), "{old:?}");
        assert_eq!(
            sample(7).canonical_bytes().ok(),
            Some(before.as_bytes().to_vec())
        );

        let traced = AuditRecord {
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".to_string()),
            ..sample(7)
        };
        let bytes = traced.canonical_bytes().unwrap_or_default();
        let text = String::from_utf8(bytes.clone()).unwrap_or_default();
        assert!(
            text.ends_with(r#""duration_us":100,"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}"#),
            "{text}"
        );
        assert_eq!(AuditRecord::from_canonical_bytes(&bytes).ok(), Some(traced));
    }

    #[test]
    fn non_canonical_leaf_is_refused() {
        let bytes = sample(1).canonical_bytes().unwrap_or_default();
        let mut spaced = b" ".to_vec();
        spaced.extend_from_slice(&bytes);
        assert!(AuditRecord::from_canonical_bytes(&spaced).is_err());
    }

    #[test]
    fn timestamps_are_strict_and_round_trip() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_740_821_400_123_456_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let s = format_timestamp(t);
        assert_eq!(s, "2025-03-01T09:30:00.123456Z");
        assert_eq!(parse_timestamp(&s), Some(1_740_821_400_123_456));
        for bad in [
            "2025-03-01T09:30:00Z",
            "2025-03-01T09:30:00.123456+00:00",
            "2025-02-30T09:30:00.123456Z",
            "2025-03-01t09:30:00.123456Z",
            "",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
        let mut record = sample(1);
        record.received_at = "yesterday".to_string();
        assert!(record.validate().is_err());
    }

    /// The digit-by-digit formatter against the `format!` spelling it
    /// replaced (kept for years outside 0-9999), over instants spread
    /// across every representable year, the ends of that range, and times
    /// given in other offsets.
    #[test]
    fn timestamps_are_formatted_as_padded_fields_in_utc() {
        let spelled = |t: OffsetDateTime| spelled_timestamp(t.to_offset(UtcOffset::UTC));
        let first = Date::from_calendar_date(0, Month::January, 1)
            .map(|d| d.midnight().assume_utc())
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let last = Date::from_calendar_date(9999, Month::December, 31)
            .and_then(|d| d.with_hms_micro(23, 59, 59, 999_999))
            .map(|d| d.assume_utc())
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let (lo, hi) = (first.unix_timestamp(), last.unix_timestamp());
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut instants = vec![first, last, OffsetDateTime::UNIX_EPOCH];
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let span = u64::try_from(hi - lo).unwrap_or(1);
            let secs = lo + i64::try_from(seed % span).unwrap_or(0);
            let micros = u32::try_from(seed % 1_000_000).unwrap_or(0);
            let t = OffsetDateTime::from_unix_timestamp(secs)
                .map(|t| t + time::Duration::microseconds(micros.into()))
                .unwrap_or(OffsetDateTime::UNIX_EPOCH);
            instants.push(t);
        }
        // The fallbacks above stand in for failures that would shrink what
        // is checked: the range's ends and the spread must be real.
        assert_eq!((first.year(), last.year()), (0, 9999));
        let years: std::collections::HashSet<i32> = instants.iter().map(|t| t.year()).collect();
        assert!(years.len() > 5_000, "{} distinct years", years.len());
        for t in instants {
            let text = format_timestamp(t);
            assert_eq!(text, spelled(t));
            let micros = t.unix_timestamp_nanos() / 1000;
            assert_eq!(
                parse_timestamp(&text).map(i128::from),
                Some(micros),
                "{text}"
            );
        }
        // Another offset is carried as the same instant in UTC.
        let moldova = UtcOffset::from_hms(2, 0, 0).unwrap_or(UtcOffset::UTC);
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_740_821_400_123_456_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
            .to_offset(moldova);
        assert_eq!(format_timestamp(t), "2025-03-01T09:30:00.123456Z");
        // A year before 0 does not fit the form: spelled out, and refused.
        let early = Date::from_calendar_date(-1, Month::June, 15)
            .map(|d| d.midnight().assume_utc())
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let text = format_timestamp(early);
        assert_eq!(text, "-001-06-15T00:00:00.000000Z");
        assert_eq!(parse_timestamp(&text), None);
    }
}
