//! Shared helpers of Cairn's integration tests: test harnesses for each store backend and the
//! store conformance suite that every backend runs (see `tests/store_*.rs`).

pub mod conformance;
pub mod harness;
