//! The schedule and run-table suite on the in-memory backend (the simulation's): without faults,
//! and with seeded conflicts, "maybe committed" commits and faulty watch hints.

mod clean {
    cairn_tests::schedule_conformance!(cairn_tests::harness::MemoryOnly);
}

mod faulty {
    cairn_tests::schedule_conformance!(cairn_tests::harness::MemoryFaults);
}
