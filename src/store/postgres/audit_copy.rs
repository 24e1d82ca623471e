//! The cluster's shared copy of every broker's audit records on PostgreSQL
//! (`audit_records`, `audit_shipping`; `migrations/postgres/V4__audit_shipping.sql`,
//! issue 15): the [`AuditCopy`] the audit log's shipper writes to
//! (`audit::ship`), that auditor searches and access history read, and that
//! `mconnect audit verify --shipped` compares with a broker's log.
//!
//! Same design as [`super::PgStore`]: a pool on a driver thread of its own
//! (a current-thread runtime), each call handed over and waited for, at most
//! the configured timeout, so callers block like any store call and never
//! need a runtime of their own.
//!
//! Invariants:
//! - a batch is written only where the broker's position is, and the
//!   position advanced in the same transaction (`SELECT .. FOR UPDATE` on
//!   the broker's `audit_shipping` row, `INSERT .. ON CONFLICT DO NOTHING`,
//!   `UPDATE`): records are shipped exactly once, in order, whichever side
//!   crashes; a COMMIT whose answer is lost is resolved by reading the
//!   position again;
//! - a row already present is compared byte for byte (record and leaf
//!   hash): different bytes refuse the whole batch
//!   ([`ShipError::Conflict`]), the copy is never overwritten;
//! - searches order by (`received_us`, seq, broker id), newest first, with
//!   a cursor of the last row; the filters are the audit index's.

use std::fmt::Write as _;
use std::future::Future;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_postgres::types::ToSql;

use super::{PostgresSettings, build_pool, chain, close_driver, driver_thread, run_on_driver};
use crate::audit::index::{DEFAULT_LIMIT, MAX_LIMIT};
use crate::audit::ship::{AuditCopy, ShipError, ShipPosition, ShippedRecord, ShippedRow};
use crate::audit::{AuditEntry, AuditError, AuditPage, AuditQuery, AuditRecord};
use crate::store::StoreError;

/// Rows removed per statement by a retention pass, and statements per pass.
const PRUNE_BATCH: i64 = 10_000;
const PRUNE_BATCHES: usize = 100;

const POSITION: &str = "SELECT shipped_seq, pruned_below FROM audit_shipping WHERE broker_id = $1";
const POSITION_FOR_UPDATE: &str =
    "SELECT shipped_seq, pruned_below FROM audit_shipping WHERE broker_id = $1 FOR UPDATE";
const ENTER: &str =
    "INSERT INTO audit_shipping (broker_id) VALUES ($1) ON CONFLICT (broker_id) DO NOTHING";
const INSERT: &str = "INSERT INTO audit_records \
     (broker_id, seq, leaf_hash, record, received_us, event, exchange_id, consumer, provider, service, subjects) \
     SELECT $1, r.seq, r.leaf_hash, r.record, r.received_us, r.event, r.exchange_id, r.consumer, r.provider, r.service, \
            ARRAY(SELECT jsonb_array_elements_text(r.subjects::jsonb)) \
     FROM unnest($2::bigint[], $3::bytea[], $4::bytea[], $5::bigint[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[]) \
          AS r(seq, leaf_hash, record, received_us, event, exchange_id, consumer, provider, service, subjects) \
     ON CONFLICT (broker_id, seq) DO NOTHING RETURNING seq";
const EXISTING: &str = "SELECT seq, leaf_hash, record FROM audit_records WHERE broker_id = $1 AND seq = ANY($2) ORDER BY seq";
const ADVANCE: &str =
    "UPDATE audit_shipping SET shipped_seq = $2, updated_at = now() WHERE broker_id = $1";
const ROWS: &str = "SELECT seq, leaf_hash, record FROM audit_records WHERE broker_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3";

/// The shared copy on PostgreSQL.
pub struct PgAuditCopy {
    pool: Pool,
    driver: tokio::runtime::Handle,
    timeout: Duration,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PgAuditCopy {
    /// Connects to the database, whose schema `PgStore::open` brought up to
    /// date (this does not migrate: a verifier only reads), and checks that
    /// the tables are there. Blocks until done or the timeout ran out.
    pub fn open(settings: &PostgresSettings) -> Result<PgAuditCopy, StoreError> {
        let name = settings.describe();
        let open_err = |reason: String| StoreError::Open {
            path: name.clone(),
            reason,
        };
        let mut config = settings.session_config();
        config.application_name("mconnect-audit-copy");
        let timeout = settings.timeout();
        let pool =
            build_pool(config, settings.pool_size().clamp(1, 4), timeout).map_err(open_err)?;
        let (driver, stop, thread) = driver_thread().map_err(open_err)?;
        let copy = PgAuditCopy {
            pool,
            driver,
            timeout,
            stop: Some(stop),
            thread: Some(thread),
        };
        copy.run(|pool| async move {
            let client = pool.get().await.map_err(|e| chain(&e))?;
            client
                .simple_query("SELECT 1 FROM audit_shipping LIMIT 1")
                .await
                .map_err(|e| chain(&e))?;
            Ok(())
        })
        .map_err(|e| {
            open_err(format!(
                "the audit copy's tables are not usable (is the schema migrated? a broker on this database migrates it at start): {e}"
            ))
        })?;
        Ok(copy)
    }

    /// Hands `work` to the driver thread and waits for its answer, at most
    /// the timeout.
    fn run<T, F>(&self, work: impl FnOnce(Pool) -> F + Send + 'static) -> Result<T, String>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, String>> + Send + 'static,
    {
        let timeout = self.timeout;
        run_on_driver(&self.driver, &self.pool, timeout, work, move || {
            format!("no answer from PostgreSQL within {timeout:?}")
        })
        .unwrap_or_else(|| Err("the PostgreSQL thread has stopped".to_string()))
    }
}

impl Drop for PgAuditCopy {
    fn drop(&mut self) {
        close_driver(&self.pool, &mut self.stop, &mut self.thread);
    }
}

fn db(e: &tokio_postgres::Error) -> String {
    chain(e)
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn u64_of(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn position_of(row: &tokio_postgres::Row) -> Result<ShipPosition, String> {
    Ok(ShipPosition {
        shipped: u64_of(row.try_get(0).map_err(|e| db(&e))?),
        pruned_below: u64_of(row.try_get(1).map_err(|e| db(&e))?),
    })
}

/// The position of `broker`, its row locked until `txn` ends (`None`: it
/// has no row).
async fn locked_position(
    txn: &tokio_postgres::Transaction<'_>,
    broker: &str,
) -> Result<Option<ShipPosition>, String> {
    txn.query_opt(POSITION_FOR_UPDATE, &[&broker])
        .await
        .map_err(|e| db(&e))?
        .as_ref()
        .map(position_of)
        .transpose()
}

impl AuditCopy for PgAuditCopy {
    fn position(&self, broker: &str, create: bool) -> Result<Option<ShipPosition>, ShipError> {
        let broker = broker.to_owned();
        self.run(move |pool| async move {
            let client = pool.get().await.map_err(|e| chain(&e))?;
            if create {
                client
                    .execute(ENTER, &[&broker])
                    .await
                    .map_err(|e| db(&e))?;
            }
            let row = client
                .query_opt(POSITION, &[&broker])
                .await
                .map_err(|e| db(&e))?;
            row.as_ref().map(position_of).transpose()
        })
        .map_err(ShipError::Unavailable)
    }

    fn ship(
        &self,
        broker: &str,
        from: u64,
        records: &[ShippedRecord],
    ) -> Result<ShipPosition, ShipError> {
        let broker = broker.to_owned();
        let records = records.to_vec();
        let outcome = self.run(move |pool| async move {
            let mut client = pool.get().await.map_err(|e| chain(&e))?;
            let txn = client.transaction().await.map_err(|e| db(&e))?;
            let position = locked_position(&txn, &broker)
                .await?
                .ok_or_else(|| format!("broker `{broker}` has no position row"))?;
            if position.shipped != from || records.is_empty() {
                return Ok(Ok(position));
            }
            let seqs: Vec<i64> = records.iter().map(|r| i64_of(r.seq)).collect();
            let hashes: Vec<Vec<u8>> = records.iter().map(|r| r.leaf_hash.to_vec()).collect();
            let leaves: Vec<Vec<u8>> = records.iter().map(|r| r.leaf.clone()).collect();
            let times: Vec<i64> = records.iter().map(|r| i64_of(r.received_us)).collect();
            let events: Vec<String> = records.iter().map(|r| r.event.clone()).collect();
            let ids: Vec<String> = records.iter().map(|r| r.exchange_id.clone()).collect();
            let consumers: Vec<Option<String>> =
                records.iter().map(|r| r.consumer.clone()).collect();
            let providers: Vec<Option<String>> =
                records.iter().map(|r| r.provider.clone()).collect();
            let services: Vec<Option<String>> =
                records.iter().map(|r| r.service.clone()).collect();
            let subjects: Vec<String> = records
                .iter()
                .map(|r| serde_json::to_string(&r.subjects).unwrap_or_else(|_| "[]".into()))
                .collect();
            let inserted = txn
                .query(
                    INSERT,
                    &[
                        &broker, &seqs, &hashes, &leaves, &times, &events, &ids, &consumers,
                        &providers, &services, &subjects,
                    ],
                )
                .await
                .map_err(|e| db(&e))?;
            if inserted.len() != records.len() {
                // Rows already there: they must be these records exactly.
                let existing = txn
                    .query(EXISTING, &[&broker, &seqs])
                    .await
                    .map_err(|e| db(&e))?;
                let mut fresh: Vec<i64> = Vec::with_capacity(inserted.len());
                for row in &inserted {
                    fresh.push(row.try_get(0).map_err(|e| db(&e))?);
                }
                for row in &existing {
                    let seq: i64 = row.try_get(0).map_err(|e| db(&e))?;
                    if fresh.contains(&seq) {
                        continue;
                    }
                    let hash: Vec<u8> = row.try_get(1).map_err(|e| db(&e))?;
                    let leaf: Vec<u8> = row.try_get(2).map_err(|e| db(&e))?;
                    let ours = records.iter().find(|r| i64_of(r.seq) == seq);
                    if !ours.is_some_and(|r| r.leaf_hash.as_slice() == hash && r.leaf == leaf) {
                        // Dropping `txn` rolls the batch back.
                        return Ok(Err(format!(
                            "record {seq} of broker `{broker}` is already in the copy with other bytes"
                        )));
                    }
                }
            }
            let shipped = from + records.len() as u64;
            txn.execute(ADVANCE, &[&broker, &i64_of(shipped)])
                .await
                .map_err(|e| db(&e))?;
            txn.commit().await.map_err(|e| {
                format!(
                    "no answer to COMMIT ({}): the batch may or may not be in; the position is read again",
                    db(&e)
                )
            })?;
            Ok(Ok(ShipPosition {
                shipped,
                pruned_below: position.pruned_below,
            }))
        });
        match outcome {
            Ok(Ok(position)) => Ok(position),
            Ok(Err(conflict)) => Err(ShipError::Conflict(conflict)),
            Err(unavailable) => Err(ShipError::Unavailable(unavailable)),
        }
    }

    fn skip_pruned(&self, broker: &str, from: u64, to: u64) -> Result<ShipPosition, ShipError> {
        let broker = broker.to_owned();
        self.run(move |pool| async move {
            let mut client = pool.get().await.map_err(|e| chain(&e))?;
            let txn = client.transaction().await.map_err(|e| db(&e))?;
            let position = locked_position(&txn, &broker)
                .await?
                .ok_or_else(|| format!("broker `{broker}` has no position row"))?;
            if position.shipped != from || to <= from {
                return Ok(position);
            }
            txn.execute(
                "DELETE FROM audit_records WHERE broker_id = $1 AND seq < $2",
                &[&broker, &i64_of(to)],
            )
            .await
            .map_err(|e| db(&e))?;
            txn.execute(
                "UPDATE audit_shipping SET shipped_seq = $2, pruned_below = $2, updated_at = now() WHERE broker_id = $1",
                &[&broker, &i64_of(to)],
            )
            .await
            .map_err(|e| db(&e))?;
            txn.commit().await.map_err(|e| db(&e))?;
            Ok(ShipPosition {
                shipped: to,
                pruned_below: to,
            })
        })
        .map_err(ShipError::Unavailable)
    }

    fn prune(&self, broker: &str, cutoff_us: u64) -> Result<u64, ShipError> {
        let mut removed = 0u64;
        for _ in 0..PRUNE_BATCHES {
            let broker = broker.to_owned();
            let (gone, more) = self
                .run(move |pool| async move {
                    let mut client = pool.get().await.map_err(|e| chain(&e))?;
                    let txn = client.transaction().await.map_err(|e| db(&e))?;
                    let Some(position) = locked_position(&txn, &broker).await? else {
                        return Ok((0, false));
                    };
                    let below = i64_of(position.pruned_below);
                    // The first record still in retention ends the prefix
                    // that goes (records are kept as a contiguous range).
                    let keep: Option<i64> = txn
                        .query_opt(
                            "SELECT seq FROM audit_records WHERE broker_id = $1 AND seq >= $2 AND received_us >= $3 ORDER BY seq LIMIT 1",
                            &[&broker, &below, &i64_of(cutoff_us)],
                        )
                        .await
                        .map_err(|e| db(&e))?
                        .map(|r| r.try_get(0))
                        .transpose()
                        .map_err(|e| db(&e))?;
                    let boundary = keep.unwrap_or(i64_of(position.shipped));
                    let to = boundary.min(below.saturating_add(PRUNE_BATCH));
                    if to <= below {
                        return Ok((0, false));
                    }
                    let gone = txn
                        .execute(
                            "DELETE FROM audit_records WHERE broker_id = $1 AND seq >= $2 AND seq < $3",
                            &[&broker, &below, &to],
                        )
                        .await
                        .map_err(|e| db(&e))?;
                    txn.execute(
                        "UPDATE audit_shipping SET pruned_below = $2, updated_at = now() WHERE broker_id = $1",
                        &[&broker, &to],
                    )
                    .await
                    .map_err(|e| db(&e))?;
                    txn.commit().await.map_err(|e| db(&e))?;
                    Ok((gone, to < boundary))
                })
                .map_err(ShipError::Unavailable)?;
            removed += gone;
            if !more {
                break;
            }
        }
        Ok(removed)
    }

    fn search(&self, query: &AuditQuery) -> Result<AuditPage, AuditError> {
        let limit = match query.limit {
            0 => DEFAULT_LIMIT,
            n => n.min(MAX_LIMIT),
        };
        let cursor = query.cursor.as_deref().map(parse_cursor).transpose()?;
        let micros = |t: time::OffsetDateTime| {
            i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
        };
        let from = query.from.map_or(0, micros);
        let to = query.to.map_or(i64::MAX, micros);
        let mut sql = String::from(
            "SELECT broker_id, seq, record FROM audit_records WHERE received_us >= $1 AND received_us < $2",
        );
        let mut params: Vec<Box<dyn ToSql + Send + Sync>> = vec![Box::new(from), Box::new(to)];
        let mut add = |sql: &mut String, clause: &str, value: Box<dyn ToSql + Send + Sync>| {
            params.push(value);
            let _ = write!(
                sql,
                " AND {}",
                clause.replace('?', &format!("${}", params.len()))
            );
        };
        if let Some(subject) = &query.subject {
            add(
                &mut sql,
                "subjects @> ARRAY[?::text]",
                Box::new(subject.clone()),
            );
        }
        for (column, value) in [
            ("consumer", &query.consumer),
            ("provider", &query.provider),
            ("service", &query.service),
            ("event", &query.event),
        ] {
            if let Some(value) = value {
                add(&mut sql, &format!("{column} = ?"), Box::new(value.clone()));
            }
        }
        if let Some((time, seq, broker)) = cursor {
            params.push(Box::new(time));
            params.push(Box::new(seq));
            params.push(Box::new(broker));
            let n = params.len();
            let _ = write!(
                sql,
                " AND (received_us, seq, broker_id) < (${}, ${}, ${})",
                n - 2,
                n - 1,
                n
            );
        }
        params.push(Box::new(i64::try_from(limit + 1).unwrap_or(i64::MAX)));
        let _ = write!(
            sql,
            " ORDER BY received_us DESC, seq DESC, broker_id DESC LIMIT ${}",
            params.len()
        );
        let rows = self
            .run(move |pool| async move {
                let client = pool.get().await.map_err(|e| chain(&e))?;
                let refs: Vec<&(dyn ToSql + Sync)> = params
                    .iter()
                    .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                let rows = client.query(&sql, &refs).await.map_err(|e| db(&e))?;
                rows.iter()
                    .map(|r| {
                        Ok((
                            r.try_get::<_, String>(0)?,
                            r.try_get::<_, i64>(1)?,
                            r.try_get::<_, Vec<u8>>(2)?,
                        ))
                    })
                    .collect::<Result<Vec<_>, tokio_postgres::Error>>()
                    .map_err(|e| db(&e))
            })
            .map_err(|e| {
                AuditError::Unavailable(format!("the cluster's audit copy cannot be read: {e}"))
            })?;
        let more = rows.len() > limit;
        let mut items = Vec::with_capacity(rows.len().min(limit));
        for (broker, seq, leaf) in rows.into_iter().take(limit) {
            let record = AuditRecord::from_canonical_bytes(&leaf)?;
            items.push(AuditEntry {
                seq: u64_of(seq),
                record,
                leaf,
                broker: Some(broker),
            });
        }
        let next_cursor = if more {
            items.last().map(|last| {
                format!(
                    "{}-{}-{}",
                    last.record.received_micros(),
                    last.seq,
                    last.broker.as_deref().unwrap_or_default()
                )
            })
        } else {
            None
        };
        Ok(AuditPage {
            items,
            next_cursor,
            indexed: 0,
        })
    }

    fn rows(&self, broker: &str, from: u64, limit: usize) -> Result<Vec<ShippedRow>, ShipError> {
        let broker = broker.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(move |pool| async move {
            let client = pool.get().await.map_err(|e| chain(&e))?;
            let rows = client
                .query(ROWS, &[&broker, &i64_of(from), &limit])
                .await
                .map_err(|e| db(&e))?;
            rows.iter()
                .map(|r| {
                    Ok(ShippedRow {
                        seq: u64_of(r.try_get(0)?),
                        leaf_hash: r.try_get(1)?,
                        leaf: r.try_get(2)?,
                    })
                })
                .collect::<Result<Vec<_>, tokio_postgres::Error>>()
                .map_err(|e| db(&e))
        })
        .map_err(ShipError::Unavailable)
    }
}

/// A cursor this copy issued: `{received µs}-{seq}-{broker id}`.
fn parse_cursor(cursor: &str) -> Result<(i64, i64, String), AuditError> {
    let bad = || {
        AuditError::InvalidQuery(format!(
            "cursor {cursor:?} is not one this search issued (a cluster search's cursor names a broker)"
        ))
    };
    let mut parts = cursor.splitn(3, '-');
    let time = parts.next().and_then(|t| t.parse().ok()).ok_or_else(bad)?;
    let seq = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let broker = parts.next().filter(|b| !b.is_empty()).ok_or_else(bad)?;
    Ok((time, seq, broker.to_string()))
}
