//! The store conformance suite on FoundationDB: needs the `fdb` feature (libfdb_c to link) and a
//! cluster named by `FDB_CLUSTER_FILE`. Without the cluster file each test prints that it did not
//! run; without the feature `.ci/run` says so.

#[cfg(feature = "fdb")]
cairn_tests::fdb_suite!(conformance;
    read_your_writes, prefetched_reads, range_order_limit_reverse, clear_range, conflicts,
    concurrent_insert_if_absent, transact_retries_conflicts, watch_fires_on_change,
    reopen_keeps_committed_only, size_limits, read_only_and_finished, unreachable_url_is_named);
