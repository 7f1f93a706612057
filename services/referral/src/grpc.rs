//! The gRPC face of the referral service: the only file that touches prost
//! types. Every request is validated here, at the edge.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use loyalty_common::auth;
use loyalty_common::clock::to_timestamp;
use loyalty_common::outbox;
use loyalty_common::validate::{Check, FieldViolation};
use loyalty_proto::referral::v1 as pb;
use loyalty_proto::referral::v1::referral_service_server::ReferralService;

use crate::domain::{self, Referral, Settings, Status as ReferralStatus};
use crate::error::DOMAIN;
use crate::service::Referrals;
use crate::store::{OrderEvent, Stats};

/// Largest order amount accepted, in minor units.
const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000;

pub struct ReferralApi {
    referrals: Arc<Referrals>,
}

impl ReferralApi {
    pub fn new(referrals: Arc<Referrals>) -> Self {
        Self { referrals }
    }
}

/// A code as typed by a person, or a violation naming `field`.
fn code(check: &mut Check, field: &str, input: &str) -> String {
    match domain::normalize_code(input) {
        Some(code) => code,
        None => {
            check.add(Err(FieldViolation::new(field, "is not a referral code (8 characters, no 0, O, 1 or I)")));
            String::new()
        }
    }
}

fn amount(check: &mut Check, field: &str, value: i64) {
    if !(1..=MAX_AMOUNT_MINOR).contains(&value) {
        check.add(Err(FieldViolation::new(field, format!("must be between 1 and {MAX_AMOUNT_MINOR}"))));
    }
}

#[tonic::async_trait]
impl ReferralService for ReferralApi {
    async fn get_or_create_code(
        &self,
        request: Request<pb::GetOrCreateCodeRequest>,
    ) -> Result<Response<pb::GetOrCreateCodeResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("customer_id", &r.customer_id);
        check.done(DOMAIN)?;
        let (code, enabled) = self.referrals.store().code_for(&r.program_id, &r.customer_id).await?;
        Ok(Response::new(pb::GetOrCreateCodeResponse { code, enabled }))
    }

    async fn resolve_code(
        &self,
        request: Request<pb::ResolveCodeRequest>,
    ) -> Result<Response<pb::ResolveCodeResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id);
        let code = code(&mut check, "code", &r.code);
        check.done(DOMAIN)?;
        let settings = self.referrals.store().settings(&r.program_id).await?;
        let found = self.referrals.store().resolve(&r.program_id, &code).await?;
        let response = match found {
            Some((referrer, true)) if settings.enabled => pb::ResolveCodeResponse {
                valid: true,
                referrer_customer_id: referrer,
                referee_points: settings.referee_points,
                minimum_order_minor: settings.minimum_order_minor,
            },
            _ => pb::ResolveCodeResponse::default(),
        };
        Ok(Response::new(response))
    }

    async fn disable_code(
        &self,
        request: Request<pb::DisableCodeRequest>,
    ) -> Result<Response<pb::DisableCodeResponse>, Status> {
        let actor = auth::actor(&request, "");
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("customer_id", &r.customer_id);
        check.done(DOMAIN)?;
        let code = self.referrals.store().disable_code(&r.program_id, &r.customer_id, &actor).await?;
        Ok(Response::new(pb::DisableCodeResponse { code }))
    }

    async fn record_signup(
        &self,
        request: Request<pb::RecordSignupRequest>,
    ) -> Result<Response<pb::RecordSignupResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("referee_customer_id", &r.referee_customer_id);
        check.id("idempotency_key", &r.idempotency_key);
        let code = code(&mut check, "code", &r.code);
        check.done(DOMAIN)?;
        let referral =
            self.referrals.store().signup(&r.program_id, &code, &r.referee_customer_id, &r.idempotency_key).await?;
        Ok(Response::new(pb::RecordSignupResponse { referral: Some(referral_to_proto(&referral)) }))
    }

    async fn record_purchase(
        &self,
        request: Request<pb::RecordPurchaseRequest>,
    ) -> Result<Response<pb::RecordPurchaseResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("customer_id", &r.customer_id).id("order_id", &r.order_id);
        amount(&mut check, "amount_minor", r.amount_minor);
        let now = self.referrals.store().now();
        let at = check.timestamp("occurred_at", r.occurred_at.as_ref(), now);
        check.done(DOMAIN)?;
        let event = OrderEvent::Purchase {
            program_id: r.program_id,
            customer_id: r.customer_id,
            order_id: r.order_id,
            amount_minor: r.amount_minor,
            at: at.unwrap_or(now),
        };
        let changed = self.referrals.record(&event).await?;
        Ok(Response::new(pb::RecordPurchaseResponse { referral: changed.as_ref().map(referral_to_proto) }))
    }

    async fn record_refund(
        &self,
        request: Request<pb::RecordRefundRequest>,
    ) -> Result<Response<pb::RecordRefundResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("order_id", &r.order_id).id("idempotency_key", &r.idempotency_key);
        amount(&mut check, "refunded_amount_minor", r.refunded_amount_minor);
        check.done(DOMAIN)?;
        let event = OrderEvent::Refund {
            program_id: r.program_id,
            order_id: r.order_id,
            refund_key: format!("api:{}", r.idempotency_key),
            amount_minor: r.refunded_amount_minor,
            at: self.referrals.store().now(),
        };
        let changed = self.referrals.record(&event).await?;
        Ok(Response::new(pb::RecordRefundResponse { referral: changed.as_ref().map(referral_to_proto) }))
    }

    async fn list_referrals(
        &self,
        request: Request<pb::ListReferralsRequest>,
    ) -> Result<Response<pb::ListReferralsResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("referrer_customer_id", &r.referrer_customer_id);
        let page = check.page(r.page_size, &r.page_token);
        check.done(DOMAIN)?;
        let rows = self
            .referrals
            .store()
            .referrals(&r.program_id, &r.referrer_customer_id, page.before, page.size + 1)
            .await?;
        let (rows, next_page_token) = page.cut(rows, |(seq, _)| *seq);
        let referrals = rows.iter().map(|(_, referral)| referral_to_proto(referral)).collect();
        Ok(Response::new(pb::ListReferralsResponse { referrals, next_page_token }))
    }

    async fn get_referral_stats(
        &self,
        request: Request<pb::GetReferralStatsRequest>,
    ) -> Result<Response<pb::GetReferralStatsResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("customer_id", &r.customer_id);
        check.done(DOMAIN)?;
        let s = self.referrals.store().stats(&r.program_id, &r.customer_id).await?;
        Ok(Response::new(stats_to_proto(&s)))
    }

    async fn get_referral_funnel(
        &self,
        request: Request<pb::GetReferralFunnelRequest>,
    ) -> Result<Response<pb::GetReferralFunnelResponse>, Status> {
        let r = request.into_inner();
        let now = self.referrals.store().now();
        let mut check = Check::default();
        check.id("program_id", &r.program_id);
        let from = check.timestamp("from", r.from.as_ref(), now).unwrap_or(0);
        let until = check.timestamp("to", r.to.as_ref(), now).unwrap_or(now);
        if from > until {
            check.add(Err(FieldViolation::new("from", "must not be after to")));
        }
        check.done(DOMAIN)?;
        let s = self.referrals.store().funnel(&r.program_id, from, until).await?;
        let conversion_percent =
            if s.invited == 0 { 0 } else { i32::try_from(s.completed * 100 / s.invited).unwrap_or(0) };
        Ok(Response::new(pb::GetReferralFunnelResponse {
            signed_up: s.invited,
            pending: s.pending,
            completed: s.completed,
            reversed: s.reversed,
            expired: s.expired,
            conversion_percent,
        }))
    }

    async fn get_referral_summary(
        &self,
        request: Request<pb::GetReferralSummaryRequest>,
    ) -> Result<Response<pb::GetReferralSummaryResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("customer_id", &r.customer_id);
        check.done(DOMAIN)?;
        let store = self.referrals.store();
        // Independent reads, at once. A read makes nothing: no code yet is an empty one.
        let (code, stats) =
            tokio::join!(store.code_of(&r.program_id, &r.customer_id), store.stats(&r.program_id, &r.customer_id));
        let ((code, enabled), stats) = (code?.unwrap_or_default(), stats?);
        Ok(Response::new(pb::GetReferralSummaryResponse {
            code: Some(pb::GetOrCreateCodeResponse { code, enabled }),
            stats: Some(stats_to_proto(&stats)),
        }))
    }

    async fn get_referral_settings(
        &self,
        request: Request<pb::GetReferralSettingsRequest>,
    ) -> Result<Response<pb::GetReferralSettingsResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id);
        check.done(DOMAIN)?;
        let settings = self.referrals.store().settings(&r.program_id).await?;
        Ok(Response::new(pb::GetReferralSettingsResponse { settings: Some(settings_to_proto(&settings)) }))
    }

    async fn put_referral_settings(
        &self,
        request: Request<pb::PutReferralSettingsRequest>,
    ) -> Result<Response<pb::PutReferralSettingsResponse>, Status> {
        let actor = auth::actor(&request, &request.get_ref().actor);
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("actor", &actor).id("idempotency_key", &r.idempotency_key);
        let s = r.settings.unwrap_or_default();
        let settings = Settings {
            enabled: s.enabled,
            referrer_points: s.referrer_points,
            referee_points: s.referee_points,
            minimum_order_minor: s.minimum_order_minor,
            cap_count: s.cap_count,
            cap_period_days: s.cap_period_days,
            attribution_window_days: s.attribution_window_days,
            clawback_window_days: s.clawback_window_days,
            version: 0,
            referee_reward_id: s.referee_reward_id,
            referrer_reward_id: s.referrer_reward_id,
        };
        for violation in settings.validate() {
            check.add(Err(violation));
        }
        check.done(DOMAIN)?;
        self.referrals.check_voucher_rewards(&r.program_id, &settings.reward_ids()).await?;
        let store = self.referrals.store();
        let stored =
            store.put_settings(&r.program_id, settings, r.expected_version, &actor, &r.idempotency_key).await?;
        Ok(Response::new(pb::PutReferralSettingsResponse { settings: Some(settings_to_proto(&stored)) }))
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let r = request.into_inner();
        let database = self.referrals.store().database();
        let (events, next_after_sequence) = outbox::list(database, DOMAIN, r.after_sequence, r.page_size).await?;
        Ok(Response::new(pb::ListEventsResponse { events, next_after_sequence }))
    }
}

fn stats_to_proto(s: &Stats) -> pb::GetReferralStatsResponse {
    pb::GetReferralStatsResponse {
        invited: s.invited,
        pending: s.pending,
        completed: s.completed,
        reversed: s.reversed,
        expired: s.expired,
        points_earned: s.points_earned,
    }
}

fn settings_to_proto(s: &Settings) -> pb::ReferralSettings {
    pb::ReferralSettings {
        enabled: s.enabled,
        referrer_points: s.referrer_points,
        referee_points: s.referee_points,
        minimum_order_minor: s.minimum_order_minor,
        cap_count: s.cap_count,
        cap_period_days: s.cap_period_days,
        attribution_window_days: s.attribution_window_days,
        clawback_window_days: s.clawback_window_days,
        version: s.version,
        referee_reward_id: s.referee_reward_id.clone(),
        referrer_reward_id: s.referrer_reward_id.clone(),
    }
}

fn referral_to_proto(r: &Referral) -> pb::Referral {
    pb::Referral {
        referral_id: r.referral_id.clone(),
        code: r.code.clone(),
        referrer_customer_id: r.referrer_customer_id.clone(),
        referee_customer_id: r.referee_customer_id.clone(),
        status: match r.status {
            ReferralStatus::Pending => pb::ReferralStatus::Pending,
            ReferralStatus::Completed => pb::ReferralStatus::Completed,
            ReferralStatus::Reversed => pb::ReferralStatus::Reversed,
            ReferralStatus::Expired => pb::ReferralStatus::Expired,
        } as i32,
        created_at: Some(to_timestamp(r.created_at)),
        completed_at: r.completed_at.map(to_timestamp),
        reversed_at: r.reversed_at.map(to_timestamp),
        qualifying_order_id: r.qualifying_order_id.clone(),
    }
}
