//! The SQL of the PostgreSQL backend: one table of ordered byte keys (`bytea` compares
//! byte-wise, the order FoundationDB uses), created on first connect.

/// Statement texts for one table.
pub(super) struct Sql {
    pub create: String,
    pub get: String,
    pub get_many: String,
    pub range_asc: String,
    pub range_desc: String,
    pub upsert: String,
    pub delete: String,
    pub delete_range: String,
    pub notify: String,
    /// The `LISTEN`/`NOTIFY` channel of this table.
    pub channel: String,
}

/// An arbitrary constant that serialises schema creation between processes.
const SCHEMA_LOCK: i64 = 0x6361_6972_6e5f_6b76;

impl Sql {
    /// `table` must already be a validated lower-case identifier.
    pub(super) fn new(table: &str) -> Self {
        let channel = format!("{table}_changes");
        Sql {
            create: format!(
                "BEGIN; SELECT pg_advisory_xact_lock({SCHEMA_LOCK}); \
                 CREATE TABLE IF NOT EXISTS {table} (k bytea PRIMARY KEY, v bytea NOT NULL); COMMIT"
            ),
            get: format!("SELECT v FROM {table} WHERE k = $1"),
            get_many: format!("SELECT k, v FROM {table} WHERE k = ANY($1::bytea[])"),
            range_asc: format!(
                "SELECT k, v FROM {table} WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3"
            ),
            range_desc: format!(
                "SELECT k, v FROM {table} WHERE k >= $1 AND k < $2 ORDER BY k DESC LIMIT $3"
            ),
            upsert: format!(
                "INSERT INTO {table} (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                 ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
            ),
            delete: format!("DELETE FROM {table} WHERE k = ANY($1::bytea[])"),
            delete_range: format!("DELETE FROM {table} WHERE k >= $1 AND k < $2"),
            notify: format!("SELECT pg_notify('{channel}', s) FROM unnest($1::text[]) s"),
            channel,
        }
    }
}
