//! The longrun worker runtime: handlers written in Rust (or any command, through
//! [`CommandHandler`]) run for claimed operations, in-process next to the server
//! ([`LocalBackend`]) or against a remote server ([`HttpBackend`]).
//!
//! ```no_run
//! use std::sync::Arc;
//! use longrun_worker::{HttpBackend, Registry, TaskError, Worker, WorkerOptions};
//! use serde_json::json;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = Registry::new().handler("reports.render", |ctx, input| async move {
//!     let pages: u32 = input.kwargs_as::<serde_json::Value>()?["pages"].as_u64().unwrap_or(1) as u32;
//!     for page in 1..=pages {
//!         if ctx.is_cancelled() {
//!             return Err(TaskError::cancelled());
//!         }
//!         ctx.progress(100.0 * f64::from(page) / f64::from(pages), format!("page {page} of {pages}"));
//!     }
//!     Ok(json!({"pages": pages}))
//! });
//! let backend = Arc::new(HttpBackend::new(longrun_client::Client::new("http://127.0.0.1:8080")?));
//! Worker::new(backend, registry, WorkerOptions::default())
//!     .run(async { tokio::signal::ctrl_c().await.ok(); })
//!     .await;
//! # Ok(()) }
//! ```

mod backend;
mod backoff;
mod command;
mod context;
mod error;
mod execution;
mod handler;
mod http;
mod input;
mod local;
mod worker;

pub use backend::{Backend, BackendError};
pub use command::{CommandHandler, FATAL_EXIT_CODE};
pub use context::TaskContext;
pub use error::TaskError;
pub use handler::{Handler, Registry, TaskOutput};
pub use http::HttpBackend;
pub use input::TaskInput;
pub use local::LocalBackend;
pub use worker::{Worker, WorkerOptions};
