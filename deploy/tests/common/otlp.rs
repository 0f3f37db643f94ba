//! An in-process OTLP trace receiver, over gRPC (the collector's tonic service) or HTTP
//! (`POST /v1/traces`, protobuf), that keeps every span it is sent with its resource's
//! attributes.

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
pub(crate) use opentelemetry_proto::tonic::metrics::v1::Metric;
use prost::Message;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A received span, flattened.
#[derive(Debug, Clone)]
pub(crate) struct Span {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_id: String,
    /// Start and end, Unix nanoseconds.
    pub start_ns: u64,
    pub end_ns: u64,
    pub attrs: BTreeMap<String, String>,
    /// Each attribute's OTLP value type: `string`, `int`, `double`, `bool` or `other`.
    pub types: BTreeMap<String, &'static str>,
    /// Span links: (trace id, span id).
    pub links: Vec<(String, String)>,
    pub resource: BTreeMap<String, String>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn flatten(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

fn types(kvs: &[KeyValue]) -> BTreeMap<String, &'static str> {
    kvs.iter()
        .map(|kv| {
            let t = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(_)) => "string",
                Some(AnyValue::IntValue(_)) => "int",
                Some(AnyValue::BoolValue(_)) => "bool",
                Some(AnyValue::DoubleValue(_)) => "double",
                _ => "other",
            };
            (kv.key.clone(), t)
        })
        .collect()
}

/// Received spans.
#[derive(Clone, Default)]
pub(crate) struct Spans(Arc<Mutex<Vec<Span>>>);

impl Spans {
    fn add(&self, req: ExportTraceServiceRequest) {
        let mut out = self.0.lock().unwrap();
        for rs in req.resource_spans {
            let resource = rs
                .resource
                .map(|r| flatten(&r.attributes))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    out.push(Span {
                        name: s.name,
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_id: hex(&s.parent_span_id),
                        start_ns: s.start_time_unix_nano,
                        end_ns: s.end_time_unix_nano,
                        attrs: flatten(&s.attributes),
                        types: types(&s.attributes),
                        links: s
                            .links
                            .iter()
                            .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                            .collect(),
                        resource: resource.clone(),
                    });
                }
            }
        }
    }

    /// Every span received so far.
    pub(crate) fn all(&self) -> Vec<Span> {
        self.0.lock().unwrap().clone()
    }
}

#[tonic::async_trait]
impl TraceService for Spans {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.add(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Received metric exports, kept whole.
#[derive(Clone, Default)]
pub(crate) struct Metrics(Arc<Mutex<Vec<Metric>>>);

impl Metrics {
    fn add(&self, req: ExportMetricsServiceRequest) {
        let mut out = self.0.lock().unwrap();
        for rm in req.resource_metrics {
            for sm in rm.scope_metrics {
                out.extend(sm.metrics);
            }
        }
    }

    /// Every metric export received so far, oldest first.
    pub(crate) fn all(&self) -> Vec<Metric> {
        self.0.lock().unwrap().clone()
    }
}

#[tonic::async_trait]
impl MetricsService for Metrics {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.add(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

/// Serves OTLP/gRPC on a free loopback port; returns its endpoint.
pub(crate) async fn grpc(spans: Spans) -> String {
    grpc_with(spans, Metrics::default()).await
}

/// Serves OTLP/gRPC, keeping spans and metrics, on a free loopback port; returns its endpoint.
pub(crate) async fn grpc_with(spans: Spans, metrics: Metrics) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(spans))
            .add_service(MetricsServiceServer::new(metrics))
            .serve_with_incoming(tokio_stream_of(listener)),
    );
    format!("http://{addr}")
}

fn tokio_stream_of(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| s);
        Some((r, l))
    })
}

/// Serves OTLP/HTTP (protobuf) on a free loopback port; returns its base endpoint.
pub(crate) async fn http(spans: Spans) -> String {
    use axum::routing::post;
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            post(
                |axum::extract::State(spans): axum::extract::State<Spans>,
                 body: axum::body::Bytes| async move {
                    match ExportTraceServiceRequest::decode(body) {
                        Ok(req) => {
                            spans.add(req);
                            (
                                axum::http::StatusCode::OK,
                                [("content-type", "application/x-protobuf")],
                                ExportTraceServiceResponse {
                                    partial_success: None,
                                }
                                .encode_to_vec(),
                            )
                        }
                        Err(_) => (
                            axum::http::StatusCode::BAD_REQUEST,
                            [("content-type", "text/plain")],
                            b"bad protobuf".to_vec(),
                        ),
                    }
                },
            ),
        )
        .route("/v1/metrics", post(|| async { axum::http::StatusCode::OK }))
        .with_state(spans);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}
