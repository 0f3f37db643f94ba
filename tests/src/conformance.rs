//! The store conformance suite: one set of behaviours, written once, that every backend must
//! show. Instantiate it with [`store_conformance!`](crate::store_conformance).
//!
//! Every test works under a random key prefix of its own, so tests run in parallel on one
//! database without seeing each other.

use crate::harness::Harness;
use cairn_engine::store::watch::Watch;
use cairn_engine::{Error, RangeOptions, RetryPolicy, SizeLimit, Store, Transaction, transact};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A random key prefix under the test subspace.
pub struct Ns(Vec<u8>);

impl Ns {
    /// A new prefix.
    pub fn new() -> Self {
        let mut p = vec![cairn_engine::keys::tag::TEST];
        p.extend_from_slice(&rand::random::<u64>().to_be_bytes());
        Ns(p)
    }

    /// `prefix ++ suffix`.
    pub fn k(&self, suffix: impl AsRef<[u8]>) -> Vec<u8> {
        let mut k = self.0.clone();
        k.extend_from_slice(suffix.as_ref());
        k
    }

    /// The key of number `i`, so that numbers sort as keys.
    pub fn n(&self, i: u32) -> Vec<u8> {
        self.k(i.to_be_bytes())
    }

    /// The end of this prefix's range.
    pub fn end(&self) -> Vec<u8> {
        cairn_engine::store::prefix_end(&self.0).expect("prefix is not all 0xff")
    }

    /// The prefix itself (the start of its range).
    pub fn begin(&self) -> Vec<u8> {
        self.0.clone()
    }
}

impl Default for Ns {
    fn default() -> Self {
        Self::new()
    }
}

/// Bounded wait for something that must happen.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

async fn put<S: Store>(store: &S, pairs: &[(Vec<u8>, Vec<u8>)]) {
    let tx = store.begin().await.expect("begin");
    for (k, v) in pairs {
        tx.set(k, v);
    }
    tx.commit().await.expect("commit");
}

async fn read<S: Store>(store: &S, key: &[u8]) -> Option<Vec<u8>> {
    let tx = store.begin_read().await.expect("begin_read");
    tx.get(key, false).await.expect("get")
}

fn keys(pairs: &[cairn_engine::KeyValue]) -> Vec<Vec<u8>> {
    pairs.iter().map(|kv| kv.key.clone()).collect()
}

/// A transaction sees its own writes, in point reads, snapshot reads and range reads.
pub async fn read_your_writes<H: Harness>() {
    let h = H::new().await;
    let store = h.open().await;
    let ns = Ns::new();
    put(
        &store,
        &[(ns.k("a"), b"old".to_vec()), (ns.k("c"), b"c".to_vec())],
    )
    .await;

    let tx = store.begin().await.unwrap();
    tx.set(&ns.k("a"), b"new");
    tx.set(&ns.k("b"), b"b");
    tx.clear(&ns.k("c"));
    assert_eq!(
        tx.get(&ns.k("a"), false).await.unwrap(),
        Some(b"new".to_vec())
    );
    assert_eq!(
        tx.get(&ns.k("a"), true).await.unwrap(),
        Some(b"new".to_vec())
    );
    assert_eq!(tx.get(&ns.k("c"), false).await.unwrap(), None);
    assert_eq!(tx.get(&ns.k("c"), true).await.unwrap(), None);
    for opts in [RangeOptions::all(), RangeOptions::all().snapshot()] {
        let range = tx.get_range(&ns.begin(), &ns.end(), opts).await.unwrap();
        assert_eq!(keys(&range), vec![ns.k("a"), ns.k("b")]);
        assert_eq!(range[0].value, b"new");
    }
    let many = tx
        .get_many(
            &[&ns.k("c"), &ns.k("a"), &ns.k("missing"), &ns.k("b")],
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        many,
        vec![None, Some(b"new".to_vec()), None, Some(b"b".to_vec())],
        "in the order asked"
    );
    // Nothing is visible outside before the commit.
    assert_eq!(read(&store, &ns.k("a")).await, Some(b"old".to_vec()));
    tx.commit().await.unwrap();
    assert_eq!(read(&store, &ns.k("a")).await, Some(b"new".to_vec()));
    assert_eq!(read(&store, &ns.k("c")).await, None);
}

/// Keys read ahead with `prefetch` read as they would without it: the transaction's own later
/// writes (set, clear, range clear, add) show through, and a prefetched key changed by
/// another commit before this transaction writes it makes it conflict, as a read would.
pub async fn prefetched_reads<H: Harness>() {
    use cairn_engine::store::decode_counter;
    let h = H::new().await;
    let store = h.open().await;
    let ns = Ns::new();
    put(
        &store,
        &[
            (ns.k("a"), b"a".to_vec()),
            (ns.k("b"), b"b".to_vec()),
            (ns.k("c"), b"c".to_vec()),
            (ns.k("n"), 5i64.to_le_bytes().to_vec()),
        ],
    )
    .await;
    let (a, b, c, n, gone) = (ns.k("a"), ns.k("b"), ns.k("c"), ns.k("n"), ns.k("gone"));

    let tx = store.begin().await.unwrap();
    tx.prefetch(&[&a, &b, &c, &n, &gone]).await.unwrap();
    assert_eq!(
        tx.get_many(&[&gone, &a, &b], false).await.unwrap(),
        vec![None, Some(b"a".to_vec()), Some(b"b".to_vec())],
        "in the order asked"
    );
    tx.set(&a, b"a2");
    tx.clear(&b);
    tx.clear_range(&ns.k("c"), &ns.k("d"));
    tx.add(&n, 2);
    tx.set(&gone, b"here");
    assert_eq!(tx.get(&a, false).await.unwrap(), Some(b"a2".to_vec()));
    assert_eq!(tx.get(&b, false).await.unwrap(), None);
    assert_eq!(tx.get(&c, true).await.unwrap(), None);
    assert_eq!(
        decode_counter(tx.get(&n, false).await.unwrap().as_deref()),
        7
    );
    assert_eq!(
        tx.get_many(&[&gone, &a], false).await.unwrap(),
        vec![Some(b"here".to_vec()), Some(b"a2".to_vec())]
    );
    tx.commit().await.unwrap();
    assert_eq!(read(&store, &a).await, Some(b"a2".to_vec()));
    assert_eq!(read(&store, &c).await, None);

    // A prefetched key is read: another commit changing it makes this one conflict.
    let t1 = store.begin().await.unwrap();
    t1.prefetch(&[&a]).await.unwrap();
    assert_eq!(t1.get(&a, false).await.unwrap(), Some(b"a2".to_vec()));
    put(&store, &[(a.clone(), b"a3".to_vec())]).await;
    assert_eq!(
        t1.get(&a, false).await.unwrap(),
        Some(b"a2".to_vec()),
        "the transaction's own snapshot"
    );
    t1.set(&a, b"a4");
    let err = t1
        .commit()
        .await
        .expect_err("a was changed after it was read: a lost update");
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
}

/// Range reads come back in byte order, honour the limit, run in reverse and are half-open.
pub async fn range_order_limit_reverse<H: Harness>() {
    let h = H::new().await;
    let store = h.open().await;
    let ns = Ns::new();
    let mut order: Vec<u32> = (0..300).collect();
    order.sort_by_key(|i| (i * 7919) % 300); // inserted out of order
    let pairs: Vec<_> = order
        .iter()
        .map(|&i| (ns.n(i), i.to_be_bytes().to_vec()))
        .collect();
    put(&store, &pairs).await;
    // Keys that sort around the prefix must not leak in.
    put(&store, &[(ns.end(), b"outside".to_vec())]).await;

    let tx = store.begin_read().await.unwrap();
    let all = tx
        .get_range(&ns.begin(), &ns.end(), RangeOptions::all())
        .await
        .unwrap();
    assert_eq!(keys(&all), (0..300).map(|i| ns.n(i)).collect::<Vec<_>>());
    assert_eq!(all[42].value, 42u32.to_be_bytes());

    let first = tx
        .get_range(&ns.begin(), &ns.end(), RangeOptions::all().limit(10))
        .await
        .unwrap();
    assert_eq!(keys(&first), (0..10).map(|i| ns.n(i)).collect::<Vec<_>>());

    let last = tx
        .get_range(
            &ns.begin(),
            &ns.end(),
            RangeOptions::all().reverse().limit(5),
        )
        .await
        .unwrap();
    assert_eq!(
        keys(&last),
        (295..300).rev().map(|i| ns.n(i)).collect::<Vec<_>>()
    );

    let rev = tx
        .get_range(&ns.begin(), &ns.end(), RangeOptions::all().reverse())
        .await
        .unwrap();
    assert_eq!(
        keys(&rev),
        (0..300).rev().map(|i| ns.n(i)).collect::<Vec<_>>()
    );

    let mid = tx
        .get_range(&ns.n(100), &ns.n(103), RangeOptions::all())
        .await
        .unwrap();
    assert_eq!(
        keys(&mid),
        vec![ns.n(100), ns.n(101), ns.n(102)],
        "end is exclusive"
    );

    let empty = tx
        .get_range(&ns.n(5), &ns.n(5), RangeOptions::all())
        .await
        .unwrap();
    assert!(empty.is_empty());
    let inverted = tx
        .get_range(&ns.n(9), &ns.n(5), RangeOptions::all())
        .await
        .unwrap();
    assert!(inverted.is_empty());
}

/// `clear_range` removes exactly `[begin, end)`; a later set inside it in the same transaction
/// survives; the transaction's own range reads reflect both.
pub async fn clear_range<H: Harness>() {
    let h = H::new().await;
    let store = h.open().await;
    let ns = Ns::new();
    let pairs: Vec<_> = (0..20).map(|i| (ns.n(i), b"v".to_vec())).collect();
    put(&store, &pairs).await;

    let tx = store.begin().await.unwrap();
    tx.set(&ns.n(7), b"written before the clear");
    tx.clear_range(&ns.n(5), &ns.n(15));
    tx.set(&ns.n(10), b"written after the clear");
    for opts in [RangeOptions::all(), RangeOptions::all().snapshot()] {
        let seen = tx.get_range(&ns.begin(), &ns.end(), opts).await.unwrap();
        let expect: Vec<_> = (0..5).chain([10]).chain(15..20).map(|i| ns.n(i)).collect();
        assert_eq!(
            keys(&seen),
            expect,
            "inside the transaction, snapshot={}",
            opts.snapshot
        );
    }
    tx.commit().await.unwrap();

    let tx = store.begin_read().await.unwrap();
    let seen = tx
        .get_range(&ns.begin(), &ns.end(), RangeOptions::all())
        .await
        .unwrap();
    let expect: Vec<_> = (0..5).chain([10]).chain(15..20).map(|i| ns.n(i)).collect();
    assert_eq!(keys(&seen), expect);
    assert_eq!(
        tx.get(&ns.n(10), false).await.unwrap(),
        Some(b"written after the clear".to_vec())
    );
}

/// A read-modify-write that lost a race fails with a retryable conflict; a snapshot read does
/// not make the transaction conflict; write skew is impossible (serializable, not just
/// snapshot isolation).
pub async fn conflicts<H: Harness>() {
    let h = H::new().await;
    let store = h.open().await;
    let ns = Ns::new();
    put(
        &store,
        &[(ns.k("x"), b"0".to_vec()), (ns.k("y"), b"0".to_vec())],
    )
    .await;

    // Lost update.
    let t1 = store.begin().await.unwrap();
    assert_eq!(
        t1.get(&ns.k("x"), false).await.unwrap(),
        Some(b"0".to_vec())
    );
    let t2 = store.begin().await.unwrap();
    t2.get(&ns.k("x"), false).await.unwrap();
    t2.set(&ns.k("x"), b"2");
    t2.commit().await.unwrap();
    t1.set(&ns.k("x"), b"1");
    let err = t1
        .commit()
        .await
        .expect_err("t1 read x before t2 changed it");
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert!(err.is_retryable());
    assert_eq!(read(&store, &ns.k("x")).await, Some(b"2".to_vec()));

    // Snapshot reads do not conflict.
    let t1 = store.begin().await.unwrap();
    t1.get(&ns.k("x"), true).await.unwrap();
    put(&store, &[(ns.k("x"), b"3".to_vec())]).await;
    t1.set(&ns.k("other"), b"1");
    t1.commit().await.expect("a snapshot read adds no conflict");

    // Write skew: each reads both and writes one; they cannot both commit.
    let t1 = store.begin().await.unwrap();
    let t2 = store.begin().await.unwrap();
    for t in [&t1, &t2] {
        t.get(&ns.k("x"), false).await.unwrap();
        t.get(&ns.k("y"), false).await.unwrap();
    }
    t1.set(&ns.k("x"), b"skew-1");
    t2.set(&ns.k("y"), b"skew-2");
    let r1 = t1.commit().await;
    let r2 = t2.commit().await;
    assert!(
        r1.is_err() || r2.is_err(),
        "both write-skew transactions committed: isolation is not serializable"
    );
    for r in [r1, r2] {
        if let Err(e) = r {
            assert!(matches!(e, Error::Conflict { .. }), "{e}");
        }
    }
}

/// Atomic adds: FoundationDB's `ADD` on 8-byte little-endian counters, seen by the adding
/// transaction's own reads, ordered with its sets and clears, wrapping at 64 bits.
pub async fn atomic_add<H: Harness>() {
    use cairn_engine::store::{decode_counter, encode_counter};
    let h = H::new().await;
    let store = h.open().await;
    let ns = Ns::new();
    let value = |v: Option<Vec<u8>>| decode_counter(v.as_deref());
    // Absent counts as 0; adds accumulate within and across transactions; negatives subtract.
    let tx = store.begin().await.unwrap();
    tx.add(&ns.k("c"), 5);
    tx.add(&ns.k("c"), 2);
    assert_eq!(value(tx.get(&ns.k("c"), false).await.unwrap()), 7);
    assert_eq!(value(tx.get(&ns.k("c"), true).await.unwrap()), 7);
    tx.commit().await.unwrap();
    let tx = store.begin().await.unwrap();
    tx.add(&ns.k("c"), -10);
    tx.commit().await.unwrap();
    let stored = read(&store, &ns.k("c")).await;
    assert_eq!(stored.as_deref(), Some(&encode_counter(-3)[..]));

    // Ordered with the transaction's own sets and clears.
    let tx = store.begin().await.unwrap();
    tx.set(&ns.k("s"), &encode_counter(40));
    tx.add(&ns.k("s"), 2); // after a set: 42
    tx.add(&ns.k("t"), 9);
    tx.set(&ns.k("t"), &encode_counter(1)); // a set after an add wins: 1
    tx.add(&ns.k("c"), 100);
    tx.clear(&ns.k("c"));
    tx.add(&ns.k("c"), 4); // after a clear: 4
    tx.commit().await.unwrap();
    assert_eq!(value(read(&store, &ns.k("s")).await), 42);
    assert_eq!(value(read(&store, &ns.k("t")).await), 1);
    assert_eq!(value(read(&store, &ns.k("c")).await), 4);
    let tx = store.begin().await.unwrap();
    tx.add(&ns.k("c"), 1);
    tx.clear_range(&ns.k("a"), &ns.k("d")); // clears c and the add before it
    tx.add(&ns.k("s"), 1);
    tx.commit().await.unwrap();
    assert_eq!(read(&store, &ns.k("c")).await, None);
    assert_eq!(value(read(&store, &ns.k("s")).await), 43);

    // A range read sees pending adds, in key order.
    let tx = store.begin().await.unwrap();
    tx.add(&ns.k("r1"), 1);
    tx.add(&ns.k("s"), 1);
    let pairs = tx
        .get_range(&ns.k("r"), &ns.k("t"), RangeOptions::all())
        .await
        .unwrap();
    assert_eq!(keys(&pairs), vec![ns.k("r1"), ns.k("s")]);
    assert_eq!(decode_counter(Some(&pairs[1].value)), 44);
    tx.commit().await.unwrap();
    assert_eq!(value(read(&store, &ns.k("s")).await), 44);

    // Wraps at 64 bits; a shorter stored value is zero-extended.
    put(&store, &[(ns.k("w"), encode_counter(i64::MAX).to_vec())]).await;
    put(&store, &[(ns.k("short"), vec![1, 1])]).await;
    let tx = store.begin().await.unwrap();
    tx.add(&ns.k("w"), 2);
    tx.add(&ns.k("short"), 1);
    tx.commit().await.unwrap();
    assert_eq!(value(read(&store, &ns.k("w")).await), i64::MIN + 1);
    assert_eq!(value(read(&store, &ns.k("short")).await), 258);
}

/// Concurrent adds to one counter lose nothing; on the stores that promise it (all but
/// PostgreSQL, where every write takes an exclusive key lock without waiting), two
/// open transactions that add to one key both commit.
pub async fn concurrent_adds<H: Harness>() {
    const TASKS: usize = 8;
    const EACH: i64 = 100;
    let h = H::new().await;
    let store = h.open().await;
    let ns = Arc::new(Ns::new());
    let t1 = store.begin().await.unwrap();
    let t2 = store.begin().await.unwrap();
    t1.add(&ns.k("c"), 1);
    t2.add(&ns.k("c"), 1);
    let (r1, r2) = (t1.commit().await, t2.commit().await);
    if store.backend() != "postgres" {
        r1.expect("an add adds no read conflict");
        r2.expect("an add adds no read conflict");
    } else {
        // At least one lands; a refused one is a retryable conflict.
        assert!(r1.is_ok() || r2.is_ok());
        for e in [r1, r2].into_iter().filter_map(|r| r.err()) {
            assert!(e.is_retryable(), "{e}");
        }
    }
    let base = cairn_engine::store::decode_counter(read(&store, &ns.k("c")).await.as_deref());
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (store, ns) = (store.clone(), ns.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..EACH {
                transact(&store, &RetryPolicy::default(), |tx| {
                    let key = ns.k("c");
                    async move {
                        tx.add(&key, 1);
                        Ok(())
                    }
                })
                .await
                .expect("add");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = cairn_engine::store::decode_counter(read(&store, &ns.k("c")).await.as_deref());
    assert_eq!(total, base + TASKS as i64 * EACH);
}

/// 8 concurrent tasks each visit the same 10,000 keys; each visit is one transaction that reads
/// the key and inserts it if absent. Every key ends up inserted exactly once.
pub async fn concurrent_insert_if_absent<H: Harness>() {
    const KEYS: u32 = 10_000;
    const TASKS: usize = 8;
    let h = H::new().await;
    let store = h.open().await;
    let ns = Arc::new(Ns::new());
    let inserted = Arc::new(AtomicUsize::new(0));
    let policy = RetryPolicy {
        max_attempts: 1_000,
        ..RetryPolicy::default()
    };
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (store, ns, inserted, policy) =
            (store.clone(), ns.clone(), inserted.clone(), policy.clone());
        tasks.push(tokio::spawn(async move {
            // Each task visits the keys in its own order, so they collide all along the way.
            let offset = (t as u32) * (KEYS / TASKS as u32);
            for i in 0..KEYS {
                let key = ns.n((i + offset) % KEYS);
                let did_insert = transact(&store, &policy, |tx| {
                    let key = &key;
                    async move {
                        if tx.get(key, false).await?.is_some() {
                            return Ok(false);
                        }
                        tx.set(key, &(t as u32).to_be_bytes());
                        Ok(true)
                    }
                })
                .await
                .expect("transaction");
                if did_insert {
                    inserted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(
        inserted.load(Ordering::Relaxed),
        KEYS as usize,
        "inserts that committed"
    );
    let tx = store.begin_read().await.unwrap();
    let all = tx
        .get_range(&ns.begin(), &ns.end(), RangeOptions::all())
        .await
        .unwrap();
    assert_eq!(all.len(), KEYS as usize);
    assert_eq!(store.counters().commits(), (KEYS as u64) * TASKS as u64);
}

/// `transact` retries conflicts until every increment of a shared counter has landed.
pub async fn transact_retries_conflicts<H: Harness>() {
    let h = H::new().await;
    let store = h.open().await;
    let ns = Arc::new(Ns::new());
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, ns) = (store.clone(), ns.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                transact(&store, &RetryPolicy::default(), |tx| {
                    let key = ns.k("counter");
                    async move {
                        let n = match tx.get(&key, false).await? {
                            Some(v) => u64::from_be_bytes(v.try_into().expect("8 bytes")),
                            None => 0,
                        };
                        tokio::task::yield_now().await;
                        tx.set(&key, &(n + 1).to_be_bytes());
                        Ok(())
                    }
                })
                .await
                .expect("increment");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let v = read(&store, &ns.k("counter")).await.unwrap();
    assert_eq!(u64::from_be_bytes(v.try_into().unwrap()), 200);
    assert_eq!(store.counters().commits(), 200);
    assert!(store.counters().retries() >= store.counters().conflicts());
}

/// Phantoms: two transactions each read a range (not `snapshot`) and insert into the other's.
/// Serializable means one of them sees the other's insert, or one fails to commit. (They run
/// in two tasks: a store may make the second range read wait for the first transaction.)
pub async fn range_write_skew<H: Harness>() {
    let h = H::new().await;
    let store = h.open().await;
    let ns = Arc::new(Ns::new());
    for round in 0..5 {
        let run = |mine: &'static str, theirs: &'static str| {
            let (store, ns) = (store.clone(), ns.clone());
            tokio::spawn(async move {
                let tx = store.begin().await.unwrap();
                let (b, e) = (
                    ns.k(format!("{round}/{theirs}/")),
                    ns.k(format!("{round}/{theirs}0")),
                );
                let seen = tx
                    .get_range(&b, &e, RangeOptions::all())
                    .await
                    .unwrap()
                    .len();
                tokio::time::sleep(Duration::from_millis(20)).await;
                tx.set(&ns.k(format!("{round}/{mine}/row")), b"1");
                (seen, tx.commit().await)
            })
        };
        let (t1, t2) = (run("a", "b"), run("b", "a"));
        let (seen1, r1) = t1.await.unwrap();
        let (seen2, r2) = t2.await.unwrap();
        for r in [&r1, &r2] {
            if let Err(e) = r {
                assert!(matches!(e, Error::Conflict { .. }), "{e}");
            }
        }
        if r1.is_ok() && r2.is_ok() {
            assert!(
                seen1 + seen2 >= 1,
                "round {round}: both committed and neither saw the other's insert: \
                 range reads are not serializable"
            );
        }
    }
}

/// `transact` retries an error that a body drew from reads that do not belong together, as a
/// conflict: the body reads `x`, another transaction changes `x` and `y` together, the body
/// reads `y` and refuses a pair that no committed state held. A store whose reads come from
/// one snapshot never shows such a pair; one whose reads may not must make `transact` retry.
pub async fn transact_retries_errors_of_torn_reads<H: Harness>() {
    let h = H::new().await;
    let store = h.open().await;
    let ns = Ns::new();
    put(
        &store,
        &[(ns.k("x"), b"0".to_vec()), (ns.k("y"), b"0".to_vec())],
    )
    .await;
    let attempts = AtomicUsize::new(0);
    let pair = transact(&store, &RetryPolicy::default(), |tx| {
        let (store, ns, attempts) = (&store, &ns, &attempts);
        async move {
            let x = tx.get(&ns.k("x"), false).await?;
            if attempts.fetch_add(1, Ordering::Relaxed) == 0 {
                put(
                    store,
                    &[(ns.k("x"), b"1".to_vec()), (ns.k("y"), b"1".to_vec())],
                )
                .await;
            }
            let y = tx.get(&ns.k("y"), false).await?;
            if x != y {
                return Err(Error::Corrupt {
                    what: "the pair x, y".into(),
                    detail: format!("x = {x:?}, y = {y:?}: no commit wrote these together"),
                });
            }
            Ok((x, y))
        }
    })
    .await
    .expect("no body sees a torn pair, or transact retries it");
    assert_eq!(pair.0, pair.1);
}

/// A transaction that writes nothing commits only what one committed state held: reads in one
/// statement commit whatever commits after them (a read-only commit never conflicts, as in
/// FoundationDB), and reads in several statements, torn by a commit between them, either come
/// from one state or fail the commit as a conflict.
pub async fn writeless_commits_see_one_state<H: Harness>() {
    let h = H::new().await;
    let store = h.open().await;
    let ns = Ns::new();
    let (x, y) = (ns.k("x"), ns.k("y"));
    let both = |v: &[u8]| [(x.clone(), v.to_vec()), (y.clone(), v.to_vec())];
    put(&store, &both(b"0")).await;

    // Both keys in one read, a commit of both after it: the commit holds.
    let t = store.begin().await.unwrap();
    let pair = t.get_many(&[&x, &y], false).await.unwrap();
    assert_eq!(pair, vec![Some(b"0".to_vec()), Some(b"0".to_vec())]);
    put(&store, &both(b"1")).await;
    t.commit()
        .await
        .expect("a transaction that wrote nothing and read one state commits");

    // One key, a commit of both, the other key: the pair is from one state or refused. Again
    // with the first read served from a prefetch, the transaction's own cache.
    for (prefetch, value) in [(false, b"2"), (true, b"3")] {
        let t = store.begin().await.unwrap();
        if prefetch {
            t.prefetch(&[&x]).await.unwrap();
        }
        let first = t.get(&x, false).await.unwrap();
        put(&store, &both(value)).await;
        let second = t.get(&y, false).await.unwrap();
        match t.commit().await {
            Ok(()) => assert_eq!(
                first, second,
                "a writeless transaction committed a pair no commit wrote together \
                 (prefetch: {prefetch})"
            ),
            Err(e) => {
                assert!(matches!(e, Error::Conflict { .. }), "{e}");
                assert_ne!(first, second, "a consistent pair was refused");
            }
        }
    }
}

/// A watch fires when another handle commits a change to its key, not for other keys, and
/// reports the new value.
pub async fn watch_fires_on_change<H: Harness>() {
    let h = H::new().await;
    let store = h.open().await;
    let other = h.second_handle(&store).await;
    let ns = Ns::new();
    put(&store, &[(ns.k("watched"), b"1".to_vec())]).await;

    let watch = Watch::new(&store, &ns.k("watched")).await.unwrap();
    assert_eq!(watch.seen(), Some(&b"1"[..]));
    let waiter = tokio::spawn(watch.changed());

    put(&other, &[(ns.k("unrelated"), b"x".to_vec())]).await;
    put(&other, &[(ns.k("watched"), b"1".to_vec())]).await; // same value: not a change
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "the watch fired without a change to its key"
    );

    put(&other, &[(ns.k("watched"), b"2".to_vec())]).await;
    let new = tokio::time::timeout(EVENT_TIMEOUT, waiter)
        .await
        .expect("watch fired")
        .unwrap()
        .unwrap();
    assert_eq!(new, Some(b"2".to_vec()));

    // Deleting a key is a change too.
    let watch = Watch::new(&store, &ns.k("watched")).await.unwrap();
    let waiter = tokio::spawn(watch.changed());
    let tx = other.begin().await.unwrap();
    tx.clear(&ns.k("watched"));
    tx.commit().await.unwrap();
    let new = tokio::time::timeout(EVENT_TIMEOUT, waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(new, None);
}

/// Dropping the store keeps every committed write and none of an uncommitted transaction.
pub async fn reopen_keeps_committed_only<H: Harness>() {
    let h = H::new().await;
    let ns = Ns::new();
    {
        let store = h.open().await;
        let pairs: Vec<_> = (0..100).map(|i| (ns.n(i), vec![i as u8; 1000])).collect();
        put(&store, &pairs).await;
        let tx = store.begin().await.unwrap();
        tx.set(&ns.k("uncommitted"), b"lost");
        tx.clear(&ns.n(0));
        drop(tx);
        drop(store);
    }
    let store = h.open().await;
    let tx = store.begin_read().await.unwrap();
    let all = tx
        .get_range(&ns.n(0), &ns.n(100), RangeOptions::all())
        .await
        .unwrap();
    assert_eq!(all.len(), 100);
    assert_eq!(all[99].value, vec![99u8; 1000]);
    assert_eq!(tx.get(&ns.k("uncommitted"), false).await.unwrap(), None);
}

/// FoundationDB's limits hold on every backend and name what broke them.
pub async fn size_limits<H: Harness>() {
    let h = H::new().await;
    let store = h.open().await;
    let ns = Ns::new();

    let tx = store.begin().await.unwrap();
    tx.set(&ns.k("max"), &vec![7u8; 100_000]);
    tx.commit()
        .await
        .expect("a value of exactly 100,000 bytes fits");
    assert_eq!(
        read(&store, &ns.k("max")).await.map(|v| v.len()),
        Some(100_000)
    );

    let expect = |r: Result<(), Error>, what: SizeLimit| match r {
        Err(Error::TooLarge { what: w, .. }) if w == what => {}
        other => panic!("expected {what} too large, got {other:?}"),
    };
    let tx = store.begin().await.unwrap();
    tx.set(&ns.k("big"), &vec![0u8; 100_001]);
    let r = tx.commit().await;
    assert!(!r.as_ref().is_err_and(Error::is_retryable));
    expect(r, SizeLimit::Value);

    let tx = store.begin().await.unwrap();
    tx.set(&ns.k(vec![b'k'; 10_001]), b"v");
    expect(tx.commit().await, SizeLimit::Key);

    let tx = store.begin().await.unwrap();
    for i in 0..101 {
        tx.set(&ns.n(i), &vec![1u8; 99_999]);
    }
    expect(tx.commit().await, SizeLimit::Transaction);
    assert_eq!(read(&store, &ns.k("big")).await, None);
    assert_eq!(
        read(&store, &ns.n(0)).await,
        None,
        "nothing of a rejected transaction lands"
    );

    // Keys far over the limit (the embedded store's library panics past 64 KiB) are refused
    // by reads and writes alike, naming the limit; nothing panics.
    let huge = ns.k(vec![b'h'; 70_000]);
    let tx = store.begin().await.unwrap();
    let read_err = tx.get(&huge, false).await;
    assert!(
        matches!(
            read_err,
            Err(Error::TooLarge {
                what: SizeLimit::Key,
                ..
            })
        ),
        "{read_err:?}"
    );
    let range_err = tx
        .get_range(&huge, &ns.k(vec![b'i'; 70_000]), RangeOptions::all())
        .await;
    assert!(
        matches!(range_err, Err(Error::TooLarge { .. })),
        "{range_err:?}"
    );
    let tx = store.begin().await.unwrap();
    tx.clear(&huge);
    tx.clear_range(&huge, &ns.k(vec![b'i'; 70_000]));
    tx.set(&huge, b"v");
    expect(tx.commit().await, SizeLimit::Key);
}

/// Read-only transactions refuse writes; finished transactions refuse reuse.
pub async fn read_only_and_finished<H: Harness>() {
    let h = H::new().await;
    let store = h.open().await;
    let ns = Ns::new();
    let tx = store.begin_read().await.unwrap();
    tx.set(&ns.k("a"), b"1");
    assert!(matches!(tx.commit().await, Err(Error::ReadOnly)));
    assert_eq!(read(&store, &ns.k("a")).await, None);

    let tx = store.begin().await.unwrap();
    tx.set(&ns.k("a"), b"1");
    tx.commit().await.unwrap();
    assert!(matches!(tx.commit().await, Err(Error::Finished)));
    assert!(matches!(
        tx.get(&ns.k("a"), false).await,
        Err(Error::Finished)
    ));
}

/// A URL that cannot be opened fails with an error naming it (and never showing a password).
pub async fn unreachable_url_is_named<H: Harness>() {
    let h = H::new().await;
    let (url, must_contain) = h.unreachable_url();
    let err = match cairn_engine::AnyStore::open(&url).await {
        Ok(_) => panic!("{url} opened"),
        Err(e) => e,
    };
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&must_contain),
        "{text:?} does not name {must_contain:?}"
    );
    assert!(!text.contains("secret"), "{text:?} shows the password");
}

/// Instantiates the conformance suite for one backend: `store_conformance!(Harness)`.
#[macro_export]
macro_rules! store_conformance {
    ($harness:ty) => {
        $crate::store_conformance!(@tests $harness;
            read_your_writes, prefetched_reads, range_order_limit_reverse, clear_range,
            conflicts, range_write_skew, transact_retries_errors_of_torn_reads,
            writeless_commits_see_one_state, atomic_add,
            concurrent_adds, concurrent_insert_if_absent, transact_retries_conflicts,
            watch_fires_on_change,
            reopen_keeps_committed_only, size_limits, read_only_and_finished,
            unreachable_url_is_named);
    };
    (@tests $harness:ty; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::conformance::$name::<$harness>().await;
            }
        )*
    };
}
