//! The store conformance suite on the in-memory backend (the simulation's), under
//! FoundationDB's limits.

cairn_tests::store_conformance!(cairn_tests::harness::MemoryOnly);
