//! One gRPC client per backend, on one shared channel each (connections are
//! reused and multiplexed), and one generic call path per backend. Every
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
use loyalty_proto::insights::v1::insights_service_client::InsightsServiceClient;
use loyalty_proto::points::v1 as pb;
use loyalty_proto::points::v1::points_service_client::PointsServiceClient;
use loyalty_proto::privacy::v1::customer_data_service_client::CustomerDataServiceClient;
use loyalty_proto::referral::v1 as referral_pb;
use loyalty_proto::referral::v1::referral_service_client::ReferralServiceClient;
use loyalty_proto::rewards::v1::rewards_service_client::RewardsServiceClient;
use loyalty_proto::tiers::v1::tiers_service_client::TiersServiceClient;
use loyalty_proto::webhooks::v1::webhooks_service_client::WebhooksServiceClient;

type Traced = PeerChannel;

/// The closure that makes one call `method` on the client it is given:
/// `upstreams.rewards(request, rpc!(redeem))`. The deadline, trace context,
/// identity and replay flag are [`Upstreams`]' business, once for every call.
#[macro_export]
macro_rules! rpc {
    ($method:ident) => {
        |mut client, request| async move { client.$method(request).await }
    };
}

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
    pub insights: Option<&'a str>,
    pub webhooks: Option<&'a str>,
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
    insights: Option<InsightsServiceClient<Traced>>,
    webhooks: Option<WebhooksServiceClient<Traced>>,
    /// Every configured service's customer-data service, by name, points first.
    customer_data: Vec<(&'static str, CustomerDataServiceClient<Traced>)>,
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
        let insights = optional("INSIGHTS_ADDR", addresses.insights)?;
        let webhooks = optional("WEBHOOKS_ADDR", addresses.webhooks)?;
        let customer_data = [
            ("points", Some(&points_channel)),
            ("tiers", tiers.as_ref()),
            ("referral", referral.as_ref()),
            ("rewards", rewards.as_ref()),
            ("insights", insights.as_ref()),
            ("webhooks", webhooks.as_ref()),
        ]
        .into_iter()
        .filter_map(|(name, channel)| Some((name, CustomerDataServiceClient::new(peers.attach(channel?.clone())))))
        .collect();
        Ok(Self {
            points: PointsServiceClient::new(peers.attach(points_channel.clone())),
            points_health: HealthClient::new(points_channel),
            tiers: tiers.map(|c| TiersServiceClient::new(peers.attach(c))),
            referral: referral.map(|c| ReferralServiceClient::new(peers.attach(c))),
            rewards: rewards.map(|c| RewardsServiceClient::new(peers.attach(c))),
            insights: insights.map(|c| InsightsServiceClient::new(peers.attach(c))),
            webhooks: webhooks.map(|c| WebhooksServiceClient::new(peers.attach(c))),
            customer_data,
            deadline,
        })
    }

    pub fn has_tiers(&self) -> bool {
        self.tiers.is_some()
    }

    /// True when the points service answers its health check with SERVING.
    pub async fn points_ready(&self) -> bool {
        let mut client = self.points_health.clone();
        let request = HealthCheckRequest { service: POINTS_SERVICE.to_owned() };
        let answer = self.unary(request, |r| async move { client.check(r).await }).await;
        answer.is_ok_and(|reply| reply.message.status == ServingStatus::Serving as i32)
    }

    /// One call to the points service, e.g. `upstreams.points(request, rpc!(earn_for_order))`.
    pub async fn points<Req, Res, Fut>(
        &self,
        message: Req,
        rpc: impl FnOnce(PointsServiceClient<Traced>, tonic::Request<Req>) -> Fut,
    ) -> Result<Reply<Res>, Status>
    where
        Fut: Future<Output = Result<tonic::Response<Res>, Status>>,
    {
        let client = self.points.clone();
        self.unary(message, move |request| rpc(client, request)).await
    }

    /// One call to the tiers service; [`Failure::NotConfigured`] without its address.
    pub async fn tiers<Req, Res, Fut>(
        &self,
        message: Req,
        rpc: impl FnOnce(TiersServiceClient<Traced>, tonic::Request<Req>) -> Fut,
    ) -> Result<Reply<Res>, Failure>
    where
        Fut: Future<Output = Result<tonic::Response<Res>, Status>>,
    {
        self.optional(&self.tiers, "TIERS_ADDR", message, rpc).await
    }

    /// One call to the referral service; [`Failure::NotConfigured`] without its address.
    pub async fn referral<Req, Res, Fut>(
        &self,
        message: Req,
        rpc: impl FnOnce(ReferralServiceClient<Traced>, tonic::Request<Req>) -> Fut,
    ) -> Result<Reply<Res>, Failure>
    where
        Fut: Future<Output = Result<tonic::Response<Res>, Status>>,
    {
        self.optional(&self.referral, "REFERRAL_ADDR", message, rpc).await
    }

    /// One call to the rewards service; [`Failure::NotConfigured`] without its address.
    pub async fn rewards<Req, Res, Fut>(
        &self,
        message: Req,
        rpc: impl FnOnce(RewardsServiceClient<Traced>, tonic::Request<Req>) -> Fut,
    ) -> Result<Reply<Res>, Failure>
    where
        Fut: Future<Output = Result<tonic::Response<Res>, Status>>,
    {
        self.optional(&self.rewards, "REWARDS_ADDR", message, rpc).await
    }

    /// One call to the insights service; [`Failure::NotConfigured`] without its address.
    pub async fn insights<Req, Res, Fut>(
        &self,
        message: Req,
        rpc: impl FnOnce(InsightsServiceClient<Traced>, tonic::Request<Req>) -> Fut,
    ) -> Result<Reply<Res>, Failure>
    where
        Fut: Future<Output = Result<tonic::Response<Res>, Status>>,
    {
        self.optional(&self.insights, "INSIGHTS_ADDR", message, rpc).await
    }

    /// One call to the webhooks service; [`Failure::NotConfigured`] without its address.
    pub async fn webhooks<Req, Res, Fut>(
        &self,
        message: Req,
        rpc: impl FnOnce(WebhooksServiceClient<Traced>, tonic::Request<Req>) -> Fut,
    ) -> Result<Reply<Res>, Failure>
    where
        Fut: Future<Output = Result<tonic::Response<Res>, Status>>,
    {
        self.optional(&self.webhooks, "WEBHOOKS_ADDR", message, rpc).await
    }

    /// The services the gateway has no address for (whose customer data it cannot reach).
    pub fn not_configured(&self) -> Vec<&'static str> {
        let configured: Vec<&str> = self.customer_data.iter().map(|(name, _)| *name).collect();
        ["points", "tiers", "referral", "rewards", "insights", "webhooks"]
            .into_iter()
            .filter(|name| !configured.contains(name))
            .collect()
    }

    /// The same call to the customer-data service of every configured
    /// backend: points first and alone (the others follow its stream, so
    /// what it answers for no longer reaches them afterwards), then the
    /// others concurrently; the answers in that order, by service name.
    pub async fn every_service<Req, Res, Fut>(
        &self,
        message: Req,
        rpc: impl Fn(CustomerDataServiceClient<Traced>, tonic::Request<Req>) -> Fut,
    ) -> Vec<(&'static str, Result<Reply<Res>, Status>)>
    where
        Req: Clone,
        Fut: Future<Output = Result<tonic::Response<Res>, Status>>,
    {
        let Some(((first, points), others)) = self.customer_data.split_first() else { return Vec::new() };
        let mut answers = vec![(*first, self.unary(message.clone(), |r| rpc(points.clone(), r)).await)];
        let rest = others.iter().map(|(name, client)| {
            let call = self.unary(message.clone(), |r| rpc(client.clone(), r));
            async move { (*name, call.await) }
        });
        answers.extend(futures::future::join_all(rest).await);
        answers
    }

    /// One call to an optional backend, or [`Failure::NotConfigured`] naming `variable`.
    async fn optional<C: Clone, Req, Res, Fut>(
        &self,
        client: &Option<C>,
        variable: &'static str,
        message: Req,
        rpc: impl FnOnce(C, tonic::Request<Req>) -> Fut,
    ) -> Result<Reply<Res>, Failure>
    where
        Fut: Future<Output = Result<tonic::Response<Res>, Status>>,
    {
        let client = client.clone().ok_or(Failure::NotConfigured(variable))?;
        Ok(self.unary(message, move |request| rpc(client, request)).await?)
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
                let (balance, expiring) = tokio::join!(
                    self.points(balance, rpc!(get_balance)),
                    self.points(expiring, rpc!(get_expiring_points))
                );
                let message = pb::GetAccountSummaryResponse {
                    balance: balance?.message.balance,
                    expiring: Some(expiring?.message),
                    // Older than profiles too.
                    profile: None,
                };
                Ok(Reply { message, replayed: false })
            }
            answer => answer,
        }
    }

    // ------------------------------------------------------------ tiers

    // ------------------------------------------------------------ referral

    /// The customer's code (if one was made: reading makes none) and its stats, in one
    /// call. A referral service older than GetReferralSummary answers
    /// UNIMPLEMENTED: then it is asked the two calls it knows, in parallel.
    pub async fn get_referral_summary(
        &self,
        r: referral_pb::GetReferralSummaryRequest,
    ) -> Result<Reply<referral_pb::GetReferralSummaryResponse>, Failure> {
        let (program_id, customer_id) = (r.program_id.clone(), r.customer_id.clone());
        match self.referral(r, rpc!(get_referral_summary)).await {
            Err(Failure::Status(status)) if status.code() == Code::Unimplemented => {
                let code = referral_pb::GetOrCreateCodeRequest {
                    program_id: program_id.clone(),
                    customer_id: customer_id.clone(),
                };
                let stats = referral_pb::GetReferralStatsRequest { program_id, customer_id };
                let (code, stats) = tokio::join!(
                    self.referral(code, rpc!(get_or_create_code)),
                    self.referral(stats, rpc!(get_referral_stats))
                );
                let message =
                    referral_pb::GetReferralSummaryResponse { code: Some(code?.message), stats: Some(stats?.message) };
                Ok(Reply { message, replayed: false })
            }
            answer => answer,
        }
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
