//! The store conformance suite on PostgreSQL (the server `.ci/run` starts, or
//! `CAIRN_TEST_POSTGRES`).

cairn_tests::store_conformance!(cairn_tests::harness::PostgresHarness);
