//! The gRPC face of the ledger: the only file that touches prost types.
//! Every request is validated here, at the edge, before it reaches the ledger.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use loyalty_common::clock::{MICROS_PER_SECOND, Micros, from_timestamp, to_timestamp};
use loyalty_common::shutdown::ShutdownSignal;
use loyalty_common::validate::{self, FieldViolation};
use loyalty_proto::points::v1 as pb;
use loyalty_proto::points::v1::points_service_server::PointsService;

use crate::domain::{Balance, EntryKind, MAX_POINTS_PER_COMMAND};
use crate::error::Error;
use crate::ledger::Ledger;
use crate::store::{Command, EarnRef, Execution, LedgerRow};

const DEFAULT_PAGE_SIZE: i32 = 50;
const MAX_PAGE_SIZE: i32 = 200;
const MAX_EXPIRING_HORIZON: Micros = 10 * 366 * 86_400 * MICROS_PER_SECOND;
/// Entries read per query while a stream catches up.
const STREAM_BATCH: i64 = 500;
/// A stream re-checks the database at least this often, for entries
/// published by another replica.
const STREAM_POLL: std::time::Duration = std::time::Duration::from_millis(500);

pub struct PointsApi {
    ledger: Arc<Ledger>,
    shutdown: ShutdownSignal,
}

impl PointsApi {
    pub fn new(ledger: Arc<Ledger>, shutdown: ShutdownSignal) -> Self {
        Self { ledger, shutdown }
    }

    async fn write(
        &self,
        program_id: &str,
        key: &str,
        command: Command,
    ) -> Result<Execution, Status> {
        let execution = self.ledger.execute(program_id, key, command).await?;
        Ok(execution)
    }
}

/// Collects every bad field of a request before answering.
#[derive(Default)]
struct Check(Vec<FieldViolation>);

impl Check {
    fn add(&mut self, result: Result<(), FieldViolation>) -> &mut Self {
        if let Err(violation) = result {
            self.0.push(violation);
        }
        self
    }

    fn id(&mut self, field: &str, value: &str) -> &mut Self {
        self.add(validate::id(field, value))
    }

    fn text(&mut self, field: &str, value: &str) -> &mut Self {
        self.add(validate::text(field, value))
    }

    fn points(&mut self, field: &str, value: i64) -> &mut Self {
        self.add(validate::positive(field, value, MAX_POINTS_PER_COMMAND))
    }

    fn timestamp(&mut self, field: &str, value: Option<&prost_types::Timestamp>) -> Option<Micros> {
        let ts = value?;
        let micros = from_timestamp(ts);
        if micros.is_none() {
            self.0
                .push(FieldViolation::new(field, "is not a valid timestamp"));
        }
        micros
    }

    fn done(self) -> Result<(), Status> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(self.0).into())
        }
    }
}

fn respond<T>(execution: &Execution, message: T) -> Response<T> {
    let mut response = Response::new(message);
    if execution.replayed {
        // Lets a caller tell a replay from a first execution without changing the body.
        response.metadata_mut().insert(
            "idempotent-replayed",
            "true".parse().expect("static header value"),
        );
    }
    response
}

#[tonic::async_trait]
impl PointsService for PointsApi {
    async fn earn(
        &self,
        request: Request<pb::EarnRequest>,
    ) -> Result<Response<pb::EarnResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check
            .id("program_id", &r.program_id)
            .id("customer_id", &r.customer_id)
            .id("idempotency_key", &r.idempotency_key);
        check.points("points", r.points).text("reason", &r.reason);
        let pending_until = check.timestamp("pending_until", r.pending_until.as_ref());
        let expires_at = check.timestamp("expires_at", r.expires_at.as_ref());
        check.done()?;
        let command = Command::Earn {
            customer_id: r.customer_id,
            points: r.points,
            reason: r.reason,
            pending_until,
            expires_at,
        };
        let execution = self
            .write(&r.program_id, &r.idempotency_key, command)
            .await?;
        let receipt = &execution.receipt;
        let message = pb::EarnResponse {
            transaction_id: receipt.transaction_id.clone(),
            balance: Some(balance(&receipt.balance)),
        };
        Ok(respond(&execution, message))
    }

    async fn spend(
        &self,
        request: Request<pb::SpendRequest>,
    ) -> Result<Response<pb::SpendResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check
            .id("program_id", &r.program_id)
            .id("customer_id", &r.customer_id)
            .id("idempotency_key", &r.idempotency_key);
        check.points("points", r.points).text("reason", &r.reason);
        check.done()?;
        let command = Command::Spend {
            customer_id: r.customer_id,
            points: r.points,
            reason: r.reason,
        };
        let execution = self
            .write(&r.program_id, &r.idempotency_key, command)
            .await?;
        let receipt = &execution.receipt;
        let message = pb::SpendResponse {
            transaction_id: receipt.transaction_id.clone(),
            balance: Some(balance(&receipt.balance)),
        };
        Ok(respond(&execution, message))
    }

    async fn reverse(
        &self,
        request: Request<pb::ReverseRequest>,
    ) -> Result<Response<pb::ReverseResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check
            .id("program_id", &r.program_id)
            .id("idempotency_key", &r.idempotency_key)
            .text("reason", &r.reason);
        let original = match r.original {
            Some(pb::reverse_request::Original::OriginalTransactionId(id)) => {
                check.id("original_transaction_id", &id);
                Some(EarnRef::TransactionId(id))
            }
            Some(pb::reverse_request::Original::OriginalIdempotencyKey(key)) => {
                check.id("original_idempotency_key", &key);
                Some(EarnRef::IdempotencyKey(key))
            }
            None => {
                check.add(Err(FieldViolation::new(
                    "original",
                    "set original_transaction_id or original_idempotency_key",
                )));
                None
            }
        };
        if let Some(points) = r.points {
            check.points("points", points);
        }
        check.done()?;
        let original = original.expect("validated above");
        let command = Command::Reverse {
            original,
            points: r.points,
            reason: r.reason,
        };
        let execution = self
            .write(&r.program_id, &r.idempotency_key, command)
            .await?;
        let receipt = &execution.receipt;
        let message = pb::ReverseResponse {
            transaction_id: receipt.transaction_id.clone(),
            customer_id: receipt.customer_id.clone(),
            points_reversed: receipt.points,
            balance: Some(balance(&receipt.balance)),
        };
        Ok(respond(&execution, message))
    }

    async fn adjust(
        &self,
        request: Request<pb::AdjustRequest>,
    ) -> Result<Response<pb::AdjustResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check
            .id("program_id", &r.program_id)
            .id("customer_id", &r.customer_id)
            .id("idempotency_key", &r.idempotency_key);
        check
            .points("points", r.points.checked_abs().unwrap_or(i64::MAX))
            .text("reason", &r.reason);
        if r.reason.trim().is_empty() {
            check.add(Err(FieldViolation::new(
                "reason",
                "an adjustment needs a reason",
            )));
        }
        let expires_at = check.timestamp("expires_at", r.expires_at.as_ref());
        if r.points < 0 && expires_at.is_some() {
            check.add(Err(FieldViolation::new(
                "expires_at",
                "only applies to a positive adjustment",
            )));
        }
        check.done()?;
        let command = Command::Adjust {
            customer_id: r.customer_id,
            points: r.points,
            reason: r.reason,
            expires_at,
            allow_debt: r.allow_debt,
        };
        let execution = self
            .write(&r.program_id, &r.idempotency_key, command)
            .await?;
        let receipt = &execution.receipt;
        let message = pb::AdjustResponse {
            transaction_id: receipt.transaction_id.clone(),
            balance: Some(balance(&receipt.balance)),
        };
        Ok(respond(&execution, message))
    }

    async fn activate_pending(
        &self,
        request: Request<pb::ActivatePendingRequest>,
    ) -> Result<Response<pb::ActivatePendingResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check
            .id("program_id", &r.program_id)
            .id("customer_id", &r.customer_id)
            .id("idempotency_key", &r.idempotency_key);
        if !r.earn_transaction_id.is_empty() {
            check.id("earn_transaction_id", &r.earn_transaction_id);
        }
        check.done()?;
        let earn = Some(r.earn_transaction_id).filter(|id| !id.is_empty());
        let command = Command::ActivatePending {
            customer_id: r.customer_id,
            earn_transaction_id: earn,
        };
        let execution = self
            .write(&r.program_id, &r.idempotency_key, command)
            .await?;
        let receipt = &execution.receipt;
        let message = pb::ActivatePendingResponse {
            points_activated: receipt.points,
            transaction_ids: receipt.transaction_ids.clone(),
            balance: Some(balance(&receipt.balance)),
        };
        Ok(respond(&execution, message))
    }

    async fn get_balance(
        &self,
        request: Request<pb::GetBalanceRequest>,
    ) -> Result<Response<pb::GetBalanceResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check
            .id("program_id", &r.program_id)
            .id("customer_id", &r.customer_id);
        check.done()?;
        let found = self.ledger.balance(&r.program_id, &r.customer_id).await?;
        Ok(Response::new(pb::GetBalanceResponse {
            balance: Some(balance(&found)),
        }))
    }

    async fn list_transactions(
        &self,
        request: Request<pb::ListTransactionsRequest>,
    ) -> Result<Response<pb::ListTransactionsResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check
            .id("program_id", &r.program_id)
            .id("customer_id", &r.customer_id);
        if !(0..=MAX_PAGE_SIZE).contains(&r.page_size) {
            check.add(Err(FieldViolation::new(
                "page_size",
                format!("must be between 0 and {MAX_PAGE_SIZE}"),
            )));
        }
        let before = if r.page_token.is_empty() {
            None
        } else {
            let parsed = r.page_token.parse::<i64>().ok().filter(|id| *id > 0);
            if parsed.is_none() {
                check.add(Err(FieldViolation::new(
                    "page_token",
                    "is not a token from a previous page",
                )));
            }
            parsed
        };
        check.done()?;
        let page_size = if r.page_size == 0 {
            DEFAULT_PAGE_SIZE
        } else {
            r.page_size
        };
        // One extra row tells whether another page follows.
        let mut rows = self
            .ledger
            .entries(
                &r.program_id,
                &r.customer_id,
                before,
                i64::from(page_size) + 1,
            )
            .await?;
        let more = rows.len() > usize::try_from(page_size).unwrap_or(0);
        rows.truncate(usize::try_from(page_size).unwrap_or(0));
        let next_page_token = if more {
            rows.last()
                .map(|row| row.id.to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListTransactionsResponse {
            entries: rows.iter().map(entry).collect(),
            next_page_token,
        }))
    }

    async fn get_expiring_points(
        &self,
        request: Request<pb::GetExpiringPointsRequest>,
    ) -> Result<Response<pb::GetExpiringPointsResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check
            .id("program_id", &r.program_id)
            .id("customer_id", &r.customer_id);
        let within = match r.within {
            None => {
                check.add(Err(FieldViolation::new(
                    "within",
                    "is required, e.g. 2592000s for 30 days",
                )));
                0
            }
            Some(d) => {
                let micros = d
                    .seconds
                    .checked_mul(MICROS_PER_SECOND)
                    .and_then(|s| s.checked_add(i64::from(d.nanos / 1_000)));
                match micros {
                    Some(m) if m > 0 && m <= MAX_EXPIRING_HORIZON => m,
                    _ => {
                        check.add(Err(FieldViolation::new(
                            "within",
                            "must be positive and at most 10 years",
                        )));
                        0
                    }
                }
            }
        };
        check.done()?;
        let until = self.ledger.now().saturating_add(within);
        let lots = self
            .ledger
            .expiring(&r.program_id, &r.customer_id, until)
            .await?;
        let total_points = lots.iter().map(|(_, points)| points).sum();
        let expiring = lots
            .into_iter()
            .map(|(at, points)| pb::ExpiringPoints {
                points,
                expires_at: Some(to_timestamp(at)),
            })
            .collect();
        Ok(Response::new(pb::GetExpiringPointsResponse {
            expiring,
            total_points,
        }))
    }

    async fn run_expiry(
        &self,
        request: Request<pb::RunExpiryRequest>,
    ) -> Result<Response<pb::RunExpiryResponse>, Status> {
        let r = request.into_inner();
        let program = if r.program_id.is_empty() {
            None
        } else {
            let mut check = Check::default();
            check.id("program_id", &r.program_id);
            check.done()?;
            Some(r.program_id.as_str())
        };
        let run = self.ledger.run_expiry(program).await?;
        Ok(Response::new(pb::RunExpiryResponse {
            accounts_settled: run.accounts_settled,
            points_expired: run.points_expired,
            points_activated: run.points_activated,
        }))
    }

    type StreamEventsStream =
        Pin<Box<dyn Stream<Item = Result<pb::StreamEventsResponse, Status>> + Send + 'static>>;

    async fn stream_events(
        &self,
        request: Request<pb::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        if r.after_sequence < 0 {
            check.add(Err(FieldViolation::new(
                "after_sequence",
                "must not be negative",
            )));
        }
        if !r.program_id.is_empty() {
            check.id("program_id", &r.program_id);
        }
        check.done()?;
        let (tx, rx) = mpsc::channel(STREAM_BATCH as usize);
        let ledger = self.ledger.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(feed_stream(
            ledger,
            r.after_sequence,
            r.program_id,
            tx,
            shutdown,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Sends every published entry after `cursor`, then waits for more, until
/// the client goes away or the server shuts down.
async fn feed_stream(
    ledger: Arc<Ledger>,
    mut cursor: i64,
    program_id: String,
    tx: mpsc::Sender<Result<pb::StreamEventsResponse, Status>>,
    mut shutdown: ShutdownSignal,
) {
    let mut published = ledger.published();
    loop {
        let rows = match ledger
            .entries_after(cursor, &program_id, STREAM_BATCH)
            .await
        {
            Ok(rows) => rows,
            Err(error) => {
                let _ = tx.send(Err(error.into())).await;
                return;
            }
        };
        let caught_up = rows.len() < STREAM_BATCH as usize;
        for row in &rows {
            if tx
                .send(Ok(pb::StreamEventsResponse {
                    entry: Some(entry(row)),
                }))
                .await
                .is_err()
            {
                return;
            }
            cursor = row.sequence;
        }
        if caught_up {
            published.mark_unchanged();
            tokio::select! {
                _ = published.changed() => {}
                () = tokio::time::sleep(STREAM_POLL) => {}
                () = tx.closed() => return,
                () = shutdown.fired() => return,
            }
        }
    }
}

fn balance(b: &Balance) -> pb::Balance {
    pb::Balance {
        available: b.available,
        pending: b.pending,
        lifetime_earned: b.lifetime_earned,
        spent: b.spent,
        expired: b.expired,
        reversed: b.reversed,
        next_expiry_points: b.next_expiry_points,
        next_expiry_at: b.next_expiry_at.map(to_timestamp),
        version: b.version,
    }
}

fn entry(row: &LedgerRow) -> pb::LedgerEntry {
    pb::LedgerEntry {
        transaction_id: row.transaction_id.clone(),
        sequence: row.sequence,
        program_id: row.program_id.clone(),
        customer_id: row.customer_id.clone(),
        kind: kind(row.kind) as i32,
        points: row.points,
        pending_points: row.pending_points,
        reason: row.reason.clone(),
        related_transaction_id: row.related_transaction_id.clone(),
        created_at: Some(to_timestamp(row.created_at)),
        pending_until: row.pending_until.map(to_timestamp),
        expires_at: row.expires_at.map(to_timestamp),
    }
}

fn kind(kind: EntryKind) -> pb::EntryKind {
    match kind {
        EntryKind::Earn => pb::EntryKind::Earn,
        EntryKind::Spend => pb::EntryKind::Spend,
        EntryKind::Reverse => pb::EntryKind::Reverse,
        EntryKind::Adjust => pb::EntryKind::Adjust,
        EntryKind::Activate => pb::EntryKind::Activate,
        EntryKind::Expire => pb::EntryKind::Expire,
    }
}
