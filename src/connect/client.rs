//! The applicant's and the other actors' side of the connection-request API:
//! an mTLS client for the admin listener and the signed submission.
//!
//! A submission is signed with [`mconnect_sdk::sign_request`], exactly like a
//! data-plane call: `MConnect-Client` is the signing participant,
//! `MConnect-Calling-User` the official who files it, and the basis and
//! reason name the connection procedure itself ([`SUBMISSION_BASIS`],
//! [`SUBMISSION_REASON`]). The broker keeps the whole signature as evidence.
//!
//! Invariant: only the SDK signs; this module builds headers and sends.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::exchange::call::headers;
use mconnect_sdk::{Credentials, SdkError, sign_request};

/// The legal basis a submission states: the connection procedure of
/// GD 211/2019 under Law 142/2018.
pub const SUBMISSION_BASIS: &str = "md-gd-211-2019-connection";

/// The purpose a submission states.
pub const SUBMISSION_REASON: &str = "connection-request";

/// An admin answer: status, headers and the JSON body (`null` when not JSON).
#[derive(Debug)]
pub struct AdminAnswer {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers (`MConnect-Audit-Seq` on audited reads, the media type).
    pub headers: HeaderMap,
    /// The parsed body.
    pub body: serde_json::Value,
}

impl AdminAnswer {
    /// A header as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An mTLS client of the admin listener, as one participant.
pub struct AdminClient {
    credentials: Credentials,
    base: String,
    client: crate::tls::HttpsClient,
}

impl AdminClient {
    /// A client for the admin listener at `admin_url` (`https://host:port`).
    ///
    /// HTTP/1.1 only: the broker rebuilds the signed `@target-uri` from the
    /// `Host` field, which HTTP/1.1 always sends.
    pub fn new(credentials: Credentials, admin_url: &str) -> Result<AdminClient, SdkError> {
        let tls = crate::tls::client_config(&credentials.ca, &credentials.tls)
            .map_err(|e| SdkError::Credentials(e.to_string()))?;
        Ok(AdminClient {
            credentials,
            base: admin_url.trim_end_matches('/').to_string(),
            client: crate::tls::https_client(
                &tls,
                crate::tls::ClientOptions {
                    http2: false,
                    ..Default::default()
                },
            ),
        })
    }

    /// The participant this client acts as.
    pub fn participant(&self) -> &str {
        &self.credentials.participant
    }

    /// The absolute URL of an admin path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A plain (unsigned) JSON request.
    pub fn plain(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Request<Full<Bytes>>, SdkError> {
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        Request::builder()
            .method(method)
            .uri(self.url(path))
            .header("content-type", "application/json")
            .body(Full::new(body))
            .map_err(|e| SdkError::Request(e.to_string()))
    }

    /// A submission or resubmission signed with this participant's key.
    pub fn signed(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        calling_user: &str,
    ) -> Result<Request<Full<Bytes>>, SdkError> {
        signed_submission(
            &self.credentials,
            method,
            &self.url(path),
            body,
            calling_user,
        )
    }

    /// A submission or resubmission signed with this participant's key and
    /// carrying the official's own signature (MSign) over the body.
    pub fn signed_by_user(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        calling_user: &str,
        user: &UserSigned,
    ) -> Result<Request<Full<Bytes>>, SdkError> {
        signed_submission_with(
            &self.credentials,
            method,
            &self.url(path),
            body,
            calling_user,
            Some(user),
        )
    }

    /// Sends a request; answers status and JSON body (`null` when the body
    /// is not JSON).
    pub async fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, serde_json::Value), SdkError> {
        let answer = self.send_full(request).await?;
        Ok((answer.status, answer.body))
    }

    /// Sends a request; answers status, headers and JSON body.
    pub async fn send_full(&self, request: Request<Full<Bytes>>) -> Result<AdminAnswer, SdkError> {
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| SdkError::Transport(e.to_string()))?;
        let (head, body) = response.into_parts();
        let bytes = body
            .collect()
            .await
            .map_err(|e| SdkError::Transport(e.to_string()))?
            .to_bytes();
        Ok(AdminAnswer {
            status: head.status,
            headers: head.headers,
            body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        })
    }
}

/// The official's own signature over a submission's body, as MSign gave
/// it: the detached signature (standard base64) over the SHA-256 of the
/// exact body, and the signing certificate (PEM).
#[derive(Debug, Clone)]
pub struct UserSigned {
    /// The signature, standard base64.
    pub signature: String,
    /// The certificate that made it, PEM.
    pub certificate_pem: String,
}

/// Builds a submission to `uri` signed with `credentials` (RFC 9421 label
/// `mconnect` over method, target URI, the `MConnect-*` fields and the body
/// digest).
pub fn signed_submission(
    credentials: &Credentials,
    method: Method,
    uri: &str,
    body: Bytes,
    calling_user: &str,
) -> Result<Request<Full<Bytes>>, SdkError> {
    signed_submission_with(credentials, method, uri, body, calling_user, None)
}

/// Like [`signed_submission`], carrying the official's own signature in
/// `MConnect-User-Signature` and `MConnect-User-Certificate` (the DER in
/// base64: a header holds no line breaks), both covered by the RFC 9421
/// signature.
pub fn signed_submission_with(
    credentials: &Credentials,
    method: Method,
    uri: &str,
    body: Bytes,
    calling_user: &str,
    user: Option<&UserSigned>,
) -> Result<Request<Full<Bytes>>, SdkError> {
    let mut h = HeaderMap::new();
    let mut put = |name: &'static str, value: &str| -> Result<(), SdkError> {
        let value = HeaderValue::from_str(value)
            .map_err(|_| SdkError::Request(format!("{name} value is not a valid header")))?;
        h.insert(name, value);
        Ok(())
    };
    put(headers::CLIENT, &credentials.participant)?;
    put(headers::CALLING_USER, calling_user)?;
    put(headers::CALL_BASIS, SUBMISSION_BASIS)?;
    put(headers::CALL_REASON, SUBMISSION_REASON)?;
    put(headers::REQUEST_ID, &uuid::Uuid::new_v4().to_string())?;
    put("content-type", "application/json")?;
    if let Some(user) = user {
        let der = mconnect_sdk::parse_certs(&user.certificate_pem)?
            .into_iter()
            .next()
            .ok_or_else(|| SdkError::Request("the user's certificate PEM holds none".into()))?;
        put(headers::USER_SIGNATURE, user.signature.trim())?;
        put(
            headers::USER_CERTIFICATE,
            &base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der.as_ref()),
        )?;
    }
    sign_request(credentials, method.as_str(), uri, &mut h, &body)?;
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = method;
    *request.uri_mut() = uri
        .parse()
        .map_err(|_| SdkError::Request(format!("{uri} is not a valid URI")))?;
    *request.headers_mut() = h;
    Ok(request)
}
