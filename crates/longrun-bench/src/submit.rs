//! `submit`: how many operations the HTTP API accepts per second when C clients submit one
//! operation per request, each waiting for its answer before the next (the issue's "10,000
//! accepted operations/s on PostgreSQL with 32 concurrent clients"). No worker runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::ensure;
use clap::Args;
use longrun_client::Client;
use longrun_core::wire::SubmitRequest;
use serde_json::json;
use tokio::task::JoinSet;

use crate::clock::now_ms;
use crate::cluster::{Cluster, system};
use crate::handler::{HandlerKind, TASK};
use crate::line::{round1, round3};
use crate::store::{FreshStore, PgArgs, StoreKind};
use crate::{Line, log};

/// `submit` flags.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The store.
    #[arg(long, value_enum)]
    store: StoreKind,
    #[command(flatten)]
    pg: PgArgs,
    /// Operations to submit in all.
    #[arg(long, default_value_t = 20_000)]
    n: u64,
    /// Concurrent clients (keep-alive connections).
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Ask for the id only (`Prefer: return=minimal`) instead of the operation.
    #[arg(long)]
    ids_only: bool,
}

/// Runs the workload.
pub async fn submit(args: SubmitArgs) -> anyhow::Result<Line> {
    ensure!(
        args.n > 0 && args.clients > 0,
        "--n and --clients must be positive"
    );
    let store = FreshStore::create(args.store, &args.pg).await?;
    let cluster =
        Cluster::start(&store, args.pg.pg_max_connections, None, HandlerKind::Noop).await?;
    store.checkpoint().await?;
    let client = Client::new(&cluster.base_url)?;
    let next = Arc::new(AtomicU64::new(0));

    let t0 = now_ms();
    let mut clients = JoinSet::new();
    for _ in 0..args.clients {
        let (client, next, n, ids_only) = (client.clone(), next.clone(), args.n, args.ids_only);
        clients.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let request = SubmitRequest {
                    name: TASK.into(),
                    kwargs: Some(json!({ "i": i })),
                    ..SubmitRequest::default()
                };
                let sent = now_ms();
                if ids_only {
                    client.submit_id(&request, None).await?;
                } else {
                    client.submit(&request, None).await?;
                }
                latencies.push(now_ms() - sent);
            }
        });
    }
    let mut latencies = Vec::with_capacity(args.n as usize);
    while let Some(done) = clients.join_next().await {
        latencies.extend(done??);
    }
    let t1 = now_ms();
    let stored = store.count_all().await?;
    cluster.stop().await?;
    ensure!(
        stored == args.n,
        "{stored} operations stored, {} submitted",
        args.n
    );
    log!("{} submits in {:.3} s", args.n, (t1 - t0) / 1e3);

    let mut line = Line::new(&system(args.store, None), "submit", args.n)
        .with("store", args.store.as_str())
        .with("clients", args.clients)
        .with("enqueue", "POST /v1/operations, one operation per request")
        .with("answer", if args.ids_only { "id" } else { "operation" });
    line.enqueue_jobs_per_s = Some(round1(args.n as f64 / ((t1 - t0) / 1e3)));
    line.wall_s = Some(round3((t1 - t0) / 1e3));
    line.percentiles(&mut latencies);
    Ok(line)
}
