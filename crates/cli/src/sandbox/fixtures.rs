//! The objects the sandbox's `try` list reads: a lookup of a notification, a
//! sign request, a power of attorney or a payment order needs one to exist,
//! and its id is chosen by the adapter, not by the catalog. At start the
//! sandbox makes each one through the bus (a real, signed, audited call as
//! the try entry's own participant) and writes its id into the entry, so
//! every entry succeeds when the list is run in order, and again when it is
//! run a second time (PROTOCOL.md section 9).
//!
//! Invariants: a fixture that cannot be made fails the sandbox's start with
//! the call's answer in the error, so a `try` list is never written with an
//! entry known not to work; fixtures are about two people of their own
//! ([`FIXTURE_PERSON`], [`FIXTURE_AGENT`]), so they never show in the access
//! history, the powers of attorney or the payments of the people the
//! example registers and the scenarios use.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{ManifestTry, SandboxManifest};

/// Where a try entry takes the made object's id.
enum Target {
    /// A query parameter of the entry's path.
    Query(&'static str),
    /// A member of the entry's body (JSON pointer).
    Body(&'static str),
}

/// One kind of object a try entry needs.
struct Prerequisite {
    /// The service whose try entries need the object.
    service: &'static str,
    /// The service that makes it, called with its catalogued example body.
    make: &'static str,
    /// Members of that example body to replace (pointer, value), so that
    /// entries that change an object do not change another entry's.
    overrides: &'static [(&'static str, &'static str)],
    /// Where each id goes, and the pointer into the make call's answer it comes from.
    ids: &'static [(Target, &'static str)],
    /// Only the citizen portal's entries are kept: the service changes a
    /// power of attorney, which takes the grantor's own consent (the portal
    /// acting for its signed-in user, or an MSign signature that
    /// `scenario_representation` shows step by step).
    portal_only: bool,
}

/// Where the notification made for the try list is addressed, so a mail
/// server sees it apart from the bus's real mail.
pub const FIXTURE_MAILBOX: &str = "try-list@sandbox.mconnect.md";

/// The person the fixtures are about: payer, signer, grantor (and the
/// calling user of the fixture calls, so the portal acts for them).
pub const FIXTURE_PERSON: &str = "2009900000015";

/// The person the fixture powers of attorney are given to.
pub const FIXTURE_AGENT: &str = "2009900000026";

/// The citizen portal participant, which acts for its signed-in user.
const PORTAL: &str = "mcabinet";

/// A fixture power of attorney: from the fixture person to the fixture agent.
const GRANT_OVERRIDES: &[(&str, &str)] = &[
    ("/authorising/id", FIXTURE_PERSON),
    ("/authorised_idnp", FIXTURE_AGENT),
];

const PREREQUISITES: &[Prerequisite] = &[
    Prerequisite {
        service: "mnotify/notification-status",
        make: "mnotify/notification-send",
        // Not to a real office: the mail is only there to be looked up.
        overrides: &[("/recipient/email", FIXTURE_MAILBOX)],
        ids: &[(Target::Query("id"), "/id")],
        portal_only: false,
    },
    Prerequisite {
        service: "msign/sign-result",
        make: "msign/sign-request",
        overrides: &[("/signer_idnp", FIXTURE_PERSON)],
        ids: &[(Target::Query("request_id"), "/request_id")],
        portal_only: false,
    },
    Prerequisite {
        service: "mpower/authorisation-by-code",
        make: "mpower/authorisation-grant",
        overrides: GRANT_OVERRIDES,
        ids: &[(Target::Query("code"), "/code")],
        portal_only: false,
    },
    Prerequisite {
        service: "mpower/authorisation-revoke",
        make: "mpower/authorisation-grant",
        overrides: GRANT_OVERRIDES,
        ids: &[(Target::Body("/code"), "/code")],
        portal_only: true,
    },
    Prerequisite {
        service: "mpower/authorisation-transition",
        make: "mpower/authorisation-grant",
        overrides: GRANT_OVERRIDES,
        ids: &[(Target::Body("/code"), "/code")],
        portal_only: true,
    },
    Prerequisite {
        service: "mpay/order-details",
        make: "mpay/order-create",
        // Each its own order key: the order-create entry itself uses the
        // catalog's example key, and an order key names one content.
        overrides: &[
            ("/order_key", "CH-TRY-DETAILS"),
            ("/payer/idnp", FIXTURE_PERSON),
        ],
        ids: &[
            (Target::Query("service_id"), "/service_id"),
            (Target::Query("order_key"), "/order_key"),
        ],
        portal_only: false,
    },
    Prerequisite {
        // Its own order: cancelling the one payment-confirm pays would make
        // that entry fail.
        service: "mpay/order-cancel",
        make: "mpay/order-create",
        overrides: &[
            ("/order_key", "CH-TRY-CANCEL"),
            ("/payer/idnp", FIXTURE_PERSON),
        ],
        ids: &[
            (Target::Body("/service_id"), "/service_id"),
            (Target::Body("/order_key"), "/order_key"),
        ],
        portal_only: false,
    },
    Prerequisite {
        service: "mpay/payment-confirm",
        make: "mpay/order-create",
        overrides: &[
            ("/order_key", "CH-TRY-CONFIRM"),
            ("/payer/idnp", FIXTURE_PERSON),
        ],
        ids: &[
            (Target::Body("/service_id"), "/service_id"),
            (Target::Body("/order_key"), "/order_key"),
        ],
        portal_only: false,
    },
];

/// Makes the objects the manifest's try entries need and writes their ids
/// into the entries. `dir` holds the sandbox's PKI.
pub(super) async fn prepare(manifest: &mut SandboxManifest, dir: &Path) -> Result<()> {
    manifest.tries.retain(|t| {
        !PREREQUISITES
            .iter()
            .any(|p| p.portal_only && p.service == t.service && t.client != PORTAL)
    });
    for index in 0..manifest.tries.len() {
        let Some(need) = PREREQUISITES
            .iter()
            .find(|p| p.service == manifest.tries[index].service)
        else {
            continue;
        };
        let entry = &manifest.tries[index];
        // Objects belong to whoever made them: make it as the entry's own
        // participant where its grants allow, else as one that may.
        let maker = manifest
            .tries
            .iter()
            .filter(|t| t.service == need.make && t.body.is_some())
            .min_by_key(|t| t.client != entry.client)
            .with_context(|| {
                format!(
                    "no try entry calls {} to make what {} needs",
                    need.make, need.service
                )
            })?
            .clone();
        let answer = make(manifest, dir, &maker, need.overrides).await?;
        let entry = &mut manifest.tries[index];
        if need.portal_only {
            // The portal acts for its signed-in user, who must be the grantor.
            entry.calling_user = Some(FIXTURE_PERSON.to_string());
        }
        for (target, from) in need.ids {
            let id = answer
                .pointer(from)
                .and_then(Value::as_str)
                .with_context(|| format!("{} answered without {from}", need.make))?;
            match target {
                Target::Query(name) => set_query(entry, name, id),
                Target::Body(pointer) => {
                    if let Some(slot) = entry.body.as_mut().and_then(|b| b.pointer_mut(pointer)) {
                        *slot = Value::String(id.to_string());
                    }
                }
            }
        }
    }
    Ok(())
}

/// Calls `maker`'s service with its body (overridden) and returns the answer.
async fn make(
    manifest: &SandboxManifest,
    dir: &Path,
    maker: &ManifestTry,
    overrides: &[(&str, &str)],
) -> Result<Value> {
    let mut body = maker.body.clone().unwrap_or(Value::Null);
    for (pointer, value) in overrides {
        if let Some(slot) = body.pointer_mut(pointer) {
            *slot = Value::String((*value).to_string());
        }
    }
    let consumer = manifest.consumer(dir, &maker.client)?;
    let call = mconnect_sdk::Call {
        method: maker.method.parse().context("try.method")?,
        path: maker.path.clone(),
        body: Some(bytes::Bytes::from(body.to_string())),
        // The fixture person acts (the portal files for its own user).
        calling_user: FIXTURE_PERSON.to_string(),
        basis: maker.basis.clone(),
        reason: maker.reason.clone(),
        // The body now names the fixture person where it named anyone.
        subject: maker.subject.as_ref().map(|_| FIXTURE_PERSON.to_string()),
        represented_party: None,
        request_id: None,
    };
    let outcome = consumer.call(&call).await?;
    if !outcome.status.is_success() {
        bail!(
            "making a sandbox fixture with {} as {} failed: {} {}",
            maker.service,
            maker.client,
            outcome.status,
            String::from_utf8_lossy(&outcome.body)
        );
    }
    serde_json::from_slice(&outcome.body)
        .with_context(|| format!("{} answered something that is not JSON", maker.service))
}

/// Replaces (or adds) one query parameter of a try entry's path.
fn set_query(entry: &mut ManifestTry, name: &str, value: &str) {
    let (path, query) = entry
        .path
        .split_once('?')
        .map_or((entry.path.as_str(), ""), |(p, q)| (p, q));
    let mut pairs: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty() && p.split('=').next() != Some(name))
        .map(str::to_string)
        .collect();
    pairs.push(format!("{name}={value}"));
    entry.path = format!("{path}?{}", pairs.join("&"));
}
