//! Cairn's scheduler actors: they resolve cache keys against the store before dispatching task
//! messages to workers, and run periodic schedules. (Built by the actor-runtime work; the crate
//! is part of the fixed workspace layout.)
