//! The yardstick's two workloads (`throughput` and `latency`, WORKLOADS.md v1) for longrun:
//! the driver (this process) enqueues through the HTTP submit API and polls the store for
//! completions every 50 ms; the worker is another process.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use clap::Args;
use longrun_client::{Client, ListParams};
use longrun_core::Status;
use longrun_core::wire::SubmitRequest;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::clock::{ms, now_ms};
use crate::cluster::{Cluster, WorkerMode, system};
use crate::handler::{HandlerKind, TASK, WorkerArgs};
use crate::line::{Line, round1, round3};
use crate::log;
use crate::store::{FreshStore, PgArgs, StoreKind};

/// What every job workload is run on.
#[derive(Debug, Args)]
pub struct JobArgs {
    /// The store.
    #[arg(long, value_enum)]
    store: StoreKind,
    /// Where the worker runs.
    #[arg(long, value_enum)]
    worker: WorkerMode,
    #[command(flatten)]
    pg: PgArgs,
    #[command(flatten)]
    worker_args: WorkerArgs,
    /// How often the driver counts unfinished operations, ms.
    #[arg(long, default_value_t = 50)]
    poll_ms: u64,
    /// Longest wait for all jobs to complete, s.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
}

impl JobArgs {
    async fn start(&self, handler: HandlerKind) -> anyhow::Result<(FreshStore, Cluster)> {
        let store = FreshStore::create(self.store, &self.pg).await?;
        let cluster = Cluster::start(
            &store,
            self.pg.pg_max_connections,
            Some((self.worker, self.worker_args)),
            handler,
        )
        .await?;
        store.checkpoint().await?;
        Ok((store, cluster))
    }

    /// Polls the store until none of the `n` operations is pending or running, then checks
    /// that all `n` succeeded.
    async fn wait_completed(&self, store: &FreshStore, n: u64) -> anyhow::Result<()> {
        let deadline = now_ms() + self.timeout_secs as f64 * 1e3;
        loop {
            let left = store.count_unfinished().await?;
            if left == 0 {
                break;
            }
            if now_ms() > deadline {
                bail!("timeout: {left} of {n} operations not finished");
            }
            tokio::time::sleep(Duration::from_millis(self.poll_ms)).await;
        }
        let succeeded = store.count_succeeded().await?;
        ensure!(
            succeeded == n,
            "{succeeded} of {n} operations succeeded (the others failed or were cancelled)"
        );
        Ok(())
    }

    fn line(&self, workload: &'static str, n: u64) -> Line {
        Line::new(&system(self.store, Some(self.worker)), workload, n)
            .with("store", self.store.as_str())
            .with(
                "worker",
                match self.worker {
                    WorkerMode::InProcess => "in-process",
                    WorkerMode::Http => "http",
                },
            )
            .with("concurrency", self.worker_args.concurrency)
            .with("prefetch", self.worker_args.prefetch)
    }
}

/// `throughput` flags.
#[derive(Debug, Args)]
pub struct ThroughputArgs {
    #[command(flatten)]
    run: JobArgs,
    /// Jobs.
    #[arg(long, default_value_t = 20_000)]
    n: u64,
    /// Jobs per enqueue batch (one `POST /v1/operations:batch` each, answered with the ids
    /// only: `Prefer: return=minimal`).
    #[arg(long, default_value_t = 1000)]
    batch: u64,
    /// Diagnostic, off in the yardstick runs: refresh the planner's statistics (`ANALYZE`)
    /// after the enqueue, before the worker starts (not timed), to show what a fresh table's
    /// missing statistics cost the drain.
    #[arg(long)]
    analyze: bool,
}

/// The submit request of job `payload`.
fn job(payload: Value) -> SubmitRequest {
    SubmitRequest {
        name: TASK.into(),
        kwargs: Some(payload),
        ..SubmitRequest::default()
    }
}

/// `throughput`: enqueue N jobs with the worker paused, then time the drain.
pub async fn throughput(args: ThroughputArgs) -> anyhow::Result<Line> {
    let run = &args.run;
    ensure!(
        args.n > 0 && args.batch > 0,
        "--n and --batch must be positive"
    );
    let (store, mut cluster) = run.start(HandlerKind::Noop).await?;
    let client = Client::new(&cluster.base_url)?;

    let t0 = now_ms();
    let mut next = 0;
    while next < args.n {
        let end = (next + args.batch).min(args.n);
        let jobs: Vec<SubmitRequest> = (next..end).map(|i| job(json!({ "i": i }))).collect();
        client
            .submit_batch_ids(&jobs, None)
            .await
            .context("submitting a batch")?;
        next = end;
    }
    let t1 = now_ms();
    log!(
        "enqueued {} in {:.3} s; starting the worker",
        args.n,
        (t1 - t0) / 1e3
    );
    // The diagnostic ANALYZE is neither enqueue nor drain: it is left out of every figure.
    let mut untimed = 0.0;
    if args.analyze {
        store.analyze().await?;
        untimed = now_ms() - t1;
        log!("ANALYZE took {:.3} s (not counted)", untimed / 1e3);
    }
    let drain_from = t1 + untimed;
    // The store records completions in wall-clock time: the drain as it saw it is measured
    // from this instant.
    let started_wall = OffsetDateTime::now_utc();
    cluster.start_worker().await?;
    run.wait_completed(&store, args.n).await?;
    let t2 = now_ms();
    let last_completed = OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(store.last_completed_micros().await?) * 1000,
    )?;
    let recorded_s = (last_completed - started_wall).as_seconds_f64();
    log!(
        "drained {} in {:.3} s (the last completion recorded after {recorded_s:.3} s)",
        args.n,
        (t2 - drain_from) / 1e3
    );
    cluster.stop().await?;

    let n = args.n as f64;
    let mut line = run
        .line("throughput", args.n)
        .with(
            "enqueue",
            format!(
                "POST /v1/operations:batch with Prefer: return=minimal (ids only), {} jobs per call, calls one after another",
                args.batch
            ),
        )
        .with("drain_recorded_s", round3(recorded_s));
    if args.analyze {
        line = line.with("analyzed_before_drain", true);
    }
    line.enqueue_jobs_per_s = Some(round1(n / ((t1 - t0) / 1e3)));
    line.drain_jobs_per_s = Some(round1(n / ((t2 - drain_from) / 1e3)));
    line.wall_s = Some(round3((t2 - t0 - untimed) / 1e3));
    Ok(line)
}

/// `latency` flags.
#[derive(Debug, Args)]
pub struct LatencyArgs {
    #[command(flatten)]
    run: JobArgs,
    /// Jobs.
    #[arg(long, default_value_t = 2000)]
    m: u64,
    /// One job every this many ms, on a fixed schedule.
    #[arg(long, default_value_t = 5.0)]
    every_ms: f64,
    /// Idle time between starting the worker and the first job, ms.
    #[arg(long, default_value_t = 1000)]
    idle_ms: u64,
}

/// `latency`: one job every 5 ms to a running worker; enqueue→start percentiles.
pub async fn latency(args: LatencyArgs) -> anyhow::Result<Line> {
    let run = &args.run;
    ensure!(args.m > 0, "--m must be positive");
    let (store, mut cluster) = run.start(HandlerKind::Clock).await?;
    let client = Client::new(&cluster.base_url)?;
    cluster.start_worker().await?;
    cluster.worker_started().await?;
    tokio::time::sleep(Duration::from_millis(args.idle_ms)).await;

    let t0 = now_ms();
    for k in 0..args.m {
        let wait = t0 + k as f64 * args.every_ms - now_ms();
        if wait > 0.0 {
            tokio::time::sleep(ms(wait)).await;
        }
        let t = now_ms();
        client
            .submit(&job(json!({ "i": k, "t": t })), None)
            .await
            .context("submitting")?;
    }
    let t1 = now_ms();
    log!(
        "produced {} jobs in {:.3} s ({:.1}/s)",
        args.m,
        (t1 - t0) / 1e3,
        args.m as f64 / ((t1 - t0) / 1e3)
    );
    run.wait_completed(&store, args.m).await?;
    let t2 = now_ms();
    let latencies = start_latencies(&client).await?;
    cluster.stop().await?;

    ensure!(
        latencies.len() as u64 == args.m,
        "only {}/{} jobs recorded a start",
        latencies.len(),
        args.m
    );
    let mut worst: Vec<(u64, f64)> = latencies.iter().map(|(&i, &l)| (i, l)).collect();
    worst.sort_by(|a, b| b.1.total_cmp(&a.1));
    let min = worst.last().map_or(0.0, |w| w.1);
    let worst: Vec<String> = worst[..worst.len().min(5)]
        .iter()
        .map(|(i, l)| format!("{i}:{l:.1}"))
        .collect();
    log!(
        "latency ms: min {min:.3}; worst (job:ms) {}",
        worst.join(" ")
    );

    let mut line = run
        .line("latency", args.m)
        .with("enqueue", "POST /v1/operations, awaited one at a time");
    line.wall_s = Some(round3((t2 - t0) / 1e3));
    line.percentiles(&mut latencies.into_values().collect::<Vec<_>>());
    Ok(line)
}

/// Job `i` → `start - t` in ms, read back through the list API: `t` from the job's kwargs,
/// `start` from its result (written by the handler that succeeded).
async fn start_latencies(client: &Client) -> anyhow::Result<HashMap<u64, f64>> {
    let mut latencies = HashMap::new();
    let mut params = ListParams {
        status: Some(Status::Succeeded),
        name: Some(TASK.into()),
        limit: Some(1000),
        ..ListParams::default()
    };
    loop {
        let page = client.list(&params).await?;
        for op in &page.operations {
            let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64);
            let (Some(i), Some(t), Some(start)) = (
                field(&op.kwargs, "i"),
                field(&op.kwargs, "t"),
                op.result.as_ref().and_then(|r| field(r, "start")),
            ) else {
                bail!(
                    "operation {} lacks kwargs.i, kwargs.t or result.start",
                    op.id
                );
            };
            if op.retries > 0 {
                log!(
                    "job {i} ran {} times; its latency is that of the attempt that succeeded",
                    op.retries + 1
                );
            }
            latencies.insert(i as u64, start - t);
        }
        match page.next_cursor {
            Some(cursor) => params.cursor = Some(cursor),
            None => return Ok(latencies),
        }
    }
}
