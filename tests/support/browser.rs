//! A browser on the sandbox's portal, for tests that walk its pages: HTTPS
//! trusting the sandbox CA, no client certificate, and the cookies it was
//! given, as a person's browser keeps them.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use super::Bus;

/// A browser with its cookies.
pub struct Browser {
    base: String,
    client: mconnect_sdk::tls::HttpsClient,
    cookies: Vec<(String, String)>,
}

/// One answer as the browser saw it.
pub struct Seen {
    pub status: u16,
    pub location: Option<String>,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Browser {
    /// A browser pointed at the sandbox's portal.
    pub fn new(bus: &Bus) -> Browser {
        let manifest = &bus.sandbox.manifest;
        let ca = std::fs::read_to_string(bus.dir.path().join(&manifest.ca)).unwrap();
        let roots = mconnect_sdk::parse_certs(&ca).unwrap();
        let tls = mconnect_sdk::tls::server_auth_client_config(&roots).unwrap();
        Browser {
            base: manifest.portal.as_ref().unwrap().url.clone(),
            client: mconnect_sdk::tls::https_client(
                &tls,
                mconnect_sdk::tls::ClientOptions::default(),
            ),
            cookies: Vec::new(),
        }
    }

    /// Asks for `path`, posting `form` (URL-encoded) when given.
    pub async fn go(&mut self, method: &str, path: &str, form: Option<&str>) -> Seen {
        let cookie: Vec<String> = self
            .cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("cookie", cookie.join("; "));
        if form.is_some() {
            request = request.header("content-type", "application/x-www-form-urlencoded");
        }
        let body = Bytes::from(form.unwrap_or_default().to_owned());
        let response = self
            .client
            .request(request.body(Full::new(body)).unwrap())
            .await
            .unwrap();
        for set in response.headers().get_all("set-cookie") {
            let pair = set.to_str().unwrap().split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != name);
            if !value.is_empty() {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Seen {
            status,
            location,
            headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    /// Posts `fields` as a form, with the CSRF token of `page` first.
    pub async fn post(&mut self, path: &str, page: &Seen, fields: &[(&str, &str)]) -> Seen {
        let token = csrf(&page.body);
        let form: Vec<String> = std::iter::once(("csrf", token.as_str()))
            .chain(fields.iter().copied())
            .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
            .collect();
        self.go("POST", path, Some(&form.join("&"))).await
    }

    /// Signs a resident in with the development sign-in's resident form;
    /// the answer is returned (a refusal is a page, not a panic).
    pub async fn sign_in_resident(&mut self, idnp: &str) -> Seen {
        let form = self.go("GET", "/sign-in", None).await;
        let token = csrf(&form.body);
        self.go(
            "POST",
            "/sign-in",
            Some(&format!("csrf={token}&kind=resident&resident_idnp={idnp}")),
        )
        .await
    }

    /// Signs an official in with the development sign-in.
    pub async fn sign_in(&mut self, idnp: &str) {
        let form = self.go("GET", "/sign-in", None).await;
        let token = csrf(&form.body);
        let done = self
            .go(
                "POST",
                "/sign-in",
                Some(&format!("csrf={token}&idnp={idnp}")),
            )
            .await;
        assert_eq!(done.status, 303, "{}", done.body);
    }
}

/// The CSRF field of a form page.
pub fn csrf(body: &str) -> String {
    let at = body
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("a form with its CSRF token: {body}"));
    body[at + 19..at + 19 + 64].to_owned()
}

/// `application/x-www-form-urlencoded` encoding of one name or value.
pub fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}
