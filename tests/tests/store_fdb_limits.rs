//! The store conformance suite on the embedded store under FoundationDB's limits.

cairn_tests::store_conformance!(cairn_tests::harness::FdbLimitsOnly);
