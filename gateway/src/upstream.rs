//! One gRPC client per backend, on one shared channel each (connections are
//! reused and multiplexed), and one small function per backend call. Every
//! call carries a deadline, the caller's W3C trace context and the gateway's
//! service identity (the gateway has checked the caller's API key itself).

use std::future::Future;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use loyalty_common::peer::{PeerChannel, Peers};
use loyalty_proto::points::v1 as pb;
use loyalty_proto::points::v1::points_service_client::PointsServiceClient;
use loyalty_proto::referral::v1 as referral_pb;
use loyalty_proto::referral::v1::referral_service_client::ReferralServiceClient;
use loyalty_proto::rewards::v1 as rewards_pb;
use loyalty_proto::rewards::v1::rewards_service_client::RewardsServiceClient;
use loyalty_proto::tiers::v1 as tiers_pb;
use loyalty_proto::tiers::v1::tiers_service_client::TiersServiceClient;

type Traced = PeerChannel;

/// The gRPC service name the points health check asks about.
const POINTS_SERVICE: &str = "loyalty.points.v1.PointsService";

/// A backend's answer, and whether it was the replay of an earlier write.
pub struct Reply<T> {
    pub message: T,
    pub replayed: bool,
}

/// Why a call to a backend failed: the gateway has no address for that
/// (optional) service, or the service answered with an error status.
#[derive(Debug)]
pub enum Failure {
    /// The name of the service's address variable, e.g. `REWARDS_ADDR`.
    NotConfigured(&'static str),
    Status(Status),
}

impl From<Status> for Failure {
    fn from(status: Status) -> Self {
        Self::Status(status)
    }
}

/// The backends' addresses, as configured: points is required, the others optional.
pub struct Addresses<'a> {
    pub points: &'a str,
    pub tiers: Option<&'a str>,
    pub referral: Option<&'a str>,
    pub rewards: Option<&'a str>,
}

#[derive(Debug, thiserror::Error)]
#[error("{variable}: {reason}")]
pub struct AddressError {
    pub variable: &'static str,
    pub reason: String,
}

#[derive(Clone)]
pub struct Upstreams {
    points: PointsServiceClient<Traced>,
    points_health: HealthClient<Channel>,
    tiers: Option<TiersServiceClient<Traced>>,
    referral: Option<ReferralServiceClient<Traced>>,
    rewards: Option<RewardsServiceClient<Traced>>,
    deadline: Duration,
}

impl Upstreams {
    /// Connects lazily, so the gateway starts (and reports not ready) while a backend is down.
    /// `points` may list several `host:port` endpoints, comma-separated; calls are balanced over them.
    /// An optional backend without an address stays unset: its calls fail with [`Failure::NotConfigured`].
    pub fn connect(addresses: &Addresses<'_>, deadline: Duration, peers: &Peers) -> Result<Self, AddressError> {
        let points_channel = channel(peers, "POINTS_ADDR", addresses.points, deadline)?;
        let optional = |variable: &'static str, address: Option<&str>| {
            address.map(str::trim).filter(|a| !a.is_empty()).map(|a| channel(peers, variable, a, deadline)).transpose()
        };
        let tiers = optional("TIERS_ADDR", addresses.tiers)?;
        let referral = optional("REFERRAL_ADDR", addresses.referral)?;
        let rewards = optional("REWARDS_ADDR", addresses.rewards)?;
        Ok(Self {
            points: PointsServiceClient::new(peers.attach(points_channel.clone())),
            points_health: HealthClient::new(points_channel),
            tiers: tiers.map(|c| TiersServiceClient::new(peers.attach(c))),
            referral: referral.map(|c| ReferralServiceClient::new(peers.attach(c))),
            rewards: rewards.map(|c| RewardsServiceClient::new(peers.attach(c))),
            deadline,
        })
    }

    pub fn has_tiers(&self) -> bool {
        self.tiers.is_some()
    }

    fn tiers(&self) -> Result<TiersServiceClient<Traced>, Failure> {
        self.tiers.clone().ok_or(Failure::NotConfigured("TIERS_ADDR"))
    }

    fn referral(&self) -> Result<ReferralServiceClient<Traced>, Failure> {
        self.referral.clone().ok_or(Failure::NotConfigured("REFERRAL_ADDR"))
    }

    fn rewards(&self) -> Result<RewardsServiceClient<Traced>, Failure> {
        self.rewards.clone().ok_or(Failure::NotConfigured("REWARDS_ADDR"))
    }

    /// True when the points service answers its health check with SERVING.
    pub async fn points_ready(&self) -> bool {
        let mut client = self.points_health.clone();
        let request = HealthCheckRequest { service: POINTS_SERVICE.to_owned() };
        let answer = self.unary(request, |r| async move { client.check(r).await }).await;
        answer.is_ok_and(|reply| reply.message.status == ServingStatus::Serving as i32)
    }

    /// Sends one unary call with the deadline both as `grpc-timeout` (so the
    /// service can give up too) and enforced here.
    async fn unary<Req, Res, F, Fut>(&self, message: Req, call: F) -> Result<Reply<Res>, Status>
    where
        F: FnOnce(tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Res>, Status>>,
    {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.deadline);
        let started = Instant::now();
        let deadline_exceeded = || Status::deadline_exceeded(format!("no answer within {:?}", self.deadline));
        match tokio::time::timeout(self.deadline, call(request)).await {
            Err(_) => Err(deadline_exceeded()),
            // tonic reports its own client-side timeout as CANCELLED; the gateway never cancels otherwise.
            Ok(Err(status)) if status.code() == Code::Cancelled && started.elapsed() >= self.deadline => {
                Err(deadline_exceeded())
            }
            Ok(Err(status)) => Err(status),
            Ok(Ok(response)) => {
                let replayed = response.metadata().get("idempotent-replayed").is_some_and(|v| v == "true");
                Ok(Reply { message: response.into_inner(), replayed })
            }
        }
    }

    pub async fn earn_for_order(&self, r: pb::EarnForOrderRequest) -> Result<Reply<pb::EarnForOrderResponse>, Status> {
        let mut c = self.points.clone();
        self.unary(r, |r| async move { c.earn_for_order(r).await }).await
    }

    pub async fn refund_order(&self, r: pb::RefundOrderRequest) -> Result<Reply<pb::RefundOrderResponse>, Status> {
        let mut c = self.points.clone();
        self.unary(r, |r| async move { c.refund_order(r).await }).await
    }

    pub async fn record_activity(
        &self,
        r: pb::RecordActivityRequest,
    ) -> Result<Reply<pb::RecordActivityResponse>, Status> {
        let mut c = self.points.clone();
        self.unary(r, |r| async move { c.record_activity(r).await }).await
    }

    pub async fn preview_order(&self, r: pb::PreviewOrderRequest) -> Result<Reply<pb::PreviewOrderResponse>, Status> {
        let mut c = self.points.clone();
        self.unary(r, |r| async move { c.preview_order(r).await }).await
    }

    pub async fn adjust(&self, r: pb::AdjustRequest) -> Result<Reply<pb::AdjustResponse>, Status> {
        let mut c = self.points.clone();
        self.unary(r, |r| async move { c.adjust(r).await }).await
    }

    pub async fn get_balance(&self, r: pb::GetBalanceRequest) -> Result<Reply<pb::GetBalanceResponse>, Status> {
        let mut c = self.points.clone();
        self.unary(r, |r| async move { c.get_balance(r).await }).await
    }

    pub async fn get_expiring_points(
        &self,
        r: pb::GetExpiringPointsRequest,
    ) -> Result<Reply<pb::GetExpiringPointsResponse>, Status> {
        let mut c = self.points.clone();
        self.unary(r, |r| async move { c.get_expiring_points(r).await }).await
    }

    /// The balance and the points expiring within the request's horizon, in
    /// one call. A points service older than GetAccountSummary answers
    /// UNIMPLEMENTED: then it is asked the two calls it knows, in parallel,
    /// so a gateway may be rolled out before the services.
    pub async fn get_account_summary(
        &self,
        r: pb::GetAccountSummaryRequest,
    ) -> Result<Reply<pb::GetAccountSummaryResponse>, Status> {
        let mut c = self.points.clone();
        let (program_id, customer_id, within) = (r.program_id.clone(), r.customer_id.clone(), r.expiring_within);
        match self.unary(r, |r| async move { c.get_account_summary(r).await }).await {
            Err(status) if status.code() == Code::Unimplemented => {
                let balance =
                    pb::GetBalanceRequest { program_id: program_id.clone(), customer_id: customer_id.clone() };
                let expiring = pb::GetExpiringPointsRequest { program_id, customer_id, within };
                let (balance, expiring) = tokio::join!(self.get_balance(balance), self.get_expiring_points(expiring));
                let message = pb::GetAccountSummaryResponse {
                    balance: balance?.message.balance,
                    expiring: Some(expiring?.message),
                };
                Ok(Reply { message, replayed: false })
            }
            answer => answer,
        }
    }

    pub async fn list_transactions(
        &self,
        r: pb::ListTransactionsRequest,
    ) -> Result<Reply<pb::ListTransactionsResponse>, Status> {
        let mut c = self.points.clone();
        self.unary(r, |r| async move { c.list_transactions(r).await }).await
    }

    pub async fn get_program_settings(
        &self,
        r: pb::GetProgramSettingsRequest,
    ) -> Result<Reply<pb::GetProgramSettingsResponse>, Status> {
        let mut c = self.points.clone();
        self.unary(r, |r| async move { c.get_program_settings(r).await }).await
    }

    pub async fn put_program_settings(
        &self,
        r: pb::PutProgramSettingsRequest,
    ) -> Result<Reply<pb::PutProgramSettingsResponse>, Status> {
        let mut c = self.points.clone();
        self.unary(r, |r| async move { c.put_program_settings(r).await }).await
    }

    pub async fn list_campaigns(
        &self,
        r: pb::ListCampaignsRequest,
    ) -> Result<Reply<pb::ListCampaignsResponse>, Status> {
        let mut c = self.points.clone();
        self.unary(r, |r| async move { c.list_campaigns(r).await }).await
    }

    pub async fn create_campaign(
        &self,
        r: pb::CreateCampaignRequest,
    ) -> Result<Reply<pb::CreateCampaignResponse>, Status> {
        let mut c = self.points.clone();
        self.unary(r, |r| async move { c.create_campaign(r).await }).await
    }

    pub async fn update_campaign(
        &self,
        r: pb::UpdateCampaignRequest,
    ) -> Result<Reply<pb::UpdateCampaignResponse>, Status> {
        let mut c = self.points.clone();
        self.unary(r, |r| async move { c.update_campaign(r).await }).await
    }

    pub async fn end_campaign(&self, r: pb::EndCampaignRequest) -> Result<Reply<pb::EndCampaignResponse>, Status> {
        let mut c = self.points.clone();
        self.unary(r, |r| async move { c.end_campaign(r).await }).await
    }

    pub async fn list_audit_entries(
        &self,
        r: pb::ListAuditEntriesRequest,
    ) -> Result<Reply<pb::ListAuditEntriesResponse>, Status> {
        let mut c = self.points.clone();
        self.unary(r, |r| async move { c.list_audit_entries(r).await }).await
    }

    // ------------------------------------------------------------ tiers

    pub async fn get_membership(
        &self,
        r: tiers_pb::GetMembershipRequest,
    ) -> Result<Reply<tiers_pb::GetMembershipResponse>, Failure> {
        let mut c = self.tiers()?;
        Ok(self.unary(r, |r| async move { c.get_membership(r).await }).await?)
    }

    pub async fn get_ladder(
        &self,
        r: tiers_pb::GetLadderRequest,
    ) -> Result<Reply<tiers_pb::GetLadderResponse>, Failure> {
        let mut c = self.tiers()?;
        Ok(self.unary(r, |r| async move { c.get_ladder(r).await }).await?)
    }

    pub async fn put_ladder(
        &self,
        r: tiers_pb::PutLadderRequest,
    ) -> Result<Reply<tiers_pb::PutLadderResponse>, Failure> {
        let mut c = self.tiers()?;
        Ok(self.unary(r, |r| async move { c.put_ladder(r).await }).await?)
    }

    pub async fn assign_tier(
        &self,
        r: tiers_pb::AssignTierRequest,
    ) -> Result<Reply<tiers_pb::AssignTierResponse>, Failure> {
        let mut c = self.tiers()?;
        Ok(self.unary(r, |r| async move { c.assign_tier(r).await }).await?)
    }

    pub async fn remove_assignment(
        &self,
        r: tiers_pb::RemoveAssignmentRequest,
    ) -> Result<Reply<tiers_pb::RemoveAssignmentResponse>, Failure> {
        let mut c = self.tiers()?;
        Ok(self.unary(r, |r| async move { c.remove_assignment(r).await }).await?)
    }

    // ------------------------------------------------------------ referral

    pub async fn get_or_create_code(
        &self,
        r: referral_pb::GetOrCreateCodeRequest,
    ) -> Result<Reply<referral_pb::GetOrCreateCodeResponse>, Failure> {
        let mut c = self.referral()?;
        Ok(self.unary(r, |r| async move { c.get_or_create_code(r).await }).await?)
    }

    pub async fn get_referral_stats(
        &self,
        r: referral_pb::GetReferralStatsRequest,
    ) -> Result<Reply<referral_pb::GetReferralStatsResponse>, Failure> {
        let mut c = self.referral()?;
        Ok(self.unary(r, |r| async move { c.get_referral_stats(r).await }).await?)
    }

    /// The customer's code (if one was made: reading makes none) and its stats, in one
    /// call. A referral service older than GetReferralSummary answers
    /// UNIMPLEMENTED: then it is asked the two calls it knows, in parallel.
    pub async fn get_referral_summary(
        &self,
        r: referral_pb::GetReferralSummaryRequest,
    ) -> Result<Reply<referral_pb::GetReferralSummaryResponse>, Failure> {
        let mut c = self.referral()?;
        let (program_id, customer_id) = (r.program_id.clone(), r.customer_id.clone());
        match self.unary(r, |r| async move { c.get_referral_summary(r).await }).await {
            Err(status) if status.code() == Code::Unimplemented => {
                let code = referral_pb::GetOrCreateCodeRequest {
                    program_id: program_id.clone(),
                    customer_id: customer_id.clone(),
                };
                let stats = referral_pb::GetReferralStatsRequest { program_id, customer_id };
                let (code, stats) = tokio::join!(self.get_or_create_code(code), self.get_referral_stats(stats));
                let message =
                    referral_pb::GetReferralSummaryResponse { code: Some(code?.message), stats: Some(stats?.message) };
                Ok(Reply { message, replayed: false })
            }
            answer => Ok(answer?),
        }
    }

    pub async fn resolve_code(
        &self,
        r: referral_pb::ResolveCodeRequest,
    ) -> Result<Reply<referral_pb::ResolveCodeResponse>, Failure> {
        let mut c = self.referral()?;
        Ok(self.unary(r, |r| async move { c.resolve_code(r).await }).await?)
    }

    pub async fn record_signup(
        &self,
        r: referral_pb::RecordSignupRequest,
    ) -> Result<Reply<referral_pb::RecordSignupResponse>, Failure> {
        let mut c = self.referral()?;
        Ok(self.unary(r, |r| async move { c.record_signup(r).await }).await?)
    }

    pub async fn get_referral_settings(
        &self,
        r: referral_pb::GetReferralSettingsRequest,
    ) -> Result<Reply<referral_pb::GetReferralSettingsResponse>, Failure> {
        let mut c = self.referral()?;
        Ok(self.unary(r, |r| async move { c.get_referral_settings(r).await }).await?)
    }

    pub async fn put_referral_settings(
        &self,
        r: referral_pb::PutReferralSettingsRequest,
    ) -> Result<Reply<referral_pb::PutReferralSettingsResponse>, Failure> {
        let mut c = self.referral()?;
        Ok(self.unary(r, |r| async move { c.put_referral_settings(r).await }).await?)
    }

    // ------------------------------------------------------------ rewards

    pub async fn list_rewards(
        &self,
        r: rewards_pb::ListRewardsRequest,
    ) -> Result<Reply<rewards_pb::ListRewardsResponse>, Failure> {
        let mut c = self.rewards()?;
        Ok(self.unary(r, |r| async move { c.list_rewards(r).await }).await?)
    }

    pub async fn create_reward(
        &self,
        r: rewards_pb::CreateRewardRequest,
    ) -> Result<Reply<rewards_pb::CreateRewardResponse>, Failure> {
        let mut c = self.rewards()?;
        Ok(self.unary(r, |r| async move { c.create_reward(r).await }).await?)
    }

    pub async fn update_reward(
        &self,
        r: rewards_pb::UpdateRewardRequest,
    ) -> Result<Reply<rewards_pb::UpdateRewardResponse>, Failure> {
        let mut c = self.rewards()?;
        Ok(self.unary(r, |r| async move { c.update_reward(r).await }).await?)
    }

    pub async fn archive_reward(
        &self,
        r: rewards_pb::ArchiveRewardRequest,
    ) -> Result<Reply<rewards_pb::ArchiveRewardResponse>, Failure> {
        let mut c = self.rewards()?;
        Ok(self.unary(r, |r| async move { c.archive_reward(r).await }).await?)
    }

    pub async fn list_available_rewards(
        &self,
        r: rewards_pb::ListAvailableRewardsRequest,
    ) -> Result<Reply<rewards_pb::ListAvailableRewardsResponse>, Failure> {
        let mut c = self.rewards()?;
        Ok(self.unary(r, |r| async move { c.list_available_rewards(r).await }).await?)
    }

    pub async fn redeem(&self, r: rewards_pb::RedeemRequest) -> Result<Reply<rewards_pb::RedeemResponse>, Failure> {
        let mut c = self.rewards()?;
        Ok(self.unary(r, |r| async move { c.redeem(r).await }).await?)
    }

    pub async fn list_redemptions(
        &self,
        r: rewards_pb::ListRedemptionsRequest,
    ) -> Result<Reply<rewards_pb::ListRedemptionsResponse>, Failure> {
        let mut c = self.rewards()?;
        Ok(self.unary(r, |r| async move { c.list_redemptions(r).await }).await?)
    }

    pub async fn cancel_redemption(
        &self,
        r: rewards_pb::CancelRedemptionRequest,
    ) -> Result<Reply<rewards_pb::CancelRedemptionResponse>, Failure> {
        let mut c = self.rewards()?;
        Ok(self.unary(r, |r| async move { c.cancel_redemption(r).await }).await?)
    }

    pub async fn validate_voucher(
        &self,
        r: rewards_pb::ValidateVoucherRequest,
    ) -> Result<Reply<rewards_pb::ValidateVoucherResponse>, Failure> {
        let mut c = self.rewards()?;
        Ok(self.unary(r, |r| async move { c.validate_voucher(r).await }).await?)
    }

    pub async fn consume_voucher(
        &self,
        r: rewards_pb::ConsumeVoucherRequest,
    ) -> Result<Reply<rewards_pb::ConsumeVoucherResponse>, Failure> {
        let mut c = self.rewards()?;
        Ok(self.unary(r, |r| async move { c.consume_voucher(r).await }).await?)
    }
}

/// A lazily connecting channel, balanced over every listed endpoint.
fn channel(
    peers: &Peers,
    variable: &'static str,
    addresses: &str,
    deadline: Duration,
) -> Result<Channel, AddressError> {
    let endpoints = addresses
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|addr| {
            peers
                .endpoint(addr)
                .map(|e| e.connect_timeout(deadline).tcp_nodelay(true))
                .map_err(|e| AddressError { variable, reason: format!("{addr:?}: {e}") })
        })
        .collect::<Result<Vec<_>, _>>()?;
    match endpoints.len() {
        0 => Err(AddressError { variable, reason: "no address given".to_owned() }),
        1 => Ok(endpoints.into_iter().next().expect("one endpoint").connect_lazy()),
        _ => Ok(Channel::balance_list(endpoints.into_iter())),
    }
}
