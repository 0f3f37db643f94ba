//! Instantiates a conformance suite on FoundationDB, each test skipping itself (and saying so)
//! when `FDB_CLUSTER_FILE` is not set.

/// `fdb_suite!(suite_module; test_a, test_b, …)` with `suite_module` a module of this crate.
#[macro_export]
macro_rules! fdb_suite {
    ($suite:ident; $($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            if $crate::harness::fdb::cluster_file().is_none() {
                return;
            }
            $crate::$suite::$name::<$crate::harness::fdb::FdbHarness>().await;
        }
    )*};
}
