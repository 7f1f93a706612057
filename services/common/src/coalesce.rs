//! Group commit for any write: concurrent calls queue up, and one worker
//! runs what has queued as one batch (one statement, one commit) while the
//! next callers queue behind it.
//!
//! Nobody waits for a batch to fill: the worker takes whatever is queued the
//! moment it is free, so a lone call runs at once and, under load, the calls
//! that arrive while a batch runs form the next one. Each caller hears its
//! own result after its batch ran.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};

/// The queue of one batch worker; the worker stops, after answering what is
/// queued, when the last clone of this is dropped.
#[derive(Debug)]
pub struct Coalescer<T, R> {
    queue: mpsc::UnboundedSender<(T, oneshot::Sender<R>)>,
}

impl<T, R> Clone for Coalescer<T, R> {
    fn clone(&self) -> Self {
        Self { queue: self.queue.clone() }
    }
}

impl<T: Send + 'static, R: Send + 'static> Coalescer<T, R> {
    /// Starts the worker on the current runtime. `run` gets at most
    /// `max_batch` items, in arrival order, and answers one result per item,
    /// in the same order.
    pub fn start<F, Fut>(name: &'static str, max_batch: usize, run: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<R>> + Send,
    {
        let (queue, mut receive) = mpsc::unbounded_channel::<(T, oneshot::Sender<R>)>();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(max_batch);
            while receive.recv_many(&mut batch, max_batch.max(1)).await > 0 {
                let (items, replies): (Vec<T>, Vec<_>) = batch.drain(..).unzip();
                let size = items.len();
                // A bug that panics fails this batch's callers (their replies
                // are dropped unanswered), not every later call.
                let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| run(items))) {
                    Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
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

    /// Runs `item` in the next batch; `None` when its batch panicked or the
    /// worker is gone.
    pub async fn call(&self, item: T) -> Option<R> {
        let (reply, answer) = oneshot::channel();
        self.queue.send((item, reply)).ok()?;
        answer.await.ok()
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
        let doubler = Coalescer::start("test", 8, move |items: Vec<u32>| {
            seen.lock().unwrap().push(items.len());
            async move { items.into_iter().map(|i| i * 2).collect::<Vec<_>>() }
        });
        // On this one-thread runtime every call is queued before the worker first runs.
        let answers = futures::future::join_all((0..40u32).map(|i| doubler.call(i))).await;
        let expected: Vec<Option<u32>> = (0..40u32).map(|i| Some(i * 2)).collect();
        assert_eq!(answers, expected);
        assert_eq!(*sizes.lock().unwrap(), vec![8; 5], "40 queued calls, at most 8 a batch");
    }

    #[tokio::test]
    async fn a_panicking_batch_fails_its_callers_and_the_worker_goes_on() {
        let worker = Coalescer::start("test", 4, |items: Vec<u32>| {
            // Before the future is made, and inside it.
            assert!(!items.contains(&12), "unlucky");
            async move {
                assert!(!items.contains(&13), "unlucky");
                items
            }
        });
        assert_eq!(worker.call(12).await, None);
        assert_eq!(worker.call(13).await, None);
        assert_eq!(worker.call(7).await, Some(7));
    }
}
