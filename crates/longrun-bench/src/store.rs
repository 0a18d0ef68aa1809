//! The store under test: a fresh one for every run (a new SQLite file in a temporary
//! directory, or the PostgreSQL database `bench_longrun` dropped and created again), migrated
//! before any timing starts; and the driver's own connection to it, which counts operations
//! the way the peers count their jobs (a `count(*)` on the system's own table).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use longrun_core::Store;
use longrun_postgres::{PgOptions, PgStore};
use longrun_sqlite::SqliteStore;
use rusqlite::Connection;
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgPool};
use tempfile::TempDir;

/// Which engine holds the operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// The embedded SQLite file.
    Sqlite,
    /// PostgreSQL on loopback.
    Postgres,
}

impl StoreKind {
    /// The name used in `system`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// Where the PostgreSQL runs go.
#[derive(Debug, Clone, Args)]
pub struct PgArgs {
    /// The PostgreSQL server, without a database.
    #[arg(
        long,
        env = "BENCH_PG_URL",
        default_value = "postgres://root@127.0.0.1:5432"
    )]
    pub pg_url: String,
    /// An existing database to connect to while dropping and creating the bench database.
    #[arg(long, env = "PG_ADMIN_DB", default_value = "test")]
    pub pg_admin_db: String,
    /// The bench database, dropped and created at the start of every run.
    #[arg(long, default_value = "bench_longrun")]
    pub pg_db: String,
    /// Connections of the server's pool (longrun's default).
    #[arg(long, default_value_t = PgOptions::default().max_connections)]
    pub pg_max_connections: u32,
}

/// The driver's connection to the store.
#[derive(Debug, Clone)]
pub enum Pool {
    /// To the SQLite file.
    Sqlite(SqliteConn),
    /// To the bench database.
    Postgres(PgPool),
}

/// The driver's connection to the SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteConn(Arc<Mutex<Connection>>);

impl SqliteConn {
    /// Runs `f` on the connection, on a blocking thread.
    pub async fn run<T, F>(&self, f: F) -> anyhow::Result<T>
    where
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let conn = self.0.clone();
        let done = tokio::task::spawn_blocking(move || {
            f(&mut conn.lock().expect("no statement panicked"))
        })
        .await??;
        Ok(done)
    }
}

/// A freshly created and migrated store, removed (SQLite) when dropped.
#[derive(Debug)]
pub struct FreshStore {
    /// The URL a server opens it with.
    pub url: String,
    /// The driver's own connection.
    pub pool: Pool,
    _dir: Option<TempDir>,
}

impl FreshStore {
    /// Creates an empty store and applies longrun's migrations to it.
    pub async fn create(kind: StoreKind, pg: &PgArgs) -> anyhow::Result<Self> {
        match kind {
            StoreKind::Sqlite => {
                let dir = tempfile::Builder::new()
                    .prefix("longrun-bench-")
                    .tempdir()?;
                let path = dir.path().join("longrun.db");
                let url = format!("sqlite://{}", path.display());
                SqliteStore::open_default(&url)
                    .await
                    .context("migrating the SQLite file")?
                    .close()
                    .await;
                let conn = Connection::open(&path)?;
                conn.busy_timeout(Duration::from_secs(30))?;
                Ok(Self {
                    url,
                    pool: Pool::Sqlite(SqliteConn(Arc::new(Mutex::new(conn)))),
                    _dir: Some(dir),
                })
            }
            StoreKind::Postgres => {
                let admin = PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&format!("{}/{}", pg.pg_url, pg.pg_admin_db))
                    .await
                    .with_context(|| format!("connecting to {}/{}", pg.pg_url, pg.pg_admin_db))?;
                let db = &pg.pg_db;
                // One statement per call: several in one string would form a transaction
                // block, which DROP/CREATE DATABASE refuse.
                for sql in [
                    format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"),
                    format!("CREATE DATABASE \"{db}\""),
                ] {
                    sqlx::raw_sql(AssertSqlSafe(sql))
                        .execute(&admin)
                        .await
                        .with_context(|| format!("recreating database {db}"))?;
                }
                admin.close().await;
                let url = format!("{}/{db}", pg.pg_url);
                // Dropped, not closed: `PgStore::close` waits for the pool's connections,
                // and its change listener keeps one until the store is dropped.
                drop(
                    PgStore::open_default(&url)
                        .await
                        .context("migrating the PostgreSQL database")?,
                );
                let pool = PgPoolOptions::new()
                    .max_connections(2)
                    .connect(&url)
                    .await?;
                Ok(Self {
                    url,
                    pool: Pool::Postgres(pool),
                    _dir: None,
                })
            }
        }
    }

    /// Flushes what is dirty so that the timed part does not pay for the set-up's writes:
    /// `CHECKPOINT` on PostgreSQL (as the peers do), a truncating WAL checkpoint on SQLite.
    pub async fn checkpoint(&self) -> anyhow::Result<()> {
        match &self.pool {
            Pool::Sqlite(conn) => {
                conn.run(|c| c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)"))
                    .await?;
            }
            Pool::Postgres(pool) => {
                sqlx::query("CHECKPOINT").execute(pool).await?;
            }
        }
        Ok(())
    }

    /// Refreshes the planner's statistics: `ANALYZE` on SQLite, `VACUUM ANALYZE operations` on
    /// PostgreSQL.
    pub async fn analyze(&self) -> anyhow::Result<()> {
        match &self.pool {
            Pool::Sqlite(conn) => {
                conn.run(|c| c.execute_batch("ANALYZE")).await?;
            }
            Pool::Postgres(pool) => {
                sqlx::query("VACUUM ANALYZE operations")
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Operations not finished yet (`pending` or `running`). Cheaper to poll than the
    /// succeeded ones: it reads only the rows still queued, which shrink as the drain goes
    /// on (graphile-worker's poll counts its remaining rows the same way).
    /// On PostgreSQL, the `ready` and `running` tables hold exactly those.
    pub async fn count_unfinished(&self) -> anyhow::Result<u64> {
        self.scalar(
            // Each count walks the partial index of its status.
            "SELECT (SELECT count(*) FROM operations WHERE status = 'pending')
                  + (SELECT count(*) FROM operations WHERE status = 'running')",
            "SELECT (SELECT count(*) FROM ready) + (SELECT count(*) FROM running)",
        )
        .await
    }

    /// Operations recorded as succeeded in the store.
    pub async fn count_succeeded(&self) -> anyhow::Result<u64> {
        self.scalar(
            "SELECT count(*) FROM operations WHERE status = 'succeeded'",
            "SELECT count(*) FROM finished WHERE status = 'succeeded'",
        )
        .await
    }

    /// When the last operation finished, as the store recorded it (`completed_at`, unix
    /// microseconds).
    pub async fn last_completed_micros(&self) -> anyhow::Result<u64> {
        self.scalar(
            "SELECT max(completed_at) FROM operations",
            "SELECT (extract(epoch FROM max(completed_at)) * 1000000)::bigint FROM finished",
        )
        .await
    }

    /// Operations in the store.
    pub async fn count_all(&self) -> anyhow::Result<u64> {
        let sql = "SELECT count(*) FROM operations";
        self.scalar(sql, sql).await
    }

    /// One non-negative integer (a count, a time), by the SQL of the store's kind.
    async fn scalar(&self, sqlite: &'static str, postgres: &'static str) -> anyhow::Result<u64> {
        let n: i64 = match &self.pool {
            Pool::Sqlite(conn) => {
                conn.run(move |c| c.prepare_cached(sqlite)?.query_row([], |row| row.get(0)))
                    .await?
            }
            Pool::Postgres(pool) => sqlx::query_scalar(postgres).fetch_one(pool).await?,
        };
        Ok(u64::try_from(n)?)
    }
}

/// Opens the store at `url` as `longrun serve` does (SQLite with its defaults; PostgreSQL with
/// longrun's default options except the pool size).
pub async fn open(url: &str, pg_max_connections: u32) -> anyhow::Result<Arc<dyn Store>> {
    Ok(if url.starts_with("postgres://") {
        let options = PgOptions {
            max_connections: pg_max_connections,
            ..PgOptions::default()
        };
        Arc::new(PgStore::open(url, options, Arc::new(longrun_core::SystemClock)).await?)
    } else {
        Arc::new(SqliteStore::open_default(url).await?)
    })
}
