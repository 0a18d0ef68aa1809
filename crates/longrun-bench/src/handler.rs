//! The benchmark's one task, `bench`, and its two handlers.

use clap::ValueEnum;
use longrun_worker::{Registry, TaskError, WorkerOptions};
use serde_json::json;

use crate::clock::now_ms;

/// The task name every benchmark operation has.
pub const TASK: &str = "bench";

/// What the handler does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HandlerKind {
    /// Nothing (throughput).
    Noop,
    /// Reads `CLOCK_MONOTONIC` first thing and returns it as the result `{"start": ms}`
    /// (latency).
    Clock,
}

impl HandlerKind {
    /// The registry with this handler for [`TASK`].
    pub fn registry(self) -> Registry {
        match self {
            Self::Noop => {
                Registry::new().handler(TASK, |_ctx, _input| async { Ok::<(), TaskError>(()) })
            }
            Self::Clock => Registry::new().handler(TASK, |_ctx, _input| async {
                let start = now_ms();
                Ok::<_, TaskError>(json!({ "start": start }))
            }),
        }
    }
}

/// The worker's settings: `concurrency` handlers at once; everything else longrun's defaults
/// (a claim asks for as many operations as there are free slots, so nothing is fetched
/// beyond the concurrency).
pub fn worker_options(concurrency: usize) -> WorkerOptions {
    WorkerOptions {
        name: format!("bench-worker-{}", std::process::id()),
        concurrency,
        ..WorkerOptions::default()
    }
}
