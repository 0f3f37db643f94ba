//! The SQL of the PostgreSQL backend: one table of ordered byte keys (`bytea` compares
//! byte-wise, the order FoundationDB uses), created on first connect.

/// Statement texts for one table.
pub(super) struct Sql {
    /// Creates the table, its key check function (`occ`) and the trigger that refuses
    /// SERIALIZABLE writers ([`OLD_WRITER`]), under the schema lock.
    pub create: String,
    /// `$1` key: its value and version.
    pub get: String,
    /// `$1` keys: each present one with its value and version.
    pub get_many: String,
    pub range_asc: String,
    pub range_desc: String,
    pub upsert: String,
    /// Atomic adds: `$1` keys, `$2` little-endian 8-byte deltas.
    pub add: String,
    pub delete: String,
    pub delete_range: String,
    pub notify: String,
    /// Locks and validation before a transaction's writes (see the module [`super`]): `$1`
    /// the table lock to take (0 none, 1 shared, 2 exclusive), `$2` and `$3` the key locks
    /// to take exclusive and shared, `$4` and `$5` keys read and the versions read (-1:
    /// absent). Fails with SQLSTATE 40001 if a key lock is held by another transaction or a
    /// version changed.
    pub occ: String,
    /// The `LISTEN`/`NOTIFY` channel of this table.
    pub channel: String,
}

/// An arbitrary constant that serialises schema creation between processes.
const SCHEMA_LOCK: i64 = 0x6361_6972_6e5f_6b76;

/// The longest a transaction waits for the table lock (its error, SQLSTATE 55P03, is a
/// conflict): the wait of a range operation for the writers before it, or of a writer for a
/// range operation. A wait this long means a transaction holds the lock while it waits for
/// something else, perhaps for the waiter itself. Set when the table lock is taken, it bounds
/// every later wait of the transaction too (there are none: key locks never wait).
const TABLE_LOCK_TIMEOUT: &str = "10s";

/// Why a write of a SERIALIZABLE transaction is refused: Cairn wrote its tables under
/// SERIALIZABLE before its transactions were made serializable by key, and the two cannot share
/// a table (an old writer takes no key locks, so the new check cannot see its writes in flight).
/// A statement trigger on the table refuses them, so a node left running on an older version
/// fails its writes with this error instead of racing the others unseen.
pub(super) const OLD_WRITER: &str = "this table is written by Cairn transactions that are \
     serializable by key (READ COMMITTED with key locks); a SERIALIZABLE transaction writing \
     it is a Cairn node of an older version, which must be stopped before newer nodes share \
     its store";

/// A row's version: the transaction that wrote it (`xmin`), which every update and every
/// re-insertion after a delete changes.
const VERSION: &str = "xmin::text::int8";

impl Sql {
    /// `table` must already be a validated lower-case identifier; `table_lock` is the
    /// advisory lock id of the table (see [`super::lock_ids`]).
    pub(super) fn new(table: &str, table_lock: i64) -> Self {
        let channel = format!("{table}_changes");
        Sql {
            create: format!(
                "BEGIN; SELECT pg_advisory_xact_lock({SCHEMA_LOCK}); \
                 CREATE TABLE IF NOT EXISTS {table} (k bytea PRIMARY KEY, v bytea NOT NULL); \
                 CREATE OR REPLACE FUNCTION {table}_occ(g int4, xs int8[], ss int8[], \
                   ks bytea[], vs int8[]) RETURNS void LANGUAGE plpgsql AS $f$ \
                 BEGIN \
                   IF g > 0 THEN PERFORM set_config('lock_timeout', '{TABLE_LOCK_TIMEOUT}', true); \
                   END IF; \
                   IF g = 2 THEN PERFORM pg_advisory_xact_lock({table_lock}); \
                   ELSIF g = 1 THEN PERFORM pg_advisory_xact_lock_shared({table_lock}); \
                   END IF; \
                   IF EXISTS (SELECT FROM unnest(xs) AS x(id) \
                              WHERE NOT pg_try_advisory_xact_lock(x.id)) \
                      OR EXISTS (SELECT FROM unnest(ss) AS s(id) \
                                 WHERE NOT pg_try_advisory_xact_lock_shared(s.id)) THEN \
                     RAISE EXCEPTION 'another transaction is committing a key of this one' \
                       USING ERRCODE = 'serialization_failure'; \
                   END IF; \
                   IF EXISTS (SELECT FROM unnest(ks, vs) AS r(k, v) \
                              LEFT JOIN {table} t ON t.k = r.k \
                              WHERE coalesce(t.{VERSION}, -1) <> r.v) THEN \
                     RAISE EXCEPTION 'a key this transaction read was changed by another' \
                       USING ERRCODE = 'serialization_failure'; \
                   END IF; \
                 END $f$; \
                 CREATE OR REPLACE FUNCTION {table}_guard() RETURNS trigger LANGUAGE plpgsql \
                 AS $g$ BEGIN \
                   IF current_setting('transaction_isolation') = 'serializable' THEN \
                     RAISE EXCEPTION '{OLD_WRITER}' \
                       USING ERRCODE = 'object_not_in_prerequisite_state'; \
                   END IF; \
                   RETURN NULL; \
                 END $g$; \
                 DO $d$ BEGIN \
                   IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgname = '{table}_guard' \
                                  AND tgrelid = '{table}'::regclass) THEN \
                     CREATE TRIGGER {table}_guard BEFORE INSERT OR UPDATE OR DELETE \
                       ON {table} FOR EACH STATEMENT EXECUTE FUNCTION {table}_guard(); \
                   END IF; \
                 END $d$; COMMIT"
            ),
            get: format!("SELECT v, {VERSION} FROM {table} WHERE k = $1"),
            get_many: format!("SELECT k, v, {VERSION} FROM {table} WHERE k = ANY($1::bytea[])"),
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
            occ: format!(
                "SELECT {table}_occ($1::int4, $2::int8[], $3::int8[], $4::bytea[], $5::int8[])"
            ),
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
