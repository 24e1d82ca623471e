//! HTTP Message Signatures (RFC 9421): signature bases, `Signature-Input` and
//! `Signature` parsing, signing and verifying, built on the `sfv` structured
//! field parser and serializer.
//!
//! Invariants:
//! - Everything read from the network (`Signature-Input`, `Signature`, covered
//!   fields, the target URI) is parsed strictly and never panics: a bad value
//!   is an [`HttpSigError`], never a guess. Unknown signature parameters,
//!   unknown component parameters, repeated labels and repeated component
//!   identifiers are refused (RFC 9421 section 7.2.x leaves that to us).
//! - The `@signature-params` line is the `sfv` serialization of the
//!   parameters, in the order the signer used them (kept in
//!   [`SignatureParams::order`]), so a verifier rebuilds the signer's bytes.
//! - A signature base is one `String`, written in place: component values are
//!   appended directly, and only `;sf`, `;key` and `@query-param` allocate.
//! - Time policy (`created`, `expires`) is not applied by [`verify`]; callers
//!   use [`SignatureParams::check_time`] with their own clock and skew.
//!
//! Not supported, on purpose: HMAC, trailers (`;tr`), `@request-target` in
//! absolute or authority form, and `;sf` on fields whose structured type this
//! module does not know (see [`structured_type`]).

pub mod digest;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt::{self, Write as _};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::{HeaderMap, HeaderName, HeaderValue};
use sfv::visitor::{DictionaryVisitor, EntryVisitor};
use sfv::{
    BareItem, DictSerializer, Dictionary, Integer, ItemSerializer, KeyRef, ListEntry,
    ListSerializer, Parameters, Parser, StringRef, Version,
};

use crate::crypto::{Algorithm, KeyError, SigningKey, VerifyingKey};

/// The most component identifiers one signature may cover; keeps the
/// duplicate check and the base size bounded for hostile input.
pub const MAX_COMPONENTS: usize = 64;

/// The most bytes of `Signature-Input` or `Signature` (all field lines
/// together) that are parsed.
pub const MAX_SIGNATURE_FIELD_LEN: usize = 16 * 1024;

/// A component identifier: a lower-case name (an HTTP field or a derived
/// `@` component) with its parameters (`sf`, `key`, `bs`, `req`, `name`).
///
/// `Display` is the identifier's structured-field serialization, e.g.
/// `"@query-param";name="pet"`.
#[derive(Clone, Debug)]
pub struct Component {
    name: String,
    // The parameters as the signer wrote them, for serialization in order.
    params: Parameters,
    // The same parameters, decoded, for evaluation and equality.
    flags: Flags,
}

/// The parameters of one signature (RFC 9421 section 2.3): the covered
/// components and the metadata parameters.
#[derive(Clone, Debug, Default)]
pub struct SignatureParams {
    /// The covered components, in order.
    pub components: Vec<Component>,
    /// `created`: Unix time the signature was made.
    pub created: Option<i64>,
    /// `expires`: Unix time after which the signature is not valid.
    pub expires: Option<i64>,
    /// `nonce`: a value the verifier may use to detect replays.
    pub nonce: Option<String>,
    /// `alg`: the RFC 9421 algorithm name, when the signer states it.
    pub alg: Option<String>,
    /// `keyid`: the signer's key identifier (for MConnect, the certificate
    /// fingerprint).
    pub keyid: Option<String>,
    /// `tag`: an application-specific tag.
    pub tag: Option<String>,
    /// The order in which the parameters are serialized. [`parse_signature`]
    /// records the signer's order so that verification reproduces the
    /// signer's `@signature-params` exactly; leave it at its default when
    /// signing (`created`, `expires`, `nonce`, `alg`, `keyid`, `tag`).
    pub order: ParamOrder,
}

/// The order of the metadata parameters of a [`SignatureParams`].
///
/// Parameters present but not listed are serialized after the listed ones,
/// in the default order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParamOrder {
    ids: [Param; 6],
    len: u8,
}

/// The request half of a message, as the signature base sees it.
#[derive(Clone, Copy, Debug)]
pub struct RequestView<'a> {
    /// The method, as sent (case-sensitive).
    pub method: &'a str,
    /// The absolute target URI, `scheme://authority/path?query`.
    pub target_uri: &'a str,
    /// The request's header fields.
    pub headers: &'a HeaderMap,
}

/// The message a signature is made or checked over.
#[derive(Clone, Copy, Debug)]
pub enum MessageView<'a> {
    /// A request.
    Request(RequestView<'a>),
    /// A response, with the request it answers when `;req` components are
    /// covered.
    Response {
        /// The status code.
        status: u16,
        /// The response's header fields.
        headers: &'a HeaderMap,
        /// The request this answers, for components with the `req` parameter.
        request: Option<RequestView<'a>>,
    },
}

/// One signature read from a message.
#[derive(Clone, Debug)]
pub struct ParsedSignature {
    /// The label it was found under.
    pub label: String,
    /// Its parameters, from `Signature-Input`.
    pub params: SignatureParams,
    /// The signature bytes, from `Signature`.
    pub signature: Vec<u8>,
}

/// The two header fields that carry one signature.
#[derive(Clone, Debug)]
pub struct SignatureHeaders {
    /// `Signature-Input: label=(...);created=...`
    pub signature_input: HeaderValue,
    /// `Signature: label=:base64:`
    pub signature: HeaderValue,
}

/// Why a signature could not be made, read or accepted.
#[derive(Debug, thiserror::Error)]
pub enum HttpSigError {
    /// No `Signature-Input` or `Signature` member with the wanted label.
    #[error("no signature with the expected label: send Signature-Input and Signature headers")]
    Missing,
    /// A header or parameter does not have the form RFC 9421 requires.
    #[error("malformed signature: {0}")]
    Malformed(String),
    /// A covered component is absent from the message.
    #[error("covered component {0} is not present in the message")]
    MissingComponent(String),
    /// A covered component this implementation does not derive.
    #[error("unsupported covered component {0}")]
    UnsupportedComponent(String),
    /// The algorithm is unknown or does not fit the key or the `alg`
    /// parameter.
    #[error("unsupported or mismatched algorithm: {0}")]
    UnsupportedAlgorithm(String),
    /// `created` or `expires` puts the signature outside its validity window.
    #[error("signature is not valid at this time: {0}")]
    Expired(String),
    /// The signature does not verify.
    #[error("signature does not verify over the covered components")]
    Invalid,
    /// The signing key failed.
    #[error(transparent)]
    Key(#[from] KeyError),
}

// ---------------------------------------------------------------------------

// The metadata parameters, in their default serialization order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Param {
    #[default]
    Created,
    Expires,
    Nonce,
    Alg,
    Keyid,
    Tag,
}

// Decoded component parameters; two identifiers are the same component when
// their names and these are equal, whatever order the parameters came in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Flags {
    sf: bool,
    bs: bool,
    req: bool,
    key: Option<String>,
    name: Option<String>,
}

// The derived components of RFC 9421 section 2.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Derived {
    Method,
    TargetUri,
    Authority,
    Scheme,
    RequestTarget,
    Path,
    Query,
    QueryParam,
    Status,
}

// The parts of an absolute target URI, borrowed from it.
struct UriParts<'a> {
    scheme: &'a str,
    authority: &'a str,
    path: &'a str,
    query: Option<&'a str>,
}

/// The structured-field type of a field `;sf` may re-serialize.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StructuredType {
    /// An RFC 8941 Dictionary.
    Dictionary,
    /// An RFC 8941 List.
    List,
    /// An RFC 8941 Item.
    Item,
}

impl Param {
    const DEFAULT_ORDER: [Param; 6] = [
        Param::Created,
        Param::Expires,
        Param::Nonce,
        Param::Alg,
        Param::Keyid,
        Param::Tag,
    ];

    fn key(self) -> &'static KeyRef {
        match self {
            Param::Created => sfv::key_ref("created"),
            Param::Expires => sfv::key_ref("expires"),
            Param::Nonce => sfv::key_ref("nonce"),
            Param::Alg => sfv::key_ref("alg"),
            Param::Keyid => sfv::key_ref("keyid"),
            Param::Tag => sfv::key_ref("tag"),
        }
    }

    fn from_key(key: &str) -> Option<Param> {
        Param::DEFAULT_ORDER
            .into_iter()
            .find(|p| p.key().as_str() == key)
    }
}

impl ParamOrder {
    fn push(&mut self, param: Param) {
        if self.listed().contains(&param) {
            return;
        }
        if let Some(slot) = self.ids.get_mut(usize::from(self.len)) {
            *slot = param;
            self.len += 1;
        }
    }

    fn listed(&self) -> &[Param] {
        self.ids.get(..usize::from(self.len)).unwrap_or_default()
    }

    // The listed parameters, then every other one in the default order.
    fn iter(&self) -> impl Iterator<Item = Param> + '_ {
        let listed = self.listed();
        listed.iter().copied().chain(
            Param::DEFAULT_ORDER
                .into_iter()
                .filter(move |p| !listed.contains(p)),
        )
    }
}

impl Derived {
    fn from_name(name: &str) -> Option<Derived> {
        Some(match name {
            "@method" => Derived::Method,
            "@target-uri" => Derived::TargetUri,
            "@authority" => Derived::Authority,
            "@scheme" => Derived::Scheme,
            "@request-target" => Derived::RequestTarget,
            "@path" => Derived::Path,
            "@query" => Derived::Query,
            "@query-param" => Derived::QueryParam,
            "@status" => Derived::Status,
            _ => return None,
        })
    }
}

impl Component {
    /// A component without parameters; the name is lower-cased. Whether the
    /// name is usable is checked when a signature base is built.
    pub fn new(name: &str) -> Self {
        Component {
            name: name.to_ascii_lowercase(),
            params: Parameters::new(),
            flags: Flags::default(),
        }
    }

    /// Parses one component identifier in its structured-field form, e.g.
    /// `"@query-param";name="pet"` or `"content-digest";key="sha-256"`.
    pub fn parse(identifier: &str) -> Result<Self, HttpSigError> {
        let item: sfv::Item = Parser::new(identifier)
            .with_version(Version::Rfc8941)
            .parse()
            .map_err(|e| {
                HttpSigError::Malformed(format!(
                    "component identifier `{identifier}` is not a structured item: {e}"
                ))
            })?;
        Self::from_item(item)
    }

    /// The component name, lower-case (`@method`, `content-digest`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the identifier has any parameter (`;sf`, `;req`, ...).
    pub fn has_params(&self) -> bool {
        !self.params.is_empty()
    }

    fn from_item(item: sfv::Item) -> Result<Self, HttpSigError> {
        let BareItem::String(name) = item.bare_item else {
            return Err(HttpSigError::Malformed(
                "a component identifier must be a quoted string".into(),
            ));
        };
        let name: String = name.into();
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(HttpSigError::Malformed(format!(
                "component name `{name}` must be non-empty and lower-case"
            )));
        }
        let mut flags = Flags::default();
        for (key, value) in &item.params {
            let flag = |v: &BareItem| match v {
                BareItem::Boolean(true) => Ok(true),
                _ => Err(HttpSigError::Malformed(format!(
                    "component parameter `{}` on `{name}` takes no value",
                    key.as_str()
                ))),
            };
            let string = |v: &BareItem| match v {
                BareItem::String(s) => Ok(s.as_str().to_owned()),
                _ => Err(HttpSigError::Malformed(format!(
                    "component parameter `{}` on `{name}` must be a string",
                    key.as_str()
                ))),
            };
            match key.as_str() {
                "sf" => flags.sf = flag(value)?,
                "bs" => flags.bs = flag(value)?,
                "req" => flags.req = flag(value)?,
                "key" => flags.key = Some(string(value)?),
                "name" => flags.name = Some(string(value)?),
                "tr" => {
                    return Err(HttpSigError::UnsupportedComponent(format!(
                        "`{name}` with `tr`: trailers are not signed"
                    )));
                }
                other => {
                    return Err(HttpSigError::Malformed(format!(
                        "unknown component parameter `{other}` on `{name}`"
                    )));
                }
            }
        }
        let component = Component {
            name,
            params: item.params,
            flags,
        };
        component.check()?;
        Ok(component)
    }

    // The combinations RFC 9421 section 2 allows, and a usable name.
    fn check(&self) -> Result<(), HttpSigError> {
        let bad = |why: &str| Err(HttpSigError::Malformed(format!("component {self}: {why}")));
        let f = &self.flags;
        if let Some(derived_name) = self.name.strip_prefix('@') {
            let Some(derived) = Derived::from_name(&self.name) else {
                return Err(HttpSigError::UnsupportedComponent(format!(
                    "`@{derived_name}` is not a derived component this broker knows"
                )));
            };
            if f.sf || f.bs || f.key.is_some() {
                return bad("sf, bs and key apply to fields only");
            }
            if (derived == Derived::QueryParam) != f.name.is_some() {
                return bad("the name parameter goes with @query-param, which requires it");
            }
            if derived == Derived::Status && f.req {
                return bad("@status cannot come from the request");
            }
        } else {
            if !self.name.bytes().all(is_tchar) || self.name.bytes().any(|b| b.is_ascii_uppercase())
            {
                return bad("not a lower-case HTTP field name");
            }
            if f.name.is_some() {
                return bad("the name parameter goes with @query-param only");
            }
            if f.bs && (f.sf || f.key.is_some()) {
                return bad("bs cannot be combined with sf or key");
            }
        }
        Ok(())
    }

    fn same_identifier(&self, other: &Component) -> bool {
        self.name == other.name && self.flags == other.flags
    }

    // Appends `"name";params` to `out`.
    fn write_identifier(&self, out: &mut String) -> Result<(), HttpSigError> {
        let name = StringRef::from_str(&self.name).map_err(|_| {
            HttpSigError::UnsupportedComponent(format!(
                "`{}` is not a valid component name",
                self.name.escape_default()
            ))
        })?;
        let _ = ItemSerializer::with_buffer(out)
            .bare_item(name)
            .parameters(&self.params);
        Ok(())
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        match self.write_identifier(&mut out) {
            Ok(()) => f.write_str(&out),
            // Not a valid sf-string; show it escaped for error messages.
            Err(_) => write!(f, "\"{}\"", self.name.escape_default()),
        }
    }
}

impl PartialEq for Component {
    fn eq(&self, other: &Self) -> bool {
        self.same_identifier(other)
    }
}

impl Eq for Component {}

impl SignatureParams {
    /// Parameters covering the given plain components (no parameters on
    /// them), with no metadata set yet.
    pub fn new(components: &[&str]) -> Self {
        SignatureParams {
            components: components.iter().map(|c| Component::new(c)).collect(),
            ..SignatureParams::default()
        }
    }

    /// Whether a parameterless component of that name is covered.
    pub fn covers(&self, name: &str) -> bool {
        self.components
            .iter()
            .any(|c| c.name == name && !c.has_params())
    }

    /// Checks `created` and `expires` against `now` (Unix seconds):
    /// `created` must be present and within `max_skew` seconds of `now`, and
    /// `expires`, when present, must be after `now` and not before `created`.
    pub fn check_time(&self, now: i64, max_skew: i64) -> Result<(), HttpSigError> {
        let Some(created) = self.created else {
            return Err(HttpSigError::Malformed(
                "the created parameter is required".into(),
            ));
        };
        if created.abs_diff(now) > max_skew.unsigned_abs() {
            return Err(HttpSigError::Expired(format!(
                "created {created} is more than {max_skew} s from the broker's clock ({now}); check the signer's clock"
            )));
        }
        if let Some(expires) = self.expires {
            if expires < created {
                return Err(HttpSigError::Malformed(format!(
                    "expires {expires} is before created {created}"
                )));
            }
            if expires <= now {
                return Err(HttpSigError::Expired(format!(
                    "expired at {expires}, now is {now}"
                )));
            }
        }
        Ok(())
    }

    // Appends the inner-list serialization `("a" "b");created=1;...` to
    // `out`, which is the `@signature-params` value and the member value of
    // `Signature-Input`.
    fn write_serialized(&self, out: &mut String) -> Result<(), HttpSigError> {
        let integer = |value: i64, what: &str| {
            if value < 0 {
                return Err(HttpSigError::Malformed(format!(
                    "{what} must not be negative"
                )));
            }
            Integer::try_from(value)
                .map_err(|_| HttpSigError::Malformed(format!("{what} {value} is out of range")))
        };
        fn string<'v>(value: &'v str, what: &str) -> Result<Option<&'v StringRef>, HttpSigError> {
            StringRef::from_str(value)
                .map_err(|_| {
                    HttpSigError::Malformed(format!(
                        "{what} must be printable ASCII, got `{}`",
                        value.escape_default()
                    ))
                })
                .map(Some)
        }
        // Validate the values first; on any error the caller drops `out`.
        let created = self.created.map(|v| integer(v, "created")).transpose()?;
        let expires = self.expires.map(|v| integer(v, "expires")).transpose()?;
        let nonce = self
            .nonce
            .as_deref()
            .map_or(Ok(None), |v| string(v, "nonce"))?;
        let alg = self.alg.as_deref().map_or(Ok(None), |v| string(v, "alg"))?;
        let keyid = self
            .keyid
            .as_deref()
            .map_or(Ok(None), |v| string(v, "keyid"))?;
        let tag = self.tag.as_deref().map_or(Ok(None), |v| string(v, "tag"))?;

        let mut list = ListSerializer::with_buffer(out);
        let mut inner = list.inner_list();
        for component in &self.components {
            let name = StringRef::from_str(&component.name).map_err(|_| {
                HttpSigError::UnsupportedComponent(format!(
                    "`{}` is not a valid component name",
                    component.name.escape_default()
                ))
            })?;
            let _ = inner.bare_item(name).parameters(&component.params);
        }
        let mut params = inner.finish();
        for param in self.order.iter() {
            let key = param.key();
            params = match param {
                Param::Created => match created {
                    Some(v) => params.parameter(key, v),
                    None => params,
                },
                Param::Expires => match expires {
                    Some(v) => params.parameter(key, v),
                    None => params,
                },
                Param::Nonce => match nonce {
                    Some(v) => params.parameter(key, v),
                    None => params,
                },
                Param::Alg => match alg {
                    Some(v) => params.parameter(key, v),
                    None => params,
                },
                Param::Keyid => match keyid {
                    Some(v) => params.parameter(key, v),
                    None => params,
                },
                Param::Tag => match tag {
                    Some(v) => params.parameter(key, v),
                    None => params,
                },
            };
        }
        let _ = params.finish();
        let _ = list.finish();
        Ok(())
    }

    // Reads the parameters of a `Signature-Input` member.
    fn from_inner_list(list: sfv::InnerList) -> Result<Self, HttpSigError> {
        if list.items.len() > MAX_COMPONENTS {
            return Err(HttpSigError::Malformed(format!(
                "more than {MAX_COMPONENTS} covered components"
            )));
        }
        let mut params = SignatureParams::default();
        for item in list.items {
            let component = Component::from_item(item)?;
            if params
                .components
                .iter()
                .any(|c| c.same_identifier(&component))
            {
                return Err(HttpSigError::Malformed(format!(
                    "component {component} is listed twice"
                )));
            }
            params.components.push(component);
        }
        for (key, value) in &list.params {
            let Some(param) = Param::from_key(key.as_str()) else {
                return Err(HttpSigError::Malformed(format!(
                    "unknown signature parameter `{}`",
                    key.as_str()
                )));
            };
            let wrong_type = |what: &str| {
                HttpSigError::Malformed(format!(
                    "signature parameter `{}` must be {what}",
                    key.as_str()
                ))
            };
            match param {
                Param::Created | Param::Expires => {
                    let v = value
                        .as_integer()
                        .map(i64::from)
                        .filter(|v| *v >= 0)
                        .ok_or_else(|| wrong_type("a non-negative integer"))?;
                    if param == Param::Created {
                        params.created = Some(v);
                    } else {
                        params.expires = Some(v);
                    }
                }
                Param::Nonce | Param::Alg | Param::Keyid | Param::Tag => {
                    let v = value
                        .as_string()
                        .map(|s| s.as_str().to_owned())
                        .ok_or_else(|| wrong_type("a string"))?;
                    match param {
                        Param::Nonce => params.nonce = Some(v),
                        Param::Alg => params.alg = Some(v),
                        Param::Keyid => params.keyid = Some(v),
                        _ => params.tag = Some(v),
                    }
                }
            }
            params.order.push(param);
        }
        Ok(params)
    }
}

impl<'a> MessageView<'a> {
    fn headers(&self) -> &'a HeaderMap {
        match self {
            MessageView::Request(r) => r.headers,
            MessageView::Response { headers, .. } => headers,
        }
    }
}

/// Builds the signature base of RFC 9421 section 2.5 for `params` over
/// `message`: one line per covered component, then `@signature-params`.
pub fn signature_base(
    message: &MessageView<'_>,
    params: &SignatureParams,
) -> Result<String, HttpSigError> {
    build_base(message, params).map(|(base, _)| base)
}

// The signature base, and the offset where the serialized parameters start
// in its last line (they are also the `Signature-Input` member value).
fn build_base(
    message: &MessageView<'_>,
    params: &SignatureParams,
) -> Result<(String, usize), HttpSigError> {
    if params.components.len() > MAX_COMPONENTS {
        return Err(HttpSigError::Malformed(format!(
            "more than {MAX_COMPONENTS} covered components"
        )));
    }
    let mut base = String::with_capacity(256 + 96 * params.components.len());
    for (i, component) in params.components.iter().enumerate() {
        component.check()?;
        if params
            .components
            .iter()
            .take(i)
            .any(|c| c.same_identifier(component))
        {
            return Err(HttpSigError::Malformed(format!(
                "component {component} is listed twice"
            )));
        }
        component.write_identifier(&mut base)?;
        base.push_str(": ");
        write_component_value(message, component, &mut base)?;
        base.push('\n');
    }
    base.push_str("\"@signature-params\": ");
    let params_start = base.len();
    params.write_serialized(&mut base)?;
    Ok((base, params_start))
}

/// Reads the signature labelled `label` from `Signature-Input` and
/// `Signature`. Returns [`HttpSigError::Missing`] when either field lacks that
/// label.
pub fn parse_signature(headers: &HeaderMap, label: &str) -> Result<ParsedSignature, HttpSigError> {
    let mut inputs = parse_signature_field(headers, &SIGNATURE_INPUT)?;
    let mut signatures = parse_signature_field(headers, &SIGNATURE)?;
    let (Some(input), Some(signature)) =
        (inputs.shift_remove(label), signatures.shift_remove(label))
    else {
        return Err(HttpSigError::Missing);
    };
    let ListEntry::InnerList(list) = input else {
        return Err(HttpSigError::Malformed(format!(
            "Signature-Input member `{label}` must be an inner list of components"
        )));
    };
    let params = SignatureParams::from_inner_list(list)?;
    let signature = match signature {
        ListEntry::Item(sfv::Item {
            bare_item: BareItem::ByteSequence(bytes),
            params,
        }) if params.is_empty() && !bytes.is_empty() => bytes,
        _ => {
            return Err(HttpSigError::Malformed(format!(
                "Signature member `{label}` must be a non-empty byte sequence (:base64:)"
            )));
        }
    };
    Ok(ParsedSignature {
        label: label.to_owned(),
        params,
        signature,
    })
}

/// Verifies `parsed` over `message` with `key` and `alg`.
///
/// When the signature states an `alg` parameter it must equal `alg`. Time
/// parameters are not checked here (see [`SignatureParams::check_time`]).
pub fn verify(
    message: &MessageView<'_>,
    parsed: &ParsedSignature,
    key: &VerifyingKey,
    alg: Algorithm,
) -> Result<(), HttpSigError> {
    if let Some(stated) = &parsed.params.alg
        && stated != alg.as_str()
    {
        return Err(HttpSigError::UnsupportedAlgorithm(format!(
            "the alg parameter says `{}` but the key is used with `{alg}`",
            stated.escape_default()
        )));
    }
    if !key.supports(alg) {
        return Err(HttpSigError::UnsupportedAlgorithm(format!(
            "`{alg}` does not fit the signer's {:?} key",
            key.kind()
        )));
    }
    let base = signature_base(message, &parsed.params)?;
    key.verify(alg, base.as_bytes(), &parsed.signature)
        .map_err(|_| HttpSigError::Invalid)
}

/// Signs `message` under `label` with `key`, returning the two header values
/// (each a single-member dictionary) to [`attach`].
pub fn sign(
    message: &MessageView<'_>,
    label: &str,
    params: &SignatureParams,
    key: &SigningKey,
) -> Result<SignatureHeaders, HttpSigError> {
    let label_key = KeyRef::from_str(label).map_err(|_| {
        HttpSigError::Malformed(format!(
            "label `{}` must be a structured-field key (lower-case letters, digits, _-.*)",
            label.escape_default()
        ))
    })?;
    if let Some(stated) = &params.alg
        && stated != key.algorithm().as_str()
    {
        return Err(HttpSigError::UnsupportedAlgorithm(format!(
            "the alg parameter says `{}` but the key signs `{}`",
            stated.escape_default(),
            key.algorithm()
        )));
    }
    let (base, params_start) = build_base(message, params)?;
    let signature = key.sign(base.as_bytes())?;

    // The base ends with the serialized parameters; reuse them rather than
    // serializing twice.
    let serialized = base.get(params_start..).unwrap_or_default();
    let mut input = String::with_capacity(label.len() + 1 + serialized.len());
    input.push_str(label_key.as_str());
    input.push('=');
    input.push_str(serialized);

    let mut value = String::with_capacity(label.len() + 4 + signature.len() * 4 / 3 + 4);
    let mut dict = DictSerializer::with_buffer(&mut value);
    let _ = dict.bare_item(label_key, signature.as_slice());
    let _ = dict.finish();

    let header = |s: String| {
        HeaderValue::try_from(s).map_err(|_| {
            HttpSigError::Malformed("signature header is not a valid field value".into())
        })
    };
    Ok(SignatureHeaders {
        signature_input: header(input)?,
        signature: header(value)?,
    })
}

/// Puts a signature on a message, replacing any `Signature` and
/// `Signature-Input` it had.
pub fn attach(headers: &mut HeaderMap, signature: SignatureHeaders) {
    headers.insert(SIGNATURE_INPUT, signature.signature_input);
    headers.insert(SIGNATURE, signature.signature);
}

/// The structured type `;sf` uses for a field, for the fields this module
/// knows. `;sf` on any other field is refused, as RFC 9421 section 2.1.1
/// requires when the type is unknown.
pub fn structured_type(field: &str) -> Option<StructuredType> {
    match field {
        "content-digest"
        | "repr-digest"
        | "want-content-digest"
        | "want-repr-digest"
        | "signature"
        | "signature-input"
        | "accept-signature"
        | "priority" => Some(StructuredType::Dictionary),
        "cache-status" | "proxy-status" => Some(StructuredType::List),
        _ => None,
    }
}

// ---------------------------------------------------------------------------

const SIGNATURE_INPUT: HeaderName = HeaderName::from_static("signature-input");
const SIGNATURE: HeaderName = HeaderName::from_static("signature");

// Parses a Dictionary, refusing repeated keys, which RFC 8941 would otherwise
// resolve silently in favour of the last one.
pub(crate) fn parse_dictionary(input: &[u8]) -> Result<Dictionary, sfv::Error> {
    Parser::new(input)
        .with_version(Version::Rfc8941)
        .parse_dictionary_with_visitor(UniqueKeys(Dictionary::new()))
}

struct UniqueKeys(Dictionary);

#[derive(Debug)]
struct DuplicateKey;

impl fmt::Display for DuplicateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a dictionary key is repeated")
    }
}

impl std::error::Error for DuplicateKey {}

impl<'de> DictionaryVisitor<'de> for UniqueKeys {
    type Out = Dictionary;
    type Error = DuplicateKey;

    fn entry(&mut self, key: &'de KeyRef) -> Result<impl EntryVisitor<'de>, Self::Error> {
        if self.0.contains_key(key) {
            return Err(DuplicateKey);
        }
        let entry: Result<_, Infallible> = DictionaryVisitor::entry(&mut self.0, key);
        match entry {
            Ok(visitor) => Ok(visitor),
            Err(never) => match never {},
        }
    }

    fn finish(self) -> Result<Self::Out, Self::Error> {
        Ok(self.0)
    }
}

// All lines of a field joined with ", " (RFC 9110 section 5.3), borrowed
// when there is only one.
fn combined_lines<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
    limit: usize,
) -> Result<Option<Cow<'a, [u8]>>, HttpSigError> {
    let mut lines = headers.get_all(name).iter();
    let Some(first) = lines.next() else {
        return Ok(None);
    };
    let mut combined = Cow::Borrowed(first.as_bytes());
    for line in lines {
        let buf = combined.to_mut();
        buf.extend_from_slice(b", ");
        buf.extend_from_slice(line.as_bytes());
        if buf.len() > limit {
            break;
        }
    }
    if combined.len() > limit {
        return Err(HttpSigError::Malformed(format!(
            "{name} is longer than {limit} bytes"
        )));
    }
    Ok(Some(combined))
}

fn parse_signature_field(
    headers: &HeaderMap,
    name: &HeaderName,
) -> Result<Dictionary, HttpSigError> {
    let Some(value) = combined_lines(headers, name, MAX_SIGNATURE_FIELD_LEN)? else {
        return Err(HttpSigError::Missing);
    };
    parse_dictionary(&value)
        .map_err(|e| HttpSigError::Malformed(format!("{name} is not a structured dictionary: {e}")))
}

// tchar of RFC 9110 section 5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

// Appends the value of one component to `out`.
fn write_component_value(
    message: &MessageView<'_>,
    component: &Component,
    out: &mut String,
) -> Result<(), HttpSigError> {
    let flags = &component.flags;
    // `;req` reads from the request a response answers.
    let request = match (message, flags.req) {
        (MessageView::Request(request), false) => Some(*request),
        (MessageView::Request(_), true) => {
            return Err(HttpSigError::Malformed(format!(
                "component {component}: req is only meaningful on a response"
            )));
        }
        (MessageView::Response { request, .. }, true) => match request {
            Some(request) => Some(*request),
            None => {
                return Err(HttpSigError::MissingComponent(format!(
                    "{component} (the request this response answers was not given)"
                )));
            }
        },
        (MessageView::Response { .. }, false) => None,
    };

    let Some(derived) = Derived::from_name(&component.name) else {
        let headers = request.map_or_else(|| message.headers(), |r| r.headers);
        return write_field_value(headers, component, out);
    };

    if derived == Derived::Status {
        return match message {
            MessageView::Response { status, .. } if (100..=999).contains(status) => {
                let _ = write!(out, "{status}");
                Ok(())
            }
            MessageView::Response { status, .. } => Err(HttpSigError::Malformed(format!(
                "status {status} is not a three-digit code"
            ))),
            MessageView::Request(_) => Err(HttpSigError::MissingComponent(format!(
                "{component} (a request has no status)"
            ))),
        };
    }
    let Some(request) = request else {
        return Err(HttpSigError::MissingComponent(format!(
            "{component} (request components on a response need the req parameter)"
        )));
    };
    if derived == Derived::Method {
        if request.method.is_empty() || !request.method.bytes().all(is_tchar) {
            return Err(HttpSigError::Malformed("the method is not a token".into()));
        }
        out.push_str(request.method);
        return Ok(());
    }

    let uri = split_target_uri(request.target_uri)?;
    match derived {
        Derived::TargetUri => out.push_str(request.target_uri),
        Derived::Scheme => push_lowercase(out, uri.scheme),
        Derived::Authority => {
            // RFC 9110 section 4.2.3 normalization: lower-case host, default
            // port removed.
            let authority = uri.authority;
            let host_end = if authority.starts_with('[') {
                authority.find(']').map_or(authority.len(), |i| i + 1)
            } else {
                authority.rfind(':').unwrap_or(authority.len())
            };
            let (host, port) = authority.split_at(host_end);
            push_lowercase(out, host);
            let port = port.strip_prefix(':').unwrap_or(port);
            let default = if uri.scheme.eq_ignore_ascii_case("https") {
                "443"
            } else if uri.scheme.eq_ignore_ascii_case("http") {
                "80"
            } else {
                ""
            };
            if !port.is_empty() && port != default {
                out.push(':');
                out.push_str(port);
            }
        }
        Derived::Path => out.push_str(if uri.path.is_empty() { "/" } else { uri.path }),
        Derived::RequestTarget => {
            out.push_str(if uri.path.is_empty() { "/" } else { uri.path });
            if let Some(query) = uri.query {
                out.push('?');
                out.push_str(query);
            }
        }
        Derived::Query => {
            out.push('?');
            out.push_str(uri.query.unwrap_or(""));
        }
        Derived::QueryParam => {
            let wanted = flags.name.as_deref().unwrap_or("");
            let mut found: Option<Vec<u8>> = None;
            for pair in uri.query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                if reencode(&form_decode(name)) != wanted {
                    continue;
                }
                if found.is_some() {
                    return Err(HttpSigError::Malformed(format!(
                        "query parameter `{wanted}` occurs more than once, so it cannot be signed"
                    )));
                }
                found = Some(form_decode(value));
            }
            let Some(value) = found else {
                return Err(HttpSigError::MissingComponent(component.to_string()));
            };
            out.push_str(&reencode(&value));
        }
        Derived::Method | Derived::Status => {}
    }
    Ok(())
}

fn push_lowercase(out: &mut String, s: &str) {
    out.extend(s.chars().map(|c| c.to_ascii_lowercase()));
}

// Splits `scheme://authority[/path][?query]`. Only visible ASCII is allowed;
// fragments and user info are refused.
fn split_target_uri(uri: &str) -> Result<UriParts<'_>, HttpSigError> {
    let bad = |why: &str| Err(HttpSigError::Malformed(format!("target URI {why}")));
    if !uri.bytes().all(|b| b.is_ascii_graphic()) {
        return bad("must be visible ASCII without spaces");
    }
    if uri.contains('#') {
        return bad("must not have a fragment");
    }
    let Some((scheme, rest)) = uri.split_once("://") else {
        return bad("must be absolute (scheme://authority/path)");
    };
    let mut scheme_bytes = scheme.bytes();
    let scheme_ok = scheme_bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && scheme_bytes.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    if !scheme_ok {
        return bad("has an invalid scheme");
    }
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(authority_end);
    if authority.is_empty() || authority.contains('@') {
        return bad("must have a host and no user info");
    }
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    Ok(UriParts {
        scheme,
        authority,
        path,
        query,
    })
}

// application/x-www-form-urlencoded parsing of one name or value (WHATWG URL
// section 5.1): `+` is a space, `%XX` a byte, anything else itself.
fn form_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.as_bytes().iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                // Only `%` followed by two hex digits is an escape; anything
                // else stays literal (so `%+1` is not byte 1).
                let rest = bytes.as_slice();
                match (
                    rest.first().copied().and_then(hex_digit),
                    rest.get(1).copied().and_then(hex_digit),
                ) {
                    (Some(high), Some(low)) => {
                        out.push(high << 4 | low);
                        bytes.nth(1);
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
    }
    out
}

fn hex_digit(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

// Percent-encodes every byte outside the application/x-www-form-urlencoded
// safe set (ALPHA, DIGIT, `*-._`), spaces as `%20`, as RFC 9421 section 2.2.8
// requires for `@query-param` names and values.
fn reencode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"*-._".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

// Appends an HTTP field's component value (RFC 9421 section 2.1).
fn write_field_value(
    headers: &HeaderMap,
    component: &Component,
    out: &mut String,
) -> Result<(), HttpSigError> {
    let name = HeaderName::from_bytes(component.name.as_bytes()).map_err(|_| {
        HttpSigError::UnsupportedComponent(format!("{component} is not an HTTP field name"))
    })?;
    let mut lines = headers.get_all(&name).iter().peekable();
    if lines.peek().is_none() {
        return Err(HttpSigError::MissingComponent(component.to_string()));
    }
    let flags = &component.flags;

    if flags.bs {
        // Each line is wrapped separately, so no byte needs to be ASCII.
        let mut first = true;
        for line in lines {
            if !first {
                out.push_str(", ");
            }
            first = false;
            out.push(':');
            BASE64.encode_string(trim_ows(line.as_bytes()), out);
            out.push(':');
        }
        return Ok(());
    }

    if !flags.sf && flags.key.is_none() {
        let mut first = true;
        for line in lines {
            if !first {
                out.push_str(", ");
            }
            first = false;
            out.push_str(field_text(line, component)?);
        }
        return Ok(());
    }

    // `;sf` and `;key` re-serialize the combined value.
    let mut combined = String::new();
    let mut first = true;
    for line in lines {
        if !first {
            combined.push_str(", ");
        }
        first = false;
        combined.push_str(field_text(line, component)?);
    }
    let malformed = |e: sfv::Error| {
        HttpSigError::Malformed(format!(
            "field of {component} is not a valid structured field: {e}"
        ))
    };
    if let Some(key) = &flags.key {
        // RFC 9421 section 2.1.2: `key` always reads a Dictionary.
        let dict: Dictionary = Parser::new(&combined)
            .with_version(Version::Rfc8941)
            .parse()
            .map_err(malformed)?;
        let Some(member) = dict.get(key.as_str()) else {
            return Err(HttpSigError::MissingComponent(format!(
                "{component} (no dictionary member `{key}`)"
            )));
        };
        let mut list = ListSerializer::with_buffer(out);
        list.members(std::iter::once(member));
        let _ = list.finish();
        return Ok(());
    }
    let Some(kind) = structured_type(&component.name) else {
        return Err(HttpSigError::UnsupportedComponent(format!(
            "{component}: the structured type of this field is unknown"
        )));
    };
    let parser = Parser::new(&combined).with_version(Version::Rfc8941);
    match kind {
        StructuredType::Dictionary => {
            let dict: Dictionary = parser.parse().map_err(malformed)?;
            let mut ser = DictSerializer::with_buffer(out);
            ser.members(&dict);
            let _ = ser.finish();
        }
        StructuredType::List => {
            let list: sfv::List = parser.parse().map_err(malformed)?;
            let mut ser = ListSerializer::with_buffer(out);
            ser.members(&list);
            let _ = ser.finish();
        }
        StructuredType::Item => {
            let item: sfv::Item = parser.parse().map_err(malformed)?;
            let _ = ItemSerializer::with_buffer(out)
                .bare_item(&item.bare_item)
                .parameters(&item.params);
        }
    }
    Ok(())
}

// One field line, trimmed, as text; bytes outside visible ASCII, space and
// tab need `;bs` (RFC 9421 section 2.1.3).
fn field_text<'v>(line: &'v HeaderValue, component: &Component) -> Result<&'v str, HttpSigError> {
    let bytes = trim_ows(line.as_bytes());
    if !bytes
        .iter()
        .all(|&b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
    {
        return Err(HttpSigError::UnsupportedComponent(format!(
            "{component} has non-ASCII or control bytes; cover it with ;bs"
        )));
    }
    std::str::from_utf8(bytes)
        .map_err(|_| HttpSigError::UnsupportedComponent(format!("{component} is not ASCII")))
}

fn trim_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}
