//! Bulk eviction and listing of a task with many entries, in a fresh process:
//! `cargo run --release -p cairn-benches --bin evict-bench -- 100000 [STORE_URL]`
//! (default: a fresh embedded store).
//!
//! Stores N entries of one task (in batched transactions, with the layout the catalog's commit
//! writes), lists them all through a node's HTTP API page by page (1,000 a page, as a client
//! does), then evicts the task. Checks the counts; prints the times. `EVICT_BATCH=n` sets the
//! entries per eviction transaction (default: the catalog's, 1,000).

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use cairn_engine::catalog::records::{EntryMeta, StoredMeta, encode};
use cairn_engine::catalog::{CacheKey, EvictScope, KeyInputs, TaskSignature, TypeDesc};
use cairn_engine::keys::{self, TaskIndexValue, entry_part};
use cairn_engine::{AnyStore, RetryPolicy, Store, Transaction, transact};
use std::sync::Arc;
use std::time::Instant;

/// Entries written per transaction while filling the store.
const FILL_BATCH: i64 = 1_000;

async fn fill(store: &AnyStore, project: &str, n: i64) {
    let sig = TaskSignature::new("square", TypeDesc::of::<i64>()).input("n", TypeDesc::of::<i64>());
    let policy = RetryPolicy::default();
    for start in (0..n).step_by(FILL_BATCH as usize) {
        let end = (start + FILL_BATCH).min(n);
        transact(store, &policy, |tx| {
            let sig = &sig;
            async move {
                for i in start..end {
                    let mut inputs = KeyInputs::new();
                    inputs.add("n", &i)?;
                    let key = CacheKey::new(project, "bench", sig, "1", &inputs)?;
                    let output = rmp_serde::to_vec(&(i * i)).unwrap_or_default();
                    let execution = format!("fill-{i:012}");
                    let meta = EntryMeta {
                        key: key.clone(),
                        created_at_ms: 0,
                        execution: execution.clone(),
                        size: output.len() as u64,
                        chunks: 0,
                        checksum: xxhash_rust::xxh3::xxh3_64(&output),
                        expires_at_ms: None,
                    };
                    let d = key.digest;
                    let row = TaskIndexValue {
                        size: meta.size,
                        expires_at_ms: None,
                        execution: Some(execution.clone()),
                    };
                    tx.set(
                        &keys::entry_part(&d, entry_part::META),
                        &encode(&StoredMeta {
                            meta,
                            inline: Some(output),
                            chunks_of: None,
                            blobs: Vec::new(),
                        }),
                    );
                    tx.set(
                        &keys::by_task(project, "bench", "square", "1", &d),
                        &row.encode(),
                    );
                    tx.set(&keys::by_execution(&execution, &d), &[]);
                }
                Ok(())
            }
        })
        .await
        .expect("fill");
    }
}

fn main() {
    let n: i64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let url = std::env::args()
        .nth(2)
        .map(|url| {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}table=evict_{:08x}", rand::random::<u32>())
        })
        .unwrap_or_else(|| format!("embedded:{}", dir.path().display()));
    let rt = cairn_benches::runtime();
    rt.block_on(async {
        let node = Arc::new(
            cairn::Node::builder()
                .store_url(&url)
                .catalog_config(cairn::CatalogConfig {
                    evict_batch: std::env::var("EVICT_BATCH")
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(cairn::CatalogConfig::default().evict_batch),
                    ..Default::default()
                })
                .start()
                .await
                .expect("node"),
        );
        let store = node.catalog().store().clone();
        let project = format!("evict{:08x}", rand::random::<u32>());
        let started = Instant::now();
        fill(&store, &project, n).await;
        let filled = started.elapsed();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let server = cairn::api::ApiServer::start(
            node.clone(),
            Arc::new(cairn::api::LocalOnly),
            listener,
            &cairn::api::ApiConfig::default(),
        )
        .expect("api");
        let client = cairn::client::Client::new(format!("http://{}", server.addr()), None);
        let started = Instant::now();
        let (mut listed, mut cursor, mut pages) = (0usize, None, 0);
        loop {
            let q = cairn::api::types::EntriesQuery {
                project: Some(project.clone()),
                domain: Some("bench".into()),
                task: Some("square".into()),
                version: None,
                limit: Some(1_000),
                cursor: cursor.take(),
            };
            let page = client.entries(&q).await.expect("list");
            listed += page.entries.len();
            pages += 1;
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let listing = started.elapsed();
        assert_eq!(listed as i64, n, "every entry listed once");

        let started = Instant::now();
        let evicted = node
            .catalog()
            .evict(&EvictScope::Task {
                project: project.clone(),
                domain: "bench".into(),
                task: "square".into(),
                version: None,
            })
            .await
            .expect("evict");
        let eviction = started.elapsed();
        assert_eq!(evicted as i64, n, "every entry evicted");
        let left = node
            .catalog()
            .list_entries(&project, "bench", None, None, 10, None)
            .await
            .expect("list");
        assert!(left.entries.is_empty());
        println!(
            "{} store, {n} entries of one task: filled in {:.1} s; listed through the API in \
             {:.2} s ({pages} pages of 1,000); evicted in {:.2} s ({:.0} entries/s)",
            store.backend(),
            filled.as_secs_f64(),
            listing.as_secs_f64(),
            eviction.as_secs_f64(),
            n as f64 / eviction.as_secs_f64()
        );
        server.stop().await;
    });
}
