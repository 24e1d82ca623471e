//! Notification templates: a subject and a body per language (ro, ru, en)
//! with `{name}` placeholders filled from the request's `params`.
//!
//! Invariant: rendering never leaves a placeholder unfilled — a missing
//! parameter is an error the caller sees (`notification.param_missing`).

/// A template in the three languages.
pub struct Template {
    /// Id the caller names.
    pub id: &'static str,
    /// `(language, subject, body)`.
    pub texts: &'static [(&'static str, &'static str, &'static str)],
}

/// The built-in templates of the reference backend.
pub const TEMPLATES: &[Template] = &[
    Template {
        id: "generic",
        texts: &[
            ("ro", "{subject}", "{body}"),
            ("ru", "{subject}", "{body}"),
            ("en", "{subject}", "{body}"),
        ],
    },
    Template {
        id: "payment-received",
        texts: &[
            (
                "ro",
                "Plată primită pentru comanda {order_key}",
                "Comanda {order_key} ({service}) a fost achitată integral prin MPay: {amount} {currency}, plata {payment_id}, la {paid_at}.",
            ),
            (
                "ru",
                "Получена оплата по заказу {order_key}",
                "Заказ {order_key} ({service}) полностью оплачен через MPay: {amount} {currency}, платёж {payment_id}, {paid_at}.",
            ),
            (
                "en",
                "Payment received for order {order_key}",
                "Order {order_key} ({service}) was paid in full through MPay: {amount} {currency}, payment {payment_id}, at {paid_at}.",
            ),
        ],
    },
    Template {
        id: "document-ready",
        texts: &[
            (
                "ro",
                "Documentul {document} este gata",
                "Stimate(ă) {name}, documentul {document} poate fi ridicat de la {place}.",
            ),
            (
                "ru",
                "Документ {document} готов",
                "Уважаемый(ая) {name}, документ {document} можно получить в {place}.",
            ),
            (
                "en",
                "Document {document} is ready",
                "Dear {name}, document {document} can be collected at {place}.",
            ),
        ],
    },
];

/// Why a template could not be rendered.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    /// No template by that id.
    #[error("unknown template `{0}`: use generic, payment-received or document-ready")]
    UnknownTemplate(String),
    /// Language not ro, ru or en.
    #[error("unknown language `{0}`: use ro, ru or en")]
    UnknownLanguage(String),
    /// A placeholder without a value.
    #[error("parameter `{0}` is missing: the template needs it")]
    ParamMissing(String),
}

/// Renders `(subject, body)` of a template in a language.
pub fn render(
    template: &str,
    language: &str,
    params: &serde_json::Map<String, serde_json::Value>,
) -> Result<(String, String), RenderError> {
    let t = TEMPLATES
        .iter()
        .find(|t| t.id == template)
        .ok_or_else(|| RenderError::UnknownTemplate(template.to_string()))?;
    let (_, subject, body) = t
        .texts
        .iter()
        .find(|(lang, _, _)| *lang == language)
        .ok_or_else(|| RenderError::UnknownLanguage(language.to_string()))?;
    Ok((fill(subject, params)?, fill(body, params)?))
}

/// Replaces each `{name}` with its parameter (strings as they are, other
/// JSON values in their JSON form).
fn fill(
    text: &str,
    params: &serde_json::Map<String, serde_json::Value>,
) -> Result<String, RenderError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return Ok(out);
        };
        let name = &after[..close];
        match params.get(name) {
            Some(serde_json::Value::String(s)) => out.push_str(s),
            Some(v) => out.push_str(&v.to_string()),
            None => return Err(RenderError::ParamMissing(name.to_string())),
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    /// A case: template, language, expected subject and body or error.
    type Case = (
        &'static str,
        &'static str,
        Result<(&'static str, &'static str), RenderError>,
    );

    #[test]
    fn table() {
        let p = params(json!({"subject": "S", "body": "B {x}", "n": 3}));
        let cases: &[Case] = &[
            ("generic", "ro", Ok(("S", "B {x}"))),
            (
                "nope",
                "ro",
                Err(RenderError::UnknownTemplate("nope".into())),
            ),
            (
                "generic",
                "de",
                Err(RenderError::UnknownLanguage("de".into())),
            ),
            (
                "document-ready",
                "en",
                Err(RenderError::ParamMissing("document".into())),
            ),
        ];
        for (template, lang, expected) in cases {
            let got = render(template, lang, &p);
            let got = got
                .as_ref()
                .map(|(s, b)| (s.as_str(), b.as_str()))
                .map_err(Clone::clone);
            assert_eq!(&got, expected, "{template}/{lang}");
        }
    }

    #[test]
    fn numbers_are_written_as_json() {
        let p = params(
            json!({"order_key": "K1", "service": "s", "amount": 150.5, "currency": "MDL", "payment_id": "P", "paid_at": "t"}),
        );
        let (subject, body) = render("payment-received", "en", &p).unwrap_or_default();
        assert_eq!(subject, "Payment received for order K1");
        assert!(body.contains("150.5 MDL"), "{body}");
    }
}
