//! Label bounding and the exposition's names and units.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn vocabulary() -> Vocabulary {
    Vocabulary::new(
        ["apl-cahul", "asp-rsp"].into_iter(),
        [("asp-rsp", "asp-rsp/person-by-idnp")].into_iter(),
    )
}

fn observed<'a>(
    provider: Option<&'a str>,
    service: Option<&'a str>,
    consumer: Option<&'a str>,
    code: &'static str,
) -> Observed<'a> {
    Observed {
        provider,
        service,
        consumer,
        code,
        elapsed: Duration::from_micros(700),
        provider_elapsed: Some(Duration::from_micros(300)),
        audit_wait: Some(Duration::from_micros(200)),
        request_bytes: Some(0),
        response_bytes: 141,
        recorded: true,
    }
}

/// Input names → the labels counted: only the registry's and the catalog's
/// names survive.
#[test]
fn names_outside_the_registry_and_catalog_fold_into_unknown() {
    let v = vocabulary();
    let long = "x".repeat(200);
    let table: [(Observed<'_>, [&str; 3]); 6] = [
        (
            observed(
                Some("asp-rsp"),
                Some("asp-rsp/person-by-idnp"),
                Some("apl-cahul"),
                OK,
            ),
            ["asp-rsp", "asp-rsp/person-by-idnp", "apl-cahul"],
        ),
        // A made-up consumer (an MConnect-Client no one registered).
        (
            observed(
                Some("asp-rsp"),
                Some("asp-rsp/person-by-idnp"),
                Some("apl-made-up"),
                "client.unknown",
            ),
            ["asp-rsp", "asp-rsp/person-by-idnp", UNKNOWN],
        ),
        // A registered provider, a code it does not offer.
        (
            observed(
                Some("asp-rsp"),
                Some("asp-rsp/nope"),
                Some("apl-cahul"),
                "catalog.unknown_service",
            ),
            ["asp-rsp", UNKNOWN, "apl-cahul"],
        ),
        // A path naming no one.
        (
            observed(
                Some(long.as_str()),
                Some("x/y"),
                Some("apl-cahul"),
                "catalog.unknown_service",
            ),
            [UNKNOWN, UNKNOWN, "apl-cahul"],
        ),
        // Refused before the path was read.
        (
            observed(None, None, None, "signature.missing"),
            [UNKNOWN, UNKNOWN, UNKNOWN],
        ),
        // The service decides the provider label, not the path's text.
        (
            observed(
                Some("apl-cahul"),
                Some("asp-rsp/person-by-idnp"),
                Some("apl-cahul"),
                OK,
            ),
            ["asp-rsp", "asp-rsp/person-by-idnp", "apl-cahul"],
        ),
    ];
    for (input, [provider, service, consumer]) in table {
        let labels = v.labels(&input);
        assert_eq!(
            (
                labels.provider,
                labels.service,
                labels.consumer,
                labels.code
            ),
            (provider, service, consumer, input.code),
            "{input:?}"
        );
    }
}

#[test]
fn made_up_consumers_share_one_series() {
    let metrics = Metrics::new(seconds());
    let v = vocabulary();
    let names: Vec<String> = (0..100).map(|i| format!("apl-made-up-{i}")).collect();
    for name in &names {
        let o = observed(
            Some("asp-rsp"),
            Some("asp-rsp/person-by-idnp"),
            Some(name),
            "client.unknown",
        );
        metrics.count(&v, &o);
    }
    let text = encode(&metrics);
    assert_eq!(
        text.matches("mconnect_exchanges_total{").count(),
        1,
        "{text}"
    );
    assert!(
        text.contains(
            "mconnect_exchanges_total{provider=\"asp-rsp\",service=\"asp-rsp/person-by-idnp\",consumer=\"unknown\",code=\"client.unknown\"} 100\n"
        ),
        "{text}"
    );
    assert!(!text.contains("made-up"), "{text}");
}

fn encode(metrics: &Metrics) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, metrics.registry()).unwrap();
    out
}

#[test]
fn the_exposition_uses_base_units_and_prometheus_names() {
    let fsync = seconds();
    fsync.observe(0.003);
    let metrics = Metrics::new(fsync);
    let o = Observed {
        recorded: false,
        ..observed(
            Some("asp-rsp"),
            Some("asp-rsp/person-by-idnp"),
            Some("apl-cahul"),
            "rate.limited",
        )
    };
    metrics.count(&vocabulary(), &o);
    metrics.rules_reload_failed("invalid");
    let text = encode(&metrics);
    for line in [
        "# TYPE mconnect_exchanges counter\n",
        "# TYPE mconnect_exchange_duration_seconds histogram\n",
        "mconnect_exchange_duration_seconds_bucket{le=\"0.0001\",service=\"asp-rsp/person-by-idnp\"} 0\n",
        "mconnect_exchange_duration_seconds_bucket{le=\"0.001\",service=\"asp-rsp/person-by-idnp\"} 1\n",
        "mconnect_exchange_duration_seconds_bucket{le=\"10.0\",service=\"asp-rsp/person-by-idnp\"} 1\n",
        "mconnect_provider_duration_seconds_count{provider=\"asp-rsp\"} 1\n",
        "mconnect_audit_wait_seconds_count 1\n",
        "mconnect_audit_fsync_seconds_bucket{le=\"0.005\"} 1\n",
        "mconnect_request_body_bytes_bucket{le=\"64.0\",service=\"asp-rsp/person-by-idnp\"} 1\n",
        "mconnect_response_body_bytes_bucket{le=\"256.0\",service=\"asp-rsp/person-by-idnp\"} 1\n",
        "mconnect_exchanges_unrecorded_total{code=\"rate.limited\"} 1\n",
        "mconnect_rules_reload_failures_total{reason=\"invalid\"} 1\n",
    ] {
        assert!(text.contains(line), "{line:?} not in:\n{text}");
    }
    assert!(text.ends_with("# EOF\n"));
}
