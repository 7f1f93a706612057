//! Following the points ledger: `StreamEvents` from a cursor the consumer
//! stores itself, in batches, each applied in one transaction together with
//! the cursor. After downtime a consumer resumes where it stopped; entries it
//! already applied are skipped (consumers also key what they record by
//! transaction id), so nothing counts twice.
//!
//! Only one replica of a consuming service follows at a time: on PostgreSQL,
//! replicas take turns through a session advisory lock held for as long as
//! they consume. SQLite means one process anyway.
//!
//! Where a consumer stands is on `/metrics` ([`Progress`]): the last sequence
//! it applied, when that entry was written, and whether it is following now.
//! The points service publishes the stream's head (`ledger_stream_head`), so
//! the lag is `ledger_stream_head - stream_consumer_position`, in entries, and
//! `time() - stream_consumer_entry_timestamp_seconds` while it is behind.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use sqlx::{AnyConnection, Connection};

use loyalty_proto::points::v1 as points;
use loyalty_proto::points::v1::points_service_client::PointsServiceClient;

use crate::db::{Database, Dialect};
use crate::metrics::Metrics;
use crate::peer::Peers;
use crate::shutdown::ShutdownSignal;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Entries applied per transaction at most.
const BATCH: usize = 256;
/// How long a batch waits for more entries before it is applied.
const LINGER: Duration = Duration::from_millis(20);
const RETRY: Duration = Duration::from_secs(1);

/// A service that consumes the ledger.
pub trait LedgerConsumer: Send + Sync + 'static {
    /// Names the consumer in logs.
    const NAME: &'static str;
    /// The advisory lock that elects the one replica that consumes.
    const LOCK_KEY: i64;

    /// Only entries of these kinds (empty: all), read at most every
    /// [`Self::INTERVAL_MS`] (0: as soon as they are published).
    const KINDS: &'static [points::EntryKind] = &[];
    const INTERVAL_MS: i32 = 0;

    fn database(&self) -> &Database;
    /// The last sequence applied (0 before the first).
    fn cursor(&self) -> impl Future<Output = Result<i64, BoxError>> + Send;
    /// Applies `entries` and moves the cursor to `last_sequence`, in one transaction.
    fn apply(
        &self,
        entries: Vec<points::LedgerEntry>,
        last_sequence: i64,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerLabel {
    consumer: String,
}

/// A consumer's place in the stream, as `/metrics` shows it (label `consumer`).
#[derive(Clone, Debug)]
pub struct Progress {
    /// `stream_consumer_position`: the last sequence applied.
    pub position: Gauge,
    /// `stream_consumer_entry_timestamp_seconds`: when the last entry applied was written.
    pub entry_time: Gauge,
    /// `stream_consumer_connected`: 1 while the stream is open and this replica leads.
    pub connected: Gauge,
}

impl Progress {
    pub fn register(metrics: &Metrics, consumer: &str) -> Self {
        let label = ConsumerLabel { consumer: consumer.to_owned() };
        let family = |name: &str, help: &str| {
            let family = Family::<ConsumerLabel, Gauge>::default();
            metrics.register(name, help, family.clone());
            family.get_or_create(&label).clone()
        };
        Self {
            position: family("stream_consumer_position", "The last ledger sequence the consumer applied"),
            entry_time: family(
                "stream_consumer_entry_timestamp_seconds",
                "When the last ledger entry the consumer applied was written (Unix seconds)",
            ),
            connected: family(
                "stream_consumer_connected",
                "1 while the consumer follows the ledger (stream open, lock held), else 0",
            ),
        }
    }
}

/// Runs until shutdown, reconnecting after any failure.
pub async fn run<C: LedgerConsumer>(
    consumer: Arc<C>,
    points_addr: String,
    peers: Peers,
    progress: Progress,
    mut shutdown: ShutdownSignal,
) {
    loop {
        let Some(mut leadership) = become_leader(consumer.database(), C::LOCK_KEY, &mut shutdown).await else {
            return;
        };
        let consumed =
            consume(consumer.as_ref(), &points_addr, &peers, &progress, &mut leadership, &mut shutdown).await;
        progress.connected.set(0);
        match consumed {
            Ok(()) => return,
            Err(error) => tracing::warn!(consumer = C::NAME, %error, "ledger consumer interrupted, reconnecting"),
        }
        drop(leadership);
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            () = shutdown.fired() => return,
        }
    }
}

/// Waits for the consumer lock (PostgreSQL); `None` on shutdown.
async fn become_leader(db: &Database, key: i64, shutdown: &mut ShutdownSignal) -> Option<Option<AnyConnection>> {
    if db.dialect == Dialect::Sqlite {
        return Some(None);
    }
    loop {
        if let Ok(mut conn) = db.pool.acquire().await {
            let locked: Result<bool, _> =
                sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(key).fetch_one(&mut *conn).await;
            if let Ok(true) = locked {
                // The session lock lives as long as this connection; take it
                // out of the pool so it is never handed to anyone else.
                return Some(Some(conn.detach()));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            () = shutdown.fired() => return None,
        }
    }
}

async fn consume<C: LedgerConsumer>(
    consumer: &C,
    points_addr: &str,
    peers: &Peers,
    progress: &Progress,
    leadership: &mut Option<AnyConnection>,
    shutdown: &mut ShutdownSignal,
) -> Result<(), BoxError> {
    let channel = peers.endpoint(points_addr)?.connect().await?;
    let mut client = PointsServiceClient::new(peers.attach(channel));
    let cursor = consumer.cursor().await?;
    let request = points::StreamEventsRequest {
        after_sequence: cursor,
        program_id: String::new(),
        kinds: C::KINDS.iter().map(|&k| k as i32).collect(),
        interval_ms: C::INTERVAL_MS,
    };
    let mut stream = client.stream_events(request).await?.into_inner();
    progress.position.set(cursor);
    progress.connected.set(1);
    tracing::info!(consumer = C::NAME, after_sequence = cursor, "following the points ledger");
    let mut lock_check = tokio::time::interval(RETRY);
    loop {
        let first = tokio::select! {
            next = stream.next() => next,
            () = shutdown.fired() => return Ok(()),
            _ = lock_check.tick() => {
                // A database restart ends the lock's session, and with it the
                // lock: stop, so that two replicas never consume at once.
                if let Some(conn) = leadership.as_mut()
                    && !matches!(tokio::time::timeout(RETRY, conn.ping()).await, Ok(Ok(())))
                {
                    return Err("the consumer lock's database session ended".into());
                }
                continue;
            }
        };
        let Some(first) = first else { return Err("the points ledger stream ended".into()) };
        let mut batch = vec![first?];
        while batch.len() < BATCH {
            match tokio::time::timeout(LINGER, stream.next()).await {
                Ok(Some(message)) => batch.push(message?),
                Ok(None) | Err(_) => break,
            }
        }
        // A filtered stream says how far it went past entries it did not send.
        let through = batch.iter().map(|m| m.through_sequence).max().unwrap_or(0);
        let entries: Vec<points::LedgerEntry> = batch.into_iter().filter_map(|m| m.entry).collect();
        if entries.is_empty() {
            progress.position.set(progress.position.get().max(through));
            continue;
        }
        let last = entries.iter().map(|e| e.sequence).max().unwrap_or(cursor);
        let written = entries.iter().filter_map(|e| e.created_at.as_ref()).map(|t| t.seconds).max();
        consumer.apply(entries, last).await?;
        progress.position.set(last.max(through));
        if let Some(written) = written {
            progress.entry_time.set(written);
        }
    }
}

// ---------------------------------------------------------------- cursors

// Where each follower stands is a row of `consumer_cursors` (consumer, last_sequence)
// in the follower's own database, written in the transaction that applies a batch.

/// The last sequence `consumer` applied (0 before the first).
pub async fn read_cursor<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    consumer: &str,
) -> Result<i64, sqlx::Error> {
    let last: Option<i64> = sqlx::query_scalar("SELECT last_sequence FROM consumer_cursors WHERE consumer = $1")
        .bind(consumer)
        .fetch_optional(executor)
        .await?;
    Ok(last.unwrap_or(0))
}

/// [`read_cursor`] inside a batch's transaction, the row locked on
/// PostgreSQL so two appliers of one consumer take turns.
pub async fn lock_cursor(conn: &mut AnyConnection, dialect: Dialect, consumer: &str) -> Result<i64, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT last_sequence FROM consumer_cursors WHERE consumer = $1{}",
        dialect.for_update()
    ));
    let last: Option<i64> = sqlx::query_scalar(sql).bind(consumer).fetch_optional(conn).await?;
    Ok(last.unwrap_or(0))
}

/// Moves `consumer`'s cursor forward to `last_sequence`, never back.
pub async fn advance_cursor<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    consumer: &str,
    last_sequence: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO consumer_cursors (consumer, last_sequence) VALUES ($1, $2) \
         ON CONFLICT (consumer) DO UPDATE SET last_sequence = excluded.last_sequence \
         WHERE consumer_cursors.last_sequence < excluded.last_sequence",
    )
    .bind(consumer)
    .bind(last_sequence)
    .execute(executor)
    .await?;
    Ok(())
}
