//! W3C Trace Context, level 1 (<https://www.w3.org/TR/trace-context/>): the
//! `traceparent` and `tracestate` headers that let one call be followed from
//! the consumer through the broker to the provider (PROTOCOL.md section 2).
//!
//! [`TraceParent::parse`] is strict for version `00` (lower-case hex, a
//! trace id and a parent id that are not all zeros, exactly 55 characters)
//! and reads the first four fields of a later version, as the
//! specification's forward-compatibility rule says. Every hop that takes
//! part in a trace continues it with [`TraceContext::continue_from`]: the
//! caller's trace id, a fresh span id of its own, and the sampled flag.
//!
//! Invariants:
//! - trace context never refuses a call: a header that does not parse is
//!   treated as absent and a new trace is started (the specification's rule);
//! - it is correlation, not evidence: no signature of the protocol needs to
//!   cover it, and each hop rewrites the parent id, as W3C intermediaries do;
//! - a `tracestate` is passed on only with a valid `traceparent`, only when
//!   every list member is well formed, and only up to
//!   [`MAX_TRACESTATE_LEN`] characters and [`MAX_TRACESTATE_MEMBERS`]
//!   members; otherwise it is dropped whole.

use std::fmt;

use http::{HeaderMap, HeaderValue};

/// The W3C header that carries the trace id, the caller's span id and flags.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header that carries vendors' trace data, passed on unchanged.
pub const TRACESTATE: &str = "tracestate";
/// The longest `tracestate` passed on: the length the specification asks
/// every vendor to propagate at least.
pub const MAX_TRACESTATE_LEN: usize = 512;
/// The most list members a `tracestate` may hold (the specification's limit).
pub const MAX_TRACESTATE_MEMBERS: usize = 32;

/// One `traceparent` value: a trace id, the span id of the sender (the
/// "parent id") and the trace flags.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

impl TraceParent {
    /// The `sampled` flag: the caller may have recorded trace data. The only
    /// flag of version `00`; the others are sent as zero.
    pub const SAMPLED: u8 = 0x01;

    /// Parses a `traceparent` value. `None` for anything the specification
    /// says to ignore: a version that is not two lower-case hex digits or is
    /// `ff`, version `00` not exactly 55 characters long, a later version
    /// shorter than that or not followed by `-`, a field that is not
    /// lower-case hex of its length, or an all-zero trace id or parent id.
    pub fn parse(value: &str) -> Option<TraceParent> {
        let b = value.trim_matches([' ', '\t']).as_bytes();
        if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let [version] = hex_lower::<1>(&b[0..2])?;
        let exact = match version {
            0xff => return None,
            0x00 => b.len() == 55,
            // A later version may append fields after a `-`.
            _ => b.len() == 55 || b[55] == b'-',
        };
        if !exact {
            return None;
        }
        let trace_id = hex_lower::<16>(&b[3..35])?;
        let parent_id = hex_lower::<8>(&b[36..52])?;
        let [flags] = hex_lower::<1>(&b[53..55])?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The one `traceparent` of a message. `None` when there is none, when
    /// there are several, or when it does not parse.
    pub fn from_headers(headers: &HeaderMap) -> Option<TraceParent> {
        let mut values = headers.get_all(TRACEPARENT).iter();
        let first = values.next()?;
        if values.next().is_some() {
            return None;
        }
        TraceParent::parse(first.to_str().ok()?)
    }

    /// A new trace: a random trace id, a random span id, sampled (the
    /// broker logs and audits every exchange it starts a trace for).
    pub fn start() -> TraceParent {
        TraceParent {
            trace_id: random_nonzero(),
            parent_id: random_nonzero(),
            flags: Self::SAMPLED,
        }
    }

    /// A span of the same trace: the same trace id and sampled flag, a new
    /// random span id (what a hop sends on as its own `traceparent`).
    pub fn child(&self) -> TraceParent {
        TraceParent {
            trace_id: self.trace_id,
            parent_id: random_nonzero(),
            flags: self.flags & Self::SAMPLED,
        }
    }

    /// The trace id, 32 lower-case hex digits.
    pub fn trace_id(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// The sender's span id (the "parent id" field), 16 lower-case hex digits.
    pub fn parent_id(&self) -> String {
        hex::encode(self.parent_id)
    }

    /// Whether the sampled flag is set.
    pub fn sampled(&self) -> bool {
        self.flags & Self::SAMPLED != 0
    }

    /// The value as a header (version `00`).
    pub fn header_value(&self) -> HeaderValue {
        // Hex digits and dashes only: always a valid header value.
        HeaderValue::from_str(&self.to_string()).unwrap_or(HeaderValue::from_static(""))
    }
}

impl fmt::Display for TraceParent {
    /// Version `00`, whatever version it was read from; flags other than
    /// `sampled` are sent as zero, as level 1 requires.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.parent_id),
            self.flags & Self::SAMPLED
        )
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({self})")
    }
}

/// How a hop came by the trace it continues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceOrigin {
    /// The caller sent a valid `traceparent`; its trace goes on.
    Continued,
    /// The caller sent none; this hop started a trace.
    Started,
    /// The caller sent one that does not parse (or several); it was ignored
    /// and a trace started, as the specification says.
    Restarted,
}

impl TraceOrigin {
    /// `continued`, `started` or `restarted`, as logs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            TraceOrigin::Continued => "continued",
            TraceOrigin::Started => "started",
            TraceOrigin::Restarted => "restarted",
        }
    }
}

/// The trace context of one hop: the span it sends on, the caller's span it
/// continues, and the `tracestate` it passes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// This hop's own span: the trace id (the caller's, or a new one) and a
    /// span id of its own. Sent on as `traceparent`.
    pub span: TraceParent,
    /// The caller's `traceparent`, when it sent a valid one.
    pub caller: Option<TraceParent>,
    /// The caller's `tracestate`, when valid and within bounds; only with a
    /// valid `traceparent`.
    pub state: Option<String>,
    /// How this hop came by its trace.
    pub origin: TraceOrigin,
}

impl TraceContext {
    /// Continues the trace of a received message: its valid `traceparent`
    /// with a new span id, else a new trace.
    pub fn continue_from(headers: &HeaderMap) -> TraceContext {
        match TraceParent::from_headers(headers) {
            Some(caller) => TraceContext {
                span: caller.child(),
                caller: Some(caller),
                state: tracestate_from_headers(headers),
                origin: TraceOrigin::Continued,
            },
            None => TraceContext {
                origin: if headers.contains_key(TRACEPARENT) {
                    TraceOrigin::Restarted
                } else {
                    TraceOrigin::Started
                },
                ..TraceContext::start()
            },
        }
    }

    /// A new trace, with no caller.
    pub fn start() -> TraceContext {
        TraceContext {
            span: TraceParent::start(),
            caller: None,
            state: None,
            origin: TraceOrigin::Started,
        }
    }

    /// The trace id, 32 lower-case hex digits.
    pub fn trace_id(&self) -> String {
        self.span.trace_id()
    }

    /// Sets `traceparent` (this hop's span) and `tracestate` (when there is
    /// one) on a message this hop sends on.
    pub fn insert_headers(&self, headers: &mut HeaderMap) {
        headers.insert(TRACEPARENT, self.span.header_value());
        match self
            .state
            .as_deref()
            .and_then(|s| HeaderValue::from_str(s).ok())
        {
            Some(state) => {
                headers.insert(TRACESTATE, state);
            }
            None => {
                headers.remove(TRACESTATE);
            }
        }
    }
}

/// The `tracestate` of a message (its lines joined with `,`), normalised
/// (members trimmed, empty members dropped), when every member is well
/// formed, no key repeats, and it keeps within [`MAX_TRACESTATE_MEMBERS`]
/// members and [`MAX_TRACESTATE_LEN`] characters; else `None`.
pub fn tracestate_from_headers(headers: &HeaderMap) -> Option<String> {
    let mut members: Vec<&str> = Vec::new();
    for line in headers.get_all(TRACESTATE) {
        for member in line.to_str().ok()?.split(',') {
            let member = member.trim_matches([' ', '\t']);
            if member.is_empty() {
                continue;
            }
            let (key, value) = member.split_once('=')?;
            if !valid_key(key) || !valid_value(value) {
                return None;
            }
            if members
                .iter()
                .any(|m| m.split_once('=').map(|(k, _)| k) == Some(key))
            {
                return None;
            }
            members.push(member);
            if members.len() > MAX_TRACESTATE_MEMBERS {
                return None;
            }
        }
    }
    let joined = members.join(",");
    (!joined.is_empty() && joined.len() <= MAX_TRACESTATE_LEN).then_some(joined)
}

/// A `tracestate` key: `simple-key` or `tenant-id@system-id`.
fn valid_key(key: &str) -> bool {
    let rest = |s: &[u8]| {
        s.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-*/".contains(&c))
    };
    match key.split_once('@') {
        None => {
            let b = key.as_bytes();
            (1..=256).contains(&b.len()) && b[0].is_ascii_lowercase() && rest(&b[1..])
        }
        Some((tenant, system)) => {
            let (t, s) = (tenant.as_bytes(), system.as_bytes());
            (1..=241).contains(&t.len())
                && (t[0].is_ascii_lowercase() || t[0].is_ascii_digit())
                && rest(&t[1..])
                && (1..=14).contains(&s.len())
                && s[0].is_ascii_lowercase()
                && rest(&s[1..])
        }
    }
}

/// A `tracestate` value: 1 to 256 printable ASCII characters other than
/// `,` and `=`, not ending in a space.
fn valid_value(value: &str) -> bool {
    let b = value.as_bytes();
    (1..=256).contains(&b.len())
        && b.iter()
            .all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
        && b.last() != Some(&b' ')
}

/// `N` bytes from `2N` lower-case hex digits.
fn hex_lower<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    if digits.len() != 2 * N
        || !digits
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(digits, &mut out).ok()?;
    Some(out)
}

/// Random bytes, never all zero (the specification forbids all-zero ids).
fn random_nonzero<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    if aws_lc_rs::rand::fill(&mut out).is_err() {
        // The system's generator failed: a v4 UUID comes from another one.
        let uuid = uuid::Uuid::new_v4();
        for (o, b) in out.iter_mut().zip(uuid.as_bytes()) {
            *o = *b;
        }
    }
    if out.iter().all(|&b| b == 0) {
        out[N - 1] = 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_table() {
        // (value, parses)
        let cases: &[(&str, bool)] = &[
            (VALID, true),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                true,
            ),
            (
                " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\t",
                true,
            ),
            // Later versions: the first four fields, more after a dash.
            (
                "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                true,
            ),
            (
                "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what",
                true,
            ),
            (
                "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01what",
                false,
            ),
            // Version 00 is exactly 55 characters.
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
                false,
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                false,
            ),
            (
                "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                false,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                false,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                false,
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                false,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
                false,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
                false,
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                false,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                false,
            ),
            ("", false),
            ("garbage", false),
        ];
        for (value, parses) in cases {
            assert_eq!(TraceParent::parse(value).is_some(), *parses, "{value:?}");
        }
        let parsed = TraceParent::parse(VALID).unwrap();
        assert_eq!(parsed.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.parent_id(), "00f067aa0ba902b7");
        assert!(parsed.sampled());
        assert_eq!(parsed.to_string(), VALID);
        // A later version is sent on as 00, unknown flags as zero.
        let later = TraceParent::parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff-x")
            .unwrap();
        assert_eq!(later.to_string(), VALID);
    }

    #[test]
    fn a_hop_continues_the_trace_with_a_span_of_its_own() {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(VALID));
        h.insert(TRACESTATE, HeaderValue::from_static("congo=t61rcWkgMzE"));
        h.append(
            TRACESTATE,
            HeaderValue::from_static(" rojo=00f067aa0ba902b7 ,"),
        );
        let ctx = TraceContext::continue_from(&h);
        assert_eq!(ctx.origin, TraceOrigin::Continued);
        assert_eq!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(ctx.span.parent_id(), "00f067aa0ba902b7");
        assert_eq!(
            ctx.caller.map(|c| c.parent_id()).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert_eq!(
            ctx.state.as_deref(),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
        );
        let mut out = HeaderMap::new();
        ctx.insert_headers(&mut out);
        let sent = TraceParent::from_headers(&out).unwrap();
        assert_eq!(sent, ctx.span);
        assert_eq!(out[TRACESTATE], "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");

        // None sent: a new trace. An invalid one, or two: a new trace too,
        // and the tracestate goes with the traceparent it belonged to.
        let started = TraceContext::continue_from(&HeaderMap::new());
        assert_eq!(started.origin, TraceOrigin::Started);
        assert!(started.caller.is_none() && started.span.sampled());
        let mut bad = h.clone();
        bad.insert(TRACEPARENT, HeaderValue::from_static("00-zz"));
        let restarted = TraceContext::continue_from(&bad);
        assert_eq!(restarted.origin, TraceOrigin::Restarted);
        assert_ne!(restarted.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(restarted.state, None);
        let mut two = h.clone();
        two.append(TRACEPARENT, HeaderValue::from_static(VALID));
        assert_eq!(
            TraceContext::continue_from(&two).origin,
            TraceOrigin::Restarted
        );
        assert_ne!(
            TraceParent::start().trace_id(),
            TraceParent::start().trace_id()
        );
    }

    #[test]
    fn tracestate_table() {
        let long_value = format!("k={}", "v".repeat(257));
        let too_long = (0..30)
            .map(|i| format!("k{i}={}", "v".repeat(20)))
            .collect::<Vec<_>>()
            .join(",");
        let too_many = (0..33)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        // (value, passed on as)
        let cases: Vec<(&str, Option<&str>)> = vec![
            ("rojo=00f067aa0ba902b7", Some("rojo=00f067aa0ba902b7")),
            ("a=1, ,b=2", Some("a=1,b=2")),
            ("tenant@sys=x", Some("tenant@sys=x")),
            ("1tenant@sys=x", Some("1tenant@sys=x")),
            ("Upper=x", None),
            ("1simple=x", None),
            ("a=1,a=2", None),
            ("a=has,comma", None),
            ("a=trailing ", Some("a=trailing")),
            ("a=in side", Some("a=in side")),
            ("a=tab\there", None),
            ("a", None),
            ("a=", None),
            ("t@toolongsystemid=x", None),
            (&long_value, None),
            (&too_long, None),
            (&too_many, None),
            ("", None),
        ];
        for (value, expected) in cases {
            let mut h = HeaderMap::new();
            h.insert(TRACESTATE, HeaderValue::from_str(value).unwrap());
            assert_eq!(
                tracestate_from_headers(&h).as_deref(),
                expected,
                "{value:?}"
            );
        }
    }
}
