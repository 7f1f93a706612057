//! The referral service's core: the store, and the dispatcher that sends
//! the rewards and clawbacks the ledger's orders and refunds lead to (see
//! `follow`) to the points service.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tonic::Code;

use loyalty_common::follow::BoxError;
use loyalty_common::peer::{PeerChannel, Peers};
use loyalty_common::shutdown::ShutdownSignal;
use loyalty_proto::points::v1 as points;
use loyalty_proto::points::v1::points_service_client::PointsServiceClient;
use loyalty_proto::rewards::v1 as rewards;
use loyalty_proto::rewards::v1::rewards_service_client::RewardsServiceClient;

use crate::domain::Referral;
use crate::error::Error;
use crate::store::{OrderEvent, ReferralStore, RewardTask, TaskKind};

/// Deadline of one call to the points service.
const POINTS_DEADLINE: Duration = Duration::from_secs(2);
/// Who gives and cancels the vouchers, as the rewards service records it.
const ACTOR: &str = "service:referral";
/// How often the dispatcher looks for tasks when nobody wakes it.
const DISPATCH_POLL: Duration = Duration::from_millis(500);

pub struct Referrals {
    pub(crate) store: ReferralStore,
    /// Woken when new reward tasks are written, so the dispatcher sends them at once.
    pub(crate) tasks_added: Notify,
    /// The rewards service, which gives and cancels the settings' vouchers (REWARDS_ADDR).
    rewards: Option<RewardsClient>,
}

type PointsClient = PointsServiceClient<PeerChannel>;
type RewardsClient = RewardsServiceClient<PeerChannel>;

impl Referrals {
    /// `rewards`: the rewards service, without which settings cannot name vouchers.
    pub fn new(store: ReferralStore, rewards: Option<PeerChannel>) -> Self {
        Self { store, tasks_added: Notify::new(), rewards: rewards.map(RewardsServiceClient::new) }
    }

    /// Checks that the rewards the settings give as vouchers exist in the
    /// program's catalog and are not archived (the rewards service says).
    pub async fn check_voucher_rewards(&self, program_id: &str, ids: &[(&str, &str)]) -> Result<(), Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut client = self.rewards.clone().ok_or(Error::RewardsNotConfigured)?;
        let request = rewards::ListRewardsRequest { program_id: program_id.to_owned(), include_archived: false };
        let catalog = client.list_rewards(request).await.map_err(Error::Rewards)?.into_inner().rewards;
        let missing: Vec<_> = ids
            .iter()
            .filter(|(_, id)| !catalog.iter().any(|r| r.reward_id == *id))
            .map(|(field, id)| {
                loyalty_common::validate::FieldViolation::new(*field, format!("no active reward {id} in this program"))
            })
            .collect();
        if missing.is_empty() { Ok(()) } else { Err(Error::Invalid(missing)) }
    }

    pub fn store(&self) -> &ReferralStore {
        &self.store
    }

    /// An order or refund reported through the API.
    pub async fn record(&self, event: &OrderEvent) -> Result<Option<Referral>, Error> {
        let changed = self.store.record(event).await?;
        if changed.is_some() {
            self.tasks_added.notify_one();
        }
        Ok(changed)
    }

    /// Sends reward tasks to the points service until shutdown. Every call
    /// carries the task id as its idempotency key, so a task sent twice
    /// (a crash before it was marked done) still counts once.
    pub async fn dispatcher(self: Arc<Self>, points_addr: String, peers: Peers, mut shutdown: ShutdownSignal) {
        let channel = match peers.endpoint(&points_addr) {
            Ok(endpoint) => endpoint.timeout(POINTS_DEADLINE).connect_lazy(),
            Err(error) => {
                tracing::error!(%error, "POINTS_ADDR is not a valid address; no rewards will be sent");
                return;
            }
        };
        let client: PointsClient = PointsServiceClient::new(peers.attach(channel));
        loop {
            match self.dispatch(&client).await {
                Ok(sent) if sent > 0 => continue,
                Ok(_) => {}
                Err(error) => tracing::warn!(error = %error, "sending referral rewards failed, will retry"),
            }
            tokio::select! {
                () = self.tasks_added.notified() => {}
                () = tokio::time::sleep(DISPATCH_POLL) => {}
                () = shutdown.fired() => return,
            }
        }
    }

    /// Sends pending tasks in order; stops at the first that fails for a
    /// reason worth retrying, so a clawback never overtakes its reward.
    async fn dispatch(&self, client: &PointsClient) -> Result<usize, BoxError> {
        let tasks = self.store.pending_tasks(100).await?;
        let mut sent = 0;
        for task in tasks {
            match send(client.clone(), self.rewards.clone(), &task).await {
                Ok(()) => {}
                Err(status) if retryable(status.code()) => return Err(Box::new(status)),
                Err(status) => {
                    // Settled one way or another (already reversed, nothing to
                    // take back): retrying cannot change the answer.
                    tracing::warn!(task = %task.task_id, code = ?status.code(), message = status.message(), "reward task refused");
                }
            }
            self.store.task_done(&task.task_id).await?;
            sent += 1;
        }
        Ok(sent)
    }
}

async fn send(
    mut client: PointsClient,
    rewards: Option<RewardsClient>,
    task: &RewardTask,
) -> Result<(), tonic::Status> {
    if matches!(task.kind, TaskKind::Voucher | TaskKind::Unvoucher) {
        let Some(rewards) = rewards else {
            return Err(tonic::Status::unavailable("REWARDS_ADDR is not set: vouchers wait until it is"));
        };
        return send_voucher(rewards, task).await;
    }
    if task.kind == TaskKind::Reverse {
        let request = points::ReverseRequest {
            program_id: task.program_id.clone(),
            original: Some(points::reverse_request::Original::OriginalIdempotencyKey(task.original_key.clone())),
            points: None,
            idempotency_key: task.task_id.clone(),
            reason: task.reason.clone(),
        };
        client.reverse(request).await.map(drop)
    } else {
        let request = points::EarnRequest {
            program_id: task.program_id.clone(),
            customer_id: task.customer_id.clone(),
            points: task.points,
            reason: task.reason.clone(),
            idempotency_key: task.task_id.clone(),
            pending_until: None,
            expires_at: None,
        };
        client.earn(request).await.map(drop)
    }
}

/// Gives a voucher (GrantReward, keyed by the task), or cancels the one
/// `original_key` gave: the grant replayed (same key, same request) names
/// it, then CancelRedemption; a voucher used meanwhile stays used.
async fn send_voucher(mut rewards: RewardsClient, task: &RewardTask) -> Result<(), tonic::Status> {
    let given = if task.kind == TaskKind::Voucher { &task.task_id } else { &task.original_key };
    let grant = rewards::GrantRewardRequest {
        program_id: task.program_id.clone(),
        reward_id: task.reward_id.clone(),
        customer_ids: vec![task.customer_id.clone()],
        reason: task.reason.clone(),
        actor: ACTOR.to_owned(),
        idempotency_key: given.clone(),
    };
    let gifts = rewards.grant_reward(grant).await?.into_inner().redemptions;
    if task.kind == TaskKind::Voucher {
        return Ok(());
    }
    for gift in gifts {
        let cancel = rewards::CancelRedemptionRequest {
            program_id: task.program_id.clone(),
            redemption_id: gift.redemption_id,
            idempotency_key: task.task_id.clone(),
            actor: ACTOR.to_owned(),
        };
        rewards.cancel_redemption(cancel).await?;
    }
    Ok(())
}

fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Internal
            | Code::Aborted
            | Code::ResourceExhausted
            | Code::Cancelled
    )
}
