//! The schedule suite on FoundationDB (feature `fdb` and `FDB_CLUSTER_FILE`; each test returns
//! at once when the cluster file is missing).

#[cfg(feature = "fdb")]
cairn_tests::fdb_suite!(schedule_suite;
    three_instances_fire_each_tick_once, catch_up_after_downtime, overlap_policies,
    pause_resume_backfill, a_broken_schedule_does_not_stop_the_others,
    runs_are_recorded_listed_and_never_reused, runs_are_taken_over_and_fenced,
    runs_are_cancelled_and_submitted_idempotently,
    journals_are_collected_after_their_retention,
    backfills_are_bounded_and_in_the_past,
    a_long_backfill_drains_in_slices_and_the_schedule_keeps_firing);
