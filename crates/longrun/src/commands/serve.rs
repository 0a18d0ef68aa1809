//! `longrun serve` and `longrun migrate`.

use std::{net::SocketAddr, num::NonZeroU32, process::ExitCode, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use clap::Args;
use longrun_core::{RetryPolicy, Store, SystemClock};
use longrun_postgres::{PgOptions, PgStore};
use longrun_server::{AppState, RateLimit, ServerConfig};
use longrun_sqlite::SqliteStore;
use tokio_util::sync::CancellationToken;

use super::{init_tracing, shutdown_signal, worker::CommandWorkerArgs};

/// Where the operations are stored. The flags are global: a command with subcommands (`keys`)
/// takes them before or after its subcommand.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Database URL: `sqlite://PATH` (created if missing) or `postgres://USER@HOST:PORT/DB`.
    #[arg(
        long,
        global = true,
        env = "LONGRUN_DATABASE_URL",
        default_value = "sqlite://longrun.db"
    )]
    database: String,
    /// PostgreSQL: most connections of this process.
    #[arg(long, global = true, env = "LONGRUN_PG_MAX_CONNECTIONS", default_value_t = PgOptions::default().max_connections)]
    pg_max_connections: u32,
    /// PostgreSQL: `statement_timeout`, seconds (0: the server's).
    #[arg(
        long,
        global = true,
        env = "LONGRUN_PG_STATEMENT_TIMEOUT_SECS",
        default_value_t = 30
    )]
    pg_statement_timeout_secs: u64,
    /// PostgreSQL: `idle_in_transaction_session_timeout`, seconds (0: the server's).
    #[arg(
        long,
        global = true,
        env = "LONGRUN_PG_IDLE_IN_TRANSACTION_TIMEOUT_SECS",
        default_value_t = 60
    )]
    pg_idle_in_transaction_timeout_secs: u64,
}

impl DatabaseArgs {
    /// Opens (and migrates) the store.
    pub async fn open(&self) -> anyhow::Result<Arc<dyn Store>> {
        let url = self.database.as_str();
        let secs = |s: u64| (s > 0).then(|| Duration::from_secs(s));
        let store: Arc<dyn Store> =
            if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                let options = PgOptions {
                    max_connections: self.pg_max_connections,
                    statement_timeout: secs(self.pg_statement_timeout_secs),
                    idle_in_transaction_timeout: secs(self.pg_idle_in_transaction_timeout_secs),
                    schema: None,
                };
                Arc::new(
                    PgStore::open(url, options, Arc::new(SystemClock))
                        .await
                        .context("opening the PostgreSQL database")?,
                )
            } else if url.starts_with("sqlite:") || !url.contains("://") {
                Arc::new(
                    SqliteStore::open_default(url)
                        .await
                        .with_context(|| format!("opening the SQLite database {url}"))?,
                )
            } else {
                bail!("unsupported database URL `{url}`: expected sqlite://PATH or postgres://...");
            };
        Ok(store)
    }
}

/// Arguments of `longrun serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "LONGRUN_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    database: DatabaseArgs,
    /// Public base URL of the API (for `Location` and result URLs); default `http://{Host}`.
    #[arg(long, env = "LONGRUN_PUBLIC_URL")]
    public_url: Option<String>,
    /// Largest request body, bytes.
    #[arg(long, env = "LONGRUN_BODY_LIMIT", default_value_t = ServerConfig::default().body_limit_bytes)]
    body_limit: usize,
    /// Largest `args`, `kwargs`, `content` or `result`, bytes of JSON.
    #[arg(long, env = "LONGRUN_MAX_FIELD_BYTES", default_value_t = ServerConfig::default().max_field_bytes)]
    max_field_bytes: usize,
    /// Deepest nesting of arrays and objects in a request body.
    #[arg(long, env = "LONGRUN_MAX_JSON_DEPTH", default_value_t = ServerConfig::default().max_json_depth)]
    max_json_depth: usize,
    /// How long a key read from the database is trusted, seconds: a revoked key keeps working
    /// for at most this long (0: look the key up on every request).
    #[arg(long, env = "LONGRUN_KEY_CACHE_SECS", default_value_t = ServerConfig::default().key_cache_ttl.as_secs_f64())]
    key_cache_secs: f64,
    /// Requests per second each API key may make, sustained (0: no limit).
    #[arg(long, env = "LONGRUN_RATE_LIMIT_PER_SEC", default_value_t = 100)]
    rate_limit_per_sec: u32,
    /// Requests an API key may make at once after a quiet spell.
    #[arg(long, env = "LONGRUN_RATE_LIMIT_BURST", default_value_t = 200)]
    rate_limit_burst: u32,
    /// Default retries after the first attempt.
    #[arg(long, env = "LONGRUN_MAX_RETRIES", default_value_t = RetryPolicy::default().max_retries)]
    max_retries: u32,
    /// Default backoff before the first retry, seconds (doubles each retry, with jitter).
    #[arg(long, env = "LONGRUN_BACKOFF_BASE_SECS", default_value_t = RetryPolicy::default().backoff_base_secs)]
    backoff_base_secs: f64,
    /// Default longest backoff, seconds.
    #[arg(long, env = "LONGRUN_BACKOFF_CAP_SECS", default_value_t = RetryPolicy::default().backoff_cap_secs)]
    backoff_cap_secs: f64,
    /// Delete finished operations this many hours after they finished (0: keep forever).
    #[arg(long, env = "LONGRUN_RETENTION_HOURS", default_value_t = 7 * 24)]
    retention_hours: u64,
    /// Name recorded as `createdByName` on submitted operations.
    #[arg(long, env = "LONGRUN_DEFAULT_USER_NAME", default_value = "default")]
    default_user_name: String,
    /// How long running handlers may take to finish after SIGINT/SIGTERM, seconds.
    #[arg(long, env = "LONGRUN_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    shutdown_grace_secs: u64,
    /// In-process handlers, as for `longrun worker`.
    #[command(flatten)]
    handlers: CommandWorkerArgs,
}

/// Arguments of `longrun migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    database: DatabaseArgs,
}

/// `longrun migrate`: opening a store applies its migrations.
pub async fn migrate(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    args.database.open().await?;
    println!("database is up to date");
    Ok(ExitCode::SUCCESS)
}

/// `longrun serve`.
pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_tracing("info");
    let store = args.database.open().await?;
    let mut config = ServerConfig {
        body_limit_bytes: args.body_limit,
        max_field_bytes: args.max_field_bytes,
        max_json_depth: args.max_json_depth,
        rate_limit: NonZeroU32::new(args.rate_limit_per_sec).map(|per_second| RateLimit {
            per_second,
            burst: NonZeroU32::new(args.rate_limit_burst).unwrap_or(per_second),
        }),
        key_cache_ttl: Duration::try_from_secs_f64(args.key_cache_secs)
            .context("--key-cache-secs: a number of seconds, 0 or more")?,
        default_retry_policy: RetryPolicy {
            max_retries: args.max_retries,
            backoff_base_secs: args.backoff_base_secs,
            backoff_cap_secs: args.backoff_cap_secs,
        },
        public_url: args.public_url,
        retention: (args.retention_hours > 0).then(|| {
            time::Duration::hours(i64::try_from(args.retention_hours).unwrap_or(i64::MAX / 3600))
        }),
        ..ServerConfig::default()
    };
    config.default_owner.user_name = args.default_user_name;
    let config = Arc::new(config);

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(address = %listener.local_addr()?, database = %args.database.database, "longrun is serving");

    let stop = CancellationToken::new();
    let maintenance =
        longrun_server::spawn_maintenance(store.clone(), config.clone(), stop.clone());
    let grace = Duration::from_secs(args.shutdown_grace_secs);
    let workers = args
        .handlers
        .spawn_local(store.clone(), &config, grace, stop.clone())?;

    let state = AppState { store, config };
    let signal = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!(
            "shutting down: no new work is claimed; running handlers get the grace period"
        );
        signal.cancel();
    });
    longrun_server::serve(listener, state, stop.clone().cancelled_owned()).await?;
    stop.cancel();
    if let Some(workers) = workers {
        workers.await.ok();
    }
    maintenance.await.ok();
    Ok(ExitCode::SUCCESS)
}
