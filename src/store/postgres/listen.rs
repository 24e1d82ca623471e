//! The change feed on PostgreSQL: one connection of its own (not from the
//! pool, which recycles connections and would drop a `LISTEN`) on the
//! store's driver thread, listening on channel `mconnect_state`, which the
//! triggers of `migrations/postgres/V2__change_feed.sql` notify on every
//! committed write, and brokers notify when they reloaded their rule files.
//!
//! PostgreSQL delivers a notification only when its transaction commits, in
//! commit order, so a broker never reloads a change that was rolled back.
//! Notifications sent while this connection is down are lost: so after every
//! reconnection the feed marks everything for reloading (a resync), which the
//! subscriber applies before it reports itself healthy again. Each store tags
//! its sessions with a random `mconnect.origin`, which the triggers put into
//! the payload, so that a broker skips its own writes: the writer already put
//! them into its own snapshot (`Registry::commit`, the connection-request
//! commit), and reloading them again would only cost time.
//!
//! The connection is checked every [`KEEPALIVE`] with a `SELECT 1` bounded by
//! the store's timeout, so a server that vanished without closing the socket
//! is noticed too; a lost connection is retried with a backoff from
//! [`BACKOFF_FIRST`] doubling to [`BACKOFF_MAX`].

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_postgres::{AsyncMessage, NoTls};

use super::chain;
use crate::store::{ChangeFeed, Changes, Collection, FeedSender, feed_channel};

/// The channel the triggers and the brokers notify.
const CHANNEL: &str = "mconnect_state";

/// How often the listening connection is checked.
const KEEPALIVE: Duration = Duration::from_secs(5);
/// The first wait before reconnecting.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between attempts to reconnect.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The store's side of the feed: its origin tag and its subscribers.
pub(super) struct Listener {
    origin: String,
    subscribers: Arc<Mutex<Vec<FeedSender>>>,
}

impl Listener {
    /// A listener with a fresh origin tag.
    pub(super) fn new() -> Listener {
        Listener {
            origin: uuid::Uuid::new_v4().simple().to_string(),
            subscribers: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Tags every session of `config` with this store's origin, which the
    /// triggers copy into their notifications.
    pub(super) fn tag(&self, config: &mut tokio_postgres::Config) {
        let ours = format!("-c mconnect.origin={}", self.origin);
        let options = match config.get_options() {
            Some(theirs) if !theirs.trim().is_empty() => format!("{theirs} {ours}"),
            _ => ours,
        };
        config.options(options);
    }

    /// The listening session's configuration: the store's, named
    /// `{application_name}-feed` in `pg_stat_activity`.
    pub(super) fn session(config: &tokio_postgres::Config) -> tokio_postgres::Config {
        let mut config = config.clone();
        let name = format!(
            "{}-feed",
            config.get_application_name().unwrap_or("mconnect")
        );
        config.application_name(name);
        config
    }

    /// A new subscriber.
    pub(super) fn subscribe(&self) -> ChangeFeed {
        let (sender, feed) = feed_channel();
        let mut subscribers = self
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        subscribers.retain(|s| !s.is_closed());
        subscribers.push(sender);
        feed
    }

    /// Starts listening on `driver` and waits until the first `LISTEN` is in
    /// place (so whatever the opener reads next is followed from then on),
    /// or fails within `timeout`.
    pub(super) fn start(
        &self,
        config: tokio_postgres::Config,
        timeout: Duration,
        driver: &tokio::runtime::Handle,
    ) -> Result<(), String> {
        let (first, started) = std::sync::mpsc::sync_channel(1);
        driver.spawn(follow(
            config,
            timeout,
            self.origin.clone(),
            Arc::clone(&self.subscribers),
            first,
        ));
        started
            .recv()
            .unwrap_or_else(|_| Err("the PostgreSQL thread stopped".into()))
    }

    /// One of this store's own writes went unanswered at COMMIT and may
    /// have been applied: its notification names this store's origin, so
    /// it would be skipped, and the caller's snapshot (which took the write
    /// as failed) could miss it for good. Every subscriber reloads
    /// everything instead.
    pub(super) fn resync_after_uncertain_commit(&self) {
        let subscribers = self
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for subscriber in subscribers.iter() {
            subscriber.mark(Changes {
                resync: true,
                ..Changes::default()
            });
        }
    }

    /// The payload announcing a reload of the rule files.
    pub(super) fn rules_payload(&self) -> String {
        format!("rules {}", self.origin)
    }
}

/// Sends `payload` on the channel (delivered at once: no transaction).
pub(super) async fn announce(pool: Pool, payload: String) -> Result<(), String> {
    let client = pool.get().await.map_err(|e| chain(&e))?;
    client
        .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
        .await
        .map_err(|e| chain(&e))?;
    Ok(())
}

/// Listens until the store closes (the driver's runtime stops), reconnecting
/// after every loss. The first outcome goes to `first`; if that one fails,
/// the store does not open and this ends.
async fn follow(
    config: tokio_postgres::Config,
    timeout: Duration,
    origin: String,
    subscribers: Arc<Mutex<Vec<FeedSender>>>,
    first: std::sync::mpsc::SyncSender<Result<(), String>>,
) {
    let mut first = Some(first);
    let mut backoff = BACKOFF_FIRST;
    let each = |f: &dyn Fn(&FeedSender)| {
        let subscribers = subscribers.lock().unwrap_or_else(PoisonError::into_inner);
        subscribers.iter().for_each(f);
    };
    loop {
        match listen(&config, timeout, &origin, &subscribers).await {
            Ok((client, session)) => {
                backoff = BACKOFF_FIRST;
                match first.take() {
                    Some(first) => {
                        let _ = first.send(Ok(()));
                    }
                    None => {
                        tracing::info!("state change feed reconnected; reloading the shared state");
                        each(&|s| s.reconnected());
                    }
                }
                let reason = hold(&client, session, timeout).await;
                tracing::warn!(%reason, "state change feed lost PostgreSQL; serving from the last state, refusing changes until it is back");
                each(&|s| s.lost(reason.clone()));
            }
            Err(reason) => {
                if let Some(first) = first.take() {
                    let _ = first.send(Err(format!("cannot listen for changes: {reason}")));
                    return;
                }
                each(&|s| s.lost(reason.clone()));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Connects and listens. The session task polls the connection, hands each
/// notification to the subscribers, and ends with the reason the connection
/// ended.
async fn listen(
    config: &tokio_postgres::Config,
    timeout: Duration,
    origin: &str,
    subscribers: &Arc<Mutex<Vec<FeedSender>>>,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<String>), String> {
    let (client, mut connection) = tokio::time::timeout(timeout, config.connect(NoTls))
        .await
        .map_err(|_| format!("no connection within {timeout:?}"))?
        .map_err(|e| chain(&e))?;
    let (origin, subscribers) = (origin.to_owned(), Arc::clone(subscribers));
    let session = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    let changes = changes(n.payload(), &origin);
                    let subscribers = subscribers.lock().unwrap_or_else(PoisonError::into_inner);
                    for s in subscribers.iter() {
                        s.mark(changes);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return chain(&e),
                None => return "the server closed the connection".to_string(),
            }
        }
    });
    let listening =
        tokio::time::timeout(timeout, client.batch_execute(&format!("LISTEN {CHANNEL}")))
            .await
            .map_err(|_| format!("LISTEN unanswered within {timeout:?}"))
            .and_then(|r| r.map_err(|e| chain(&e)));
    if let Err(reason) = listening {
        session.abort();
        return Err(reason);
    }
    Ok((client, session))
}

/// Holds the listening connection until it ends or stops answering; returns
/// why.
async fn hold(
    client: &tokio_postgres::Client,
    mut session: tokio::task::JoinHandle<String>,
    timeout: Duration,
) -> String {
    let mut ticks = tokio::time::interval(KEEPALIVE);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            ended = &mut session => {
                return ended.unwrap_or_else(|e| format!("the listening task ended: {e}"));
            }
            _ = ticks.tick() => {
                let alive = tokio::time::timeout(timeout, client.simple_query("SELECT 1")).await;
                let reason = match alive {
                    Ok(Ok(_)) => continue,
                    Ok(Err(e)) => chain(&e),
                    Err(_) => format!("no answer to a keepalive within {timeout:?}"),
                };
                session.abort();
                return reason;
            }
        }
    }
}

/// What a notification's payload (`{table} {origin} [{key}]`, or
/// `rules {origin}`) says changed; nothing when `origin` is ours. A payload
/// this broker does not know (a newer broker's) asks for everything.
fn changes(payload: &str, ours: &str) -> Changes {
    let mut parts = payload.splitn(3, ' ');
    let (what, origin) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if origin == ours {
        return Changes::default();
    }
    if what == "rules" {
        return Changes {
            rules_files: true,
            ..Changes::default()
        };
    }
    match Collection::ALL.into_iter().find(|c| c.name() == what) {
        Some(collection) => Changes::of(collection),
        None => Changes {
            resync: true,
            ..Changes::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::{Listener, changes};
    use crate::store::Changes;

    #[test]
    fn an_unanswered_commit_of_our_own_makes_every_subscriber_reload_everything() {
        let listener = Listener::new();
        let (first, second) = (listener.subscribe(), listener.subscribe());
        assert!(first.health().is_ok() && second.health().is_ok());
        listener.resync_after_uncertain_commit();
        for feed in [&first, &second] {
            let health = feed.health().unwrap_err();
            assert!(health.contains("reloading"), "{health}");
        }
    }

    #[test]
    fn payloads_become_changes_and_our_own_are_skipped() {
        let none = Changes::default();
        let table = [
            (
                "participants abc apl-cahul",
                "ours",
                Changes {
                    participants: true,
                    ..none
                },
            ),
            (
                "grants abc cr-2026-000001/1",
                "ours",
                Changes {
                    grants: true,
                    ..none
                },
            ),
            (
                "connection_requests - cr 1 with spaces",
                "ours",
                Changes {
                    connection_requests: true,
                    ..none
                },
            ),
            (
                "grants abc",
                "ours",
                Changes {
                    grants: true,
                    ..none
                },
            ),
            (
                "rules abc",
                "ours",
                Changes {
                    rules_files: true,
                    ..none
                },
            ),
            ("participants ours apl-cahul", "ours", none),
            ("rules ours", "ours", none),
            (
                "tables_of_tomorrow abc k",
                "ours",
                Changes {
                    resync: true,
                    ..none
                },
            ),
        ];
        for (payload, ours, expected) in table {
            assert_eq!(changes(payload, ours), expected, "{payload}");
        }
    }
}
