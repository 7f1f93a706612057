//! The ledger in SQL. One implementation serves PostgreSQL and SQLite through
//! sqlx's `Any` driver; where they differ (row locks, stream numbering) the
//! [`Dialect`] decides.
//!
//! A write runs in one transaction: claim the idempotency key, lock the
//! account row (PostgreSQL: the upsert's row lock; SQLite: the database write
//! lock taken by `BEGIN IMMEDIATE`), load the lots the command needs, let the
//! domain decide, write lots, entries and the account, save the result under
//! the key, commit.

mod batch;
pub mod program;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Row, Transaction};

use loyalty_common::clock::{Clock, Micros};
use loyalty_common::db::{self, Database, Dialect};
use loyalty_common::idempotency::{self, begin_write, request_hash};

use crate::domain::rules::{self, ActivityRule, Breakdown};
use crate::domain::{
    Account, AccountBook, Balance, Draw, EntryKind, PointLot, RuleViolation, Settlement, draws_to_restore,
    new_transaction_id,
};
use crate::error::Error;

pub use batch::{BatchCommand, BatchFailure};

/// Which earlier entry a command refers to (the earn a reversal takes
/// back, the spend a restore gives back).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum EntryRef {
    TransactionId(String),
    IdempotencyKey(String),
}

/// A validated write; its JSON form is what the idempotency hash covers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Command {
    Earn {
        customer_id: String,
        points: i64,
        reason: String,
        pending_until: Option<Micros>,
        /// As the caller asked; unset: the program's policy ([`Command::Earn::policy_expiry`]).
        expires_at: Option<Micros>,
        /// When the program's expiry policy ends points earned now: what
        /// `expires_at` unset means. Computed, not asked, so not part of
        /// the request a replay must repeat.
        #[serde(skip)]
        policy_expiry: Option<Micros>,
    },
    Spend {
        customer_id: String,
        points: i64,
        reason: String,
    },
    Reverse {
        original: EntryRef,
        points: Option<i64>,
        reason: String,
    },
    /// Gives a spend back, to the lots it drew from.
    RestoreSpend {
        spend: EntryRef,
        reason: String,
        /// Who asked (an API key id, or the service), kept on the entry.
        actor: String,
        /// The program's policy for points earned now: the expiry of a spend
        /// recorded before its draws were kept (see [`Command::Earn`]).
        #[serde(skip)]
        policy_expiry: Option<Micros>,
    },
    Adjust {
        customer_id: String,
        points: i64,
        reason: String,
        /// As the caller asked; unset: the program's policy, unless `never_expires`.
        expires_at: Option<Micros>,
        allow_debt: bool,
        /// Who made it (an API key id), kept on the entry.
        actor: String,
        /// Asked for points that never expire; left out of the request's JSON
        /// when false, so keys saved before the field existed still match.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        never_expires: bool,
        /// The program's policy for points earned now (see [`Command::Earn`]).
        #[serde(skip)]
        policy_expiry: Option<Micros>,
    },
    ActivatePending {
        customer_id: String,
        earn_transaction_id: Option<String>,
    },
    /// An order's points, computed from the program's rules by the caller.
    OrderEarn {
        order: OrderRequest,
        points: i64,
        breakdown: Breakdown,
        pending_until: Option<Micros>,
        expires_at: Option<Micros>,
    },
    /// Refunds part of an order: its earn reversed and the points that paid
    /// for it given back, each in the share refunded.
    OrderRefund {
        order_id: String,
        refunded_amount_minor: i64,
    },
    /// Points paying for part of an order; the discount computed by the caller.
    CheckoutSpend {
        order: CheckoutRequest,
        discount_minor: i64,
    },
    /// An activity's points, computed from its rule by the caller; the cap is checked here.
    Activity {
        customer_id: String,
        activity_type: String,
        activity_ref: String,
        rule: ActivityRule,
        breakdown: Breakdown,
        expires_at: Option<Micros>,
    },
}

/// What identifies an order earn: its replay must match these, whatever the
/// rules say by then.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OrderRequest {
    pub customer_id: String,
    pub order_id: String,
    pub amount_minor: i64,
    pub currency: String,
    pub occurred_at: Option<Micros>,
}

/// What identifies points applied to an order: a replay must repeat it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CheckoutRequest {
    pub customer_id: String,
    pub order_id: String,
    pub amount_minor: i64,
    pub currency: String,
    pub points: i64,
}

impl Command {
    /// The RPC name; idempotency keys are scoped to (program, method).
    pub fn method(&self) -> &'static str {
        match self {
            Self::Earn { .. } => "Earn",
            Self::Spend { .. } => "Spend",
            Self::Reverse { .. } => "Reverse",
            Self::RestoreSpend { .. } => "RestoreSpend",
            Self::Adjust { .. } => "Adjust",
            Self::ActivatePending { .. } => "ActivatePending",
            Self::OrderEarn { .. } => "EarnForOrder",
            Self::OrderRefund { .. } => "RefundOrder",
            Self::Activity { .. } => "RecordActivity",
            Self::CheckoutSpend { .. } => "ApplyCheckoutPoints",
        }
    }

    /// What a replay must repeat: the caller's request, not what the rules
    /// computed from it (rules may change between the first call and a replay).
    fn request_identity(&self) -> serde_json::Value {
        match self {
            Self::OrderEarn { order, .. } => serde_json::json!({ "order": order }),
            Self::CheckoutSpend { order, .. } => serde_json::json!({ "checkout": order }),
            Self::Activity { customer_id, activity_type, activity_ref, .. } => {
                serde_json::json!({ "activity": [customer_id, activity_type, activity_ref] })
            }
            other => serde_json::to_value(other).expect("commands serialise"),
        }
    }

    /// Commands that only add a lot can skip loading the account's lots.
    fn only_adds(&self) -> bool {
        matches!(self, Self::Earn { .. } | Self::OrderEarn { .. } | Self::Activity { .. })
            || matches!(self, Self::Adjust { points, .. } if *points > 0)
    }
}

/// The saved result of a write, returned again on replay.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Receipt {
    pub transaction_id: String,
    pub customer_id: String,
    pub points: i64,
    pub transaction_ids: Vec<String>,
    pub balance: Balance,
    #[serde(default)]
    pub breakdown: Option<Breakdown>,
    #[serde(default)]
    pub pending_until: Option<Micros>,
    #[serde(default)]
    pub expires_at: Option<Micros>,
    #[serde(default)]
    pub total_refunded_minor: i64,
    /// Points at checkout: what the points paid.
    #[serde(default)]
    pub discount_minor: i64,
    /// A refund: the points that paid for the order given back, and the entry.
    #[serde(default)]
    pub points_restored: i64,
    #[serde(default)]
    pub restore_transaction_id: String,
}

#[derive(Debug)]
pub struct Execution {
    pub receipt: Receipt,
    pub replayed: bool,
    /// The account after the write, for the cache; `None` on replay.
    pub account: Option<Account>,
    /// Highest stream position written, when known at commit (SQLite).
    pub published_up_to: Option<i64>,
    /// The balance Redis could not be told after the commit: the caller
    /// waits until every replica knows of the doubt before answering.
    pub cache_doubt: Option<CacheDoubt>,
}

impl Execution {
    /// A key's saved result, answered again.
    pub fn replay(receipt: Receipt) -> Self {
        Self { receipt, replayed: true, account: None, published_up_to: None, cache_doubt: None }
    }
}

/// A ledger row as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRow {
    pub id: i64,
    pub sequence: i64,
    pub transaction_id: String,
    pub program_id: String,
    pub customer_id: String,
    pub kind: EntryKind,
    pub points: i64,
    pub pending_points: i64,
    pub reason: String,
    pub related_transaction_id: String,
    pub created_at: Micros,
    pub pending_until: Option<Micros>,
    pub expires_at: Option<Micros>,
    pub amount: i64,
    pub order_id: String,
    pub order_amount_minor: i64,
    pub actor: String,
    /// For order earns: the points before tier and campaign bonuses.
    pub base_points: i64,
}

/// Which entry of a write belongs to which order, the amount concerned and,
/// for an earn, its base points.
#[derive(Debug, Clone, Copy)]
struct OrderRef<'a> {
    transaction_id: &'a str,
    order_id: &'a str,
    amount: i64,
    base_points: i64,
}

#[derive(Clone, Debug)]
pub struct LedgerStore {
    db: Database,
    clock: Arc<dyn Clock>,
}

const ACCOUNT_COLUMNS: &str = "program_id, customer_id, available, pending, lifetime_earned, spent, expired, reversed, debt, \
     version, next_transition_us, next_expiry_us, next_expiry_points";
const LOT_COLUMNS: &str = "lot_id, original, remaining, consumed, expired, reversed, expired_reversed, state, \
     pending_until_us, expires_at_us, earned_at_us";
/// An entry's columns, without its stream position (`seq`, selected apart).
const ENTRY_COLUMNS: &str = "id, transaction_id, program_id, customer_id, kind, points, pending_points, reason, \
     related_transaction_id, created_at_us, pending_until_us, expires_at_us, amount, order_id, order_amount_minor, actor, \
     base_points";
/// An entry's stream position from its batch `b` (PostgreSQL; NULL until published).
const BATCH_POSITION: &str = "b.last_seq - b.entries + 1 + (e.id - b.batch_id)";

/// Any constant works as long as every replica uses the same one; points
/// migration 0011 takes it too (in decimal: 30521864600974457).
const PUBLISHER_LOCK_KEY: i64 = 0x006c_6f79_616c_7479;

impl LedgerStore {
    pub fn new(db: Database, clock: Arc<dyn Clock>) -> Self {
        Self { db, clock }
    }

    pub fn dialect(&self) -> Dialect {
        self.db.dialect
    }

    pub fn now(&self) -> Micros {
        self.clock.now()
    }

    async fn begin(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        begin_write(&self.db).await
    }

    /// Runs one write command under its idempotency key.
    pub async fn execute(&self, program_id: &str, idempotency_key: &str, command: Command) -> Result<Execution, Error> {
        let method = command.method();
        let hash = request_hash(program_id, &command.request_identity());
        let now = self.clock.now();
        let mut tx = self.begin().await?;
        let mut spend = None;
        let resolved = match &command {
            Command::RestoreSpend { spend: which, .. } => {
                self.find_spend(&mut tx, program_id, which).await.map(|found| {
                    let customer_id = found.customer_id.clone();
                    spend = Some(found);
                    (customer_id, None)
                })
            }
            Command::Reverse { original, .. } => {
                self.find_earn(&mut tx, program_id, original).await.map(|(customer, lot)| (customer, Some(lot)))
            }
            Command::OrderRefund { order_id, .. } => self.refund_target(&mut tx, program_id, order_id).await,
            Command::CheckoutSpend { order, .. } => Ok((order.customer_id.clone(), None)),
            Command::Earn { customer_id, .. }
            | Command::Spend { customer_id, .. }
            | Command::Adjust { customer_id, .. }
            | Command::ActivatePending { customer_id, .. }
            | Command::Activity { customer_id, .. } => Ok((customer_id.clone(), None)),
            Command::OrderEarn { order, .. } => Ok((order.customer_id.clone(), None)),
        };
        let (customer_id, target_lot) = match resolved {
            Ok(resolved) => resolved,
            Err(error) => {
                // A key used before answers as it did (or as reused), whatever is there now.
                tx.rollback().await?;
                return match self.saved(program_id, idempotency_key, &command).await? {
                    Some(saved) => Ok(saved),
                    None => Err(error),
                };
            }
        };

        // The lock order of every write, batched or not: the account, then
        // the order, then the idempotency key. A transaction waiting on a key
        // holds no key, so no two writers ever wait on each other.
        let account = lock_account(&mut tx, self.db.dialect, program_id, &customer_id).await?;
        let (order, paid) = match &command {
            Command::OrderRefund { order_id, .. } => (
                self.order(&mut tx, program_id, order_id, true).await?,
                // Points another customer applied to this order id are theirs:
                // this refund concerns the earn's customer only.
                self.checkout(&mut tx, program_id, order_id, true).await?.filter(|p| p.customer_id == customer_id),
            ),
            Command::CheckoutSpend { order, .. } => {
                // Points pay for the customer's own order, not one earned by another.
                match self.order(&mut tx, program_id, &order.order_id, false).await? {
                    Some(earned) if earned.customer_id != customer_id => {
                        tx.rollback().await?;
                        return Err(Error::CheckoutAlreadyApplied(order.order_id.clone()));
                    }
                    _ => (None, None),
                }
            }
            _ => (None, None),
        };
        if let Some(saved) = idempotency::claim(&mut tx, program_id, method, idempotency_key, &hash, now).await? {
            tx.rollback().await?;
            let receipt = serde_json::from_str(&saved).map_err(|e| Error::Corrupt(e.to_string()))?;
            return Ok(Execution::replay(receipt));
        }
        if let Command::Activity { activity_type, activity_ref, rule, .. } = &command {
            check_activity_cap(&mut tx, program_id, &customer_id, activity_type, activity_ref, rule, now).await?;
        }
        let before = account.clone();
        let load_lots = !command.only_adds() || account.is_due(now);
        let mut lots = if load_lots { open_lots(&mut tx, program_id, &customer_id).await? } else { Vec::new() };
        let mut wanted: Vec<String> = target_lot.iter().cloned().collect();
        if let Some(spend) = &spend {
            wanted.extend(spend.draws.iter().map(|d| d.lot_id.clone()));
        }
        // A refund gives back the refunded share of the points that paid for the order.
        let give_back = match (&command, &paid) {
            (Command::OrderRefund { refunded_amount_minor, .. }, Some(paid)) => {
                let due =
                    rules::refund_reversal(paid.points, paid.amount_minor, paid.refunded_minor, *refunded_amount_minor);
                // Nothing due (all given back already, or a share too small): no draws to read.
                let draws = match due {
                    0 => Vec::new(),
                    _ => draws_to_restore(
                        &spend_draws(&mut tx, program_id, &paid.transaction_id).await?,
                        paid.restored_points,
                        due,
                    ),
                };
                wanted.extend(draws.iter().map(|d| d.lot_id.clone()));
                Some((paid, due, draws))
            }
            _ => None,
        };
        for lot_id in &wanted {
            if !lots.iter().any(|l| &l.lot_id == lot_id) {
                lots.extend(lot_by_id(&mut tx, program_id, lot_id).await?);
            }
        }
        if let Some(spend) = &spend
            && let Some(restore) = restored_by(&mut tx, program_id, &customer_id, &spend.transaction_id).await?
        {
            tx.rollback().await?;
            return Err(RuleViolation::AlreadyRestored { spend: spend.transaction_id.clone(), restore }.into());
        }
        let mut book = AccountBook::new(account, lots, load_lots, now);
        if load_lots {
            book.settle();
        }

        let transaction_id = new_transaction_id();
        let mut receipt_points = 0;
        let mut transaction_ids = Vec::new();
        let mut entry_written = true;
        let mut total_refunded_minor = 0;
        let mut points_restored = 0;
        let mut restore_transaction_id = String::new();
        let mut discount_minor = 0;
        let outcome: Result<(), RuleViolation> = match &command {
            Command::Earn { points, reason, pending_until, expires_at, policy_expiry, .. } => {
                receipt_points = *points;
                let expires_at = expires_at.or(*policy_expiry);
                book.earn(&transaction_id, EntryKind::Earn, *points, reason, *pending_until, expires_at)
            }
            Command::Spend { points, reason, .. } => {
                receipt_points = *points;
                book.spend(&transaction_id, *points, reason)
            }
            Command::Reverse { points, reason, .. } => {
                let lot_id = target_lot.as_deref().expect("reverse resolved its lot");
                book.reverse(&transaction_id, lot_id, *points, reason).map(|reversed| receipt_points = reversed)
            }
            Command::Adjust { points, reason, expires_at, allow_debt, policy_expiry, .. } => {
                receipt_points = *points;
                book.adjust(&transaction_id, *points, reason, expires_at.or(*policy_expiry), *allow_debt)
            }
            Command::RestoreSpend { reason, policy_expiry, .. } => {
                let spend = spend.as_ref().expect("restore resolved its spend");
                receipt_points = book.restore(
                    &transaction_id,
                    &spend.transaction_id,
                    spend.points,
                    &spend.draws,
                    reason,
                    *policy_expiry,
                );
                Ok(())
            }
            Command::ActivatePending { earn_transaction_id, .. } => {
                book.activate_pending(earn_transaction_id.as_deref()).map(|(ids, points)| {
                    transaction_ids = ids;
                    receipt_points = points;
                })
            }
            Command::OrderEarn { order, points, pending_until, expires_at, .. } => {
                receipt_points = *points;
                entry_written = *points > 0;
                if entry_written {
                    let reason = format!("order {}", order.order_id);
                    book.earn(&transaction_id, EntryKind::Earn, *points, &reason, *pending_until, *expires_at)
                } else {
                    Ok(())
                }
            }
            Command::OrderRefund { order_id, refunded_amount_minor } => {
                // The order's amount is the earn's, or the one points were applied
                // to (the larger when both are known: refunds count against either).
                let left = |amount: i64, refunded: i64| (amount - refunded, refunded + refunded_amount_minor);
                let totals = [
                    order.as_ref().map(|o| left(o.amount_minor, o.refunded_minor)),
                    paid.as_ref().map(|p| left(p.amount_minor, p.refunded_minor)),
                ];
                let refundable = totals.iter().flatten().map(|(left, _)| *left).max();
                let refundable = refundable.ok_or_else(|| Error::OrderNotFound(order_id.clone()))?;
                if *refunded_amount_minor > refundable {
                    Err(RuleViolation::RefundExceedsOrder { refundable, requested: *refunded_amount_minor })
                } else {
                    total_refunded_minor = totals.iter().flatten().map(|(_, total)| *total).max().unwrap_or(0);
                    let due = order.as_ref().map_or(0, |order| {
                        rules::refund_reversal(
                            order.points,
                            order.amount_minor,
                            order.refunded_minor,
                            *refunded_amount_minor,
                        )
                    });
                    // Points already taken back by a direct Reverse are not taken twice.
                    let reversible = target_lot
                        .as_deref()
                        .and_then(|lot| book.lot_index(lot))
                        .map_or(0, |i| book.lots[i].original - book.lots[i].reversed);
                    let points = due.min(reversible);
                    entry_written = points > 0;
                    let reason = format!("refund of order {order_id}");
                    let reversed = match target_lot.as_deref() {
                        Some(lot) if entry_written => {
                            book.reverse(&transaction_id, lot, Some(points), &reason).map(|r| receipt_points = r)
                        }
                        _ => Ok(()),
                    };
                    // After the reversal, so that points given back repay any debt it left.
                    if let Some((paid, due, draws)) = &give_back
                        && *due > 0
                    {
                        restore_transaction_id = new_transaction_id();
                        points_restored =
                            book.restore(&restore_transaction_id, &paid.transaction_id, *due, draws, &reason, None);
                    }
                    reversed
                }
            }
            Command::CheckoutSpend { order, discount_minor: discount } => {
                receipt_points = order.points;
                discount_minor = *discount;
                book.spend(&transaction_id, order.points, &format!("points paying for order {}", order.order_id))
            }
            Command::Activity { activity_type, breakdown, expires_at, .. } => {
                receipt_points = breakdown.total_points;
                let reason = format!("activity {activity_type}");
                book.earn(&transaction_id, EntryKind::Earn, breakdown.total_points, &reason, None, *expires_at)
            }
        };
        // A refusal rolls everything back, the key included, so a retry after
        // the customer's situation changed is judged afresh.
        outcome?;
        book.finish();

        // Order entries say which order they belong to, for the stream's consumers.
        let order_ref = match &command {
            Command::OrderEarn { order, breakdown, .. } => {
                Some((order.order_id.as_str(), order.amount_minor, breakdown.base_points))
            }
            Command::OrderRefund { order_id, refunded_amount_minor } => {
                Some((order_id.as_str(), *refunded_amount_minor, 0))
            }
            Command::CheckoutSpend { order, .. } => Some((order.order_id.as_str(), order.amount_minor, 0)),
            _ => None,
        };
        let order_ref = order_ref.map(|(order_id, amount, base_points)| OrderRef {
            transaction_id: &transaction_id,
            order_id,
            amount,
            base_points,
        });
        let actor = match &command {
            Command::Adjust { actor, .. } | Command::RestoreSpend { actor, .. } => actor.as_str(),
            _ => "",
        };
        let published_up_to = self.persist(&mut tx, &book, order_ref, actor, &before).await?;
        let main_id = match &command {
            Command::ActivatePending { .. } => transaction_ids.first().cloned().unwrap_or_default(),
            _ if !entry_written => String::new(),
            _ => transaction_id,
        };
        let (breakdown, pending_until, expires_at) = match &command {
            Command::OrderEarn { breakdown, pending_until, expires_at, .. } => {
                (Some(breakdown.clone()), pending_until.filter(|&at| at > now), *expires_at)
            }
            Command::Activity { breakdown, expires_at, .. } => (Some(breakdown.clone()), None, *expires_at),
            _ => (None, None, None),
        };
        let receipt = Receipt {
            transaction_id: main_id,
            customer_id,
            points: receipt_points,
            transaction_ids,
            balance: book.account.balance(),
            breakdown,
            pending_until,
            expires_at,
            total_refunded_minor,
            discount_minor,
            points_restored,
            restore_transaction_id,
        };
        match &command {
            Command::OrderEarn { order, .. } => {
                sqlx::query(
                    "INSERT INTO orders (program_id, order_id, customer_id, amount_minor, currency, points, \
                     transaction_id, created_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(program_id)
                .bind(&order.order_id)
                .bind(&order.customer_id)
                .bind(order.amount_minor)
                .bind(&order.currency)
                .bind(receipt.points)
                .bind(&receipt.transaction_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            Command::OrderRefund { order_id, refunded_amount_minor } => {
                // Each record counts refunds up to its own amount.
                if let Some(order) = &order {
                    sqlx::query(
                        "UPDATE orders SET refunded_minor = $1, reversed_points = reversed_points + $2 \
                         WHERE program_id = $3 AND order_id = $4",
                    )
                    .bind((order.refunded_minor + refunded_amount_minor).min(order.amount_minor))
                    .bind(receipt.points)
                    .bind(program_id)
                    .bind(order_id)
                    .execute(&mut *tx)
                    .await?;
                }
                if let Some(paid) = &paid {
                    sqlx::query(
                        "UPDATE checkout_spends SET refunded_minor = $1, restored_points = restored_points + $2 \
                         WHERE program_id = $3 AND order_id = $4",
                    )
                    .bind((paid.refunded_minor + refunded_amount_minor).min(paid.amount_minor))
                    .bind(receipt.points_restored)
                    .bind(program_id)
                    .bind(order_id)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            Command::CheckoutSpend { order, discount_minor } => {
                sqlx::query(
                    "INSERT INTO checkout_spends (program_id, order_id, customer_id, transaction_id, amount_minor, \
                     currency, points, discount_minor, created_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(program_id)
                .bind(&order.order_id)
                .bind(&order.customer_id)
                .bind(&receipt.transaction_id)
                .bind(order.amount_minor)
                .bind(&order.currency)
                .bind(order.points)
                .bind(discount_minor)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            Command::Activity { activity_type, activity_ref, .. } => {
                sqlx::query(
                    "INSERT INTO activity_awards (program_id, customer_id, activity_type, activity_ref, \
                     transaction_id, awarded_at_us) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(program_id)
                .bind(&receipt.customer_id)
                .bind(activity_type)
                .bind(activity_ref)
                .bind(&receipt.transaction_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            _ => {}
        }
        let response = serde_json::to_string(&receipt).map_err(|e| Error::Corrupt(e.to_string()))?;
        idempotency::save(&mut tx, program_id, method, idempotency_key, &response, &receipt.transaction_id).await?;
        tx.commit().await?;
        Ok(Execution { receipt, replayed: false, account: Some(book.account), published_up_to, cache_doubt: None })
    }

    /// The saved result of `command` under `key`, if it ran before; the same
    /// key with other arguments is an error, as in [`LedgerStore::execute`].
    pub async fn saved(&self, program_id: &str, key: &str, command: &Command) -> Result<Option<Execution>, Error> {
        let method = command.method();
        let Some((hash, response)) = idempotency::stored(&self.db.pool, program_id, method, key).await? else {
            return Ok(None);
        };
        if hash != request_hash(program_id, &command.request_identity()) {
            return Err(Error::IdempotencyKeyReused { method });
        }
        // Claimed by a transaction still in flight: let `execute` wait for it.
        let Some(response) = response else { return Ok(None) };
        let receipt = serde_json::from_str(&response).map_err(|e| Error::Corrupt(e.to_string()))?;
        Ok(Some(Execution::replay(receipt)))
    }

    /// Activates and expires whatever is due on one account.
    pub async fn settle(
        &self,
        program_id: &str,
        customer_id: &str,
    ) -> Result<(Account, Settlement, Option<i64>), Error> {
        let now = self.clock.now();
        let mut tx = self.begin().await?;
        let account = lock_account(&mut tx, self.db.dialect, program_id, customer_id).await?;
        let before = account.clone();
        let lots = open_lots(&mut tx, program_id, customer_id).await?;
        let mut book = AccountBook::new(account, lots, true, now);
        let settlement = book.settle();
        book.finish();
        let published = self.persist(&mut tx, &book, None, "", &before).await?;
        tx.commit().await?;
        Ok((book.account, settlement, published))
    }

    /// Accounts with a transition due by now, oldest first.
    pub async fn due_accounts(&self, program_id: Option<&str>, limit: i64) -> Result<Vec<(String, String)>, Error> {
        let now = self.clock.now();
        let rows = sqlx::query(
            "SELECT program_id, customer_id FROM accounts \
             WHERE next_transition_us IS NOT NULL AND next_transition_us <= $1 AND ($2 = '' OR program_id = $2) \
             ORDER BY next_transition_us LIMIT $3",
        )
        .bind(now)
        .bind(program_id.unwrap_or_default())
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("program_id")?, r.try_get("customer_id")?))).collect()
    }

    /// The account as stored, without settling; `None` if it never had an entry.
    pub async fn account(&self, program_id: &str, customer_id: &str) -> Result<Option<Account>, Error> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE program_id = $1 AND customer_id = $2"
        ));
        let row = sqlx::query(sql).bind(program_id).bind(customer_id).fetch_optional(&self.db.pool).await?;
        row.as_ref().map(account_from_row).transpose().map_err(Error::from)
    }

    /// Up to `limit` accounts of a program holding points (available or
    /// pending), as stored, with customer ids after `after`, in id order.
    pub async fn holding(&self, program_id: &str, after: &str, limit: i64) -> Result<Vec<Account>, Error> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE program_id = $1 AND customer_id > $2 \
             AND (available <> 0 OR pending <> 0) ORDER BY customer_id LIMIT $3"
        ));
        let rows = sqlx::query(sql).bind(program_id).bind(after).bind(limit).fetch_all(&self.db.pool).await?;
        rows.iter().map(account_from_row).collect::<Result<_, _>>().map_err(Error::from)
    }

    /// One page of an account's entries, newest first, strictly before `before_id`.
    pub async fn entries(
        &self,
        program_id: &str,
        customer_id: &str,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<LedgerRow>, Error> {
        let select = match self.db.dialect {
            // The batch holding the entry: the last one starting at or before its id.
            Dialect::Postgres => format!(
                "SELECT {}, {BATCH_POSITION} AS seq FROM ledger_entries e LEFT JOIN LATERAL ( \
                 SELECT batch_id, entries, last_seq FROM ledger_batches WHERE batch_id <= e.id \
                 ORDER BY batch_id DESC LIMIT 1) b ON true",
                qualified_columns("e", ENTRY_COLUMNS)
            ),
            Dialect::Sqlite => format!("SELECT {ENTRY_COLUMNS}, seq FROM ledger_entries"),
        };
        let filter = [("program_id", program_id), ("customer_id", customer_id)];
        let rows = db::newest_first(&self.db, &select, &filter, "id", before_id, limit).await?;
        rows.iter().map(entry_from_row).collect()
    }

    /// Published entries after `after`, in stream order.
    /// Published entries after `after`, of `program_id` (empty: every program)
    /// and of `kinds` (empty: every kind), in stream order.
    pub async fn entries_after(
        &self,
        after: i64,
        program_id: &str,
        kinds: &[EntryKind],
        limit: i64,
    ) -> Result<Vec<LedgerRow>, Error> {
        let filtered = !kinds.is_empty();
        // The kinds are our own constants, never the caller's text.
        let kinds = match kinds {
            [] => String::new(),
            kinds => {
                let list: Vec<String> = kinds.iter().map(|k| format!("'{}'", k.as_str())).collect();
                format!(" AND kind IN ({})", list.join(", "))
            }
        };
        let sql = sqlx::AssertSqlSafe(match self.db.dialect {
            // Published batches from the one holding `after`, each with its
            // block of entries (a primary-key range).
            Dialect::Postgres => format!(
                "SELECT {}, {BATCH_POSITION} AS seq FROM ledger_batches b \
                 JOIN ledger_entries e ON e.id >= b.batch_id AND e.id < b.batch_id + b.entries \
                 WHERE b.last_seq > $1 AND {BATCH_POSITION} > $1 AND ($2 = '' OR e.program_id = $2){kinds} \
                 ORDER BY b.last_seq, e.id LIMIT $3",
                qualified_columns("e", ENTRY_COLUMNS)
            ),
            Dialect::Sqlite => format!(
                "SELECT {ENTRY_COLUMNS}, seq FROM ledger_entries \
                 WHERE seq > $1 AND ($2 = '' OR program_id = $2){kinds} ORDER BY seq LIMIT $3"
            ),
        });
        let query = sqlx::query(sql).bind(after).bind(program_id).bind(limit);
        let rows = match self.db.dialect {
            // Batches in position order, each with its primary-key range of
            // entries, stopping at the limit. Without statistics (a young
            // ledger) the planner misjudges the range join and, for a read
            // of some kinds only, may scan the entries instead. Such reads
            // are few (a consumer of rare kinds reads once a second), so the
            // two more round trips are paid by them alone; a read of every
            // kind, at each publication, stops at its limit either way.
            Dialect::Postgres if filtered => {
                let mut tx = db::begin_by_index(&self.db.pool).await?;
                let rows = query.fetch_all(&mut *tx).await?;
                tx.commit().await?;
                rows
            }
            _ => query.fetch_all(&self.db.pool).await?,
        };
        rows.iter().map(entry_from_row).collect()
    }

    /// Active points expiring in `(now, until]`, summed per instant.
    pub async fn expiring(
        &self,
        program_id: &str,
        customer_id: &str,
        until: Micros,
    ) -> Result<Vec<(Micros, i64)>, Error> {
        let now = self.clock.now();
        let rows = sqlx::query(
            "SELECT expires_at_us, CAST(SUM(remaining) AS BIGINT) AS points FROM point_lots \
             WHERE program_id = $1 AND customer_id = $2 AND remaining > 0 AND state = 'active' \
               AND expires_at_us > $3 AND expires_at_us <= $4 \
             GROUP BY expires_at_us ORDER BY expires_at_us",
        )
        .bind(program_id)
        .bind(customer_id)
        .bind(now)
        .bind(until)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("expires_at_us")?, r.try_get("points")?))).collect()
    }

    /// Hands out stream positions to committed, unnumbered batches of entries (PostgreSQL).
    /// Publishers run one at a time under an advisory lock, and each numbers
    /// only rows already committed when it starts; a row committing later
    /// gets a higher position from a later run. So positions grow in the order
    /// rows become visible, and `seq > cursor` never skips one. Returns the
    /// highest position handed out.
    pub async fn publish(&self) -> Result<Option<i64>, Error> {
        if self.db.dialect == Dialect::Sqlite {
            return Ok(None);
        }
        let mut tx = self.db.pool.begin().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(PUBLISHER_LOCK_KEY)
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            // Another replica is publishing right now; it will number our rows too.
            return Ok(None);
        }
        // Whole batches, each a contiguous run of positions after the last
        // one handed out.
        let max: Option<i64> = sqlx::query_scalar(
            "WITH ready AS ( \
                 SELECT batch_id, entries FROM ledger_batches WHERE last_seq IS NULL ORDER BY batch_id LIMIT 10000 \
             ), top AS ( \
                 SELECT COALESCE(MAX(last_seq), 0) AS top FROM ledger_batches \
             ), numbered AS ( \
                 SELECT batch_id, top + SUM(entries) OVER (ORDER BY batch_id) AS last_seq FROM ready, top \
             ), updated AS ( \
                 UPDATE ledger_batches b SET last_seq = n.last_seq FROM numbered n WHERE b.batch_id = n.batch_id \
                 RETURNING b.last_seq \
             ) SELECT MAX(last_seq) FROM updated",
        )
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(max)
    }

    /// The highest published stream position (0 when none).
    pub async fn last_sequence(&self) -> Result<i64, Error> {
        let sql = match self.db.dialect {
            Dialect::Postgres => "SELECT MAX(last_seq) FROM ledger_batches",
            Dialect::Sqlite => "SELECT MAX(seq) FROM ledger_entries",
        };
        let max: Option<i64> = sqlx::query_scalar(sql).fetch_one(&self.db.pool).await?;
        Ok(max.unwrap_or(0))
    }

    /// The order as recorded by `EarnForOrder`; `lock` holds its row until commit.
    async fn order(
        &self,
        tx: &mut AnyConnection,
        program_id: &str,
        order_id: &str,
        lock: bool,
    ) -> Result<Option<OrderRow>, Error> {
        let suffix = if lock && self.db.dialect == Dialect::Postgres { " FOR UPDATE" } else { "" };
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT customer_id, amount_minor, points, transaction_id, refunded_minor FROM orders \
             WHERE program_id = $1 AND order_id = $2{suffix}"
        ));
        let row = sqlx::query(sql).bind(program_id).bind(order_id).fetch_optional(&mut *tx).await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(OrderRow {
            customer_id: row.try_get("customer_id")?,
            amount_minor: row.try_get("amount_minor")?,
            points: row.try_get("points")?,
            transaction_id: row.try_get("transaction_id")?,
            refunded_minor: row.try_get("refunded_minor")?,
        }))
    }

    /// Who a refund concerns and the earn it reverses (if the order earned):
    /// the order as earned, else as points paid for it.
    async fn refund_target(
        &self,
        tx: &mut AnyConnection,
        program_id: &str,
        order_id: &str,
    ) -> Result<(String, Option<String>), Error> {
        if let Some(found) = self.order(tx, program_id, order_id, false).await? {
            let lot = Some(found.transaction_id).filter(|id| !id.is_empty());
            return Ok((found.customer_id, lot));
        }
        match self.checkout(tx, program_id, order_id, false).await? {
            Some(paid) => Ok((paid.customer_id, None)),
            None => Err(Error::OrderNotFound(order_id.to_owned())),
        }
    }

    /// The points applied to an order at checkout; `lock` holds the row until commit.
    async fn checkout(
        &self,
        tx: &mut AnyConnection,
        program_id: &str,
        order_id: &str,
        lock: bool,
    ) -> Result<Option<CheckoutRow>, Error> {
        let suffix = if lock && self.db.dialect == Dialect::Postgres { " FOR UPDATE" } else { "" };
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT customer_id, transaction_id, amount_minor, points, refunded_minor, restored_points \
             FROM checkout_spends WHERE program_id = $1 AND order_id = $2{suffix}"
        ));
        let row = sqlx::query(sql).bind(program_id).bind(order_id).fetch_optional(&mut *tx).await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(CheckoutRow {
            customer_id: row.try_get("customer_id")?,
            transaction_id: row.try_get("transaction_id")?,
            amount_minor: row.try_get("amount_minor")?,
            points: row.try_get("points")?,
            refunded_minor: row.try_get("refunded_minor")?,
            restored_points: row.try_get("restored_points")?,
        }))
    }

    async fn find_earn(
        &self,
        tx: &mut AnyConnection,
        program_id: &str,
        original: &EntryRef,
    ) -> Result<(String, String), Error> {
        let lot_id = transaction_of(tx, program_id, "Earn", original).await?.ok_or_else(|| match original {
            EntryRef::TransactionId(id) | EntryRef::IdempotencyKey(id) => Error::EarnNotFound(id.clone()),
        })?;
        let customer: Option<String> =
            sqlx::query_scalar("SELECT customer_id FROM point_lots WHERE program_id = $1 AND lot_id = $2")
                .bind(program_id)
                .bind(&lot_id)
                .fetch_optional(&mut *tx)
                .await?;
        let customer = customer.ok_or_else(|| Error::EarnNotFound(lot_id.clone()))?;
        Ok((customer, lot_id))
    }

    /// The spend `which` refers to, with the lots it drew from.
    async fn find_spend(&self, tx: &mut AnyConnection, program_id: &str, which: &EntryRef) -> Result<SpendRow, Error> {
        let not_found = || match which {
            EntryRef::TransactionId(id) | EntryRef::IdempotencyKey(id) => Error::SpendNotFound(id.clone()),
        };
        let transaction_id = transaction_of(tx, program_id, "Spend", which).await?.ok_or_else(not_found)?;
        let row = sqlx::query(
            "SELECT customer_id, kind, amount, draws, order_id FROM ledger_entries \
             WHERE program_id = $1 AND transaction_id = $2",
        )
        .bind(program_id)
        .bind(&transaction_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(not_found)?;
        if row.try_get::<String, _>("kind")? != EntryKind::Spend.as_str() {
            return Err(not_found());
        }
        let order_id: String = row.try_get("order_id")?;
        if !order_id.is_empty() {
            return Err(RuleViolation::SpendPaidForOrder { spend: transaction_id, order_id }.into());
        }
        let draws = parse_draws(&transaction_id, &row.try_get::<String, _>("draws")?)?;
        Ok(SpendRow { customer_id: row.try_get("customer_id")?, transaction_id, points: row.try_get("amount")?, draws })
    }

    /// Writes what the book changed; returns the highest stream position
    /// written when the dialect numbers rows inside the transaction.
    async fn persist(
        &self,
        tx: &mut AnyConnection,
        book: &AccountBook,
        order_ref: Option<OrderRef<'_>>,
        actor: &str,
        before: &Account,
    ) -> Result<Option<i64>, Error> {
        let account = &book.account;
        let (program_id, customer_id) = (account.program_id.as_str(), account.customer_id.as_str());
        for lot in book.lots.iter().filter(|l| l.dirty) {
            if lot.is_new {
                sqlx::query(
                    "INSERT INTO point_lots (lot_id, program_id, customer_id, original, remaining, consumed, expired, \
                     reversed, expired_reversed, state, pending_until_us, expires_at_us, earned_at_us) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                )
                .bind(&lot.lot_id)
                .bind(program_id)
                .bind(customer_id)
                .bind(lot.original)
                .bind(lot.remaining)
                .bind(lot.consumed)
                .bind(lot.expired)
                .bind(lot.reversed)
                .bind(lot.expired_reversed)
                .bind(lot_state(lot.active))
                .bind(lot.pending_until)
                .bind(lot.expires_at)
                .bind(lot.earned_at)
                .execute(&mut *tx)
                .await?;
            } else {
                sqlx::query(
                    "UPDATE point_lots SET remaining = $1, consumed = $2, expired = $3, reversed = $4, \
                     expired_reversed = $5, state = $6 WHERE lot_id = $7",
                )
                .bind(lot.remaining)
                .bind(lot.consumed)
                .bind(lot.expired)
                .bind(lot.reversed)
                .bind(lot.expired_reversed)
                .bind(lot_state(lot.active))
                .bind(&lot.lot_id)
                .execute(&mut *tx)
                .await?;
            }
        }
        // PostgreSQL: the entries take one block of ids, recorded as a batch
        // the publisher numbers after commit (migration 0011). SQLite: writers
        // are serialised, so numbering at insert is numbering in commit order.
        let (insert_entry, mut next_id) = match self.db.dialect {
            Dialect::Postgres => {
                let base = match book.entries.len() {
                    0 => 0,
                    n => open_batch(&mut *tx, n).await?,
                };
                (
                    "INSERT INTO ledger_entries (transaction_id, program_id, customer_id, kind, points, pending_points, \
                     reason, related_transaction_id, created_at_us, pending_until_us, expires_at_us, amount, order_id, \
                     order_amount_minor, actor, base_points, draws, id) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
                    Some(base),
                )
            }
            Dialect::Sqlite => (
                "INSERT INTO ledger_entries (transaction_id, program_id, customer_id, kind, points, pending_points, \
                 reason, related_transaction_id, created_at_us, pending_until_us, expires_at_us, amount, order_id, \
                 order_amount_minor, actor, base_points, draws, seq) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
                         (SELECT COALESCE(MAX(seq), 0) + 1 FROM ledger_entries)) RETURNING seq",
                None,
            ),
        };
        let mut published = None;
        for entry in &book.entries {
            let (order_id, order_amount, base_points) = match &order_ref {
                Some(r) if r.transaction_id == entry.transaction_id => (r.order_id, r.amount, r.base_points),
                _ => ("", 0, 0),
            };
            let query = sqlx::query(insert_entry)
                .bind(&entry.transaction_id)
                .bind(program_id)
                .bind(customer_id)
                .bind(entry.kind.as_str())
                .bind(entry.points)
                .bind(entry.pending_points)
                .bind(&entry.reason)
                .bind(&entry.related_transaction_id)
                .bind(book.now)
                .bind(entry.pending_until)
                .bind(entry.expires_at)
                .bind(entry.amount)
                .bind(order_id)
                .bind(order_amount)
                .bind(actor)
                .bind(base_points)
                .bind(entry.draws_text());
            match next_id.as_mut() {
                Some(id) => {
                    query.bind(*id).execute(&mut *tx).await?;
                    *id += 1;
                }
                None => {
                    let seq: Option<i64> = query.fetch_one(&mut *tx).await?.try_get("seq")?;
                    published = published.max(seq);
                }
            }
        }
        if book.account != *before {
            sqlx::query(
                "UPDATE accounts SET available = $1, pending = $2, lifetime_earned = $3, spent = $4, expired = $5, \
                 reversed = $6, debt = $7, version = $8, next_transition_us = $9, next_expiry_us = $10, \
                 next_expiry_points = $11 WHERE program_id = $12 AND customer_id = $13",
            )
            .bind(account.available)
            .bind(account.pending)
            .bind(account.lifetime_earned)
            .bind(account.spent)
            .bind(account.expired)
            .bind(account.reversed)
            .bind(account.debt)
            .bind(account.version)
            .bind(account.next_transition_at)
            .bind(account.next_expiry_at)
            .bind(account.next_expiry_points)
            .bind(program_id)
            .bind(customer_id)
            .execute(&mut *tx)
            .await?;
        }
        Ok(published)
    }
}

/// A spend as `RestoreSpend` needs it.
#[derive(Debug, Clone)]
struct SpendRow {
    customer_id: String,
    transaction_id: String,
    points: i64,
    draws: Vec<Draw>,
}

/// The most entries one writing transaction may number as one batch: the
/// increment of `ledger_batch_ids` (PostgreSQL migration 0011).
const BATCH_BLOCK: usize = 262_144;

/// Refuses a write of more entries than one block of ids holds.
fn within_block(entries: usize) -> Result<(), String> {
    match entries {
        n if n > BATCH_BLOCK => Err(format!("one write of {n} entries; a batch numbers at most {BATCH_BLOCK}")),
        _ => Ok(()),
    }
}

/// The statement that opens a batch of `$param` entries (PostgreSQL): takes
/// one block of entry ids and records it, unnumbered, for the publisher;
/// returns the block's first id, and no row for no entries. Shared by the
/// one-command path and the group-commit batch (a CTE of its write).
fn open_batch_sql(param: usize) -> String {
    format!(
        "INSERT INTO ledger_batches (batch_id, entries) \
         SELECT nextval('ledger_batch_ids'), ${param} WHERE ${param} > 0 RETURNING batch_id"
    )
}

/// Opens a batch of `entries` (more than none) on the one-command path;
/// returns the block's first id.
async fn open_batch(tx: &mut AnyConnection, entries: usize) -> Result<i64, Error> {
    within_block(entries).map_err(Error::Corrupt)?;
    let base: i64 =
        sqlx::query_scalar(sqlx::AssertSqlSafe(open_batch_sql(1))).bind(entries as i64).fetch_one(&mut *tx).await?;
    Ok(base)
}

/// The transaction an entry reference names: its id as given, or the one
/// saved under the `method`'s idempotency key (`None` for an unknown key).
async fn transaction_of(
    tx: &mut AnyConnection,
    program_id: &str,
    method: &str,
    which: &EntryRef,
) -> Result<Option<String>, Error> {
    match which {
        EntryRef::TransactionId(id) => Ok(Some(id.clone())),
        EntryRef::IdempotencyKey(key) => {
            let id: Option<Option<String>> = sqlx::query_scalar(
                "SELECT transaction_id FROM idempotency_keys \
                 WHERE program_id = $1 AND method = $2 AND idempotency_key = $3",
            )
            .bind(program_id)
            .bind(method)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
            Ok(id.flatten())
        }
    }
}

/// The lots a spend drew from.
async fn spend_draws(tx: &mut AnyConnection, program_id: &str, transaction_id: &str) -> Result<Vec<Draw>, Error> {
    let draws: Option<String> =
        sqlx::query_scalar("SELECT draws FROM ledger_entries WHERE program_id = $1 AND transaction_id = $2")
            .bind(program_id)
            .bind(transaction_id)
            .fetch_optional(&mut *tx)
            .await?;
    let draws = draws.ok_or_else(|| Error::Corrupt(format!("the spend {transaction_id} of a checkout is missing")))?;
    parse_draws(transaction_id, &draws)
}

fn parse_draws(transaction_id: &str, text: &str) -> Result<Vec<Draw>, Error> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("draws of {transaction_id}: {e}")))
}

/// The restore that already gave `spend_id` back, if any.
async fn restored_by(
    tx: &mut AnyConnection,
    program_id: &str,
    customer_id: &str,
    spend_id: &str,
) -> Result<Option<String>, Error> {
    Ok(sqlx::query_scalar(
        "SELECT transaction_id FROM ledger_entries WHERE program_id = $1 AND customer_id = $2 AND kind = 'RESTORE' \
         AND related_transaction_id = $3 LIMIT 1",
    )
    .bind(program_id)
    .bind(customer_id)
    .bind(spend_id)
    .fetch_optional(&mut *tx)
    .await?)
}

/// An order as `RefundOrder` needs it.
#[derive(Debug, Clone)]
/// Points applied to an order, as `ApplyCheckoutPoints` recorded them.
struct CheckoutRow {
    customer_id: String,
    transaction_id: String,
    amount_minor: i64,
    points: i64,
    refunded_minor: i64,
    restored_points: i64,
}

struct OrderRow {
    customer_id: String,
    amount_minor: i64,
    points: i64,
    transaction_id: String,
    refunded_minor: i64,
}

/// Refuses an activity whose rule's cap is reached. Runs with the account
/// locked, so parallel requests for one customer are counted one by one.
async fn check_activity_cap(
    tx: &mut AnyConnection,
    program_id: &str,
    customer_id: &str,
    activity_type: &str,
    activity_ref: &str,
    rule: &ActivityRule,
    now: Micros,
) -> Result<(), Error> {
    let refused = |limit: String| {
        Error::Rule(RuleViolation::ActivityCapReached { activity_type: activity_type.to_owned(), limit })
    };
    if rule.once_per_ref {
        let seen: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM activity_awards WHERE program_id = $1 AND customer_id = $2 AND activity_type = $3 \
             AND activity_ref = $4 LIMIT 1",
        )
        .bind(program_id)
        .bind(customer_id)
        .bind(activity_type)
        .bind(activity_ref)
        .fetch_optional(&mut *tx)
        .await?;
        if seen.is_some() {
            return Err(refused(format!("once for {activity_ref:?}")));
        }
    }
    if rule.cap_count > 0 {
        let since = rules::period_start(rule.cap_period, now).unwrap_or(i64::MIN);
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM activity_awards WHERE program_id = $1 AND customer_id = $2 \
             AND activity_type = $3 AND awarded_at_us >= $4",
        )
        .bind(program_id)
        .bind(customer_id)
        .bind(activity_type)
        .bind(since)
        .fetch_one(&mut *tx)
        .await?;
        if count >= i64::from(rule.cap_count) {
            let period = match rule.cap_period {
                rules::CapPeriod::Lifetime => "in total",
                rules::CapPeriod::Year => "this year",
                rules::CapPeriod::Month => "this month",
                rules::CapPeriod::Week => "this week",
                rules::CapPeriod::Day => "today",
            };
            return Err(refused(format!("{} time(s) {period}", rule.cap_count)));
        }
    }
    Ok(())
}

/// Creates the account on first use and locks its row until commit. An
/// existing account (the common case) costs one locking read and no write.
async fn lock_account(
    tx: &mut AnyConnection,
    dialect: Dialect,
    program_id: &str,
    customer_id: &str,
) -> Result<Account, Error> {
    // SQLite's write transaction already excludes every other writer.
    let lock = if dialect == Dialect::Postgres { " FOR UPDATE" } else { "" };
    let select = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE program_id = $1 AND customer_id = $2{lock}");
    let found = sqlx::query(sqlx::AssertSqlSafe(select.clone()))
        .bind(program_id)
        .bind(customer_id)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some(row) = found {
        return Ok(account_from_row(&row)?);
    }
    // A concurrent first write waits here for the other's commit, then locks its row.
    sqlx::query("INSERT INTO accounts (program_id, customer_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(program_id)
        .bind(customer_id)
        .execute(&mut *tx)
        .await?;
    let row = sqlx::query(sqlx::AssertSqlSafe(select)).bind(program_id).bind(customer_id).fetch_one(&mut *tx).await?;
    Ok(account_from_row(&row)?)
}

async fn open_lots(tx: &mut AnyConnection, program_id: &str, customer_id: &str) -> Result<Vec<PointLot>, Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {LOT_COLUMNS} FROM point_lots WHERE program_id = $1 AND customer_id = $2 AND remaining > 0"
    ));
    let rows = sqlx::query(sql).bind(program_id).bind(customer_id).fetch_all(&mut *tx).await?;
    rows.iter().map(|r| lot_from_row(r).map_err(Error::from)).collect()
}

async fn lot_by_id(tx: &mut AnyConnection, program_id: &str, lot_id: &str) -> Result<Option<PointLot>, Error> {
    let sql =
        sqlx::AssertSqlSafe(format!("SELECT {LOT_COLUMNS} FROM point_lots WHERE program_id = $1 AND lot_id = $2"));
    let row = sqlx::query(sql).bind(program_id).bind(lot_id).fetch_optional(&mut *tx).await?;
    row.as_ref().map(lot_from_row).transpose().map_err(Error::from)
}

fn account_from_row(row: &AnyRow) -> Result<Account, sqlx::Error> {
    Ok(Account {
        program_id: row.try_get("program_id")?,
        customer_id: row.try_get("customer_id")?,
        available: row.try_get("available")?,
        pending: row.try_get("pending")?,
        lifetime_earned: row.try_get("lifetime_earned")?,
        spent: row.try_get("spent")?,
        expired: row.try_get("expired")?,
        reversed: row.try_get("reversed")?,
        debt: row.try_get("debt")?,
        version: row.try_get("version")?,
        next_transition_at: row.try_get("next_transition_us")?,
        next_expiry_at: row.try_get("next_expiry_us")?,
        next_expiry_points: row.try_get("next_expiry_points")?,
    })
}

fn lot_from_row(row: &AnyRow) -> Result<PointLot, sqlx::Error> {
    Ok(PointLot {
        lot_id: row.try_get("lot_id")?,
        original: row.try_get("original")?,
        remaining: row.try_get("remaining")?,
        consumed: row.try_get("consumed")?,
        expired: row.try_get("expired")?,
        reversed: row.try_get("reversed")?,
        expired_reversed: row.try_get("expired_reversed")?,
        active: row.try_get::<String, _>("state")? == "active",
        pending_until: row.try_get("pending_until_us")?,
        expires_at: row.try_get("expires_at_us")?,
        earned_at: row.try_get("earned_at_us")?,
        dirty: false,
        is_new: false,
    })
}

fn entry_from_row(row: &AnyRow) -> Result<LedgerRow, Error> {
    let kind: String = row.try_get("kind")?;
    let seq: Option<i64> = row.try_get("seq")?;
    Ok(LedgerRow {
        id: row.try_get("id")?,
        sequence: seq.unwrap_or(0),
        transaction_id: row.try_get("transaction_id")?,
        program_id: row.try_get("program_id")?,
        customer_id: row.try_get("customer_id")?,
        kind: EntryKind::parse(&kind).ok_or_else(|| Error::Corrupt(format!("unknown entry kind {kind:?}")))?,
        points: row.try_get("points")?,
        pending_points: row.try_get("pending_points")?,
        reason: row.try_get("reason")?,
        related_transaction_id: row.try_get("related_transaction_id")?,
        created_at: row.try_get("created_at_us")?,
        pending_until: row.try_get("pending_until_us")?,
        expires_at: row.try_get("expires_at_us")?,
        amount: row.try_get("amount")?,
        order_id: row.try_get("order_id")?,
        order_amount_minor: row.try_get("order_amount_minor")?,
        actor: row.try_get("actor")?,
        base_points: row.try_get("base_points")?,
    })
}

fn lot_state(active: bool) -> &'static str {
    if active { "active" } else { "pending" }
}

/// An account whose balance Redis may hold at an older version than `version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheDoubt {
    pub program_id: String,
    pub customer_id: String,
    pub version: i64,
}

/// The `balance_cache_doubts` table: written only when a balance could not
/// be refreshed in Redis, so every replica, and the next process, learns of it.
#[derive(Clone, Debug)]
pub struct CacheDoubts {
    db: Database,
}

impl CacheDoubts {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Keeps the highest doubted version per account.
    pub async fn record(&self, doubt: &CacheDoubt) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO balance_cache_doubts (program_id, customer_id, version) VALUES ($1, $2, $3) \
             ON CONFLICT (program_id, customer_id) DO UPDATE SET version = excluded.version \
             WHERE balance_cache_doubts.version < excluded.version",
        )
        .bind(&doubt.program_id)
        .bind(&doubt.customer_id)
        .bind(doubt.version)
        .execute(&self.db.pool)
        .await
        .map(drop)
    }

    /// Up to `limit` doubts, in no particular order.
    pub async fn list(&self, limit: i64) -> Result<Vec<CacheDoubt>, sqlx::Error> {
        let rows = sqlx::query("SELECT program_id, customer_id, version FROM balance_cache_doubts LIMIT $1")
            .bind(limit)
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(CacheDoubt {
                    program_id: r.try_get("program_id")?,
                    customer_id: r.try_get("customer_id")?,
                    version: r.try_get("version")?,
                })
            })
            .collect()
    }

    /// Removes doubts that were settled, unless a newer version was doubted since.
    pub async fn clear(&self, doubts: &[CacheDoubt]) -> Result<(), sqlx::Error> {
        let mut tx = begin_write(&self.db).await?;
        for doubt in doubts {
            sqlx::query("DELETE FROM balance_cache_doubts WHERE program_id = $1 AND customer_id = $2 AND version = $3")
                .bind(&doubt.program_id)
                .bind(&doubt.customer_id)
                .bind(doubt.version)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }
}

/// `a.x, a.y` from `x, y`.
fn qualified_columns(alias: &str, columns: &str) -> String {
    columns.split(',').map(|c| format!("{alias}.{}", c.trim())).collect::<Vec<_>>().join(", ")
}
