//! What an exchange counts for `/metrics`: its series, under labels the
//! registry and the catalog bound, and its latencies and sizes.

use super::*;

/// The broker's own metrics as OpenMetrics text.
fn exposition(h: &Harness) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, h.broker.metrics().registry()).unwrap();
    out
}

fn series(text: &str, name: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn exchanges_are_counted_by_provider_service_consumer_and_code() {
    let h = harness();
    h.send(Some(&h.consumer), &h.person()).await;
    h.send(Some(&h.consumer), &h.search()).await;
    // Registered, no grant.
    let denied = Ask {
        client: OTHER,
        signer: h.other.clone(),
        ..h.person()
    };
    h.send(Some(&h.other), &denied)
        .await
        .assert_refused(403, "policy.denied", "no grant");
    let text = exposition(&h);
    let counted = series(&text, "mconnect_exchanges_total");
    for line in [
        format!(
            "mconnect_exchanges_total{{provider=\"{PROVIDER}\",service=\"{PROVIDER}/person\",consumer=\"{CONSUMER}\",code=\"ok\"}} 1"
        ),
        format!(
            "mconnect_exchanges_total{{provider=\"{PROVIDER}\",service=\"{PROVIDER}/search\",consumer=\"{CONSUMER}\",code=\"ok\"}} 1"
        ),
        format!(
            "mconnect_exchanges_total{{provider=\"{PROVIDER}\",service=\"{PROVIDER}/person\",consumer=\"{OTHER}\",code=\"policy.denied\"}} 1"
        ),
    ] {
        assert!(counted.contains(&line), "{line} not in {counted:#?}");
    }
    assert_eq!(counted.len(), 3, "{counted:#?}");
    // Latency of the whole exchange for all three, of the provider leg for
    // the two forwarded, of the audit wait for all three; body sizes.
    let person = format!("service=\"{PROVIDER}/person\"");
    for (line, want) in [
        (
            format!("mconnect_exchange_duration_seconds_count{{{person}}} "),
            "2",
        ),
        (
            format!("mconnect_provider_duration_seconds_count{{provider=\"{PROVIDER}\"}} "),
            "2",
        ),
        ("mconnect_audit_wait_seconds_count ".to_string(), "3"),
        (
            format!("mconnect_request_body_bytes_count{{service=\"{PROVIDER}/search\"}} "),
            "1",
        ),
        (
            format!("mconnect_request_body_bytes_sum{{service=\"{PROVIDER}/search\"}} "),
            &format!("{}.0", h.search().body.len()),
        ),
        (
            format!("mconnect_response_body_bytes_count{{{person}}} "),
            "2",
        ),
    ] {
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .unwrap_or_else(|| panic!("{line} missing:\n{text}"));
        assert_eq!(value, want, "{line}");
    }
    // Every exchange here has its own record.
    assert!(
        !text.contains("mconnect_exchanges_unrecorded_total{"),
        "{text}"
    );
}

/// An unknown consumer, provider or service cannot create a series: each
/// made-up name is counted under `unknown`.
#[tokio::test]
async fn made_up_names_cannot_create_series() {
    let h = harness();
    let names: Vec<&'static str> = (0..20)
        .map(|i| &*format!("apl-made-up-{i}").leak())
        .collect();
    for name in &names {
        // A certificate registered to no one, naming a made-up client.
        let ask = Ask {
            client: name,
            signer: h.stranger.clone(),
            ..h.person()
        };
        h.send(Some(&h.stranger), &ask)
            .await
            .assert_refused(401, "client.unknown", "stranger");
        // A registered consumer calling a made-up provider and service.
        let ask = Ask {
            path: format!("/r1/{name}/{name}?idnp={SUBJECT}"),
            ..h.person()
        };
        h.send(Some(&h.consumer), &ask).await.assert_refused(
            404,
            "catalog.unknown_service",
            "made-up service",
        );
        // A registered provider, a made-up service code.
        let ask = Ask {
            path: format!("/r1/{PROVIDER}/{name}?idnp={SUBJECT}"),
            ..h.person()
        };
        h.send(Some(&h.consumer), &ask).await.assert_refused(
            404,
            "catalog.unknown_service",
            "made-up code",
        );
    }
    let text = exposition(&h);
    assert!(!text.contains("made-up"), "{text}");
    let counted = series(&text, "mconnect_exchanges_total");
    for line in [
        "mconnect_exchanges_total{provider=\"unknown\",service=\"unknown\",consumer=\"unknown\",code=\"client.unknown\"} 20".to_string(),
        format!("mconnect_exchanges_total{{provider=\"unknown\",service=\"unknown\",consumer=\"{CONSUMER}\",code=\"catalog.unknown_service\"}} 20"),
        format!("mconnect_exchanges_total{{provider=\"{PROVIDER}\",service=\"unknown\",consumer=\"{CONSUMER}\",code=\"catalog.unknown_service\"}} 20"),
    ] {
        assert!(counted.contains(&line), "{line} not in {counted:#?}");
    }
    assert_eq!(counted.len(), 3, "{counted:#?}");
    assert_eq!(
        series(&text, "mconnect_exchange_duration_seconds_count").len(),
        1,
        "only service=\"unknown\": {text}"
    );
}
