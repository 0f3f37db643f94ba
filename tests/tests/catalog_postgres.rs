//! The catalog conformance suite on PostgreSQL.

cairn_tests::catalog_conformance!(cairn_tests::harness::PostgresHarness);
