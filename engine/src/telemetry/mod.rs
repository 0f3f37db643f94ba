//! Telemetry shared by every crate: the names of spans, attributes and metrics ([`semconv`]),
//! the trace context carried inside jobs across nodes ([`propagate`]) and the metric
//! instruments ([`metrics`]).
//!
//! Spans are `tracing` spans; they reach OpenTelemetry only when the node installs the
//! `tracing-opentelemetry` layer (`cairn::telemetry`). Metrics are off until a meter is
//! installed. Off, each costs a relaxed atomic load or a disabled-callsite check on the hot path
//! (measured in `benches/README.md`).

pub mod metrics;
pub mod propagate;
pub mod semconv;
