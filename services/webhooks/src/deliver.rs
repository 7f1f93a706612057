//! Delivering: due deliveries are taken from the database with a lease,
//! attempted concurrently (at most `endpoint_concurrency` at a time per
//! subscription, `max_in_flight` in all), and how each went is written in
//! batches. A replica that dies mid-attempt leaves its deliveries leased;
//! when the lease ends they are due again, so every event is delivered at
//! least once. Replicas share the work: PostgreSQL hands each due delivery
//! to one of them (`FOR UPDATE SKIP LOCKED`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::redirect::Policy;
use tokio::sync::{Semaphore, mpsc};

use loyalty_common::clock::{MICROS_PER_DAY, MICROS_PER_SECOND, Micros};
use loyalty_common::shutdown::ShutdownSignal;

use crate::domain::{self, RetrySchedule};
use crate::guard::{AddressPolicy, Blocked, GuardedResolver};
use crate::service::Webhooks;
use crate::store::{Due, Outcome};

/// How much of an answer's body is kept.
const RESPONSE_SNIPPET_BYTES: usize = 1_024;
/// Deliveries taken from the database at once.
const TAKE_BATCH: i64 = 256;
/// Outcomes written in one transaction at most.
const WRITE_BATCH: usize = 500;
const RETRY: Duration = Duration::from_secs(1);

/// How deliveries are made.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub schedule: RetrySchedule,
    /// One attempt's deadline, connecting included.
    pub timeout: Duration,
    pub endpoint_concurrency: usize,
    pub max_in_flight: usize,
    /// An endpoint failing for this long is disabled.
    pub disable_after_days: i64,
    /// How often the database is asked for due deliveries when nothing wakes the dispatcher.
    pub poll_interval: Duration,
    /// How long a taken delivery stays this replica's before another may take it.
    pub lease: Duration,
    pub addresses: AddressPolicy,
    pub plain_http: bool,
}

/// The HTTP client of deliveries: no redirects, no proxies, bounded
/// timeouts, every address checked as it is resolved.
pub fn client(settings: &DeliverySettings) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .no_proxy()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!("loyalty-webhooks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(GuardedResolver { policy: settings.addresses.clone() }))
        .build()
}

/// Runs the dispatcher until shutdown.
pub async fn run(webhooks: Arc<Webhooks>, client: reqwest::Client, mut shutdown: ShutdownSignal) {
    let settings = webhooks.settings().clone();
    let in_flight = Arc::new(Semaphore::new(settings.max_in_flight.max(1)));
    let endpoints: Arc<Mutex<HashMap<String, Arc<Semaphore>>>> = Arc::default();
    let (outcomes, received) = mpsc::unbounded_channel::<Outcome>();
    let writer = tokio::spawn(write_outcomes(webhooks.clone(), received, shutdown.clone()));
    loop {
        let free = in_flight.available_permits();
        let taken = if free == 0 {
            Ok(Vec::new())
        } else {
            let lease = webhooks.store().now() + i64::try_from(settings.lease.as_micros()).unwrap_or(i64::MAX);
            webhooks.store().take_due(TAKE_BATCH.min(free as i64), lease).await
        };
        let taken = match taken {
            Ok(taken) => taken,
            Err(error) => {
                tracing::warn!(%error, "due deliveries could not be read, retrying");
                tokio::select! {
                    () = tokio::time::sleep(RETRY) => continue,
                    () = shutdown.fired() => break,
                }
            }
        };
        let full = taken.len() as i64 == TAKE_BATCH;
        // A delivery whose endpoint has no free turn is not queued here (its
        // lease would run out while it waits, and it would hold a turn of the
        // others): it goes back, due at once, and is taken again when an
        // attempt ends (the outcome writer wakes this loop).
        let mut busy = Vec::new();
        let mut started = 0;
        let lease = taken.first().map(|d| d.lease);
        for due in taken {
            let endpoint = endpoints
                .lock()
                .expect("never poisoned")
                .entry(due.subscription_id.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(settings.endpoint_concurrency.max(1))))
                .clone();
            let Ok(turn) = endpoint.try_acquire_owned() else {
                busy.push(due.delivery_seq);
                continue;
            };
            let permit = in_flight.clone().acquire_owned().await.expect("the semaphore is never closed");
            started += 1;
            let (client, webhooks, outcomes) = (client.clone(), webhooks.clone(), outcomes.clone());
            tokio::spawn(async move {
                let outcome = attempt(&client, &webhooks, due).await;
                let _ = outcomes.send(outcome);
                drop((turn, permit));
            });
        }
        if let (Some(lease), false) = (lease, busy.is_empty()) {
            if let Err(error) = webhooks.store().postpone(&busy, lease, webhooks.store().now()).await {
                tracing::warn!(%error, "busy endpoints' deliveries wait for their lease to end");
            }
        }
        if full && started > 0 && in_flight.available_permits() > 0 {
            continue;
        }
        tokio::select! {
            () = webhooks.woken() => {}
            () = tokio::time::sleep(settings.poll_interval) => {}
            _ = in_flight.acquire(), if in_flight.available_permits() == 0 => {}
            () = shutdown.fired() => break,
        }
    }
    // Attempts under way finish (each is bounded by the timeout) and are written.
    let _ = in_flight.acquire_many(settings.max_in_flight.max(1) as u32).await;
    drop(outcomes);
    let _ = writer.await;
}

/// Writes outcomes as they come, many per transaction, retrying while the
/// database is away (the leases keep the deliveries from being taken again).
async fn write_outcomes(
    webhooks: Arc<Webhooks>,
    mut received: mpsc::UnboundedReceiver<Outcome>,
    shutdown: ShutdownSignal,
) {
    let settings = webhooks.settings().clone();
    while let Some(first) = received.recv().await {
        let mut batch = vec![first];
        while batch.len() < WRITE_BATCH {
            match received.try_recv() {
                Ok(outcome) => batch.push(outcome),
                Err(_) => break,
            }
        }
        let rows: Vec<(Outcome, Option<Micros>)> = batch
            .into_iter()
            .map(|o| {
                let next = if o.delivered { None } else { settings.schedule.next(o.attempt as i32, o.attempted_at) };
                (o, next)
            })
            .collect();
        loop {
            let disable_before = webhooks.store().now() - settings.disable_after_days * MICROS_PER_DAY;
            match webhooks.store().write_outcomes(&rows, disable_before).await {
                Ok(written) => {
                    for subscription_id in written.disabled {
                        tracing::warn!(subscription_id, "subscription disabled: its endpoint failed for too long");
                    }
                    webhooks.wake();
                    break;
                }
                // Shutting down: what is not written is attempted again once its lease ends.
                Err(error) if shutdown.is_fired() => {
                    tracing::warn!(%error, outcomes = rows.len(), "delivery outcomes not written at shutdown");
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, outcomes = rows.len(), "delivery outcomes could not be written, retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }
}

/// One attempt: POST the signed body, keep the status, the time taken and
/// the first KiB of the answer.
async fn attempt(client: &reqwest::Client, webhooks: &Webhooks, due: Due) -> Outcome {
    let attempted_at = webhooks.store().now();
    let started = Instant::now();
    let mut outcome = Outcome {
        delivery_seq: due.delivery_seq,
        lease: due.lease,
        subscription_id: due.subscription_id.clone(),
        attempt: due.attempts + 1,
        attempted_at,
        status_code: 0,
        latency_ms: 0,
        response: String::new(),
        error: String::new(),
        delivered: false,
    };
    match send(client, webhooks, &due, attempted_at).await {
        Ok((status, snippet)) => {
            outcome.status_code = i64::from(status.as_u16());
            // PostgreSQL text holds no NUL: an endpoint's binary answer must not stop the writer.
            outcome.response = snippet.replace('\0', "");
            outcome.delivered = status.is_success();
            if status.is_redirection() {
                outcome.error = "redirects are not followed".into();
            }
        }
        Err(error) => outcome.error = error.replace('\0', ""),
    }
    outcome.latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    webhooks.count_attempt(outcome.delivered);
    outcome
}

async fn send(
    client: &reqwest::Client,
    webhooks: &Webhooks,
    due: &Due,
    attempted_at: Micros,
) -> Result<(reqwest::StatusCode, String), String> {
    let settings = webhooks.settings();
    // The URL was checked when it was saved; the operator's rules may have changed since.
    domain::check_url(&due.url, settings.plain_http)?;
    let url = reqwest::Url::parse(&due.url).map_err(|e| e.to_string())?;
    // An address written in the URL is not resolved, so it is checked here.
    let literal = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
        _ => None,
    };
    if let Some(ip) = literal
        && !settings.addresses.permits(ip)
    {
        return Err(Blocked { host: ip.to_string(), addresses: ip.to_string() }.to_string());
    }
    let timestamp = attempted_at.div_euclid(MICROS_PER_SECOND);
    let secrets: Vec<&str> = due.secrets.iter().map(String::as_str).collect();
    let signature = domain::signature(&secrets, &due.event_id, timestamp, &due.body);
    let request = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &due.event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(due.body.clone());
    let mut response = request.send().await.map_err(describe)?;
    let status = response.status();
    let mut snippet = Vec::new();
    while snippet.len() < RESPONSE_SNIPPET_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => snippet.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    snippet.truncate(RESPONSE_SNIPPET_BYTES);
    Ok((status, String::from_utf8_lossy(&snippet).into_owned()))
}

/// What went wrong, with the causes (a blocked address is deep in them).
fn describe(error: reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".to_owned();
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// How often settled deliveries past their retention are forgotten.
const RETENTION_INTERVAL: Duration = Duration::from_secs(3_600);

/// Forgets settled deliveries older than `days` days, every hour, until shutdown.
pub async fn retention(webhooks: Arc<Webhooks>, days: i64, mut shutdown: ShutdownSignal) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(RETENTION_INTERVAL) => {}
            () = shutdown.fired() => return,
        }
        let before = webhooks.store().now() - days * MICROS_PER_DAY;
        match webhooks.store().purge(before).await {
            Ok(0) => {}
            Ok(purged) => {
                tracing::info!(deliveries = purged, days, "settled deliveries past their retention forgotten")
            }
            Err(error) => tracing::warn!(%error, "the retention job failed, retrying in an hour"),
        }
    }
}
