//! The catalog conformance suite on the in-memory backend (the simulation's): without faults,
//! and with seeded conflicts, "maybe committed" commits and faulty watch hints.

mod clean {
    cairn_tests::catalog_conformance!(cairn_tests::harness::MemoryOnly);
}

mod faulty {
    cairn_tests::catalog_conformance!(cairn_tests::harness::MemoryFaults);
}
