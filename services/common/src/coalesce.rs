//! Group commit for any write: concurrent calls queue up, and one worker
//! runs what has queued as one batch (one statement, one commit) while the
//! next callers queue behind it.
//!
//! Nobody waits for a batch to fill: the worker takes whatever is queued the
//! moment it is free, so a lone call runs at once and, under load, the calls
//! that arrive while a batch runs form the next one. Each caller hears its
//! own result after its batch ran.
//!
//! The queue is bounded: past `capacity` waiting calls a new one is refused
//! at once ([`Unanswered::Full`]) instead of waiting behind work the worker
//! cannot catch up with, and a queued call whose caller has gone (deadline,
//! disconnect) is dropped before its batch starts. Once a batch started,
//! it runs to the end whoever is still listening.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

/// The queue of one batch worker; the worker stops, after answering what is
/// queued, when the last clone of this is dropped.
#[derive(Debug)]
pub struct Coalescer<T, R> {
    queue: mpsc::Sender<Queued<T, R>>,
}

/// A call waiting for its batch: the item, the caller's span (none unless
/// traced), and where its result goes.
type Queued<T, R> = (T, tracing::Span, oneshot::Sender<R>);

/// Why a call got no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unanswered {
    /// The queue was full: nothing ran, retry later.
    #[error("the batch queue is full")]
    Full,
    /// The batch panicked (logged) or the worker is gone.
    #[error("the batch worker dropped the call")]
    Dropped,
}

impl<T, R> Clone for Coalescer<T, R> {
    fn clone(&self) -> Self {
        Self { queue: self.queue.clone() }
    }
}

impl<T: Send + 'static, R: Send + 'static> Coalescer<T, R> {
    /// Starts the worker on the current runtime. `run` gets at most
    /// `max_batch` items, in arrival order, and answers one result per item,
    /// in the same order; at most `capacity` calls wait in the queue.
    pub fn start<F, Fut>(name: &'static str, max_batch: usize, capacity: usize, run: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<R>> + Send,
    {
        let (queue, mut receive) = mpsc::channel::<Queued<T, R>>(capacity.max(1));
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(max_batch);
            while receive.recv_many(&mut batch, max_batch.max(1)).await > 0 {
                // A caller that has gone before its batch starts is not run for.
                let mut items = Vec::with_capacity(batch.len());
                let mut callers = Vec::with_capacity(batch.len());
                let mut replies = Vec::with_capacity(batch.len());
                for (item, caller, reply) in batch.drain(..).filter(|(_, _, reply)| !reply.is_closed()) {
                    items.push(item);
                    callers.push(caller);
                    replies.push(reply);
                }
                if items.is_empty() {
                    continue;
                }
                let size = items.len();
                let span = crate::spans::batch(name, &callers);
                drop(callers);
                // A bug that panics fails this batch's callers (their replies
                // are dropped unanswered), not every later call.
                let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| span.in_scope(|| run(items)))) {
                    Ok(future) => AssertUnwindSafe(future.instrument(span)).catch_unwind().await,
                    Err(panic) => Err(panic),
                };
                match outcome {
                    Ok(results) => {
                        debug_assert_eq!(results.len(), size, "{name}: one result per item");
                        for (reply, result) in replies.into_iter().zip(results) {
                            // A caller that gave up (deadline, disconnect) no longer listens.
                            let _ = reply.send(result);
                        }
                    }
                    Err(_) => tracing::error!(batch = name, size, "a batch panicked; its callers get no answer"),
                }
            }
        });
        Self { queue }
    }

    /// Runs `item` in the next batch; refused at once when the queue is full.
    pub async fn call(&self, item: T) -> Result<R, Unanswered> {
        let (reply, answer) = oneshot::channel();
        self.queue.try_send((item, crate::spans::caller(), reply)).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => Unanswered::Full,
            mpsc::error::TrySendError::Closed(_) => Unanswered::Dropped,
        })?;
        answer.await.map_err(|_| Unanswered::Dropped)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn calls_queued_meanwhile_share_batches_and_each_hears_its_own_result() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let doubler = Coalescer::start("test", 8, 64, move |items: Vec<u32>| {
            seen.lock().unwrap().push(items.len());
            async move { items.into_iter().map(|i| i * 2).collect::<Vec<_>>() }
        });
        // On this one-thread runtime every call is queued before the worker first runs.
        let answers = futures::future::join_all((0..40u32).map(|i| doubler.call(i))).await;
        let expected: Vec<Result<u32, Unanswered>> = (0..40u32).map(|i| Ok(i * 2)).collect();
        assert_eq!(answers, expected);
        assert_eq!(*sizes.lock().unwrap(), vec![8; 5], "40 queued calls, at most 8 a batch");
    }

    #[tokio::test]
    async fn a_panicking_batch_fails_its_callers_and_the_worker_goes_on() {
        let worker = Coalescer::start("test", 4, 4, |items: Vec<u32>| {
            // Before the future is made, and inside it.
            assert!(!items.contains(&12), "unlucky");
            async move {
                assert!(!items.contains(&13), "unlucky");
                items
            }
        });
        assert_eq!(worker.call(12).await, Err(Unanswered::Dropped));
        assert_eq!(worker.call(13).await, Err(Unanswered::Dropped));
        assert_eq!(worker.call(7).await, Ok(7));
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_runs_what_it_took() {
        let ran = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = ran.clone();
        let worker = Coalescer::start("test", 2, 4, move |items: Vec<u32>| {
            seen.lock().unwrap().extend(items.iter().copied());
            async move { items }
        });
        // On this one-thread runtime the worker takes nothing before all six are offered.
        let answers = futures::future::join_all((0..6u32).map(|i| worker.call(i))).await;
        assert_eq!(answers, vec![Ok(0), Ok(1), Ok(2), Ok(3), Err(Unanswered::Full), Err(Unanswered::Full)]);
        assert_eq!(*ran.lock().unwrap(), vec![0, 1, 2, 3], "refused calls never run");
    }

    #[tokio::test]
    async fn a_call_whose_caller_has_gone_is_not_run() {
        let ran = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = ran.clone();
        let worker = Coalescer::start("test", 8, 8, move |items: Vec<u32>| {
            seen.lock().unwrap().push(items.clone());
            async move { items }
        });
        // Queued, then given up before the worker ran.
        assert!(worker.call(1).now_or_never().is_none());
        assert_eq!(worker.call(2).await, Ok(2));
        assert_eq!(*ran.lock().unwrap(), vec![vec![2]]);
    }
}
