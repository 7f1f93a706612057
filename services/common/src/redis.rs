//! The Redis connection: one multiplexed, self-reconnecting connection per process.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Connects lazily, so a service starts (and serves from its database) while
/// Redis is down; the manager reconnects on its own when Redis comes back.
/// Every command is bounded by `response_timeout`, so a dead Redis costs a
/// caller at most that long before it falls back to the database.
pub fn connect(url: &str, response_timeout: Duration) -> Result<ConnectionManager, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(response_timeout))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(200));
    ConnectionManager::new_lazy_with_config(client, config)
}
