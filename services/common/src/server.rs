//! gRPC serving as every service does it: health (`grpc.health.v1`, NOT_SERVING
//! until the service says its database answers, and again once shutdown
//! begins), reflection v1 and v1alpha (so grpcurl, ghz and Python grpcio work
//! without proto files), the per-RPC observer layer, and graceful shutdown
//! that stops accepting and lets in-flight calls finish.

use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::db::Database;
use crate::metrics::{Metrics, RpcObserverLayer};

/// Longest wait for in-flight calls after shutdown begins; Kubernetes'
/// default grace period is 30 s, so we close what is left before it kills us.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
use crate::shutdown::ShutdownSignal;

/// Health handle for one gRPC service name plus the overall ("") status.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    service_name: &'static str,
}

impl Health {
    pub async fn set(&self, serving: bool) {
        let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
        self.reporter.set_service_status("", status).await;
        self.reporter.set_service_status(self.service_name, status).await;
    }
}

/// The health service and its handle, NOT_SERVING until told otherwise.
pub async fn health(
    service_name: &'static str,
) -> (Health, tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>) {
    let (reporter, server) = tonic_health::server::health_reporter();
    let health = Health { reporter, service_name };
    health.set(false).await;
    (health, server)
}

/// Serves `routes` plus health and reflection on `listener` until `shutdown`
/// fires; then reports NOT_SERVING, stops accepting, and waits for in-flight calls.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    health: (Health, tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>),
    metrics: Metrics,
    mut shutdown: ShutdownSignal,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (health, health_server) = health;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(loyalty_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let routes = routes.add_service(health_server).add_service(reflection_v1).add_service(reflection_v1alpha);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut deadline = shutdown.clone();
    let signal = async move {
        shutdown.fired().await;
        health.set(false).await;
        tracing::info!("draining in-flight calls");
    };
    let serving = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .layer(RpcObserverLayer::new(metrics))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, signal);
    tokio::select! {
        served = serving => served?,
        () = async { deadline.fired().await; tokio::time::sleep(DRAIN_TIMEOUT).await } => {
            tracing::warn!(timeout = ?DRAIN_TIMEOUT, "drain timed out, closing the remaining connections");
        }
    }
    Ok(())
}

/// Keeps health in step with the database: NOT_SERVING while it does not answer.
pub async fn watch_database(database: Database, health: Health, mut shutdown: ShutdownSignal) {
    let mut serving = true;
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
            () = shutdown.fired() => return,
        }
        let up = crate::db::ping(&database).await;
        if up != serving && !shutdown.is_fired() {
            serving = up;
            health.set(up).await;
            if up {
                tracing::info!("database answers again, serving");
            } else {
                tracing::warn!("database does not answer, not serving");
            }
        }
    }
}
