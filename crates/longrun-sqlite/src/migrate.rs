//! The schema: the SQL files in `migrations/`, compiled in and applied in order. The file's
//! `PRAGMA user_version` counts those applied. Checking and applying happen in one
//! `BEGIN IMMEDIATE` transaction, so two processes opening one fresh file do not both migrate.

use longrun_core::StoreError;
use rusqlite::{Connection, OptionalExtension};

use crate::conn::begin;
use crate::row::db;

/// Every migration, in order.
const MIGRATIONS: [&str; 6] = [
    include_str!("../migrations/0001_operations.sql"),
    include_str!("../migrations/0002_api_keys.sql"),
    include_str!("../migrations/0003_claim_indexes.sql"),
    include_str!("../migrations/0004_claims.sql"),
    include_str!("../migrations/0005_binary_ids.sql"),
    include_str!("../migrations/0006_claims_without_lease_index.sql"),
];

/// Brings the schema up to date.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = begin(conn)?;
    let applied = applied(&tx).map_err(db)? as usize;
    if applied > MIGRATIONS.len() {
        return Err(StoreError::database(std::io::Error::other(format!(
            "the database has schema version {applied}; this longrun knows {}",
            MIGRATIONS.len()
        ))));
    }
    if applied == MIGRATIONS.len() {
        return Ok(());
    }
    for sql in &MIGRATIONS[applied..] {
        tx.execute_batch(sql).map_err(db)?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len() as u32)
        .map_err(db)?;
    tx.commit().map_err(db)
}

/// How many migrations the file has: its `user_version`, or for a file that sqlx's migrator
/// set up (longrun before rusqlite), the successful migrations recorded in its table.
fn applied(conn: &Connection) -> rusqlite::Result<u32> {
    let version: u32 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version > 0 {
        return Ok(version);
    }
    let sqlx_table = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
            [],
            |_| Ok(()),
        )
        .optional()?;
    match sqlx_table {
        Some(()) => conn.query_row(
            "SELECT count(*) FROM _sqlx_migrations WHERE success",
            [],
            |row| row.get(0),
        ),
        None => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        stmt.query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn user_version(conn: &Connection) -> usize {
        conn.pragma_query_value(None, "user_version", |row| row.get::<_, u32>(0))
            .unwrap() as usize
    }

    #[test]
    fn a_fresh_file_gets_every_migration_once() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(user_version(&conn), MIGRATIONS.len());
        migrate(&mut conn).expect("nothing left to apply");
        let operations_ready: String = conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE name = 'operations_ready'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert!(
            operations_ready.contains("run_at, name, queue"),
            "0003 applied"
        );
    }

    #[test]
    fn a_file_migrated_by_sqlx_is_taken_as_it_is() {
        let mut conn = Connection::open_in_memory().unwrap();
        // What sqlx's migrator left: the first two migrations and its record of them.
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(MIGRATIONS[1]).unwrap();
        conn.execute_batch(
            "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL,
                 installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
                 success BOOLEAN NOT NULL, checksum BLOB NOT NULL, execution_time BIGINT NOT NULL);
             INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (1, 'operations', TRUE, x'00', 1), (2, 'api keys', TRUE, x'00', 1);",
        )
        .unwrap();
        migrate(&mut conn).expect("only the later migrations are applied");
        assert_eq!(user_version(&conn), MIGRATIONS.len());
        assert_eq!(
            tables(&conn),
            [
                "_sqlx_migrations",
                "api_keys",
                "claims",
                "operations",
                "sqlite_sequence"
            ]
        );
    }

    /// The indexes of `operations`: name and definition.
    fn indexes(conn: &Connection) -> Vec<(String, Option<String>)> {
        let mut stmt = conn
            .prepare(
                "SELECT name, sql FROM sqlite_master
                 WHERE type = 'index' AND tbl_name = 'operations' ORDER BY name",
            )
            .unwrap();
        stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn rebuilding_operations_for_binary_ids_keeps_its_indexes() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..4] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 4).unwrap();
        let before = indexes(&conn);
        migrate(&mut conn).unwrap();
        assert_eq!(indexes(&conn), before);
        let id_type: String = conn
            .query_row(
                "SELECT type FROM pragma_table_info('operations') WHERE name = 'id'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(id_type, "BLOB");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", MIGRATIONS.len() as u32 + 1)
            .unwrap();
        assert!(matches!(migrate(&mut conn), Err(StoreError::Database(_))));
    }
}
