//! Exporting spans and metrics over OTLP (gRPC or HTTP/protobuf), configured by the standard
//! `OTEL_*` variables (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL`,
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_*`, `OTEL_METRIC_EXPORT_INTERVAL`,
//! `OTEL_SDK_DISABLED`) and the `[telemetry]` section of the config file (the variables win).
//!
//! Off by default: with no endpoint anywhere, only a `fmt` layer for warnings (`RUST_LOG`) is
//! installed, Cairn's spans are disabled call sites and its metrics a skipped atomic check.

use crate::error::Error;
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::Deserialize;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// `[telemetry]` of the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP endpoint, e.g. `http://collector:4317` (gRPC) or `http://collector:4318` (HTTP).
    pub otlp_endpoint: Option<String>,
    /// `grpc` (default) or `http/protobuf`.
    pub protocol: Option<String>,
    /// `service.name` of this node's telemetry (default `cairn`).
    pub service_name: Option<String>,
    /// Export the spans of dependencies too (ractor's actor spans, hyper, tower, tonic). Off
    /// by default: only Cairn's `cairn.*` spans are exported. `CAIRN_OTEL_DEPENDENCY_SPANS`
    /// (`true`/`false`) overrides it.
    pub dependency_spans: Option<bool>,
}

impl TelemetryConfig {
    /// Whether dependencies' spans are exported (the variable wins over the file).
    pub fn exports_dependency_spans(&self) -> bool {
        match env("CAIRN_OTEL_DEPENDENCY_SPANS") {
            Some(v) => v.eq_ignore_ascii_case("true") || v == "1",
            None => self.dependency_spans.unwrap_or(false),
        }
    }
}

/// Installed telemetry; [`Telemetry::shutdown`] flushes what is buffered.
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The log filter when `RUST_LOG` is not set: warnings, except ractor_cluster's line for each
/// failed TLS accept (a refused peer redials, and Cairn logs each refused certificate once).
const DEFAULT_LOG: &str = "warn,ractor_cluster::net::listener=error";

impl Telemetry {
    /// Whether export is on: an endpoint is configured and the SDK is not disabled.
    pub fn enabled(config: &TelemetryConfig) -> bool {
        let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        !disabled
            && (env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
                || env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
                || config.otlp_endpoint.is_some())
    }

    /// Installs the global tracing subscriber (and, when export is on, the OTLP span and metric
    /// pipelines) for node `node`. Call once per process.
    pub fn init(config: &TelemetryConfig, node: &str) -> Result<Telemetry, Error> {
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(
                EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG)),
            );
        if !Self::enabled(config) {
            let _ = tracing_subscriber::registry().with(fmt).try_init();
            return Ok(Telemetry {
                tracer: None,
                meter: None,
            });
        }
        let (tracer, meter) = Self::providers(config, node)?;
        // Cairn's own spans only, unless asked: ractor's actor spans live as long as the node
        // and would each be a trace of their own.
        let dependencies = config.exports_dependency_spans();
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer.tracer("cairn"))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
            .with_filter(tracing_subscriber::filter::filter_fn(move |meta| {
                dependencies
                    || meta
                        .target()
                        .starts_with(cairn_engine::telemetry::semconv::TARGET_PREFIX)
            }));
        tracing_subscriber::registry()
            .with(fmt)
            .with(layer)
            .try_init()
            .map_err(|e| Error::Start {
                part: "telemetry",
                detail: format!("installing the tracing subscriber: {e}"),
            })?;
        Ok(Telemetry {
            tracer: Some(tracer),
            meter: Some(meter),
        })
    }

    /// Builds the span and metric pipelines and installs the metric instruments, without
    /// touching the global tracing subscriber (for callers that compose their own).
    pub fn providers(
        config: &TelemetryConfig,
        node: &str,
    ) -> Result<(SdkTracerProvider, SdkMeterProvider), Error> {
        let protocol = env("OTEL_EXPORTER_OTLP_PROTOCOL")
            .or_else(|| config.protocol.clone())
            .unwrap_or_else(|| "grpc".into());
        let endpoint = if env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
            None
        } else {
            config.otlp_endpoint.clone()
        };
        let mut resource = Resource::builder()
            .with_attribute(KeyValue::new(
                cairn_engine::telemetry::semconv::NODE,
                node.to_string(),
            ))
            // Becomes Prometheus' `instance` label, which the dashboard groups nodes by.
            .with_attribute(KeyValue::new("service.instance.id", node.to_string()));
        if env("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(
                config
                    .service_name
                    .clone()
                    .unwrap_or_else(|| "cairn".into()),
            );
        }
        let resource = resource.build();
        let bad = |what: &str, e: &dyn std::fmt::Display| Error::Start {
            part: "telemetry",
            detail: format!("its OTLP {what} exporter: {e}"),
        };
        let (spans, metrics) = match protocol.as_str() {
            "grpc" => {
                let mut s = opentelemetry_otlp::SpanExporter::builder().with_tonic();
                let mut m = opentelemetry_otlp::MetricExporter::builder().with_tonic();
                if let Some(e) = &endpoint {
                    s = s.with_endpoint(e.clone());
                    m = m.with_endpoint(e.clone());
                }
                (
                    s.build().map_err(|e| bad("span", &e))?,
                    m.build().map_err(|e| bad("metric", &e))?,
                )
            }
            "http/protobuf" => {
                let mut s = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary);
                let mut m = opentelemetry_otlp::MetricExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary);
                if let Some(e) = &endpoint {
                    let base = e.trim_end_matches('/');
                    s = s.with_endpoint(format!("{base}/v1/traces"));
                    m = m.with_endpoint(format!("{base}/v1/metrics"));
                }
                (
                    s.build().map_err(|e| bad("span", &e))?,
                    m.build().map_err(|e| bad("metric", &e))?,
                )
            }
            other => {
                return Err(Error::Config(format!(
                    "OTLP protocol {other:?} is not supported: use `grpc` or `http/protobuf`"
                )));
            }
        };
        let tracer = SdkTracerProvider::builder()
            .with_batch_exporter(spans)
            .with_resource(resource.clone())
            .build();
        let meter = SdkMeterProvider::builder()
            .with_periodic_exporter(metrics)
            .with_resource(resource)
            .build();
        opentelemetry::global::set_meter_provider(meter.clone());
        cairn_engine::telemetry::metrics::install(&opentelemetry::global::meter("cairn"));
        Ok((tracer, meter))
    }

    /// Exports what is buffered now.
    pub fn flush(&self) {
        if let Some(t) = &self.tracer {
            let _ = t.force_flush();
        }
        if let Some(m) = &self.meter {
            let _ = m.force_flush();
        }
    }

    /// Flushes and stops the exporters.
    pub fn shutdown(self) {
        cairn_engine::telemetry::metrics::uninstall();
        if let Some(t) = self.tracer {
            let _ = t.shutdown();
        }
        if let Some(m) = self.meter {
            let _ = m.shutdown();
        }
    }
}
