//! The gRPC layer of the ledger: with `convert`, the only module that turns the API's prost types into
//! the service's own.
//! Every request is validated here, at the edge, before it reaches the ledger.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use loyalty_common::auth;
use loyalty_common::clock::{MICROS_PER_SECOND, Micros, to_timestamp};
use loyalty_common::shutdown::ShutdownSignal;
use loyalty_common::validate::{self, Check, FieldViolation};
use loyalty_proto::points::v1 as pb;
use loyalty_proto::points::v1::points_service_server::PointsService;

mod convert;

use crate::domain::profile::ProfileChange;
use crate::domain::rules::{self, MAX_ORDER_MINOR};
use crate::domain::{Balance, EntryKind, MAX_POINTS_PER_COMMAND};
use crate::error::DOMAIN;
use crate::service::Ledger;
use crate::store::program::AuditFilter;
use crate::store::{CheckoutRequest, Command, EntryRef, Execution, LedgerRow, OrderRequest};
use convert::{
    audit_to_proto, breakdown_to_proto, campaign_from_proto, campaign_to_proto, checkout_to_proto, profile_to_proto,
    settings_from_proto, settings_to_proto,
};

/// How far in the future an order's `occurred_at` may lie (clocks differ).
const MAX_CLOCK_SKEW: Micros = 5 * 60 * MICROS_PER_SECOND;
const MAX_EXPIRING_HORIZON: Micros = 10 * 366 * 86_400 * MICROS_PER_SECOND;
/// Entries read per query while a stream catches up.
const STREAM_BATCH: i64 = 500;
/// A stream re-checks the database at least this often, for entries
/// published by another replica.
const STREAM_POLL: std::time::Duration = std::time::Duration::from_millis(100);

pub struct PointsApi {
    ledger: Arc<Ledger>,
    shutdown: ShutdownSignal,
}

impl PointsApi {
    pub fn new(ledger: Arc<Ledger>, shutdown: ShutdownSignal) -> Self {
        Self { ledger, shutdown }
    }

    async fn write(&self, program_id: &str, key: &str, command: Command) -> Result<Execution, Status> {
        let execution = self.ledger.execute(program_id, key, command).await?;
        Ok(execution)
    }

    /// When points earned now expire under the program's policy: what a
    /// write that gives points without an expiry of its own means.
    async fn policy_expiry(&self, program_id: &str) -> Result<Option<Micros>, Status> {
        Ok(self.ledger.programs().policy_expiry(program_id, self.ledger.now()).await?)
    }
}

/// The points service's own checks on top of the shared ones.
trait PointsCheck {
    /// The ids every write to one account carries.
    fn account_write(&mut self, program_id: &str, customer_id: &str, idempotency_key: &str) -> &mut Self;
    fn points(&mut self, field: &str, value: i64) -> &mut Self;
    /// An order amount and its currency.
    fn order(&mut self, amount_minor: i64, currency: &str) -> &mut Self;
}

impl PointsCheck for Check {
    fn account_write(&mut self, program_id: &str, customer_id: &str, idempotency_key: &str) -> &mut Self {
        self.id("program_id", program_id).id("customer_id", customer_id).id("idempotency_key", idempotency_key)
    }

    fn points(&mut self, field: &str, value: i64) -> &mut Self {
        self.add(validate::positive(field, value, MAX_POINTS_PER_COMMAND))
    }

    fn order(&mut self, amount_minor: i64, currency: &str) -> &mut Self {
        if !(0..=MAX_ORDER_MINOR).contains(&amount_minor) {
            self.add(Err(FieldViolation::new("amount_minor", format!("must be between 0 and {MAX_ORDER_MINOR}"))));
        }
        if !rules::is_currency_code(currency) {
            self.add(Err(FieldViolation::new("currency", "must be an ISO 4217 code such as EUR")));
        }
        self
    }
}

fn respond<T>(execution: &Execution, message: T) -> Response<T> {
    let mut response = Response::new(message);
    if execution.replayed {
        // Lets a caller tell a replay from a first execution without changing the body.
        response.metadata_mut().insert("idempotent-replayed", "true".parse().expect("static header value"));
    }
    response
}

#[tonic::async_trait]
impl PointsService for PointsApi {
    async fn earn(&self, request: Request<pb::EarnRequest>) -> Result<Response<pb::EarnResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.account_write(&r.program_id, &r.customer_id, &r.idempotency_key);
        check.points("points", r.points).text("reason", &r.reason);
        let now = self.ledger.now();
        let pending_until = check.timestamp("pending_until", r.pending_until.as_ref(), now);
        let expires_at = check.timestamp("expires_at", r.expires_at.as_ref(), now);
        check.done(DOMAIN)?;
        let policy_expiry = if expires_at.is_none() { self.policy_expiry(&r.program_id).await? } else { None };
        let command = Command::Earn {
            customer_id: r.customer_id,
            points: r.points,
            reason: r.reason,
            pending_until,
            expires_at,
            policy_expiry,
        };
        let execution = self.write(&r.program_id, &r.idempotency_key, command).await?;
        let receipt = &execution.receipt;
        let message = pb::EarnResponse {
            transaction_id: receipt.transaction_id.clone(),
            balance: Some(balance(&receipt.balance)),
        };
        Ok(respond(&execution, message))
    }

    async fn spend(&self, request: Request<pb::SpendRequest>) -> Result<Response<pb::SpendResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.account_write(&r.program_id, &r.customer_id, &r.idempotency_key);
        check.points("points", r.points).text("reason", &r.reason);
        check.done(DOMAIN)?;
        let command = Command::Spend { customer_id: r.customer_id, points: r.points, reason: r.reason };
        let execution = self.write(&r.program_id, &r.idempotency_key, command).await?;
        let receipt = &execution.receipt;
        let message = pb::SpendResponse {
            transaction_id: receipt.transaction_id.clone(),
            balance: Some(balance(&receipt.balance)),
        };
        Ok(respond(&execution, message))
    }

    async fn reverse(&self, request: Request<pb::ReverseRequest>) -> Result<Response<pb::ReverseResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("idempotency_key", &r.idempotency_key).text("reason", &r.reason);
        let original = match r.original {
            Some(pb::reverse_request::Original::OriginalTransactionId(id)) => {
                check.id("original_transaction_id", &id);
                Some(EntryRef::TransactionId(id))
            }
            Some(pb::reverse_request::Original::OriginalIdempotencyKey(key)) => {
                check.id("original_idempotency_key", &key);
                Some(EntryRef::IdempotencyKey(key))
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
        check.done(DOMAIN)?;
        let original = original.expect("validated above");
        let command = Command::Reverse { original, points: r.points, reason: r.reason };
        let execution = self.write(&r.program_id, &r.idempotency_key, command).await?;
        let receipt = &execution.receipt;
        let message = pb::ReverseResponse {
            transaction_id: receipt.transaction_id.clone(),
            customer_id: receipt.customer_id.clone(),
            points_reversed: receipt.points,
            balance: Some(balance(&receipt.balance)),
        };
        Ok(respond(&execution, message))
    }

    async fn restore_spend(
        &self,
        request: Request<pb::RestoreSpendRequest>,
    ) -> Result<Response<pb::RestoreSpendResponse>, Status> {
        let actor = auth::actor(&request, &request.get_ref().actor);
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("idempotency_key", &r.idempotency_key).text("reason", &r.reason);
        let spend = match r.spend {
            Some(pb::restore_spend_request::Spend::SpendTransactionId(id)) => {
                check.id("spend_transaction_id", &id);
                Some(EntryRef::TransactionId(id))
            }
            Some(pb::restore_spend_request::Spend::SpendIdempotencyKey(key)) => {
                check.id("spend_idempotency_key", &key);
                Some(EntryRef::IdempotencyKey(key))
            }
            None => {
                check.add(Err(FieldViolation::new("spend", "set spend_transaction_id or spend_idempotency_key")));
                None
            }
        };
        check.done(DOMAIN)?;
        let spend = spend.expect("validated above");
        let policy_expiry = self.policy_expiry(&r.program_id).await?;
        let command = Command::RestoreSpend { spend, reason: r.reason, actor, policy_expiry };
        let execution = self.write(&r.program_id, &r.idempotency_key, command).await?;
        let receipt = &execution.receipt;
        let message = pb::RestoreSpendResponse {
            transaction_id: receipt.transaction_id.clone(),
            customer_id: receipt.customer_id.clone(),
            points_restored: receipt.points,
            balance: Some(balance(&receipt.balance)),
        };
        Ok(respond(&execution, message))
    }

    async fn adjust(&self, request: Request<pb::AdjustRequest>) -> Result<Response<pb::AdjustResponse>, Status> {
        let actor = auth::actor(&request, &request.get_ref().actor);
        let r = request.into_inner();
        let mut check = Check::default();
        check.account_write(&r.program_id, &r.customer_id, &r.idempotency_key);
        check.add(validate::nonzero("points", r.points, MAX_POINTS_PER_COMMAND)).text("reason", &r.reason);
        if r.reason.trim().is_empty() {
            check.add(Err(FieldViolation::new("reason", "an adjustment needs a reason")));
        }
        let expires_at = check.timestamp("expires_at", r.expires_at.as_ref(), self.ledger.now());
        if r.points < 0 && expires_at.is_some() {
            check.add(Err(FieldViolation::new("expires_at", "only applies to a positive adjustment")));
        }
        if r.never_expires && (r.points < 0 || expires_at.is_some()) {
            check.add(Err(FieldViolation::new(
                "never_expires",
                "only applies to a positive adjustment without expires_at",
            )));
        }
        check.done(DOMAIN)?;
        let by_policy = r.points > 0 && expires_at.is_none() && !r.never_expires;
        let policy_expiry = if by_policy { self.policy_expiry(&r.program_id).await? } else { None };
        let command = Command::Adjust {
            customer_id: r.customer_id,
            points: r.points,
            reason: r.reason,
            expires_at,
            allow_debt: r.allow_debt,
            actor,
            never_expires: r.never_expires,
            policy_expiry,
        };
        let execution = self.write(&r.program_id, &r.idempotency_key, command).await?;
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
        check.account_write(&r.program_id, &r.customer_id, &r.idempotency_key);
        if !r.earn_transaction_id.is_empty() {
            check.id("earn_transaction_id", &r.earn_transaction_id);
        }
        check.done(DOMAIN)?;
        let earn = Some(r.earn_transaction_id).filter(|id| !id.is_empty());
        let command = Command::ActivatePending { customer_id: r.customer_id, earn_transaction_id: earn };
        let execution = self.write(&r.program_id, &r.idempotency_key, command).await?;
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
        check.id("program_id", &r.program_id).id("customer_id", &r.customer_id);
        check.done(DOMAIN)?;
        let found = self.ledger.balance(&r.program_id, &r.customer_id).await?;
        Ok(Response::new(pb::GetBalanceResponse { balance: Some(balance(&found)) }))
    }

    async fn list_transactions(
        &self,
        request: Request<pb::ListTransactionsRequest>,
    ) -> Result<Response<pb::ListTransactionsResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("customer_id", &r.customer_id);
        let page = check.page(r.page_size, &r.page_token);
        check.done(DOMAIN)?;
        // One extra row tells whether another page follows.
        let rows = self.ledger.entries(&r.program_id, &r.customer_id, page.before, page.size + 1).await?;
        let (rows, next_page_token) = page.cut(rows, |row| row.id);
        Ok(Response::new(pb::ListTransactionsResponse { entries: rows.iter().map(entry).collect(), next_page_token }))
    }

    async fn get_expiring_points(
        &self,
        request: Request<pb::GetExpiringPointsRequest>,
    ) -> Result<Response<pb::GetExpiringPointsResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("customer_id", &r.customer_id);
        let within = horizon(&mut check, "within", r.within.as_ref());
        check.done(DOMAIN)?;
        let until = self.ledger.now().saturating_add(within);
        let lots = self.ledger.expiring(&r.program_id, &r.customer_id, until).await?;
        Ok(Response::new(expiring(lots)))
    }

    async fn list_balances(
        &self,
        request: Request<pb::ListBalancesRequest>,
    ) -> Result<Response<pb::ListBalancesResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id);
        if !r.after_customer_id.is_empty() {
            check.id("after_customer_id", &r.after_customer_id);
        }
        if !(0..=1_000).contains(&r.page_size) {
            check.add(Err(FieldViolation::new("page_size", "must be between 0 and 1000")));
        }
        check.done(DOMAIN)?;
        let limit = if r.page_size == 0 { 200 } else { i64::from(r.page_size) };
        let accounts = self.ledger.holding(&r.program_id, &r.after_customer_id, limit).await?;
        let balances = accounts
            .iter()
            .map(|a| pb::CustomerBalance { customer_id: a.customer_id.clone(), balance: Some(balance(&a.balance())) })
            .collect();
        Ok(Response::new(pb::ListBalancesResponse { balances }))
    }

    async fn get_account_summary(
        &self,
        request: Request<pb::GetAccountSummaryRequest>,
    ) -> Result<Response<pb::GetAccountSummaryResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("customer_id", &r.customer_id);
        let within = horizon(&mut check, "expiring_within", r.expiring_within.as_ref());
        check.done(DOMAIN)?;
        let found = self.ledger.balance(&r.program_id, &r.customer_id).await?;
        let until = self.ledger.now().saturating_add(within);
        // The balance knows its earliest-expiring active lot: when that is
        // past the horizon (or nothing expires), no lot expires within it and
        // the lots need not be read. That is the common case, and it leaves
        // the summary as cheap as a balance read from the cache.
        let lots = match found.next_expiry_at {
            Some(at) if at <= until => self.ledger.expiring(&r.program_id, &r.customer_id, until).await?,
            _ => Vec::new(),
        };
        let profile = match r.include_profile {
            true => self.ledger.programs().profile(&r.program_id, &r.customer_id).await?,
            false => None,
        };
        Ok(Response::new(pb::GetAccountSummaryResponse {
            balance: Some(balance(&found)),
            expiring: Some(expiring(lots)),
            profile: profile.map(|p| profile_to_proto(&r.customer_id, &p)),
        }))
    }

    async fn run_birthdays(
        &self,
        _request: Request<pb::RunBirthdaysRequest>,
    ) -> Result<Response<pb::RunBirthdaysResponse>, Status> {
        let run = self.ledger.run_birthdays().await?;
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        Ok(Response::new(pb::RunBirthdaysResponse { due: count(run.due), awarded: count(run.awarded) }))
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
            check.done(DOMAIN)?;
            Some(r.program_id.as_str())
        };
        let run = self.ledger.run_expiry(program).await?;
        Ok(Response::new(pb::RunExpiryResponse {
            accounts_settled: run.accounts_settled,
            points_expired: run.points_expired,
            points_activated: run.points_activated,
        }))
    }

    async fn get_program_settings(
        &self,
        request: Request<pb::GetProgramSettingsRequest>,
    ) -> Result<Response<pb::GetProgramSettingsResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id);
        check.done(DOMAIN)?;
        let settings = self.ledger.programs().settings(&r.program_id).await?;
        Ok(Response::new(pb::GetProgramSettingsResponse { settings: Some(settings_to_proto(&settings)) }))
    }

    async fn put_program_settings(
        &self,
        request: Request<pb::PutProgramSettingsRequest>,
    ) -> Result<Response<pb::PutProgramSettingsResponse>, Status> {
        let actor = auth::actor(&request, &request.get_ref().actor);
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("idempotency_key", &r.idempotency_key).id("actor", &actor);
        // An absent message reads as all defaults, which fail validation field by field.
        let settings = settings_from_proto(r.settings.unwrap_or_default(), &mut check.0);
        check.done(DOMAIN)?;
        let stored = self
            .ledger
            .programs()
            .put_settings(&r.program_id, settings, &actor, &r.idempotency_key, r.expected_version)
            .await?;
        Ok(Response::new(pb::PutProgramSettingsResponse { settings: Some(settings_to_proto(&stored)) }))
    }

    async fn get_profile(
        &self,
        request: Request<pb::GetProfileRequest>,
    ) -> Result<Response<pb::GetProfileResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("customer_id", &r.customer_id);
        check.done(DOMAIN)?;
        let profile = self.ledger.programs().profile(&r.program_id, &r.customer_id).await?;
        Ok(Response::new(pb::GetProfileResponse { profile: profile.map(|p| profile_to_proto(&r.customer_id, &p)) }))
    }

    async fn update_profile(
        &self,
        request: Request<pb::UpdateProfileRequest>,
    ) -> Result<Response<pb::UpdateProfileResponse>, Status> {
        let actor = auth::actor(&request, &request.get_ref().actor);
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("customer_id", &r.customer_id);
        check.id("idempotency_key", &r.idempotency_key).id("actor", &actor);
        if r.expected_version.is_some_and(|v| v < 0) {
            check.add(Err(FieldViolation::new("expected_version", "must not be negative")));
        }
        let change = profile_from_proto(r.profile.unwrap_or_default());
        for violation in change.validate(self.ledger.now()) {
            check.add(Err(violation));
        }
        check.done(DOMAIN)?;
        let programs = self.ledger.programs();
        let stored = programs
            .put_profile(&r.program_id, &r.customer_id, change, r.expected_version, &actor, &r.idempotency_key)
            .await?;
        Ok(Response::new(pb::UpdateProfileResponse { profile: Some(profile_to_proto(&r.customer_id, &stored)) }))
    }

    async fn list_campaigns(
        &self,
        request: Request<pb::ListCampaignsRequest>,
    ) -> Result<Response<pb::ListCampaignsResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id);
        check.done(DOMAIN)?;
        let campaigns = self.ledger.programs().campaigns(&r.program_id, r.include_ended).await?;
        Ok(Response::new(pb::ListCampaignsResponse { campaigns: campaigns.iter().map(campaign_to_proto).collect() }))
    }

    async fn create_campaign(
        &self,
        request: Request<pb::CreateCampaignRequest>,
    ) -> Result<Response<pb::CreateCampaignResponse>, Status> {
        let actor = auth::actor(&request, &request.get_ref().actor);
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("idempotency_key", &r.idempotency_key).id("actor", &actor);
        let campaign = campaign_from_proto(r.campaign.unwrap_or_default(), &mut check.0, self.ledger.now());
        if !campaign.campaign_id.is_empty() {
            check.add(Err(FieldViolation::new("campaign.campaign_id", "is given by the service; leave it empty")));
        }
        check.done(DOMAIN)?;
        self.ledger.check_campaign_segments(&campaign)?;
        self.ledger.check_campaign_tiers(&r.program_id, &campaign).await?;
        let created =
            self.ledger.programs().create_campaign(&r.program_id, campaign, &actor, &r.idempotency_key).await?;
        Ok(Response::new(pb::CreateCampaignResponse { campaign: Some(campaign_to_proto(&created)) }))
    }

    async fn update_campaign(
        &self,
        request: Request<pb::UpdateCampaignRequest>,
    ) -> Result<Response<pb::UpdateCampaignResponse>, Status> {
        let actor = auth::actor(&request, &request.get_ref().actor);
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("idempotency_key", &r.idempotency_key).id("actor", &actor);
        let campaign = campaign_from_proto(r.campaign.unwrap_or_default(), &mut check.0, self.ledger.now());
        check.id("campaign.campaign_id", &campaign.campaign_id);
        check.done(DOMAIN)?;
        self.ledger.check_campaign_segments(&campaign)?;
        self.ledger.check_campaign_tiers(&r.program_id, &campaign).await?;
        let updated =
            self.ledger.programs().update_campaign(&r.program_id, campaign, &actor, &r.idempotency_key).await?;
        Ok(Response::new(pb::UpdateCampaignResponse { campaign: Some(campaign_to_proto(&updated)) }))
    }

    async fn end_campaign(
        &self,
        request: Request<pb::EndCampaignRequest>,
    ) -> Result<Response<pb::EndCampaignResponse>, Status> {
        let actor = auth::actor(&request, &request.get_ref().actor);
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("idempotency_key", &r.idempotency_key).id("actor", &actor);
        check.id("campaign_id", &r.campaign_id);
        check.done(DOMAIN)?;
        let ended =
            self.ledger.programs().end_campaign(&r.program_id, &r.campaign_id, &actor, &r.idempotency_key).await?;
        Ok(Response::new(pb::EndCampaignResponse { campaign: Some(campaign_to_proto(&ended)) }))
    }

    async fn list_audit_entries(
        &self,
        request: Request<pb::ListAuditEntriesRequest>,
    ) -> Result<Response<pb::ListAuditEntriesResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id);
        // The filters are compared exactly: text that names no actor or kind matches nothing.
        let page = check.page(r.page_size, &r.page_token);
        check.done(DOMAIN)?;
        let filter = AuditFilter { actor: &r.actor, entity: &r.entity };
        let rows = self.ledger.programs().audit_entries(&r.program_id, filter, page.before, page.size + 1).await?;
        let (rows, next_page_token) = page.cut(rows, |row| row.audit_id);
        Ok(Response::new(pb::ListAuditEntriesResponse {
            entries: rows.iter().map(audit_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn earn_for_order(
        &self,
        request: Request<pb::EarnForOrderRequest>,
    ) -> Result<Response<pb::EarnForOrderResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("customer_id", &r.customer_id).id("order_id", &r.order_id);
        check.order(r.amount_minor, &r.currency);
        let now = self.ledger.now();
        let occurred_at = check.timestamp("occurred_at", r.occurred_at.as_ref(), now);
        if occurred_at.is_some_and(|at| at > now + MAX_CLOCK_SKEW) {
            check.add(Err(FieldViolation::new("occurred_at", "must not lie in the future")));
        }
        check.done(DOMAIN)?;
        let order = OrderRequest {
            customer_id: r.customer_id,
            order_id: r.order_id,
            amount_minor: r.amount_minor,
            currency: r.currency,
            occurred_at,
        };
        let execution = self.ledger.earn_for_order(&r.program_id, order).await?;
        let receipt = &execution.receipt;
        let message = pb::EarnForOrderResponse {
            transaction_id: receipt.transaction_id.clone(),
            points: receipt.points,
            breakdown: receipt.breakdown.as_ref().map(breakdown_to_proto),
            pending_until: receipt.pending_until.map(to_timestamp),
            expires_at: receipt.expires_at.map(to_timestamp),
            balance: Some(balance(&receipt.balance)),
        };
        Ok(respond(&execution, message))
    }

    async fn refund_order(
        &self,
        request: Request<pb::RefundOrderRequest>,
    ) -> Result<Response<pb::RefundOrderResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("order_id", &r.order_id).id("idempotency_key", &r.idempotency_key);
        check.add(validate::positive("refunded_amount_minor", r.refunded_amount_minor, MAX_ORDER_MINOR));
        check.done(DOMAIN)?;
        let command = Command::OrderRefund { order_id: r.order_id, refunded_amount_minor: r.refunded_amount_minor };
        let execution = self.write(&r.program_id, &r.idempotency_key, command).await?;
        let receipt = &execution.receipt;
        let message = pb::RefundOrderResponse {
            transaction_id: receipt.transaction_id.clone(),
            points_reversed: receipt.points,
            total_refunded_minor: receipt.total_refunded_minor,
            balance: Some(balance(&receipt.balance)),
            points_restored: receipt.points_restored,
            restore_transaction_id: receipt.restore_transaction_id.clone(),
        };
        Ok(respond(&execution, message))
    }

    async fn record_activity(
        &self,
        request: Request<pb::RecordActivityRequest>,
    ) -> Result<Response<pb::RecordActivityResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.account_write(&r.program_id, &r.customer_id, &r.idempotency_key);
        check.add(rules::activity_type(&r.activity_type));
        if !r.activity_ref.is_empty() {
            check.id("activity_ref", &r.activity_ref);
        }
        check.done(DOMAIN)?;
        let execution = self
            .ledger
            .record_activity(&r.program_id, &r.customer_id, &r.activity_type, &r.activity_ref, &r.idempotency_key)
            .await?;
        let receipt = &execution.receipt;
        let message = pb::RecordActivityResponse {
            transaction_id: receipt.transaction_id.clone(),
            points: receipt.points,
            breakdown: receipt.breakdown.as_ref().map(breakdown_to_proto),
            balance: Some(balance(&receipt.balance)),
        };
        Ok(respond(&execution, message))
    }

    async fn preview_order(
        &self,
        request: Request<pb::PreviewOrderRequest>,
    ) -> Result<Response<pb::PreviewOrderResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id);
        if !r.customer_id.is_empty() {
            check.id("customer_id", &r.customer_id);
        }
        check.order(r.amount_minor, &r.currency);
        check.done(DOMAIN)?;
        let customer = Some(r.customer_id.as_str()).filter(|c| !c.is_empty());
        let now = self.ledger.now();
        let (breakdown, _) = self.ledger.price_order(&r.program_id, customer, r.amount_minor, &r.currency, now).await?;
        Ok(Response::new(pb::PreviewOrderResponse {
            points: breakdown.total_points,
            breakdown: Some(breakdown_to_proto(&breakdown)),
        }))
    }

    async fn quote_checkout_points(
        &self,
        request: Request<pb::QuoteCheckoutPointsRequest>,
    ) -> Result<Response<pb::QuoteCheckoutPointsResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("customer_id", &r.customer_id);
        check.order(r.amount_minor, &r.currency);
        check.done(DOMAIN)?;
        let (rule, balance, usable) =
            self.ledger.quote_checkout_points(&r.program_id, &r.customer_id, r.amount_minor, &r.currency).await?;
        Ok(Response::new(pb::QuoteCheckoutPointsResponse {
            max_points: usable,
            max_discount_minor: rule.discount_minor(usable),
            available: balance.available,
            min_points: rule.min_points,
            step_points: rule.step_points.max(1),
            rule: Some(checkout_to_proto(&rule)),
        }))
    }

    async fn apply_checkout_points(
        &self,
        request: Request<pb::ApplyCheckoutPointsRequest>,
    ) -> Result<Response<pb::ApplyCheckoutPointsResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("customer_id", &r.customer_id).id("order_id", &r.order_id);
        check.order(r.amount_minor, &r.currency);
        check.points("points", r.points);
        check.done(DOMAIN)?;
        let order = CheckoutRequest {
            customer_id: r.customer_id,
            order_id: r.order_id,
            amount_minor: r.amount_minor,
            currency: r.currency,
            points: r.points,
        };
        let execution = self.ledger.apply_checkout_points(&r.program_id, order).await?;
        let receipt = &execution.receipt;
        let message = pb::ApplyCheckoutPointsResponse {
            transaction_id: receipt.transaction_id.clone(),
            points: receipt.points,
            discount_minor: receipt.discount_minor,
            balance: Some(balance(&receipt.balance)),
        };
        Ok(respond(&execution, message))
    }

    type StreamEventsStream = Pin<Box<dyn Stream<Item = Result<pb::StreamEventsResponse, Status>> + Send + 'static>>;

    async fn stream_events(
        &self,
        request: Request<pb::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        if r.after_sequence < 0 {
            check.add(Err(FieldViolation::new("after_sequence", "must not be negative")));
        }
        if !r.program_id.is_empty() {
            check.id("program_id", &r.program_id);
        }
        if !(0..=60_000).contains(&r.interval_ms) {
            check.add(Err(FieldViolation::new("interval_ms", "must be 0 to 60000")));
        }
        let mut kinds = Vec::new();
        for (i, &kind) in r.kinds.iter().enumerate() {
            match pb::EntryKind::try_from(kind).ok().and_then(domain_kind) {
                Some(kind) => kinds.push(kind),
                None => {
                    check.add(Err(FieldViolation::new(format!("kinds[{i}]"), "is not an entry kind")));
                }
            }
        }
        check.done(DOMAIN)?;
        let (tx, rx) = mpsc::channel(STREAM_BATCH as usize);
        let ledger = self.ledger.clone();
        let shutdown = self.shutdown.clone();
        let interval = Duration::from_millis(u64::try_from(r.interval_ms).unwrap_or(0));
        let filter = StreamFilter { program_id: r.program_id, kinds, interval };
        tokio::spawn(feed_stream(ledger, r.after_sequence, filter, tx, shutdown));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// What one stream sends, and how often it reads.
struct StreamFilter {
    program_id: String,
    kinds: Vec<EntryKind>,
    interval: Duration,
}

/// Sends every published entry after `cursor` that passes the filter, then
/// waits for more, until the client goes away or the server shuts down.
async fn feed_stream(
    ledger: Arc<Ledger>,
    mut cursor: i64,
    filter: StreamFilter,
    tx: mpsc::Sender<Result<pb::StreamEventsResponse, Status>>,
    mut shutdown: ShutdownSignal,
) {
    let mut published = ledger.published();
    loop {
        // Everything up to here is published and visible: once a read comes
        // back short, the entries it skipped (other kinds) need no reading again.
        let visible = *published.borrow();
        let rows = match ledger.entries_after(cursor, &filter.program_id, &filter.kinds, STREAM_BATCH).await {
            Ok(rows) => rows,
            Err(error) => {
                let _ = tx.send(Err(error.into())).await;
                return;
            }
        };
        let caught_up = rows.len() < STREAM_BATCH as usize;
        for row in &rows {
            if tx.send(Ok(pb::StreamEventsResponse { entry: Some(entry(row)), through_sequence: 0 })).await.is_err() {
                return;
            }
            cursor = row.sequence;
        }
        if caught_up {
            if !filter.kinds.is_empty() && visible > cursor {
                cursor = visible;
                let through = pb::StreamEventsResponse { entry: None, through_sequence: visible };
                if tx.send(Ok(through)).await.is_err() {
                    return;
                }
            }
            published.mark_unchanged();
            tokio::select! {
                _ = published.changed() => {}
                () = tokio::time::sleep(STREAM_POLL) => {}
                () = tx.closed() => return,
                () = shutdown.fired() => return,
            }
            if !filter.interval.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(filter.interval) => {}
                    () = tx.closed() => return,
                    () = shutdown.fired() => return,
                }
            }
        }
    }
}

/// A horizon from now, in microseconds: required, positive and at most 10 years.
fn horizon(check: &mut Check, field: &str, within: Option<&prost_types::Duration>) -> Micros {
    let Some(d) = within else {
        check.add(Err(FieldViolation::new(field, "is required, e.g. 2592000s for 30 days")));
        return 0;
    };
    let micros = d.seconds.checked_mul(MICROS_PER_SECOND).and_then(|s| s.checked_add(i64::from(d.nanos / 1_000)));
    match micros {
        Some(m) if m > 0 && m <= MAX_EXPIRING_HORIZON => m,
        _ => {
            check.add(Err(FieldViolation::new(field, "must be positive and at most 10 years")));
            0
        }
    }
}

/// Expiring lots, grouped by instant, as GetExpiringPoints answers them.
fn expiring(lots: Vec<(Micros, i64)>) -> pb::GetExpiringPointsResponse {
    let total_points = lots.iter().map(|(_, points)| points).sum();
    let expiring = lots
        .into_iter()
        .map(|(at, points)| pb::ExpiringPoints { points, expires_at: Some(to_timestamp(at)) })
        .collect();
    pb::GetExpiringPointsResponse { expiring, total_points }
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
        amount: row.amount,
        order_id: row.order_id.clone(),
        order_amount_minor: row.order_amount_minor,
        actor: row.actor.clone(),
        base_points: row.base_points,
    }
}

fn domain_kind(kind: pb::EntryKind) -> Option<EntryKind> {
    Some(match kind {
        pb::EntryKind::Unspecified => return None,
        pb::EntryKind::Earn => EntryKind::Earn,
        pb::EntryKind::Spend => EntryKind::Spend,
        pb::EntryKind::Reverse => EntryKind::Reverse,
        pb::EntryKind::Adjust => EntryKind::Adjust,
        pb::EntryKind::Activate => EntryKind::Activate,
        pb::EntryKind::Expire => EntryKind::Expire,
        pb::EntryKind::Restore => EntryKind::Restore,
    })
}

fn kind(kind: EntryKind) -> pb::EntryKind {
    match kind {
        EntryKind::Earn => pb::EntryKind::Earn,
        EntryKind::Spend => pb::EntryKind::Spend,
        EntryKind::Reverse => pb::EntryKind::Reverse,
        EntryKind::Adjust => pb::EntryKind::Adjust,
        EntryKind::Activate => pb::EntryKind::Activate,
        EntryKind::Expire => pb::EntryKind::Expire,
        EntryKind::Restore => pb::EntryKind::Restore,
    }
}

/// What a write asks for; checked by [`ProfileChange::validate`]. A month
/// or day out of `u32` reads as one no calendar has.
fn profile_from_proto(p: pb::MemberProfile) -> ProfileChange {
    ProfileChange {
        enrollment_channel: p.enrollment_channel,
        birth_month: u32::try_from(p.birth_month).unwrap_or(u32::MAX),
        birth_day: u32::try_from(p.birth_day).unwrap_or(u32::MAX),
        locale: p.locale,
        time_zone: p.time_zone,
        consents: p
            .consents
            .into_iter()
            .map(|c| {
                (
                    c.channel,
                    c.granted,
                    c.changed_at.as_ref().map(|t| loyalty_common::clock::from_timestamp(t).unwrap_or(i64::MIN)),
                )
            })
            .collect(),
        attributes: p.attributes.into_iter().collect(),
    }
}
