//! The points service's operations (`Ledger`), as the gRPC layer calls them: the store, the balance cache, the
//! stream publisher and the expiry job, wired together.
//!
//! What follows a commit (the cache refresh, the stream's wake-up) belongs
//! to the commit, not to its caller: it runs in the batch worker, or in a
//! task of its own for the other writes, so a caller that gives up after
//! the commit (deadline, disconnect) cannot leave readers an old balance.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

use tokio::sync::{Notify, watch};

use loyalty_common::clock::Micros;
use loyalty_common::shutdown::ShutdownSignal;
use loyalty_common::validate::FieldViolation;

use crate::cache::{AccountBalance, BalanceCache};
use crate::domain::rules::{self, Breakdown, CheckoutPoints, ORDER_TARGET, TierStanding};
use crate::domain::{Account, Balance, EntryKind, MAX_POINTS_PER_COMMAND, RuleViolation, Settlement};
use crate::error::Error;
use crate::segments::SegmentSource;
use crate::store::program::ProgramStore;
use crate::store::{
    BatchCommand, CacheDoubt, CheckoutRequest, Command, Execution, LedgerRow, LedgerStore, OrderRequest,
};
use crate::tiers::TierSource;
use crate::writer::Writer;

/// How often the publisher looks for rows committed by other replicas, or
/// left behind while an older transaction was still in flight.
const PUBLISH_POLL: Duration = Duration::from_millis(100);
/// Accounts settled per batch by the expiry job.
const SETTLE_BATCH: i64 = 500;

/// What one expiry run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryRun {
    pub accounts_settled: i64,
    pub points_expired: i64,
    pub points_activated: i64,
}

pub struct Ledger {
    store: LedgerStore,
    readers: Arc<Readers>,
    programs: ProgramStore,
    tiers: TierSource,
    segments: SegmentSource,
    /// Group commit for the commands it supports; `None`: every command in
    /// a transaction of its own.
    writer: Option<Writer>,
}

/// How the group-commit writer runs.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    /// Shard workers; 0 runs every command in a transaction of its own.
    pub workers: usize,
    /// Commands waiting per shard before new ones are refused (UNAVAILABLE).
    pub queue_capacity: usize,
    /// Counts the commands refused because their shard's queue was full.
    pub refused: Counter,
}

/// Who learns of a commit besides its caller: the balance cache and the
/// stream's publisher.
pub struct Readers {
    cache: BalanceCache,
    published: watch::Sender<i64>,
    publish_now: Notify,
}

impl Readers {
    /// Tells the readers what the fresh (not replayed) executions committed:
    /// the stream advances and every account's newest balance goes to the
    /// cache in one round trip. An execution whose balance Redis could not
    /// be told carries the doubt for [`Ledger::acknowledge`] to wait on.
    pub async fn committed<'a>(&self, executions: impl IntoIterator<Item = &'a mut Execution>) {
        let mut fresh: Vec<&mut Execution> = executions.into_iter().filter(|e| e.account.is_some()).collect();
        let changes: Vec<(&Account, Option<i64>)> =
            fresh.iter().filter_map(|e| e.account.as_ref().map(|a| (a, e.published_up_to))).collect();
        let doubts = self.announce(&changes).await;
        if doubts.is_empty() {
            return;
        }
        for execution in &mut fresh {
            let account = execution.account.as_ref().expect("fresh executions carry their account");
            execution.cache_doubt = doubts
                .iter()
                .find(|d| d.program_id == account.program_id && d.customer_id == account.customer_id)
                .cloned();
        }
    }

    /// Advances the stream and puts each account's newest balance; returns
    /// the balances doubted instead.
    async fn announce(&self, changes: &[(&Account, Option<i64>)]) -> Vec<CacheDoubt> {
        let mut latest: HashMap<(&str, &str), &Account> = HashMap::new();
        let mut wake_publisher = false;
        for &(account, published_up_to) in changes {
            match published_up_to {
                Some(seq) => self.advance(seq),
                None => wake_publisher = true,
            }
            let newest = latest.entry((&account.program_id, &account.customer_id)).or_insert(account);
            if account.version > newest.version {
                *newest = account;
            }
        }
        if wake_publisher {
            self.publish_now.notify_one();
        }
        let balances: Vec<AccountBalance> = latest.into_values().map(AccountBalance::of).collect();
        self.cache.put_committed(&balances).await
    }

    fn advance(&self, seq: i64) {
        self.published.send_if_modified(|current| {
            let newer = seq > *current;
            if newer {
                *current = seq;
            }
            newer
        });
    }
}

impl Ledger {
    pub async fn new(
        store: LedgerStore,
        cache: BalanceCache,
        programs: ProgramStore,
        tiers: TierSource,
        segments: SegmentSource,
        writer: WriterSettings,
    ) -> Result<Self, Error> {
        let last = store.last_sequence().await?;
        let readers = Arc::new(Readers { cache, published: watch::Sender::new(last), publish_now: Notify::new() });
        let writer = (writer.workers > 0).then(|| Writer::start(store.clone(), readers.clone(), writer));
        Ok(Self { store, readers, programs, tiers, segments, writer })
    }

    /// Drops an erased customer's cached balance.
    pub async fn forget_cached(&self, program_id: &str, customer_id: &str) -> Result<(), String> {
        self.readers.cache.forget(program_id, customer_id).await
    }

    /// Settings, campaigns and their audit log.
    pub fn programs(&self) -> &ProgramStore {
        &self.programs
    }

    /// Refuses a campaign restricted to tiers the program's ladder lacks.
    pub async fn check_campaign_tiers(&self, program_id: &str, campaign: &rules::Campaign) -> Result<(), Error> {
        if campaign.tier_ids.is_empty() {
            return Ok(());
        }
        let Some(known) = self.tiers.tier_ids(program_id).await? else {
            return Err(Error::invalid(
                "campaign.tier_ids",
                "needs a tiers service (TIERS_ADDR) to check the tiers against",
            ));
        };
        let unknown: Vec<FieldViolation> = campaign
            .tier_ids
            .iter()
            .enumerate()
            .filter(|(_, id)| !known.contains(id))
            .map(|(i, id)| {
                FieldViolation::new(format!("campaign.tier_ids[{i}]"), format!("{id:?} is not on the tier ladder"))
            })
            .collect();
        if unknown.is_empty() { Ok(()) } else { Err(Error::InvalidArgument(unknown)) }
    }

    /// Refuses a campaign for segments without an insights service to tell them.
    pub fn check_campaign_segments(&self, campaign: &rules::Campaign) -> Result<(), Error> {
        if campaign.segment_ids.is_empty() || self.segments.is_on() {
            return Ok(());
        }
        Err(Error::invalid("campaign.segment_ids", "needs an insights service (INSIGHTS_ADDR) to tell the segments"))
    }

    /// The customer's segment when a campaign for `target` at `at` needs it.
    async fn segment_for(
        &self,
        program_id: &str,
        customer_id: Option<&str>,
        campaigns: &[rules::Campaign],
        target: &str,
        at: Micros,
    ) -> Result<Option<&'static str>, Error> {
        match customer_id {
            Some(customer) if campaigns.iter().any(|c| c.needs_segment(at, target)) => {
                self.segments.segment(program_id, customer).await
            }
            _ => Ok(None),
        }
    }

    /// An order's points from the rules, the customer's tier and segment,
    /// and the campaigns active when it was placed.
    pub async fn price_order(
        &self,
        program_id: &str,
        customer_id: Option<&str>,
        amount_minor: i64,
        currency: &str,
        at: Micros,
    ) -> Result<(Breakdown, rules::ProgramSettings), Error> {
        let settings = self.settings_for_order(program_id, currency).await?;
        let tier = match customer_id {
            Some(customer) => self.tiers.standing(program_id, customer, at).await?,
            None => TierStanding::none(),
        };
        let campaigns = self.programs.active_campaigns(program_id, at).await?;
        let breakdown = if amount_minor < settings.minimum_order_minor {
            Breakdown::below_minimum()
        } else {
            let segment = self.segment_for(program_id, customer_id, &campaigns, ORDER_TARGET, at).await?;
            let base = settings.order_base_points(amount_minor);
            rules::breakdown(base, &tier, segment, &campaigns, ORDER_TARGET, at)
        };
        within_one_command("amount_minor", &breakdown)?;
        Ok((breakdown, settings))
    }

    /// Earns an order's points once per order id: the order id is the
    /// write's idempotency key, so the same order id with other arguments
    /// is refused as an order already recorded.
    pub async fn earn_for_order(self: &Arc<Self>, program_id: &str, order: OrderRequest) -> Result<Execution, Error> {
        let key = order.order_id.clone();
        self.earn_once(program_id, order).await.map_err(|error| match error {
            Error::IdempotencyKeyReused { .. } => Error::OrderAlreadyRecorded(key),
            other => other,
        })
    }

    async fn earn_once(self: &Arc<Self>, program_id: &str, order: OrderRequest) -> Result<Execution, Error> {
        let key = order.order_id.clone();
        let priced = self.price_for_earn(program_id, &order).await;
        let (breakdown, pending_until, expires_at) = match priced {
            Ok(priced) => priced,
            Err(error) => {
                // A replay answers from its saved result even when the rules or
                // the tiers service would refuse it now; only failures pay for the look-up.
                let identity = Command::OrderEarn {
                    order,
                    points: 0,
                    breakdown: Breakdown::default(),
                    pending_until: None,
                    expires_at: None,
                };
                return match self.store.saved(program_id, &key, &identity).await? {
                    Some(saved) => self.acknowledge(program_id, saved).await,
                    None => Err(error),
                };
            }
        };
        let command =
            Command::OrderEarn { points: breakdown.total_points, pending_until, expires_at, breakdown, order };
        self.execute(program_id, &key, command).await
    }

    /// The points, pending date and expiry of an order under today's rules.
    async fn price_for_earn(
        &self,
        program_id: &str,
        order: &OrderRequest,
    ) -> Result<(Breakdown, Option<Micros>, Option<Micros>), Error> {
        let now = self.now();
        let at = order.occurred_at.unwrap_or(now);
        let (breakdown, settings) =
            self.price_order(program_id, Some(&order.customer_id), order.amount_minor, &order.currency, at).await?;
        if breakdown.total_points == 0 {
            // Nothing earned: nothing pending, nothing to expire.
            return Ok((breakdown, None, None));
        }
        let expires_at = settings.expires_at(at);
        if expires_at.is_some_and(|e| e <= now) {
            return Err(Error::invalid("occurred_at", "is so long ago that its points would already have expired"));
        }
        Ok((breakdown, settings.pending_until(at), expires_at))
    }

    /// Spends points against an order once per order id (the write's
    /// idempotency key), for the discount the program's checkout rule gives:
    /// the same order id with other arguments is refused as already applied.
    pub async fn apply_checkout_points(
        self: &Arc<Self>,
        program_id: &str,
        order: CheckoutRequest,
    ) -> Result<Execution, Error> {
        let key = order.order_id.clone();
        self.apply_once(program_id, order).await.map_err(|error| match error {
            Error::IdempotencyKeyReused { .. } => Error::CheckoutAlreadyApplied(key),
            other => other,
        })
    }

    async fn apply_once(self: &Arc<Self>, program_id: &str, order: CheckoutRequest) -> Result<Execution, Error> {
        let key = order.order_id.clone();
        let discount_minor = match self.checkout_discount(program_id, &order).await {
            Ok(discount_minor) => discount_minor,
            // A replay answers from its saved result even when the rule would refuse it now.
            Err(error) => {
                let identity = Command::CheckoutSpend { order, discount_minor: 0 };
                return match self.store.saved(program_id, &key, &identity).await? {
                    Some(saved) => self.acknowledge(program_id, saved).await,
                    None => Err(error),
                };
            }
        };
        self.execute(program_id, &key, Command::CheckoutSpend { order, discount_minor }).await
    }

    async fn checkout_discount(&self, program_id: &str, order: &CheckoutRequest) -> Result<i64, Error> {
        let rule = self.checkout_rule(program_id, &order.currency).await?;
        Ok(rule.apply(order.amount_minor, order.points)?)
    }

    /// The program's checkout rule, for an order in `currency`.
    async fn checkout_rule(&self, program_id: &str, currency: &str) -> Result<CheckoutPoints, Error> {
        let settings = self.settings_for_order(program_id, currency).await?;
        Ok(settings.checkout.ok_or(RuleViolation::CheckoutDisabled)?)
    }

    /// The program's settings, for an order in `currency`.
    async fn settings_for_order(&self, program_id: &str, currency: &str) -> Result<rules::ProgramSettings, Error> {
        let settings = self.programs.settings(program_id).await?;
        if !settings.currency.is_empty() && settings.currency != currency {
            let mismatch =
                RuleViolation::CurrencyMismatch { expected: settings.currency.clone(), got: currency.to_owned() };
            return Err(mismatch.into());
        }
        Ok(settings)
    }

    /// How many of the customer's points may pay for an order of
    /// `amount_minor` now: the rule, the balance and the most points usable.
    pub async fn quote_checkout_points(
        self: &Arc<Self>,
        program_id: &str,
        customer_id: &str,
        amount_minor: i64,
        currency: &str,
    ) -> Result<(CheckoutPoints, Balance, i64), Error> {
        let rule = self.checkout_rule(program_id, currency).await?;
        let balance = self.balance(program_id, customer_id).await?;
        let usable = rule.usable(amount_minor, balance.available);
        Ok((rule, balance, usable))
    }

    /// Awards an activity rule's points, within its cap.
    pub async fn record_activity(
        self: &Arc<Self>,
        program_id: &str,
        customer_id: &str,
        activity_type: &str,
        activity_ref: &str,
        idempotency_key: &str,
    ) -> Result<Execution, Error> {
        let now = self.now();
        let settings = self.programs.settings(program_id).await?;
        let rule = settings.rule(activity_type).filter(|r| r.active).cloned().ok_or_else(|| {
            Error::Rule(RuleViolation::ActivityNotRewarded { activity_type: activity_type.to_owned() })
        })?;
        let campaigns = self.programs.active_campaigns(program_id, now).await?;
        let command = |breakdown| Command::Activity {
            customer_id: customer_id.to_owned(),
            activity_type: activity_type.to_owned(),
            activity_ref: activity_ref.to_owned(),
            rule: rule.clone(),
            breakdown,
            expires_at: settings.expires_at(now),
        };
        // The tier is asked for only when it can change the price: a birthday
        // (the tier's birthday perk) or a tier-limited campaign for this
        // activity, and the segment only for a segment-limited one. Like an
        // order, a silent tiers or insights service refuses it unless the
        // key's saved result answers.
        let needs_tier =
            activity_type == rules::BIRTHDAY_ACTIVITY || campaigns.iter().any(|c| c.needs_tier(now, activity_type));
        let standing = async {
            let tier = match needs_tier {
                true => self.tiers.standing(program_id, customer_id, now).await?,
                false => TierStanding::none(),
            };
            let segment = self.segment_for(program_id, Some(customer_id), &campaigns, activity_type, now).await?;
            Ok::<_, Error>((tier, segment))
        };
        let (tier, segment) = match standing.await {
            Ok(standing) => standing,
            Err(error) => {
                return match self.store.saved(program_id, idempotency_key, &command(Breakdown::default())).await? {
                    Some(saved) => self.acknowledge(program_id, saved).await,
                    None => Err(error),
                };
            }
        };
        // Tier multipliers reward spending: an activity's tier selects campaigns
        // and, for birthdays, the tier's birthday perk.
        let breakdown = rules::breakdown(rule.points, &tier, segment, &campaigns, activity_type, now);
        within_one_command("activity_type", &breakdown)?;
        self.execute(program_id, idempotency_key, command(breakdown)).await
    }

    pub fn now(&self) -> Micros {
        self.store.now()
    }

    /// Runs a write under its idempotency key; answers once its balance is
    /// what every reader is served.
    pub async fn execute(
        self: &Arc<Self>,
        program_id: &str,
        idempotency_key: &str,
        command: Command,
    ) -> Result<Execution, Error> {
        let execution = match &self.writer {
            // The batch worker refreshes the cache after its commit.
            Some(writer) if BatchCommand::supported(&command) => {
                writer.execute(program_id, idempotency_key, command).await?
            }
            _ => {
                let (program, key) = (program_id.to_owned(), idempotency_key.to_owned());
                self.detached(move |ledger| async move {
                    let mut execution = ledger.store.execute(&program, &key, command).await?;
                    ledger.readers.committed([&mut execution]).await;
                    Ok(execution)
                })
                .await?
            }
        };
        self.acknowledge(program_id, execution).await
    }

    /// Runs `work` as a task of its own, so that it finishes even when the
    /// caller goes away: a commit and what must follow it are never cut apart.
    async fn detached<T, F, Fut>(self: &Arc<Self>, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Self>) -> Fut,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
    {
        tokio::spawn(work(Arc::clone(self)))
            .await
            .map_err(|error| Error::Corrupt(format!("a ledger write did not finish: {error}")))?
    }

    /// The last step before a write is answered. A replay puts the account
    /// as it is now: the call that committed may have stopped (a crash)
    /// between its commit and the refresh, and a saved balance may be older
    /// than what the cache lost meanwhile (put-if-newer cannot tell an
    /// expired newer entry from none). A write Redis could not be told of
    /// waits until every replica knows of the doubt.
    async fn acknowledge(&self, program_id: &str, execution: Execution) -> Result<Execution, Error> {
        if execution.replayed {
            let customer_id = &execution.receipt.customer_id;
            if !customer_id.is_empty()
                && let Some(account) = self.store.account(program_id, customer_id).await?
            {
                self.readers.cache.put(AccountBalance::of(&account)).await;
            }
        } else if let Some(doubt) = &execution.cache_doubt {
            self.readers.cache.confirm(doubt).await;
        }
        Ok(execution)
    }

    /// The balance now: from the cache when fresh, else from the database,
    /// settling first if a pending lot activated or a lot expired meanwhile.
    pub async fn balance(self: &Arc<Self>, program_id: &str, customer_id: &str) -> Result<Balance, Error> {
        let now = self.store.now();
        if let Some(balance) = self.readers.cache.get(program_id, customer_id, now).await {
            return Ok(balance);
        }
        let Some(account) = self.store.account(program_id, customer_id).await? else {
            // Version 0: the first write to the account replaces it.
            let empty = Balance::default();
            self.readers.cache.fill(program_id, customer_id, &empty).await;
            return Ok(empty);
        };
        let account = if account.is_due(now) {
            self.settle(program_id, customer_id).await?.0
        } else {
            self.readers.cache.fill(program_id, customer_id, &account.balance()).await;
            account
        };
        Ok(account.balance())
    }

    /// Activates and expires what is due on one account, and tells the readers.
    async fn settle(self: &Arc<Self>, program_id: &str, customer_id: &str) -> Result<(Account, Settlement), Error> {
        let (program, customer) = (program_id.to_owned(), customer_id.to_owned());
        let (account, settlement, doubts) = self
            .detached(move |ledger| async move {
                let (account, settlement, published) = ledger.store.settle(&program, &customer).await?;
                let doubts = ledger.readers.announce(&[(&account, published)]).await;
                Ok((account, settlement, doubts))
            })
            .await?;
        for doubt in &doubts {
            self.readers.cache.confirm(doubt).await;
        }
        Ok((account, settlement))
    }

    pub async fn entries(
        &self,
        program_id: &str,
        customer_id: &str,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<LedgerRow>, Error> {
        self.store.entries(program_id, customer_id, before_id, limit).await
    }

    pub async fn entries_after(
        &self,
        after: i64,
        program_id: &str,
        kinds: &[EntryKind],
        limit: i64,
    ) -> Result<Vec<LedgerRow>, Error> {
        self.store.entries_after(after, program_id, kinds, limit).await
    }

    /// Accounts of a program holding points, after `after`, in customer id order.
    pub async fn holding(
        &self,
        program_id: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<crate::domain::Account>, Error> {
        self.store.holding(program_id, after, limit).await
    }

    pub async fn expiring(
        &self,
        program_id: &str,
        customer_id: &str,
        until: Micros,
    ) -> Result<Vec<(Micros, i64)>, Error> {
        self.store.expiring(program_id, customer_id, until).await
    }

    /// Watches the highest published stream position.
    pub fn published(&self) -> watch::Receiver<i64> {
        self.readers.published.subscribe()
    }

    /// Settles every account with something due (optionally in one program).
    pub async fn run_expiry(self: &Arc<Self>, program_id: Option<&str>) -> Result<ExpiryRun, Error> {
        let mut run = ExpiryRun::default();
        loop {
            let due = self.store.due_accounts(program_id, SETTLE_BATCH).await?;
            let batch_len = due.len();
            for (program, customer) in due {
                let (_, settlement) = self.settle(&program, &customer).await?;
                run.accounts_settled += 1;
                run.points_expired += settlement.points_expired;
                run.points_activated += settlement.points_activated;
            }
            if batch_len < usize::try_from(SETTLE_BATCH).unwrap_or(usize::MAX) {
                return Ok(run);
            }
        }
    }

    /// Background job: `run_expiry` every `interval` until shutdown.
    pub async fn expiry_job(self: Arc<Self>, interval: Duration, shutdown: ShutdownSignal) {
        loyalty_common::shutdown::every(interval, shutdown, || async {
            match self.run_expiry(None).await {
                Ok(run) if run.accounts_settled > 0 => tracing::info!(
                    accounts = run.accounts_settled,
                    expired = run.points_expired,
                    activated = run.points_activated,
                    "expiry run settled accounts"
                ),
                Ok(_) => {}
                Err(error) => tracing::warn!(error = %error, "expiry run failed, will retry"),
            }
        })
        .await;
    }

    /// Background job: hands out stream positions after commits (PostgreSQL).
    pub async fn publisher(self: Arc<Self>, mut shutdown: ShutdownSignal) {
        loop {
            tokio::select! {
                () = self.readers.publish_now.notified() => {}
                () = tokio::time::sleep(PUBLISH_POLL) => {}
                () = shutdown.fired() => return,
            }
            match self.store.publish().await {
                Ok(Some(seq)) => self.readers.advance(seq),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(error = %error, "publishing ledger entries failed, will retry")
                }
            }
        }
    }
}

/// Refuses what one ledger entry cannot carry, rather than cut it: a
/// breakdown always adds up to the points booked.
fn within_one_command(field: &str, breakdown: &Breakdown) -> Result<(), Error> {
    if breakdown.total_points > MAX_POINTS_PER_COMMAND {
        return Err(Error::invalid(
            field,
            format!(
                "earns {} points with its bonuses ({} base + {} tier + {} campaign), more than the \
                 {MAX_POINTS_PER_COMMAND} one write may book",
                breakdown.total_points,
                breakdown.base_points,
                breakdown.tier_bonus_points,
                breakdown.campaign_bonus_points
            ),
        ));
    }
    Ok(())
}
