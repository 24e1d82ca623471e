//! The catalog as DCAT-AP 3 JSON-LD: one `dcat:Catalog`, a `dcat:Dataset` per
//! register and a `dcat:DataService` per service, with the legal acts as
//! `dcatap:applicableLegislation` pointing at ELI `eli:LegalResource`s.
//!
//! Invariant: the rendering is a pure function of the catalog; identifiers are
//! URNs (`urn:mconnect:register:{id}`, `urn:mconnect:service:{provider}/{code}`)
//! so the output does not depend on where the broker is deployed.

use serde_json::{Map, Value, json};

use super::{Catalog, LegalAct, Register, Service, Text};

/// Renders the catalog as a DCAT-AP JSON-LD document.
pub fn to_dcat_ap(catalog: &Catalog) -> Value {
    let datasets: Vec<Value> = catalog.registers().map(dataset).collect();
    let services: Vec<Value> = catalog
        .services()
        .map(|service| data_service(service, catalog.register(&service.register)))
        .collect();
    json!({
        "@context": {
            "dcat": "http://www.w3.org/ns/dcat#",
            "dct": "http://purl.org/dc/terms/",
            "dcatap": "http://data.europa.eu/r5r/",
            "eli": "http://data.europa.eu/eli/ontology#",
            "foaf": "http://xmlns.com/foaf/0.1/",
            "vcard": "http://www.w3.org/2006/vcard/ns#",
            "adms": "http://www.w3.org/ns/adms#",
            "owl": "http://www.w3.org/2002/07/owl#",
            "dcatap:applicableLegislation": {"@type": "@id"},
            "dcat:servesDataset": {"@type": "@id"},
            "dcat:dataset": {"@container": "@set"},
            "dcat:service": {"@container": "@set"}
        },
        "@id": "urn:mconnect:catalog",
        "@type": "dcat:Catalog",
        "dct:title": [
            lang("Catalogul semantic MConnect", "ro"),
            lang("Семантический каталог MConnect", "ru"),
            lang("MConnect semantic catalogue", "en")
        ],
        "dct:description": [
            lang("Registrele de stat și serviciile disponibile prin platforma de interoperabilitate (Legea nr. 142/2018, art. 10).", "ro"),
            lang("Государственные регистры и услуги, доступные через платформу интероперабельности (Закон № 142/2018, ст. 10).", "ru"),
            lang("State registers and services available through the interoperability platform (Law 142/2018, art. 10).", "en")
        ],
        "dct:publisher": {
            "@type": "foaf:Agent",
            "foaf:name": "Agenția de Guvernare Electronică",
            "dct:identifier": "1003600000017"
        },
        "dcat:dataset": datasets,
        "dcat:service": services
    })
}

fn dataset(register: &Register) -> Value {
    let mut contact = Map::new();
    contact.insert("@type".into(), json!("vcard:Kind"));
    contact.insert("vcard:fn".into(), json!(register.contact.name));
    contact.insert(
        "vcard:hasEmail".into(),
        json!({"@id": format!("mailto:{}", register.contact.email)}),
    );
    if let Some(phone) = &register.contact.phone {
        contact.insert(
            "vcard:hasTelephone".into(),
            json!({"@id": format!("tel:{}", phone.replace(' ', ""))}),
        );
    }
    if let Some(url) = &register.contact.url {
        contact.insert("vcard:hasURL".into(), json!({"@id": url}));
    }
    json!({
        "@id": format!("urn:mconnect:register:{}", register.id),
        "@type": "dcat:Dataset",
        "dct:identifier": register.id,
        "dct:title": texts(&register.name),
        "dct:description": texts(&register.description),
        "dct:publisher": {
            "@type": "foaf:Agent",
            "foaf:name": texts(&register.owner.name),
            "dct:identifier": register.owner.idno
        },
        "dcat:contactPoint": contact,
        "dcat:keyword": register.personal_data_categories,
        "dcatap:applicableLegislation": register.legal_acts.iter().map(legal_resource).collect::<Vec<_>>(),
        "dct:accessRights": {"@id": "http://publications.europa.eu/resource/authority/access-right/RESTRICTED"}
    })
}

fn data_service(service: &Service, register: Option<&Register>) -> Value {
    let legislation: Vec<Value> = register
        .map(|r| r.legal_acts.iter().map(legal_resource).collect())
        .unwrap_or_default();
    json!({
        "@id": format!("urn:mconnect:service:{}", service.key),
        "@type": "dcat:DataService",
        "dct:identifier": service.key,
        "dct:title": texts(&service.name),
        "dct:description": texts(&service.description),
        "owl:versionInfo": service.version,
        "adms:status": service.status.as_str(),
        // The admin API's description of the service, schemas included.
        "dcat:endpointDescription": format!("/v1/services/{}", service.key),
        "dcat:servesDataset": format!("urn:mconnect:register:{}", service.register),
        "dcatap:applicableLegislation": legislation,
        "dct:accessRights": {"@id": "http://publications.europa.eu/resource/authority/access-right/RESTRICTED"}
    })
}

fn legal_resource(act: &LegalAct) -> Value {
    let id = act
        .link
        .clone()
        .unwrap_or_else(|| format!("urn:mconnect:legal:{}", act.id));
    json!({
        "@id": id,
        "@type": "eli:LegalResource",
        "eli:id_local": act.id,
        "eli:title": texts(&act.title),
        "eli:description": act.article
    })
}

fn texts(text: &Text) -> Value {
    json!([
        lang(&text.ro, "ro"),
        lang(&text.ru, "ru"),
        lang(&text.en, "en")
    ])
}

fn lang(value: &str, language: &str) -> Value {
    json!({"@value": value, "@language": language})
}
