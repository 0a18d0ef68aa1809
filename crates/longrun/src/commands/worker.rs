//! `longrun worker`: runs operations with shell commands, for handlers in any language.
//! The same handler arguments give `longrun serve` in-process workers.

use std::{process::ExitCode, sync::Arc, time::Duration};

use clap::Args;
use longrun_core::Store;
use longrun_server::ServerConfig;
use longrun_worker::{
    Backend, CommandHandler, HttpBackend, LocalBackend, Registry, Worker, WorkerOptions,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{ServerArgs, init_tracing, parse_handler, shutdown_signal};

/// Handlers that run shell commands, and how many at once.
#[derive(Debug, Clone, Args)]
pub struct CommandWorkerArgs {
    /// `NAME=COMMAND`: run operations named NAME with `sh -c COMMAND`; the operation's JSON
    /// arrives on stdin, stdout (JSON) is the result, stderr lines `progress: PCT TEXT` report
    /// progress; exit 0 succeeds, exit 100 fails without retry, any other status is retried.
    #[arg(long = "handler", value_name = "NAME=COMMAND", value_parser = parse_handler)]
    handlers: Vec<(String, String)>,
    /// Most operations running at once.
    #[arg(long, env = "LONGRUN_CONCURRENCY", default_value_t = WorkerOptions::default().concurrency)]
    concurrency: usize,
    /// Operations claimed ahead beyond the concurrency and started as slots free up (their
    /// leases run while they wait; held ones are released at shutdown). Worth it for short
    /// tasks.
    #[arg(long, env = "LONGRUN_PREFETCH", default_value_t = WorkerOptions::default().prefetch)]
    prefetch: usize,
    /// Lease length, seconds: without a heartbeat for this long an attempt counts as lost.
    #[arg(long, env = "LONGRUN_LEASE_SECS", default_value_t = WorkerOptions::default().lease_secs)]
    lease_secs: u32,
    /// Worker name recorded on the operations it runs (default: host name and pid).
    #[arg(long, env = "LONGRUN_WORKER_NAME")]
    worker_name: Option<String>,
}

impl CommandWorkerArgs {
    fn registry(&self) -> Registry {
        self.handlers
            .iter()
            .fold(Registry::new(), |registry, (name, command)| {
                registry.register(name, CommandHandler::new(command))
            })
    }

    fn options(&self, shutdown_grace: Duration) -> WorkerOptions {
        let name = self.worker_name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        });
        WorkerOptions {
            name,
            concurrency: self.concurrency,
            prefetch: self.prefetch,
            lease_secs: self.lease_secs,
            shutdown_grace,
            ..WorkerOptions::default()
        }
    }

    fn run_with(
        &self,
        backend: Arc<dyn Backend>,
        grace: Duration,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        let worker = Worker::new(backend, self.registry(), self.options(grace));
        tokio::spawn(async move { worker.run(stop.cancelled_owned()).await })
    }

    /// Starts in-process workers on `store` when any handler was given.
    pub fn spawn_local(
        &self,
        store: Arc<dyn Store>,
        config: &ServerConfig,
        grace: Duration,
        stop: CancellationToken,
    ) -> anyhow::Result<Option<JoinHandle<()>>> {
        if self.handlers.is_empty() {
            return Ok(None);
        }
        let backend = LocalBackend::new(
            store,
            config.default_retry_policy,
            config.default_owner.clone(),
        );
        Ok(Some(self.run_with(Arc::new(backend), grace, stop)))
    }
}

/// Arguments of `longrun worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    handlers: CommandWorkerArgs,
    /// How long running handlers may take to finish after SIGINT/SIGTERM, seconds.
    #[arg(long, env = "LONGRUN_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    shutdown_grace_secs: u64,
    #[command(flatten)]
    server: ServerArgs,
}

/// `longrun worker`.
pub async fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    init_tracing("info");
    if args.handlers.handlers.is_empty() {
        anyhow::bail!("give at least one --handler NAME=COMMAND");
    }
    let backend = HttpBackend::new(args.server.client()?);
    let stop = CancellationToken::new();
    let grace = Duration::from_secs(args.shutdown_grace_secs);
    let worker = args
        .handlers
        .run_with(Arc::new(backend), grace, stop.clone());
    tracing::info!(server = %args.server.server, "worker started");
    tokio::select! {
        _ = shutdown_signal() => stop.cancel(),
        _ = stop.cancelled() => {}
    }
    worker.await?;
    Ok(ExitCode::SUCCESS)
}
