//! The auditor's side of the audit API (PROTOCOL.md section 7): reads
//! through the admin listener, as an auditor participant, under a declared
//! legal basis and purpose; checks every signed tree head with the broker
//! certificate and every inclusion proof against a signed root; and builds
//! the evidence bundle. `mconnect audit query|export|prove` and the
//! portal's auditor pages both read the log through [`AuditReader`], so an
//! export from either is the same bundle.
//!
//! The bundle is JSON lines: first `{"tree_head": {...}}` (a signed tree
//! head, as `GET /v1/audit/tree-head` answers), then one line per record,
//! `{"seq", "record", "leaf", "tree_size", "audit_path"}`, whose inclusion
//! proof leads from the record's leaf to that head's root.
//!
//! Invariants:
//! - nothing the broker answers is taken on trust: a tree head is returned
//!   only once its signature verifies with the broker certificate, a proof
//!   only once it leads to the signed root, a record only once it is the
//!   record its leaf bytes encode;
//! - every read carries the basis and purpose (and, when given, the calling
//!   user), so the broker decides and audits it like any other;
//! - no I/O but the admin API's: the bundle goes to a callback.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderValue, Method, StatusCode};
use serde_json::{Value, json};

use super::merkle::leaf_hash;
use super::{AuditRecord, Hash, SignedTreeHead, verify_inclusion, verify_tree_head};
use crate::connect::client::AdminClient;
use crate::exchange::call::headers;

/// How long one read may take before it is given up.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Checks a tree head signature: `(keyid, message, signature)`; see
/// [`super::certificate_verifier`].
pub type TreeHeadCheck = dyn Fn(&str, &[u8], &[u8]) -> Result<(), String> + Send + Sync;

/// Why a read of the audit log gave nothing usable.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The broker refused the read (its problem+json).
    #[error("{path}: {status} {code}: {detail}")]
    Refused {
        /// What was asked.
        path: String,
        /// The HTTP status.
        status: StatusCode,
        /// The stable problem code (`policy.basis_not_allowed`, ...).
        code: String,
        /// The broker's explanation.
        detail: String,
    },
    /// The admin API could not be reached or did not answer in time.
    #[error("calling {url}: {detail}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// The answer is not in the documented form.
    #[error("{0}")]
    Invalid(String),
    /// A signature, proof or leaf does not check out.
    #[error("{0}")]
    Unverified(String),
    /// The bundle could not be written.
    #[error("writing the evidence: {0}")]
    Write(#[from] std::io::Error),
}

/// A search of the log (`GET /v1/audit/records`); `None` filters nothing.
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// IDNP/IDNO the data is about.
    pub subject: Option<String>,
    /// Consumer participant id.
    pub client: Option<String>,
    /// Service as `provider/code`.
    pub service: Option<String>,
    /// Event type (`exchange`, `audit.read`, ...).
    pub event: Option<String>,
    /// Earliest time, RFC 3339 or a date, inclusive.
    pub from: Option<String>,
    /// Latest time, RFC 3339 or a date, exclusive.
    pub to: Option<String>,
    /// Records per page (1 to 1000).
    pub limit: usize,
}

impl Search {
    /// The search's address, continuing from `cursor` when given.
    pub fn path(&self, cursor: Option<&str>) -> String {
        let mut query = vec![format!("limit={}", self.limit)];
        let mut put = |name: &str, value: Option<&str>| {
            if let Some(v) = value {
                query.push(format!("{name}={}", percent(v)));
            }
        };
        put("subject", self.subject.as_deref());
        put("client", self.client.as_deref());
        put("service", self.service.as_deref());
        put("event", self.event.as_deref());
        put("from", self.from.as_deref());
        put("to", self.to.as_deref());
        put("cursor", cursor);
        format!("/v1/audit/records?{}", query.join("&"))
    }
}

/// One record as the log serves it, checked: the record is the one its
/// leaf bytes encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its sequence number (leaf index, `MConnect-Audit-Seq`).
    pub seq: u64,
    /// The record.
    pub record: AuditRecord,
    /// The exact leaf bytes that were hashed.
    pub leaf: Vec<u8>,
    /// In a cluster search, the broker whose log holds it (its seq,
    /// record and proofs are that broker's: ask its admin API).
    pub broker: Option<String>,
}

impl Entry {
    /// Reads an item of `{"seq", "record", "leaf"}` and checks that the
    /// record shown is the leaf's record.
    pub fn from_item(item: &Value) -> Result<Entry, ReadError> {
        let seq = item["seq"]
            .as_u64()
            .ok_or_else(|| ReadError::Invalid("an audit item without seq".into()))?;
        let leaf = item["leaf"]
            .as_str()
            .and_then(|l| STANDARD.decode(l).ok())
            .ok_or_else(|| ReadError::Invalid(format!("record {seq}: no base64 leaf")))?;
        let record = AuditRecord::from_canonical_bytes(&leaf)
            .map_err(|e| ReadError::Unverified(format!("record {seq}: {e}")))?;
        if serde_json::to_value(&record).ok().as_ref() != Some(&item["record"]) {
            return Err(ReadError::Unverified(format!(
                "record {seq}: the record shown differs from its leaf bytes"
            )));
        }
        let broker = item["broker"].as_str().map(str::to_owned);
        Ok(Entry {
            seq,
            record,
            leaf,
            broker,
        })
    }

    /// The leaf's RFC 9162 hash.
    pub fn leaf_hash(&self) -> Hash {
        leaf_hash(&self.leaf)
    }
}

/// One page of a search.
#[derive(Debug, Clone)]
pub struct SearchPage {
    /// The records, newest first, each checked against its leaf.
    pub entries: Vec<Entry>,
    /// Where the next page starts, if there is one.
    pub next_cursor: Option<String>,
    /// The page as the broker sent it.
    pub json: Value,
}

/// A record proved: its inclusion proof leads to the root of a tree head
/// whose signature verified with the broker certificate.
#[derive(Debug, Clone)]
pub struct Proven {
    /// The record.
    pub entry: Entry,
    /// The signed tree head it was proved against.
    pub tree_head: SignedTreeHead,
    /// The audit path from its leaf to the head's root.
    pub audit_path: Vec<Hash>,
}

impl Proven {
    /// The evidence bundle of this one record (JSON lines, see the module).
    pub fn bundle(&self) -> String {
        format!(
            "{}\n{}\n",
            bundle_head(&self.tree_head),
            bundle_line(&self.entry, &self.tree_head, &self.audit_path)
        )
    }
}

/// The first line of a bundle: the signed tree head every proof leads to.
pub fn bundle_head(sth: &SignedTreeHead) -> Value {
    json!({ "tree_head": sth })
}

/// A record's line of a bundle, with its inclusion proof in `sth`.
pub fn bundle_line(entry: &Entry, sth: &SignedTreeHead, path: &[Hash]) -> Value {
    json!({
        "seq": entry.seq,
        "record": entry.record,
        "leaf": STANDARD.encode(&entry.leaf),
        "tree_size": sth.tree_size,
        "audit_path": path.iter().map(|h| STANDARD.encode(h)).collect::<Vec<_>>(),
    })
}

/// What [`AuditReader::export`] wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The tree head of the bundle.
    pub tree_head: SignedTreeHead,
    /// Records written (each with its proof).
    pub records: u64,
}

/// An auditor reading the log through the admin API under one legal basis
/// and purpose.
pub struct AuditReader<'a> {
    admin: &'a AdminClient,
    basis: &'a str,
    reason: &'a str,
    calling_user: Option<&'a str>,
    check: &'a TreeHeadCheck,
}

impl<'a> AuditReader<'a> {
    /// Reads as `admin`'s participant under `basis` and `reason` (a legal
    /// basis and purpose of its grant for `mconnect/audit-log`), checking
    /// tree heads with `check`.
    pub fn new(
        admin: &'a AdminClient,
        basis: &'a str,
        reason: &'a str,
        check: &'a TreeHeadCheck,
    ) -> AuditReader<'a> {
        AuditReader {
            admin,
            basis,
            reason,
            calling_user: None,
            check,
        }
    }

    /// Names the person reading (`MConnect-Calling-User`, an IDNP), whom
    /// the broker's `audit.read` records then name.
    pub fn as_user(mut self, idnp: &'a str) -> AuditReader<'a> {
        self.calling_user = Some(idnp);
        self
    }

    /// GETs an audit endpoint with the basis, reason and calling user; a
    /// refusal is [`ReadError::Refused`] with its problem code.
    pub async fn get(&self, path_and_query: &str) -> Result<Value, ReadError> {
        let invalid = |e: String| ReadError::Invalid(e);
        let mut request = self
            .admin
            .plain(Method::GET, path_and_query, None)
            .map_err(|e| invalid(e.to_string()))?;
        let value = |text: &str, what: &str| {
            HeaderValue::from_str(text)
                .map_err(|_| invalid(format!("{what} is not a header value")))
        };
        let h = request.headers_mut();
        h.insert(headers::CALL_BASIS, value(self.basis, "the legal basis")?);
        h.insert(headers::CALL_REASON, value(self.reason, "the purpose")?);
        if let Some(user) = self.calling_user {
            h.insert(headers::CALLING_USER, value(user, "the calling user")?);
        }
        let unreachable = |detail: String| ReadError::Unreachable {
            url: self.admin.url(path_and_query),
            detail,
        };
        let answer = tokio::time::timeout(READ_TIMEOUT, self.admin.send_full(request))
            .await
            .map_err(|_| {
                unreachable(format!(
                    "the admin API did not answer in {} s",
                    READ_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| unreachable(e.to_string()))?;
        if answer.status != StatusCode::OK {
            return Err(ReadError::Refused {
                path: path_and_query.to_owned(),
                status: answer.status,
                code: answer.body["code"].as_str().unwrap_or("?").to_owned(),
                detail: answer.body["detail"].as_str().unwrap_or("").to_owned(),
            });
        }
        Ok(answer.body)
    }

    /// A signed tree head, its signature checked with the broker certificate.
    pub async fn tree_head(&self) -> Result<SignedTreeHead, ReadError> {
        let sth: SignedTreeHead = serde_json::from_value(self.get("/v1/audit/tree-head").await?)
            .map_err(|e| {
                ReadError::Invalid(format!("the tree head is not in the documented form: {e}"))
            })?;
        verify_tree_head(&sth, |k, m, s| (self.check)(k, m, s))
            .map_err(|e| ReadError::Unverified(e.to_string()))?;
        Ok(sth)
    }

    /// Record `seq`, checked against its leaf.
    pub async fn record(&self, seq: u64) -> Result<Entry, ReadError> {
        Entry::from_item(&self.get(&format!("/v1/audit/records/{seq}")).await?)
    }

    /// The inclusion proof of `entry` in `sth`, checked against its root.
    pub async fn inclusion(
        &self,
        entry: &Entry,
        sth: &SignedTreeHead,
    ) -> Result<Vec<Hash>, ReadError> {
        let seq = entry.seq;
        let answer = self
            .get(&format!(
                "/v1/audit/proof/inclusion?seq={seq}&tree_size={}",
                sth.tree_size
            ))
            .await?;
        let path = hashes(&answer["audit_path"])?;
        verify_inclusion(
            &entry.leaf_hash(),
            seq,
            sth.tree_size,
            &path,
            &sth.root_hash,
        )
        .map_err(|e| {
            ReadError::Unverified(format!(
                "the inclusion proof of record {seq} does not verify: {e}"
            ))
        })?;
        Ok(path)
    }

    /// Record `seq`, proved against a fresh signed tree head.
    pub async fn prove(&self, seq: u64) -> Result<Proven, ReadError> {
        let entry = self.record(seq).await?;
        let tree_head = self.tree_head().await?;
        if seq >= tree_head.tree_size {
            return Err(ReadError::Unverified(format!(
                "record {seq} is beyond the tree head of size {}",
                tree_head.tree_size
            )));
        }
        let audit_path = self.inclusion(&entry, &tree_head).await?;
        Ok(Proven {
            entry,
            tree_head,
            audit_path,
        })
    }

    /// One page of `search`, from `cursor`.
    pub async fn search(
        &self,
        search: &Search,
        cursor: Option<&str>,
    ) -> Result<SearchPage, ReadError> {
        self.search_in(search, cursor, false).await
    }

    /// One page of `search`; with `local`, of this broker's own log only
    /// (on a cluster a search covers every broker's records, but only this
    /// broker can prove its own).
    async fn search_in(
        &self,
        search: &Search,
        cursor: Option<&str>,
        local: bool,
    ) -> Result<SearchPage, ReadError> {
        let mut path = search.path(cursor);
        if local {
            path.push_str("&scope=local");
        }
        let json = self.get(&path).await?;
        let entries = json["items"]
            .as_array()
            .ok_or_else(|| ReadError::Invalid("a search page without items".into()))?
            .iter()
            .map(Entry::from_item)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = json["next_cursor"].as_str().map(str::to_owned);
        Ok(SearchPage {
            entries,
            next_cursor,
            json,
        })
    }

    /// The evidence bundle of `search` from `cursor`, at most `max_pages`
    /// pages: a signed tree head, then every matching record it covers with
    /// its inclusion proof, each line handed to `write` as it is proved.
    /// Records newer than the head are left for the next export.
    pub async fn export(
        &self,
        search: &Search,
        cursor: Option<&str>,
        max_pages: usize,
        mut write: impl FnMut(&Value) -> std::io::Result<()>,
    ) -> Result<Exported, ReadError> {
        let tree_head = self.tree_head().await?;
        write(&bundle_head(&tree_head))?;
        let mut cursor = cursor.map(str::to_owned);
        let mut records = 0u64;
        for _ in 0..max_pages.max(1) {
            // Only this broker's records can be proved against its head: on
            // a cluster, each broker exports its own.
            let page = self.search_in(search, cursor.as_deref(), true).await?;
            for entry in &page.entries {
                if entry.seq >= tree_head.tree_size {
                    continue;
                }
                let path = self.inclusion(entry, &tree_head).await?;
                write(&bundle_line(entry, &tree_head, &path))?;
                records += 1;
            }
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        Ok(Exported { tree_head, records })
    }
}

fn hashes(value: &Value) -> Result<Vec<Hash>, ReadError> {
    let invalid = |what: &str| ReadError::Invalid(format!("audit path: {what}"));
    value
        .as_array()
        .ok_or_else(|| invalid("expected an array of hashes"))?
        .iter()
        .map(|h| {
            let bytes = h
                .as_str()
                .and_then(|h| STANDARD.decode(h).ok())
                .ok_or_else(|| invalid("a hash is not base64"))?;
            <Hash>::try_from(bytes.as_slice()).map_err(|_| invalid("a hash is not 32 bytes"))
        })
        .collect()
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn percent(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn record() -> AuditRecord {
        let now = std::time::SystemTime::now();
        AuditRecord {
            subject: Some("2000000000037".into()),
            ..AuditRecord::management(
                "exchange",
                "asp-rsp/person-by-idnp",
                now,
                std::time::Instant::now(),
            )
        }
    }

    #[test]
    fn an_entry_is_the_record_its_leaf_encodes() {
        let record = record();
        let leaf = record.canonical_bytes().unwrap();
        let item = json!({"seq": 7, "record": record, "leaf": STANDARD.encode(&leaf)});
        let entry = Entry::from_item(&item).unwrap();
        assert_eq!((entry.seq, &entry.record), (7, &record));

        let mut shown = item.clone();
        shown["record"]["subject"] = json!("2000000000015");
        assert!(matches!(
            Entry::from_item(&shown),
            Err(ReadError::Unverified(_))
        ));
        let mut no_leaf = item.clone();
        no_leaf["leaf"] = json!("not base64!");
        assert!(matches!(
            Entry::from_item(&no_leaf),
            Err(ReadError::Invalid(_))
        ));
        assert!(Entry::from_item(&json!({"record": record})).is_err());
    }

    #[test]
    fn a_bundle_is_a_head_then_a_line_per_record_with_its_proof() {
        let record = record();
        let entry = Entry {
            seq: 0,
            leaf: record.canonical_bytes().unwrap(),
            record,
            broker: None,
        };
        let sth = SignedTreeHead {
            tree_size: 1,
            root_hash: entry.leaf_hash(),
            timestamp: 1,
            keyid: "k".into(),
            signature: vec![1, 2],
        };
        let proven = Proven {
            entry: entry.clone(),
            tree_head: sth.clone(),
            audit_path: Vec::new(),
        };
        let lines: Vec<Value> = proven
            .bundle()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        let head: SignedTreeHead = serde_json::from_value(lines[0]["tree_head"].clone()).unwrap();
        assert_eq!(head, sth);
        assert_eq!(Entry::from_item(&lines[1]).unwrap(), entry);
        assert_eq!(lines[1]["tree_size"], 1);
        assert_eq!(lines[1]["audit_path"], json!([]));
    }

    #[test]
    fn a_search_path_encodes_its_filters() {
        let search = Search {
            subject: Some("2000000000037".into()),
            service: Some("asp-rsp/person-by-idnp".into()),
            from: Some("2026-01-01T00:00:00+02:00".into()),
            limit: 20,
            ..Search::default()
        };
        assert_eq!(
            search.path(Some("c/1")),
            "/v1/audit/records?limit=20&subject=2000000000037&service=asp-rsp%2Fperson-by-idnp&from=2026-01-01T00%3A00%3A00%2B02%3A00&cursor=c%2F1"
        );
    }
}
