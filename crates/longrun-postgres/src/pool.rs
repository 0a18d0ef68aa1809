//! The connections of the request path.
//!
//! sqlx's pool tests a connection with a round trip when it hands it out
//! (`test_before_acquire`) and, always, when it takes it back: a status read cost three round
//! trips and a spawned task, a write batch or a claim two more than its statements. This pool
//! hands an idle connection out as it is and takes it back as it is. A connection that died
//! while idle (a database restart, `pg_terminate_backend`) shows it at its first statement:
//! [`Pool::begin`] and the reads ([`Pool::fetch_optional`], [`Pool::fetch_all`]) then drop
//! every idle connection (a restart seldom takes one alone) and run once more on a new one,
//! which is safe because nothing was done yet. A transaction dropped before its end (its
//! caller went away) is rolled back before its connection is used again, by a spawned task,
//! so its row locks do not outlive the call.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use longrun_core::StoreError;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgRow};
use sqlx::query::Query;
use sqlx::{ConnectOptions, Connection, PgConnection, Postgres};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::row::db;

/// Connections to one database, at most `max` at once, made when first needed.
#[derive(Debug, Clone)]
pub(crate) struct Pool(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    connect: PgConnectOptions,
    idle: Mutex<Vec<PgConnection>>,
    permits: Arc<Semaphore>,
    acquire_timeout: Duration,
}

/// A statement of a read, built again for a second attempt.
type Read<'q> = Query<'q, Postgres, PgArguments>;

impl Pool {
    /// A pool of at most `max` connections made with `connect`; a caller waits at most
    /// `acquire_timeout` for one.
    pub(crate) fn new(connect: PgConnectOptions, max: u32, acquire_timeout: Duration) -> Self {
        Self(Arc::new(Inner {
            connect,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(max.max(1) as usize)),
            acquire_timeout,
        }))
    }

    /// A connection as it was left: the most recently used idle one, else a new one.
    pub(crate) async fn acquire(&self) -> Result<Conn, StoreError> {
        let deadline = tokio::time::Instant::now() + self.0.acquire_timeout;
        let timed_out = || {
            db(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no database connection within {:?}", self.0.acquire_timeout),
            ))
        };
        let permit = tokio::time::timeout_at(deadline, self.0.permits.clone().acquire_owned())
            .await
            .map_err(|_| timed_out())?
            .map_err(|_| db(sqlx::Error::PoolClosed))?;
        let idle = self.0.idle.lock().expect("pool lock").pop();
        let conn = match idle {
            Some(conn) => conn,
            None => tokio::time::timeout_at(deadline, self.0.connect.connect())
                .await
                .map_err(|_| timed_out())?
                .map_err(db)?,
        };
        Ok(Conn {
            conn: Some(conn),
            pool: self.0.clone(),
            permit: Some(permit),
            in_transaction: false,
        })
    }

    /// A connection in a new transaction; end it with [`Conn::commit`] (dropped, it rolls
    /// back).
    pub(crate) async fn begin(&self) -> Result<Conn, StoreError> {
        self.begin_with("BEGIN").await
    }

    /// [`Pool::begin`] with `begin`, statements that open a transaction and set it up, sent in
    /// one round trip.
    pub(crate) async fn begin_with(&self, begin: &'static str) -> Result<Conn, StoreError> {
        // In a transaction from the moment `BEGIN` may reach the server: should the caller go
        // away before the answer, the connection is rolled back before it is used again.
        let mut conn = self.acquire().await?;
        conn.in_transaction = true;
        if let Err(e) = sqlx::raw_sql(begin).execute(&mut *conn).await {
            if !lost(&e) {
                return Err(db(e));
            }
            self.discard(conn);
            conn = self.acquire().await?;
            conn.in_transaction = true;
            let begun = sqlx::raw_sql(begin).execute(&mut *conn).await;
            self.checked(&mut conn, begun)?;
        }
        Ok(conn)
    }

    /// The first row `statement` reads, if any (for statements that read one row at most).
    pub(crate) async fn fetch_optional<'q>(
        &self,
        statement: impl Fn() -> Read<'q>,
    ) -> Result<Option<PgRow>, StoreError> {
        Ok(self.fetch_all(statement).await?.into_iter().next())
    }

    /// The rows `statement` reads.
    pub(crate) async fn fetch_all<'q>(
        &self,
        statement: impl Fn() -> Read<'q>,
    ) -> Result<Vec<PgRow>, StoreError> {
        let mut conn = self.acquire().await?;
        match statement().fetch_all(&mut *conn).await {
            Err(e) if lost(&e) => {
                self.discard(conn);
                let mut conn = self.acquire().await?;
                let rows = statement().fetch_all(&mut *conn).await;
                self.checked(&mut conn, rows)
            }
            other => other.map_err(db),
        }
    }

    /// Runs one statement in a transaction of its own (not run again: it may have committed).
    pub(crate) async fn execute(&self, statement: Read<'_>) -> Result<(), StoreError> {
        let mut conn = self.acquire().await?;
        let done = statement.execute(&mut *conn).await;
        self.checked(&mut conn, done).map(drop)
    }

    /// `result` of a statement on `conn`; a connection it shows lost is not given back, and
    /// the idle ones go with it.
    fn checked<T>(&self, conn: &mut Conn, result: Result<T, sqlx::Error>) -> Result<T, StoreError> {
        if let Err(e) = &result
            && lost(e)
        {
            conn.conn = None;
            self.0.idle.lock().expect("pool lock").clear();
        }
        result.map_err(db)
    }

    /// Drops a lost connection, and every idle one with it.
    fn discard(&self, mut conn: Conn) {
        conn.conn = None;
        self.0.idle.lock().expect("pool lock").clear();
    }

    /// Refuses new callers and closes the idle connections (those in use close when given
    /// back).
    pub(crate) async fn close(&self) {
        self.0.permits.close();
        let idle = std::mem::take(&mut *self.0.idle.lock().expect("pool lock"));
        for conn in idle {
            let _ = conn.close().await;
        }
    }
}

/// Whether `e` says the connection is gone.
fn lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
        // Class 08: connection exception; 57P01-57P03: the server is shutting down, or this
        // backend was terminated.
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P0")),
        _ => false,
    }
}

/// A connection taken from a [`Pool`]; given back when dropped.
#[derive(Debug)]
pub(crate) struct Conn {
    conn: Option<PgConnection>,
    pool: Arc<Inner>,
    permit: Option<OwnedSemaphorePermit>,
    in_transaction: bool,
}

impl Conn {
    /// Commits the transaction [`Pool::begin`] opened.
    pub(crate) async fn commit(self) -> Result<(), StoreError> {
        self.end("COMMIT").await
    }

    /// Rolls the transaction back now.
    pub(crate) async fn rollback(self) -> Result<(), StoreError> {
        self.end("ROLLBACK").await
    }

    async fn end(mut self, statement: &'static str) -> Result<(), StoreError> {
        sqlx::raw_sql(statement)
            .execute(&mut *self)
            .await
            .map_err(db)?;
        self.in_transaction = false;
        Ok(())
    }
}

impl std::ops::Deref for Conn {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn.as_ref().expect("a connection until dropped")
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("a connection until dropped")
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let (pool, permit) = (self.pool.clone(), self.permit.take());
        // A transaction left open, or a statement cut off midway: settle the connection
        // first, off the caller's path; a connection that cannot is dropped.
        if self.in_transaction || conn.should_flush() {
            let rollback = self.in_transaction;
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let settled = if rollback {
                        sqlx::raw_sql("ROLLBACK").execute(&mut conn).await.map(drop)
                    } else {
                        conn.ping().await
                    };
                    if settled.is_ok() {
                        pool.give_back(conn);
                    }
                    drop(permit);
                });
            }
            return;
        }
        pool.give_back(conn);
        drop(permit);
    }
}

impl Inner {
    fn give_back(&self, conn: PgConnection) {
        if !self.permits.is_closed() {
            self.idle.lock().expect("pool lock").push(conn);
        }
    }
}
