//! A grant as the admin API shows it (`GET /v1/grants`), and read back: the
//! data-access portal offers its officials the grants the broker holds now,
//! from policy files and approved connection requests alike, by reading
//! this view.
//!
//! Invariant: [`from_view`] of [`to_view`] is the same grant (tested), so a
//! grant never changes meaning on its way through the API.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{
    FieldSet, Grant, GrantOrigin, GrantStatus, LegalBasis, Purpose, Quota, RateLimit, RatePeriod,
    Representation,
};
use crate::catalog::Text;

/// The grant as the admin API shows it, `in_force` at `now` (Unix seconds).
pub fn to_view(grant: &Grant, now: i64) -> Value {
    let fields: serde_json::Map<String, Value> = grant
        .fields
        .iter()
        .map(|(service, set)| (service.clone(), json!(set.paths())))
        .collect();
    let origin = match &grant.origin {
        GrantOrigin::File => json!({"kind": "file"}),
        GrantOrigin::ConnectionRequest { request_id } => {
            json!({"kind": "connection_request", "request_id": request_id})
        }
    };
    let text = |t: &Text| json!({"ro": t.ro, "ru": t.ru, "en": t.en});
    json!({
        "id": grant.id,
        "consumer": grant.consumer,
        "services": grant.services,
        "purposes": grant.purposes.iter().map(|p| json!({"code": p.code, "text": text(&p.text)})).collect::<Vec<_>>(),
        "legal_bases": grant.legal_bases.iter().map(|b| json!({
            "id": b.id, "act": b.act, "article": b.article, "text": b.text, "link": b.link,
        })).collect::<Vec<_>>(),
        "fields": fields,
        "valid_from": instant(grant.valid_from),
        "valid_until": grant.valid_until.map(instant),
        "in_force": grant.status == GrantStatus::Active && grant.in_date(now),
        "rate_limit": {
            "requests": grant.rate_limit.requests,
            "per": match grant.rate_limit.per {
                RatePeriod::Second => "second",
                RatePeriod::Minute => "minute",
                RatePeriod::Hour => "hour",
            },
            "burst": grant.rate_limit.burst,
        },
        "quota": grant.quota.map(|q| json!({"per_day": q.per_day, "per_month": q.per_month})),
        "status": grant.status.as_str(),
        "origin": origin,
        "controller_register_no": grant.controller_register_no,
        "note": grant.note,
        "representation": grant.representation.as_ref().map(|r| json!({"authorisation_type": r.authorisation_type})),
    })
}

/// A grant from its admin-API view; what is missing or malformed is named.
pub fn from_view(view: &Value) -> Result<Grant, String> {
    let text = |v: &Value, at: &str| -> Result<String, String> {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("`{at}` is not a string"))
    };
    let list = |at: &str| -> Result<&Vec<Value>, String> {
        view[at]
            .as_array()
            .ok_or_else(|| format!("`{at}` is not a list"))
    };
    let optional = |v: &Value| v.as_str().map(str::to_owned);
    let id = text(&view["id"], "id")?;
    let services = list("services")?
        .iter()
        .map(|s| text(s, "services[]"))
        .collect::<Result<Vec<_>, _>>()?;
    let purposes = list("purposes")?
        .iter()
        .map(|p| {
            Ok(Purpose {
                code: text(&p["code"], "purposes[].code")?,
                text: Text {
                    ro: text(&p["text"]["ro"], "purposes[].text.ro")?,
                    ru: text(&p["text"]["ru"], "purposes[].text.ru")?,
                    en: text(&p["text"]["en"], "purposes[].text.en")?,
                },
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let legal_bases = list("legal_bases")?
        .iter()
        .map(|b| {
            Ok(LegalBasis {
                id: text(&b["id"], "legal_bases[].id")?,
                act: text(&b["act"], "legal_bases[].act")?,
                article: text(&b["article"], "legal_bases[].article")?,
                text: text(&b["text"], "legal_bases[].text")?,
                link: optional(&b["link"]),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let mut fields = BTreeMap::new();
    for (service, paths) in view["fields"]
        .as_object()
        .ok_or("`fields` is not an object")?
    {
        let paths = paths
            .as_array()
            .ok_or_else(|| format!("`fields.{service}` is not a list"))?
            .iter()
            .map(|p| {
                p.as_str()
                    .ok_or_else(|| format!("`fields.{service}[]` is not a string"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        fields.insert(service.clone(), FieldSet::new(paths)?);
    }
    let unix = |v: &Value, at: &str| -> Result<i64, String> {
        match v {
            Value::String(s) => OffsetDateTime::parse(s, &Rfc3339)
                .map(OffsetDateTime::unix_timestamp)
                .map_err(|e| format!("`{at}`: {e}")),
            Value::Number(n) => n.as_i64().ok_or_else(|| format!("`{at}` is not a time")),
            _ => Err(format!("`{at}` is not a time")),
        }
    };
    let status = match view["status"].as_str() {
        Some("active") => GrantStatus::Active,
        Some("suspended") => GrantStatus::Suspended,
        Some("revoked") => GrantStatus::Revoked,
        _ => return Err("`status` is not active, suspended or revoked".into()),
    };
    let origin = match view["origin"]["kind"].as_str() {
        Some("file") => GrantOrigin::File,
        Some("connection_request") => GrantOrigin::ConnectionRequest {
            request_id: text(&view["origin"]["request_id"], "origin.request_id")?,
        },
        _ => return Err("`origin.kind` is not file or connection_request".into()),
    };
    let count = |v: &Value, at: &str| -> Result<u32, String> {
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("`{at}` is not a count"))
    };
    let rate_limit = RateLimit {
        requests: count(&view["rate_limit"]["requests"], "rate_limit.requests")?,
        per: match view["rate_limit"]["per"].as_str() {
            Some("second") => RatePeriod::Second,
            Some("minute") => RatePeriod::Minute,
            Some("hour") => RatePeriod::Hour,
            _ => return Err("`rate_limit.per` is not second, minute or hour".into()),
        },
        burst: count(&view["rate_limit"]["burst"], "rate_limit.burst")?,
    };
    let quota = match &view["quota"] {
        Value::Null => None,
        q => Some(Quota {
            per_day: q["per_day"].as_u64(),
            per_month: q["per_month"].as_u64(),
        }),
    };
    Ok(Grant {
        consumer: text(&view["consumer"], "consumer")?,
        services,
        purposes,
        legal_bases,
        fields,
        valid_from: unix(&view["valid_from"], "valid_from")?,
        valid_until: match &view["valid_until"] {
            Value::Null => None,
            v => Some(unix(v, "valid_until")?),
        },
        rate_limit,
        quota,
        status,
        origin,
        controller_register_no: optional(&view["controller_register_no"]),
        note: optional(&view["note"]),
        representation: match &view["representation"] {
            Value::Null => None,
            r => Some(Representation {
                authorisation_type: text(
                    &r["authorisation_type"],
                    "representation.authorisation_type",
                )?,
            }),
        },
        id,
    })
}

fn instant(unix: i64) -> Value {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .map_or_else(|| json!(unix), Value::String)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_shipped_grant_reads_back_as_itself() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let catalog = crate::catalog::Catalog::load_dir(&root.join("catalog")).unwrap();
        let index =
            super::super::PolicyIndex::load_dir(&root.join("policies"), &catalog, &|_| true)
                .unwrap();
        assert!(index.grants().count() > 5);
        for grant in index.grants() {
            let view = to_view(grant, 0);
            let back = from_view(&view).unwrap();
            assert_eq!(to_view(&back, 0), view, "{}", grant.id);
        }
        let mut request = index.grants().next().unwrap().clone();
        request.origin = GrantOrigin::ConnectionRequest {
            request_id: "CR-2026-0001".into(),
        };
        request.status = GrantStatus::Suspended;
        request.valid_until = None;
        let view = to_view(&request, 0);
        assert_eq!(to_view(&from_view(&view).unwrap(), 0), view);
    }

    #[test]
    fn a_broken_view_is_named_not_guessed() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let catalog = crate::catalog::Catalog::load_dir(&root.join("catalog")).unwrap();
        let index =
            super::super::PolicyIndex::load_dir(&root.join("policies"), &catalog, &|_| true)
                .unwrap();
        let view = to_view(index.grants().next().unwrap(), 0);
        for (field, bad) in [
            ("status", json!("maybe")),
            ("valid_from", json!("yesterday")),
            ("purposes", json!("x")),
            ("origin", json!({"kind": "rumour"})),
        ] {
            let mut broken = view.clone();
            broken[field] = bad;
            let error = from_view(&broken).unwrap_err();
            assert!(error.contains(field), "{field}: {error}");
        }
    }
}
