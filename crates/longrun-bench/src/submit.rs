//! `submit`: how many operations the HTTP API accepts per second when C clients submit one
//! operation per request, each waiting for its answer before the next (the issue's "10,000
//! accepted operations/s on PostgreSQL with 32 concurrent clients"). No worker runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail, ensure};
use clap::Args;
use longrun_core::wire::SubmitRequest;
use longrun_core::{Operation, Status};
use serde_json::json;
use tokio::task::JoinSet;

use crate::clock::now_ms;
use crate::cluster::{Cluster, system};
use crate::handler::{HandlerKind, TASK};
use crate::http1::Connection;
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
    let addr = cluster
        .base_url
        .strip_prefix("http://")
        .context("an http:// base URL")?
        .to_owned();
    let prefer = args.ids_only.then_some("return=minimal");
    let next = Arc::new(AtomicU64::new(0));

    let t0 = now_ms();
    let mut clients = JoinSet::new();
    for _ in 0..args.clients {
        let (addr, next, n) = (addr.clone(), next.clone(), args.n);
        clients.spawn(async move {
            let mut conn = Connection::open(&addr, None).await?;
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let sent = now_ms();
                let (status, body) = conn
                    .post_json("/v1/operations", request(i)?, prefer)
                    .await?;
                if status != 202 {
                    bail!(
                        "submit {i}: {status} {}",
                        String::from_utf8_lossy(&body[..body.len().min(300)])
                    );
                }
                if i == 0 {
                    check_answer(&body, prefer.is_some())?;
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

/// The body of submit `i`: a no-op job with `i` as its argument.
fn request(i: u64) -> anyhow::Result<Vec<u8>> {
    let request = SubmitRequest {
        name: TASK.into(),
        kwargs: Some(json!({ "i": i })),
        ..SubmitRequest::default()
    };
    Ok(serde_json::to_vec(&request)?)
}

/// The first answer is what a client is promised: the operation, pending, or its id alone.
fn check_answer(body: &[u8], id_only: bool) -> anyhow::Result<()> {
    if id_only {
        let answer: serde_json::Value = serde_json::from_slice(body)?;
        ensure!(answer["id"].is_string(), "the answer has no id: {answer}");
    } else {
        let op: Operation =
            serde_json::from_slice(body).context("decoding the submitted operation")?;
        ensure!(
            op.name == TASK && op.status == Status::Pending,
            "submitted as {} {}",
            op.name,
            op.status.as_str()
        );
    }
    Ok(())
}
