//! What every loyalty service repeats: typed config pieces, the clock,
//! telemetry, gRPC serving with health, reflection and graceful shutdown,
//! the database pool and migrations, the Redis connection, and the helpers
//! that turn domain errors into `tonic::Status`.

pub mod auth;
pub mod clock;
pub mod coalesce;
pub mod db;
pub mod follow;
pub mod idempotency;
pub mod metrics;
pub mod otlp_metrics;
pub mod otlp_sink;
pub mod outbox;
pub mod peer;
pub mod privacy;
pub mod redis;
pub mod server;
pub mod shutdown;
pub mod spans;
pub mod status;
pub mod telemetry;
pub mod testing;
pub mod throwaway;
pub mod tls;
pub mod validate;
