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
    /// Atomic adds: `$1` keys, `$2` little-endian 8-byte deltas.
    pub add: String,
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
            add: format!(
                "INSERT INTO {table} AS t (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                 ON CONFLICT (k) DO UPDATE SET v = {}",
                le_bytes(&wrapping_sum(&le_int("t.v"), &le_int("EXCLUDED.v")))
            ),
            delete: format!("DELETE FROM {table} WHERE k = ANY($1::bytea[])"),
            delete_range: format!("DELETE FROM {table} WHERE k >= $1 AND k < $2"),
            notify: format!("SELECT pg_notify('{channel}', $1::text)"),
            channel,
        }
    }
}

/// SQL for the signed 64-bit integer a little-endian counter value holds, as FoundationDB's
/// `ADD` reads it: zero-extended, cut to 8 bytes. (PostgreSQL's operators `|` and `<<` share
/// one precedence, hence the parentheses.)
fn le_int(value: &str) -> String {
    let padded = format!("({value} || '\\x0000000000000000'::bytea)");
    (0..8)
        .map(|i| format!("(get_byte({padded}, {i})::int8 << {})", 8 * i))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// SQL for `a + b` wrapping around at 64 bits, as FoundationDB's `ADD` does (PostgreSQL's
/// `int8 +` raises on overflow), computed in `numeric`.
fn wrapping_sum(a: &str, b: &str) -> String {
    format!(
        "(((({a})::numeric + ({b})::numeric + 9223372036854775808) % 18446744073709551616 \
         + 18446744073709551616) % 18446744073709551616 - 9223372036854775808)::int8"
    )
}

/// SQL for the 8 little-endian bytes of the `int8` expression `n`.
fn le_bytes(n: &str) -> String {
    let mut out = "'\\x0000000000000000'::bytea".to_string();
    for i in 0..8 {
        out = format!("set_byte({out}, {i}, ((x.n >> {}) & 255)::int)", 8 * i);
    }
    format!("(SELECT {out} FROM (SELECT {n} AS n) x)")
}
