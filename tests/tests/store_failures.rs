//! What callers see when the PostgreSQL store goes away under them: clear errors, nothing
//! silently dropped.

use cairn_engine::catalog::{CacheStatus, Catalog, ExecutionRecord};
use cairn_engine::store::postgres::PostgresStore;
use cairn_engine::{Error, Store, Transaction};
use cairn_tests::harness::postgres_url;

async fn drop_table(table: &str) {
    let (client, connection) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

fn record(run: &str) -> ExecutionRecord {
    ExecutionRecord {
        execution: "e-1".into(),
        run: Some(run.into()),
        project: "p".into(),
        domain: "d".into(),
        task: "t".into(),
        version: "1".into(),
        key: None,
        status: CacheStatus::Disabled,
        started_at_ms: 0,
        duration_us: 1,
        wait_us: 0,
        waited_for: None,
        error: None,
        seq: None,
        attempt: 0,
        executed: false,
        cache_error: None,
    }
}

#[cairn::task(cache = true, cache_version = "1")]
async fn square(n: i64) -> i64 {
    n * n
}

fn assert_names_the_table(err: Error, table: &str) {
    assert!(
        matches!(
            err,
            Error::Backend {
                backend: "postgres",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(table), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_fails_gives_errors_that_name_it() {
    let table = format!("gone_{:08x}", rand::random::<u32>());
    let store = PostgresStore::connect(&postgres_url(), &table, 2)
        .await
        .unwrap();
    let catalog = Catalog::new(store.clone());
    catalog.record(record("before")).await;
    catalog
        .flush_records()
        .await
        .expect("stored while the table exists");
    assert_eq!(catalog.run_executions("before").await.unwrap().len(), 1);

    // A node on the same table, started while it exists.
    let node = cairn::Node::builder()
        .name("n")
        .store(store.clone().into())
        .task(square)
        .start()
        .await
        .unwrap();

    let spare = PostgresStore::connect(&postgres_url(), &table, 2)
        .await
        .unwrap();

    drop_table(&table).await;

    // Reads and commits fail with an error that says what failed, not a hang or a panic.
    // Where depends on the pool: a connection opened before the drop fails at the read, one
    // opened after it fails at `begin`, when its statements are prepared. Both must name it.
    let read = async { store.begin().await?.get(b"k", false).await };
    assert_names_the_table(read.await.unwrap_err(), &table);
    // A second store on the table has one connection, opened before the drop; holding it open
    // makes the next `begin` open (and prepare) another.
    let held = spare.begin().await.unwrap();
    assert_names_the_table(spare.begin().await.err().expect("cannot prepare"), &table);
    assert_names_the_table(held.get(b"k", false).await.unwrap_err(), &table);

    // A call whose key cannot be looked up runs uncached: LookupFailure, the output still
    // returned, and the reason named.
    let ctx = node.ctx(cairn::RunOptions::new("p", "d"));
    let out = ctx.call(square, 12).await;
    assert_eq!(out.unwrap(), 144);
    let call = &ctx.calls()[0];
    assert_eq!(call.status, CacheStatus::LookupFailure);
    let why = call.cache_error.as_deref().unwrap_or_default();
    assert!(why.contains(&table), "{why}");

    // A flush reports that the records are not stored yet, instead of waiting forever.
    catalog.record(record("after")).await;
    let err = catalog.flush_records().await.unwrap_err();
    assert!(err.to_string().contains("not stored yet"), "{err}");
}

/// Opening a PostgreSQL store that refuses us says what the server said, so a wrong password
/// and a missing database read differently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_carries_the_servers_message() {
    let url = postgres_url();
    let wrong_password = url.replacen(":cairn@", ":not-the-password@", 1);
    assert_ne!(wrong_password, url, "the test URL has the password `cairn`");
    let err = cairn_engine::AnyStore::open(&wrong_password)
        .await
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(
        !text.contains("not-the-password"),
        "the password is not shown: {text}"
    );

    let (base, _) = url.rsplit_once('/').unwrap();
    let missing = format!("{base}/no_such_database_{:08x}", rand::random::<u32>());
    let text = cairn_engine::AnyStore::open(&missing)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(text.contains("does not exist"), "{text}");
}
