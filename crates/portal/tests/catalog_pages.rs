//! The public catalog as a browser gets it: the portal served on 127.0.0.1
//! by the SDK's server, pages fetched over real HTTP/1.1, and what every
//! page must carry checked on each — the language, the switcher, the
//! security headers — plus search, the service page, errors and escaping.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;

use mconnect::catalog::Catalog;
use mconnect_portal::security::CONTENT_SECURITY_POLICY;
use support::{Page, fetch, start};

/// What every page of the portal must carry.
fn assert_hardened(page: &Page, lang: &str, what: &str) {
    assert_eq!(
        page.header("content-security-policy"),
        Some(CONTENT_SECURITY_POLICY),
        "{what}"
    );
    assert!(!CONTENT_SECURITY_POLICY.contains("unsafe-inline"));
    assert_eq!(
        page.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(page.header("x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(
        page.header("referrer-policy"),
        Some("no-referrer"),
        "{what}"
    );
    assert_eq!(page.header("content-language"), Some(lang), "{what}");
    assert!(
        page.body.contains(&format!("<html lang=\"{lang}\">")),
        "{what}"
    );
    // No inline script or style anywhere: the CSP would block it.
    assert!(!page.body.contains("<script"), "{what}");
    assert!(!page.body.contains("style="), "{what}");
    assert!(!page.body.contains("<style"), "{what}");
    // The switcher offers the two other languages.
    for other in ["ro", "ru", "en"].iter().filter(|l| **l != lang) {
        assert!(
            page.body.contains(&format!("hreflang=\"{other}\"")),
            "{what}: no switch to {other}"
        );
    }
}

#[tokio::test]
async fn every_page_in_every_language_carries_the_security_headers_and_the_switcher() {
    let server = start().await;
    let addr = server.local_addr();
    let pages = [
        ("/catalog", 200),
        ("/catalog?q=asigurari", 200),
        ("/catalog/services/cnas/insurance-record", 200),
        ("/catalog/services/nobody/nothing", 404),
        ("/nowhere", 404),
    ];
    let headings = [
        ("ro", "Catalogul semantic"),
        ("ru", "Семантический каталог"),
        ("en", "Semantic catalog"),
    ];
    for (lang, heading) in headings {
        for (path, status) in pages {
            let sep = if path.contains('?') { '&' } else { '?' };
            let target = format!("{path}{sep}lang={lang}");
            let page = fetch(addr, "GET", &target, &[]).await;
            assert_eq!(page.status, status, "{target}");
            assert_hardened(&page, lang, &target);
            // The switch is remembered, and only in a cookie a script cannot read.
            let cookie = page.header("set-cookie").unwrap_or_default();
            assert_eq!(
                cookie,
                format!(
                    "mconnect_lang={lang}; Path=/; Max-Age=31536000; Secure; HttpOnly; SameSite=Lax"
                ),
                "{target}"
            );
        }
        let page = fetch(
            addr,
            "GET",
            "/catalog",
            &[("Cookie", &format!("mconnect_lang={lang}"))],
        )
        .await;
        assert!(page.body.contains(heading), "{lang}: {heading}");
        assert!(
            page.headers_named("set-cookie").is_empty(),
            "no switch, no cookie"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn search_ignores_diacritics_and_finds_in_every_language() {
    let server = start().await;
    let addr = server.local_addr();
    let found =
        |body: &str, href: &str| body.contains(&format!("href=\"/catalog/services/{href}\""));
    let cases: &[(&str, &str, bool)] = &[
        // Romanian without its diacritics finds the CNAS register's service.
        ("asigurari", "cnas/insurance-record", true),
        ("ASIGURĂRI", "cnas/insurance-record", true),
        // Russian and English words find the same services.
        ("налог", "sfs/tax-debts", true),
        ("vehicles", "asp-vehicule/vehicles-by-owner", true),
        // A search narrows the list.
        ("vehicles", "sfs/tax-debts", false),
        ("zzzz-nothing", "sfs/tax-debts", false),
    ];
    for (words, href, expected) in cases {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("q", words);
        let page = fetch(addr, "GET", &format!("/catalog?{}", query.finish()), &[]).await;
        assert_eq!(page.status, 200, "{words}");
        assert_eq!(found(&page.body, href), *expected, "{words} → {href}");
    }
    let none = fetch(addr, "GET", "/catalog?q=zzzz-nothing&lang=en", &[]).await;
    assert!(none.body.contains("No service matches the search."));
    assert!(none.body.contains("Services found: 0"));
    // Retired services are not offered; everything else is, grouped by register.
    let all = fetch(addr, "GET", "/catalog", &[]).await;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let catalog = Catalog::load_dir(&root.join("catalog")).unwrap();
    for service in catalog.services() {
        let listed = found(&all.body, &format!("{}/{}", service.provider, service.code));
        assert_eq!(
            listed,
            service.status != mconnect::catalog::Lifecycle::Retired,
            "{}",
            service.key
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_service_page_says_what_it_returns_under_which_law_and_how_personal() {
    let server = start().await;
    let addr = server.local_addr();
    let page = fetch(
        addr,
        "GET",
        "/catalog/services/cnas/insurance-record?lang=en",
        &[],
    )
    .await;
    assert_eq!(page.status, 200);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let catalog = Catalog::load_dir(&root.join("catalog")).unwrap();
    let service = catalog.service("cnas", "insurance-record").unwrap();
    let register = catalog.register(&service.register).unwrap();
    let escape = |s: &str| {
        s.replace('&', "&#38;")
            .replace('"', "&#34;")
            .replace('\'', "&#39;")
            .replace('<', "&#60;")
            .replace('>', "&#62;")
    };
    assert!(
        page.body.contains(&escape(&service.name.en)),
        "the service's name"
    );
    assert!(
        page.body.contains(&escape(&register.name.en)),
        "its register"
    );
    for element in &service.data_elements {
        assert!(
            page.body.contains(&escape(&element.path)),
            "data element {}",
            element.path
        );
        assert!(
            page.body.contains(&escape(&element.meaning.en)),
            "meaning of {}",
            element.path
        );
    }
    for act in &register.legal_acts {
        assert!(
            page.body.contains(&escape(&act.title.en)),
            "legal act {}",
            act.id
        );
    }
    assert!(page.body.contains("Personal data"));
    assert!(page.body.contains("Response schema"));
    assert!(page.body.contains("href=\"/catalog/dcat.jsonld\""));
    // The DCAT-AP description is JSON-LD a harvester can read.
    let dcat = fetch(addr, "GET", "/catalog/dcat.jsonld", &[]).await;
    assert_eq!(dcat.status, 200);
    assert_eq!(dcat.header("content-type"), Some("application/ld+json"));
    let doc: serde_json::Value = serde_json::from_str(&dcat.body).unwrap();
    assert!(doc.get("@context").is_some());
    server.shutdown().await;
}

#[tokio::test]
async fn input_is_escaped_and_unknown_methods_are_refused() {
    let server = start().await;
    let addr = server.local_addr();
    let page = fetch(
        addr,
        "GET",
        "/catalog?q=%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E&lang=%3Cx%3E",
        &[],
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(
        !page.body.contains("<script>"),
        "the search words come back escaped"
    );
    assert!(page.body.contains("&#60;script&#62;"));
    assert_hardened(&page, "ro", "an unknown language falls back to Romanian");
    let post = fetch(addr, "POST", "/catalog", &[]).await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert_hardened(&post, "ro", "405");
    let root = fetch(addr, "GET", "/", &[]).await;
    assert_eq!(root.status, 303);
    assert_eq!(root.header("location"), Some("/catalog"));
    let css = fetch(addr, "GET", "/assets/portal.css", &[]).await;
    assert_eq!(css.status, 200);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    server.shutdown().await;
}
