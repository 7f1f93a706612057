//! The gRPC face of the tiers service: the only file that touches prost
//! types. Every request is validated here, at the edge.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use loyalty_common::auth;
use loyalty_common::clock::{Micros, to_timestamp};
use loyalty_common::outbox;
use loyalty_common::validate::{Check, FieldViolation};
use loyalty_proto::tiers::v1 as pb;
use loyalty_proto::tiers::v1::tiers_service_server::TiersService;

use crate::domain::{self, Basis, Benefits, Downgrade, Ladder, Membership, Reason, Tier, Window};
use crate::error::DOMAIN;
use crate::service::Tiers;

pub struct TiersApi {
    tiers: Arc<Tiers>,
}

impl TiersApi {
    pub fn new(tiers: Arc<Tiers>) -> Self {
        Self { tiers }
    }
}

fn customer(program_id: &str, customer_id: &str) -> Result<(), Status> {
    let mut check = Check::default();
    check.id("program_id", program_id).id("customer_id", customer_id);
    check.done(DOMAIN)
}

#[tonic::async_trait]
impl TiersService for TiersApi {
    async fn get_ladder(
        &self,
        request: Request<pb::GetLadderRequest>,
    ) -> Result<Response<pb::GetLadderResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id);
        check.done(DOMAIN)?;
        let ladder = self.tiers.store().ladder(&r.program_id).await?;
        Ok(Response::new(pb::GetLadderResponse { ladder: Some(ladder_to_proto(&ladder)) }))
    }

    async fn get_tier_distribution(
        &self,
        request: Request<pb::GetTierDistributionRequest>,
    ) -> Result<Response<pb::GetTierDistributionResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id);
        check.done(DOMAIN)?;
        let counts = self.tiers.store().distribution(&r.program_id).await?;
        let members = counts.iter().map(|(_, n)| n).sum();
        let tiers = counts.into_iter().map(|(tier_id, members)| pb::TierCount { tier_id, members }).collect();
        Ok(Response::new(pb::GetTierDistributionResponse { tiers, members }))
    }

    async fn put_ladder(
        &self,
        request: Request<pb::PutLadderRequest>,
    ) -> Result<Response<pb::PutLadderResponse>, Status> {
        let actor = auth::actor(&request, &request.get_ref().actor);
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("actor", &actor).id("idempotency_key", &r.idempotency_key);
        let ladder = ladder_from_proto(r.ladder.unwrap_or_default(), &mut check.0);
        check.done(DOMAIN)?;
        let stored =
            self.tiers.put_ladder(&r.program_id, ladder, r.expected_version, &actor, &r.idempotency_key).await?;
        Ok(Response::new(pb::PutLadderResponse { ladder: Some(ladder_to_proto(&stored)) }))
    }

    async fn get_membership(
        &self,
        request: Request<pb::GetMembershipRequest>,
    ) -> Result<Response<pb::GetMembershipResponse>, Status> {
        let r = request.into_inner();
        customer(&r.program_id, &r.customer_id)?;
        let (member, ladder) = self.tiers.membership(&r.program_id, &r.customer_id).await?;
        Ok(Response::new(pb::GetMembershipResponse {
            membership: Some(membership_to_proto(&member, &ladder, self.tiers.store().now())),
        }))
    }

    async fn list_membership_history(
        &self,
        request: Request<pb::ListMembershipHistoryRequest>,
    ) -> Result<Response<pb::ListMembershipHistoryResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("customer_id", &r.customer_id);
        let page = check.page(r.page_size, &r.page_token);
        check.done(DOMAIN)?;
        let rows = self.tiers.store().history(&r.program_id, &r.customer_id, page.before, page.size + 1).await?;
        let (rows, next_page_token) = page.cut(rows, |row| row.change_id);
        let changes = rows
            .iter()
            .map(|row| pb::MembershipChange {
                from_tier_id: row.change.from_tier_id.clone(),
                to_tier_id: row.change.to_tier_id.clone(),
                reason: reason_to_proto(row.change.reason) as i32,
                changed_at: Some(to_timestamp(row.change.at)),
                actor: row.change.actor.clone(),
            })
            .collect();
        Ok(Response::new(pb::ListMembershipHistoryResponse { changes, next_page_token }))
    }

    async fn assign_tier(
        &self,
        request: Request<pb::AssignTierRequest>,
    ) -> Result<Response<pb::AssignTierResponse>, Status> {
        let actor = auth::actor(&request, &request.get_ref().actor);
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("customer_id", &r.customer_id).id("tier_id", &r.tier_id);
        check.id("actor", &actor).id("idempotency_key", &r.idempotency_key);
        let now = self.tiers.store().now();
        let ends_at = check.timestamp("ends_at", r.ends_at.as_ref(), now);
        if ends_at.is_some_and(|at| at <= now) {
            check.add(Err(FieldViolation::new("ends_at", "must be in the future")));
        }
        check.done(DOMAIN)?;
        let (member, ladder) = self
            .tiers
            .assign(&r.program_id, &r.customer_id, Some(&r.tier_id), ends_at, &actor, &r.idempotency_key)
            .await?;
        Ok(Response::new(pb::AssignTierResponse {
            membership: Some(membership_to_proto(&member, &ladder, self.tiers.store().now())),
        }))
    }

    async fn remove_assignment(
        &self,
        request: Request<pb::RemoveAssignmentRequest>,
    ) -> Result<Response<pb::RemoveAssignmentResponse>, Status> {
        let actor = auth::actor(&request, &request.get_ref().actor);
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("customer_id", &r.customer_id);
        check.id("actor", &actor).id("idempotency_key", &r.idempotency_key);
        check.done(DOMAIN)?;
        let (member, ladder) =
            self.tiers.assign(&r.program_id, &r.customer_id, None, None, &actor, &r.idempotency_key).await?;
        Ok(Response::new(pb::RemoveAssignmentResponse {
            membership: Some(membership_to_proto(&member, &ladder, self.tiers.store().now())),
        }))
    }

    async fn reevaluate(
        &self,
        request: Request<pb::ReevaluateRequest>,
    ) -> Result<Response<pb::ReevaluateResponse>, Status> {
        let r = request.into_inner();
        customer(&r.program_id, &r.customer_id)?;
        let (member, ladder) = self.tiers.reevaluate(&r.program_id, &r.customer_id).await?;
        Ok(Response::new(pb::ReevaluateResponse {
            membership: Some(membership_to_proto(&member, &ladder, self.tiers.store().now())),
        }))
    }

    async fn get_multiplier(
        &self,
        request: Request<pb::GetMultiplierRequest>,
    ) -> Result<Response<pb::GetMultiplierResponse>, Status> {
        let r = request.into_inner();
        let mut check = Check::default();
        check.id("program_id", &r.program_id).id("customer_id", &r.customer_id);
        let at = check.timestamp("at", r.at.as_ref(), self.tiers.store().now());
        check.done(DOMAIN)?;
        let standing = self.tiers.multiplier(&r.program_id, &r.customer_id, at).await?;
        Ok(Response::new(pb::GetMultiplierResponse {
            tier_id: standing.tier_id,
            multiplier_bp: i32::try_from(standing.multiplier_bp).unwrap_or(i32::MAX),
            birthday_multiplier_bp: i32::try_from(standing.birthday_multiplier_bp).unwrap_or(i32::MAX),
        }))
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let r = request.into_inner();
        let database = self.tiers.store().database();
        let (events, next_after_sequence) = outbox::list(database, DOMAIN, r.after_sequence, r.page_size).await?;
        Ok(Response::new(pb::ListEventsResponse { events, next_after_sequence }))
    }
}

fn ladder_from_proto(l: pb::Ladder, bad: &mut Vec<FieldViolation>) -> Ladder {
    let w = l.window.unwrap_or_default();
    let window = match pb::WindowKind::try_from(w.kind) {
        Ok(pb::WindowKind::CalendarYear) => Window::CalendarYear,
        Ok(pb::WindowKind::RollingDays) => Window::RollingDays(w.days),
        Ok(pb::WindowKind::Lifetime) => Window::Lifetime,
        _ => {
            bad.push(FieldViolation::new("ladder.window.kind", "must be CALENDAR_YEAR, ROLLING_DAYS or LIFETIME"));
            Window::CalendarYear
        }
    };
    let d = l.downgrade.unwrap_or_default();
    let downgrade = match pb::DowngradeKind::try_from(d.kind) {
        Ok(pb::DowngradeKind::Immediate) => Downgrade::Immediate,
        Ok(pb::DowngradeKind::GraceDays) => Downgrade::GraceDays(d.grace_days),
        Ok(pb::DowngradeKind::EndOfNextPeriod) => Downgrade::EndOfNextPeriod,
        _ => {
            bad.push(FieldViolation::new(
                "ladder.downgrade.kind",
                "must be IMMEDIATE, GRACE_DAYS or END_OF_NEXT_PERIOD",
            ));
            Downgrade::Immediate
        }
    };
    let tiers = l
        .tiers
        .into_iter()
        .map(|t| Tier {
            tier_id: t.tier_id,
            name: t.name,
            threshold: t.threshold,
            multiplier_bp: i64::from(t.multiplier_bp),
            perks: t.perks,
            hidden: t.hidden,
            benefits: benefits_from_proto(t.benefits.unwrap_or_default()),
        })
        .collect();
    let basis = match pb::QualificationBasis::try_from(l.qualification_basis) {
        Ok(pb::QualificationBasis::Unspecified | pb::QualificationBasis::AllEarned) => Basis::AllEarned,
        Ok(pb::QualificationBasis::OrderPointsBase) => Basis::OrderPointsBase,
        Ok(pb::QualificationBasis::OrderPointsAll) => Basis::OrderPointsAll,
        Ok(pb::QualificationBasis::Spend) => Basis::Spend,
        Err(_) => {
            bad.push(FieldViolation::new(
                "ladder.qualification_basis",
                "must be ALL_EARNED, ORDER_POINTS_BASE, ORDER_POINTS_ALL or SPEND",
            ));
            Basis::AllEarned
        }
    };
    let ladder = Ladder { tiers, window, downgrade, version: 0, basis };
    bad.extend(ladder.validate());
    ladder
}

fn ladder_to_proto(l: &Ladder) -> pb::Ladder {
    let (kind, days) = match l.window {
        Window::CalendarYear => (pb::WindowKind::CalendarYear, 0),
        Window::RollingDays(days) => (pb::WindowKind::RollingDays, days),
        Window::Lifetime => (pb::WindowKind::Lifetime, 0),
    };
    let (downgrade, grace_days) = match l.downgrade {
        Downgrade::Immediate => (pb::DowngradeKind::Immediate, 0),
        Downgrade::GraceDays(days) => (pb::DowngradeKind::GraceDays, days),
        Downgrade::EndOfNextPeriod => (pb::DowngradeKind::EndOfNextPeriod, 0),
    };
    pb::Ladder {
        tiers: l
            .tiers
            .iter()
            .map(|t| pb::Tier {
                tier_id: t.tier_id.clone(),
                name: t.name.clone(),
                threshold: t.threshold,
                multiplier_bp: i32::try_from(t.multiplier_bp).unwrap_or(i32::MAX),
                perks: t.perks.clone(),
                hidden: t.hidden,
                benefits: Some(benefits_to_proto(&t.benefits)),
            })
            .collect(),
        window: Some(pb::Window { kind: kind as i32, days }),
        downgrade: Some(pb::DowngradePolicy { kind: downgrade as i32, grace_days }),
        version: l.version,
        qualification_basis: basis_to_proto(l.basis) as i32,
    }
}

fn membership_to_proto(m: &Membership, ladder: &Ladder, now: Micros) -> pb::Membership {
    let tier = ladder.tier(&m.tier_id);
    let next = domain::progress(ladder, m);
    pb::Membership {
        program_id: m.program_id.clone(),
        customer_id: m.customer_id.clone(),
        tier_id: m.tier_id.clone(),
        tier_name: tier.map(|t| t.name.clone()).unwrap_or_default(),
        multiplier_bp: i32::try_from(ladder.multiplier_bp(&m.tier_id)).unwrap_or(i32::MAX),
        qualifying_points: m.qualifying,
        window_start: ladder.window_start(now).map(to_timestamp),
        next_tier_id: next.map(|(t, _)| t.tier_id.clone()).unwrap_or_default(),
        next_tier_name: next.map(|(t, _)| t.name.clone()).unwrap_or_default(),
        points_to_next_tier: next.map_or(0, |(_, needed)| needed),
        since: Some(to_timestamp(m.since)),
        next_review_at: m.next_review_at.map(to_timestamp),
        assigned: m.assigned_tier_id.is_some(),
        assignment_ends_at: m.assigned_until.map(to_timestamp),
        downgrade_at: m.grace_until.map(to_timestamp),
        qualification_basis: basis_to_proto(ladder.basis) as i32,
        benefits: tier.map(|t| benefits_to_proto(&t.benefits)),
        perks: tier.map(|t| t.perks.clone()).unwrap_or_default(),
    }
}

fn benefits_from_proto(b: pb::TierBenefits) -> Benefits {
    Benefits {
        free_shipping: b.free_shipping,
        early_access_hours: b.early_access_hours,
        birthday_multiplier_bp: i64::from(b.birthday_multiplier_bp),
        flags: b.flags,
    }
}

fn benefits_to_proto(b: &Benefits) -> pb::TierBenefits {
    pb::TierBenefits {
        free_shipping: b.free_shipping,
        early_access_hours: b.early_access_hours,
        birthday_multiplier_bp: i32::try_from(b.birthday_multiplier_bp).unwrap_or(i32::MAX),
        flags: b.flags.clone(),
    }
}

fn basis_to_proto(basis: Basis) -> pb::QualificationBasis {
    match basis {
        Basis::AllEarned => pb::QualificationBasis::AllEarned,
        Basis::OrderPointsBase => pb::QualificationBasis::OrderPointsBase,
        Basis::OrderPointsAll => pb::QualificationBasis::OrderPointsAll,
        Basis::Spend => pb::QualificationBasis::Spend,
    }
}

fn reason_to_proto(reason: Reason) -> pb::ChangeReason {
    match reason {
        Reason::Threshold => pb::ChangeReason::Threshold,
        Reason::GraceExpired => pb::ChangeReason::GraceExpired,
        Reason::PeriodEnded => pb::ChangeReason::PeriodEnded,
        Reason::Manual => pb::ChangeReason::Manual,
        Reason::AssignmentEnded => pb::ChangeReason::AssignmentEnded,
        Reason::PointsReversed => pb::ChangeReason::PointsReversed,
    }
}
