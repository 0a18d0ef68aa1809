//! Group commit: requests that arrive while a batch is being written wait and go together in
//! the next one, so many concurrent writers share one transaction (and one fsync). Nothing
//! waits on a timer: an idle store writes a lone request at once.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

/// A queue of requests handled in batches by one task.
pub struct Batcher<Req, Resp> {
    queue: mpsc::UnboundedSender<(Req, oneshot::Sender<Resp>)>,
}

impl<Req, Resp> std::fmt::Debug for Batcher<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("queued", &self.queue.strong_count())
            .finish()
    }
}

/// A [`Batcher`] that may be gone: see [`Batcher::downgrade`].
pub struct WeakBatcher<Req, Resp> {
    queue: mpsc::WeakUnboundedSender<(Req, oneshot::Sender<Resp>)>,
}

impl<Req, Resp> WeakBatcher<Req, Resp> {
    /// The batcher, while its task runs.
    pub fn upgrade(&self) -> Option<Batcher<Req, Resp>> {
        self.queue.upgrade().map(|queue| Batcher { queue })
    }
}

impl<Req, Resp> std::fmt::Debug for WeakBatcher<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeakBatcher").finish_non_exhaustive()
    }
}

impl<Req, Resp> Clone for Batcher<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Batcher<Req, Resp> {
    /// Spawns the task that hands up to `max_batch` queued requests at a time to `process`,
    /// which answers each request, in order. The task ends when every `Batcher` is dropped.
    pub fn spawn<F, Fut>(max_batch: usize, mut process: F) -> Self
    where
        F: FnMut(Vec<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<Resp>> + Send,
    {
        let (queue, mut requests) = mpsc::unbounded_channel::<(Req, oneshot::Sender<Resp>)>();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(max_batch);
            while requests.recv_many(&mut batch, max_batch).await > 0 {
                let (reqs, replies): (Vec<Req>, Vec<_>) = batch.drain(..).unzip();
                let answers = process(reqs).await;
                debug_assert_eq!(answers.len(), replies.len(), "one answer per request");
                for (reply, answer) in replies.into_iter().zip(answers) {
                    // The caller may have given up (its request was cancelled): fine.
                    let _ = reply.send(answer);
                }
            }
        });
        Self { queue }
    }

    /// A handle that does not keep the task alive (for the task's own use).
    pub fn downgrade(&self) -> WeakBatcher<Req, Resp> {
        WeakBatcher {
            queue: self.queue.downgrade(),
        }
    }

    /// Queues `request` and waits for its answer.
    ///
    /// # Panics
    /// If the batch task died (a bug in `process`), which a caller cannot recover from.
    pub async fn call(&self, request: Req) -> Resp {
        let (reply, answer) = oneshot::channel();
        if self.queue.send((request, reply)).is_err() {
            panic!("the batch task is running");
        }
        answer.await.expect("the batch task answers every request")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn concurrent_requests_share_batches_and_each_gets_its_own_answer() {
        let sizes = Arc::new(Mutex::new(vec![]));
        let seen = sizes.clone();
        let batcher = Batcher::spawn(64, move |reqs: Vec<u32>| {
            seen.lock().unwrap().push(reqs.len());
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                reqs.into_iter().map(|r| r * 2).collect()
            }
        });
        let calls: Vec<_> = (0..200u32)
            .map(|i| {
                let b = batcher.clone();
                tokio::spawn(async move { (i, b.call(i).await) })
            })
            .collect();
        for call in calls {
            let (i, doubled) = call.await.unwrap();
            assert_eq!(doubled, i * 2);
        }
        let sizes = sizes.lock().unwrap();
        assert_eq!(sizes.iter().sum::<usize>(), 200);
        assert!(
            sizes.len() < 200,
            "requests waiting together were batched: {sizes:?}"
        );
        assert!(sizes.iter().all(|&n| n <= 64));
    }
}
