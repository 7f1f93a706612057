//! The Redis connection: one multiplexed, self-reconnecting connection per
//! process, to one server or to a Redis Cluster.
//!
//! `REDIS_URL` is either one server, `redis://[user:password@]host:port[/db]`,
//! or the seed nodes of a cluster,
//! `redis+cluster://[user:password@]host:port[,host:port...]`: the client
//! learns the rest of the cluster from them and follows its topology (slot
//! moves, a replica promoted). Keys that must be read together carry one
//! hash tag (`{...}`), so each lives in one slot.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// The scheme that names a cluster's seed nodes.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// A connection to one Redis server or to a Redis Cluster. Cheap to clone:
/// clones share the underlying connections.
#[derive(Clone)]
pub enum Connection {
    Single(ConnectionManager),
    Cluster(Cluster),
}

/// How often a cluster connection may be made anew.
const RENEW_AT_MOST_EVERY: Duration = Duration::from_secs(1);

/// A cluster connection that can be made anew. The client follows the
/// topology when the cluster tells it (MOVED, a refused node), but once its
/// requests to a lost primary only time out it may never ask again; a new
/// connection reads the topology from the seed nodes.
#[derive(Clone)]
pub struct Cluster(Arc<ClusterShared>);

struct ClusterShared {
    client: ClusterClient,
    config: ClusterConfig,
    current: RwLock<(ClusterConnection, Instant)>,
}

impl Cluster {
    fn connection(&self) -> ClusterConnection {
        self.0.current.read().expect("cluster lock").0.clone()
    }
}

/// Connects lazily, so a service starts (and serves from its database) while
/// Redis is down; the connection reconnects on its own when Redis comes back.
/// Every command is bounded by `response_timeout`, so a dead Redis costs a
/// caller at most about that long before it falls back to the database.
pub fn connect(url: &str, response_timeout: Duration) -> Result<Connection, redis::RedisError> {
    if let Some(nodes) = cluster_nodes(url)? {
        // Few retries, each bounded: a primary that died must surface as an
        // error (the cache then stops trusting Redis until it has checked the
        // new primary), not be waited out inside the client.
        let client = ClusterClient::builder(nodes)
            .retries(1)
            .min_retry_wait(10)
            .max_retry_wait(200)
            .connection_timeout(response_timeout)
            .response_timeout(response_timeout)
            .overall_response_timeout(Some(response_timeout * 3))
            .build()?;
        let config =
            ClusterConfig::new().set_connection_timeout(response_timeout).set_response_timeout(response_timeout);
        let connection = client.get_pending_async_connection_with_config(config.clone());
        let current = RwLock::new((connection, Instant::now()));
        return Ok(Connection::Cluster(Cluster(Arc::new(ClusterShared { client, config, current }))));
    }
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(response_timeout))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(200));
    Ok(Connection::Single(ConnectionManager::new_lazy_with_config(client, config)?))
}

/// The seed nodes of a `redis+cluster://` URL as `redis://` URLs (the user
/// and password of the URL given to each), or `None` for a single server.
pub fn cluster_nodes(url: &str) -> Result<Option<Vec<String>>, redis::RedisError> {
    let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) else { return Ok(None) };
    let (credentials, hosts) = match rest.rsplit_once('@') {
        Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
        None => (String::new(), rest),
    };
    let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
    let nodes: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| format!("redis://{credentials}{h}"))
        .collect();
    // A path (a database number) means nothing to a cluster.
    if nodes.is_empty() || hosts.contains('/') {
        return Err(redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "a redis+cluster:// URL lists host:port seed nodes separated by commas, with no database number",
        )));
    }
    Ok(Some(nodes))
}

impl Connection {
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// After a failure, on a cluster: makes the connection anew (at most
    /// once a second), so that a topology the client stopped following
    /// (a replica promoted while requests to the lost primary timed out) is
    /// read again from the seed nodes. Nothing on one server, whose
    /// connection reconnects by itself.
    pub fn renew(&self) {
        if let Self::Cluster(cluster) = self {
            let shared = &cluster.0;
            let mut current = shared.current.write().expect("cluster lock");
            if current.1.elapsed() >= RENEW_AT_MOST_EVERY {
                *current =
                    (shared.client.get_pending_async_connection_with_config(shared.config.clone()), Instant::now());
            }
        }
    }

    /// Runs `cmd` on every primary (the one server when not a cluster);
    /// each primary's address (`host:port`) with its answer.
    pub async fn on_each_primary(&mut self, cmd: &Cmd) -> redis::RedisResult<Vec<(String, Value)>> {
        match self {
            Self::Single(conn) => {
                let value = cmd.query_async::<Value>(conn).await?;
                Ok(vec![(String::new(), value)])
            }
            Self::Cluster(cluster) => {
                let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                let answers = cluster.connection().route_command(cmd.clone(), routing).await?;
                let Value::Map(answers) = answers else {
                    return Err(unexpected("a map of answers by node", &answers));
                };
                answers
                    .into_iter()
                    .map(|(node, value)| match node {
                        Value::BulkString(bytes) => Ok((String::from_utf8_lossy(&bytes).into_owned(), value)),
                        Value::SimpleString(text) => Ok((text, value)),
                        other => Err(unexpected("a node address", &other)),
                    })
                    .collect()
            }
        }
    }

    /// Runs `cmd` on the node `address` (as [`Self::on_each_primary`] names
    /// it); on a single server, on that server.
    pub async fn on_node(&mut self, address: &str, cmd: &Cmd) -> redis::RedisResult<Value> {
        match self {
            Self::Single(conn) => cmd.query_async::<Value>(conn).await,
            Self::Cluster(cluster) => {
                let (host, port) = address
                    .rsplit_once(':')
                    .and_then(|(host, port)| Some((host.to_owned(), port.parse::<u16>().ok()?)))
                    .ok_or_else(|| {
                        redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "a node address is host:port"))
                    })?;
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
                cluster.connection().route_command(cmd.clone(), routing).await
            }
        }
    }
}

impl Connection {
    /// Runs single-key commands together: one pipeline on one server; on a
    /// cluster, sent at once and routed each to its slot's primary (a
    /// cluster pipeline must stay within one slot), so they cost one round
    /// trip per primary either way.
    pub async fn run_each(&self, commands: Vec<Cmd>) -> redis::RedisResult<()> {
        if commands.is_empty() {
            return Ok(());
        }
        let mut conn = self.clone();
        if conn.is_cluster() {
            let each = commands.into_iter().map(|command| {
                let mut conn = conn.clone();
                async move { command.query_async::<()>(&mut conn).await }
            });
            return futures::future::join_all(each).await.into_iter().collect();
        }
        let mut pipe = redis::pipe();
        for command in commands {
            pipe.add_command(command).ignore();
        }
        pipe.query_async::<()>(&mut conn).await
    }

    /// Deletes every key matching `pattern` (a `SCAN MATCH` pattern), on
    /// every primary; returns how many it deleted.
    pub async fn delete_matching(&self, pattern: &str) -> redis::RedisResult<u64> {
        let mut conn = self.clone();
        let mut deleted = 0;
        for (node, _) in conn.on_each_primary(&redis::cmd("PING")).await? {
            let mut cursor: u64 = 0;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(1000);
                let (next, keys): (u64, Vec<String>) =
                    redis::FromRedisValue::from_redis_value(conn.on_node(&node, &scan).await?)?;
                deleted += keys.len() as u64;
                let deletes = keys
                    .iter()
                    .map(|key| {
                        let mut delete = redis::cmd("DEL");
                        delete.arg(key);
                        delete
                    })
                    .collect();
                self.run_each(deletes).await?;
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(deleted)
    }
}

fn unexpected(wanted: &'static str, got: &Value) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, wanted, format!("{got:?}")))
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(cluster) => {
                let mut conn = cluster.connection();
                Box::pin(async move { conn.req_packed_command(cmd).await })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(cluster) => {
                let mut conn = cluster.connection();
                Box::pin(async move { conn.req_packed_commands(pipeline, offset, count).await })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(cluster) => cluster.connection().get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_server_url_is_not_a_cluster() {
        assert_eq!(cluster_nodes("redis://127.0.0.1:6379/0").unwrap(), None);
    }

    #[test]
    fn cluster_seed_nodes_each_get_the_credentials() {
        assert_eq!(
            cluster_nodes("redis+cluster://u:p@10.0.0.1:7000,10.0.0.2:7001/").unwrap(),
            Some(vec!["redis://u:p@10.0.0.1:7000".to_owned(), "redis://u:p@10.0.0.2:7001".to_owned()])
        );
        assert_eq!(cluster_nodes("redis+cluster://a:7000").unwrap(), Some(vec!["redis://a:7000".to_owned()]));
    }

    #[test]
    fn a_cluster_url_without_nodes_or_with_a_database_is_refused() {
        assert!(cluster_nodes("redis+cluster://").is_err());
        assert!(cluster_nodes("redis+cluster://a:7000/3").is_err());
    }
}
