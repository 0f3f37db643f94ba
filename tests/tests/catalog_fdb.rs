//! The catalog conformance suite on FoundationDB (feature `fdb` and `FDB_CLUSTER_FILE`; each test
//! prints that it did not run when the cluster file is missing).

#[cfg(feature = "fdb")]
cairn_tests::fdb_suite!(catalog_suite;
    concurrent_resolve_acquires_once, commit_then_hit, late_owner_never_overwrites,
    waiters_wake_on_commit_and_fail, silent_holder_is_taken_over, many_leases_are_beaten_together,
    chunked_and_oversized_outputs,
    overwrite_replaces, eviction_scopes, max_age_and_expiry, listing_pages,
    every_status_is_recorded, concurrent_calls_run_once, explain_names_the_changed_component);
