//! Where each consumer of the points ledger stands, on `/metrics`: the
//! points service's `ledger_stream_head` and every follower's
//! `stream_consumer_position`, `stream_consumer_connected` and
//! `stream_consumer_entry_timestamp_seconds`, moving as orders are placed;
//! and every service's database pool. A follower cut off from the stream
//! says so, and falls behind by what was written meanwhile, then catches up.

mod support;

use std::time::Duration;

use loyalty_gateway::keys::Scope;
use support::{Harness, Options, Relay, eventually};

const FOLLOWERS: [&str; 5] = ["tiers", "referral", "rewards", "insights", "webhooks"];

/// The value of the first sample of `name` (with `labels`, e.g. `{consumer="tiers"}`), if any.
fn sample(text: &str, name: &str, labels: &str) -> Option<i64> {
    let prefix = format!("{name}{labels} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|v| v as i64)
}

async fn head(h: &Harness) -> i64 {
    sample(&h.service_metrics("points").await, "ledger_stream_head", "")
        .expect("ledger_stream_head on points' /metrics")
}

/// Every follower has applied up to `head` and is connected.
async fn caught_up(h: &Harness, head: i64) -> bool {
    for follower in FOLLOWERS {
        let text = h.service_metrics(follower).await;
        let label = format!("{{consumer=\"{follower}\"}}");
        if sample(&text, "stream_consumer_position", &label) != Some(head)
            || sample(&text, "stream_consumer_connected", &label) != Some(1)
        {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_follower_reports_its_place_in_the_ledger_stream() {
    let h = Harness::start().await;
    let server = h.key("shop", Scope::Server).await;
    let started = head(&h).await;
    for n in 0..3 {
        h.order(&server, "anna", &format!("o-{n}"), 5_000).await.ok();
    }
    assert!(
        eventually(Duration::from_secs(10), || async { head(&h).await >= started + 3 }).await,
        "the head moves with the orders"
    );
    let moved = head(&h).await;
    assert!(
        eventually(Duration::from_secs(15), || async { caught_up(&h, moved).await }).await,
        "every follower reaches the head {moved} and says it is connected"
    );
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    // Rewards asks for reversals only: its position moves on the stream's word, its entry time does not.
    for follower in FOLLOWERS.into_iter().filter(|f| *f != "rewards") {
        let text = h.service_metrics(follower).await;
        let label = format!("{{consumer=\"{follower}\"}}");
        let written = sample(&text, "stream_consumer_entry_timestamp_seconds", &label).expect("the entry's time");
        assert!(
            (now - 60..=now + 1).contains(&written),
            "{follower}: the last entry applied was written now: {written}"
        );
    }
    // Every service reports its pool: the configured size, and connections by state.
    for service in ["points"].into_iter().chain(FOLLOWERS) {
        let text = h.service_metrics(service).await;
        let max = sample(&text, "db_pool_max_connections", "").expect("db_pool_max_connections");
        let idle = sample(&text, "db_pool_connections", "{state=\"idle\"}").expect("idle connections");
        let in_use = sample(&text, "db_pool_connections", "{state=\"in_use\"}").expect("connections in use");
        assert!(max >= 1 && (0..=max).contains(&(idle + in_use)), "{service}: {max} {idle} {in_use}");
    }
    let points = h.service_metrics("points").await;
    assert_eq!(sample(&points, "db_pool_max_connections", ""), Some(8), "the harness gives points 8");
    // The gateway's key store too.
    let gateway = h.metrics_text().await;
    assert_eq!(sample(&gateway, "db_pool_max_connections", ""), Some(4), "the harness gives the gateway 4");
    assert!(sample(&gateway, "db_pool_connections", "{state=\"idle\"}").is_some(), "{gateway}");
    // Rewards counts its unsettled redemptions (none here, once its first count ran).
    let settled = || async {
        let rewards = h.service_metrics("rewards").await;
        sample(&rewards, "redemptions_pending", "") == Some(0)
            && sample(&rewards, "redemptions_pending_oldest_age_seconds", "") == Some(0)
    };
    assert!(eventually(Duration::from_secs(10), settled).await, "redemptions_pending on rewards' /metrics");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_cut_off_from_the_stream_falls_behind_and_says_so() {
    let relay = Relay::start().await;
    let options = Options { follower_points_addr: Some(relay.addr.to_string()), ..Options::default() };
    let h = Harness::start_with(options).await;
    relay.point_at(h.points_grpc_addr());
    let server = h.key("shop", Scope::Server).await;
    h.order(&server, "anna", "before", 5_000).await.ok();
    let before = head(&h).await;
    assert!(
        eventually(Duration::from_secs(15), || async { caught_up(&h, before).await }).await,
        "every follower reaches the head {before} through the relay"
    );

    relay.cut();
    let disconnected = || async {
        for follower in FOLLOWERS {
            let text = h.service_metrics(follower).await;
            let label = format!("{{consumer=\"{follower}\"}}");
            if sample(&text, "stream_consumer_connected", &label) != Some(0) {
                return false;
            }
        }
        true
    };
    // Rewards asks once a second: it notices at its next ask.
    assert!(eventually(Duration::from_secs(10), disconnected).await, "every follower says it lost the stream");
    for n in 0..4 {
        h.order(&server, "anna", &format!("during-{n}"), 5_000).await.ok();
    }
    let moved = head(&h).await;
    assert!(moved >= before + 4, "the head moves without the followers: {before} -> {moved}");
    // Entries behind: the head minus where each follower stands, for as long as the cut lasts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for follower in FOLLOWERS {
        let text = h.service_metrics(follower).await;
        let label = format!("{{consumer=\"{follower}\"}}");
        let position = sample(&text, "stream_consumer_position", &label).expect("a position");
        assert!(moved - position >= 4, "{follower} stands at {position}, the head at {moved}");
        assert_eq!(sample(&text, "stream_consumer_connected", &label), Some(0), "{follower}");
    }

    relay.restore();
    assert!(
        eventually(Duration::from_secs(20), || async { caught_up(&h, moved).await }).await,
        "every follower catches up with {moved} once the stream is back"
    );
    h.stop().await;
}
