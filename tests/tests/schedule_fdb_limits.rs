//! The schedule suite on the embedded store under FoundationDB's limits, with one commit in 20
//! reported "maybe committed" (half applied, half dropped).

cairn_tests::schedule_conformance!(cairn_tests::harness::FdbLimitsMaybeCommitted);
