//! Shared helpers of Cairn's integration tests: test harnesses for each store backend and the
//! store and catalog conformance suites that every backend runs (see `tests/store_*.rs` and
//! `tests/catalog_*.rs`).

pub mod catalog_suite;
pub mod conformance;
#[cfg(feature = "fdb")]
mod fdb_suite;
pub mod harness;
pub mod runtime;
pub mod schedule_suite;
