//! The whole service in your own binary: the HTTP API on an SQLite file and Rust handlers
//! running in-process (no HTTP hop between them).
//!
//! ```sh
//! cargo run -p longrun-worker --example embedded
//! curl -s localhost:8080/v1/operations -H 'content-type: application/json' \
//!   -d '{"name":"reports.render","kwargs":{"pages":5}}'
//! ```

use std::{sync::Arc, time::Duration};

use longrun_core::Store;
use longrun_server::{AppState, ServerConfig};
use longrun_sqlite::SqliteStore;
use longrun_worker::{LocalBackend, Registry, TaskError, Worker, WorkerOptions};
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[derive(Deserialize)]
struct Render {
    pages: u32,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_default("sqlite://embedded.db").await?);
    let config = Arc::new(ServerConfig::default());

    let registry = Registry::new().handler("reports.render", |ctx, input| async move {
        let Render { pages } = input.kwargs_as()?;
        for page in 1..=pages {
            tokio::select! {
                _ = ctx.cancelled() => return Err(TaskError::cancelled()),
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            ctx.progress(
                100.0 * f64::from(page) / f64::from(pages),
                format!("page {page} of {pages}"),
            );
        }
        Ok(json!({ "pages": pages }))
    });
    let backend = LocalBackend::new(
        store.clone(),
        config.default_retry_policy,
        config.default_owner.clone(),
    );
    let worker = Worker::new(Arc::new(backend), registry, WorkerOptions::default());

    let stop = CancellationToken::new();
    let maintenance =
        longrun_server::spawn_maintenance(store.clone(), config.clone(), stop.clone());
    let running = tokio::spawn(worker.run(stop.clone().cancelled_owned()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    println!("serving on http://127.0.0.1:8080; Ctrl-C stops");
    let signal = stop.clone();
    tokio::spawn(async move {
        tokio::signal::ctrl_c().await.ok();
        signal.cancel();
    });
    longrun_server::serve(listener, AppState { store, config }, stop.cancelled_owned()).await?;
    running.await?;
    maintenance.await?;
    Ok(())
}
