//! Group commit in front of the store: concurrent Earn, Spend and Adjust
//! calls are queued per account shard and each shard's worker commits what
//! has queued up as one batch ([`LedgerStore::execute_batch`]).
//!
//! Nobody waits for a batch to fill: a worker takes whatever is queued the
//! moment it is free, so an idle service commits a lone command at once,
//! and under load the commands that arrive while a batch commits form the
//! next one. An account always maps to the same worker, so concurrent
//! commands on a hot account land in one batch, under one lock, judged in
//! arrival order. Every caller hears its own result only after its batch
//! committed and the worker told the readers (the stream and, in one
//! round trip, the balance cache), whether or not the caller still listens.
//!
//! Each shard's queue is bounded: when it is full a command is refused at
//! once (UNAVAILABLE, safe to retry with its key) rather than queued behind
//! work the database cannot catch up with, and a queued command whose
//! caller has gone is dropped before its batch starts, never after.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;

use loyalty_common::coalesce::{Coalescer, Unanswered};
use loyalty_common::db;

use crate::error::Error;
use crate::service::{Readers, WriterSettings};
use crate::store::{BatchCommand, BatchFailure, Command, Execution, LedgerStore};

/// Most commands in one batch.
pub const MAX_BATCH: usize = 128;
/// How often a batch that lost a key race is run again before its commands
/// run one by one.
const RACE_RETRIES: usize = 3;
/// Commands of a failed batch that run alone at the same time: enough to
/// keep the pool busy, few enough to leave it to the other shards.
const ALONE_AT_ONCE: usize = 4;

/// The queues of the shard workers; cheap to share.
#[derive(Debug)]
pub struct Writer {
    shards: Vec<Coalescer<BatchCommand, Result<Execution, Error>>>,
    refused: Counter,
}

impl Writer {
    /// Starts the shard workers on the current runtime; they stop when the
    /// writer is dropped, after answering what is queued.
    pub fn start(store: LedgerStore, readers: Arc<Readers>, settings: WriterSettings) -> Self {
        let shards = (0..settings.workers.max(1))
            .map(|_| {
                let (store, readers) = (store.clone(), readers.clone());
                Coalescer::start("ledger", MAX_BATCH, settings.queue_capacity, move |commands: Vec<BatchCommand>| {
                    let (store, readers) = (store.clone(), readers.clone());
                    async move {
                        let mut results = run(&store, &commands).await;
                        readers.committed(results.iter_mut().filter_map(|r| r.as_mut().ok())).await;
                        results
                    }
                })
            })
            .collect();
        Self { shards, refused: settings.refused }
    }

    /// Runs `command` in the next batch of its account's shard.
    pub async fn execute(&self, program_id: &str, idempotency_key: &str, command: Command) -> Result<Execution, Error> {
        let command =
            BatchCommand { program_id: program_id.to_owned(), idempotency_key: idempotency_key.to_owned(), command };
        let mut hasher = DefaultHasher::new();
        (program_id, command.customer_id()).hash(&mut hasher);
        let shard = &self.shards[(hasher.finish() % self.shards.len() as u64) as usize];
        match shard.call(command).await {
            Ok(result) => result,
            Err(Unanswered::Full) => {
                self.refused.inc();
                Err(Error::Overloaded)
            }
            // The batch panicked (logged) or the writer is stopping.
            Err(Unanswered::Dropped) => Err(Error::Corrupt("the ledger writer dropped a command".into())),
        }
    }
}

/// One batch, run again after a lost key race. When the database is out of
/// reach every caller hears so at once; when the batch fails otherwise, each
/// command runs alone, so that one bad command fails alone.
async fn run(store: &LedgerStore, commands: &[BatchCommand]) -> Vec<Result<Execution, Error>> {
    for _ in 0..RACE_RETRIES {
        match store.execute_batch(commands).await {
            Ok(results) => return results,
            Err(BatchFailure::KeyRace) => continue,
            Err(BatchFailure::Database(error)) if db::is_out_of_reach(&error) => {
                tracing::warn!(%error, commands = commands.len(), "batch failed: the database is out of reach");
                return commands.iter().map(|_| Err(Error::Database(unreachable_copy(&error)))).collect();
            }
            Err(BatchFailure::Database(error)) => {
                tracing::warn!(%error, commands = commands.len(), "batch failed, running its commands one by one");
                break;
            }
        }
    }
    futures::stream::iter(0..commands.len()).map(|i| alone(store, &commands[i])).buffered(ALONE_AT_ONCE).collect().await
}

/// One command as a batch of its own, so that it takes its locks in the
/// batch order (accounts, then keys) like every other batched command. A key
/// still claimed by a one-command transaction (an older replica of this
/// service) after the retries is left to the one-command path, which waits
/// for that transaction.
async fn alone(store: &LedgerStore, command: &BatchCommand) -> Result<Execution, Error> {
    for _ in 0..RACE_RETRIES {
        match store.execute_batch(std::slice::from_ref(command)).await {
            Ok(mut results) => return results.pop().expect("one result per command"),
            Err(BatchFailure::KeyRace) => continue,
            Err(BatchFailure::Database(error)) => return Err(error.into()),
        }
    }
    store.execute(&command.program_id, &command.idempotency_key, command.command.clone()).await
}

/// The same outage, for each caller of the batch (`sqlx::Error` is not `Clone`).
fn unreachable_copy(error: &sqlx::Error) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, error.to_string()))
}
