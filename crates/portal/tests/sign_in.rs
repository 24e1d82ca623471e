//! Signing officials in and out over real HTTP: the development sign-in's
//! CSRF double-submit, session cookies a script cannot read or another site
//! send, a new session id at sign-in, sign-out that needs the session's own
//! token, timeouts, and no caching of a signed-in person's pages.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use mconnect_portal::session::{IDLE_TIMEOUT, Official};
use support::{Page, fetch, send, start, start_audited, start_with};

fn officials() -> Vec<Official> {
    vec![
        Official {
            idnp: "2000000000015".into(),
            name: "Ion Popescu".into(),
            organisation: "Primăria municipiului Cahul".into(),
            participant: "apl-cahul".into(),
            roles: vec!["official".into()],
        },
        Official {
            idnp: "2000000000026".into(),
            name: "Maria Rusu".into(),
            organisation: "Primăria municipiului Bălți".into(),
            participant: "apl-balti".into(),
            roles: vec!["official".into(), "administrator".into()],
        },
    ]
}

/// The value a `Set-Cookie` of `page` gives `name`, and its attributes.
fn set_cookie<'p>(page: &'p Page, name: &str) -> Option<(&'p str, &'p str)> {
    page.headers_named("set-cookie").into_iter().find_map(|c| {
        let (pair, attributes) = c.split_once(';').unwrap_or((c, ""));
        let (n, v) = pair.split_once('=')?;
        (n == name).then_some((v, attributes.trim()))
    })
}

/// The hidden CSRF field of a form page.
fn csrf_field(page: &Page) -> String {
    let at = page
        .body
        .find("name=\"csrf\" value=\"")
        .expect("a CSRF field");
    page.body[at + 19..at + 19 + 64].to_owned()
}

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

/// Signs in as `idnp` the way a browser does; returns the session cookie.
async fn sign_in(addr: SocketAddr, idnp: &str) -> String {
    let form = fetch(addr, "GET", "/sign-in", &[]).await;
    let (csrf_cookie, _) = set_cookie(&form, "__Host-mconnect_csrf").unwrap();
    let token = csrf_field(&form);
    let cookie = format!("__Host-mconnect_csrf={csrf_cookie}");
    let done = send(
        addr,
        "POST",
        "/sign-in",
        &[FORM, ("Cookie", &cookie)],
        &format!("csrf={token}&idnp={idnp}"),
    )
    .await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.header("location"), Some("/account"));
    let (session, _) = set_cookie(&done, "__Host-mconnect_session").unwrap();
    format!("__Host-mconnect_session={session}")
}

#[tokio::test]
async fn an_official_signs_in_sees_their_account_and_signs_out() {
    let (server, _) = start_with(officials()).await;
    let addr = server.local_addr();

    let form = fetch(addr, "GET", "/sign-in?lang=en", &[]).await;
    assert_eq!(form.status, 200);
    assert_eq!(form.header("cache-control"), Some("no-store"));
    assert!(form.body.contains("Development sign-in: sandbox only"));
    assert!(form.body.contains("Ion Popescu") && form.body.contains("Maria Rusu"));
    let (csrf_cookie, attributes) = set_cookie(&form, "__Host-mconnect_csrf").unwrap();
    assert_eq!(attributes, "Path=/; Secure; HttpOnly; SameSite=Strict");
    assert_eq!(
        csrf_field(&form),
        csrf_cookie,
        "double submit: the field is the cookie"
    );

    let session = sign_in(addr, "2000000000026").await;
    let account = fetch(addr, "GET", "/account?lang=en", &[("Cookie", &session)]).await;
    assert_eq!(account.status, 200);
    assert_eq!(account.header("cache-control"), Some("no-store"));
    assert!(account.body.contains("Maria Rusu"));
    assert!(account.body.contains("apl-balti"));
    assert!(account.body.contains("official, administrator"));
    // Signed in, the sign-in page leads to the account.
    let again = fetch(addr, "GET", "/sign-in", &[("Cookie", &session)]).await;
    assert_eq!(again.header("location"), Some("/account"));

    // Sign-out needs the session's own token.
    let forged = send(
        addr,
        "POST",
        "/sign-out",
        &[FORM, ("Cookie", &session)],
        "csrf=0000000000000000000000000000000000000000000000000000000000000000",
    )
    .await;
    assert_eq!(forged.status, 403);
    assert_eq!(
        fetch(addr, "GET", "/account", &[("Cookie", &session)])
            .await
            .status,
        200,
        "a forged sign-out changes nothing"
    );
    let token = csrf_field(&account);
    let out = send(
        addr,
        "POST",
        "/sign-out",
        &[FORM, ("Cookie", &session)],
        &format!("csrf={token}"),
    )
    .await;
    assert_eq!(out.status, 303);
    let (cleared, attributes) = set_cookie(&out, "__Host-mconnect_session").unwrap();
    assert_eq!(cleared, "");
    assert!(attributes.contains("Max-Age=0"));
    let gone = fetch(addr, "GET", "/account", &[("Cookie", &session)]).await;
    assert_eq!(gone.status, 303);
    assert_eq!(gone.header("location"), Some("/sign-in"));
    server.shutdown().await;
}

#[tokio::test]
async fn forms_without_their_token_or_from_nobody_listed_are_refused() {
    let (server, _) = start_with(officials()).await;
    let addr = server.local_addr();
    let form = fetch(addr, "GET", "/sign-in", &[]).await;
    let (csrf_cookie, _) = set_cookie(&form, "__Host-mconnect_csrf").unwrap();
    let cookie = format!("__Host-mconnect_csrf={csrf_cookie}");
    let other = "f".repeat(64);
    let cases: &[(&str, String, &str, u16)] = &[
        ("no token", cookie.clone(), "idnp=2000000000015", 403),
        (
            "no cookie",
            String::new(),
            &format!("csrf={csrf_cookie}&idnp=2000000000015"),
            403,
        ),
        (
            "another token",
            cookie.clone(),
            &format!("csrf={other}&idnp=2000000000015"),
            403,
        ),
        (
            "nobody chosen",
            cookie.clone(),
            &format!("csrf={csrf_cookie}"),
            400,
        ),
        (
            "somebody not listed",
            cookie.clone(),
            &format!("csrf={csrf_cookie}&idnp=2000000000037"),
            400,
        ),
    ];
    for (what, cookie, body, status) in cases {
        let mut headers = vec![FORM];
        if !cookie.is_empty() {
            headers.push(("Cookie", cookie));
        }
        let refused = send(addr, "POST", "/sign-in", &headers, body).await;
        assert_eq!(refused.status, *status, "{what}");
        assert!(
            set_cookie(&refused, "__Host-mconnect_session").is_none(),
            "{what}: no session"
        );
        assert!(
            refused.body.contains("error-summary"),
            "{what}: the error is summarised"
        );
    }
    // Not a form, or too large: refused before anything is read into a session.
    let json = send(
        addr,
        "POST",
        "/sign-in",
        &[("Content-Type", "application/json"), ("Cookie", &cookie)],
        "{}",
    )
    .await;
    assert_eq!(json.status, 415);
    let huge = format!("csrf={csrf_cookie}&idnp={}", "2".repeat(20_000));
    let big = send(
        addr,
        "POST",
        "/sign-in",
        &[FORM, ("Cookie", &cookie)],
        &huge,
    )
    .await;
    assert_eq!(big.status, 413);
    // Other methods stay refused.
    assert_eq!(
        send(addr, "POST", "/catalog", &[FORM], "").await.status,
        405
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_sign_in_replaces_the_session_id_and_idle_sessions_end() {
    let (server, portal) = start_with(officials()).await;
    let addr = server.local_addr();
    let first = sign_in(addr, "2000000000015").await;
    let second = sign_in(addr, "2000000000015").await;
    assert_ne!(first, second, "every sign-in gets a new id");

    // A browser that signs in again while holding a session loses the old one.
    let form = fetch(addr, "GET", "/sign-in", &[]).await;
    let (csrf_cookie, _) = set_cookie(&form, "__Host-mconnect_csrf").unwrap();
    let cookie = format!("{second}; __Host-mconnect_csrf={csrf_cookie}");
    let again = send(
        addr,
        "POST",
        "/sign-in",
        &[FORM, ("Cookie", &cookie)],
        &format!("csrf={csrf_cookie}&idnp=2000000000026"),
    )
    .await;
    assert_eq!(again.status, 303);
    assert_eq!(
        fetch(addr, "GET", "/account", &[("Cookie", &second)])
            .await
            .status,
        303
    );

    // Idle past the timeout: signed out.
    assert_eq!(
        fetch(addr, "GET", "/account", &[("Cookie", &first)])
            .await
            .status,
        200
    );
    portal
        .sessions()
        .age_all(IDLE_TIMEOUT + Duration::from_secs(1));
    let idle = fetch(addr, "GET", "/account", &[("Cookie", &first)]).await;
    assert_eq!(idle.status, 303);
    assert_eq!(idle.header("location"), Some("/sign-in"));
    server.shutdown().await;
}

#[tokio::test]
async fn without_a_development_file_nobody_can_sign_in() {
    let server = start().await;
    let addr = server.local_addr();
    let form = fetch(addr, "GET", "/sign-in?lang=en", &[]).await;
    assert_eq!(form.status, 200);
    assert!(
        form.body
            .contains("Sign-in is not configured on this portal.")
    );
    assert!(!form.body.contains("name=\"idnp\""));
    let (csrf_cookie, _) = set_cookie(&form, "__Host-mconnect_csrf").unwrap();
    let cookie = format!("__Host-mconnect_csrf={csrf_cookie}");
    let refused = send(
        addr,
        "POST",
        "/sign-in",
        &[FORM, ("Cookie", &cookie)],
        &format!("csrf={csrf_cookie}&idnp=2000000000015"),
    )
    .await;
    assert_eq!(refused.status, 403);
    assert!(set_cookie(&refused, "__Host-mconnect_session").is_none());
    server.shutdown().await;
}

#[tokio::test]
async fn sign_ins_are_recorded_first_and_refused_when_they_cannot_be() {
    let dir = tempfile::tempdir().unwrap();
    let (server, audit) = start_audited(officials(), dir.path()).await;
    let addr = server.local_addr();
    let session = sign_in(addr, "2000000000015").await;
    assert!(!session.is_empty());
    let log = audit.log().clone();
    let first = log.record(0).unwrap().unwrap().0;
    assert_eq!(first.event, "portal.sign_in");
    assert_eq!(first.calling_user.as_deref(), Some("2000000000015"));
    assert_eq!(first.consumer.as_deref(), Some("apl-cahul"));
    assert_eq!(first.service.as_deref(), Some("development"));

    // The log stops taking records (closed, as after a write failure): a
    // sign-in is then refused, with no session given.
    let size = log.tree_size();
    audit.clone().close().await.unwrap();
    let form = fetch(addr, "GET", "/sign-in", &[]).await;
    let (csrf_cookie, _) = set_cookie(&form, "__Host-mconnect_csrf").unwrap();
    let cookie = format!("__Host-mconnect_csrf={csrf_cookie}");
    let body = format!("csrf={}&idnp=2000000000026", csrf_field(&form));
    let refused = send(
        addr,
        "POST",
        "/sign-in",
        &[FORM, ("Cookie", cookie.as_str())],
        &body,
    )
    .await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(set_cookie(&refused, "__Host-mconnect_session").is_none());
    assert_eq!(log.tree_size(), size);
    server.shutdown().await;
}

#[tokio::test]
async fn a_resident_signs_in_for_their_own_page_only() {
    let (server, _) = start_with(officials()).await;
    let addr = server.local_addr();
    let form = fetch(addr, "GET", "/sign-in?lang=en", &[]).await;
    assert!(form.body.contains("Sign in as a resident"));
    let (csrf_cookie, _) = set_cookie(&form, "__Host-mconnect_csrf").unwrap();
    let cookie = format!("__Host-mconnect_csrf={csrf_cookie}");
    let token = csrf_field(&form);
    for bad in ["", "123", "2000000000016", "20000000000150"] {
        let page = send(
            addr,
            "POST",
            "/sign-in?lang=en",
            &[FORM, ("Cookie", cookie.as_str())],
            &format!("csrf={token}&kind=resident&resident_idnp={bad}"),
        )
        .await;
        assert_eq!(page.status, 400, "{bad}");
        assert!(page.body.contains("href=\"#resident-idnp\""), "{bad}");
        assert!(set_cookie(&page, "__Host-mconnect_session").is_none());
    }
    let done = send(
        addr,
        "POST",
        "/sign-in",
        &[FORM, ("Cookie", cookie.as_str())],
        &format!("csrf={token}&kind=resident&resident_idnp=2000000000037"),
    )
    .await;
    assert_eq!(done.status, 303);
    let (id, _) = set_cookie(&done, "__Host-mconnect_session").unwrap();
    let session = format!("__Host-mconnect_session={id}");
    let account = fetch(
        addr,
        "GET",
        "/account?lang=en",
        &[("Cookie", session.as_str())],
    )
    .await;
    assert!(account.body.contains("2000000000037"));
    assert!(account.body.contains("href=\"/my-data\""));
    for path in ["/lookup", "/lookup/check", "/admin/officials"] {
        let page = fetch(addr, "GET", path, &[("Cookie", session.as_str())]).await;
        assert_eq!(page.status, 403, "{path}");
        assert_eq!(page.header("cache-control"), Some("no-store"), "{path}");
    }
    // Without a history reader configured the page says so, plainly.
    let history = fetch(
        addr,
        "GET",
        "/my-data?lang=en",
        &[("Cookie", session.as_str())],
    )
    .await;
    assert_eq!(history.status, 503);
    assert!(history.body.contains("The history cannot be read now"));
    server.shutdown().await;
}
