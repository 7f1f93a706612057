//! The rewards service's core: the redemption saga, its recovery, and the
//! refunds sent to the points service.
//!
//! A redemption reserves stock and records itself PENDING, spends the points
//! with a key derived from the redemption, then becomes ACTIVE. If the spend
//! is refused, it FAILS with nothing spent. If the spend's outcome is
//! unknown (timeout, points down), the redemption is settled by replaying
//! the spend with the same key: whatever happened the first time, points are
//! then spent exactly once, and are given back before the redemption FAILS.
//! A crash anywhere leaves a PENDING row that the recovery loop settles the
//! same way. So a customer ends with the voucher or the points, never
//! neither, never both.
//!
//! Several replicas share one database, so each PENDING row has an owner
//! (the store's per-process id) and a lease, `2 × UPSTREAM_TIMEOUT_MS`,
//! renewed before every points call. Recovery takes over only an expired
//! lease (or its own flagged rows), with a compare-and-set, so one replica
//! works a row at a time. Why a takeover is safe:
//! - the spend's key is derived from the redemption and every refund's from
//!   its task id, so points move at most once however many replicas replay;
//! - activate and fail are compare-and-sets on (status PENDING, owner me):
//!   a replica that lost the row cannot issue a voucher, and a row taken
//!   over always ends FAILED;
//! - the one spend a taker cannot see is one still on the wire: the owner's
//!   call ends within its deadline (the points server honours
//!   `grpc-timeout`), and the lease outlives it by one deadline, which is
//!   also the clock skew between replicas tolerated. A stalled owner whose
//!   spend lands later anyway sees its compare-and-set fail and writes the
//!   refund itself, under the same task id as the taker's, so exactly once.
//!
//! A restarted process settles at start-up every row whose lease ran out,
//! and the rest as their leases run out: a crash leaves a customer without
//! points or voucher for at most the lease plus one recovery pass.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tonic::Code;

use loyalty_common::clock::Micros;
use loyalty_common::peer::{PeerChannel, Peers};
use loyalty_common::shutdown::ShutdownSignal;
use loyalty_proto::points::v1 as points;
use loyalty_proto::points::v1::points_service_client::PointsServiceClient;
use loyalty_proto::tiers::v1 as tiers;
use loyalty_proto::tiers::v1::tiers_service_client::TiersServiceClient;

use crate::domain::{LadderTier, Standing, TierPosition, Unavailable};
use crate::error::Error;
use crate::store::{CatalogEntry, Claim, Redemption, RefundTask, RewardsStore, Staged, Status};

type PointsClient = PointsServiceClient<PeerChannel>;
type TiersClient = TiersServiceClient<PeerChannel>;

/// How many times one redemption judges a tier-limited reward that keeps
/// changing under it before it gives up (VERSION_MISMATCH, safe to retry).
const MAX_JUDGED: u32 = 3;

/// Shortest wait between recovery passes when a lease is about to run out,
/// so a lease in the past (clock skew) does not spin the loop.
const MIN_PAUSE: Duration = Duration::from_millis(10);

/// How a spend went.
enum Spend {
    Done,
    Refused { available: i64 },
    Unknown(tonic::Status),
}

pub struct Rewards {
    store: RewardsStore,
    points: PointsClient,
    tiers: Option<TiersClient>,
    work_added: Notify,
}

impl Rewards {
    /// Clients connect lazily, so the service starts while its peers are
    /// down. The store's lease becomes twice the deadline (see the top).
    pub fn new(
        store: RewardsStore,
        points_addr: &str,
        tiers_addr: Option<&str>,
        deadline: Duration,
        peers: &Peers,
    ) -> Result<Self, tonic::transport::Error> {
        let points = PointsServiceClient::new(peers.lazy(points_addr, deadline)?);
        let tiers = match tiers_addr.filter(|a| !a.is_empty()) {
            Some(addr) => Some(TiersServiceClient::new(peers.lazy(addr, deadline)?)),
            None => None,
        };
        let lease = Micros::try_from(deadline.as_micros().saturating_mul(2)).unwrap_or(Micros::MAX);
        Ok(Self { store: store.with_lease(lease), points, tiers, work_added: Notify::new() })
    }

    pub fn store(&self) -> &RewardsStore {
        &self.store
    }

    /// The redemption, and whether it answers a replayed key.
    pub async fn redeem(
        &self,
        program_id: &str,
        customer_id: &str,
        reward_id: &str,
        key: &str,
    ) -> Result<(Redemption, bool), Error> {
        // The reward as last read here (`stored`: read just now); staging
        // checks it again under its lock.
        let (mut entry, mut stored) = self.store.seen_entry(program_id, reward_id).await?;
        let mut judged = 0;
        let redemption = loop {
            if entry.reward.tier_limited() {
                // A replay is answered from what it made, even with tiers down.
                if let Some(redemption) = self.store.replayed(program_id, customer_id, reward_id, key).await? {
                    return Ok((redemption, true));
                }
                match self.tier_position(program_id, customer_id).await.map(|p| p.refuses(&entry.reward)) {
                    Ok(None) => {}
                    // A copy may predate an edit that opened the reward up
                    // (to more tiers, or to everyone, which needs no tiers):
                    // a refusal, or tiers not answering, stands only on the
                    // reward as stored.
                    _ if !stored => {
                        entry = self.store.entry(program_id, reward_id).await?;
                        stored = true;
                        continue;
                    }
                    Ok(Some(Unavailable::TierNotEligible)) => return Err(Error::TierNotEligible),
                    Ok(Some(_)) => return Err(Error::TierTooLow),
                    Err(error) => return Err(error),
                }
            }
            match self.store.stage(program_id, customer_id, &entry, key).await? {
                Staged::Replay(redemption) => return Ok((redemption, true)),
                Staged::New(redemption) => break redemption,
                // Edited since it was read: the tier is judged on the reward as it is.
                Staged::Changed(fresh) if judged < MAX_JUDGED => {
                    judged += 1;
                    (entry, stored) = (fresh, true);
                }
                Staged::Changed(fresh) => {
                    return Err(Error::VersionMismatch {
                        expected: entry.reward.version,
                        actual: fresh.reward.version,
                    });
                }
            }
        };
        match self.spend(&redemption).await {
            Spend::Done => {
                let activated = self.store.activate(&redemption).await?;
                if activated.status != Status::Active {
                    // Taken over while the spend was under way: it ends
                    // FAILED with the points given back, which a retry with
                    // the same key reports.
                    self.work_added.notify_one();
                    return Err(Error::Interrupted(redemption.redemption_id.clone()));
                }
                Ok((activated, false))
            }
            Spend::Refused { available } => {
                self.store.fail(&redemption, false).await?;
                Err(Error::InsufficientPoints { available, cost: redemption.points })
            }
            Spend::Unknown(status) => {
                self.store.needs_compensation(&redemption).await?;
                // Settle now if the points service answers again; the recovery loop otherwise.
                if self.settle(&redemption).await.is_ok() {
                    self.work_added.notify_one();
                }
                Err(Error::Upstream("the points service", status))
            }
        }
    }

    /// Each catalog reward with why the customer cannot redeem it now, if so,
    /// and the customer's available points.
    /// `known_points`: the available points as the caller just read them.
    pub async fn available(
        &self,
        program_id: &str,
        customer_id: &str,
        known_points: Option<i64>,
    ) -> Result<(Vec<(CatalogEntry, Option<Unavailable>)>, i64), Error> {
        let available_points = match known_points {
            Some(points) => points,
            None => self.points_available(program_id, customer_id).await?,
        };
        let now = self.store.now();
        let catalog = self.store.catalog(program_id, false).await?;
        let position = if catalog.iter().any(|e| e.reward.tier_limited()) {
            self.tier_position(program_id, customer_id).await?
        } else {
            TierPosition::default()
        };
        let mut out = Vec::new();
        for entry in catalog {
            if !entry.reward.is_active(now) {
                continue;
            }
            let reward = &entry.reward;
            let recent_redemptions = if reward.per_customer_limit > 0 {
                self.store.recent_redemptions(&reward.reward_id, customer_id, reward.limit_since(now)).await?
            } else {
                0
            };
            let standing = Standing { available_points, tier: position.refuses(reward), recent_redemptions };
            let why = reward.unavailable(standing, entry.remaining_stock);
            out.push((entry, why));
        }
        Ok((out, available_points))
    }

    /// The customer's available points, as the points service has them now.
    pub async fn points_available(&self, program_id: &str, customer_id: &str) -> Result<i64, Error> {
        let request = points::GetBalanceRequest { program_id: program_id.into(), customer_id: customer_id.into() };
        let balance = self.points.clone().get_balance(request).await;
        Ok(balance
            .map_err(|s| Error::Upstream("the points service", s))?
            .into_inner()
            .balance
            .map_or(0, |b| b.available))
    }

    /// Settles PENDING redemptions whose lease ran out, and this process's
    /// flagged ones. Returns how many.
    pub async fn recover(&self) -> Result<usize, Error> {
        let claimed = self.store.claim_unsettled(100).await?;
        let mut settled = 0;
        for redemption in claimed {
            // One that cannot be settled now (points down) keeps its claim
            // until the lease runs out; the others go on.
            match self.settle(&redemption).await {
                Ok(()) => settled += 1,
                Err(error) => {
                    tracing::warn!(redemption = %redemption.redemption_id, %error, "settling a redemption failed, will retry");
                }
            }
        }
        Ok(settled)
    }

    /// Sends the points given back, each with its task id as the key.
    pub async fn send_refunds(&self) -> Result<usize, Error> {
        let mut sent = 0;
        for task in self.store.pending_tasks(100).await? {
            match refund(self.points.clone(), &task).await {
                Ok(()) => {}
                // Nothing a retry would change: a spend that is not there, or already given back.
                Err(status)
                    if matches!(
                        status.code(),
                        Code::InvalidArgument | Code::AlreadyExists | Code::NotFound | Code::FailedPrecondition
                    ) =>
                {
                    tracing::error!(task = %task.task_id, message = status.message(), "refund refused, dropped");
                }
                Err(status) => return Err(Error::Upstream("the points service", status)),
            }
            self.store.task_done(&task.task_id).await?;
            sent += 1;
        }
        Ok(sent)
    }

    /// Background: recovery at start-up and then periodically (sooner when
    /// a lease runs out before the next pass), refunds, and voucher expiry,
    /// until shutdown.
    /// `reminder_days` ahead of a voucher's expiry, `voucher.expiring_soon`
    /// is written for it (0: never).
    pub async fn background(self: Arc<Self>, interval: Duration, reminder_days: u32, mut shutdown: ShutdownSignal) {
        loop {
            if reminder_days > 0 {
                let ahead = i64::from(reminder_days) * loyalty_common::clock::MICROS_PER_DAY;
                if let Err(error) = self.store.remind_expiring(ahead, 500).await {
                    tracing::warn!(%error, "voucher reminders failed, will retry");
                }
            }
            if let Err(error) = self.recover().await {
                tracing::warn!(%error, "redemption recovery failed, will retry");
            }
            if let Err(error) = self.store.expire_vouchers(500).await {
                tracing::warn!(%error, "voucher expiry failed, will retry");
            }
            if let Err(error) = self.send_refunds().await {
                tracing::warn!(%error, "sending refunds failed, will retry");
            }
            let pause = match self.store.next_lease_expiry().await {
                Ok(Some(expiry)) => {
                    let until = u64::try_from(expiry + 1 - self.store.now()).unwrap_or(0);
                    interval.min(Duration::from_micros(until).max(MIN_PAUSE))
                }
                Ok(None) | Err(_) => interval,
            };
            tokio::select! {
                () = self.work_added.notified() => {}
                () = tokio::time::sleep(pause) => {}
                () = shutdown.fired() => return,
            }
        }
    }

    /// Replays the spend (same key, so at most once in all) and gives the
    /// points back if it went through; the redemption FAILS either way.
    /// Nothing to do when another replica has taken it over.
    async fn settle(&self, redemption: &Claim) -> Result<(), Error> {
        if !self.store.renew(redemption).await? {
            return Ok(());
        }
        match self.spend(redemption).await {
            Spend::Done => self.store.fail(redemption, true).await?,
            Spend::Refused { .. } => self.store.fail(redemption, false).await?,
            Spend::Unknown(status) => {
                self.store.needs_compensation(redemption).await?;
                return Err(Error::Upstream("the points service", status));
            }
        };
        self.send_refunds().await?;
        Ok(())
    }

    async fn spend(&self, redemption: &Redemption) -> Spend {
        let request = points::SpendRequest {
            program_id: redemption.program_id.clone(),
            customer_id: redemption.customer_id.clone(),
            points: redemption.points,
            reason: format!("redeemed {}", redemption.reward_name),
            idempotency_key: redemption.spend_key(),
        };
        match self.points.clone().spend(request).await {
            Ok(_) => Spend::Done,
            Err(status) if status.code() == Code::FailedPrecondition => {
                use tonic_types::StatusExt;
                let available = status
                    .get_error_details()
                    .error_info()
                    .and_then(|info| info.metadata.get("available").and_then(|a| a.parse().ok()))
                    .unwrap_or(0);
                Spend::Refused { available }
            }
            Err(status) => Spend::Unknown(status),
        }
    }

    /// The program's ladder and the customer's tier on it, asked once per
    /// request; without a tiers service nobody holds a tier.
    async fn tier_position(&self, program_id: &str, customer_id: &str) -> Result<TierPosition, Error> {
        let Some(tiers) = &self.tiers else { return Ok(TierPosition::default()) };
        let unavailable = |s| Error::Upstream("the tiers service", s);
        let ladder = tiers
            .clone()
            .get_ladder(tiers::GetLadderRequest { program_id: program_id.into() })
            .await
            .map_err(unavailable)?
            .into_inner()
            .ladder
            .unwrap_or_default();
        let held = tiers
            .clone()
            .get_multiplier(tiers::GetMultiplierRequest {
                program_id: program_id.into(),
                customer_id: customer_id.into(),
                at: None,
            })
            .await
            .map_err(unavailable)?
            .into_inner()
            .tier_id;
        let ladder = ladder.tiers.into_iter().map(|t| LadderTier { tier_id: t.tier_id, hidden: t.hidden }).collect();
        Ok(TierPosition { ladder, held })
    }
}

async fn refund(mut client: PointsClient, task: &RefundTask) -> Result<(), tonic::Status> {
    let actor = if task.actor.is_empty() { "service:rewards".into() } else { task.actor.clone() };
    if !task.spend_key.is_empty() {
        // The spend given back: each point to the lot it came from, nothing earned.
        let request = points::RestoreSpendRequest {
            program_id: task.program_id.clone(),
            spend: Some(points::restore_spend_request::Spend::SpendIdempotencyKey(task.spend_key.clone())),
            idempotency_key: task.task_id.clone(),
            reason: task.reason.clone(),
            actor,
        };
        return client.restore_spend(request).await.map(drop);
    }
    let request = points::AdjustRequest {
        program_id: task.program_id.clone(),
        customer_id: task.customer_id.clone(),
        points: task.points,
        reason: task.reason.clone(),
        idempotency_key: task.task_id.clone(),
        expires_at: None,
        allow_debt: false,
        actor,
        // Points given back follow the program's expiry policy, like every earned point.
        never_expires: false,
    };
    client.adjust(request).await.map(drop)
}
