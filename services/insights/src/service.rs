//! The insights service's operations: a customer's numbers as of now, the
//! program's customers by segment, and the review job that moves segments
//! along when time alone changes them (60 quiet days make an active
//! customer at risk without any new event).

use std::collections::HashMap;
use std::time::Duration;

use loyalty_common::shutdown::ShutdownSignal;

use crate::domain::{self, Segment, Settings};
use crate::error::Error;
use crate::store::{CustomerRow, InsightsStore, Order};
use crate::winback::WinBackRule;

/// Segments reviewed per step of the job, or before a read of one program.
const REVIEW_BATCH: usize = 500;
/// The advisory lock that lets one replica at a time run the review job.
const REVIEW_LOCK_KEY: i64 = 0x0069_6e73_6967_0002;

pub struct Insights {
    store: InsightsStore,
    win_back: Option<WinBackRule>,
}

/// One customer's numbers as of now, with their RFM ranks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerInsight {
    pub numbers: CustomerRow,
    /// Recency, frequency and monetary quintiles (0 without orders).
    pub rfm: (i32, i32, i32),
}

impl Insights {
    pub fn new(store: InsightsStore, win_back: Option<WinBackRule>) -> Self {
        Self { store, win_back }
    }

    pub fn store(&self) -> &InsightsStore {
        &self.store
    }

    /// Computed from the customer's orders at this instant, so it is exact
    /// even before the review job has caught up.
    pub async fn customer(&self, program_id: &str, customer_id: &str) -> Result<(CustomerInsight, Settings), Error> {
        let now = self.store.now();
        let settings = self.store.settings(program_id).await?;
        let history = self.store.history(program_id, customer_id).await?;
        let (segment, _) = history.segment(&settings, now);
        let rfm = if history.order_times.is_empty() {
            (0, 0, 0)
        } else {
            let ranks = self.store.ranks(program_id, &history).await?;
            (
                domain::quintile(ranks.recency_below, ranks.total),
                domain::quintile(ranks.frequency_below, ranks.total),
                domain::quintile(ranks.monetary_below, ranks.total),
            )
        };
        let numbers = CustomerRow {
            customer_id: customer_id.to_owned(),
            first_order: history.first_order(),
            last_order: history.last_order(),
            order_count: history.order_count(),
            spend_minor: history.spend_minor,
            segment,
        };
        Ok((CustomerInsight { numbers, rfm }, settings))
    }

    /// The customer's segment at this instant, from their orders.
    pub async fn segment(&self, program_id: &str, customer_id: &str) -> Result<Segment, Error> {
        let settings = self.store.settings(program_id).await?;
        let history = self.store.history(program_id, customer_id).await?;
        Ok(history.segment(&settings, self.store.now()).0)
    }

    /// One page of the program's customers; segments due for review are
    /// brought up to date first, so the filter is exact.
    pub async fn customers(
        &self,
        program_id: &str,
        segment: Option<Segment>,
        order: Order,
        after: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<(Vec<CustomerRow>, Settings), Error> {
        self.catch_up(program_id).await?;
        let rows = self.store.customers(program_id, segment, order, after, limit).await?;
        Ok((rows, self.store.settings(program_id).await?))
    }

    /// Every segment's count, zeros included, in the segments' order.
    pub async fn segment_counts(&self, program_id: &str) -> Result<Vec<(Segment, i64)>, Error> {
        self.catch_up(program_id).await?;
        let counts: HashMap<Segment, i64> = self.store.segment_counts(program_id).await?;
        Ok(Segment::ALL.into_iter().map(|s| (s, counts.get(&s).copied().unwrap_or(0))).collect())
    }

    /// Brings the program's segments and recomputed aggregates up to date.
    pub async fn catch_up(&self, program_id: &str) -> Result<(), Error> {
        self.review(Some(program_id), || false).await
    }

    /// Reviews every due segment of `program_id` (all programs when `None`),
    /// batch after batch, until none is due or `stop` says so.
    async fn review(&self, program_id: Option<&str>, stop: impl Fn() -> bool) -> Result<(), Error> {
        self.store.rebuild_pending(program_id).await?;
        while self.store.review_due(program_id, REVIEW_BATCH).await? == REVIEW_BATCH && !stop() {}
        Ok(())
    }

    /// Moves segments along as time passes, and applies the win-back rule
    /// to what changed, every `interval`, until shutdown; one replica at a
    /// time (the others would only repeat its work).
    pub async fn review_job(self: std::sync::Arc<Self>, interval: Duration, mut shutdown: ShutdownSignal) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = shutdown.fired() => return,
            }
            let work = async {
                self.review(None, || shutdown.is_fired()).await?;
                if let Some(rule) = &self.win_back {
                    rule.run(&self.store, || shutdown.is_fired()).await?;
                }
                Ok::<(), Error>(())
            };
            if let Err(error) = loyalty_common::db::exclusively(self.store.database(), REVIEW_LOCK_KEY, work).await {
                tracing::warn!(%error, "segment review or win-back rule failed, retrying at the next interval");
            }
        }
    }
}
