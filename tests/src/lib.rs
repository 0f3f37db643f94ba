//! Shared helpers of Cairn's integration tests: test harnesses for each store backend and the
//! store and catalog conformance suites that every backend runs (see `tests/store_*.rs` and
//! `tests/catalog_*.rs`).

// Every dependency of the library is used by it (the lint runs per target; tests and
// benchmarks have their own dev-dependencies).
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

pub mod catalog_suite;
pub mod conformance;
#[cfg(feature = "fdb")]
mod fdb_suite;
pub mod harness;
pub mod runtime;
pub mod schedule_suite;
pub mod sim;
