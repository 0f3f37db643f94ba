//! A Cairn node of a version from before PostgreSQL's transactions were serializable by key
//! wrote under SERIALIZABLE and took no key locks; sharing a table with it would let its writes
//! race the key check unseen. Such writes are refused with an error that says why, while reads
//! and Cairn's own transactions go on.

use cairn_engine::store::postgres::PostgresStore;
use cairn_engine::{Store, Transaction};
use cairn_tests::harness::postgres_url;

async fn raw_client() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serializable_writer_is_refused_with_the_reason() {
    let table = format!("old_writer_{:08x}", rand::random::<u32>());
    let store = PostgresStore::connect(&postgres_url(), &table, 2)
        .await
        .unwrap();
    let tx = store.begin().await.unwrap();
    tx.set(b"k", b"new");
    tx.commit().await.unwrap();

    // What an older node sends: its statements, inside SERIALIZABLE transactions.
    let old = raw_client().await;
    for statement in [
        format!("INSERT INTO {table} (k, v) VALUES ('\\x6b'::bytea, '\\x6f6c64'::bytea)"),
        format!(
            "INSERT INTO {table} (k, v) VALUES ('\\x6b32'::bytea, '\\x6f6c64'::bytea) \
             ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
        ),
        format!("DELETE FROM {table} WHERE k = '\\x6b'::bytea"),
    ] {
        let err = old
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL SERIALIZABLE; {statement}; COMMIT"
            ))
            .await
            .expect_err("an old node's write must be refused");
        let db = err.as_db_error().expect("the server's error");
        assert_eq!(db.code().code(), "55000", "{db:?}");
        assert!(db.message().contains("older version"), "{}", db.message());
        old.batch_execute("ROLLBACK").await.unwrap();
    }
    // Its reads still work, and nothing it tried was applied.
    let rows = old
        .query(&format!("SELECT k, v FROM {table} ORDER BY k"), &[])
        .await
        .unwrap();
    let rows: Vec<(Vec<u8>, Vec<u8>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(rows, vec![(b"k".to_vec(), b"new".to_vec())]);

    // Cairn's own writes, and a second store opening the same table (the trigger exists
    // already), are unaffected.
    let again = PostgresStore::connect(&postgres_url(), &table, 2)
        .await
        .unwrap();
    let tx = again.begin().await.unwrap();
    assert_eq!(
        tx.get(b"k", false).await.unwrap().as_deref(),
        Some(&b"new"[..])
    );
    tx.set(b"k", b"newer");
    tx.clear(b"absent");
    tx.commit().await.unwrap();
    let tx = store.begin_read().await.unwrap();
    assert_eq!(
        tx.get(b"k", false).await.unwrap().as_deref(),
        Some(&b"newer"[..])
    );
}
