//! The store conformance suite on the embedded backend.

cairn_tests::store_conformance!(cairn_tests::harness::EmbeddedHarness);
