//! The catalog conformance suite on the embedded backend.

cairn_tests::catalog_conformance!(cairn_tests::harness::EmbeddedHarness);
