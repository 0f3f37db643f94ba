//! The urgent lane: with every pooled PostgreSQL connection held by open transactions, an urgent
//! transaction (a lease heartbeat) still runs at once — so a flood of resolves cannot delay
//! heartbeats past a lease's TTL and let another node take a live lease over.

use cairn_engine::store::postgres::PostgresStore;
use cairn_engine::{RetryPolicy, Store, Transaction, transact};
use cairn_tests::harness::postgres_url;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_transactions_do_not_queue_behind_a_full_pool() {
    let table = format!("urgent_{:08x}", rand::random::<u32>());
    let store = PostgresStore::connect(&postgres_url(), &table, 2)
        .await
        .unwrap();
    // Two open transactions hold the pool's two connections.
    let a = store.begin().await.unwrap();
    let b = store.begin().await.unwrap();
    a.get(b"x", false).await.unwrap();
    b.get(b"y", false).await.unwrap();
    let queued = tokio::time::timeout(Duration::from_millis(300), store.begin()).await;
    assert!(
        queued.is_err(),
        "an ordinary transaction waits for a free connection"
    );

    let urgent = tokio::time::timeout(
        Duration::from_secs(10),
        transact(&store, &RetryPolicy::default().urgent(), |tx| async move {
            tx.set(b"beat", b"1");
            Ok(())
        }),
    )
    .await;
    assert!(matches!(urgent, Ok(Ok(()))), "{urgent:?}");
    drop((a, b));
    let check = store.begin_read().await.unwrap();
    assert_eq!(
        check.get(b"beat", true).await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
}
