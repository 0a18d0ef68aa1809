//! The child processes: `node` (a longrun server on the store, with or without the
//! in-process worker) and `http-worker` (a worker in its own process, over the HTTP worker
//! protocol). Both are wired as `longrun serve` and `longrun worker` wire them, with Rust
//! handlers instead of commands.

use std::num::NonZeroU32;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use longrun_client::{Client, ListParams};
use longrun_server::{AppState, RateLimit, ServerConfig, serve, spawn_maintenance};
use longrun_worker::{HttpBackend, LocalBackend, Worker};
use tokio_util::sync::CancellationToken;

use crate::child::Parent;
use crate::handler::{HandlerKind, WorkerArgs};
use crate::store;

/// Whether the node runs handlers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NodeWorker {
    /// The API only.
    None,
    /// The API and a worker on the same store (`LocalBackend`, no HTTP hop).
    InProcess,
}

/// `longrun-bench node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The store's URL.
    #[arg(long)]
    database: String,
    /// Connections of the PostgreSQL pool.
    #[arg(long)]
    pg_max_connections: u32,
    /// Whether to run a worker in this process.
    #[arg(long, value_enum)]
    worker: NodeWorker,
    /// The handler.
    #[arg(long, value_enum, default_value = "noop")]
    handler: HandlerKind,
    #[command(flatten)]
    worker_args: WorkerArgs,
}

/// Serves on an ephemeral loopback port: says `ready http://ADDR`; with a worker, starts it on
/// `start` and says `started`; stops gracefully on `stop`.
pub async fn node(args: NodeArgs) -> anyhow::Result<()> {
    let store = store::open(&args.database, args.pg_max_connections).await?;
    // Each API key's rate limit is one no run reaches, so that a run with a key measures what
    // serving costs (the limiter's check included), not the default limit of 100 requests/s.
    let unlimited = NonZeroU32::new(1_000_000_000).expect("non-zero");
    let config = Arc::new(ServerConfig {
        rate_limit: Some(RateLimit {
            per_second: unlimited,
            burst: unlimited,
        }),
        ..ServerConfig::default()
    });
    let stop = CancellationToken::new();
    let maintenance = spawn_maintenance(store.clone(), config.clone(), stop.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let state = AppState {
        store: store.clone(),
        config: config.clone(),
    };
    let server = tokio::spawn(serve(listener, state, stop.clone().cancelled_owned()));
    let worker = (args.worker == NodeWorker::InProcess).then(|| {
        let backend = LocalBackend::new(
            store.clone(),
            config.default_retry_policy,
            config.default_owner.clone(),
        );
        Worker::new(
            Arc::new(backend),
            args.handler.registry(),
            args.worker_args.options(),
        )
    });

    let mut parent = Parent::new();
    parent.say(&format!("ready http://{addr}"));
    let running = match worker {
        Some(worker) if parent.started().await? => {
            let running = tokio::spawn(worker.run(stop.clone().cancelled_owned()));
            parent.say("started");
            parent.stopped().await;
            Some(running)
        }
        Some(_) => None,
        None => {
            parent.stopped().await;
            None
        }
    };
    stop.cancel();
    if let Some(running) = running {
        running.await?;
    }
    server.await??;
    maintenance.await?;
    Ok(())
}

/// `longrun-bench http-worker`.
#[derive(Debug, Args)]
pub struct HttpWorkerArgs {
    /// The server's base URL.
    #[arg(long)]
    server: String,
    /// The handler.
    #[arg(long, value_enum, default_value = "noop")]
    handler: HandlerKind,
    #[command(flatten)]
    worker_args: WorkerArgs,
}

/// Connects to the server (one request, so a connection exists), says `ready`, runs the
/// worker from `start` (`started`) until `stop`.
pub async fn http_worker(args: HttpWorkerArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.server)?;
    client
        .list(&ListParams {
            limit: Some(1),
            ..ListParams::default()
        })
        .await?;
    let worker = Worker::new(
        Arc::new(HttpBackend::new(client)),
        args.handler.registry(),
        args.worker_args.options(),
    );
    let mut parent = Parent::new();
    parent.say("ready");
    if parent.started().await? {
        let stop = CancellationToken::new();
        let running = tokio::spawn(worker.run(stop.clone().cancelled_owned()));
        parent.say("started");
        parent.stopped().await;
        stop.cancel();
        running.await?;
    }
    Ok(())
}
