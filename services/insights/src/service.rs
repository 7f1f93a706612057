//! The insights service's operations: a customer's numbers as of now, the
//! program's customers by segment, and the review job that moves segments
//! along when time alone changes them (60 quiet days make an active
//! customer at risk without any new event).

use std::collections::HashMap;
use std::time::Duration;

use loyalty_common::shutdown::ShutdownSignal;

use crate::domain::{self, History, Segment, Settings};
use crate::error::Error;
use crate::store::{CustomerRow, InsightsStore, Order};

/// Segments reviewed per step of the job, or before a read of one program.
const REVIEW_BATCH: i64 = 500;
/// The advisory lock that lets one replica at a time run the review job.
const REVIEW_LOCK_KEY: i64 = 0x0069_6e73_6967_0002;

pub struct Insights {
    store: InsightsStore,
}

/// One customer's numbers as of now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerInsight {
    pub customer_id: String,
    pub history: History,
    pub segment: Segment,
    /// Recency, frequency and monetary quintiles (0 without orders).
    pub rfm: (i32, i32, i32),
    pub days_since_last_order: i32,
    pub lifetime_value_minor: i64,
}

impl Insights {
    pub fn new(store: InsightsStore) -> Self {
        Self { store }
    }

    pub fn store(&self) -> &InsightsStore {
        &self.store
    }

    /// Computed from the customer's orders at this instant, so it is exact
    /// even before the review job has caught up.
    pub async fn customer(&self, program_id: &str, customer_id: &str) -> Result<CustomerInsight, Error> {
        let now = self.store.now();
        let settings = self.store.settings(program_id).await?;
        let history = self.store.history(program_id, customer_id).await?;
        let (segment, _) = history.segment(&settings, now);
        let rfm = match self.store.customer(program_id, customer_id).await? {
            Some(row) if row.order_count > 0 => {
                let ranks = self.store.ranks(program_id, &row).await?;
                (
                    domain::quintile(ranks.recency_below, ranks.total),
                    domain::quintile(ranks.frequency_below, ranks.total),
                    domain::quintile(ranks.monetary_below, ranks.total),
                )
            }
            _ => (0, 0, 0),
        };
        Ok(CustomerInsight {
            customer_id: customer_id.to_owned(),
            days_since_last_order: history.days_since_last_order(now),
            lifetime_value_minor: history.lifetime_value(&settings, now),
            history,
            segment,
            rfm,
        })
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

    async fn catch_up(&self, program_id: &str) -> Result<(), Error> {
        while self.store.review_due(Some(program_id), REVIEW_BATCH).await? == usize::try_from(REVIEW_BATCH).unwrap_or(0)
        {
        }
        Ok(())
    }

    /// Moves segments along as time passes, every `interval`, until shutdown.
    pub async fn review_job(self: std::sync::Arc<Self>, interval: Duration, mut shutdown: ShutdownSignal) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = shutdown.fired() => return,
            }
            // One replica at a time: the others would only repeat its work.
            let review = async {
                loop {
                    match self.store.review_due(None, REVIEW_BATCH).await {
                        Ok(n) if n == usize::try_from(REVIEW_BATCH).unwrap_or(0) && !shutdown.is_fired() => continue,
                        Ok(_) => return Ok(()),
                        Err(error) => return Err(error),
                    }
                }
            };
            match loyalty_common::db::exclusively(self.store.database(), REVIEW_LOCK_KEY, review).await {
                Ok(None | Some(Ok(()))) => {}
                Ok(Some(Err(error))) => tracing::warn!(%error, "segment review failed, retrying at the next interval"),
                Err(error) => tracing::warn!(%error, "segment review failed, retrying at the next interval"),
            }
        }
    }
}
