//! Group commit: many Earn, Spend and Adjust commands in one transaction,
//! with a constant number of statements per batch, not per command.
//!
//! One batch: look up every key (one `SELECT`), lock every account in key
//! order, creating the new ones in the same pass (one upsert, then one
//! `SELECT` to read them), load
//! the open lots of the accounts that need them (one `SELECT`), let the
//! domain judge each command in arrival order against the running state of
//! its account, then write lots, entries, accounts and the saved results
//! with one multi-row statement each, and commit once. The rows travel as
//! one JSON parameter per statement (`jsonb_to_recordset` on PostgreSQL,
//! `json_each` on SQLite), since the `Any` driver binds no arrays.
//!
//! A refused command changes nothing: its account's state is put back and
//! its key is not saved, exactly as when it ran alone. Several commands on
//! one account take its lock once. A key that another transaction saved
//! while this batch ran makes the batch roll back, to be run again (then it
//! is a replay); any other database failure is the caller's to handle.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use sqlx::Row;

use loyalty_common::db::{self, Dialect};
use loyalty_common::idempotency::request_hash;

use super::{
    ACCOUNT_COLUMNS, Command, Execution, LOT_COLUMNS, LedgerStore, Receipt, account_from_row, lot_from_row, lot_state,
    open_batch_sql, qualified_columns, within_block,
};
use crate::domain::{Account, AccountBook, EntryKind, NewEntry, PointLot, RuleViolation, new_transaction_id};
use crate::error::Error;

/// One command of a batch.
#[derive(Debug, Clone)]
pub struct BatchCommand {
    pub program_id: String,
    pub idempotency_key: String,
    pub command: Command,
}

impl BatchCommand {
    /// Whether the batch path runs it: commands on a named account that
    /// touch only its lots, entries and projection.
    pub fn supported(command: &Command) -> bool {
        matches!(
            command,
            Command::Earn { .. } | Command::Spend { .. } | Command::Adjust { .. } | Command::OrderEarn { .. }
        )
    }

    pub fn customer_id(&self) -> &str {
        match &self.command {
            Command::Earn { customer_id, .. }
            | Command::Spend { customer_id, .. }
            | Command::Adjust { customer_id, .. } => customer_id,
            Command::OrderEarn { order, .. } => &order.customer_id,
            other => unreachable!("{} is not batched", other.method()),
        }
    }
}

/// Why a batch did not commit.
#[derive(Debug)]
pub enum BatchFailure {
    /// A key of the batch was saved by another transaction meanwhile: run
    /// the batch again, that command is then a replay.
    KeyRace,
    Database(sqlx::Error),
}

impl From<sqlx::Error> for BatchFailure {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(error)
    }
}

/// An account as the batch works on it.
struct Working {
    account: Account,
    lots: Vec<PointLot>,
    all_open_lots_loaded: bool,
    /// Entries of a settlement due before the first command, written with the
    /// first command that succeeds.
    settled: Vec<NewEntry>,
    inserted: HashSet<String>,
    dirty: HashSet<String>,
    changed: bool,
}

/// What a successful command writes.
struct Done {
    index: usize,
    key: String,
    method: &'static str,
    hash: String,
    receipt: Receipt,
    account: Account,
    entries: Vec<NewEntry>,
    actor: String,
    /// For an order earn: the order, its amount and base points.
    order: Option<(String, i64, i64, String)>,
}

impl LedgerStore {
    /// Runs `commands` as one transaction; one result per command, in order.
    /// `Err` when nothing was committed.
    pub async fn execute_batch(
        &self,
        commands: &[BatchCommand],
    ) -> Result<Vec<Result<Execution, Error>>, BatchFailure> {
        let dialect = self.db.dialect;
        let now = self.clock.now();
        let mut results: Vec<Option<Result<Execution, Error>>> = (0..commands.len()).map(|_| None).collect();
        let hashes: Vec<String> =
            commands.iter().map(|c| request_hash(&c.program_id, &c.command.request_identity())).collect();
        let mut tx = match dialect {
            // The row sources are JSON the planner knows nothing of: without
            // this, a table whose statistics lag behind its growth (any
            // young ledger) is scanned whole for every batch. Each statement
            // of a batch is meant as a nested loop over primary-key lookups.
            Dialect::Postgres => db::begin_by_index(&self.db.pool).await?,
            Dialect::Sqlite => self.begin().await?,
        };

        // Replays, and keys reused for another request.
        let keys: Vec<KeyRef> = commands
            .iter()
            .map(|c| KeyRef { p: &c.program_id, m: c.command.method(), k: &c.idempotency_key })
            .collect();
        let sql = format!(
            "SELECT k.program_id, k.method, k.idempotency_key, k.request_hash, k.response FROM idempotency_keys k \
             JOIN {} ON k.program_id = r.p AND k.method = r.m AND k.idempotency_key = r.k",
            recordset(dialect, &[("p", TEXT), ("m", TEXT), ("k", TEXT)])
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(json_rows(&keys)).fetch_all(&mut *tx).await?;
        let mut saved = HashMap::new();
        for row in &rows {
            let id: (String, String, String) =
                (row.try_get("program_id")?, row.try_get("method")?, row.try_get("idempotency_key")?);
            saved
                .insert(id, (row.try_get::<String, _>("request_hash")?, row.try_get::<Option<String>, _>("response")?));
        }
        let mut live = Vec::new();
        for (i, c) in commands.iter().enumerate() {
            let method = c.command.method();
            let id = (c.program_id.clone(), method.to_owned(), c.idempotency_key.clone());
            match saved.get(&id) {
                None => live.push(i),
                Some((hash, _)) if *hash != hashes[i] => results[i] = Some(Err(Error::IdempotencyKeyReused { method })),
                Some((_, Some(response))) => {
                    results[i] = Some(
                        serde_json::from_str(response)
                            .map(Execution::replay)
                            .map_err(|e| Error::Corrupt(e.to_string())),
                    );
                }
                // Claimed by a single-command transaction still in flight:
                // that one decides; ask again as a race.
                Some((_, None)) => return Err(BatchFailure::KeyRace),
            }
        }
        if live.is_empty() {
            tx.rollback().await?;
            return Ok(finish(results, &[]));
        }

        // Lock the accounts in key order, creating the new ones in the same pass.
        let mut accounts: BTreeMap<(String, String), Option<Account>> = BTreeMap::new();
        for &i in &live {
            accounts.entry((commands[i].program_id.clone(), commands[i].customer_id().to_owned())).or_insert(None);
        }
        let wanted: Vec<AccountRef> = accounts.keys().map(|(p, c)| AccountRef { p, c }).collect();
        for found in self.lock_accounts(&mut tx, &json_rows(&wanted)).await? {
            accounts.insert((found.program_id.clone(), found.customer_id.clone()), Some(found));
        }

        // Open lots, for the accounts whose commands consume or that are due.
        let mut needs_lots: HashSet<(String, String)> = HashSet::new();
        for &i in &live {
            let key = (commands[i].program_id.clone(), commands[i].customer_id().to_owned());
            let due = accounts[&key].as_ref().is_some_and(|a| a.is_due(now));
            if due || !commands[i].command.only_adds() {
                needs_lots.insert(key);
            }
        }
        let mut lots: HashMap<(String, String), Vec<PointLot>> = HashMap::new();
        if !needs_lots.is_empty() {
            let which: Vec<AccountRef> = needs_lots.iter().map(|(p, c)| AccountRef { p, c }).collect();
            let sql = format!(
                "SELECT l.program_id AS lot_program_id, l.customer_id AS lot_customer_id, {} FROM point_lots l \
                 JOIN {} ON l.program_id = r.p AND l.customer_id = r.c WHERE l.remaining > 0",
                qualified_columns("l", LOT_COLUMNS),
                recordset(dialect, &[("p", TEXT), ("c", TEXT)])
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(json_rows(&which)).fetch_all(&mut *tx).await?;
            for row in &rows {
                let key: (String, String) = (row.try_get("lot_program_id")?, row.try_get("lot_customer_id")?);
                lots.entry(key).or_default().push(lot_from_row(row)?);
            }
        }
        let mut working: HashMap<(String, String), Working> = HashMap::new();
        for (key, account) in accounts {
            let account = account.ok_or_else(|| sqlx::Error::RowNotFound)?;
            let loaded = needs_lots.contains(&key);
            let mut work = Working {
                account,
                lots: lots.remove(&key).unwrap_or_default(),
                all_open_lots_loaded: loaded,
                settled: Vec::new(),
                inserted: HashSet::new(),
                dirty: HashSet::new(),
                changed: false,
            };
            if loaded {
                let mut book = AccountBook::new(work.account.clone(), std::mem::take(&mut work.lots), true, now);
                book.settle();
                work.dirty.extend(book.lots.iter().filter(|l| l.dirty).map(|l| l.lot_id.clone()));
                // A settlement that only moved the account's next due time
                // is written with the batch even if no command on this
                // account succeeds (not when none in the whole batch does:
                // then nothing is written, and the next command settles
                // again); one with entries goes with the first success.
                work.changed = book.entries.is_empty() && book.account != work.account;
                work.account = book.account;
                work.lots = book.lots;
                work.settled = book.entries;
            }
            working.insert(key, work);
        }

        // Judge each command, in arrival order, against its account as the
        // commands before it left it. A key seen earlier in the batch is
        // answered as if the earlier command had run alone before it: after
        // a success it is a replay (or, with other arguments, a reused key);
        // after a refusal, which saves nothing, it runs afresh.
        let mut done = Vec::new();
        let mut succeeded: HashMap<(&str, &str, &str), usize> = HashMap::new();
        let mut duplicates = Vec::new();
        for &i in &live {
            let c = &commands[i];
            let id = (c.program_id.as_str(), c.command.method(), c.idempotency_key.as_str());
            if let Some(&first) = succeeded.get(&id) {
                if hashes[first] == hashes[i] {
                    duplicates.push((i, first));
                } else {
                    results[i] = Some(Err(Error::IdempotencyKeyReused { method: c.command.method() }));
                }
                continue;
            }
            let key = (c.program_id.clone(), c.customer_id().to_owned());
            let work = working.get_mut(&key).expect("every account was loaded");
            match run(work, c, now) {
                Ok((receipt, entries)) => {
                    succeeded.insert(id, i);
                    done.push(Done {
                        index: i,
                        key: c.idempotency_key.clone(),
                        method: c.command.method(),
                        hash: hashes[i].clone(),
                        receipt,
                        account: work.account.clone(),
                        entries,
                        actor: match &c.command {
                            Command::Adjust { actor, .. } => actor.clone(),
                            _ => String::new(),
                        },
                        order: match &c.command {
                            Command::OrderEarn { order, breakdown, .. } => Some((
                                order.order_id.clone(),
                                order.amount_minor,
                                breakdown.base_points,
                                order.currency.clone(),
                            )),
                            _ => None,
                        },
                    })
                }
                Err(violation) => results[i] = Some(Err(violation.into())),
            }
        }

        if !done.is_empty() {
            let published_up_to = self.write_batch(&mut tx, &working, &done, now).await?;
            tx.commit().await?;
            for d in done {
                results[d.index] = Some(Ok(Execution {
                    receipt: d.receipt,
                    replayed: false,
                    account: Some(d.account),
                    published_up_to,
                    cache_doubt: None,
                }));
            }
        } else {
            tx.rollback().await?;
        }
        Ok(finish(results, &duplicates))
    }

    /// Locks the listed accounts (`[{p, c}]`) strictly in key order, creating
    /// the missing ones on the way, and returns them all. One upsert takes
    /// every lock, row after row in key order: an existing account is locked
    /// by its conflict (`DO UPDATE … WHERE false` locks without writing a new
    /// version), a new one by its insert; so no batch holds one account while
    /// it waits for a smaller one, and none can deadlock another or a
    /// one-command write (which locks one account). The accounts are then read
    /// by a statement of their own, whose snapshot follows the locks.
    async fn lock_accounts(&self, tx: &mut sqlx::AnyConnection, which: &str) -> Result<Vec<Account>, sqlx::Error> {
        let rows = recordset(self.db.dialect, &[("p", TEXT), ("c", TEXT)]);
        let lock = format!(
            "INSERT INTO accounts (program_id, customer_id) SELECT r.p, r.c FROM {rows} WHERE true \
             ORDER BY r.p, r.c ON CONFLICT (program_id, customer_id) DO UPDATE SET version = accounts.version \
             WHERE false"
        );
        sqlx::query(sqlx::AssertSqlSafe(lock)).bind(which).execute(&mut *tx).await?;
        let read = format!(
            "SELECT {} FROM accounts a JOIN {rows} ON a.program_id = r.p AND a.customer_id = r.c",
            qualified_columns("a", ACCOUNT_COLUMNS),
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(read)).bind(which).fetch_all(&mut *tx).await?;
        rows.iter().map(account_from_row).collect()
    }

    /// The batch's writes: one statement per table. Returns the highest
    /// stream position written when numbered here (SQLite).
    async fn write_batch(
        &self,
        tx: &mut sqlx::AnyConnection,
        working: &HashMap<(String, String), Working>,
        done: &[Done],
        now: i64,
    ) -> Result<Option<i64>, BatchFailure> {
        let dialect = self.db.dialect;
        let (mut new_lots, mut changed_lots, mut changed_accounts) = (Vec::new(), Vec::new(), Vec::new());
        for ((program_id, customer_id), work) in working.iter().filter(|(_, w)| w.changed) {
            for lot in &work.lots {
                let row = LotRow {
                    lot_id: &lot.lot_id,
                    p: program_id,
                    c: customer_id,
                    original: lot.original,
                    remaining: lot.remaining,
                    consumed: lot.consumed,
                    expired: lot.expired,
                    reversed: lot.reversed,
                    expired_reversed: lot.expired_reversed,
                    state: lot_state(lot.active),
                    pending_until_us: lot.pending_until,
                    expires_at_us: lot.expires_at,
                    earned_at_us: lot.earned_at,
                };
                if work.inserted.contains(&lot.lot_id) {
                    new_lots.push(row);
                } else if work.dirty.contains(&lot.lot_id) {
                    changed_lots.push(row);
                }
            }
            let a = &work.account;
            changed_accounts.push(AccountRow {
                p: program_id,
                c: customer_id,
                available: a.available,
                pending: a.pending,
                lifetime_earned: a.lifetime_earned,
                spent: a.spent,
                expired: a.expired,
                reversed: a.reversed,
                debt: a.debt,
                version: a.version,
                next_transition_us: a.next_transition_at,
                next_expiry_us: a.next_expiry_at,
                next_expiry_points: a.next_expiry_points,
            });
        }
        const LOT: &[(&str, &str)] = &[
            ("lot_id", TEXT),
            ("p", TEXT),
            ("c", TEXT),
            ("original", BIGINT),
            ("remaining", BIGINT),
            ("consumed", BIGINT),
            ("expired", BIGINT),
            ("reversed", BIGINT),
            ("expired_reversed", BIGINT),
            ("state", TEXT),
            ("pending_until_us", BIGINT),
            ("expires_at_us", BIGINT),
            ("earned_at_us", BIGINT),
        ];

        // Entries, in the order the commands ran; SQLite numbers them here,
        // under its one writer's lock.
        let mut next_seq = match dialect {
            Dialect::Sqlite => {
                let max: Option<i64> =
                    sqlx::query_scalar("SELECT MAX(seq) FROM ledger_entries").fetch_one(&mut *tx).await?;
                Some(max.unwrap_or(0))
            }
            Dialect::Postgres => None,
        };
        let (mut entries, mut orders, mut keys) = (Vec::new(), Vec::new(), Vec::new());
        for d in done {
            for entry in &d.entries {
                let seq = next_seq.as_mut().map(|s| {
                    *s += 1;
                    *s
                });
                // The order's own entry says which order it belongs to.
                let (order_id, order_amount, base_points) = match &d.order {
                    Some((id, amount, base, _)) if entry.transaction_id == d.receipt.transaction_id => {
                        (id.as_str(), *amount, *base)
                    }
                    _ => ("", 0, 0),
                };
                entries.push(EntryRow {
                    ordinal: entries.len(),
                    transaction_id: &entry.transaction_id,
                    p: &d.account.program_id,
                    c: &d.account.customer_id,
                    kind: entry.kind.as_str(),
                    points: entry.points,
                    pending_points: entry.pending_points,
                    reason: &entry.reason,
                    related: &entry.related_transaction_id,
                    created_at_us: now,
                    pending_until_us: entry.pending_until,
                    expires_at_us: entry.expires_at,
                    amount: entry.amount,
                    actor: &d.actor,
                    seq,
                    order_id,
                    order_amount,
                    base_points,
                    draws: entry.draws_text(),
                });
            }
            if let Some((order_id, amount, _, currency)) = &d.order {
                orders.push(OrderRow {
                    p: &d.account.program_id,
                    o: order_id,
                    c: &d.account.customer_id,
                    amount: *amount,
                    currency,
                    points: d.receipt.points,
                    t: &d.receipt.transaction_id,
                    at: now,
                });
            }
            let response = serde_json::to_string(&d.receipt).expect("receipts serialise");
            keys.push(KeyRow {
                p: &d.account.program_id,
                m: d.method,
                k: &d.key,
                h: &d.hash,
                t: &d.receipt.transaction_id,
                r: response,
                at: now,
            });
        }

        within_block(entries.len()).map_err(|message| BatchFailure::Database(sqlx::Error::Protocol(message)))?;
        let entry_count = entries.len() as i64;
        // PostgreSQL: the entries take their ids from the block of the
        // batch's `ledger_batches` row (CTE `batch`), which the publisher
        // numbers after commit. SQLite numbered them above.
        let insert_entries = match dialect {
            Dialect::Postgres => {
                "INSERT INTO ledger_entries (id, transaction_id, program_id, customer_id, kind, points, \
                 pending_points, reason, related_transaction_id, created_at_us, pending_until_us, expires_at_us, \
                 amount, order_id, order_amount_minor, actor, base_points, draws) \
                 SELECT batch.batch_id + r.ordinal, r.transaction_id, r.p, r.c, r.kind, r.points, r.pending_points, \
                 r.reason, r.related, r.created_at_us, r.pending_until_us, r.expires_at_us, r.amount, r.order_id, \
                 r.order_amount, r.actor, r.base_points, r.draws FROM {rows} CROSS JOIN batch"
            }
            Dialect::Sqlite => {
                "INSERT INTO ledger_entries (transaction_id, program_id, customer_id, kind, points, pending_points, \
                 reason, related_transaction_id, created_at_us, pending_until_us, expires_at_us, amount, order_id, \
                 order_amount_minor, actor, base_points, draws, seq) \
                 SELECT r.transaction_id, r.p, r.c, r.kind, r.points, r.pending_points, r.reason, r.related, \
                 r.created_at_us, r.pending_until_us, r.expires_at_us, r.amount, r.order_id, r.order_amount, r.actor, \
                 r.base_points, r.draws, r.seq FROM {rows}"
            }
        };

        // One statement per table; `{rows}` is the table's row source. The
        // last one saves the results: a key saved meanwhile by another
        // transaction inserts nothing there.
        let writes: [Write; 6] = [
            (
                "INSERT INTO point_lots (lot_id, program_id, customer_id, original, remaining, consumed, expired, \
                 reversed, expired_reversed, state, pending_until_us, expires_at_us, earned_at_us) \
                 SELECT r.lot_id, r.p, r.c, r.original, r.remaining, r.consumed, r.expired, r.reversed, \
                 r.expired_reversed, r.state, r.pending_until_us, r.expires_at_us, r.earned_at_us FROM {rows}",
                LOT,
                rows(&new_lots),
            ),
            (
                "UPDATE point_lots SET remaining = r.remaining, consumed = r.consumed, expired = r.expired, \
                 reversed = r.reversed, expired_reversed = r.expired_reversed, state = r.state \
                 FROM {rows} WHERE point_lots.lot_id = r.lot_id",
                LOT,
                rows(&changed_lots),
            ),
            (
                insert_entries,
                &[
                    ("ordinal", BIGINT),
                    ("transaction_id", TEXT),
                    ("p", TEXT),
                    ("c", TEXT),
                    ("kind", TEXT),
                    ("points", BIGINT),
                    ("pending_points", BIGINT),
                    ("reason", TEXT),
                    ("related", TEXT),
                    ("created_at_us", BIGINT),
                    ("pending_until_us", BIGINT),
                    ("expires_at_us", BIGINT),
                    ("amount", BIGINT),
                    ("actor", TEXT),
                    ("seq", BIGINT),
                    ("order_id", TEXT),
                    ("order_amount", BIGINT),
                    ("base_points", BIGINT),
                    ("draws", TEXT),
                ],
                rows(&entries),
            ),
            (
                "INSERT INTO orders (program_id, order_id, customer_id, amount_minor, currency, points, \
                 transaction_id, created_at_us) SELECT r.p, r.o, r.c, r.amount, r.currency, r.points, r.t, r.at \
                 FROM {rows} WHERE true ORDER BY r.p, r.o ON CONFLICT DO NOTHING",
                &[
                    ("p", TEXT),
                    ("o", TEXT),
                    ("c", TEXT),
                    ("amount", BIGINT),
                    ("currency", TEXT),
                    ("points", BIGINT),
                    ("t", TEXT),
                    ("at", BIGINT),
                ],
                rows(&orders),
            ),
            (
                "UPDATE accounts SET available = r.available, pending = r.pending, \
                 lifetime_earned = r.lifetime_earned, spent = r.spent, expired = r.expired, reversed = r.reversed, \
                 debt = r.debt, version = r.version, next_transition_us = r.next_transition_us, \
                 next_expiry_us = r.next_expiry_us, next_expiry_points = r.next_expiry_points \
                 FROM {rows} WHERE accounts.program_id = r.p AND accounts.customer_id = r.c",
                &[
                    ("p", TEXT),
                    ("c", TEXT),
                    ("available", BIGINT),
                    ("pending", BIGINT),
                    ("lifetime_earned", BIGINT),
                    ("spent", BIGINT),
                    ("expired", BIGINT),
                    ("reversed", BIGINT),
                    ("debt", BIGINT),
                    ("version", BIGINT),
                    ("next_transition_us", BIGINT),
                    ("next_expiry_us", BIGINT),
                    ("next_expiry_points", BIGINT),
                ],
                rows(&changed_accounts),
            ),
            (
                "INSERT INTO idempotency_keys (program_id, method, idempotency_key, request_hash, transaction_id, \
                 response, created_at_us) SELECT r.p, r.m, r.k, r.h, r.t, r.r, r.at FROM {rows} WHERE true \
                 ORDER BY r.p, r.m, r.k ON CONFLICT DO NOTHING",
                &[("p", TEXT), ("m", TEXT), ("k", TEXT), ("h", TEXT), ("t", TEXT), ("r", TEXT), ("at", BIGINT)],
                rows(&keys),
            ),
        ];
        let saved = match dialect {
            // One round trip: every write a data-modifying CTE of one statement.
            Dialect::Postgres => {
                let parts: Vec<String> = writes
                    .iter()
                    .enumerate()
                    .map(|(i, (sql, columns, _))| {
                        let returning = if i + 1 == writes.len() { " RETURNING 1" } else { "" };
                        format!(
                            "w{i} AS ({}{returning})",
                            sql.replace("{rows}", &recordset_at(dialect, i + 1, columns))
                        )
                    })
                    .collect();
                // The batch's row and block of entry ids, when it wrote entries.
                let batch = format!("batch AS ({})", open_batch_sql(writes.len() + 1));
                let sql = format!("WITH {batch}, {} SELECT COUNT(*) FROM w{}", parts.join(", "), writes.len() - 1);
                let mut query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql));
                for (_, _, (_, json)) in writes {
                    query = query.bind(json);
                }
                query = query.bind(entry_count);
                u64::try_from(query.fetch_one(&mut *tx).await?).unwrap_or(0)
            }
            // In process: a statement each, skipping tables with nothing to write.
            Dialect::Sqlite => {
                let mut affected = 0;
                for (sql, columns, (count, json)) in writes {
                    if count == 0 {
                        continue;
                    }
                    let sql = sql.replace("{rows}", &recordset_at(dialect, 1, columns));
                    let result = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(json).execute(&mut *tx).await?;
                    affected = result.rows_affected();
                }
                affected
            }
        };
        if saved != done.len() as u64 {
            return Err(BatchFailure::KeyRace);
        }
        Ok(next_seq)
    }
}

/// Every command's result; a repeated key (`(repeat, first)`, same
/// arguments) gets a replay of its first command's result.
fn finish(
    mut results: Vec<Option<Result<Execution, Error>>>,
    duplicates: &[(usize, usize)],
) -> Vec<Result<Execution, Error>> {
    for &(i, first) in duplicates {
        let Some(Ok(execution)) = &results[first] else { unreachable!("a repeat follows a success") };
        let replay = Execution::replay(execution.receipt.clone());
        results[i] = Some(Ok(replay));
    }
    results.into_iter().map(|r| r.expect("every command answered")).collect()
}

/// Runs one command on its account; on a refusal the account is as before.
fn run(work: &mut Working, c: &BatchCommand, now: i64) -> Result<(Receipt, Vec<NewEntry>), RuleViolation> {
    let mut lots = work.lots.clone();
    for lot in &mut lots {
        lot.is_new = false;
        lot.dirty = false;
    }
    let mut book = AccountBook::new(work.account.clone(), lots, work.all_open_lots_loaded, now);
    book.entries = work.settled.clone();
    let mut transaction_id = new_transaction_id();
    let (mut breakdown, mut pending, mut expires) = (None, None, None);
    let points = match &c.command {
        Command::Earn { points, reason, pending_until, expires_at, policy_expiry, .. } => {
            let expires_at = expires_at.or(*policy_expiry);
            book.earn(&transaction_id, EntryKind::Earn, *points, reason, *pending_until, expires_at)?;
            *points
        }
        Command::Spend { points, reason, .. } => {
            book.spend(&transaction_id, *points, reason)?;
            *points
        }
        Command::Adjust { points, reason, expires_at, allow_debt, policy_expiry, .. } => {
            book.adjust(&transaction_id, *points, reason, expires_at.or(*policy_expiry), *allow_debt)?;
            *points
        }
        Command::OrderEarn { order, points, breakdown: priced, pending_until, expires_at } => {
            if *points > 0 {
                let reason = format!("order {}", order.order_id);
                book.earn(&transaction_id, EntryKind::Earn, *points, &reason, *pending_until, *expires_at)?;
            } else {
                // Recorded, with nothing to write to the ledger.
                transaction_id.clear();
            }
            breakdown = Some(priced.clone());
            pending = pending_until.filter(|&at| at > now);
            expires = *expires_at;
            *points
        }
        other => unreachable!("{} is not batched", other.method()),
    };
    book.finish();
    work.settled.clear();
    work.inserted.extend(book.lots.iter().filter(|l| l.is_new).map(|l| l.lot_id.clone()));
    work.dirty.extend(book.lots.iter().filter(|l| l.dirty).map(|l| l.lot_id.clone()));
    work.changed |= !book.entries.is_empty();
    work.account = book.account;
    work.lots = book.lots;
    let receipt = Receipt {
        transaction_id,
        customer_id: c.customer_id().to_owned(),
        points,
        transaction_ids: Vec::new(),
        balance: work.account.balance(),
        breakdown,
        pending_until: pending,
        expires_at: expires,
        total_refunded_minor: 0,
        discount_minor: 0,
        points_restored: 0,
        restore_transaction_id: String::new(),
    };
    Ok((receipt, book.entries))
}

/// One multi-row statement of a batch: its SQL with `{rows}` for the row
/// source, the row source's columns, and the rows ([`rows`]).
type Write<'a> = (&'a str, &'a [(&'a str, &'a str)], (usize, String));

/// How many rows, and the JSON array a statement reads them from.
fn rows<T: Serialize>(rows: &[T]) -> (usize, String) {
    (rows.len(), json_rows(rows))
}

/// `rows` as one JSON array, serialised straight from the typed rows.
fn json_rows<T: Serialize>(rows: &[T]) -> String {
    serde_json::to_string(rows).expect("rows of strings and integers serialise")
}

// The rows of a batch's statements, one struct per row source; field names
// are the row source's column names.

#[derive(Serialize)]
struct KeyRef<'a> {
    p: &'a str,
    m: &'static str,
    k: &'a str,
}

#[derive(Serialize)]
struct AccountRef<'a> {
    p: &'a str,
    c: &'a str,
}

#[derive(Serialize)]
struct LotRow<'a> {
    lot_id: &'a str,
    p: &'a str,
    c: &'a str,
    original: i64,
    remaining: i64,
    consumed: i64,
    expired: i64,
    reversed: i64,
    expired_reversed: i64,
    state: &'static str,
    pending_until_us: Option<i64>,
    expires_at_us: Option<i64>,
    earned_at_us: i64,
}

#[derive(Serialize)]
struct AccountRow<'a> {
    p: &'a str,
    c: &'a str,
    available: i64,
    pending: i64,
    lifetime_earned: i64,
    spent: i64,
    expired: i64,
    reversed: i64,
    debt: i64,
    version: i64,
    next_transition_us: Option<i64>,
    next_expiry_us: Option<i64>,
    next_expiry_points: i64,
}

#[derive(Serialize)]
struct EntryRow<'a> {
    ordinal: usize,
    transaction_id: &'a str,
    p: &'a str,
    c: &'a str,
    kind: &'static str,
    points: i64,
    pending_points: i64,
    reason: &'a str,
    related: &'a str,
    created_at_us: i64,
    pending_until_us: Option<i64>,
    expires_at_us: Option<i64>,
    amount: i64,
    actor: &'a str,
    seq: Option<i64>,
    order_id: &'a str,
    order_amount: i64,
    base_points: i64,
    draws: String,
}

#[derive(Serialize)]
struct OrderRow<'a> {
    p: &'a str,
    o: &'a str,
    c: &'a str,
    amount: i64,
    currency: &'a str,
    points: i64,
    t: &'a str,
    at: i64,
}

#[derive(Serialize)]
struct KeyRow<'a> {
    p: &'a str,
    m: &'static str,
    k: &'a str,
    h: &'a str,
    t: &'a str,
    r: String,
    at: i64,
}

const TEXT: &str = "text";
const BIGINT: &str = "bigint";

/// A row source `r` with `columns`, read from the JSON array bound as `$1`.
fn recordset(dialect: Dialect, columns: &[(&str, &str)]) -> String {
    recordset_at(dialect, 1, columns)
}

/// The same, from the JSON array bound as parameter `param`.
fn recordset_at(dialect: Dialect, param: usize, columns: &[(&str, &str)]) -> String {
    match dialect {
        Dialect::Postgres => {
            let shape: Vec<String> = columns.iter().map(|(name, ty)| format!("{name} {ty}")).collect();
            format!("jsonb_to_recordset(${param}::text::jsonb) AS r({})", shape.join(", "))
        }
        Dialect::Sqlite => {
            let fields: Vec<String> =
                columns.iter().map(|(name, _)| format!("json_extract(value, '$.{name}') AS {name}")).collect();
            format!("(SELECT {} FROM json_each(${param})) AS r", fields.join(", "))
        }
    }
}
