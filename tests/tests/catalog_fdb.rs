//! The catalog conformance suite on FoundationDB (feature `fdb` and `FDB_CLUSTER_FILE`; each test
//! prints that it did not run when the cluster file is missing).

#[cfg(feature = "fdb")]
mod with_cluster {
    macro_rules! guarded {
        ($($name:ident),*) => {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if cairn_tests::harness::fdb::cluster_file().is_none() {
                    return;
                }
                cairn_tests::catalog_suite::$name::<cairn_tests::harness::fdb::FdbHarness>().await;
            }
        )*};
    }
    guarded!(
        concurrent_resolve_acquires_once,
        commit_then_hit,
        late_owner_never_overwrites,
        waiters_wake_on_commit_and_fail,
        silent_holder_is_taken_over,
        chunked_and_oversized_outputs,
        overwrite_replaces,
        eviction_scopes,
        max_age_and_expiry,
        listing_pages,
        every_status_is_recorded,
        concurrent_calls_run_once
    );
}
