//! The schedule suite on PostgreSQL (three instances are three connections pools).

cairn_tests::schedule_conformance!(cairn_tests::harness::PostgresHarness);
