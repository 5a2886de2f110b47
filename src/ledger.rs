//! The publication ledger: every revision of a period's published index, its rows, and what
//! each portal acknowledged, in `warehouse/publications.duckdb`.
//!
//! - `pub_revisions`: one row per (period, revision): status, when, the methodology, the data
//!   watermark, the digest of the model SQL, the build it was read from, the change note, the
//!   warnings and the reasons they were accepted. Final revisions are numbered 1, 2, … per
//!   period and never change; a period's preview (provisional, never sent) is revision 0, one
//!   per period, replaced by the next preview and deleted once the period is final.
//! - `pub_index_unit_period`, `pub_index_indicator`: the marts' rows as published, with the
//!   revision. Their columns follow the marts (new mart columns are added, never removed).
//! - `pub_receipts`: one row per (target, period, revision) of a final revision: pending until
//!   the portal acknowledged it, then acknowledged with the portal's receipt; superseded when a
//!   newer final revision of the period was recorded before it was delivered (never sent).
//!
//! Only `chiso publish` writes it (under `_state/_publish/lock`). Every build copies it into
//! the published warehouse ([`copy_into`]) with views of the latest revision per period and
//! `pub_revision_pending`, so BI tools read what was published beside the marts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::duck;

pub const FILE: &str = "publications.duckdb";

/// The ledger's tables, in the order they are copied.
pub const TABLES: [&str; 4] = [
    "pub_revisions",
    "pub_index_unit_period",
    "pub_index_indicator",
    "pub_receipts",
];

/// The measures a revision compares, per published mart (besides its key): the numbers and
/// the tree they are published in. Everything else is presentation, derived or bookkeeping
/// (the unit's name, its rank among siblings and its change from the previous period, when it
/// was computed, how far the data reached, the moment a live period is judged at) and never
/// makes a revision by itself, so a late dossier of March does not cascade into April, and a
/// new mart column does not make every final period "changed".
pub const MEASURES: [(&str, &[&str]); 2] = [
    (
        "mart_index_unit_period",
        &[
            "unit_level",
            "parent_unit_id",
            "ckmb",
            "tdgq",
            "clgq",
            "tttt",
            "mdsh",
            "mdhl",
            "total",
            "status",
            "methodology",
        ],
    ),
    (
        "mart_index_indicator",
        &[
            "group_code",
            "numerator",
            "denominator",
            "ratio",
            "points",
            "max_points",
            "methodology",
        ],
    ),
];

/// The measures of `mart` ([`MEASURES`]).
pub fn measures(mart: &str) -> &'static [&'static str] {
    MEASURES
        .iter()
        .find(|(m, _)| *m == mart)
        .map_or(&[], |(_, c)| c)
}

/// The marts a revision publishes, with the ledger table each is kept in and its key.
pub const PUBLISHED: [(&str, &str, &[&str]); 2] = [
    (
        "mart_index_unit_period",
        "pub_index_unit_period",
        &["unit_id"],
    ),
    (
        "mart_index_indicator",
        "pub_index_indicator",
        &["unit_id", "indicator"],
    ),
];

/// Columns added to `pub_revisions` since the first ledgers, added to an older ledger when it
/// is opened for writing and to its copy in a warehouse (so the views over them are made on a
/// ledger no publish has opened since): what a revision was made from (the lake position per
/// dataset its build read, each model's SQL digest, the methodology rows of its version), the
/// revision policy a final was recorded under and until when its period is open to routine
/// revisions (from its revision 1; NULL: always), and a correction's reason.
const MIGRATIONS: &str = "
ALTER TABLE pub_revisions ADD COLUMN IF NOT EXISTS lake_position JSON;
ALTER TABLE pub_revisions ADD COLUMN IF NOT EXISTS model_digests JSON;
ALTER TABLE pub_revisions ADD COLUMN IF NOT EXISTS methodology_rows JSON;
ALTER TABLE pub_revisions ADD COLUMN IF NOT EXISTS revision_policy VARCHAR;
ALTER TABLE pub_revisions ADD COLUMN IF NOT EXISTS open_until TIMESTAMP;
ALTER TABLE pub_revisions ADD COLUMN IF NOT EXISTS correction VARCHAR;
";

/// Now as the project's wall-clock time (Asia/Ho_Chi_Minh, UTC+7 all year), the same in any
/// client session whatever its time zone setting, for the views a BI tool reads; a session
/// that sets `SET VARIABLE chiso_now = TIMESTAMP '…'` asks them as of that moment (what was
/// open to revision on a date). chiso's own statements use [`crate::time::now_sql`].
pub const NOW_LOCAL: &str = "coalesce(CAST(getvariable('chiso_now') AS TIMESTAMP), make_timestamp(epoch_us(get_current_timestamp()) + 25200000000))";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pub_revisions (
    period VARCHAR NOT NULL,
    revision INTEGER NOT NULL,
    status VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    methodology VARCHAR,
    data_watermark TIMESTAMP,
    sql_digest VARCHAR,
    build_id VARCHAR,
    build_started_at VARCHAR,
    previous_revision INTEGER,
    units INTEGER,
    note VARCHAR,
    change_note JSON,
    warnings JSON,
    accepted VARCHAR,
    chiso_version VARCHAR,
    PRIMARY KEY (period, revision)
);

CREATE TABLE IF NOT EXISTS pub_receipts (
    target VARCHAR NOT NULL,
    period VARCHAR NOT NULL,
    revision INTEGER NOT NULL,
    idempotency_key VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    attempts INTEGER NOT NULL,
    last_error VARCHAR,
    acknowledged_at TIMESTAMP,
    portal_receipt VARCHAR,
    duplicate BOOLEAN,
    PRIMARY KEY (target, period, revision)
);
";

/// The key a portal deduplicates a push on: one per target, period, revision and payload
/// (`digest`, [`crate::publish::push::content_digest`]), so that a key is never sent with other
/// bytes (kept in `pub_receipts`).
pub fn idempotency_key(target: &str, period: &str, revision: i64, digest: &str) -> String {
    format!("chiso/{target}/{period}/rev-{revision}/{digest}")
}

pub fn path(warehouse: &Path) -> PathBuf {
    warehouse.join(FILE)
}

/// Opens the ledger for writing, creating its tables. Waits up to `wait` for a build that is
/// copying it (DuckDB lets one process write a file, or several read it).
pub fn open(warehouse: &Path, wait: Duration) -> anyhow::Result<duck::Connection> {
    let p = path(warehouse);
    let conn = retry_locked(wait, || duck::open(&p, 1))
        .with_context(|| format!("opening the publication ledger {}", p.display()))?;
    conn.execute_batch(SCHEMA)
        .and_then(|_| conn.execute_batch(MIGRATIONS))
        .context("creating the ledger's tables")?;
    Ok(conn)
}

/// Opens the ledger read-only, if it exists.
pub fn open_read_only(
    warehouse: &Path,
    wait: Duration,
) -> anyhow::Result<Option<duck::Connection>> {
    let p = path(warehouse);
    if !p.exists() {
        return Ok(None);
    }
    let conn = retry_locked(wait, || duck::open_read_only(&p))
        .with_context(|| format!("opening the publication ledger {}", p.display()))?;
    Ok(Some(conn))
}

fn retry_locked<T>(wait: Duration, mut f: impl FnMut() -> duckdb::Result<T>) -> duckdb::Result<T> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        match f() {
            Err(e) if is_lock_error(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

fn is_lock_error(e: &duckdb::Error) -> bool {
    let s = e.to_string();
    s.contains("Could not set lock") || s.contains("Conflicting lock")
}

/// The columns of `table` in database `db` (`main` of the connection when `None`), in order.
pub fn columns(
    conn: &duck::Connection,
    db: Option<&str>,
    table: &str,
) -> duckdb::Result<Vec<String>> {
    Ok(column_types(conn, db, table)?
        .into_iter()
        .map(|(name, _)| name)
        .collect())
}

/// The columns of `table` in database `db` with their DuckDB types, in order.
pub fn column_types(
    conn: &duck::Connection,
    db: Option<&str>,
    table: &str,
) -> duckdb::Result<Vec<(String, String)>> {
    let mut stmt = conn.prepare(
        "SELECT column_name, data_type FROM duckdb_columns() \
         WHERE table_name = ? AND database_name = coalesce(?, current_database()) \
         ORDER BY column_index",
    )?;
    let rows = stmt.query_map(duckdb::params![table, db], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// Copies the ledger into the build file `conn` is writing (called by every build before it
/// publishes), and makes the views over it. Without a ledger nothing is made. When a publish
/// holds the ledger for longer than a few seconds the copies the build file started with are
/// kept (one publication behind at most) and the next build brings them up to date.
pub fn copy_into(conn: &duck::Connection, warehouse: &Path) -> anyhow::Result<()> {
    let p = path(warehouse);
    if !p.exists() {
        // No ledger (moved, or restored without it): the copy the file has stays, and what
        // moved since its finals is still made against this build's marts.
        return views(conn);
    }
    let attach = format!(
        "ATTACH {} AS chiso_ledger (READ_ONLY)",
        duck::lit(&p.display().to_string())
    );
    match retry_locked(Duration::from_secs(5), || conn.execute_batch(&attach)) {
        Ok(()) => {}
        Err(e) if is_lock_error(&e) => {
            tracing::warn!(error = %e, "The publication ledger is busy: the warehouse keeps the publications it had; the next build copies them.");
            return views(conn);
        }
        Err(e) => {
            // The previous copy stays; what moved since its finals is still the new marts'.
            views(conn)?;
            return Err(e).context("attaching the publication ledger");
        }
    }
    let copied = (|| -> anyhow::Result<()> {
        for t in TABLES {
            if columns(conn, Some("chiso_ledger"), t)?.is_empty() {
                continue;
            }
            conn.execute_batch(&format!(
                "CREATE OR REPLACE TABLE {t} AS SELECT * FROM chiso_ledger.{t};"
            ))
            .with_context(|| format!("copying {t} from the publication ledger"))?;
        }
        Ok(())
    })();
    conn.execute_batch("DETACH chiso_ledger;")?;
    // Whatever was copied, `pub_revision_pending` is made against this build's marts.
    let made = views(conn);
    copied?;
    made
}

/// The views BI tools read: the latest revision of each period and its rows, and what a build
/// changed of a final period since its latest final revision (`pub_revision_pending`).
fn views(conn: &duck::Connection) -> anyhow::Result<()> {
    if !duck::table_exists(conn, "pub_revisions")? {
        return Ok(());
    }
    // A copy of a ledger no publish has opened since these columns came.
    conn.execute_batch(MIGRATIONS)?;
    // Finals only: a preview (revision 0) is not a publication.
    conn.execute_batch(
        "CREATE OR REPLACE VIEW pub_latest_revisions AS
           SELECT * FROM pub_revisions WHERE status = 'final'
           QUALIFY row_number() OVER (PARTITION BY period ORDER BY revision DESC) = 1;
         CREATE OR REPLACE VIEW pub_latest_previews AS
           SELECT * FROM pub_revisions WHERE status = 'provisional'
           QUALIFY row_number() OVER (PARTITION BY period ORDER BY created_at DESC) = 1;",
    )?;
    if duck::table_exists(conn, "pub_receipts")? {
        // What each portal holds: per target and period, the newest final revision it
        // acknowledged.
        conn.execute_batch(
            "CREATE OR REPLACE VIEW pub_latest_published_revisions AS
               SELECT c.target, c.acknowledged_at, c.portal_receipt, r.*
               FROM pub_receipts AS c JOIN pub_revisions AS r USING (period, revision)
               WHERE c.status = 'acknowledged'
               QUALIFY row_number() OVER (PARTITION BY c.target, r.period ORDER BY r.revision DESC) = 1;",
        )?;
    }
    for (_, table, _) in PUBLISHED {
        if !duck::table_exists(conn, table)? {
            continue;
        }
        let rest = table.trim_start_matches("pub_");
        conn.execute_batch(&format!(
            "CREATE OR REPLACE VIEW pub_latest_{rest} AS
               SELECT t.* FROM {table} AS t JOIN pub_latest_revisions AS r USING (period, revision);
             CREATE OR REPLACE VIEW pub_latest_preview_{rest} AS
               SELECT t.* FROM {table} AS t JOIN pub_latest_previews AS r USING (period, revision);"
        ))?;
        if duck::table_exists(conn, "pub_receipts")? {
            conn.execute_batch(&format!(
                "CREATE OR REPLACE VIEW pub_latest_published_{rest} AS
                   SELECT r.target, t.* FROM {table} AS t
                   JOIN pub_latest_published_revisions AS r USING (period, revision);"
            ))?;
        }
    }
    conn.execute_batch(&pending_sql(conn)?)?;
    // Vintages: what had been published (final revisions) at a time, per period.
    conn.execute_batch(
        "CREATE OR REPLACE MACRO pub_revisions_as_of(ts) AS TABLE
           SELECT * FROM pub_revisions WHERE status = 'final' AND created_at <= CAST(ts AS TIMESTAMP)
           QUALIFY row_number() OVER (PARTITION BY period ORDER BY revision DESC) = 1;",
    )?;
    for (_, table, _) in PUBLISHED {
        if duck::table_exists(conn, table)? {
            let rest = table.trim_start_matches("pub_");
            conn.execute_batch(&format!(
                "CREATE OR REPLACE MACRO pub_{rest}_as_of(ts) AS TABLE
                   SELECT t.* FROM {table} AS t JOIN pub_revisions_as_of(ts) AS r USING (period, revision);"
            ))?;
        }
    }
    if duck::table_exists(conn, "int_period_judgement")? {
        // The release calendar: when each period becomes final (its end plus the grace, once
        // every feed reached it) and may be published, what was published of it, and until
        // when it is open to routine revisions.
        conn.execute_batch(&format!(
            "CREATE OR REPLACE VIEW pub_release_calendar AS
             WITH finals AS (
                 SELECT period, min(created_at) AS first_published_at, max(revision) AS latest_revision,
                        arg_max(open_until, revision) AS open_until, arg_max(revision_policy, revision) AS revision_policy
                 FROM pub_revisions WHERE status = 'final' GROUP BY period
             )
             SELECT j.period, j.period_type, j.starts_on, j.ends_before, j.status,
                    j.final_from AS publishable_from, j.feeds_waiting,
                    f.first_published_at, f.latest_revision, f.revision_policy, f.open_until,
                    CASE WHEN f.period IS NULL AND j.status = 'final' THEN 'due'
                         WHEN f.period IS NULL THEN 'not final yet'
                         WHEN f.open_until IS NULL OR f.open_until > {now}
                           THEN 'published, open to revisions'
                         ELSE 'published, closed (corrections only)' END AS publication
             FROM int_period_judgement AS j LEFT JOIN finals AS f USING (period)
             WHERE j.is_reported
             ORDER BY j.starts_on, j.period_type;",
            now = NOW_LOCAL
        ))?;
    }
    Ok(())
}

/// `pub_revision_pending`: per final period and unit, what moved since the latest final
/// revision (the unit's published and current totals, the indicators whose values differ, or
/// the unit appearing or going). Empty when every final period is as published.
fn pending_sql(conn: &duck::Connection) -> anyhow::Result<String> {
    let mut parts = Vec::new();
    for (mart, table, key) in PUBLISHED {
        let published = columns(conn, None, table)?;
        let current = columns(conn, None, mart)?;
        let compared: Vec<&String> = published
            .iter()
            .filter(|c| current.contains(c) && measures(mart).contains(&c.as_str()))
            .collect();
        if published.is_empty() || current.is_empty() || compared.is_empty() {
            return Ok("CREATE OR REPLACE VIEW pub_revision_pending AS \
                SELECT NULL::VARCHAR AS period, NULL::INTEGER AS revision, NULL::VARCHAR AS unit_id, \
                NULL::DOUBLE AS published_total, NULL::DOUBLE AS current_total, \
                NULL::VARCHAR[] AS indicators_moved, NULL::VARCHAR[] AS reason_codes, \
                NULL::TIMESTAMP AS open_until, NULL::BOOLEAN AS revisable WHERE false;"
                .to_string());
        }
        let differs = compared
            .iter()
            .map(|c| format!("p.\"{c}\" IS DISTINCT FROM m.\"{c}\""))
            .collect::<Vec<_>>()
            .join(" OR ");
        let on = key
            .iter()
            .map(|k| format!("p.\"{k}\" = m.\"{k}\""))
            .collect::<Vec<_>>()
            .join(" AND ");
        let first = key[0];
        parts.push((
            table,
            format!(
                "SELECT coalesce(p.period, m.period) AS period, coalesce(p.unit_id, m.unit_id) AS unit_id, \
                   {ind} AS indicator, {tot_p} AS published_total, {tot_m} AS current_total \
                 FROM (SELECT t.* FROM {table} AS t JOIN finals USING (period, revision)) AS p \
                 FULL JOIN (SELECT * FROM {mart} WHERE period IN (SELECT period FROM finals)) AS m \
                   ON p.period = m.period AND {on} \
                 WHERE p.\"{first}\" IS NULL OR m.\"{first}\" IS NULL OR {differs}",
                ind = if key.len() > 1 {
                    "coalesce(p.indicator, m.indicator)"
                } else {
                    "NULL::VARCHAR"
                },
                tot_p = if key.len() > 1 { "NULL::DOUBLE" } else { "p.total" },
                tot_m = if key.len() > 1 { "NULL::DOUBLE" } else { "m.total" },
            ),
        ));
    }
    let (_, units) = &parts[0];
    let (_, indicators) = &parts[1];
    // The models' SQL as the revision's `sql_digest` (revision::sql_digest) computes it.
    let digest = if duck::table_exists(conn, "_chiso_model_sql")? {
        "(SELECT sha256(string_agg(model || ':' || sql_sha256 || chr(10), '' ORDER BY model)) FROM _chiso_model_sql)"
    } else {
        "NULL::VARCHAR"
    };
    // Everything but `revisable` (which moves with the clock) is computed once, by the build
    // that writes the ledger's copy and the marts into the file (nothing else changes them),
    // not by each reader: on a year of finals, joining them was most of what `chiso status`
    // cost (`chiso bench year`).
    Ok(format!(
        "CREATE OR REPLACE TABLE _chiso_revision_pending AS
         WITH finals AS (
             SELECT period, max(revision) AS revision FROM pub_revisions
             WHERE status = 'final' GROUP BY period
         ),
         units AS ({units}),
         indicators AS ({indicators}),
         moved AS (
             SELECT period, unit_id FROM units UNION SELECT period, unit_id FROM indicators
         )
         SELECT m.period, f.revision, m.unit_id,
                p.total AS published_total, c.total AS current_total,
                (SELECT list(DISTINCT i.indicator ORDER BY i.indicator) FROM indicators AS i
                  WHERE i.period = m.period AND i.unit_id = m.unit_id) AS indicators_moved,
                -- Why, as the change note will say it (late data are the records' landing
                -- after the revision: the data reach moved on).
                coalesce(nullif(list_filter([
                    CASE WHEN r.methodology IS DISTINCT FROM coalesce(c.methodology, p.methodology) THEN 'methodology' END,
                    CASE WHEN p.unit_id IS NULL OR c.unit_id IS NULL
                           OR p.unit_level IS DISTINCT FROM c.unit_level
                           OR p.parent_unit_id IS DISTINCT FROM c.parent_unit_id THEN 'registry' END,
                    CASE WHEN r.sql_digest IS DISTINCT FROM {digest} THEN 'recomputation' END,
                    -- A first reading (the change note counts the records): data reached
                    -- further while the methodology and the SQL stayed.
                    CASE WHEN c.data_watermark > r.data_watermark
                          AND r.sql_digest IS NOT DISTINCT FROM {digest}
                          AND r.methodology IS NOT DISTINCT FROM coalesce(c.methodology, p.methodology)
                         THEN 'late_data' END
                ], lambda x: x IS NOT NULL), []), ['recomputation']) AS reason_codes,
                r.open_until
         FROM moved AS m
         JOIN finals AS f USING (period)
         JOIN pub_revisions AS r ON r.period = f.period AND r.revision = f.revision
         LEFT JOIN pub_index_unit_period AS p
           ON p.period = m.period AND p.revision = f.revision AND p.unit_id = m.unit_id
         LEFT JOIN mart_index_unit_period AS c ON c.period = m.period AND c.unit_id = m.unit_id;
         CREATE OR REPLACE VIEW pub_revision_pending AS
         SELECT *, open_until IS NULL OR open_until > {now} AS revisable
         FROM _chiso_revision_pending;",
        now = NOW_LOCAL
    ))
}

/// A final period whose numbers moved since its latest final revision.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pending {
    pub period: String,
    /// The latest final revision.
    pub revision: i64,
    /// The units that moved, appeared or went.
    pub units: Vec<String>,
    /// Why ([`crate::publish::ChangeNote::reason_codes`]), over the units.
    pub reason_codes: Vec<String>,
    /// Still open to routine revisions (`[publish] revision_policy`); else only
    /// `chiso publish --correction "reason"` revises it.
    pub revisable: bool,
    pub open_until: Option<String>,
}

/// What `pub_revision_pending` of the published warehouse says, by period. Empty without it.
pub fn pending(conn: &duck::Connection) -> anyhow::Result<Vec<Pending>> {
    if duck::object_kind(conn, "pub_revision_pending")?.is_none() {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(
        "SELECT period, any_value(revision), list(unit_id ORDER BY unit_id), \
           list_sort(list_distinct(flatten(list(reason_codes)))), bool_and(revisable), \
           strftime(any_value(open_until), '%Y-%m-%d %H:%M') \
         FROM pub_revision_pending GROUP BY period ORDER BY period",
    )?;
    let rows = stmt.query_map([], |r| {
        let units: duckdb::types::Value = r.get(2)?;
        let codes: duckdb::types::Value = r.get(3)?;
        Ok(Pending {
            period: r.get(0)?,
            revision: r.get(1)?,
            units: strings(units),
            reason_codes: strings(codes),
            revisable: r.get::<_, Option<bool>>(4)?.unwrap_or(true),
            open_until: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The strings of a DuckDB list value.
pub fn strings(v: duckdb::types::Value) -> Vec<String> {
    match v {
        duckdb::types::Value::List(items) => items
            .into_iter()
            .filter_map(|i| match i {
                duckdb::types::Value::Text(s) => Some(s),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}
