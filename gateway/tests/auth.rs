//! Credentials and TLS end to end: all four services and the gateway,
//! started as in production (`LOYALTY_AUTH=required`, TLS with mutual TLS
//! between services, certificates from a CA made for the test), called over
//! real gRPC and HTTPS with keys from the shared key store.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use tonic::{Code, Status};

use loyalty_common::auth::keys::{KeyStore, Scope};
use loyalty_common::auth::{AuthArgs, SecurityArgs};
use loyalty_common::peer::{PeerChannel, Peers};
use loyalty_common::server::{RunningService, Service as _};
use loyalty_common::telemetry::{LogFormat, TelemetryArgs};
use loyalty_common::testing::{self, Backend, Sandbox};
use loyalty_common::tls::{Tls, TlsArgs};
use loyalty_gateway::GatewayServer;
use loyalty_points::PointsServer;
use loyalty_proto::points::v1 as points;
use loyalty_proto::points::v1::points_service_client::PointsServiceClient;
use loyalty_proto::referral::v1 as referral;
use loyalty_proto::referral::v1::referral_service_client::ReferralServiceClient;
use loyalty_proto::rewards::v1 as rewards;
use loyalty_proto::rewards::v1::rewards_service_client::RewardsServiceClient;
use loyalty_proto::tiers::v1 as tiers;
use loyalty_proto::tiers::v1::tiers_service_client::TiersServiceClient;
use loyalty_referral::ReferralServer;
use loyalty_rewards::RewardsServer;
use loyalty_tiers::TiersServer;
use tokio::net::TcpListener;

const SECRET: &str = "auth-test-service-secret-0123456789abcdef";
const PROGRAM: &str = "shop-a";
const OTHER_PROGRAM: &str = "shop-b";

/// Test certificates: one CA, one certificate for every listener (server and client use).
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        leaf.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &ca).unwrap();
        // A second CA nobody trusts, for a client that is not one of ours.
        let stranger_ca = CertifiedIssuer::self_signed(
            {
                let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
                p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                p
            },
            KeyPair::generate().unwrap(),
        )
        .unwrap();
        let stranger_key = KeyPair::generate().unwrap();
        let stranger = leaf.signed_by(&stranger_key, &stranger_ca).unwrap();
        for (name, pem) in [
            ("ca.pem", ca.pem()),
            ("cert.pem", cert.pem()),
            ("key.pem", key.serialize_pem()),
            ("stranger-cert.pem", stranger.pem()),
            ("stranger-key.pem", stranger_key.serialize_pem()),
        ] {
            std::fs::write(dir.join(name), pem).unwrap();
        }
        Self { dir: dir.to_owned() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Serve TLS, demand client certificates from our CA, call peers over TLS.
    fn args(&self) -> TlsArgs {
        TlsArgs {
            tls_cert: Some(self.path("cert.pem")),
            tls_key: Some(self.path("key.pem")),
            tls_client_ca: Some(self.path("ca.pem")),
            tls_ca: Some(self.path("ca.pem")),
        }
    }

    /// The same, as every service's flags.
    fn flags(&self) -> Vec<String> {
        let args = self.args();
        let path = |p: Option<PathBuf>| p.unwrap().display().to_string();
        vec![
            "--tls-cert".into(),
            path(args.tls_cert),
            "--tls-key".into(),
            path(args.tls_key),
            "--tls-client-ca".into(),
            path(args.tls_client_ca),
            "--tls-ca".into(),
            path(args.tls_ca),
        ]
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }

    /// What an integrator's client presents: our CA to trust, a client certificate for mutual TLS.
    fn client(&self, cert: &str, key: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.read("ca.pem")))
            .identity(Identity::from_pem(self.read(cert), self.read(key)))
    }
}

struct Harness {
    points: RunningService,
    tiers: RunningService,
    referral: RunningService,
    rewards: RunningService,
    gateway: GatewayServer,
    keys: KeyStore,
    pki: Pki,
    sandbox: Sandbox,
}

fn telemetry() -> TelemetryArgs {
    TelemetryArgs { log_format: LogFormat::Text, log_filter: "warn".into() }
}

impl Harness {
    async fn start() -> Self {
        let mut sandbox = Sandbox::new(Backend::Sqlite, 0).on_wall_clock();
        let pki = Pki::new(&sandbox.dir.join("tls"));
        let keys_url = format!("sqlite://{}", sandbox.dir.join("keys.db").display());
        let keys = KeyStore::open(&keys_url, 2).await.expect("key store opens");
        sandbox.check_callers(&keys_url, SECRET);
        sandbox.every_service(pki.flags());
        sandbox.every_service(["--database-max-connections".to_owned(), "4".to_owned()]);
        let listen = || async { TcpListener::bind("127.0.0.1:0").await.unwrap() };
        let (points_l, tiers_l, referral_l, rewards_l) =
            (listen().await, listen().await, listen().await, listen().await);
        let addr = |l: &TcpListener| l.local_addr().unwrap().to_string();
        let (points_addr, tiers_addr) = (addr(&points_l), addr(&tiers_l));
        let (referral_addr, rewards_addr) = (addr(&referral_l), addr(&rewards_l));
        let [points_url, tiers_url, referral_url, rewards_url] = ["points", "tiers", "referral", "rewards"]
            .map(|name| format!("sqlite://{}/{name}.db", sandbox.dir.display()));

        let points_args = ["--tiers-addr", &tiers_addr, "--tiers-timeout-ms", "2000", "--expiry-interval-secs", "3600"];
        let points = sandbox.start_on::<PointsServer>(points_l, &points_url, &points_args).await;
        let tiers_args =
            ["--points-addr", &points_addr, "--review-interval-secs", "3600", "--multiplier-cache-ttl-ms", "1000"];
        let tiers = sandbox.start_on::<TiersServer>(tiers_l, &tiers_url, &tiers_args).await;
        let referral =
            sandbox.start_on::<ReferralServer>(referral_l, &referral_url, &["--points-addr", &points_addr]).await;
        let rewards_args = ["--points-addr", &points_addr, "--tiers-addr", &tiers_addr];
        let rewards = sandbox.start_on::<RewardsServer>(rewards_l, &rewards_url, &rewards_args).await;
        let mut gateway_config = loyalty_gateway::Config::from_env().unwrap();
        gateway_config.http_addr = "127.0.0.1:0".parse().unwrap();
        gateway_config.metrics_addr = "127.0.0.1:0".parse().unwrap();
        gateway_config.points_addr = points_addr;
        gateway_config.tiers_addr = Some(tiers_addr);
        gateway_config.referral_addr = Some(referral_addr);
        gateway_config.rewards_addr = Some(rewards_addr);
        gateway_config.database.url = keys_url;
        gateway_config.service_secret = Some(SECRET.into());
        gateway_config.tls = pki.args();
        gateway_config.telemetry = telemetry();
        let gateway = GatewayServer::start(gateway_config, listen().await).await.expect("gateway starts");
        Self { points, tiers, referral, rewards, gateway, keys, pki, sandbox }
    }

    async fn key(&self, program: &str, scope: Scope) -> String {
        self.keys.create(program, scope, "auth test").await.unwrap().key
    }

    /// A channel to `addr` over mutual TLS with our certificate, presenting `token` (if any).
    async fn channel(&self, addr: std::net::SocketAddr, token: Option<&str>) -> PeerChannel {
        let peers = match token {
            Some(token) => Peers::with_token(token).unwrap(),
            None => Peers::anonymous(),
        };
        let peers = peers.over(Tls::load(&self.pki.args()).unwrap());
        let channel = peers.endpoint(&addr.to_string()).unwrap().connect().await.expect("TLS connection");
        peers.attach(channel)
    }

    async fn stop(self) {
        self.gateway.shutdown().await.unwrap();
        self.rewards.shutdown().await.unwrap();
        self.referral.shutdown().await.unwrap();
        self.tiers.shutdown().await.unwrap();
        self.points.shutdown().await.unwrap();
        self.sandbox.stop().await;
    }
}

/// One service's probes: a read a server key may make, and an admin call.
#[derive(Clone, Copy, Debug)]
enum Service {
    Points,
    Tiers,
    Referral,
    Rewards,
}

impl Service {
    const ALL: [Service; 4] = [Self::Points, Self::Tiers, Self::Referral, Self::Rewards];

    fn addr(self, harness: &Harness) -> std::net::SocketAddr {
        match self {
            Self::Points => harness.points.bind_addr(),
            Self::Tiers => harness.tiers.bind_addr(),
            Self::Referral => harness.referral.bind_addr(),
            Self::Rewards => harness.rewards.bind_addr(),
        }
    }

    /// A read that needs the server scope, for `program`.
    async fn read(self, harness: &Harness, token: Option<&str>, program: &str) -> Result<(), Status> {
        let channel = harness.channel(self.addr(harness), token).await;
        let (program_id, customer_id) = (program.to_owned(), "anna".to_owned());
        match self {
            Self::Points => PointsServiceClient::new(channel)
                .get_balance(points::GetBalanceRequest { program_id, customer_id })
                .await
                .map(drop),
            Self::Tiers => {
                match TiersServiceClient::new(channel)
                    .get_membership(tiers::GetMembershipRequest { program_id, customer_id })
                    .await
                {
                    // No ladder yet: the call got through to the handler.
                    Err(status) if status.code() == Code::FailedPrecondition || status.code() == Code::NotFound => {
                        Ok(())
                    }
                    other => other.map(drop),
                }
            }
            Self::Referral => ReferralServiceClient::new(channel)
                .get_referral_stats(referral::GetReferralStatsRequest { program_id, customer_id })
                .await
                .map(drop),
            Self::Rewards => RewardsServiceClient::new(channel)
                .list_rewards(rewards::ListRewardsRequest { program_id, ..Default::default() })
                .await
                .map(drop),
        }
    }

    /// A call that needs the admin scope, for `program`.
    async fn admin(self, harness: &Harness, token: Option<&str>, program: &str) -> Result<(), Status> {
        let channel = harness.channel(self.addr(harness), token).await;
        let program_id = program.to_owned();
        let reached_handler = |result: Result<(), Status>| match result {
            // Nothing configured yet for the program: the call got past the checks.
            Err(status) if matches!(status.code(), Code::NotFound | Code::FailedPrecondition) => Ok(()),
            other => other,
        };
        match self {
            Self::Points => PointsServiceClient::new(channel)
                .get_program_settings(points::GetProgramSettingsRequest { program_id })
                .await
                .map(drop),
            Self::Tiers => reached_handler(
                TiersServiceClient::new(channel).get_ladder(tiers::GetLadderRequest { program_id }).await.map(drop),
            ),
            Self::Referral => ReferralServiceClient::new(channel)
                .get_referral_settings(referral::GetReferralSettingsRequest { program_id })
                .await
                .map(drop),
            Self::Rewards => reached_handler(
                RewardsServiceClient::new(channel)
                    .archive_reward(rewards::ArchiveRewardRequest {
                        program_id,
                        reward_id: "no-such-reward".into(),
                        actor: String::new(),
                        idempotency_key: testing::unique_suffix(),
                    })
                    .await
                    .map(drop),
            ),
        }
    }
}

#[track_caller]
fn refused(result: Result<(), Status>, code: Code, service: Service, case: &str) {
    match result {
        Err(status) => assert_eq!(status.code(), code, "{service:?}, {case}: {status:?}"),
        Ok(()) => panic!("{service:?}, {case}: should be refused with {code:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_refuses_each_bad_credential_with_its_own_code_and_takes_the_right_key() {
    let harness = Harness::start().await;
    let server = harness.key(PROGRAM, Scope::Server).await;
    let admin = harness.key(PROGRAM, Scope::Admin).await;
    let storefront = harness.key(PROGRAM, Scope::Storefront).await;
    let other_program = harness.key(OTHER_PROGRAM, Scope::Admin).await;
    let revoked = harness.keys.create(PROGRAM, Scope::Admin, "to revoke").await.unwrap();
    assert!(harness.keys.revoke(&revoked.key_id).await.unwrap());
    // Well-formed, but the secret half is not the key's.
    let wrong = format!("{}{}", &server[..server.len() - 4], if server.ends_with("0000") { "1111" } else { "0000" });
    let forged_service = format!("svc.gateway.{}", "ab".repeat(32));

    for service in Service::ALL {
        refused(service.read(&harness, None, PROGRAM).await, Code::Unauthenticated, service, "no key");
        refused(service.read(&harness, Some(&wrong), PROGRAM).await, Code::Unauthenticated, service, "wrong key");
        refused(service.read(&harness, Some("lk_nonsense"), PROGRAM).await, Code::Unauthenticated, service, "garbage");
        refused(service.read(&harness, Some(&revoked.key), PROGRAM).await, Code::Unauthenticated, service, "revoked");
        refused(
            service.read(&harness, Some(&forged_service), PROGRAM).await,
            Code::Unauthenticated,
            service,
            "forged service identity",
        );
        refused(
            service.read(&harness, Some(&other_program), PROGRAM).await,
            Code::PermissionDenied,
            service,
            "another program's key",
        );
        refused(service.read(&harness, Some(&server), "").await, Code::PermissionDenied, service, "no program");
        refused(
            service.admin(&harness, Some(&storefront), PROGRAM).await,
            Code::PermissionDenied,
            service,
            "storefront key on an admin RPC",
        );
        refused(
            service.admin(&harness, Some(&server), PROGRAM).await,
            Code::PermissionDenied,
            service,
            "server key on an admin RPC",
        );
        refused(
            service.read(&harness, Some(&storefront), PROGRAM).await,
            Code::PermissionDenied,
            service,
            "storefront read",
        );
        service
            .read(&harness, Some(&server), PROGRAM)
            .await
            .unwrap_or_else(|s| panic!("{service:?} server key: {s:?}"));
        service.read(&harness, Some(&admin), PROGRAM).await.unwrap_or_else(|s| panic!("{service:?} admin key: {s:?}"));
        service.admin(&harness, Some(&admin), PROGRAM).await.unwrap_or_else(|s| panic!("{service:?} admin RPC: {s:?}"));
        // The other program's key works for its own program.
        service.read(&harness, Some(&other_program), OTHER_PROGRAM).await.unwrap();
    }
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_rpcs_refuse_keys_and_services_call_each_other_over_mutual_tls() {
    let harness = Harness::start().await;
    let admin_key = harness.keys.create(PROGRAM, Scope::Admin, "ops").await.unwrap();
    let admin = admin_key.key.clone();
    let server = harness.key(PROGRAM, Scope::Server).await;

    let mut points_admin = PointsServiceClient::new(harness.channel(harness.points.bind_addr(), Some(&admin)).await);
    let stream = points_admin.stream_events(points::StreamEventsRequest {
        after_sequence: 0,
        program_id: PROGRAM.into(),
        ..Default::default()
    });
    assert_eq!(stream.await.unwrap_err().code(), Code::PermissionDenied, "the ledger stream is internal");
    let expiry = points_admin.run_expiry(points::RunExpiryRequest { program_id: PROGRAM.into() }).await;
    assert_eq!(expiry.unwrap_err().code(), Code::PermissionDenied, "expiry runs are internal");
    let mut tiers_admin = TiersServiceClient::new(harness.channel(harness.tiers.bind_addr(), Some(&admin)).await);
    let multiplier = tiers_admin
        .get_multiplier(tiers::GetMultiplierRequest {
            program_id: PROGRAM.into(),
            customer_id: "anna".into(),
            at: None,
        })
        .await;
    assert_eq!(multiplier.unwrap_err().code(), Code::PermissionDenied, "multipliers are for the points service");
    // Every program's events: for the webhooks service only.
    let events = tiers_admin.list_events(tiers::ListEventsRequest { after_sequence: 0, page_size: 0 }).await;
    assert_eq!(events.unwrap_err().code(), Code::PermissionDenied, "the tiers outbox is internal");

    // Another service's RPC on a port is not a question of keys: it is not served there.
    for key in [Some(admin.as_str()), None] {
        let mut tiers_on_points = TiersServiceClient::new(harness.channel(harness.points.bind_addr(), key).await);
        let wrong_port = tiers_on_points
            .get_membership(tiers::GetMembershipRequest { program_id: PROGRAM.into(), customer_id: "anna".into() })
            .await
            .unwrap_err();
        assert_eq!(wrong_port.code(), Code::Unimplemented, "{wrong_port:?}");
        assert!(wrong_port.message().contains("this port serves loyalty.points.v1.PointsService"), "{wrong_port:?}");
    }

    // A redemption: rewards asks tiers and spends on points with its own identity, over mutual TLS.
    let mut points_server = PointsServiceClient::new(harness.channel(harness.points.bind_addr(), Some(&server)).await);
    points_server
        .earn(points::EarnRequest {
            program_id: PROGRAM.into(),
            customer_id: "anna".into(),
            points: 500,
            reason: "welcome".into(),
            idempotency_key: "earn-1".into(),
            ..Default::default()
        })
        .await
        .expect("a server key earns");
    let mut rewards_admin = RewardsServiceClient::new(harness.channel(harness.rewards.bind_addr(), Some(&admin)).await);
    let events = rewards_admin.list_events(rewards::ListEventsRequest { after_sequence: 0, page_size: 0 }).await;
    assert_eq!(events.unwrap_err().code(), Code::PermissionDenied, "the rewards outbox is internal");
    let mut referral_admin =
        ReferralServiceClient::new(harness.channel(harness.referral.bind_addr(), Some(&admin)).await);
    let events = referral_admin.list_events(referral::ListEventsRequest { after_sequence: 0, page_size: 0 }).await;
    assert_eq!(events.unwrap_err().code(), Code::PermissionDenied, "the referral outbox is internal");
    let reward = rewards_admin
        .create_reward(rewards::CreateRewardRequest {
            program_id: PROGRAM.into(),
            reward: Some(rewards::Reward {
                name: "Five off".into(),
                kind: rewards::RewardKind::FixedDiscount as i32,
                amount_minor: 500,
                currency: "EUR".into(),
                point_cost: 200,
                voucher_validity_days: 90,
                ..Default::default()
            }),
            actor: "claimed-by-the-caller".into(),
            idempotency_key: "reward-1".into(),
        })
        .await
        .expect("an admin key creates a reward")
        .into_inner()
        .reward
        .unwrap();
    let mut rewards_server =
        RewardsServiceClient::new(harness.channel(harness.rewards.bind_addr(), Some(&server)).await);
    let redemption = rewards_server
        .redeem(rewards::RedeemRequest {
            program_id: PROGRAM.into(),
            customer_id: "anna".into(),
            reward_id: reward.reward_id.clone(),
            idempotency_key: "redeem-1".into(),
        })
        .await
        .expect("the redemption spends on points with the rewards service's identity")
        .into_inner();
    let redemption = redemption.redemption.unwrap();
    assert!(!redemption.voucher_code.is_empty());
    let balance = points_server
        .get_balance(points::GetBalanceRequest { program_id: PROGRAM.into(), customer_id: "anna".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(balance.balance.unwrap().available, 300);

    // An admin cancels the voucher: the refund reaches points with the rewards service's
    // identity, and the ledger records the admin's key as the one who caused it.
    rewards_admin
        .cancel_redemption(rewards::CancelRedemptionRequest {
            program_id: PROGRAM.into(),
            redemption_id: redemption.redemption_id,
            idempotency_key: "cancel-1".into(),
            actor: "someone else".into(),
        })
        .await
        .expect("an admin key cancels");
    let history = points_server
        .list_transactions(points::ListTransactionsRequest {
            program_id: PROGRAM.into(),
            customer_id: "anna".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let refund = history.entries.iter().find(|e| e.kind == points::EntryKind::Restore as i32).expect("refunded");
    assert_eq!((refund.points, refund.actor.as_str()), (200, format!("api-key:{}", admin_key.key_id).as_str()));
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adjustments_record_the_key_that_made_them_whatever_the_request_claims() {
    let harness = Harness::start().await;
    let admin = harness.keys.create(PROGRAM, Scope::Admin, "ops").await.unwrap();
    let mut client = PointsServiceClient::new(harness.channel(harness.points.bind_addr(), Some(&admin.key)).await);
    client
        .adjust(points::AdjustRequest {
            program_id: PROGRAM.into(),
            customer_id: "anna".into(),
            points: 40,
            reason: "goodwill".into(),
            idempotency_key: "adjust-1".into(),
            actor: "somebody-else".into(),
            ..Default::default()
        })
        .await
        .expect("an admin key adjusts");
    let history = client
        .list_transactions(points::ListTransactionsRequest {
            program_id: PROGRAM.into(),
            customer_id: "anna".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let actors: Vec<&str> = history.entries.iter().map(|e| e.actor.as_str()).collect();
    assert_eq!(actors, [format!("api-key:{}", admin.key_id)]);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_over_https_and_a_direct_grpc_call_accept_the_same_key() {
    let harness = Harness::start().await;
    let key = harness.key(PROGRAM, Scope::Server).await;
    let mut points = PointsServiceClient::new(harness.channel(harness.points.bind_addr(), Some(&key)).await);
    points
        .earn(points::EarnRequest {
            program_id: PROGRAM.into(),
            customer_id: "anna".into(),
            points: 120,
            reason: "order 1".into(),
            idempotency_key: "order-1".into(),
            ..Default::default()
        })
        .await
        .expect("the key works on gRPC");

    let ca = reqwest::Certificate::from_pem(&harness.pki.read("ca.pem")).unwrap();
    let https = reqwest::Client::builder().add_root_certificate(ca).build().unwrap();
    let url = format!("https://localhost:{}/v1/customers/anna/transactions", harness.gateway.bind_addr().port());
    let answer = https.get(&url).bearer_auth(&key).send().await.expect("HTTPS answers");
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
    assert_eq!(body["entries"][0]["points"], 120, "{body:#}");
    let refused = https.get(&url).bearer_auth(format!("{key}x")).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    // The metrics listeners serve TLS too, with readiness for probes that cannot speak gRPC over TLS.
    for metrics in [harness.points.metrics_addr(), harness.rewards.metrics_addr(), harness.gateway.metrics_addr()] {
        let scrape = https.get(format!("https://localhost:{}/metrics", metrics.port())).send().await.unwrap();
        assert_eq!(scrape.status(), 200, "{metrics}");
    }
    let ready = https.get(format!("https://localhost:{}/readyz", harness.points.metrics_addr().port())).send().await;
    assert_eq!(ready.unwrap().status(), 200, "points is serving");
    // Plain HTTP to the TLS port gets no answer.
    let plain = format!("http://127.0.0.1:{}/healthz", harness.gateway.bind_addr().port());
    let answered = reqwest::Client::new().get(plain).send().await.is_ok_and(|r| r.status().is_success());
    assert!(!answered, "plain HTTP on the TLS port gets no answer");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_turns_away_plain_text_and_clients_without_our_certificate() {
    let harness = Harness::start().await;
    let key = harness.key(PROGRAM, Scope::Server).await;
    let uri = format!("https://127.0.0.1:{}", harness.points.bind_addr().port());
    let request = || points::GetBalanceRequest { program_id: PROGRAM.into(), customer_id: "anna".into() };
    let call = |channel: tonic::transport::Channel, key: String| async move {
        let peers = Peers::with_token(&key).unwrap();
        PointsServiceClient::new(peers.attach(channel)).get_balance(request()).await.map(drop)
    };

    let ours = tonic::transport::Endpoint::from_shared(uri.clone())
        .unwrap()
        .tls_config(harness.pki.client("cert.pem", "key.pem"))
        .unwrap();
    call(ours.connect().await.unwrap(), key.clone()).await.expect("our certificate and the key");

    let stranger = tonic::transport::Endpoint::from_shared(uri.clone())
        .unwrap()
        .tls_config(harness.pki.client("stranger-cert.pem", "stranger-key.pem"))
        .unwrap();
    let refused = match stranger.connect().await {
        Ok(channel) => call(channel, key.clone()).await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "a client certificate from another CA is refused");

    let no_cert = tonic::transport::Endpoint::from_shared(uri)
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(harness.pki.read("ca.pem"))))
        .unwrap();
    let refused = match no_cert.connect().await {
        Ok(channel) => call(channel, key.clone()).await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "a client without a certificate is refused");

    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", harness.points.bind_addr())).unwrap();
    let refused = match plain.connect().await {
        Ok(channel) => call(channel, key).await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "plain text is refused");
    harness.stop().await;
}

/// Every RPC of every service has an entry in its service's access table,
/// and every RPC open to API keys keeps `program_id` in field 1 of its
/// request, where the auth layer reads it.
#[test]
fn every_rpc_has_an_access_rule_and_keyed_rpcs_carry_program_id_in_field_one() {
    use loyalty_common::auth::{Access, Policy};
    use prost::Message;
    use prost_types::field_descriptor_proto::Type;

    let policies: [Policy; 7] = [
        loyalty_points::POLICY,
        loyalty_tiers::POLICY,
        loyalty_referral::POLICY,
        loyalty_rewards::POLICY,
        loyalty_insights::POLICY,
        loyalty_webhooks::POLICY,
        // Served by every one of them.
        loyalty_common::privacy::POLICY,
    ];
    let shared = loyalty_common::auth::SHARED.iter();
    assert!(shared.clone().all(|s| policies.iter().any(|p| p.service == s.service)), "shared policies are checked");
    let set = prost_types::FileDescriptorSet::decode(loyalty_proto::FILE_DESCRIPTOR_SET).unwrap();
    let messages: std::collections::HashMap<String, &prost_types::DescriptorProto> = set
        .file
        .iter()
        .flat_map(|file| file.message_type.iter().map(move |m| (format!(".{}.{}", file.package(), m.name()), m)))
        .collect();
    let mut checked = 0;
    for file in &set.file {
        for service in &file.service {
            let full_name = format!("{}.{}", file.package(), service.name());
            let policy = policies
                .iter()
                .find(|p| p.service == full_name)
                .unwrap_or_else(|| panic!("{full_name} has no access table"));
            assert_eq!(policy.methods.len(), service.method.len(), "{full_name}: one rule per RPC, no stale rules");
            for method in &service.method {
                let path = format!("/{full_name}/{}", method.name());
                let access = policy.access(&path).unwrap_or_else(|| panic!("{path} has no access rule"));
                if let Access::Key(_) = access {
                    let input = messages[method.input_type()];
                    let field = input.field.iter().find(|f| f.number() == 1);
                    assert!(
                        field.is_some_and(|f| f.name() == "program_id" && f.r#type() == Type::String),
                        "{path}: field 1 of {} must be `string program_id`",
                        method.input_type()
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 54, "every RPC of the five services is checked, got {checked}");
}

/// A points service alone, on a SQLite file in `dir`, with `security`, in plain text.
async fn lone_points(dir: &Path, security: SecurityArgs) -> RunningService {
    let url = format!("sqlite://{}", dir.join("points.db").display());
    let flags = ["--expiry-interval-secs", "3600", "--database-max-connections", "4"];
    let mut config = Sandbox::config::<PointsServer>(&url, &flags);
    config.security = security;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    PointsServer::start(config, listener, None).await.expect("points starts")
}

/// GetBalance on `addr` presenting `token`.
async fn balance_with(addr: std::net::SocketAddr, token: &str) -> Result<(), Status> {
    let peers = Peers::with_token(token).unwrap();
    let channel = peers.endpoint(&addr.to_string()).unwrap().connect().await.unwrap();
    let request = points::GetBalanceRequest { program_id: PROGRAM.into(), customer_id: "anna".into() };
    PointsServiceClient::new(peers.attach(channel)).get_balance(request).await.map(drop)
}

/// Rotating the service secret: while a service accepts the old and the new
/// secret, tokens from both work, and nothing else does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_rotation_both_service_secrets_are_accepted() {
    use loyalty_common::auth::ServiceSecret;
    let dir = std::env::temp_dir().join(format!("loyalty-auth-rotate-{}", testing::unique_suffix()));
    let (old, new) = ("old-service-secret-0123456789abcdef", "new-service-secret-0123456789abcdef");
    let keys_url = format!("sqlite://{}", dir.join("keys.db").display());
    let mut auth = AuthArgs::required(&keys_url, new);
    auth.accepted_service_secrets = vec![old.to_owned()];
    let points = lone_points(&dir, SecurityArgs { auth, tls: TlsArgs::default() }).await;
    let addr = points.bind_addr();
    balance_with(addr, &ServiceSecret::new(new).unwrap().token("gateway")).await.expect("the new secret");
    balance_with(addr, &ServiceSecret::new(old).unwrap().token("gateway")).await.expect("the old secret");
    let other = ServiceSecret::new("some-other-secret-0123456789abcdef").unwrap().token("gateway");
    assert_eq!(balance_with(addr, &other).await.unwrap_err().code(), Code::Unauthenticated);
    points.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// The key store down: a service still starts and still answers other
/// services (their identity needs no store), and a key it has not cached is
/// answered UNAVAILABLE, not let through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_key_store_a_service_starts_answers_services_and_refuses_keys_as_unavailable() {
    let dir = std::env::temp_dir().join(format!("loyalty-auth-nostore-{}", testing::unique_suffix()));
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let auth = AuthArgs::required(&format!("postgres://postgres@{closed}/keys"), SECRET);
    let points = lone_points(&dir, SecurityArgs { auth, tls: TlsArgs::default() }).await;
    let service_token = loyalty_common::auth::ServiceSecret::new(SECRET).unwrap().token("gateway");
    balance_with(points.bind_addr(), &service_token).await.expect("a service's call needs no key store");
    let key = format!("lk_{}_{}", "1".repeat(16), "2".repeat(64));
    let refused = balance_with(points.bind_addr(), &key).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    points.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
