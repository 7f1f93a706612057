//! The ledger's rules, free of transport and storage: an [`AccountBook`] is
//! one account with the lots a command needs, and every command turns into
//! ledger entries plus changes to the account and its lots.
//!
//! Invariants kept here (and checked by the tests):
//! - `available == Σ remaining of active lots − debt`, and debt is only
//!   non-zero when no active lot has points left;
//! - `pending == Σ remaining of pending lots`;
//! - `available == Σ entry.points` and `pending == Σ entry.pending_points`
//!   over the account's ledger;
//! - a spend never takes `available` below zero.

pub mod profile;
pub mod rules;

use serde::{Deserialize, Serialize};

use loyalty_common::clock::Micros;

/// Largest number of points one command may move.
pub const MAX_POINTS_PER_COMMAND: i64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    Earn,
    Spend,
    Reverse,
    Adjust,
    Activate,
    Expire,
    /// A spend given back (a voucher cancelled, a redemption that failed).
    Restore,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Earn => "EARN",
            Self::Spend => "SPEND",
            Self::Reverse => "REVERSE",
            Self::Adjust => "ADJUST",
            Self::Activate => "ACTIVATE",
            Self::Expire => "EXPIRE",
            Self::Restore => "RESTORE",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "EARN" => Self::Earn,
            "SPEND" => Self::Spend,
            "REVERSE" => Self::Reverse,
            "ADJUST" => Self::Adjust,
            "ACTIVATE" => Self::Activate,
            "EXPIRE" => Self::Expire,
            "RESTORE" => Self::Restore,
            _ => return None,
        })
    }
}

/// One customer's balance projection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub program_id: String,
    pub customer_id: String,
    pub available: i64,
    pub pending: i64,
    pub lifetime_earned: i64,
    pub spent: i64,
    pub expired: i64,
    pub reversed: i64,
    pub debt: i64,
    pub version: i64,
    pub next_transition_at: Option<Micros>,
    pub next_expiry_at: Option<Micros>,
    pub next_expiry_points: i64,
}

impl Account {
    pub fn new(program_id: &str, customer_id: &str) -> Self {
        Self { program_id: program_id.to_owned(), customer_id: customer_id.to_owned(), ..Self::default() }
    }

    /// True when a pending lot should activate or an active lot expire by `now`.
    pub fn is_due(&self, now: Micros) -> bool {
        self.next_transition_at.is_some_and(|at| at <= now)
    }

    pub fn balance(&self) -> Balance {
        Balance {
            available: self.available,
            pending: self.pending,
            lifetime_earned: self.lifetime_earned,
            spent: self.spent,
            expired: self.expired,
            reversed: self.reversed,
            next_expiry_points: self.next_expiry_points,
            next_expiry_at: self.next_expiry_at,
            version: self.version,
            valid_until: self.next_transition_at,
        }
    }
}

/// What a customer sees; `valid_until` tells a cache when it goes stale on its own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub available: i64,
    pub pending: i64,
    pub lifetime_earned: i64,
    pub spent: i64,
    pub expired: i64,
    pub reversed: i64,
    pub next_expiry_points: i64,
    pub next_expiry_at: Option<Micros>,
    pub version: i64,
    pub valid_until: Option<Micros>,
}

/// What is left of one earn or positive adjustment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointLot {
    pub lot_id: String,
    pub original: i64,
    pub remaining: i64,
    pub consumed: i64,
    pub expired: i64,
    pub reversed: i64,
    /// The part of `reversed` that was taken from already-expired points.
    pub expired_reversed: i64,
    pub active: bool,
    pub pending_until: Option<Micros>,
    pub expires_at: Option<Micros>,
    pub earned_at: Micros,
    /// Set when the book changed or created the lot.
    pub dirty: bool,
    pub is_new: bool,
}

impl PointLot {
    fn spend_order(&self) -> (bool, Micros, Micros) {
        // Earliest expiry first; lots that never expire last; then oldest.
        (self.expires_at.is_none(), self.expires_at.unwrap_or(0), self.earned_at)
    }
}

/// A ledger row the book wants written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    pub transaction_id: String,
    pub kind: EntryKind,
    pub points: i64,
    pub pending_points: i64,
    /// The points the operation concerned, whatever the deltas: earned,
    /// spent, reversed (expired points included), expired, activated,
    /// adjusted (signed).
    pub amount: i64,
    pub reason: String,
    pub related_transaction_id: String,
    pub pending_until: Option<Micros>,
    pub expires_at: Option<Micros>,
    /// For a spend: the lots it drew from, so that giving it back can put
    /// the points where they came from.
    pub draws: Vec<Draw>,
}

/// The draws that give `points` more of a spend back after `restored` were
/// given back: the spend's draws last first (the latest-expiring lots get
/// their points back first), past what earlier partial restores took.
pub fn draws_to_restore(draws: &[Draw], restored: i64, points: i64) -> Vec<Draw> {
    let (mut skip, mut left) = (restored.max(0), points.max(0));
    let mut out = Vec::new();
    for draw in draws.iter().rev() {
        let skipped = skip.min(draw.points);
        skip -= skipped;
        let take = (draw.points - skipped).min(left);
        if take > 0 {
            out.push(Draw { lot_id: draw.lot_id.clone(), points: take });
            left -= take;
        }
        if left == 0 {
            break;
        }
    }
    out
}

/// Points a spend took from one lot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Draw {
    pub lot_id: String,
    pub points: i64,
}

impl NewEntry {
    /// The draws as stored with the entry: empty for anything but a spend.
    pub fn draws_text(&self) -> String {
        if self.draws.is_empty() { String::new() } else { serde_json::to_string(&self.draws).expect("draws serialise") }
    }
}

/// A refusal under the ledger's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleViolation {
    #[error("insufficient points: {available} available, {requested} requested")]
    InsufficientPoints { available: i64, requested: i64 },
    #[error("only {reversible} points of that earn can still be reversed, {requested} requested")]
    ReversalExceedsEarn { reversible: i64, requested: i64 },
    #[error("that earn has no pending points to activate")]
    NothingPending,
    #[error("only {refundable} of the order's amount is left to refund, {requested} requested")]
    RefundExceedsOrder { refundable: i64, requested: i64 },
    #[error("{activity_type} is not rewarded in this program")]
    ActivityNotRewarded { activity_type: String },
    #[error("{activity_type} was already rewarded {limit}")]
    ActivityCapReached { activity_type: String, limit: String },
    #[error("orders in {got} are not accepted; this program counts in {expected}")]
    CurrencyMismatch { expected: String, got: String },
    #[error("spend {spend} was already given back by {restore}")]
    AlreadyRestored { spend: String, restore: String },
    #[error("spend {spend} paid for order {order_id}: refund the order to give its points back")]
    SpendPaidForOrder { spend: String, order_id: String },
    #[error("this program does not let points pay for orders")]
    CheckoutDisabled,
    #[error("points at checkout must be at least {min_points} and a multiple of {step_points}")]
    CheckoutUnaligned { min_points: i64, step_points: i64 },
    #[error("at most {max_points} points may pay for this order ({max_share_bp} basis points of it)")]
    CheckoutShareExceeded { max_points: i64, max_share_bp: i64 },
    #[error("{field}: {description}")]
    InvalidField { field: &'static str, description: String },
}

/// One account, its loaded lots, and the entries a command produced.
#[derive(Debug)]
pub struct AccountBook {
    pub account: Account,
    pub lots: Vec<PointLot>,
    /// True when `lots` holds every lot with points left (plus any target lot).
    pub all_open_lots_loaded: bool,
    pub entries: Vec<NewEntry>,
    pub now: Micros,
}

/// Counts from a settlement (activation of due pending lots, expiry).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Settlement {
    pub points_activated: i64,
    pub points_expired: i64,
}

pub fn new_transaction_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl AccountBook {
    pub fn new(account: Account, lots: Vec<PointLot>, all_open_lots_loaded: bool, now: Micros) -> Self {
        Self { account, lots, all_open_lots_loaded, entries: Vec::new(), now }
    }

    /// Activates pending lots whose time has come, then expires what is left
    /// of active lots past their expiry.
    pub fn settle(&mut self) -> Settlement {
        debug_assert!(self.all_open_lots_loaded, "settle needs every open lot");
        let now = self.now;
        let mut result = Settlement::default();
        let mut due: Vec<usize> = (0..self.lots.len())
            .filter(|&i| {
                let lot = &self.lots[i];
                !lot.active && lot.remaining > 0 && lot.pending_until.is_some_and(|at| at <= now)
            })
            .collect();
        due.sort_by_key(|&i| self.lots[i].pending_until);
        for i in due {
            result.points_activated += self.activate_lot(i, "pending period ended");
        }
        result.points_expired = self.expire_due();
        result
    }

    /// Expires what is left of the loaded active lots past their expiry;
    /// returns the points expired.
    fn expire_due(&mut self) -> i64 {
        let now = self.now;
        let mut points_expired = 0;
        let mut expiring: Vec<usize> = (0..self.lots.len())
            .filter(|&i| {
                let lot = &self.lots[i];
                lot.active && lot.remaining > 0 && lot.expires_at.is_some_and(|at| at <= now)
            })
            .collect();
        expiring.sort_by_key(|&i| self.lots[i].expires_at);
        for i in expiring {
            let lot = &mut self.lots[i];
            let points = lot.remaining;
            lot.remaining = 0;
            lot.expired += points;
            lot.dirty = true;
            let lot_id = lot.lot_id.clone();
            let expires_at = lot.expires_at;
            self.account.available -= points;
            self.account.expired += points;
            points_expired += points;
            self.entries.push(NewEntry {
                transaction_id: new_transaction_id(),
                kind: EntryKind::Expire,
                points: -points,
                pending_points: 0,
                amount: points,
                reason: "points expired".to_owned(),
                related_transaction_id: lot_id,
                pending_until: None,
                expires_at,
                draws: Vec::new(),
            });
        }
        points_expired
    }

    /// Adds a lot; pending when `pending_until` lies in the future.
    pub fn earn(
        &mut self,
        transaction_id: &str,
        kind: EntryKind,
        points: i64,
        reason: &str,
        pending_until: Option<Micros>,
        expires_at: Option<Micros>,
    ) -> Result<(), RuleViolation> {
        if let Some(expires_at) = expires_at {
            if expires_at <= self.now {
                return Err(RuleViolation::InvalidField {
                    field: "expires_at",
                    description: "must be in the future".into(),
                });
            }
            if pending_until.is_some_and(|p| p >= expires_at) {
                return Err(RuleViolation::InvalidField {
                    field: "expires_at",
                    description: "must be after pending_until".into(),
                });
            }
        }
        let pending_until = pending_until.filter(|&at| at > self.now);
        let active = pending_until.is_none();
        let index = self.add_lot(transaction_id, points, pending_until, expires_at);
        self.account.lifetime_earned += points;
        self.entries.push(NewEntry {
            transaction_id: transaction_id.to_owned(),
            kind,
            points: 0,
            pending_points: points,
            amount: points,
            reason: reason.to_owned(),
            related_transaction_id: String::new(),
            pending_until,
            expires_at,
            draws: Vec::new(),
        });
        if active {
            // Same arithmetic as an activation, folded into the earn's own entry.
            self.make_active(index);
            let entry = self.entries.last_mut().expect("entry just pushed");
            entry.points = points;
            entry.pending_points = 0;
        }
        Ok(())
    }

    /// Consumes active points, earliest-expiring lots first.
    pub fn spend(&mut self, transaction_id: &str, points: i64, reason: &str) -> Result<(), RuleViolation> {
        if self.account.available < points {
            return Err(RuleViolation::InsufficientPoints { available: self.account.available, requested: points });
        }
        let draws = self.consume_fifo(points);
        debug_assert_eq!(drawn(&draws), points, "available covered the spend");
        self.account.available -= points;
        self.account.spent += points;
        self.push_simple(transaction_id, EntryKind::Spend, -points, reason, "");
        self.entries.last_mut().expect("entry just pushed").draws = draws;
        Ok(())
    }

    /// Gives a spend back: each lot it drew from gets its points back, with
    /// its own expiry (what expired meanwhile expires again at once, in an
    /// EXPIRE entry of its own), repaying any debt first. Nothing counts as
    /// earned; `spent` shrinks by what comes back. A spend recorded before
    /// draws were kept (`draws` empty) comes back as one new lot expiring at
    /// `legacy_expires_at`. Returns the points given back.
    pub fn restore(
        &mut self,
        transaction_id: &str,
        spend_id: &str,
        spent: i64,
        draws: &[Draw],
        reason: &str,
        legacy_expires_at: Option<Micros>,
    ) -> i64 {
        self.account.spent -= spent;
        self.push_simple(transaction_id, EntryKind::Restore, spent, reason, spend_id);
        if draws.is_empty() {
            let index = self.add_lot(transaction_id, spent, None, legacy_expires_at);
            self.make_active(index);
            return spent;
        }
        for draw in draws {
            let index = self.lot_index(&draw.lot_id).expect("the store loads the lots a spend drew from");
            let lot = &mut self.lots[index];
            lot.remaining += draw.points;
            lot.consumed -= draw.points;
            lot.dirty = true;
        }
        self.account.available += spent;
        self.expire_due();
        // With a debt no other active lot has points left: this takes from the restored ones.
        let repaid = drawn(&self.consume_fifo(self.account.debt));
        self.account.debt -= repaid;
        spent
    }

    /// Admin correction. Positive adds an active lot; negative consumes like a
    /// spend and, only with `allow_debt`, may go below zero.
    pub fn adjust(
        &mut self,
        transaction_id: &str,
        points: i64,
        reason: &str,
        expires_at: Option<Micros>,
        allow_debt: bool,
    ) -> Result<(), RuleViolation> {
        if points > 0 {
            return self.earn(transaction_id, EntryKind::Adjust, points, reason, None, expires_at);
        }
        let amount = -points;
        if !allow_debt && self.account.available < amount {
            return Err(RuleViolation::InsufficientPoints { available: self.account.available, requested: amount });
        }
        let taken = drawn(&self.consume_fifo(amount));
        self.account.debt += amount - taken;
        self.account.available -= amount;
        self.push_simple(transaction_id, EntryKind::Adjust, points, reason, "");
        Ok(())
    }

    /// Takes back up to `points` (default: all not yet reversed) of the lot
    /// `lot_id`: first from what is left of it, then from its expired part
    /// (already gone, so free), then from the rest of the balance, and any
    /// shortfall becomes a debt. Returns the points reversed.
    pub fn reverse(
        &mut self,
        transaction_id: &str,
        lot_id: &str,
        points: Option<i64>,
        reason: &str,
    ) -> Result<i64, RuleViolation> {
        let index = self.lot_index(lot_id).expect("the store loads the lot to reverse");
        let lot = &self.lots[index];
        let reversible = lot.original - lot.reversed;
        let requested = points.unwrap_or(reversible);
        if requested == 0 || requested > reversible {
            return Err(RuleViolation::ReversalExceedsEarn { reversible, requested });
        }
        let lot = &mut self.lots[index];
        lot.reversed += requested;
        lot.dirty = true;
        let from_lot = requested.min(lot.remaining);
        lot.remaining -= from_lot;
        let (available_delta, pending_delta) = if lot.active {
            let rest = requested - from_lot;
            let from_expired = rest.min(lot.expired - lot.expired_reversed);
            lot.expired_reversed += from_expired;
            let from_balance = rest - from_expired;
            let taken = drawn(&self.consume_fifo(from_balance));
            self.account.debt += from_balance - taken;
            let delta = from_lot + from_balance;
            self.account.available -= delta;
            (-delta, 0)
        } else {
            self.account.pending -= from_lot;
            (0, -from_lot)
        };
        self.account.reversed += requested;
        self.entries.push(NewEntry {
            transaction_id: transaction_id.to_owned(),
            kind: EntryKind::Reverse,
            points: available_delta,
            pending_points: pending_delta,
            amount: requested,
            reason: reason.to_owned(),
            related_transaction_id: lot_id.to_owned(),
            pending_until: None,
            expires_at: None,
            draws: Vec::new(),
        });
        Ok(requested)
    }

    /// Activates the pending lot `lot_id`, or every pending lot when `None`.
    /// Returns the activation entries' transaction ids and the points activated.
    pub fn activate_pending(&mut self, lot_id: Option<&str>) -> Result<(Vec<String>, i64), RuleViolation> {
        let targets: Vec<usize> = match lot_id {
            Some(id) => {
                let index = self.lot_index(id).ok_or(RuleViolation::NothingPending)?;
                let lot = &self.lots[index];
                if lot.active || lot.remaining == 0 {
                    return Err(RuleViolation::NothingPending);
                }
                vec![index]
            }
            None => (0..self.lots.len()).filter(|&i| !self.lots[i].active && self.lots[i].remaining > 0).collect(),
        };
        let first_entry = self.entries.len();
        let points =
            targets.into_iter().map(|i| self.activate_lot(i, "activated before the pending period ended")).sum();
        let ids = self.entries[first_entry..].iter().map(|e| e.transaction_id.clone()).collect();
        Ok((ids, points))
    }

    /// Bumps the version when entries were produced and recomputes what the
    /// account row caches about its lots. Call once, after the command.
    pub fn finish(&mut self) {
        if !self.entries.is_empty() {
            self.account.version += 1;
        }
        if self.all_open_lots_loaded {
            let open = self.lots.iter().filter(|l| l.remaining > 0);
            self.account.next_transition_at =
                open.clone().filter_map(|l| if l.active { l.expires_at } else { l.pending_until }).min();
            self.account.next_expiry_at = open.clone().filter(|l| l.active).filter_map(|l| l.expires_at).min();
            self.account.next_expiry_points = match self.account.next_expiry_at {
                Some(at) => open.filter(|l| l.active && l.expires_at == Some(at)).map(|l| l.remaining).sum(),
                None => 0,
            };
        } else {
            // Only new lots were added: fold them into what the row already knows.
            for lot in self.lots.iter().filter(|l| l.is_new && l.remaining > 0) {
                let transition = if lot.active { lot.expires_at } else { lot.pending_until };
                self.account.next_transition_at = min_opt(self.account.next_transition_at, transition);
                if lot.active
                    && let Some(at) = lot.expires_at
                {
                    match self.account.next_expiry_at {
                        Some(current) if current < at => {}
                        Some(current) if current == at => self.account.next_expiry_points += lot.remaining,
                        _ => {
                            self.account.next_expiry_at = Some(at);
                            self.account.next_expiry_points = lot.remaining;
                        }
                    }
                }
            }
        }
    }

    pub fn lot_index(&self, lot_id: &str) -> Option<usize> {
        self.lots.iter().position(|l| l.lot_id == lot_id)
    }

    fn activate_lot(&mut self, index: usize, reason: &str) -> i64 {
        let points = self.lots[index].remaining;
        let lot_id = self.lots[index].lot_id.clone();
        self.make_active(index);
        self.entries.push(NewEntry {
            transaction_id: new_transaction_id(),
            kind: EntryKind::Activate,
            points,
            pending_points: -points,
            amount: points,
            reason: reason.to_owned(),
            related_transaction_id: lot_id,
            pending_until: None,
            expires_at: None,
            draws: Vec::new(),
        });
        points
    }

    /// A new lot of `points`, pending for now (see [`Self::make_active`]).
    fn add_lot(
        &mut self,
        lot_id: &str,
        points: i64,
        pending_until: Option<Micros>,
        expires_at: Option<Micros>,
    ) -> usize {
        self.lots.push(PointLot {
            lot_id: lot_id.to_owned(),
            original: points,
            remaining: points,
            consumed: 0,
            expired: 0,
            reversed: 0,
            expired_reversed: 0,
            active: false,
            pending_until,
            expires_at,
            earned_at: self.now,
            dirty: true,
            is_new: true,
        });
        self.account.pending += points;
        self.lots.len() - 1
    }

    /// Moves a pending lot's points to available, repaying any debt first.
    fn make_active(&mut self, index: usize) {
        let lot = &mut self.lots[index];
        let points = lot.remaining;
        lot.active = true;
        lot.dirty = true;
        self.account.pending -= points;
        self.account.available += points;
        let repay = self.account.debt.min(points);
        lot.remaining -= repay;
        lot.consumed += repay;
        self.account.debt -= repay;
    }

    /// Takes up to `points` from active lots, earliest expiry first; returns
    /// what it took from which lot.
    fn consume_fifo(&mut self, points: i64) -> Vec<Draw> {
        let mut order: Vec<usize> =
            (0..self.lots.len()).filter(|&i| self.lots[i].active && self.lots[i].remaining > 0).collect();
        order.sort_by_key(|&i| self.lots[i].spend_order());
        let mut left = points;
        let mut draws = Vec::new();
        for i in order {
            if left == 0 {
                break;
            }
            let lot = &mut self.lots[i];
            let take = left.min(lot.remaining);
            lot.remaining -= take;
            lot.consumed += take;
            lot.dirty = true;
            left -= take;
            draws.push(Draw { lot_id: lot.lot_id.clone(), points: take });
        }
        draws
    }

    fn push_simple(&mut self, transaction_id: &str, kind: EntryKind, points: i64, reason: &str, related: &str) {
        self.entries.push(NewEntry {
            transaction_id: transaction_id.to_owned(),
            kind,
            points,
            pending_points: 0,
            amount: points.abs(),
            reason: reason.to_owned(),
            related_transaction_id: related.to_owned(),
            pending_until: None,
            expires_at: None,
            draws: Vec::new(),
        });
    }
}

/// The points a list of draws took.
fn drawn(draws: &[Draw]) -> i64 {
    draws.iter().map(|d| d.points).sum()
}

fn min_opt(a: Option<Micros>, b: Option<Micros>) -> Option<Micros> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loyalty_common::clock::MICROS_PER_DAY;
    use proptest::prelude::*;

    const T0: Micros = 1_764_000_000_000_000;

    fn book() -> AccountBook {
        AccountBook::new(Account::new("p", "c"), Vec::new(), true, T0)
    }

    /// The invariants from the module docs, against the entries produced so far.
    fn check(book: &AccountBook, ledger: &[NewEntry]) {
        let active: i64 = book.lots.iter().filter(|l| l.active).map(|l| l.remaining).sum();
        let pending: i64 = book.lots.iter().filter(|l| !l.active).map(|l| l.remaining).sum();
        assert_eq!(book.account.available, active - book.account.debt, "available vs lots");
        assert_eq!(book.account.pending, pending, "pending vs lots");
        assert!(book.account.debt == 0 || active == 0, "debt with points left");
        assert_eq!(book.account.available, ledger.iter().map(|e| e.points).sum::<i64>(), "available vs ledger");
        assert_eq!(book.account.pending, ledger.iter().map(|e| e.pending_points).sum::<i64>(), "pending vs ledger");
        for lot in &book.lots {
            assert!(lot.remaining + lot.consumed + lot.expired <= lot.original, "lot {lot:?} holds more than it got");
            assert!(lot.reversed <= lot.original && lot.expired_reversed <= lot.expired, "lot {lot:?} over-reversed");
        }
    }

    fn earn(book: &mut AccountBook, points: i64, expires_in_days: Option<i64>) -> String {
        let id = new_transaction_id();
        let expires_at = expires_in_days.map(|d| book.now + d * MICROS_PER_DAY);
        book.earn(&id, EntryKind::Earn, points, "order", None, expires_at).unwrap();
        id
    }

    #[test]
    fn spend_takes_earliest_expiring_lots_first_and_never_expiring_last() {
        let mut b = book();
        let never = earn(&mut b, 100, None);
        let late = earn(&mut b, 100, Some(60));
        let soon = earn(&mut b, 100, Some(10));
        b.spend("s1", 150, "reward").unwrap();
        let remaining = |b: &AccountBook, id: &str| b.lots[b.lot_index(id).unwrap()].remaining;
        assert_eq!(remaining(&b, &soon), 0);
        assert_eq!(remaining(&b, &late), 50);
        assert_eq!(remaining(&b, &never), 100);
        assert_eq!(b.account.available, 150);
        assert_eq!(b.account.spent, 150);
    }

    #[test]
    fn spend_refuses_to_overdraw() {
        let mut b = book();
        earn(&mut b, 10, None);
        assert_eq!(b.spend("s", 11, "x"), Err(RuleViolation::InsufficientPoints { available: 10, requested: 11 }));
        assert_eq!(b.account.available, 10);
    }

    #[test]
    fn expiry_takes_what_is_left_of_partially_spent_lots() {
        let mut b = book();
        let soon = earn(&mut b, 100, Some(10));
        earn(&mut b, 50, Some(30));
        b.spend("s", 30, "x").unwrap();
        b.now += 11 * MICROS_PER_DAY;
        let settled = b.settle();
        assert_eq!(settled.points_expired, 70);
        assert_eq!(b.account.available, 50);
        assert_eq!(b.account.expired, 70);
        let expire = b.entries.iter().find(|e| e.kind == EntryKind::Expire).unwrap();
        assert_eq!((expire.points, expire.related_transaction_id.as_str()), (-70, soon.as_str()));
        b.finish();
        assert_eq!(b.account.next_expiry_points, 50);
        assert_eq!(b.account.next_expiry_at, Some(T0 + 30 * MICROS_PER_DAY));
        let entries = b.entries.clone();
        check(&b, &entries);
    }

    #[test]
    fn pending_points_activate_when_their_time_comes() {
        let mut b = book();
        b.earn("e", EntryKind::Earn, 40, "order", Some(T0 + 14 * MICROS_PER_DAY), None).unwrap();
        assert_eq!((b.account.available, b.account.pending), (0, 40));
        assert!(matches!(b.spend("s", 1, "x"), Err(RuleViolation::InsufficientPoints { .. })));
        b.finish();
        assert_eq!(b.account.next_transition_at, Some(T0 + 14 * MICROS_PER_DAY));
        b.now += 14 * MICROS_PER_DAY;
        assert_eq!(b.settle().points_activated, 40);
        assert_eq!((b.account.available, b.account.pending), (40, 0));
        let entries = b.entries.clone();
        check(&b, &entries);
    }

    #[test]
    fn reversing_pending_points_cancels_them() {
        let mut b = book();
        b.earn("e", EntryKind::Earn, 40, "order", Some(T0 + MICROS_PER_DAY), None).unwrap();
        assert_eq!(b.reverse("r", "e", Some(15), "refund").unwrap(), 15);
        assert_eq!((b.account.available, b.account.pending, b.account.reversed), (0, 25, 15));
        let entries = b.entries.clone();
        check(&b, &entries);
    }

    #[test]
    fn reversing_spent_points_leaves_a_debt_the_next_earn_repays() {
        let mut b = book();
        let e = earn(&mut b, 100, None);
        b.spend("s", 80, "reward").unwrap();
        assert_eq!(b.reverse("r", &e, None, "refund").unwrap(), 100);
        assert_eq!((b.account.available, b.account.debt), (-80, 80));
        earn(&mut b, 50, None);
        assert_eq!((b.account.available, b.account.debt), (-30, 30));
        earn(&mut b, 50, None);
        assert_eq!((b.account.available, b.account.debt), (20, 0));
        assert!(b.spend("s2", 21, "x").is_err());
        b.spend("s2", 20, "x").unwrap();
        let entries = b.entries.clone();
        check(&b, &entries);
    }

    #[test]
    fn reversal_cannot_exceed_the_earn_and_expired_points_are_not_taken_twice() {
        let mut b = book();
        let e = earn(&mut b, 100, Some(5));
        earn(&mut b, 100, None);
        b.now += 6 * MICROS_PER_DAY;
        b.settle();
        assert_eq!(b.account.available, 100);
        // All of the first earn expired: reversing it costs nothing more.
        assert_eq!(b.reverse("r1", &e, Some(60), "refund").unwrap(), 60);
        assert_eq!(b.account.available, 100);
        let reversal = b.entries.last().unwrap();
        assert_eq!((reversal.points, reversal.amount), (0, 60), "no balance moved, 60 points reversed");
        assert_eq!(
            b.reverse("r2", &e, Some(41), "refund"),
            Err(RuleViolation::ReversalExceedsEarn { reversible: 40, requested: 41 })
        );
        let entries = b.entries.clone();
        check(&b, &entries);
    }

    #[test]
    fn a_spend_given_back_in_parts_returns_each_point_once_latest_expiry_first() {
        let mut b = book();
        let soon = earn(&mut b, 100, Some(10));
        let late = earn(&mut b, 100, Some(60));
        b.spend("s", 150, "order o").unwrap();
        let draws = b.entries.last().unwrap().draws.clone();
        let d = |lot: &str, points| Draw { lot_id: lot.to_owned(), points };
        assert_eq!(draws_to_restore(&draws, 0, 30), [d(&late, 30)]);
        assert_eq!(draws_to_restore(&draws, 30, 40), [d(&late, 20), d(&soon, 20)]);
        assert_eq!(draws_to_restore(&draws, 70, 1_000), [d(&soon, 80)], "never more than the spend");
        let mut restored = 0;
        for (i, part) in [30, 40, 80].into_iter().enumerate() {
            let partial = draws_to_restore(&draws, restored, part);
            b.restore(&format!("r{i}"), "s", part, &partial, "refund", None);
            restored += part;
        }
        let remaining = |b: &AccountBook, id: &str| b.lots[b.lot_index(id).unwrap()].remaining;
        assert_eq!((remaining(&b, &soon), remaining(&b, &late)), (100, 100));
        assert_eq!((b.account.available, b.account.spent), (200, 0));
        let entries = b.entries.clone();
        check(&b, &entries);
    }

    #[test]
    fn a_spend_given_back_returns_to_its_lots_with_their_expiry_and_is_not_earned() {
        let mut b = book();
        let soon = earn(&mut b, 100, Some(10));
        let late = earn(&mut b, 100, Some(60));
        b.spend("s", 150, "reward").unwrap();
        let draws = b.entries.last().unwrap().draws.clone();
        assert_eq!(draws, [Draw { lot_id: soon.clone(), points: 100 }, Draw { lot_id: late.clone(), points: 50 }]);
        // The first lot's date passes before the voucher is cancelled.
        b.now += 11 * MICROS_PER_DAY;
        b.settle();
        assert_eq!(b.restore("r", "s", 150, &draws, "voucher cancelled", None), 150);
        let remaining = |b: &AccountBook, id: &str| b.lots[b.lot_index(id).unwrap()].remaining;
        assert_eq!((remaining(&b, &soon), remaining(&b, &late)), (0, 100), "the expired lot's part expired again");
        assert_eq!((b.account.available, b.account.spent, b.account.expired), (100, 0, 100));
        assert_eq!(b.account.lifetime_earned, 200, "nothing earned by a restore");
        let kinds: Vec<_> = b.entries.iter().skip(3).map(|e| (e.kind, e.points)).collect();
        assert_eq!(kinds, [(EntryKind::Restore, 150), (EntryKind::Expire, -100)]);
        b.finish();
        assert_eq!((b.account.next_expiry_at, b.account.next_expiry_points), (Some(T0 + 60 * MICROS_PER_DAY), 100));
        let entries = b.entries.clone();
        check(&b, &entries);
    }

    #[test]
    fn a_spend_given_back_repays_a_debt_first() {
        let mut b = book();
        let e = earn(&mut b, 100, None);
        b.spend("s", 60, "reward").unwrap();
        let draws = b.entries.last().unwrap().draws.clone();
        b.reverse("r", &e, None, "refund").unwrap();
        assert_eq!((b.account.available, b.account.debt), (-60, 60));
        b.restore("g", "s", 60, &draws, "voucher cancelled", None);
        assert_eq!((b.account.available, b.account.debt, b.account.spent), (0, 0, 0));
        let entries = b.entries.clone();
        check(&b, &entries);
    }

    #[test]
    fn a_spend_recorded_without_draws_comes_back_as_a_lot_of_its_own() {
        let mut b = book();
        earn(&mut b, 100, None);
        b.spend("s", 40, "reward").unwrap();
        let expiry = Some(T0 + 365 * MICROS_PER_DAY);
        b.restore("g", "s", 40, &[], "voucher cancelled", expiry);
        let lot = &b.lots[b.lot_index("g").unwrap()];
        assert_eq!((lot.remaining, lot.expires_at, lot.active), (40, expiry, true));
        assert_eq!((b.account.available, b.account.spent, b.account.lifetime_earned), (100, 0, 100));
        let entries = b.entries.clone();
        check(&b, &entries);
    }

    #[test]
    fn negative_adjustment_needs_allow_debt_to_overdraw() {
        let mut b = book();
        earn(&mut b, 10, None);
        assert!(b.adjust("a", -20, "fraud", None, false).is_err());
        b.adjust("a", -20, "fraud", None, true).unwrap();
        assert_eq!((b.account.available, b.account.debt), (-10, 10));
        let entries = b.entries.clone();
        check(&b, &entries);
    }

    #[test]
    fn expires_at_must_follow_pending_until_and_lie_ahead() {
        let mut b = book();
        let err = b.earn("e", EntryKind::Earn, 1, "x", Some(T0 + 10), Some(T0 + 5)).unwrap_err();
        assert!(matches!(err, RuleViolation::InvalidField { field: "expires_at", .. }));
        assert!(b.earn("e", EntryKind::Earn, 1, "x", None, Some(T0)).is_err());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Earn { points: i64, pending_days: Option<i64>, expires_days: Option<i64> },
        Spend(i64),
        Reverse { lot: usize, points: Option<i64> },
        Adjust { points: i64, allow_debt: bool },
        Activate,
        Advance(i64),
        Restore(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1..500i64, proptest::option::of(1..20i64), proptest::option::of(21..60i64))
                .prop_map(|(points, pending_days, expires_days)| Op::Earn { points, pending_days, expires_days }),
            (1..400i64).prop_map(Op::Spend),
            (0..8usize, proptest::option::of(1..300i64)).prop_map(|(lot, points)| Op::Reverse { lot, points }),
            (-300..300i64, any::<bool>())
                .prop_filter("non-zero", |(p, _)| *p != 0)
                .prop_map(|(points, allow_debt)| Op::Adjust { points, allow_debt }),
            Just(Op::Activate),
            (1..40i64).prop_map(Op::Advance),
            (0..8usize).prop_map(Op::Restore),
        ]
    }

    proptest! {
        /// Any sequence of commands keeps the invariants, and spends never overdraw.
        #[test]
        fn invariants_hold_for_any_command_sequence(ops in proptest::collection::vec(op(), 1..60)) {
            let mut account = Account::new("p", "c");
            let mut lots: Vec<PointLot> = Vec::new();
            let mut ledger: Vec<NewEntry> = Vec::new();
            let mut now = T0;
            for (n, op) in ops.into_iter().enumerate() {
                let mut b = AccountBook::new(account.clone(), lots.clone(), true, now);
                b.settle();
                let id = format!("t{n}");
                match op {
                    Op::Earn { points, pending_days, expires_days } => {
                        let pending_until = pending_days.map(|d| now + d * MICROS_PER_DAY);
                        let expires_at = expires_days.map(|d| now + d * MICROS_PER_DAY);
                        b.earn(&id, EntryKind::Earn, points, "x", pending_until, expires_at).unwrap();
                    }
                    Op::Spend(points) => {
                        let before = b.account.available;
                        match b.spend(&id, points, "x") {
                            Ok(()) => prop_assert!(b.account.available >= 0),
                            Err(_) => prop_assert!(before < points),
                        }
                    }
                    Op::Reverse { lot, points } => {
                        if let Some(target) = lots.get(lot).map(|l| l.lot_id.clone()) {
                            let _ = b.reverse(&id, &target, points, "x");
                        }
                    }
                    Op::Adjust { points, allow_debt } => { let _ = b.adjust(&id, points, "x", None, allow_debt); }
                    Op::Activate => { let _ = b.activate_pending(None); }
                    Op::Advance(days) => now += days * MICROS_PER_DAY,
                    Op::Restore(n) => {
                        // The n-th spend not given back yet.
                        let restored: Vec<&str> = ledger.iter()
                            .filter(|e| e.kind == EntryKind::Restore)
                            .map(|e| e.related_transaction_id.as_str())
                            .collect();
                        let spend = ledger.iter()
                            .filter(|e| e.kind == EntryKind::Spend && !restored.contains(&e.transaction_id.as_str()))
                            .nth(n);
                        if let Some(spend) = spend {
                            let lifetime = b.account.lifetime_earned;
                            b.restore(&id, &spend.transaction_id, spend.amount, &spend.draws, "x", None);
                            prop_assert_eq!(b.account.lifetime_earned, lifetime);
                        }
                    }
                }
                b.finish();
                ledger.extend(b.entries.iter().cloned());
                check(&b, &ledger);
                account = b.account;
                lots = b.lots.into_iter().map(|mut l| { l.dirty = false; l.is_new = false; l }).collect();
            }
        }
    }
}
