//! The `points.expiring_soon` reminder: once per lot (per customer and
//! expiry instant), the program's `expiry_reminder_days` before the points
//! expire, with the points still expiring then. The instants come from the
//! ledger's earns (the follower keeps them); what is left of them is asked
//! of the points service when the reminder is due, so points spent or
//! reversed meanwhile are not announced. Replicas may run the job at once
//! and restart at any time: a reminder's event is recorded under its
//! instant's key, so it is recorded once.

use std::sync::Arc;
use std::time::Duration;

use loyalty_common::clock::{MICROS_PER_DAY, Micros, from_timestamp, to_timestamp};
use loyalty_common::peer::PeerChannel;
use loyalty_common::shutdown::ShutdownSignal;
use loyalty_proto::points::v1 as points;
use loyalty_proto::points::v1::points_service_client::PointsServiceClient;

use crate::jobs::{self, JobError};
use crate::service::Webhooks;
use crate::store::{EXPIRING_SOON, Expiring, NewEvent};

/// The lead when a program names none (as the points service says).
const DEFAULT_REMINDER_DAYS: i32 = 14;
/// Instants handled per program and step.
const BATCH: i64 = 200;

/// Runs the reminders every `interval` until shutdown.
pub async fn run(
    webhooks: Arc<Webhooks>,
    points: PointsServiceClient<PeerChannel>,
    interval: Duration,
    shutdown: ShutdownSignal,
) {
    let stop = shutdown.clone();
    let round = || remind(&webhooks, points.clone(), || stop.is_fired());
    jobs::every(&webhooks, "expiring points reminders", interval, shutdown, round).await;
}

/// Records every reminder due now; returns the deliveries made.
pub async fn remind(
    webhooks: &Webhooks,
    mut points: PointsServiceClient<PeerChannel>,
    stop: impl Fn() -> bool,
) -> Result<usize, JobError> {
    let store = webhooks.store();
    let mut made = 0;
    for program in store.reminder_programs().await? {
        let request = points::GetProgramSettingsRequest { program_id: program.clone() };
        let settings = points.get_program_settings(request).await?.into_inner().settings.unwrap_or_default();
        let days = match settings.expiry_reminder_days {
            0 => DEFAULT_REMINDER_DAYS,
            days => days,
        };
        loop {
            let now = store.now();
            let due = store.due_reminders(&program, now + i64::from(days) * MICROS_PER_DAY, BATCH).await?;
            let mut events = Vec::new();
            for instant in &due {
                let left = left_at(&mut points, instant, now).await?;
                if left > 0 {
                    events.push(reminder(instant, left, days, now));
                }
            }
            made += store.record_reminders(&events, &due).await?;
            if (due.len() as i64) < BATCH || stop() {
                break;
            }
        }
    }
    Ok(made)
}

/// The points still expiring at the instant, as the points service tells.
async fn left_at(
    points: &mut PointsServiceClient<PeerChannel>,
    instant: &Expiring,
    now: Micros,
) -> Result<i64, tonic::Status> {
    let ahead = instant.expires_at - now;
    let within = prost_types::Duration { seconds: ahead.div_euclid(1_000_000) + 1, nanos: 0 };
    let request = points::GetExpiringPointsRequest {
        program_id: instant.program_id.clone(),
        customer_id: instant.customer_id.clone(),
        within: Some(within),
    };
    let answer = points.get_expiring_points(request).await?.into_inner();
    Ok(answer
        .expiring
        .iter()
        .filter(|e| e.expires_at.as_ref().and_then(from_timestamp) == Some(instant.expires_at))
        .map(|e| e.points)
        .sum())
}

fn reminder(instant: &Expiring, points: i64, days: i32, now: Micros) -> NewEvent {
    NewEvent {
        program_id: instant.program_id.clone(),
        event_type: EXPIRING_SOON,
        customer_id: instant.customer_id.clone(),
        source: "reminders",
        source_position: format!("{}/{}/{}", instant.program_id, instant.customer_id, instant.expires_at),
        occurred_at: now,
        data: serde_json::json!({
            "customer_id": instant.customer_id,
            "points": points,
            "expires_at": to_timestamp(instant.expires_at).to_string(),
            "reminder_days": days,
        }),
    }
}
