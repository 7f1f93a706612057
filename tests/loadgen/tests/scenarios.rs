//! Every implemented scenario, briefly, against the points service started
//! in process on embedded SQLite, plus the bare tonic baseline. Checks that
//! load flowed and the ledger adds up; never how fast anything was.

use clap::{CommandFactory, Parser};
use loyalty_loadgen::Args;
use loyalty_loadgen::report::Report;

async fn short_run(scenario: &str, extra: &[&str]) -> Report {
    let mut argv = vec![
        "loadgen",
        "--scenario",
        scenario,
        "--start-points",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--concurrency",
        "4",
        "--customers",
        "200",
        "--baselines",
        "tonic",
    ];
    argv.extend_from_slice(extra);
    let args = Args::try_parse_from(argv).expect("arguments parse");
    loyalty_loadgen::run(args).await.expect("the run completes")
}

fn assert_healthy(report: &Report) {
    let service = &report.service;
    assert!(service.answered > 0, "no call answered: {report}");
    assert!(service.throughput_rps > 0.0, "{report}");
    assert!(service.errors.is_empty(), "unexpected errors {:?}: {report}", service.errors);
    assert!(report.correctness.ok, "{}", report.correctness.summary());
    assert_eq!(report.correctness.overdrafts, 0);
    assert!(report.correctness.accounts_checked > 0, "{report}");
    let tonic = report
        .baselines
        .iter()
        .find(|b| b.name == "tonic")
        .and_then(|b| b.result.as_ref())
        .expect("tonic baseline measured");
    assert!(tonic.answered > 0 && tonic.errors.is_empty(), "{report}");
    assert!(report.startup.is_some_and(|s| s.ready_ms > 0.0));
    serde_json::to_string(report).expect("the report serialises");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balance_read_serves_seeded_balances() {
    let report = short_run("balance-read", &[]).await;
    assert_healthy(&report);
    assert_eq!(report.service.refused, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earn_writes_what_it_was_told() {
    // The balance-read reference seeds accounts the earns also touch.
    let report = short_run("earn", &["--baselines", "tonic,balance-read"]).await;
    assert_healthy(&report);
    assert!(report.correctness.acknowledged_compared);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_contended_never_overdraws() {
    let report = short_run("spend-contended", &[]).await;
    assert_healthy(&report);
    assert!(report.service.ok > 0, "no spend succeeded: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_runs_all_three_calls() {
    // Alternating with two baselines, one of them the same service.
    let report = short_run("mixed", &["--rounds", "2", "--baselines", "tonic,balance-read"]).await;
    assert_healthy(&report);
    let reference = report.baselines.iter().find(|b| b.name == "balance-read").and_then(|b| b.result.as_ref());
    assert!(reference.is_some_and(|r| r.answered > 0 && r.errors.is_empty()), "{report}");
    let ops: Vec<&str> = report.service.ops.iter().map(|o| o.name.as_str()).collect();
    assert!(ops.contains(&"GetBalance") && ops.contains(&"Earn"), "{ops:?}");
    assert!(report.notes.iter().any(|n| n.contains("real Redeem")), "{:?}", report.notes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeem_spends_cost_times_active_redemptions() {
    let report = short_run("redeem", &[]).await;
    assert_healthy(&report);
    assert!(report.service.ok > 0, "no redemption succeeded: {report}");
    assert!(report.correctness.acknowledged_compared);
    assert!(report.correctness.redemptions_checked > 0, "{}", report.correctness.summary());
    let ops: Vec<&str> = report.service.ops.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(ops, ["Redeem"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loyalty_page_is_served_through_the_gateway() {
    let report = short_run("loyalty-page", &["--baselines", "tonic,balance-read"]).await;
    assert_healthy(&report);
    assert_eq!(report.service.refused, 0);
    let reference = report.baselines.iter().find(|b| b.name == "balance-read").and_then(|b| b.result.as_ref());
    assert!(reference.is_some_and(|r| r.answered > 0 && r.errors.is_empty()), "{report}");
}

#[test]
fn help_lists_every_scenario() {
    let help = Args::command().render_long_help().to_string();
    for scenario in ["balance-read", "earn", "spend-contended", "mixed", "redeem", "loyalty-page"] {
        assert!(help.contains(scenario), "{scenario} missing from --help");
    }
}
