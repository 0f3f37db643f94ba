//! Cairn's worker actors: they run task bodies, heartbeat the lease of the call they run and
//! commit the output through the engine's cache catalog. (Built by the actor-runtime work; the
//! crate is part of the fixed workspace layout.)
