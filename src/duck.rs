//! Opening DuckDB the one safe way: extension auto-install and auto-load are off on every
//! connection, so SQL that needs an extension this build lacks (ICU's `TIMESTAMPTZ`,
//! `AT TIME ZONE`) fails at once instead of trying the network. Owns no model SQL: only the catalogue look-ups
//! every caller needs (does a table exist).

use std::path::Path;

pub use duckdb::Connection;

/// Settings applied to every connection.
pub const SAFE_SETTINGS: &str = "SET autoinstall_known_extensions = false;\n\
SET autoload_known_extensions = false;\n";

/// An in-memory database with `threads` worker threads (0 keeps DuckDB's default).
pub fn in_memory(threads: usize) -> duckdb::Result<Connection> {
    let conn = Connection::open_in_memory()?;
    configure(&conn, threads)?;
    Ok(conn)
}

/// A database file.
pub fn open(path: &Path, threads: usize) -> duckdb::Result<Connection> {
    let conn = Connection::open(path)?;
    configure(&conn, threads)?;
    Ok(conn)
}

/// A database file, read-only (a reader beside the builds: it never blocks a publication).
pub fn open_read_only(path: &Path) -> duckdb::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        duckdb::Config::default().access_mode(duckdb::AccessMode::ReadOnly)?,
    )?;
    configure(&conn, 0)?;
    Ok(conn)
}

fn configure(conn: &Connection, threads: usize) -> duckdb::Result<()> {
    conn.execute_batch(SAFE_SETTINGS)?;
    if threads > 0 {
        conn.execute_batch(&format!("SET threads = {threads};"))?;
    }
    Ok(())
}

/// `BASE TABLE`, `VIEW`, or `None` when `name` does not exist in the main schema.
pub fn object_kind(conn: &Connection, name: &str) -> duckdb::Result<Option<String>> {
    let mut stmt = conn.prepare(
        "SELECT table_type FROM information_schema.tables \
         WHERE table_catalog = current_database() AND table_schema = 'main' AND table_name = ?",
    )?;
    let mut rows = stmt.query([name])?;
    match rows.next()? {
        Some(r) => Ok(Some(r.get(0)?)),
        None => Ok(None),
    }
}

/// Whether `name` is a table of the main schema of the connection's own database (not of one
/// attached to it: the ledger's connection attaches the warehouse, which holds copies of the
/// ledger's tables).
pub fn table_exists(conn: &Connection, name: &str) -> duckdb::Result<bool> {
    Ok(object_kind(conn, name)?.as_deref() == Some("BASE TABLE"))
}

/// Whether `name` is a table of the database attached as `db` (the published warehouse a
/// publish attaches as `wh`, say).
pub fn attached_table_exists(conn: &Connection, db: &str, name: &str) -> duckdb::Result<bool> {
    conn.query_row(
        "SELECT count(*) > 0 FROM duckdb_tables() WHERE database_name = ? AND table_name = ?",
        [db, name],
        |r| r.get(0),
    )
}

/// Quotes a string as a SQL literal.
pub fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_zone_sql_fails_fast_without_network() {
        let conn = in_memory(1).unwrap();
        let t0 = std::time::Instant::now();
        let r = conn.execute_batch(
            "SELECT TIMESTAMPTZ '2026-08-01 00:00:00+07' AT TIME ZONE 'Asia/Ho_Chi_Minh';",
        );
        assert!(r.is_err(), "ICU is not bundled; this must fail");
        assert!(t0.elapsed().as_secs() < 5, "no network attempt");
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM (SELECT TIMESTAMP '2026-08-01 07:00:00' AS t)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1);
    }

    /// A ledger opened fresh beside a warehouse holding the ledger's copies (a ledger lost or
    /// moved, a warehouse copied from elsewhere): the attached warehouse's tables are not the
    /// ledger's (before: `table_exists` said yes, and every publish failed with "Table with name
    /// pub_index_unit_period does not exist").
    #[test]
    fn an_attached_database_s_tables_are_not_the_connection_s() {
        let conn = in_memory(1).unwrap();
        conn.execute_batch(
            "ATTACH ':memory:' AS wh; CREATE TABLE wh.pub_index_unit_period (x INTEGER); CREATE VIEW v AS SELECT 1;",
        )
        .unwrap();
        assert!(!table_exists(&conn, "pub_index_unit_period").unwrap());
        assert!(attached_table_exists(&conn, "wh", "pub_index_unit_period").unwrap());
        assert_eq!(object_kind(&conn, "v").unwrap().as_deref(), Some("VIEW"));
        conn.execute_batch("CREATE TABLE pub_index_unit_period (x INTEGER);")
            .unwrap();
        assert!(table_exists(&conn, "pub_index_unit_period").unwrap());
    }
}
