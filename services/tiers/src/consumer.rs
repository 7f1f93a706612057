//! Follows the points ledger through `StreamEvents` from the cursor stored
//! in our database, and applies entries in batches, each batch in one
//! transaction with the cursor. After downtime it resumes where it stopped;
//! entries it already counted are skipped, so nothing counts twice.
//!
//! Only one consumer runs at a time: on PostgreSQL, replicas take turns
//! through an advisory lock held for as long as they consume.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sqlx::AnyConnection;

use loyalty_common::clock::from_timestamp;
use loyalty_common::db::Dialect;
use loyalty_common::shutdown::ShutdownSignal;
use loyalty_common::telemetry::inject_trace_context;
use loyalty_proto::points::v1 as points;
use loyalty_proto::points::v1::points_service_client::PointsServiceClient;

use crate::service::Tiers;
use crate::store::QualifyingEntry;

/// Entries applied per transaction at most.
const BATCH: usize = 256;
/// How long a batch waits for more entries before it is applied.
const LINGER: Duration = Duration::from_millis(20);
const RETRY: Duration = Duration::from_secs(1);
const LEADER_LOCK_KEY: i64 = 0x0074_6965_7273_0001;

/// Runs until shutdown, reconnecting after any failure.
pub async fn run(tiers: Arc<Tiers>, points_addr: String, mut shutdown: ShutdownSignal) {
    let uri = if points_addr.contains("://") { points_addr } else { format!("http://{points_addr}") };
    loop {
        let leadership = match become_leader(&tiers, &mut shutdown).await {
            Some(lock) => lock,
            None => return,
        };
        match consume(&tiers, &uri, &mut shutdown).await {
            Ok(()) => return,
            Err(error) => tracing::warn!(%error, "ledger consumer interrupted, reconnecting"),
        }
        drop(leadership);
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            () = shutdown.fired() => return,
        }
    }
}

/// Waits for the consumer lock (PostgreSQL); `None` on shutdown.
async fn become_leader(tiers: &Tiers, shutdown: &mut ShutdownSignal) -> Option<Option<AnyConnection>> {
    let db = tiers.store().database();
    if db.dialect == Dialect::Sqlite {
        return Some(None);
    }
    loop {
        if let Ok(mut conn) = db.pool.acquire().await {
            let locked: Result<bool, _> =
                sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(LEADER_LOCK_KEY).fetch_one(&mut *conn).await;
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

async fn consume(tiers: &Tiers, uri: &str, shutdown: &mut ShutdownSignal) -> Result<(), Box<dyn std::error::Error>> {
    let channel = tonic::transport::Endpoint::from_shared(uri.to_owned())?.connect().await?;
    let mut client = PointsServiceClient::with_interceptor(channel, inject_trace_context);
    let cursor = tiers.store().cursor().await?;
    let request = points::StreamEventsRequest { after_sequence: cursor, program_id: String::new() };
    let mut stream = client.stream_events(request).await?.into_inner();
    tracing::info!(after_sequence = cursor, "following the points ledger");
    loop {
        let first = tokio::select! {
            next = stream.next() => next,
            () = shutdown.fired() => return Ok(()),
        };
        let Some(first) = first else { return Err("the points ledger stream ended".into()) };
        let mut batch = vec![first?];
        while batch.len() < BATCH {
            match tokio::time::timeout(LINGER, stream.next()).await {
                Ok(Some(message)) => batch.push(message?),
                Ok(None) | Err(_) => break,
            }
        }
        let last = batch.iter().filter_map(|m| m.entry.as_ref()).map(|e| e.sequence).max().unwrap_or(cursor);
        let entries: Vec<QualifyingEntry> = batch.into_iter().filter_map(|m| m.entry).filter_map(qualifying).collect();
        tiers.apply(&entries, last).await?;
    }
}

/// Earns qualify; reversals stop qualifying. Spends, expiry, adjustments
/// and activations leave qualifying points alone.
fn qualifying(entry: points::LedgerEntry) -> Option<QualifyingEntry> {
    let kind = points::EntryKind::try_from(entry.kind).ok()?;
    let (points, reverses) = match kind {
        points::EntryKind::Earn => (entry.amount, None),
        points::EntryKind::Reverse => (-entry.amount, Some(entry.related_transaction_id)),
        _ => return None,
    };
    Some(QualifyingEntry {
        sequence: entry.sequence,
        transaction_id: entry.transaction_id,
        program_id: entry.program_id,
        customer_id: entry.customer_id,
        points,
        occurred_at: entry.created_at.as_ref().and_then(from_timestamp).unwrap_or_default(),
        reverses,
    })
}
