//! The store conformance suite against PostgreSQL: each case in a schema of its own, created
//! on a database of the machine's server (`LONGRUN_TEST_DATABASE_URL`, default
//! `postgres://root@127.0.0.1:5432/test`) and dropped afterwards.

use std::sync::Arc;

use longrun_core::conformance::StoreFactory;
use longrun_core::{Clock, Store};
use longrun_postgres::{PgOptions, PgStore};

/// A fresh schema per case, dropped when the case ends.
struct Postgres {
    url: String,
    schema: String,
}

impl Postgres {
    fn new() -> Self {
        let url = std::env::var("LONGRUN_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into());
        let schema = format!("longrun_test_{}", uuid::Uuid::new_v4().simple());
        Self { url, schema }
    }

    fn admin(&self) -> std::process::Command {
        let mut psql = std::process::Command::new("psql");
        psql.args([self.url.as_str(), "-q", "-v", "ON_ERROR_STOP=1", "-c"]);
        psql
    }
}

impl StoreFactory for Postgres {
    async fn fresh(&self, clock: Arc<dyn Clock>) -> Arc<dyn Store> {
        let created = self
            .admin()
            .arg(format!("CREATE SCHEMA {}", self.schema))
            .status()
            .expect("run psql");
        assert!(created.success(), "creating schema {}", self.schema);
        let options = PgOptions {
            schema: Some(self.schema.clone()),
            max_connections: 8,
            ..PgOptions::default()
        };
        Arc::new(
            PgStore::open(&self.url, options, clock)
                .await
                .expect("open PostgreSQL store"),
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .admin()
            .arg(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .status();
    }
}

longrun_core::conformance_tests!(Postgres::new());

/// Closing a store returns once its statements are done, even while it listens for changes.
#[tokio::test]
async fn close_returns_while_listening() {
    let factory = Postgres::new();
    let created = factory
        .admin()
        .arg(format!("CREATE SCHEMA {}", factory.schema))
        .status()
        .expect("run psql");
    assert!(created.success());
    let options = PgOptions {
        schema: Some(factory.schema.clone()),
        ..PgOptions::default()
    };
    let store = PgStore::open(&factory.url, options, Arc::new(longrun_core::SystemClock))
        .await
        .expect("open");
    tokio::time::timeout(std::time::Duration::from_secs(10), store.close())
        .await
        .expect("close returns");
}
