//! The protocol's vocabulary (PROTOCOL.md sections 2 to 5): header names,
//! signature labels, the problem+json media type, the clock every signature
//! is dated by, and query-string reading. The broker and every participant
//! take these from here, so both sides of the bus spell the protocol alike.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// The protocol's header names, lower-case as HTTP/2 and RFC 9421 want them.
pub mod headers {
    /// Consumer participant id.
    pub const CLIENT: &str = "mconnect-client";
    /// IDNP of the user on whose action the call is made.
    pub const CALLING_USER: &str = "mconnect-calling-user";
    /// Legal basis id.
    pub const CALL_BASIS: &str = "mconnect-call-basis";
    /// Purpose code.
    pub const CALL_REASON: &str = "mconnect-call-reason";
    /// IDNP/IDNO the data is about.
    pub const SUBJECT: &str = "mconnect-subject";
    /// IDNP/IDNO on whose behalf the user acts.
    pub const REPRESENTED_PARTY: &str = "mconnect-represented-party";
    /// The client's request id.
    pub const REQUEST_ID: &str = "mconnect-request-id";
    /// The broker's exchange id.
    pub const EXCHANGE_ID: &str = "mconnect-exchange-id";
    /// The audit log leaf index of the exchange.
    pub const AUDIT_SEQ: &str = "mconnect-audit-seq";
    /// RFC 9530 digest of the body.
    pub const CONTENT_DIGEST: &str = "content-digest";
    /// On a connection application only: the calling user's own signature
    /// (MSign's detached signature, standard base64) over the SHA-256 of
    /// the exact body.
    pub const USER_SIGNATURE: &str = "mconnect-user-signature";
    /// On a connection application only: the certificate that made
    /// [`USER_SIGNATURE`] (its DER, standard base64).
    pub const USER_CERTIFICATE: &str = "mconnect-user-certificate";
}

/// What every consumer request signature covers (PROTOCOL.md section 2);
/// the consumer signs these, the broker requires them.
pub const CONSUMER_COMPONENTS: &[&str] = &[
    "@method",
    "@target-uri",
    headers::CLIENT,
    headers::CALLING_USER,
    headers::CALL_BASIS,
    headers::CALL_REASON,
    headers::REQUEST_ID,
];

/// What every broker-forwarded request signature covers: the consumer's
/// components plus the broker's exchange id; the broker signs these, the
/// provider requires them.
pub const FORWARDED_COMPONENTS: &[&str] = &[
    "@method",
    "@target-uri",
    headers::CLIENT,
    headers::CALLING_USER,
    headers::CALL_BASIS,
    headers::CALL_REASON,
    headers::REQUEST_ID,
    headers::EXCHANGE_ID,
];

/// The signature labels of the protocol.
pub mod labels {
    /// Consumer requests and the broker's forwarded requests.
    pub const REQUEST: &str = "mconnect";
    /// Provider responses.
    pub const PROVIDER: &str = "mconnect-provider";
    /// The broker's receipts.
    pub const RECEIPT: &str = "mconnect-receipt";
}

/// A participant's role on the bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Calls services.
    Consumer,
    /// Offers services.
    Provider,
    /// The platform owner (AGE): manages participants, grants and connection requests.
    Operator,
    /// Reads the audit log under a legal basis.
    Auditor,
    /// Files connection applications on behalf of authorities not yet on
    /// the bus, each signed by the filing official too (the data-access
    /// portal).
    Intermediary,
}

/// The media type of every error answer on the bus (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem as every error answer on the bus spells it
/// (PROTOCOL.md section 5): `type` (`urn:mconnect:problem:{code}`), `title`,
/// `status`, `detail` and the stable `code`, plus extension members. The
/// broker's data plane, admin API and operations listener and the SDK's
/// provider server all render problems here, so they cannot drift apart.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    status: http::StatusCode,
    code: String,
    title: String,
    detail: String,
    extensions: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    /// A problem titled by the status's reason phrase.
    pub fn new(
        status: http::StatusCode,
        code: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Problem {
            status,
            code: code.into(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            detail: detail.into(),
            extensions: serde_json::Map::new(),
        }
    }

    /// Replaces the title (a short, fixed summary of the code).
    pub fn titled(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }

    /// Adds an extension member (RFC 9457 section 3.2). The standard members
    /// cannot be overwritten this way.
    pub fn with(mut self, name: &str, value: impl Into<serde_json::Value>) -> Self {
        if !matches!(name, "type" | "title" | "status" | "detail" | "code") {
            self.extensions.insert(name.to_owned(), value.into());
        }
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> http::StatusCode {
        self.status
    }

    /// The problem as a JSON object.
    pub fn to_value(&self) -> serde_json::Value {
        let mut members = self.extensions.clone();
        members.insert(
            "type".into(),
            format!("urn:mconnect:problem:{}", self.code).into(),
        );
        members.insert("title".into(), self.title.clone().into());
        members.insert("status".into(), self.status.as_u16().into());
        members.insert("detail".into(), self.detail.clone().into());
        members.insert("code".into(), self.code.clone().into());
        serde_json::Value::Object(members)
    }

    /// The problem as the bytes of an `application/problem+json` body.
    pub fn to_json(&self) -> Vec<u8> {
        // A map of strings and numbers always serialises.
        serde_json::to_vec(&self.to_value()).unwrap_or_default()
    }
}

/// Seconds since the Unix epoch: what `created` parameters and certificate
/// validity are compared against. A clock before 1970 reads as 0, which every
/// freshness check then refuses.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A parameter of a URL query string, percent-decoded (`+` as space).
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn problems_carry_the_protocol_members() {
        let problem = Problem::new(
            http::StatusCode::NOT_FOUND,
            "catalog.unknown_service",
            "no such service",
        )
        .with("exchange_id", "e-1")
        .with("code", "forged");
        let value = problem.to_value();
        assert_eq!(
            value["type"],
            "urn:mconnect:problem:catalog.unknown_service"
        );
        assert_eq!(value["title"], "Not Found");
        assert_eq!(value["status"], 404);
        assert_eq!(value["detail"], "no such service");
        assert_eq!(value["code"], "catalog.unknown_service");
        assert_eq!(value["exchange_id"], "e-1");
        let parsed: serde_json::Value =
            serde_json::from_slice(&problem.to_json()).unwrap_or_default();
        assert_eq!(parsed, value);
    }

    #[test]
    fn forwarded_components_extend_the_consumer_components() {
        assert_eq!(
            &FORWARDED_COMPONENTS[..CONSUMER_COMPONENTS.len()],
            CONSUMER_COMPONENTS
        );
        assert_eq!(FORWARDED_COMPONENTS.last(), Some(&headers::EXCHANGE_ID));
    }

    #[test]
    fn query_parameters() {
        assert_eq!(query_param("a=1&b=x%2By", "b").as_deref(), Some("x+y"));
        assert_eq!(query_param("a&b=2", "a").as_deref(), Some(""));
        assert_eq!(query_param("a=1", "c"), None);
    }
}
