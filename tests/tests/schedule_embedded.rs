//! The schedule suite on the embedded backend.

cairn_tests::schedule_conformance!(cairn_tests::harness::EmbeddedHarness);
