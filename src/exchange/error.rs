//! Refusals on the exchange path: one variant per stable `code` of
//! PROTOCOL.md section 5, each knowing its HTTP status, rendered as RFC 9457
//! problem+json.
//!
//! Invariant: `detail` says what to fix and never carries a stack trace, a key
//! or another participant's data.

use std::time::Duration;

use http::StatusCode;

impl From<crate::policy::DenyCode> for ErrorKind {
    fn from(code: crate::policy::DenyCode) -> Self {
        use crate::policy::DenyCode;
        match code {
            DenyCode::PolicyDenied => ErrorKind::PolicyDenied,
            DenyCode::PurposeNotAllowed => ErrorKind::PurposeNotAllowed,
            DenyCode::BasisNotAllowed => ErrorKind::BasisNotAllowed,
            DenyCode::GrantExpired => ErrorKind::GrantExpired,
            DenyCode::GrantSuspended => ErrorKind::GrantSuspended,
            DenyCode::SubjectRequired => ErrorKind::SubjectRequired,
        }
    }
}

/// Why the broker refused or could not complete an exchange.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {detail}", code = self.code())]
pub struct ExchangeError {
    kind: ErrorKind,
    detail: String,
    retry_after: Option<Duration>,
}

/// The stable refusal codes of PROTOCOL.md section 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// 400 `request.malformed`.
    Malformed,
    /// 401 `client.unknown`.
    ClientUnknown,
    /// 401 `client.certificate_mismatch`.
    CertificateMismatch,
    /// 401 `signature.missing`.
    SignatureMissing,
    /// 401 `signature.invalid`.
    SignatureInvalid,
    /// 401 `signature.expired`.
    SignatureExpired,
    /// 401 `digest.mismatch`.
    DigestMismatch,
    /// 403 `policy.denied`.
    PolicyDenied,
    /// 403 `policy.purpose_not_allowed`.
    PurposeNotAllowed,
    /// 403 `policy.basis_not_allowed`.
    BasisNotAllowed,
    /// 403 `policy.grant_expired`.
    GrantExpired,
    /// 403 `policy.grant_suspended`.
    GrantSuspended,
    /// 403 `policy.subject_required`.
    SubjectRequired,
    /// 403 `policy.subject_mismatch`.
    SubjectMismatch,
    /// 403 `representation.required`: the grant is for acting on someone's
    /// behalf and the call names no `MConnect-Represented-Party`.
    RepresentationRequired,
    /// 403 `representation.denied`.
    RepresentationDenied,
    /// 404 `catalog.unknown_service`.
    UnknownService,
    /// 409 `request.replayed`.
    Replayed,
    /// 413 `request.too_large`.
    TooLarge,
    /// 422 `schema.request_invalid`.
    RequestSchemaInvalid,
    /// 429 `rate.limited`.
    RateLimited,
    /// 502 `provider.bad_response`.
    ProviderBadResponse,
    /// 502 `provider.signature_invalid`.
    ProviderSignatureInvalid,
    /// 502 `schema.response_invalid`.
    ResponseSchemaInvalid,
    /// 503 `provider.unavailable`.
    ProviderUnavailable,
    /// 503 `audit.unavailable`.
    AuditUnavailable,
    /// 503 `state.unavailable`: a check brokers of a cluster make together
    /// (request ids used on any broker, shared quota counts) cannot be made.
    StateUnavailable,
    /// 504 `provider.timeout`.
    ProviderTimeout,
    /// 500 `internal.error`: a fault of the broker itself, never of the caller.
    Internal,
}

impl ErrorKind {
    /// The stable machine code.
    pub fn code(self) -> &'static str {
        use ErrorKind::*;
        match self {
            Malformed => "request.malformed",
            ClientUnknown => "client.unknown",
            CertificateMismatch => "client.certificate_mismatch",
            SignatureMissing => "signature.missing",
            SignatureInvalid => "signature.invalid",
            SignatureExpired => "signature.expired",
            DigestMismatch => "digest.mismatch",
            PolicyDenied => "policy.denied",
            PurposeNotAllowed => "policy.purpose_not_allowed",
            BasisNotAllowed => "policy.basis_not_allowed",
            GrantExpired => "policy.grant_expired",
            GrantSuspended => "policy.grant_suspended",
            SubjectRequired => "policy.subject_required",
            SubjectMismatch => "policy.subject_mismatch",
            RepresentationRequired => "representation.required",
            RepresentationDenied => "representation.denied",
            UnknownService => "catalog.unknown_service",
            Replayed => "request.replayed",
            TooLarge => "request.too_large",
            RequestSchemaInvalid => "schema.request_invalid",
            RateLimited => "rate.limited",
            ProviderBadResponse => "provider.bad_response",
            ProviderSignatureInvalid => "provider.signature_invalid",
            ResponseSchemaInvalid => "schema.response_invalid",
            ProviderUnavailable => "provider.unavailable",
            AuditUnavailable => "audit.unavailable",
            StateUnavailable => "state.unavailable",
            ProviderTimeout => "provider.timeout",
            Internal => "internal.error",
        }
    }

    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        use ErrorKind::*;
        match self {
            Malformed => StatusCode::BAD_REQUEST,
            ClientUnknown | CertificateMismatch | SignatureMissing | SignatureInvalid
            | SignatureExpired | DigestMismatch => StatusCode::UNAUTHORIZED,
            PolicyDenied
            | PurposeNotAllowed
            | BasisNotAllowed
            | GrantExpired
            | GrantSuspended
            | SubjectRequired
            | SubjectMismatch
            | RepresentationRequired
            | RepresentationDenied => StatusCode::FORBIDDEN,
            UnknownService => StatusCode::NOT_FOUND,
            Replayed => StatusCode::CONFLICT,
            TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RequestSchemaInvalid => StatusCode::UNPROCESSABLE_ENTITY,
            RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ProviderBadResponse | ProviderSignatureInvalid | ResponseSchemaInvalid => {
                StatusCode::BAD_GATEWAY
            }
            ProviderUnavailable | AuditUnavailable | StateUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProviderTimeout => StatusCode::GATEWAY_TIMEOUT,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short human title (RFC 9457 `title`), the same for every occurrence.
    pub fn title(self) -> &'static str {
        use ErrorKind::*;
        match self {
            Malformed => "Malformed request",
            ClientUnknown => "Unknown client",
            CertificateMismatch => "Certificate belongs to another participant",
            SignatureMissing => "Signature missing",
            SignatureInvalid => "Signature invalid",
            SignatureExpired => "Signature expired",
            DigestMismatch => "Content digest mismatch",
            PolicyDenied => "No grant allows this call",
            PurposeNotAllowed => "Purpose not allowed",
            BasisNotAllowed => "Legal basis not allowed",
            GrantExpired => "Grant expired",
            GrantSuspended => "Grant suspended",
            SubjectRequired => "Subject required",
            SubjectMismatch => "Subject is not the person the call asks about",
            RepresentationRequired => "Represented party required",
            RepresentationDenied => "Representation not confirmed",
            UnknownService => "Unknown service",
            Replayed => "Request id already used",
            TooLarge => "Request too large",
            RequestSchemaInvalid => "Request body does not match the service schema",
            RateLimited => "Rate limit exceeded",
            ProviderBadResponse => "Provider answered unusably",
            ProviderSignatureInvalid => "Provider signature invalid",
            ResponseSchemaInvalid => "Provider response does not match the service schema",
            ProviderUnavailable => "Provider unavailable",
            AuditUnavailable => "Audit log unavailable",
            StateUnavailable => "Shared state unavailable",
            ProviderTimeout => "Provider timeout",
            Internal => "Internal broker error",
        }
    }
}

impl ExchangeError {
    /// A refusal of this kind with a detail saying what to fix.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        ExchangeError {
            kind,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// A 429 refusal that tells the client when to try again.
    pub fn rate_limited(retry_after: Duration, detail: impl Into<String>) -> Self {
        ExchangeError {
            kind: ErrorKind::RateLimited,
            detail: detail.into(),
            retry_after: Some(retry_after),
        }
    }

    /// The kind of refusal.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The stable machine code.
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// What to fix.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// For 429: seconds until a retry may pass (rounded up, at least 1).
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after
            .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
            .map(|s| s.max(1))
    }

    /// The problem+json body.
    pub fn to_problem_json(&self, exchange_id: Option<&str>) -> Vec<u8> {
        let mut problem =
            mconnect_sdk::protocol::Problem::new(self.status(), self.code(), &self.detail)
                .titled(self.kind.title());
        if let Some(id) = exchange_id {
            problem = problem.with("exchange_id", id);
        }
        problem.to_json()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_policy_refusal_keeps_its_code() {
        use crate::policy::DenyCode;
        for code in [
            DenyCode::PolicyDenied,
            DenyCode::PurposeNotAllowed,
            DenyCode::BasisNotAllowed,
            DenyCode::GrantExpired,
            DenyCode::GrantSuspended,
            DenyCode::SubjectRequired,
        ] {
            let kind = ErrorKind::from(code);
            assert_eq!(kind.code(), code.code());
            assert_eq!(kind.status(), code.status());
        }
    }

    #[test]
    fn problem_json_has_the_protocol_fields() {
        let err = ExchangeError::new(ErrorKind::Replayed, "use a fresh MConnect-Request-Id");
        let v: serde_json::Value =
            serde_json::from_slice(&err.to_problem_json(Some("0190"))).unwrap();
        assert_eq!(v["status"], 409);
        assert_eq!(v["code"], "request.replayed");
        assert_eq!(v["exchange_id"], "0190");
        assert_eq!(v["type"], "urn:mconnect:problem:request.replayed");
        assert!(v["title"].is_string() && v["detail"].is_string());
    }

    #[test]
    fn retry_after_rounds_up() {
        let err = ExchangeError::rate_limited(Duration::from_millis(1200), "slow down");
        assert_eq!(err.retry_after_secs(), Some(2));
        assert_eq!(err.status(), StatusCode::TOO_MANY_REQUESTS);
    }
}
