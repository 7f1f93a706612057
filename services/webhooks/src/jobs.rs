//! The webhooks service's periodic jobs (the expiring-points reminders, the
//! monthly statements, the segment changes): each round records events and
//! their deliveries; a round that made some wakes the dispatcher, a round
//! that failed is logged and retried at the next interval.

use std::future::Future;
use std::time::Duration;

use loyalty_common::shutdown::ShutdownSignal;

use crate::service::Webhooks;

/// Why a round failed: the store, or a peer service.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Store(#[from] crate::error::Error),
    #[error("a peer service: {0}")]
    Peer(#[from] tonic::Status),
}

/// Runs `round` every `interval` until shutdown; `job` names it in logs.
pub async fn every<F, Fut>(
    webhooks: &Webhooks,
    job: &'static str,
    interval: Duration,
    mut shutdown: ShutdownSignal,
    mut round: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<usize, JobError>>,
{
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.fired() => return,
        }
        match round().await {
            Ok(0) => {}
            Ok(made) => {
                tracing::info!(job, deliveries = made, "events recorded");
                webhooks.wake();
            }
            Err(error) => tracing::warn!(job, %error, "a round failed, retrying at the next interval"),
        }
    }
}
