//! `status`: N operations in the store (mixed states), C clients each on its own HTTP/1.1
//! keep-alive connection asking `GET /v1/operations/{random id}` back to back for D seconds
//! (after a warm-up that is not counted). Reports requests/s and latency percentiles.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use clap::Args;
use http::HeaderValue;
use longrun_core::{NewKey, Role, Token};
use tokio::task::JoinSet;
use tokio::time::Instant;
use uuid::Uuid;

use crate::cluster::{Cluster, system};
use crate::fill::{expected_status, fill};
use crate::handler::HandlerKind;
use crate::http1::Connection;
use crate::line::{Line, round1, round3};
use crate::log;
use crate::store::{FreshStore, PgArgs, StoreKind};

/// `status` flags.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The store.
    #[arg(long, value_enum)]
    store: StoreKind,
    #[command(flatten)]
    pg: PgArgs,
    /// Operations in the store.
    #[arg(long, default_value_t = 1_000_000)]
    stored: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Measured time, s.
    #[arg(long, default_value_t = 20.0)]
    duration_secs: f64,
    /// Load before the measured time, not counted, s.
    #[arg(long, default_value_t = 2.0)]
    warmup_secs: f64,
    /// Rows per `INSERT` while filling.
    #[arg(long, default_value_t = 1000)]
    fill_batch: u64,
    /// Authentication on: a submitter API key of the filled operations' customer is created
    /// before the server starts and every request carries it (default: the server runs open).
    #[arg(long)]
    api_key: bool,
}

/// What one client saw in the measured window.
#[derive(Default)]
struct Tally {
    latencies_ms: Vec<f64>,
}

/// Runs the workload.
pub async fn status(args: StatusArgs) -> anyhow::Result<Line> {
    ensure!(
        args.stored > 0 && args.clients > 0 && args.duration_secs > 0.0,
        "--stored, --clients and --duration-secs must be positive"
    );
    let store = FreshStore::create(args.store, &args.pg).await?;
    let ids = fill(&store, args.stored, args.fill_batch.max(1)).await?;
    let authorization = if args.api_key {
        Some(submitter_key(&store.url).await?)
    } else {
        None
    };
    store.checkpoint().await?;
    let cluster =
        Cluster::start(&store, args.pg.pg_max_connections, None, HandlerKind::Noop).await?;
    let addr = cluster
        .base_url
        .strip_prefix("http://")
        .context("an http:// base URL")?
        .to_owned();
    check_fill(&addr, &ids, authorization.as_ref()).await?;

    let measure_from = Instant::now() + Duration::from_secs_f64(args.warmup_secs);
    let until = measure_from + Duration::from_secs_f64(args.duration_secs);
    let ids = std::sync::Arc::new(ids);
    let mut clients = JoinSet::new();
    for seed in 0..args.clients {
        let (addr, ids, authorization) = (addr.clone(), ids.clone(), authorization.clone());
        clients.spawn(async move {
            let conn = Connection::open(&addr, authorization).await?;
            client(conn, &ids, seed as u64, measure_from, until).await
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = clients.join_next().await {
        latencies.extend(done??.latencies_ms);
    }
    cluster.stop().await?;

    let requests = latencies.len() as u64;
    log!(
        "{requests} requests in {:.1} s from {} clients on {} stored operations",
        args.duration_secs,
        args.clients,
        args.stored
    );
    let mut line = Line::new(&system(args.store, None), "status", requests)
        .with("store", args.store.as_str())
        .with("n_stored", args.stored)
        .with("clients", args.clients)
        .with("duration_s", round3(args.duration_secs))
        .with("auth", if args.api_key { "key" } else { "open" })
        .with(
            "requests_per_s",
            round1(requests as f64 / args.duration_secs),
        );
    line.percentiles(&mut latencies);
    Ok(line)
}

/// One client: one connection, requests back to back until `until`; keeps the latency of each
/// request sent at or after `measure_from` and answered by `until`.
async fn client(
    mut conn: Connection,
    ids: &[Uuid],
    seed: u64,
    measure_from: Instant,
    until: Instant,
) -> anyhow::Result<Tally> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut tally = Tally::default();
    loop {
        let sent = Instant::now();
        if sent >= until {
            return Ok(tally);
        }
        let id = ids[rng.usize(..ids.len())];
        let (status, body) = conn.get(&format!("/v1/operations/{id}")).await?;
        if status != 200 {
            bail!(
                "GET {id}: {status} {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
        }
        let answered = Instant::now();
        if sent >= measure_from && answered <= until {
            tally
                .latencies_ms
                .push((answered - sent).as_secs_f64() * 1e3);
        }
    }
}

/// Before the load: the API serves the filled operations in the states they were given.
async fn check_fill(
    addr: &str,
    ids: &[Uuid],
    authorization: Option<&HeaderValue>,
) -> anyhow::Result<()> {
    let mut conn = Connection::open(addr, authorization.cloned()).await?;
    for (i, id) in ids.iter().enumerate().take(40) {
        let (status, body) = conn.get(&format!("/v1/operations/{id}")).await?;
        ensure!(status == 200, "GET {id} after the fill answered {status}");
        let op: longrun_core::Operation =
            serde_json::from_slice(&body).context("decoding a filled operation")?;
        ensure!(
            op.id == *id && op.status.as_str() == expected_status(i as u64),
            "operation {i} reads back as {} {}, not {id} {}",
            op.id,
            op.status.as_str(),
            expected_status(i as u64)
        );
    }
    Ok(())
}

/// A new submitter key of customer 1 (the filled operations' customer), as the
/// `Authorization` header that carries it.
async fn submitter_key(url: &str) -> anyhow::Result<HeaderValue> {
    let store = crate::store::open(url, 1).await?;
    let token = Token::generate();
    let new = NewKey {
        customer: 1,
        customer_name: "bench".into(),
        user: 1,
        user_name: "bench".into(),
        role: Role::Submitter,
        names: vec![],
        queues: vec![],
    };
    store.create_key(new, &token).await?;
    Ok(HeaderValue::try_from(format!("Bearer {token}"))?)
}
