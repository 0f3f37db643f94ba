//! The catalog conformance suite: the resolve / lease / commit protocol, eviction, expiry,
//! listing and execution records, on every backend. Instantiate it with
//! [`catalog_conformance!`](crate::catalog_conformance).
//!
//! Every test uses a random project of its own, so tests share a database without seeing each
//! other's entries.

use crate::harness::Harness;
use cairn_engine::catalog::{
    Answer, CacheKey, CacheStatus, Catalog, CatalogConfig, Committed, Digest, EvictScope,
    ExecutionRecord, Explanation, KeyInputs, Lease, Resolution, ResolveRequest, TaskSignature,
    TypeDesc, new_execution_id,
};
use cairn_engine::clock::ManualClock;
use cairn_engine::{AnyStore, Error, Store};
use std::sync::Arc;
use std::time::Duration;

const LONG_TTL: Duration = Duration::from_secs(3600);
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A random project name.
pub fn project() -> String {
    format!("p{:016x}", rand::random::<u64>())
}

fn signature() -> TaskSignature {
    TaskSignature::new("square", TypeDesc::of::<i64>()).input("n", TypeDesc::of::<i64>())
}

/// The key of `square(n)` in `project`/dev at version 1.0.
pub fn key(project: &str, n: i64) -> CacheKey {
    key_v(project, "square", "1.0", n)
}

fn key_v(project: &str, task: &str, version: &str, n: i64) -> CacheKey {
    let mut sig = signature();
    sig.name = task.to_string();
    let mut inputs = KeyInputs::new();
    inputs.add("n", &n).expect("encode input");
    CacheKey::new(project, "dev", &sig, version, &inputs).expect("key")
}

fn request<'a>(key: &'a CacheKey, execution: &'a str, ttl: Duration) -> ResolveRequest<'a> {
    ResolveRequest {
        key,
        owner: "test-node",
        execution,
        lease_ttl: ttl,
        max_age: None,
        overwrite: false,
        takeover: None,
        trace: None,
    }
}

async fn acquire<S: Store>(catalog: &Catalog<S>, key: &CacheKey, ttl: Duration) -> Lease {
    let execution = new_execution_id();
    match catalog
        .resolve(&request(key, &execution, ttl))
        .await
        .expect("resolve")
    {
        Resolution::Acquired(lease) => lease,
        other => panic!("expected to acquire {}, got {other:?}", key.digest),
    }
}

async fn populate<S: Store>(catalog: &Catalog<S>, key: &CacheKey, output: &[u8]) -> Lease {
    let lease = acquire(catalog, key, LONG_TTL).await;
    match catalog
        .commit(key, &lease, output, None)
        .await
        .expect("commit")
    {
        Committed::Stored(_) => lease,
        other => panic!("expected to store, got {other:?}"),
    }
}

/// A catalog over `h`'s store whose wall clock the test moves (it starts in November 2023).
async fn on_manual_clock<H: Harness>(h: &H) -> (Catalog<H::S>, ManualClock) {
    let clock = ManualClock::new(1_700_000_000_000);
    let catalog = Catalog::with(
        h.open().await,
        Arc::new(clock.clone()),
        CatalogConfig::default(),
    );
    (catalog, clock)
}

/// A catalog over `h`'s store, on the system clock.
async fn catalog_of<H: Harness>(h: &H) -> Catalog<H::S> {
    Catalog::new(h.open().await)
}

/// Acquiring many keys in one transaction keeps each key's semantics and result: a stored
/// entry is a hit, a held lease is reported held (also when the same key comes twice in one
/// batch), the rest are acquired. Batches racing over the same keys conflict, are split and
/// retried: every key is still acquired exactly once.
pub async fn acquire_many_keeps_per_key_semantics<H: Harness>() {
    let h = H::new().await;
    let catalog = catalog_of(&h).await;
    let p = project();
    let stored = key(&p, 1_000);
    populate(&catalog, &stored, b"kept").await;
    let held = key(&p, 1_001);
    let holder = acquire(&catalog, &held, LONG_TTL).await;
    let fresh: Vec<CacheKey> = (0..100).map(|i| key(&p, i)).collect();
    let executions: Vec<String> = (0..104).map(|_| new_execution_id()).collect();
    let mut keys: Vec<&CacheKey> = vec![&stored, &held];
    keys.extend(fresh.iter());
    keys.push(&fresh[0]); // the same key twice in one batch
    let reqs: Vec<ResolveRequest<'_>> = keys
        .iter()
        .zip(&executions)
        .map(|(k, e)| request(k, e, LONG_TTL))
        .collect();
    let results = catalog.acquire_many(&reqs).await;
    assert_eq!(results.len(), reqs.len());
    match &results[0] {
        Ok(Resolution::Hit(hit)) => assert_eq!(hit.output, b"kept"),
        other => panic!("a stored entry is a hit: {other:?}"),
    }
    match &results[1] {
        Ok(Resolution::Held(h)) => assert_eq!(h.execution, holder.execution),
        other => panic!("a held lease is held: {other:?}"),
    }
    for r in &results[2..102] {
        assert!(matches!(r, Ok(Resolution::Acquired(_))), "{r:?}");
    }
    match &results[102] {
        Ok(Resolution::Held(h)) => assert_eq!(h.execution, executions[2]),
        other => {
            panic!("the second request of a key in one batch sees the first's lease: {other:?}")
        }
    }

    // Four batches race over the same 200 keys: each key is acquired once in all.
    let racing: Arc<Vec<CacheKey>> = Arc::new((0..200).map(|i| key(&p, 5_000 + i)).collect());
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (catalog, racing) = (catalog.clone(), racing.clone());
        tasks.push(tokio::spawn(async move {
            let executions: Vec<String> = racing.iter().map(|_| new_execution_id()).collect();
            let reqs: Vec<ResolveRequest<'_>> = racing
                .iter()
                .zip(&executions)
                .map(|(k, e)| request(k, e, LONG_TTL))
                .collect();
            catalog
                .acquire_many(&reqs)
                .await
                .into_iter()
                .map(|r| matches!(r.expect("no error"), Resolution::Acquired(_)))
                .collect::<Vec<bool>>()
        }));
    }
    let mut acquired = vec![0usize; 200];
    for t in tasks {
        for (i, a) in t.await.unwrap().into_iter().enumerate() {
            acquired[i] += usize::from(a);
        }
    }
    assert!(acquired.iter().all(|&n| n == 1), "{acquired:?}");
}

/// Small outputs committed at the same moment share transactions (group commit, on stores
/// whose `max_batch` allows it), each with its own result: 200 concurrent commits take far
/// fewer than 200 transactions, every output
/// is stored once, and a late commit of a key already stored in the same group gets the
/// stored output back.
pub async fn concurrent_commits_are_grouped<H: Harness>() {
    use cairn_engine::Store as _;
    let h = H::new().await;
    let catalog = catalog_of(&h).await;
    let p = project();
    let keys: Vec<CacheKey> = (0..200).map(|i| key(&p, 7_000 + i)).collect();
    let mut leases = Vec::new();
    for k in &keys {
        leases.push(acquire(&catalog, k, LONG_TTL).await);
    }
    let commits_before = catalog.store().counters().commits();
    let mut tasks = Vec::new();
    for (i, (k, lease)) in keys.iter().zip(leases).enumerate() {
        let (catalog, k) = (catalog.clone(), k.clone());
        tasks.push(tokio::spawn(async move {
            catalog
                .commit(&k, &lease, format!("out-{i}").as_bytes(), None)
                .await
                .unwrap()
        }));
    }
    // A second execution of key 0, not holding its lease, commits too: first writer wins.
    let late = {
        let (catalog, k) = (catalog.clone(), keys[0].clone());
        tokio::spawn(async move {
            let mut lease = acquire(&catalog, &key(&p, 9_999), LONG_TTL).await;
            lease.digest = k.digest;
            lease.execution = new_execution_id();
            catalog.commit(&k, &lease, b"late", None).await.unwrap()
        })
    };
    for t in tasks {
        let committed = t.await.unwrap();
        assert!(
            matches!(
                committed,
                Committed::Stored(_) | Committed::AlreadyStored(_)
            ),
            "{committed:?}"
        );
    }
    let late = late.await.unwrap();
    let transactions = catalog.store().counters().commits() - commits_before;
    // PostgreSQL does not group (`Store::max_batch`): each commit is its own transaction.
    if catalog.store().max_batch() > 1 {
        assert!(
            transactions < 100,
            "200 concurrent commits took {transactions} transactions"
        );
    }
    for (i, k) in keys.iter().enumerate().skip(1) {
        let hit = catalog.lookup(k, None).await.unwrap().unwrap();
        assert_eq!(hit.output, format!("out-{i}").as_bytes());
    }
    let first = catalog.lookup(&keys[0], None).await.unwrap().unwrap();
    match late {
        Committed::Stored(_) => assert_eq!(first.output, b"late"),
        Committed::AlreadyStored(hit) => {
            assert_eq!(hit.output, b"out-0");
            assert_eq!(first.output, b"out-0");
        }
    }
}

/// 1,000 concurrent resolves of one key: exactly one acquires, every other sees it held.
pub async fn concurrent_resolve_acquires_once<H: Harness>() {
    let h = H::new().await;
    let catalog = catalog_of(&h).await;
    let key = Arc::new(key(&project(), 7));
    let mut tasks = Vec::new();
    for _ in 0..1_000 {
        let (catalog, key) = (catalog.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let execution = new_execution_id();
            catalog
                .resolve(&request(&key, &execution, LONG_TTL))
                .await
                .expect("resolve")
        }));
    }
    let (mut acquired, mut held) = (0, 0);
    let mut holders = std::collections::HashSet::new();
    for t in tasks {
        match t.await.unwrap() {
            Resolution::Acquired(l) => {
                acquired += 1;
                assert_eq!(l.generation, 1);
                holders.insert(l.execution);
            }
            Resolution::Held(h) => {
                held += 1;
                holders.insert(h.execution);
            }
            Resolution::Hit(_) => panic!("nothing was committed"),
        }
    }
    assert_eq!((acquired, held), (1, 999));
    assert_eq!(holders.len(), 1, "everyone saw the same holder");
}

/// A committed output is a hit afterwards, with its metadata; a hit writes nothing.
pub async fn commit_then_hit<H: Harness>() {
    let h = H::new().await;
    let catalog = catalog_of(&h).await;
    let key = key(&project(), 2);
    assert_eq!(catalog.lookup(&key, None).await.unwrap(), None);
    let lease = populate(&catalog, &key, b"4").await;
    assert_eq!(
        catalog.lookup_output(&key, None).await.unwrap(),
        Some(b"4".to_vec())
    );
    let commits_before = catalog.store().counters().commits();
    let execution = new_execution_id();
    match catalog
        .resolve(&request(&key, &execution, LONG_TTL))
        .await
        .unwrap()
    {
        Resolution::Hit(hit) => {
            assert_eq!(hit.output, b"4");
            assert_eq!(hit.meta.execution, lease.execution);
            assert_eq!(hit.meta.key.task, "square");
            assert_eq!(hit.meta.key.version, "1.0");
            assert_eq!(hit.meta.size, 1);
            assert_eq!(hit.meta.key, key);
        }
        other => panic!("expected a hit, got {other:?}"),
    }
    assert_eq!(
        catalog.store().counters().commits(),
        commits_before,
        "a hit commits nothing"
    );
}

/// An expired owner's late commit and its successor's commit: exactly one entry, and both get
/// the same output. A late commit after the successor's never overwrites it.
pub async fn late_owner_never_overwrites<H: Harness>() {
    let h = H::new().await;
    let catalog = catalog_of(&h).await;
    for round in 0..3 {
        let key = key(&project(), round);
        let old = acquire(&catalog, &key, Duration::from_millis(50)).await;
        let second = new_execution_id();
        let held = match catalog
            .resolve(&request(&key, &second, LONG_TTL))
            .await
            .unwrap()
        {
            Resolution::Held(h) => h,
            other => panic!("expected held, got {other:?}"),
        };
        // The waiter has seen the lease unchanged for its TTL: it takes over.
        let mut req = request(&key, &second, LONG_TTL);
        req.takeover = Some(&held);
        let new = match catalog.resolve(&req).await.unwrap() {
            Resolution::Acquired(l) => l,
            other => panic!("expected takeover, got {other:?}"),
        };
        assert!(new.took_over);
        assert_eq!(new.generation, old.generation + 1);
        assert!(
            !catalog.heartbeat(&old).await.unwrap(),
            "the old holder is fenced"
        );

        let (a, b) = match round {
            // Both at once.
            0 => tokio::join!(
                catalog.commit(&key, &old, b"from the old owner", None),
                catalog.commit(&key, &new, b"from the new owner", None)
            ),
            // Old first, then new.
            1 => {
                let a = catalog
                    .commit(&key, &old, b"from the old owner", None)
                    .await;
                (
                    a,
                    catalog
                        .commit(&key, &new, b"from the new owner", None)
                        .await,
                )
            }
            // New first, then the late old owner.
            _ => {
                let b = catalog
                    .commit(&key, &new, b"from the new owner", None)
                    .await;
                (
                    catalog
                        .commit(&key, &old, b"from the old owner", None)
                        .await,
                    b,
                )
            }
        };
        let output = |c: Committed, mine: &[u8]| match c {
            Committed::Stored(_) => mine.to_vec(),
            Committed::AlreadyStored(hit) => hit.output,
        };
        let a = output(a.unwrap(), b"from the old owner");
        let b = output(b.unwrap(), b"from the new owner");
        assert_eq!(a, b, "round {round}: both callers get the same output");
        let stored = catalog.lookup(&key, None).await.unwrap().unwrap();
        assert_eq!(stored.output, a);
        if round == 2 {
            assert_eq!(
                stored.output, b"from the new owner",
                "the late commit did not overwrite"
            );
        }
        let page = catalog
            .list_entries(&key.project, "dev", None, None, 10, None)
            .await
            .unwrap();
        assert_eq!(page.entries.len(), 1, "exactly one entry");
    }
}

/// A waiter wakes when the holder commits (not after the TTL), and when the holder fails it
/// acquires at once and sees the error.
pub async fn waiters_wake_on_commit_and_fail<H: Harness>() {
    let h = H::new().await;
    let catalog = catalog_of(&h).await;
    let project = project();

    for fails in [false, true] {
        let key = Arc::new(key(&project, i64::from(fails)));
        let lease = acquire(&catalog, &key, LONG_TTL).await;
        let execution = new_execution_id();
        let held = match catalog
            .resolve(&request(&key, &execution, LONG_TTL))
            .await
            .unwrap()
        {
            Resolution::Held(h) => h,
            other => panic!("expected held, got {other:?}"),
        };
        let waiter = {
            let (catalog, key) = (catalog.clone(), key.clone());
            tokio::spawn(async move {
                let req = request(&key, &execution, LONG_TTL);
                catalog.wait(&req, held).await.unwrap()
            })
        };
        if fails {
            assert!(catalog.fail(&lease, "boom").await.unwrap());
        } else {
            catalog.commit(&key, &lease, b"done", None).await.unwrap();
        }
        let answered = tokio::time::timeout(EVENT_TIMEOUT, waiter)
            .await
            .expect("the waiter woke long before the one-hour TTL")
            .unwrap();
        match (fails, answered) {
            (false, Answer::Hit(hit)) => assert_eq!(hit.output, b"done"),
            (true, Answer::Acquired(l)) => {
                assert_eq!(l.previous_failure.as_deref(), Some("boom"));
                assert!(!l.took_over);
                assert_eq!(l.generation, lease.generation + 1);
            }
            (_, other) => panic!("fails={fails}: unexpected {other:?}"),
        }
    }
}

/// A holder that stops heartbeating is taken over once its TTL passes on the waiter's clock;
/// one that keeps heartbeating is not.
pub async fn silent_holder_is_taken_over<H: Harness>() {
    let h = H::new().await;
    let catalog = catalog_of(&h).await;
    let project = project();
    // Long enough that a loaded CI machine cannot delay a heartbeat by a whole TTL.
    let ttl = Duration::from_millis(800);

    // Silent holder.
    let key1 = key(&project, 1);
    let silent = acquire(&catalog, &key1, ttl).await;
    let execution = new_execution_id();
    let req = request(&key1, &execution, LONG_TTL);
    let Resolution::Held(held) = catalog.resolve(&req).await.unwrap() else {
        panic!("expected held")
    };
    let taken = tokio::time::timeout(EVENT_TIMEOUT, catalog.wait(&req, held))
        .await
        .unwrap()
        .unwrap();
    match taken {
        Answer::Acquired(l) => {
            assert!(l.took_over);
            assert_eq!(l.generation, silent.generation + 1);
        }
        other => panic!("expected takeover, got {other:?}"),
    }

    // Live holder: heartbeats every TTL/4 for 3 TTLs, then commits; the waiter gets the output.
    let key2 = Arc::new(key(&project, 2));
    let live = acquire(&catalog, &key2, ttl).await;
    let beating = {
        let (catalog, key2, live) = (catalog.clone(), key2.clone(), live.clone());
        tokio::spawn(async move {
            for _ in 0..12 {
                tokio::time::sleep(ttl / 4).await;
                assert!(catalog.heartbeat(&live).await.unwrap(), "still the holder");
            }
            catalog.commit(&key2, &live, b"alive", None).await.unwrap();
        })
    };
    let execution = new_execution_id();
    let req = request(&key2, &execution, LONG_TTL);
    let Resolution::Held(held) = catalog.resolve(&req).await.unwrap() else {
        panic!("expected held")
    };
    let answered = tokio::time::timeout(EVENT_TIMEOUT, catalog.wait(&req, held))
        .await
        .unwrap()
        .unwrap();
    beating.await.unwrap();
    match answered {
        Answer::Hit(hit) => assert_eq!(hit.output, b"alive"),
        other => panic!("a heartbeating holder was taken over: {other:?}"),
    }
}

/// Many leases held at once are heartbeaten together: a waiter never takes a live one over,
/// and the beats cost far fewer transactions than one per lease and interval.
pub async fn many_leases_are_beaten_together<H: Harness>() {
    let h = H::new().await;
    let catalog = catalog_of(&h).await;
    let project = project();
    let ttl = Duration::from_millis(800);
    let n = 300;
    let mut leases = Vec::new();
    for i in 0..n {
        leases.push((
            Arc::new(key(&project, i)),
            acquire(&catalog, &key(&project, i), ttl).await,
        ));
    }
    let commits_before = catalog.store().counters().commits();
    // Every lease held for four TTLs, then committed.
    let holders: Vec<_> = leases
        .iter()
        .map(|(key, lease)| {
            let (catalog, key, lease) = (catalog.clone(), key.clone(), lease.clone());
            tokio::spawn(async move {
                catalog
                    .heartbeating(&lease, tokio::time::sleep(ttl * 4))
                    .await;
                let beats = catalog.store().counters().commits();
                catalog.commit(&key, &lease, b"alive", None).await.unwrap();
                beats
            })
        })
        .collect();
    // Waiters on a few of them see the outputs, never a takeover.
    let mut waiters = Vec::new();
    for i in [0, n / 2, n - 1] {
        let (catalog, key) = (catalog.clone(), leases[i as usize].0.clone());
        waiters.push(tokio::spawn(async move {
            let execution = new_execution_id();
            let req = request(&key, &execution, LONG_TTL);
            let Resolution::Held(held) = catalog.resolve(&req).await.unwrap() else {
                panic!("expected held")
            };
            tokio::time::timeout(EVENT_TIMEOUT, catalog.wait(&req, held))
                .await
                .unwrap()
                .unwrap()
        }));
    }
    let mut beats = u64::MAX;
    for h in holders {
        beats = beats.min(h.await.unwrap());
    }
    for w in waiters {
        match w.await.unwrap() {
            Answer::Hit(hit) => assert_eq!(hit.output, b"alive"),
            other => panic!("a heartbeating holder was taken over: {other:?}"),
        }
    }
    assert_eq!(catalog.leases_beating(), 0, "every lease stopped beating");
    // One transaction per lease and interval would be 300 x 12 = 3,600.
    let spent = beats - commits_before;
    assert!(
        spent < n as u64,
        "{spent} transactions beat {n} leases for 4 TTLs"
    );
}

/// Outputs larger than one store value are chunked and come back intact; outputs over the
/// configured maximum are refused (the lease is failed, so nobody waits for it).
pub async fn chunked_and_oversized_outputs<H: Harness>() {
    let h = H::new().await;
    let config = CatalogConfig {
        max_output_bytes: 2_000_000,
        ..CatalogConfig::default()
    };
    let catalog = Catalog::with(
        h.open().await,
        Arc::new(cairn_engine::clock::SystemClock),
        config,
    );
    let project = project();
    let big: Vec<u8> = (0..1_500_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let key1 = key(&project, 1);
    populate(&catalog, &key1, &big).await;
    let hit = catalog.lookup(&key1, None).await.unwrap().unwrap();
    // 65,536-byte chunks: one chunk with its key fits one FoundationDB range reply (80 kB).
    assert_eq!(hit.meta.chunks, 1_500_000usize.div_ceil(65_536) as u32);
    assert!(hit.output == big, "chunked output round-trips");
    assert!(
        catalog.lookup_output(&key1, None).await.unwrap().unwrap() == big,
        "the hit path too"
    );

    let key2 = key(&project, 2);
    let lease = acquire(&catalog, &key2, LONG_TTL).await;
    let err = catalog
        .commit(&key2, &lease, &vec![0u8; 2_000_001], None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::OutputTooLarge {
                size: 2_000_001,
                limit: 2_000_000
            }
        ),
        "{err}"
    );
    let execution = new_execution_id();
    match catalog
        .resolve(&request(&key2, &execution, LONG_TTL))
        .await
        .unwrap()
    {
        Resolution::Acquired(l) => assert!(l.previous_failure.unwrap().contains("exceeds")),
        other => panic!("expected to acquire after the refused commit, got {other:?}"),
    }
}

/// The keys under `[begin, end)` (a read-only transaction).
async fn keys_in<S: Store>(store: &S, (begin, end): (Vec<u8>, Vec<u8>)) -> Vec<Vec<u8>> {
    use cairn_engine::Transaction as _;
    let tx = store.begin_read().await.unwrap();
    let pairs = tx
        .get_range(&begin, &end, cairn_engine::RangeOptions::all())
        .await
        .unwrap();
    pairs.into_iter().map(|kv| kv.key).collect()
}

/// An output larger than `STAGE_BYTES` is staged across several transactions and made visible
/// by the last: it reads back whole on every path, its chunks are the staging execution's, no
/// staging marker stays, and what executions that died or failed staging left behind is removed
/// by the next lease, by a replacement and by eviction.
pub async fn large_outputs_are_staged<H: Harness>() {
    use cairn_engine::keys;
    let h = H::new().await;
    let catalog = catalog_of(&h).await;
    let store = catalog.store().clone();
    let project = project();
    let big = |seed: u32| -> Vec<u8> {
        (0..8 * 1024 * 1024u32)
            .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    };
    let first = big(1);
    let k = key(&project, 77);
    let d = k.digest;
    let lease = populate(&catalog, &k, &first).await;
    let hit = catalog.lookup(&k, None).await.unwrap().unwrap();
    assert!(hit.output == first, "a staged output reads back whole");
    assert_eq!(hit.meta.execution, lease.execution);
    assert!(catalog.lookup_output(&k, None).await.unwrap().unwrap() == first);
    let staged = keys_in(&store, keys::staged(&d)).await;
    assert_eq!(
        staged.len() as u32,
        hit.meta.chunks,
        "only chunks: no marker stays"
    );
    assert_eq!(
        keys_in(&store, keys::staged_chunks(&d, &lease.execution)).await,
        staged,
        "the chunks are the staging execution's"
    );
    assert!(keys_in(&store, keys::entry_chunks(&d)).await.is_empty());

    // An execution that died staging left a marker and chunks; an overwrite that stores a new
    // large output removes them and the replaced entry's chunks.
    let dead = keys::staging_marker(&d, "dead-execution");
    crate::harness::blind_write(&store, &dead, &[]).await;
    crate::harness::blind_write(&store, &keys::staged_chunk(&d, "dead-execution", 0), b"x").await;
    let second = big(2);
    let execution = new_execution_id();
    let mut req = request(&k, &execution, LONG_TTL);
    req.overwrite = true;
    let Resolution::Acquired(lease2) = catalog.resolve(&req).await.unwrap() else {
        panic!("an overwrite acquires");
    };
    assert!(matches!(
        catalog.commit(&k, &lease2, &second, None).await.unwrap(),
        Committed::Stored(_)
    ));
    assert!(catalog.lookup(&k, None).await.unwrap().unwrap().output == second);
    assert_eq!(
        keys_in(&store, keys::staged(&d)).await,
        keys_in(&store, keys::staged_chunks(&d, &lease2.execution)).await,
        "only the new entry's chunks are left"
    );

    // A holder that failed after staging: the next lease removes what it staged.
    let k2 = key(&project, 78);
    let d2 = k2.digest;
    let failed = acquire(&catalog, &k2, LONG_TTL).await;
    crate::harness::blind_write(&store, &keys::staging_marker(&d2, &failed.execution), &[]).await;
    crate::harness::blind_write(&store, &keys::staged_chunk(&d2, &failed.execution, 0), b"x").await;
    catalog.fail(&failed, "died half-way").await.unwrap();
    let next = acquire(&catalog, &k2, LONG_TTL).await;
    assert!(next.previous_failure.is_some());
    assert!(keys_in(&store, keys::staged(&d2)).await.is_empty());

    // Eviction removes the staged chunks with the entry.
    assert_eq!(catalog.evict(&EvictScope::Key(d)).await.unwrap(), 1);
    assert!(keys_in(&store, keys::staged(&d)).await.is_empty());
}

/// Overwrite re-executes and replaces the entry atomically; until then the old one is served.
pub async fn overwrite_replaces<H: Harness>() {
    let h = H::new().await;
    let catalog = catalog_of(&h).await;
    let key = key(&project(), 3);
    populate(&catalog, &key, b"old").await;
    let execution = new_execution_id();
    let mut req = request(&key, &execution, LONG_TTL);
    req.overwrite = true;
    let lease = match catalog.resolve(&req).await.unwrap() {
        Resolution::Acquired(l) => l,
        other => panic!("overwrite must acquire, got {other:?}"),
    };
    assert!(lease.overwrite);
    assert_eq!(
        catalog.lookup(&key, None).await.unwrap().unwrap().output,
        b"old"
    );
    match catalog.commit(&key, &lease, b"new", None).await.unwrap() {
        Committed::Stored(meta) => assert_eq!(meta.execution, execution),
        other => panic!("overwrite must store, got {other:?}"),
    }
    assert_eq!(
        catalog.lookup(&key, None).await.unwrap().unwrap().output,
        b"new"
    );
    let stats = catalog
        .task_stats(&key.project, "dev", "square")
        .await
        .unwrap();
    assert_eq!(
        (stats.entries, stats.bytes),
        (1, 3),
        "the old entry's index entry is gone"
    );
}

/// Eviction by key, task version, task, project/domain and producing execution; an evicted key
/// reports that it was evicted on its next resolve.
pub async fn eviction_scopes<H: Harness>() {
    let h = H::new().await;
    let catalog = catalog_of(&h).await;
    let p = project();
    let mut by_exec = None;
    for (task, version) in [("a", "1"), ("a", "2"), ("b", "1")] {
        for n in 0..3 {
            let lease = populate(&catalog, &key_v(&p, task, version, n), b"x").await;
            if (task, version, n) == ("b", "1", 0) {
                by_exec = Some(lease.execution);
            }
        }
    }
    let other = project();
    populate(&catalog, &key(&other, 1), b"y").await;
    let count = |task: Option<&'static str>| {
        let catalog = catalog.clone();
        let p = p.clone();
        async move {
            catalog
                .list_entries(&p, "dev", task, None, 100, None)
                .await
                .unwrap()
                .entries
                .len()
        }
    };
    assert_eq!(count(None).await, 9);

    // By key: the next resolve says it was evicted.
    let k = key_v(&p, "a", "1", 0);
    assert_eq!(catalog.evict(&EvictScope::Key(k.digest)).await.unwrap(), 1);
    assert_eq!(catalog.evict(&EvictScope::Key(k.digest)).await.unwrap(), 0);
    let execution = new_execution_id();
    match catalog
        .resolve(&request(&k, &execution, LONG_TTL))
        .await
        .unwrap()
    {
        Resolution::Acquired(l) => {
            assert!(l.evicted);
            // Computed again, the key forgets its eviction: its commit clears the tombstone
            // (and only a commit that read one clears it).
            catalog.commit(&k, &l, b"again", None).await.unwrap();
        }
        other => panic!("expected to acquire an evicted key, got {other:?}"),
    }
    let execution = new_execution_id();
    let overwriting = ResolveRequest {
        overwrite: true,
        ..request(&k, &execution, LONG_TTL)
    };
    match catalog.resolve(&overwriting).await.unwrap() {
        Resolution::Acquired(l) => {
            assert!(!l.evicted, "a recomputed key is no longer evicted");
            catalog.release(&l).await.unwrap();
        }
        other => panic!("expected to acquire for an overwrite, got {other:?}"),
    }
    assert_eq!(
        count(Some("a")).await,
        6,
        "the recomputed key is listed again"
    );

    // By execution.
    let ev = EvictScope::Execution(by_exec.unwrap());
    assert_eq!(catalog.evict(&ev).await.unwrap(), 1);
    assert_eq!(count(Some("b")).await, 2);

    // By task and version, then by task.
    let v1 = EvictScope::Task {
        project: p.clone(),
        domain: "dev".into(),
        task: "a".into(),
        version: Some("1".into()),
    };
    assert_eq!(catalog.evict(&v1).await.unwrap(), 3);
    assert_eq!(count(Some("a")).await, 3, "version 2 remains");
    let all_a = EvictScope::Task {
        project: p.clone(),
        domain: "dev".into(),
        task: "a".into(),
        version: None,
    };
    assert_eq!(catalog.evict(&all_a).await.unwrap(), 3);

    // By project and domain; another project is untouched.
    let pd = EvictScope::ProjectDomain {
        project: p.clone(),
        domain: "dev".into(),
    };
    assert_eq!(catalog.evict(&pd).await.unwrap(), 2);
    assert_eq!(count(None).await, 0);
    assert!(
        catalog
            .lookup(&key(&other, 1), None)
            .await
            .unwrap()
            .is_some()
    );
}

/// Where the store keeps a memo of the entries (the embedded store), hits are answered from it
/// (its hit counter moves) and never with an entry that was overwritten, evicted (by key or in
/// bulk), expired or made too old since; where it keeps none, the same answers come from reads.
pub async fn hits_from_memory_stay_current<H: Harness>() {
    let h = H::new().await;
    let (catalog, clock) = on_manual_clock(&h).await;
    let memo_hits = || catalog.store().memo().map(|m| m.counters().hits());
    let output = |key: &CacheKey, max_age: Option<Duration>| {
        let catalog = catalog.clone();
        let key = key.clone();
        async move {
            let lone = catalog.lookup_output(&key, max_age).await.unwrap();
            let crowd = catalog
                .lookup_output_among(&key, max_age, true)
                .await
                .unwrap()
                .map(|o| o.to_vec());
            let full = catalog
                .lookup(&key, max_age)
                .await
                .unwrap()
                .map(|hit| hit.output);
            assert_eq!(lone, crowd, "gathered and lone answers agree");
            assert_eq!(lone, full, "lookup and lookup_output agree");
            lone
        }
    };
    let p = project();
    let k = key(&p, 1);
    populate(&catalog, &k, b"first").await;
    let before = memo_hits();
    assert_eq!(output(&k, None).await.as_deref(), Some(&b"first"[..]));
    if let (Some(before), Some(after)) = (before, memo_hits()) {
        assert!(
            after >= before + 3,
            "the hits came from memory: {before} -> {after}"
        );
    }

    // Overwritten: the old output until the new one lands, then the new one.
    let execution = new_execution_id();
    let overwrite = ResolveRequest {
        overwrite: true,
        ..request(&k, &execution, LONG_TTL)
    };
    let Resolution::Acquired(lease) = catalog.resolve(&overwrite).await.unwrap() else {
        panic!("an overwrite acquires");
    };
    assert_eq!(output(&k, None).await.as_deref(), Some(&b"first"[..]));
    catalog.commit(&k, &lease, b"second", None).await.unwrap();
    assert_eq!(output(&k, None).await.as_deref(), Some(&b"second"[..]));

    // Evicted by key, computed again, then evicted in bulk with its project.
    assert_eq!(catalog.evict(&EvictScope::Key(k.digest)).await.unwrap(), 1);
    assert_eq!(output(&k, None).await, None);
    populate(&catalog, &k, b"third").await;
    assert_eq!(output(&k, None).await.as_deref(), Some(&b"third"[..]));
    let pd = EvictScope::ProjectDomain {
        project: p.clone(),
        domain: "dev".into(),
    };
    assert_eq!(catalog.evict(&pd).await.unwrap(), 1);
    assert_eq!(output(&k, None).await, None);

    // Expired by its TTL, and too old for a caller's max_age, on the catalog's clock.
    let k2 = key(&p, 2);
    let lease = acquire(&catalog, &k2, LONG_TTL).await;
    let minute = Duration::from_secs(60);
    catalog
        .commit(&k2, &lease, b"brief", Some(minute))
        .await
        .unwrap();
    assert_eq!(output(&k2, None).await.as_deref(), Some(&b"brief"[..]));
    clock.advance(30_000);
    assert_eq!(output(&k2, Some(Duration::from_secs(10))).await, None);
    assert_eq!(output(&k2, None).await.as_deref(), Some(&b"brief"[..]));
    clock.advance(31_000);
    assert_eq!(output(&k2, None).await, None, "expired");
}

/// `max_age`: an entry older than the task's `max_age` is a miss; the collector removes expired
/// entries through the expiry index.
pub async fn max_age_and_expiry<H: Harness>() {
    let h = H::new().await;
    let (catalog, clock) = on_manual_clock(&h).await;
    let p = project();
    let hour = Duration::from_secs(3600);
    let key1 = key(&p, 1);
    let lease = acquire(&catalog, &key1, LONG_TTL).await;
    catalog
        .commit(&key1, &lease, b"fresh", Some(hour))
        .await
        .unwrap();
    let key2 = key(&p, 2);
    let lease = acquire(&catalog, &key2, LONG_TTL).await;
    catalog
        .commit(&key2, &lease, b"forever", None)
        .await
        .unwrap();

    clock.advance(30 * 60 * 1000);
    assert!(catalog.lookup(&key1, Some(hour)).await.unwrap().is_some());
    assert!(
        catalog
            .lookup(&key1, Some(Duration::from_secs(60)))
            .await
            .unwrap()
            .is_none(),
        "a shorter max_age applies at once"
    );
    assert_eq!(catalog.collect_expired().await.unwrap(), 0);

    clock.advance(31 * 60 * 1000);
    assert!(
        catalog.lookup(&key1, Some(hour)).await.unwrap().is_none(),
        "expired is a miss"
    );
    let execution = new_execution_id();
    match catalog
        .resolve(&request(&key1, &execution, LONG_TTL))
        .await
        .unwrap()
    {
        Resolution::Acquired(l) => assert!(!l.evicted, "expiry is a miss, not an eviction"),
        other => panic!("expected to acquire an expired key, got {other:?}"),
    }
    assert_eq!(catalog.collect_expired().await.unwrap(), 1);
    assert_eq!(catalog.collect_expired().await.unwrap(), 0);
    let page = catalog
        .list_entries(&p, "dev", None, None, 10, None)
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].key.digest, key2.digest);
}

/// The reads of calls made together are gathered into multi-key reads on another task
/// (`Catalog::lookup_output_among` with a crowd): each key's answer is exactly what its lone
/// read answers — missing, inline, chunked, expired by its TTL, too old for the caller's
/// `max_age`, evicted — however many keys share a read, the same key twice included.
pub async fn gathered_reads_agree_with_lone_reads<H: Harness>() {
    let h = H::new().await;
    let (catalog, clock) = on_manual_clock(&h).await;
    let p = project();
    let hour = Duration::from_secs(3600);
    // Larger than what is stored inline with the metadata (16 KiB): stored in chunks.
    let big = |n: i64| -> Vec<u8> { (0..40_000u32).map(|i| (i as i64 * 7 + n) as u8).collect() };
    let small = |n: i64| format!("out-{n}").into_bytes();
    let keys: Vec<CacheKey> = (0..600).map(|n| key(&p, n)).collect();
    for (n, k) in (0i64..).zip(&keys) {
        match n % 6 {
            0 | 5 => {}
            1 => {
                populate(&catalog, k, &small(n)).await;
            }
            2 => {
                populate(&catalog, k, &big(n)).await;
            }
            3 => {
                let lease = acquire(&catalog, k, LONG_TTL).await;
                catalog
                    .commit(k, &lease, &small(n), Some(hour))
                    .await
                    .unwrap();
            }
            _ => {
                populate(&catalog, k, &small(n)).await;
                catalog.evict(&EvictScope::Key(k.digest)).await.unwrap();
            }
        }
    }
    // Past the TTL of the `n % 6 == 3` entries; the `n % 6 == 5` ones are written after.
    clock.advance(2 * 3600 * 1000);
    for (n, k) in (0i64..).zip(&keys).filter(|(n, _)| n % 6 == 5) {
        populate(&catalog, k, &small(n + 1_000)).await;
    }
    let expected = |n: i64, max_age: Option<Duration>| -> Option<Vec<u8>> {
        match n % 6 {
            1 if max_age.is_none() => Some(small(n)),
            2 if max_age.is_none() => Some(big(n)),
            5 => Some(small(n + 1_000)),
            _ => None,
        }
    };
    for max_age in [None, Some(Duration::from_secs(60))] {
        // Every key, then every key again, all at once: 1,200 reads in several batches.
        let gathered = futures::future::join_all(
            keys.iter()
                .chain(&keys)
                .map(|k| catalog.lookup_output_among(k, max_age, true)),
        )
        .await;
        for (i, got) in gathered.into_iter().enumerate() {
            let n = (i % keys.len()) as i64;
            let k = &keys[n as usize];
            let got = got.unwrap_or_else(|e| panic!("gathered read of key {n}: {e}"));
            let alone = catalog
                .lookup_output_among(k, max_age, false)
                .await
                .unwrap();
            assert!(
                got == alone,
                "key {n} (kind {}), max_age {max_age:?}: the gathered read differs from the lone one",
                n % 6
            );
            assert!(
                got.as_deref() == expected(n, max_age).as_deref(),
                "key {n} (kind {}), max_age {max_age:?}: {:?} bytes",
                n % 6,
                got.map(|g| g.len())
            );
        }
    }
}

/// Blobs live while an entry refers to them: a commit refers only to stored blobs; eviction,
/// an overwrite, expiry and bulk eviction delete a blob with its last reference and keep it
/// while another entry refers to it; the orphan collector deletes what nothing came to refer
/// to after its grace period; and a commit racing with the eviction of a blob's last reference
/// never leaves an entry referring to a deleted blob.
pub async fn blobs_live_while_entries_refer_to_them<H: Harness>() {
    use cairn_engine::blobs::BlobDigest;
    let h = H::new().await;
    let clock = ManualClock::new(cairn_engine::clock::Clock::now_ms(
        &cairn_engine::clock::SystemClock,
    ));
    let catalog = Catalog::with(
        h.open().await,
        Arc::new(clock.clone()),
        CatalogConfig::default(),
    );
    let blobs = catalog.blobs();
    let p = project();
    let put = |what: &str| {
        let (blobs, bytes) = (blobs.clone(), format!("{p} {what}").into_bytes());
        async move { blobs.put(&bytes).await.expect("upload") }
    };
    let store = |key: CacheKey, refers: Vec<BlobDigest>, max_age: Option<Duration>| {
        let catalog = catalog.clone();
        async move {
            let lease = acquire(&catalog, &key, LONG_TTL).await;
            match catalog
                .commit_referencing(&key, &lease, b"out", max_age, &refers)
                .await
                .expect("commit")
            {
                Committed::Stored(_) => {}
                other => panic!("expected to store, got {other:?}"),
            }
        }
    };
    let stored = |d: BlobDigest| {
        let blobs = blobs.clone();
        async move { blobs.size(&d).await.unwrap().is_some() }
    };
    let orphan = put("never referred to").await;
    let (shared, only1, expiring) = (
        put("shared").await,
        put("only 1").await,
        put("expiring").await,
    );

    // A blob that is not stored is refused by name, and nothing is stored.
    let missing = BlobDigest::of(format!("{p} never uploaded").as_bytes());
    let k0 = key(&p, 0);
    let lease = acquire(&catalog, &k0, LONG_TTL).await;
    match catalog
        .commit_referencing(&k0, &lease, b"x", None, &[shared, missing])
        .await
    {
        Err(Error::BlobNotFound { digest }) => assert_eq!(digest, missing.to_string()),
        other => panic!("expected BlobNotFound, got {other:?}"),
    }
    assert!(catalog.lookup(&k0, None).await.unwrap().is_none());
    assert_eq!(blobs.references(&shared).await.unwrap(), 0);

    let (k1, k2, k3) = (key(&p, 1), key(&p, 2), key(&p, 3));
    store(k1.clone(), vec![shared, only1], None).await;
    store(k2.clone(), vec![shared], None).await;
    store(k3.clone(), vec![expiring], Some(Duration::from_secs(3600))).await;
    assert_eq!(blobs.references(&shared).await.unwrap(), 2);

    // Evicting k1 deletes the blob only it referred to, not the shared one.
    assert_eq!(catalog.evict(&EvictScope::Key(k1.digest)).await.unwrap(), 1);
    assert!(!stored(only1).await, "a blob goes with its last reference");
    assert!(stored(shared).await, "a blob another entry refers to stays");
    assert_eq!(blobs.references(&shared).await.unwrap(), 1);
    assert_eq!(
        blobs.get(&shared).await.unwrap(),
        format!("{p} shared").into_bytes()
    );

    // Overwriting k2 with an output referring to another blob drops its last reference.
    let replacement = put("replacement").await;
    let execution = new_execution_id();
    let mut req = request(&k2, &execution, LONG_TTL);
    req.overwrite = true;
    let Resolution::Acquired(lease) = catalog.resolve(&req).await.unwrap() else {
        panic!("overwrite must acquire");
    };
    catalog
        .commit_referencing(&k2, &lease, b"new", None, &[replacement])
        .await
        .unwrap();
    assert!(
        !stored(shared).await,
        "the overwritten output's blob is gone"
    );
    assert_eq!(blobs.references(&replacement).await.unwrap(), 1);

    // Expiry removes the entry and its blob.
    clock.advance(2 * 3600 * 1000);
    assert!(stored(expiring).await);
    assert!(catalog.collect_expired().await.unwrap() >= 1);
    assert!(!stored(expiring).await, "an expired entry's blob is gone");

    // Bulk eviction of the task.
    catalog
        .evict(&EvictScope::Task {
            project: p.clone(),
            domain: "dev".into(),
            task: "square".into(),
            version: None,
        })
        .await
        .unwrap();
    assert!(!stored(replacement).await);

    // The orphan collector: what nothing refers to goes after the grace period, not before.
    assert!(stored(orphan).await);
    let grace = catalog.config().orphan_blob_grace;
    clock.advance(grace.as_millis() as i64);
    let fresh = put("uploaded just now").await;
    let kept = put("referred to").await;
    store(key(&p, 4), vec![kept], None).await;
    clock.advance(1000);
    catalog.collect_orphan_blobs().await.unwrap();
    assert!(
        !stored(orphan).await,
        "an orphan past its grace period is deleted"
    );
    assert!(
        stored(fresh).await,
        "an orphan within its grace period is kept"
    );
    clock.advance(grace.as_millis() as i64);
    catalog.collect_orphan_blobs().await.unwrap();
    assert!(!stored(fresh).await);
    assert!(
        stored(kept).await,
        "a blob an entry refers to is never an orphan"
    );

    // Stored again after half its grace period, an unreferenced blob counts as uploaded anew.
    let renewed = put("stored every night").await;
    clock.advance(grace.as_millis() as i64 * 3 / 4);
    assert_eq!(put("stored every night").await, renewed);
    clock.advance(grace.as_millis() as i64 / 2);
    catalog.collect_orphan_blobs().await.unwrap();
    assert!(stored(renewed).await, "renewed 1/2 grace ago: kept");
    clock.advance(grace.as_millis() as i64);
    catalog.collect_orphan_blobs().await.unwrap();
    assert!(
        !stored(renewed).await,
        "then collected once its renewed grace has passed"
    );

    // Races: a commit referring to a blob against the eviction of its last reference. Either
    // the commit wins (the blob stays) or the eviction does (the commit is refused by name).
    for round in 0..20 {
        let b = put(&format!("race {round}")).await;
        let (old, new) = (key(&p, 1000 + round), key(&p, 2000 + round));
        store(old.clone(), vec![b], None).await;
        let lease = acquire(&catalog, &new, LONG_TTL).await;
        let (refers, scope) = ([b], EvictScope::Key(old.digest));
        let (committed, evicted) = tokio::join!(
            catalog.commit_referencing(&new, &lease, b"out", None, &refers),
            catalog.evict(&scope),
        );
        assert_eq!(evicted.unwrap(), 1);
        match committed {
            Ok(Committed::Stored(_)) => {
                assert!(
                    stored(b).await,
                    "round {round}: a stored entry's blob was deleted"
                );
                assert_eq!(blobs.references(&b).await.unwrap(), 1);
            }
            Err(Error::BlobNotFound { .. }) => {
                assert!(!stored(b).await);
                assert!(catalog.lookup(&new, None).await.unwrap().is_none());
            }
            other => panic!("round {round}: {other:?}"),
        }
    }
}

/// Listing pages through every entry once; a foreign cursor is refused by name.
pub async fn listing_pages<H: Harness>() {
    let h = H::new().await;
    let catalog = catalog_of(&h).await;
    let p = project();
    for n in 0..25 {
        populate(&catalog, &key(&p, n), &n.to_be_bytes()).await;
    }
    let mut seen = std::collections::HashSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = catalog
            .list_entries(
                &p,
                "dev",
                Some("square"),
                Some("1.0"),
                10,
                cursor.as_deref(),
            )
            .await
            .unwrap();
        pages += 1;
        for e in &page.entries {
            assert!(seen.insert(e.key.digest), "listed twice");
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!((seen.len(), pages), (25, 3));
    let err = catalog
        .list_entries(&p, "dev", None, None, 10, Some("zz"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidInput { .. }) && err.to_string().contains("cursor"),
        "{err}"
    );
    let stats = catalog.task_stats(&p, "dev", "square").await.unwrap();
    assert_eq!((stats.entries, stats.bytes), (25, 25 * 8));
    assert_eq!(stats.entries_by_version.get("1.0"), Some(&25));
}

/// The record of call `seq` of `run` in `project`/dev (task "square", no key, no body run).
fn call_record(run: &str, project: &str, status: CacheStatus, seq: u64) -> ExecutionRecord {
    ExecutionRecord {
        execution: new_execution_id(),
        run: Some(run.into()),
        project: project.into(),
        domain: "dev".into(),
        task: "square".into(),
        version: "1".into(),
        key: None,
        status,
        started_at_ms: 0,
        duration_us: 0,
        wait_us: 0,
        waited_for: None,
        error: None,
        seq: Some(seq),
        attempt: 1,
        executed: false,
        cache_error: None,
    }
}

/// Records queued together (a flight's callers, answered in one pass) are stored in batches of
/// at most `record_batch`, and a flush returns only once every record queued before it is.
pub async fn records_queued_together_are_stored_before_a_flush<H: Harness>() {
    let h = H::new().await;
    let catalog = Catalog::with(
        h.open().await,
        Arc::new(cairn_engine::clock::SystemClock),
        CatalogConfig {
            record_batch: 10,
            ..CatalogConfig::default()
        },
    );
    let p = project();
    let run = format!("run-{}", new_execution_id());
    let record = |i: u64| ExecutionRecord {
        duration_us: i,
        wait_us: i,
        ..call_record(&run, &p, CacheStatus::Waited, i)
    };
    catalog.record_many((0..35).map(record).collect()).await;
    catalog.record(record(35)).await;
    catalog.record_many((36..100).map(record).collect()).await;
    catalog.flush_records().await.unwrap();
    let stored = catalog.run_executions(&run).await.unwrap();
    let mut seqs: Vec<u64> = stored.iter().filter_map(|r| r.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..100).collect::<Vec<_>>());
    let stats = catalog.task_stats(&p, "dev", "square").await.unwrap();
    assert_eq!(stats.calls.get(&CacheStatus::Waited), Some(&100));
}

/// An execution that ran a body for a key is indexed to its run (where calls that waited for
/// it got their value); an uncached one is not (no call can wait for it), and neither is a
/// call that did not run a body.
pub async fn producers_of_keys_are_indexed_to_their_run<H: Harness>() {
    let h = H::new().await;
    let catalog = catalog_of(&h).await;
    let p = project();
    let run = format!("run-{}", new_execution_id());
    let record = |key: Option<Digest>, executed: bool| ExecutionRecord {
        key,
        executed,
        ..call_record(
            &run,
            &p,
            if key.is_some() {
                CacheStatus::Populated
            } else {
                CacheStatus::Disabled
            },
            0,
        )
    };
    let cached = record(Some(key(&p, 1).digest), true);
    let uncached = record(None, true);
    let hit = record(Some(key(&p, 1).digest), false);
    let ids = [&cached, &uncached, &hit].map(|r| r.execution.clone());
    catalog.record_many(vec![cached, uncached, hit]).await;
    catalog.flush_records().await.unwrap();
    assert_eq!(
        catalog.execution_run(&ids[0]).await.unwrap().as_deref(),
        Some(run.as_str())
    );
    assert_eq!(catalog.execution_run(&ids[1]).await.unwrap(), None);
    assert_eq!(catalog.execution_run(&ids[2]).await.unwrap(), None);
    // Every record is stored all the same.
    assert_eq!(catalog.run_executions(&run).await.unwrap().len(), 3);
}

/// `explain` names the key component that differs from the nearest stored entries: the cache
/// version, the signature, or an input; and says when a key was evicted.
pub async fn explain_names_the_changed_component<H: Harness>() {
    use cairn_engine::catalog::InputDiff;
    let h = H::new().await;
    let catalog = catalog_of(&h).await;
    let p = project();
    let one = key(&p, 1);
    populate(&catalog, &one, b"1").await;
    populate(&catalog, &key(&p, 2), b"4").await;
    assert_eq!(catalog.explain(&one).await.unwrap(), Explanation::Stored);

    let nearest = |e: Explanation| match e {
        Explanation::Miss { nearest, .. } => nearest,
        other => panic!("expected a miss, got {other:?}"),
    };
    let bumped = nearest(
        catalog
            .explain(&key_v(&p, "square", "2.0", 1))
            .await
            .unwrap(),
    );
    assert_eq!(bumped.len(), 1);
    assert_eq!(bumped[0].entry, one.digest);
    assert_eq!(bumped[0].version, Some(("1.0".into(), "2.0".into())));
    assert!(bumped[0].inputs.is_empty() && !bumped[0].signature_changed);

    let other_input = nearest(catalog.explain(&key(&p, 3)).await.unwrap());
    assert_eq!(other_input.len(), 2, "both entries differ by one input");
    assert!(
        other_input
            .iter()
            .all(|d| d.inputs == vec![InputDiff::Changed("n".into())] && d.version.is_none())
    );

    let reshaped = TaskSignature::new("square", TypeDesc::of::<(i64, i64)>())
        .input("n", TypeDesc::of::<i64>());
    let mut inputs = KeyInputs::new();
    inputs.add("n", &1).unwrap();
    let new_sig = CacheKey::new(&p, "dev", &reshaped, "1.0", &inputs).unwrap();
    let changed = nearest(catalog.explain(&new_sig).await.unwrap());
    assert_eq!(changed.len(), 1);
    assert!(
        changed[0].signature_changed
            && changed[0].inputs.is_empty()
            && changed[0].version.is_none()
    );

    catalog
        .evict(&EvictScope::Key(key(&p, 2).digest))
        .await
        .unwrap();
    match catalog.explain(&key(&p, 2)).await.unwrap() {
        Explanation::Evicted { reason } => assert!(reason.contains("key"), "{reason}"),
        other => panic!("expected evicted, got {other:?}"),
    }
    match catalog.explain(&key(&project(), 1)).await.unwrap() {
        Explanation::Miss {
            nearest, compared, ..
        } => assert_eq!((nearest.len(), compared), (0, 0)),
        other => panic!("another project shares nothing: {other:?}"),
    }

    // A plain miss among many entries names a few nearest, and how many are as near.
    for n in 10..30 {
        populate(&catalog, &key(&p, n), b"x").await;
    }
    match catalog.explain(&key(&p, 1_000)).await.unwrap() {
        Explanation::Miss {
            nearest,
            tied,
            compared,
            ..
        } => {
            assert_eq!(nearest.len(), cairn_engine::catalog::MAX_NEAREST);
            assert_eq!(
                (tied, compared),
                (21, 21),
                "every entry differs by its input"
            );
        }
        other => panic!("expected a miss, got {other:?}"),
    }
}

/// An eviction scope made from a project, a key and the execution that stored it.
type ScopeOf = dyn Fn(&str, &CacheKey, &str) -> EvictScope;

/// Overwrites a stored record of `key` (through the store trait, as a disk fault or a bad
/// manual edit would): its metadata, or its first output chunk.
async fn corrupt<S: Store>(store: &S, key: &CacheKey, chunk: bool) {
    let target = if chunk {
        cairn_engine::keys::entry_chunk(&key.digest, 0)
    } else {
        cairn_engine::keys::entry_part(&key.digest, cairn_engine::keys::entry_part::META)
    };
    let old = cairn_engine::store::watch::read_key(store, &target)
        .await
        .unwrap()
        .expect("a record to corrupt");
    let bad = if chunk {
        let mut b = old.clone();
        b[0] ^= 0xff;
        b
    } else {
        b"\xc1 not metadata".to_vec()
    };
    crate::harness::blind_write(store, &target, &bad).await;
}

/// One corrupt entry (metadata that does not decode, or an output chunk that fails its
/// checksum) never poisons its task: listing shows it and every other entry, explain answers,
/// every eviction scope removes it, verify finds it and repairs it, and a plain or an overwrite
/// call computes the key again and replaces it, saying so.
pub async fn corrupt_entries_are_contained<H: Harness>() {
    let h = H::new().await;
    let catalog = catalog_of(&h).await;
    let store = catalog.store().clone();
    let big = vec![9u8; 20_000]; // over the inline limit: stored in a chunk
    for chunk in [false, true] {
        let what = if chunk { "chunk" } else { "metadata" };
        // Listing, explain, verify.
        let p = project();
        let bad = key(&p, 1);
        let lease = populate(&catalog, &bad, &big).await;
        for n in 2..6 {
            populate(&catalog, &key(&p, n), &big).await;
        }
        corrupt(&store, &bad, chunk).await;
        let page = catalog
            .list_entries(&p, "dev", None, None, 100, None)
            .await
            .unwrap();
        if chunk {
            assert_eq!(page.entries.len(), 5, "{what}: its metadata still decodes");
        } else {
            assert_eq!(page.entries.len(), 4, "{what}");
            assert_eq!(page.corrupt.len(), 1, "{what}");
            assert_eq!(page.corrupt[0].0, bad.digest);
        }
        let stats = catalog.task_stats(&p, "dev", "square").await.unwrap();
        assert_eq!(stats.entries, 5, "{what}: stats still count it");
        match catalog.explain(&bad).await.unwrap() {
            Explanation::Corrupt { detail } if !chunk => assert!(!detail.is_empty()),
            Explanation::Stored if chunk => {}
            other => panic!("{what}: {other:?}"),
        }
        assert!(matches!(
            catalog.explain(&key(&p, 9)).await.unwrap(),
            Explanation::Miss { .. }
        ));
        let report = catalog
            .verify(&p, "dev", Some("square"), false)
            .await
            .unwrap();
        assert_eq!(report.checked, 5, "{what}");
        assert_eq!(report.corrupt.len(), 1, "{what}: {report:?}");
        assert_eq!(report.corrupt[0].0, bad.digest);
        // A plain call: not a hit; it takes the lease and replaces the entry, saying so.
        let execution = new_execution_id();
        let Resolution::Acquired(new) = catalog
            .resolve(&request(&bad, &execution, LONG_TTL))
            .await
            .unwrap()
        else {
            panic!("{what}: a corrupt entry is never a hit");
        };
        assert!(new.replaces_corrupt.is_some(), "{what}");
        assert!(new.generation > lease.generation);
        let (out, status, note) = catalog
            .settle(&bad, &new, Ok::<_, String>(b"fresh".to_vec()), None, &[])
            .await;
        assert_eq!(
            (out.unwrap(), status),
            (b"fresh".to_vec(), CacheStatus::Populated)
        );
        assert!(note.unwrap().contains("replaced a corrupt entry"), "{what}");
        assert_eq!(
            catalog.lookup(&bad, None).await.unwrap().unwrap().output,
            b"fresh"
        );
        let report = catalog.verify(&p, "dev", None, false).await.unwrap();
        assert!(report.corrupt.is_empty(), "{what}: {report:?}");
        // An overwrite call replaces one too.
        corrupt(&store, &key(&p, 2), false).await;
        let execution = new_execution_id();
        let two = key(&p, 2);
        let mut req = request(&two, &execution, LONG_TTL);
        req.overwrite = true;
        let Resolution::Acquired(over) = catalog.resolve(&req).await.unwrap() else {
            panic!("{what}: overwrite acquires");
        };
        let (_, status, _) = catalog
            .settle(
                &key(&p, 2),
                &over,
                Ok::<_, String>(b"again".to_vec()),
                None,
                &[],
            )
            .await;
        assert_eq!(status, CacheStatus::Skipped);
        // Verify with repair removes a corrupt entry.
        corrupt(&store, &key(&p, 3), chunk).await;
        let report = catalog.verify(&p, "dev", None, true).await.unwrap();
        assert_eq!((report.corrupt.len(), report.repaired), (1, 1), "{what}");
        assert!(matches!(
            catalog.explain(&key(&p, 3)).await.unwrap(),
            Explanation::Evicted { .. }
        ));
        assert!(
            catalog
                .verify(&p, "dev", None, false)
                .await
                .unwrap()
                .corrupt
                .is_empty()
        );

        // Every eviction scope removes a corrupt entry, with its index rows.
        let scopes: Vec<Box<ScopeOf>> = vec![
            Box::new(|_, k, _| EvictScope::Key(k.digest)),
            Box::new(|p, _, _| EvictScope::Task {
                project: p.into(),
                domain: "dev".into(),
                task: "square".into(),
                version: None,
            }),
            Box::new(|p, _, _| EvictScope::Task {
                project: p.into(),
                domain: "dev".into(),
                task: "square".into(),
                version: Some("1.0".into()),
            }),
            Box::new(|p, _, _| EvictScope::ProjectDomain {
                project: p.into(),
                domain: "dev".into(),
            }),
            Box::new(|_, _, e| EvictScope::Execution(e.into())),
        ];
        for (i, scope) in scopes.iter().enumerate() {
            let p = project();
            let k = key(&p, 1);
            let lease = populate(&catalog, &k, &big).await;
            corrupt(&store, &k, chunk).await;
            let removed = catalog
                .evict(&scope(&p, &k, &lease.execution))
                .await
                .unwrap();
            assert_eq!(removed, 1, "{what}, scope {i}");
            assert!(catalog.lookup(&k, None).await.unwrap().is_none());
            assert!(
                matches!(
                    catalog.explain(&k).await.unwrap(),
                    Explanation::Evicted { .. }
                ),
                "{what}, scope {i}"
            );
            let page = catalog
                .list_entries(&p, "dev", None, None, 10, None)
                .await
                .unwrap();
            assert!(
                page.entries.is_empty() && page.corrupt.is_empty(),
                "{what}, scope {i}"
            );
        }
    }
}

/// Tasks the suite calls through real nodes: the actor runtime is the one implementation of
/// the call protocol (resolve, wait, lease, run, commit or fail, record), so the suite proves it
/// on every backend through the same code users run.
pub mod tasks {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use tokio::sync::oneshot;

    static RUNS: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());
    type Gate = (oneshot::Sender<()>, oneshot::Receiver<()>);
    static GATES: Mutex<BTreeMap<String, Gate>> = Mutex::new(BTreeMap::new());

    /// How many times a body ran for `token`.
    pub fn runs(token: &str) -> usize {
        RUNS.lock().unwrap().get(token).copied().unwrap_or(0)
    }

    /// The next body run for `token` signals the first channel, then waits for the second.
    pub fn gate(token: &str) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (started_tx, started_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        GATES
            .lock()
            .unwrap()
            .insert(token.to_string(), (started_tx, release_rx));
        (started_rx, release_tx)
    }

    async fn body(token: &str) -> usize {
        let n = {
            let mut runs = RUNS.lock().unwrap();
            let n = runs.entry(token.to_string()).or_default();
            *n += 1;
            *n
        };
        let gate = GATES.lock().unwrap().remove(token);
        if let Some((started, release)) = gate {
            let _ = started.send(());
            let _ = release.await;
        }
        n
    }

    /// `token#n`, where n counts the runs of the body for this token.
    #[cairn::task(cache = true, cache_version = "1.0")]
    pub async fn stamp(token: String) -> String {
        let n = body(&token).await;
        format!("{token}#{n}")
    }

    /// `stamp`, never cached.
    #[cairn::task(cache = false)]
    pub async fn stamp_uncached(token: String) -> String {
        let n = body(&token).await;
        format!("{token}#{n}")
    }

    /// Always fails (no retries: a waiter behind it gets the error).
    #[cairn::task(cache = true, cache_version = "1.0")]
    pub async fn refuse(token: String) -> Result<String, String> {
        body(&token).await;
        Err(format!("bad input {token}"))
    }

    /// An output of `len` bytes of text.
    #[cairn::task(cache = true, cache_version = "1.0")]
    pub async fn bulky(token: String, len: usize) -> String {
        body(&token).await;
        "x".repeat(len)
    }
}

/// A node on a new handle of the harness's store, and that handle (for more nodes on it).
async fn node_on<H: Harness>(h: &H, name: &str, config: CatalogConfig) -> (cairn::Node, AnyStore)
where
    H::S: Into<AnyStore>,
{
    let store: AnyStore = h.open().await.into();
    (node_of(&store, name, config).await, store)
}

/// A node on `store` with the suite's tasks.
async fn node_of(store: &AnyStore, name: &str, config: CatalogConfig) -> cairn::Node {
    cairn::Node::builder()
        .name(name)
        .store(store.clone())
        .concurrency(8)
        .catalog_config(config)
        .task(tasks::stamp)
        .task(tasks::stamp_uncached)
        .task(tasks::refuse)
        .task(tasks::bulky)
        .start()
        .await
        .unwrap_or_else(|e| panic!("node {name}: {e}"))
}

/// Makes one call of `task(input)` in run `run` and returns its output and status.
async fn call_in<T: cairn::Task>(
    node: &cairn::Node,
    options: cairn::RunOptions,
    task: T,
    input: T::Input,
) -> (Result<T::Output, cairn::CallError>, CacheStatus) {
    let ctx = node.ctx(options);
    let out = ctx.call(task, input).await;
    let calls = ctx.calls();
    assert_eq!(calls.len(), 1, "one call made");
    (out, calls[0].status)
}

/// Every cache status comes out of calls through a node, each call is recorded with its run,
/// and the per-task counters add up.
pub async fn every_status_is_recorded<H: Harness>()
where
    H::S: Into<AnyStore>,
{
    use cairn::RunOptions;
    use tasks::{bulky, refuse, stamp, stamp_uncached};
    let h = H::new().await;
    let config = CatalogConfig {
        max_output_bytes: 1_000,
        ..CatalogConfig::default()
    };
    let (a, store) = node_on(&h, "a", config.clone()).await;
    let p = project();
    let run = format!("run-{p}");
    let opts = || RunOptions::new(p.clone(), "dev").with_run_id(run.clone());
    let mut statuses = Vec::new();
    let t1 = format!("{p}-1");

    let (out, status) = call_in(&a, opts(), stamp, t1.clone()).await;
    assert_eq!(out.unwrap(), format!("{t1}#1"));
    statuses.push(status); // populated
    let (out, status) = call_in(&a, opts(), stamp, t1.clone()).await;
    assert_eq!(out.unwrap(), format!("{t1}#1"), "the stored output");
    statuses.push(status); // hit
    let (out, status) = call_in(&a, opts(), stamp_uncached, t1.clone()).await;
    assert_eq!(out.unwrap(), format!("{t1}#2"), "ran, uncached");
    statuses.push(status); // disabled
    let (out, status) = call_in(&a, opts().overwrite_cache(true), stamp, t1.clone()).await;
    assert_eq!(out.unwrap(), format!("{t1}#3"), "re-executed");
    statuses.push(status); // skipped
    let (out, _) = call_in(&a, RunOptions::new(p.clone(), "dev"), stamp, t1.clone()).await;
    assert_eq!(out.unwrap(), format!("{t1}#3"), "the entry was replaced");

    let t2 = format!("{p}-2");
    let (out, status) = call_in(&a, opts(), refuse, t2.clone()).await;
    match out {
        Err(cairn::CallError::Task {
            error: cairn::TaskError::Failed { message },
            ..
        }) => assert_eq!(message, format!("bad input {t2}")),
        other => panic!("expected the task's error, got {other:?}"),
    }
    statuses.push(status); // miss
    let (_, again) = call_in(&a, RunOptions::new(p.clone(), "dev"), refuse, t2.clone()).await;
    assert_eq!(again, CacheStatus::Miss, "errors are never cached");
    assert_eq!(tasks::runs(&t2), 2);

    let k1 = cairn::Task::spec(&stamp)
        .cache_key(&p, "dev", cairn::Task::key_inputs(&stamp, &t1).unwrap())
        .unwrap();
    a.catalog()
        .evict(&EvictScope::Key(k1.digest))
        .await
        .unwrap();
    let (out, status) = call_in(&a, opts(), stamp, t1.clone()).await;
    assert_eq!(out.unwrap(), format!("{t1}#4"));
    statuses.push(status); // evicted

    let t3 = format!("{p}-3");
    let (out, status) = call_in(&a, opts(), bulky, (t3.clone(), 1_001)).await;
    assert_eq!(
        out.unwrap().len(),
        1_001,
        "the output still reaches its caller"
    );
    statuses.push(status); // put failure

    // Corrupt metadata makes the read-only lookup fail by name; a call treats the key as a
    // miss and replaces the entry (see `corrupt_entries_are_contained`).
    let t4 = format!("{p}-4");
    let k4 = cairn::Task::spec(&stamp)
        .cache_key(&p, "dev", cairn::Task::key_inputs(&stamp, &t4).unwrap())
        .unwrap();
    crate::harness::blind_write(
        a.catalog().store(),
        &cairn_engine::keys::entry_part(&k4.digest, cairn_engine::keys::entry_part::META),
        b"\xc1garbage",
    )
    .await;
    let err = a.catalog().lookup(&k4, None).await.unwrap_err();
    assert!(
        matches!(err, Error::Corrupt { .. }) && err.to_string().contains(&k4.digest.to_string()),
        "{err}"
    );
    let (out, status) = call_in(&a, opts(), stamp, t4.clone()).await;
    assert_eq!(out.unwrap(), format!("{t4}#1"));
    assert_eq!(
        status,
        CacheStatus::Populated,
        "the corrupt entry is replaced"
    );
    statuses.push(status);

    // Waited: node a runs, node b finds a's lease held and waits for its commit. Node b must
    // resolve while a's body is held at its gate; a slow machine may miss that window, so the
    // step is tried with fresh keys until b waited.
    let b = node_of(&store, "b", config).await;
    let mut waited = None;
    for attempt in 0..5 {
        let t5 = format!("{p}-5-{attempt}");
        let (started, release) = tasks::gate(&t5);
        let first = {
            let (ctx, t5) = (a.ctx(opts()), t5.clone());
            tokio::spawn(async move {
                let out = ctx.call(stamp, t5).await;
                (out, ctx.calls()[0].status)
            })
        };
        tokio::time::timeout(EVENT_TIMEOUT, started)
            .await
            .expect("node a ran the task")
            .unwrap();
        let second = {
            let (ctx, t5) = (b.ctx(opts()), t5.clone());
            tokio::spawn(async move {
                let out = ctx.call(stamp, t5).await;
                (out, ctx.calls()[0].status)
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        release.send(()).unwrap();
        let (x, y) = (first.await.unwrap(), second.await.unwrap());
        assert_eq!(x.0.unwrap(), format!("{t5}#1"));
        assert_eq!(y.0.unwrap(), format!("{t5}#1"), "the same output");
        assert_eq!(tasks::runs(&t5), 1, "ran once");
        statuses.push(x.1);
        statuses.push(y.1);
        if y.1 == CacheStatus::Waited {
            waited = Some(attempt);
            break;
        }
    }
    assert!(waited.is_some(), "node b never waited: {statuses:?}");

    // `Replayed` belongs to the journal of durable runs (the runtime tests produce it);
    // `LookupFailure` needs a store that cannot answer (the PostgreSQL failure test drops its
    // table).
    for s in CacheStatus::ALL
        .into_iter()
        .filter(|s| !matches!(s, CacheStatus::Replayed | CacheStatus::LookupFailure))
    {
        assert!(
            statuses.contains(&s),
            "no call produced {s:?}: {statuses:?}"
        );
    }
    a.catalog().flush_records().await.unwrap();
    b.catalog().flush_records().await.unwrap();
    let records = a.catalog().run_executions(&run).await.unwrap();
    let mut recorded: Vec<_> = records.iter().map(|r| r.status).collect();
    recorded.sort();
    statuses.sort();
    assert_eq!(recorded, statuses);
    let waited = records
        .iter()
        .find(|r| r.status == CacheStatus::Waited)
        .unwrap();
    assert!(
        waited.wait_us > 0 && waited.waited_for.is_some(),
        "{waited:?}"
    );
    let count = |task: &str| {
        let (a, p) = (a.catalog().clone(), p.clone());
        let task = task.to_string();
        async move { a.task_stats(&p, "dev", &task).await.unwrap() }
    };
    let stats = count("stamp").await;
    // Two calls outside the run (the replaced entry read back, above) are counted too.
    let in_run = statuses
        .iter()
        .filter(|s| {
            !matches!(
                s,
                CacheStatus::Disabled | CacheStatus::Miss | CacheStatus::PutFailure
            )
        })
        .count() as u64;
    assert_eq!(
        stats.calls.values().sum::<u64>(),
        in_run + 1,
        "{:?}",
        stats.calls
    );
    let hits = statuses.iter().filter(|s| **s == CacheStatus::Hit).count() as u64 + 1;
    assert_eq!(stats.calls.get(&CacheStatus::Hit), Some(&hits));
    assert_eq!(
        count("refuse").await.calls.get(&CacheStatus::Miss),
        Some(&2)
    );
    // A counter written before atomic adds (big-endian, under the old tag) still counts.
    use cairn_engine::{Store as _, Transaction as _};
    let tx = a.catalog().store().begin().await.unwrap();
    let legacy = cairn_engine::keys::subspace(cairn_engine::keys::tag::STATS).pack(&(
        p.as_str(),
        "dev",
        "stamp",
        CacheStatus::Hit.name(),
    ));
    tx.set(&legacy, &1000u64.to_be_bytes());
    tx.commit().await.unwrap();
    assert_eq!(
        count("stamp").await.calls.get(&CacheStatus::Hit),
        Some(&(hits + 1000))
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Concurrent identical calls, from two nodes, run the task once; every caller gets the same
/// output. A waiter behind a failed execution of a task without retries gets its error.
pub async fn concurrent_calls_run_once<H: Harness>()
where
    H::S: Into<AnyStore>,
{
    use cairn::RunOptions;
    let h = H::new().await;
    let (a, store) = node_on(&h, "a", CatalogConfig::default()).await;
    let b = node_of(&store, "b", CatalogConfig::default()).await;
    let p = project();
    let token = format!("{p}-9");
    let (started, release) = tasks::gate(&token);
    let mut calls = Vec::new();
    for i in 0..200 {
        let ctx = if i % 2 == 0 { &a } else { &b }.ctx(RunOptions::new(p.clone(), "dev"));
        let token = token.clone();
        calls.push(tokio::spawn(
            async move { ctx.call(tasks::stamp, token).await },
        ));
    }
    tokio::time::timeout(EVENT_TIMEOUT, started)
        .await
        .expect("one node ran the task")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    release.send(()).unwrap();
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap(), format!("{token}#1"));
    }
    assert_eq!(tasks::runs(&token), 1, "the task ran exactly once");

    // A waiter behind a failing holder: the task has no retries, so it gets the error.
    let token = format!("{p}-10");
    let (started, release) = tasks::gate(&token);
    let failing = {
        let (ctx, token) = (a.ctx(RunOptions::new(p.clone(), "dev")), token.clone());
        tokio::spawn(async move { ctx.call(tasks::refuse, token).await })
    };
    tokio::time::timeout(EVENT_TIMEOUT, started)
        .await
        .expect("node a ran the task")
        .unwrap();
    let waiter = {
        let (ctx, token) = (b.ctx(RunOptions::new(p.clone(), "dev")), token.clone());
        tokio::spawn(async move { ctx.call(tasks::refuse, token).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    release.send(()).unwrap();
    for out in [failing.await.unwrap(), waiter.await.unwrap()] {
        match out {
            Err(cairn::CallError::Task {
                error: cairn::TaskError::Failed { message },
                ..
            }) => assert!(
                message.ends_with(&format!("bad input {token}")),
                "{message}"
            ),
            other => panic!("expected the holder's error, got {other:?}"),
        }
    }
    assert!(
        tasks::runs(&token) <= 2,
        "the waiter got the error, or (resolving after the failure) ran it itself"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Instantiates the catalog suite for one backend: `catalog_conformance!(Harness)`.
#[macro_export]
macro_rules! catalog_conformance {
    ($harness:ty) => {
        $crate::catalog_conformance!(@tests $harness;
            concurrent_resolve_acquires_once, acquire_many_keeps_per_key_semantics,
            concurrent_commits_are_grouped,
            commit_then_hit, late_owner_never_overwrites,
            waiters_wake_on_commit_and_fail, silent_holder_is_taken_over,
            many_leases_are_beaten_together, chunked_and_oversized_outputs,
            large_outputs_are_staged, overwrite_replaces, eviction_scopes, max_age_and_expiry,
            hits_from_memory_stay_current,
            listing_pages, every_status_is_recorded, gathered_reads_agree_with_lone_reads, blobs_live_while_entries_refer_to_them,
            records_queued_together_are_stored_before_a_flush, concurrent_calls_run_once,
            producers_of_keys_are_indexed_to_their_run,
            explain_names_the_changed_component, corrupt_entries_are_contained);
    };
    (@tests $harness:ty; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::catalog_suite::$name::<$harness>().await;
            }
        )*
    };
}
