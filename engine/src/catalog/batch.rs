//! Many independent operations in one transaction, each with its own result: what batched
//! lease acquisitions and group commits share.

use crate::error::{Error, Result};
use crate::store::{RetryPolicy, Store, Transaction, transact};
use std::future::Future;

/// Runs `each` for every item of `items` in one transaction and returns each item's result.
/// Where a read is a round trip ([`Store::gathers_reads`]), the keys `reads` names for each
/// item are read first, all in one ([`crate::Transaction::prefetch`]), so the items' own reads
/// cost none.
/// An error about one item (one `each` that fails without a retryable error) is that item's
/// result alone, so `each` must make its writes only after its checks. A transaction that
/// fails (a conflict, "maybe committed", a size limit) is split in halves and each half tried
/// again, down to single items, which run through `one` with the usual retries: a conflict on
/// one item never fails the others.
pub(super) async fn each_in_batches<'a, S, I, R, E, EFut, O, OFut>(
    store: &S,
    retry: &RetryPolicy,
    items: &'a [I],
    reads: impl Fn(&'a I) -> Vec<Vec<u8>>,
    each: E,
    one: O,
) -> Vec<Result<R>>
where
    S: Store,
    E: Fn(S::Tx, &'a I) -> EFut,
    EFut: Future<Output = Result<R>>,
    O: Fn(&'a I) -> OFut,
    OFut: Future<Output = Result<R>>,
{
    let once = RetryPolicy {
        max_attempts: 1,
        ..retry.clone()
    };
    let mut out: Vec<Option<Result<R>>> = (0..items.len()).map(|_| None).collect();
    let mut todo = vec![(0, items.len())];
    while let Some((begin, end)) = todo.pop() {
        if end <= begin {
            continue;
        }
        if end - begin == 1 {
            out[begin] = Some(one(&items[begin]).await);
            continue;
        }
        let part = &items[begin..end];
        let each = &each;
        let wanted: Vec<Vec<u8>> = if store.gathers_reads() {
            part.iter().flat_map(&reads).collect()
        } else {
            Vec::new()
        };
        let wanted: Vec<&[u8]> = wanted.iter().map(Vec::as_slice).collect();
        let wanted = &wanted;
        let tried = transact(store, &once, |tx| async move {
            if !wanted.is_empty() {
                tx.prefetch(wanted).await?;
            }
            let mut results = Vec::with_capacity(part.len());
            for item in part {
                match each(tx.clone(), item).await {
                    // The transaction itself failed: tried again, split.
                    Err(e) if e.worth_retrying() => return Err(e),
                    result => results.push(result),
                }
            }
            Ok(results)
        })
        .await;
        match tried {
            Ok(results) => {
                for (i, r) in results.into_iter().enumerate() {
                    out[begin + i] = Some(r);
                }
            }
            // Any failure of the whole, an outage that outlasted the policy included: single
            // items then report it, each for itself.
            Err(_) => {
                let mid = begin + (end - begin) / 2;
                todo.push((mid, end));
                todo.push((begin, mid));
            }
        }
    }
    out.into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(Error::Backend {
                    backend: "catalog",
                    detail: "a batched operation was left without a result".into(),
                })
            })
        })
        .collect()
}
