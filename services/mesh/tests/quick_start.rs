//! The README's quick start: the mesh binary starts on a fresh data
//! directory with no servers, prints where to call, answers the calls it
//! prints, and exits 0 on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

use loyalty_proto::points::v1 as pb;
use loyalty_proto::points::v1::points_service_client::PointsServiceClient;
use loyalty_proto::referral::v1 as referral;
use loyalty_proto::referral::v1::referral_service_client::ReferralServiceClient;
use loyalty_proto::tiers::v1 as tiers;
use loyalty_proto::tiers::v1::tiers_service_client::TiersServiceClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_starts_on_embedded_storage_and_answers_the_printed_calls() {
    let data_dir = std::env::temp_dir().join(format!("loyalty-mesh-test-{}", std::process::id()));
    let stderr_path = data_dir.with_extension("stderr");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    // Every listener on port 0: the mesh binds what the kernel gives and prints the
    // addresses it got, so no port picked here can be taken before the mesh binds it.
    let mut command = Command::new(env!("CARGO_BIN_EXE_loyalty-mesh"));
    for service in ["POINTS", "TIERS", "REFERRAL", "REWARDS", "INSIGHTS", "WEBHOOKS"] {
        command.env(format!("{service}_GRPC_ADDR"), "127.0.0.1:0");
        command.env(format!("{service}_METRICS_ADDR"), "127.0.0.1:0");
    }
    let mut child = command
        .env("LOYALTY_DATA_DIR", &data_dir)
        .env("GATEWAY_HTTP_ADDR", "127.0.0.1:0")
        .env("GATEWAY_METRICS_ADDR", "127.0.0.1:0")
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("mesh binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let banner: Vec<String> =
        (&mut lines).map(Result::unwrap).take_while(|line| !line.starts_with("stop with ctrl-c")).collect();
    let log = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(banner.first().is_some_and(|l| l.starts_with("loyalty mesh is up")), "{banner:?}\n{}", log());
    let address = |service: &str, label: &str| -> std::net::SocketAddr {
        let line = banner
            .iter()
            .find(|l| l.trim_start().starts_with(service))
            .unwrap_or_else(|| panic!("{service} in the banner: {banner:?}"));
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words.iter().position(|w| *w == label).unwrap_or_else(|| panic!("{label} in {line}"));
        words[at + 1].trim_start_matches("http://").parse().unwrap_or_else(|e| panic!("{line}: {e}"))
    };
    let (grpc, tiers_grpc) = (address("points", "grpc"), address("tiers", "grpc"));
    let (referral_grpc, rewards_grpc) = (address("referral", "grpc"), address("rewards", "grpc"));
    let gateway_http = address("gateway", "gateway");
    assert_ne!(grpc.port(), 0, "the banner shows the bound port, not the one asked for");
    assert!(banner.iter().any(|l| l.contains("PointsService/Earn")), "{banner:?}");
    assert!(banner.iter().any(|l| l.contains(&format!("grpc {rewards_grpc}"))), "{banner:?}");
    let insights_grpc = address("insights", "grpc");
    assert_ne!(insights_grpc.port(), 0, "the insights service is in the quick start: {banner:?}");
    let webhooks_grpc = address("webhooks", "grpc");
    assert_ne!(webhooks_grpc.port(), 0, "the webhooks service is in the quick start: {banner:?}");
    assert!(banner.iter().any(|l| l.starts_with("AUTH REQUIRED")), "the banner says calls need a key: {banner:?}");
    let key_line = banner.iter().find(|l| l.contains("shown once")).expect("an admin key is printed");
    let key = key_line.rsplit(' ').next().unwrap().to_owned();
    let console = banner.iter().find(|l| l.starts_with("  admin console http://")).expect("the console's address");
    assert!(console.contains(&format!("/admin#key={key} ")), "signed in by its link with the same key: {console}");
    let authorization: tonic::metadata::MetadataValue<_> = format!("Bearer {key}").parse().unwrap();
    let with_key = move |mut request: tonic::Request<()>| {
        request.metadata_mut().insert("authorization", authorization.clone());
        Ok(request)
    };

    let mut anonymous = PointsServiceClient::connect(format!("http://{grpc}")).await.unwrap();
    let refused = anonymous
        .get_balance(pb::GetBalanceRequest { program_id: "demo".into(), customer_id: "anna".into() })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "the services check callers by default");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}")).unwrap().connect().await.unwrap();
    let mut client = PointsServiceClient::with_interceptor(channel, with_key.clone());
    let earned = client
        .earn(pb::EarnRequest {
            program_id: "demo".into(),
            customer_id: "anna".into(),
            points: 120,
            reason: "order 1001".into(),
            idempotency_key: "order-1001".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(earned.balance.unwrap().available, 120);
    let balance = client
        .get_balance(pb::GetBalanceRequest { program_id: "demo".into(), customer_id: "anna".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(balance.balance.unwrap().available, 120);
    assert!(data_dir.join("points.db").exists());
    // The tiers service follows the points ledger it was wired to.
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{tiers_grpc}")).unwrap().connect().await.unwrap();
    let mut tiers = TiersServiceClient::with_interceptor(channel, with_key.clone());
    let mut counted = 0;
    for _ in 0..250 {
        let request = tiers::GetMembershipRequest { program_id: "demo".into(), customer_id: "anna".into() };
        counted = tiers.get_membership(request).await.unwrap().into_inner().membership.unwrap().qualifying_points;
        if counted == 120 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(counted, 120, "tiers counted the earn");
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{referral_grpc}")).unwrap().connect().await.unwrap();
    let mut referral = ReferralServiceClient::with_interceptor(channel, with_key);
    let code = referral
        .get_or_create_code(referral::GetOrCreateCodeRequest { program_id: "demo".into(), customer_id: "anna".into() })
        .await
        .unwrap()
        .into_inner()
        .code;
    assert_eq!(code.len(), 8, "the referral service answers: {code}");

    // The printed key works on the gateway, which reaches the services.
    let page = http_get(gateway_http, "/v1/customers/anna/loyalty", &key);
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("\"available\":120"), "{page}");

    let killed = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(killed.success());
    // Wait off the runtime, so the still-open client connection can answer the server's GOAWAY.
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert!(status.success(), "exit on SIGTERM: {status:?}");
    let _ = std::fs::remove_dir_all(data_dir);
    let _ = std::fs::remove_file(stderr_path);
}

/// A bare HTTP/1.1 GET, so the test needs no HTTP client library.
fn http_get(addr: std::net::SocketAddr, path: &str, key: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}
