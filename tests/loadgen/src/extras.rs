//! The services in front of points that redeem, loyalty-page and mixed
//! use: the rewards service and, for loyalty-page, the HTTP gateway with
//! tiers and referral behind it too (all four services, as deployed),
//! started in this process on SQLite files of their own, and a minimal
//! HTTP/1.1 keep-alive client for the gateway (one connection per client,
//! one request in flight).

use loyalty_common::server::{RunningService, Service as _};
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tonic::transport::Channel;

use loyalty_proto::rewards::v1 as rpb;
use loyalty_proto::rewards::v1::rewards_service_client::RewardsServiceClient;

use crate::workload::REWARD_COST;
use crate::{Plan, RunError};

/// The rewards service (and, for loyalty-page, tiers, referral and the gateway) of one run.
pub struct Extras {
    pub rewards_addr: SocketAddr,
    pub rewards: RewardsServiceClient<Channel>,
    /// The reward every redeem asks for.
    pub reward_id: String,
    /// Gateway address and a fresh admin key of the run's program.
    pub gateway: Option<(SocketAddr, String)>,
    rewards_server: RunningService,
    gateway_server: Option<loyalty_gateway::GatewayServer>,
    /// loyalty-page's tiers and referral services, behind the gateway.
    tiers: Option<Tiers>,
    referral: Option<(SocketAddr, RunningService)>,
    dir: PathBuf,
    /// The rewards service's own PostgreSQL database, dropped at the end.
    rewards_database: Option<(String, String)>,
}

impl Extras {
    /// `points`: `host:port` of the points service. `postgres`: the points
    /// service's PostgreSQL database, when it has one: the rewards service
    /// then gets a database of its own on the same server (created here,
    /// dropped at `stop`), as deployed; otherwise a SQLite file.
    pub async fn start(
        plan: &Plan,
        points: &str,
        max_connections: u32,
        gateway: bool,
        postgres: Option<&str>,
    ) -> Result<Self, RunError> {
        let dir = std::env::temp_dir().join(format!("loadgen-extras-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).map_err(|e| RunError::Failed(format!("{}: {e}", dir.display())))?;
        let rewards_database = match postgres {
            Some(url) => {
                let name = format!("loadgen_rewards_{}", plan.run_id);
                admin_execute(url, &format!("CREATE DATABASE {name}")).await?;
                Some((url.to_owned(), name))
            }
            None => None,
        };
        // loyalty-page: tiers first, so that rewards (and the gateway) can be pointed at it.
        let tiers = if gateway { Some(Tiers::start(plan).await?) } else { None };
        let tiers_addr = tiers.as_ref().map(|t| t.addr.to_string());
        let rewards_url = match &rewards_database {
            Some((url, name)) => crate::baseline::database_url(url, name),
            None => format!("sqlite://{}/rewards.db", dir.display()),
        };
        let pool = max_connections.to_string();
        // Callers of this rewards service are not checked; it presents the run's service identity to points.
        let mut argv = vec![
            "loyalty-rewards",
            "--auth",
            "off",
            "--database-url",
            &rewards_url,
            "--database-max-connections",
            &pool,
            "--metrics-addr",
            "127.0.0.1:0",
            "--points-addr",
            points,
        ];
        if let Some(secret) = &plan.service_secret {
            argv.extend(["--service-secret", secret]);
        }
        if let Some(tiers) = &tiers_addr {
            argv.extend(["--tiers-addr", tiers]);
        }
        let config = loyalty_rewards::Config::try_parse_from(argv)
            .map_err(|e| RunError::Usage(format!("rewards service settings: {e}")))?;
        let listener = bind().await?;
        let rewards_addr = listener.local_addr().map_err(|e| RunError::Failed(e.to_string()))?;
        let rewards_server = loyalty_rewards::RewardsServer::start(config, listener, None)
            .await
            .map_err(|e| RunError::Failed(format!("rewards service did not start: {e}")))?;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{rewards_addr}"))
            .map_err(|e| RunError::Failed(e.to_string()))?
            .tcp_nodelay(true)
            .timeout(crate::client::CALL_TIMEOUT)
            .connect()
            .await
            .map_err(|e| RunError::Failed(format!("cannot connect to the rewards service: {e:?}")))?;
        let mut rewards = RewardsServiceClient::new(channel);
        let reward = rpb::Reward {
            name: "loadgen reward".into(),
            kind: rpb::RewardKind::FreeShipping as i32,
            point_cost: REWARD_COST,
            voucher_validity_days: 30,
            ..Default::default()
        };
        let reward_id = rewards
            .create_reward(rpb::CreateRewardRequest {
                program_id: plan.program.clone(),
                reward: Some(reward),
                actor: "loadgen".into(),
                idempotency_key: format!("{}-reward", plan.run_id),
            })
            .await
            .map_err(crate::rpc_failed("CreateReward"))?
            .into_inner()
            .reward
            .map(|r| r.reward_id)
            .unwrap_or_default();
        eprintln!("rewards service in process on {rewards_addr} (reward {reward_id}, {REWARD_COST} points)");

        let mut extras = Self {
            rewards_addr,
            rewards,
            reward_id,
            gateway: None,
            rewards_server,
            gateway_server: None,
            tiers,
            referral: None,
            dir,
            rewards_database,
        };
        if gateway && let Err(error) = extras.start_gateway(plan, points).await {
            extras.stop().await;
            return Err(error);
        }
        Ok(extras)
    }

    async fn start_gateway(&mut self, plan: &Plan, points: &str) -> Result<(), RunError> {
        // The referral service on a SQLite file of its own. Like tiers, it
        // does not follow the ledger (no `POINTS_ADDR`): the page reads
        // codes (created on a customer's first page) and stats only.
        let url = format!("sqlite://{}/referral.db", self.dir.display());
        let argv = ["loyalty-referral", "--auth", "off", "--database-url", &url, "--metrics-addr", "127.0.0.1:0"];
        let config = loyalty_referral::Config::try_parse_from(argv)
            .map_err(|e| RunError::Usage(format!("referral service settings: {e}")))?;
        let listener = bind().await?;
        let referral_addr = listener.local_addr().map_err(|e| RunError::Failed(e.to_string()))?;
        let referral = loyalty_referral::ReferralServer::start(config, listener, None)
            .await
            .map_err(|e| RunError::Failed(format!("referral service did not start: {e}")))?;
        eprintln!("referral service in process on {referral_addr}");
        self.referral = Some((referral_addr, referral));

        let mut config =
            loyalty_gateway::Config::from_env().map_err(|e| RunError::Usage(format!("gateway settings: {e}")))?;
        let listener = bind().await?;
        let addr = listener.local_addr().map_err(|e| RunError::Failed(e.to_string()))?;
        config.http_addr = addr;
        config.metrics_addr = "127.0.0.1:0".parse().expect("static address");
        config.points_addr = points.to_owned();
        config.tiers_addr = self.tiers.as_ref().map(|t| t.addr.to_string());
        config.referral_addr = Some(referral_addr.to_string());
        config.rewards_addr = Some(self.rewards_addr.to_string());
        config.database.url = format!("sqlite://{}/gateway.db", self.dir.display());
        config.rate_limit_per_sec = 0;
        config.service_secret = plan.service_secret.clone();
        let keys = loyalty_gateway::keys::KeyStore::open(&config.database.url, 2)
            .await
            .map_err(|e| RunError::Failed(format!("gateway key store: {e}")))?;
        let key = keys
            .create(&plan.program, loyalty_gateway::keys::Scope::Admin, "loadgen")
            .await
            .map_err(|e| RunError::Failed(format!("gateway key: {e}")))?
            .key;
        let server = loyalty_gateway::GatewayServer::start(config, listener)
            .await
            .map_err(|e| RunError::Failed(format!("gateway did not start: {e}")))?;
        eprintln!("gateway in process on http://{addr} (points, tiers, referral, rewards)");
        self.gateway = Some((server.bind_addr(), key));
        self.gateway_server = Some(server);
        Ok(())
    }

    pub async fn stop(self) {
        if let Some(gateway) = self.gateway_server
            && let Err(error) = gateway.shutdown().await
        {
            eprintln!("loadgen: gateway shutdown: {error}");
        }
        if let Err(error) = self.rewards_server.shutdown().await {
            eprintln!("loadgen: rewards service shutdown: {error}");
        }
        if let Some((_, referral)) = self.referral
            && let Err(error) = referral.shutdown().await
        {
            eprintln!("loadgen: referral service shutdown: {error}");
        }
        if let Some(tiers) = self.tiers {
            tiers.stop().await;
        }
        let _ = std::fs::remove_dir_all(self.dir);
        if let Some((url, name)) = self.rewards_database
            && let Err(error) = admin_execute(&url, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await
        {
            eprintln!("loadgen: {error}");
        }
    }
}

/// One statement outside a transaction (CREATE or DROP DATABASE) on the server of `url`.
async fn admin_execute(url: &str, statement: &str) -> Result<(), RunError> {
    use sqlx::Executor;
    let fail = |e: sqlx::Error| RunError::Failed(format!("rewards database ({statement}): {e}"));
    let admin = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(url).await.map_err(fail)?;
    let result = admin.execute(sqlx::AssertSqlSafe(statement.to_owned())).await;
    admin.close().await;
    result.map(drop).map_err(fail)
}

/// order-earn's and loyalty-page's tiers service: in this process on a
/// SQLite file of its own, with a three-tier ladder (1x, 1.25x, 1.5x) on the
/// run's program, so that points asks it for every order's tier (order-earn)
/// and the page shows a tier. It does not follow the ledger (no
/// `POINTS_ADDR`): every customer stays on the first tier, which prices the
/// same way as any other.
pub struct Tiers {
    pub addr: SocketAddr,
    server: RunningService,
    dir: PathBuf,
}

impl Tiers {
    pub async fn start(plan: &Plan) -> Result<Self, RunError> {
        use loyalty_proto::tiers::v1 as tpb;

        let dir = std::env::temp_dir().join(format!("loadgen-tiers-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).map_err(|e| RunError::Failed(format!("{}: {e}", dir.display())))?;
        let url = format!("sqlite://{}/tiers.db", dir.display());
        let argv = ["loyalty-tiers", "--auth", "off", "--database-url", &url, "--metrics-addr", "127.0.0.1:0"];
        let config = loyalty_tiers::Config::try_parse_from(argv)
            .map_err(|e| RunError::Usage(format!("tiers service settings: {e}")))?;
        let listener = bind().await?;
        let addr = listener.local_addr().map_err(|e| RunError::Failed(e.to_string()))?;
        let server = loyalty_tiers::TiersServer::start(config, listener, None)
            .await
            .map_err(|e| RunError::Failed(format!("tiers service did not start: {e}")))?;
        let tiers = Self { addr, server, dir };
        let tier = |id: &str, threshold: i64, multiplier_bp: i32| tpb::Tier {
            tier_id: id.into(),
            name: id.into(),
            threshold,
            multiplier_bp,
            ..Default::default()
        };
        let ladder = tpb::Ladder {
            tiers: vec![tier("bronze", 0, 10_000), tier("silver", 300, 12_500), tier("gold", 1_000, 15_000)],
            window: Some(tpb::Window { kind: tpb::WindowKind::RollingDays as i32, days: 365 }),
            downgrade: Some(tpb::DowngradePolicy { kind: tpb::DowngradeKind::Immediate as i32, grace_days: 0 }),
            version: 0,
            qualification_basis: tpb::QualificationBasis::OrderPointsAll as i32,
        };
        let put = async {
            let mut client =
                loyalty_proto::tiers::v1::tiers_service_client::TiersServiceClient::connect(format!("http://{addr}"))
                    .await
                    .map_err(|e| RunError::Failed(format!("cannot connect to the tiers service: {e}")))?;
            client
                .put_ladder(tpb::PutLadderRequest {
                    program_id: plan.program.clone(),
                    ladder: Some(ladder),
                    actor: "loadgen".into(),
                    idempotency_key: format!("{}-ladder", plan.run_id),
                    expected_version: None,
                })
                .await
                .map_err(crate::rpc_failed("PutLadder"))
        };
        if let Err(error) = put.await {
            tiers.stop().await;
            return Err(error);
        }
        eprintln!("tiers service in process on {addr} (ladder bronze 1x / silver 1.25x / gold 1.5x)");
        Ok(tiers)
    }

    pub async fn stop(self) {
        if let Err(error) = self.server.shutdown().await {
            eprintln!("loadgen: tiers service shutdown: {error}");
        }
        let _ = std::fs::remove_dir_all(self.dir);
    }
}

async fn bind() -> Result<tokio::net::TcpListener, RunError> {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| RunError::Failed(format!("cannot bind 127.0.0.1:0: {e}")))
}

/// One HTTP/1.1 keep-alive connection to the gateway, reopened after an error.
pub struct PageClient {
    addr: SocketAddr,
    authorization: String,
    conn: Option<BufReader<TcpStream>>,
    line: String,
    body: Vec<u8>,
}

impl PageClient {
    pub fn new(addr: SocketAddr, key: &str) -> Self {
        Self { addr, authorization: format!("Bearer {key}"), conn: None, line: String::new(), body: Vec::new() }
    }

    /// GET `path`: the status code, after the whole body was read.
    pub async fn get(&mut self, path: &str) -> Result<u16, String> {
        let result = self.exchange(path).await;
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    async fn exchange(&mut self, path: &str) -> Result<u16, String> {
        if self.conn.is_none() {
            let stream = TcpStream::connect(self.addr).await.map_err(|e| format!("connect: {}", e.kind()))?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            self.conn = Some(BufReader::new(stream));
        }
        let conn = self.conn.as_mut().expect("connected");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nAccept: application/json\r\n\r\n",
            self.addr, self.authorization
        );
        conn.get_mut().write_all(request.as_bytes()).await.map_err(|e| format!("write: {}", e.kind()))?;
        self.line.clear();
        conn.read_line(&mut self.line).await.map_err(|e| format!("read: {}", e.kind()))?;
        let status: u16 = self
            .line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("bad status line {:?}", self.line.trim_end()))?;
        let mut length = None;
        let mut chunked = false;
        let mut close = false;
        loop {
            self.line.clear();
            if conn.read_line(&mut self.line).await.map_err(|e| format!("read: {}", e.kind()))? == 0 {
                return Err("connection closed in the headers".into());
            }
            let header = self.line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse::<usize>().ok();
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = value.eq_ignore_ascii_case("chunked");
                } else if name.eq_ignore_ascii_case("connection") {
                    close = value.eq_ignore_ascii_case("close");
                }
            }
        }
        if chunked {
            loop {
                self.line.clear();
                conn.read_line(&mut self.line).await.map_err(|e| format!("read: {}", e.kind()))?;
                let size = usize::from_str_radix(self.line.trim_end().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| format!("bad chunk size {:?}", self.line.trim_end()))?;
                self.body.resize(size + 2, 0);
                conn.read_exact(&mut self.body).await.map_err(|e| format!("read: {}", e.kind()))?;
                if size == 0 {
                    break;
                }
            }
        } else {
            self.body.resize(length.unwrap_or(0), 0);
            conn.read_exact(&mut self.body).await.map_err(|e| format!("read: {}", e.kind()))?;
        }
        if close {
            self.conn = None;
        }
        Ok(status)
    }
}
