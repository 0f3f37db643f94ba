//! A node's configuration: a TOML file, overridden by `CAIRN_*` environment variables, overridden
//! by command-line flags (the CLI applies the last two through clap).
//!
//! ```toml
//! name = "node-a"              # stable across restarts; default: host + store dir or API port
//! store = "postgres://cairn:cairn@db/cairn"
//! concurrency = 64
//! node_ttl = "10s"              # others resume this node's runs after this long without a heartbeat
//!
//! [cache]
//! expiry_interval = "1m"        # how often expired entries are removed (worker nodes)
//!
//! [runs]
//! journal_retention = "1h"      # how long an ended run's journal of uncached calls is kept
//! max_output_bytes = 1048576    # larger run outputs are not kept (their size is)
//! cancel_grace = "500ms"        # how long a cancelled run's task bodies may still run
//! max_calls = 10000000          # calls one run may make; beyond, the run fails
//! max_in_flight = 4096          # calls of one run in flight at once; beyond, calls wait
//!
//! [api]
//! listen = "127.0.0.1:7070"
//! token = "…"                 # required when `listen` is not a loopback address (≥ 16 chars)
//! token_file = "/run/secrets/cairn-token"   # or the token in a file
//! tls_cert = "/run/secrets/api.crt"   # serve HTTPS (reloaded when the files change)
//! tls_key = "/run/secrets/api.key"
//! trace_url = "http://jaeger:16686/trace/{trace_id}"   # the dashboard links runs to traces
//!
//! [cluster]                   # omit to run alone
//! listen = "10.0.0.1:7100"
//! seeds = ["10.0.0.2:7100"]
//! cookie = "…"                # every node of the cluster has the same
//! cookie_file = "/run/secrets/cairn-cookie" # or the cookie in a file
//! roles = ["scheduler", "worker"]
//! tls_cert = "/run/secrets/node.crt"  # mutual TLS 1.3 on every link: this node's certificate,
//! tls_key = "/run/secrets/node.key"   # its key,
//! tls_ca = "/run/secrets/ca.crt"      # and the CA that signs every node's certificate
//! insecure = false            # true: allow plain TCP on a non-loopback address
//!
//! [telemetry]                 # OTLP export; OTEL_* variables override
//! otlp_endpoint = "http://collector:4317"
//! protocol = "grpc"            # or "http/protobuf"
//! dependency_spans = false     # true: export ractor/hyper/tonic spans too
//!
//! [[schedules]]
//! name = "hourly-report"
//! workflow = "squares_report"
//! cron = "0 * * * *"           # or: every_ms = 300000
//! tz = "UTC"
//! project = "flytesnacks"
//! domain = "development"
//! ```

use crate::error::Error;
use cairn_engine::schedule::{ScheduleSpec, Trigger};
use serde::Deserialize;
use std::path::Path;

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Node name.
    pub name: Option<String>,
    /// Store URL.
    pub store: Option<String>,
    /// Worker concurrency.
    pub concurrency: Option<usize>,
    /// Liveness TTL of the node (e.g. `10s`).
    pub node_ttl: Option<String>,
    /// Serve the example tasks and workflows.
    pub examples: Option<bool>,
    /// A tasks file declaring command tasks, workflows and schedules.
    pub tasks: Option<std::path::PathBuf>,
    /// The cache.
    #[serde(default)]
    pub cache: CacheSection,
    /// `[runs]`: bounds and retention of runs.
    #[serde(default)]
    pub runs: RunsSection,
    /// The HTTP API.
    #[serde(default)]
    pub api: ApiSection,
    /// Cluster membership.
    #[serde(default)]
    pub cluster: ClusterSection,
    /// OTLP export (the `OTEL_*` variables override it).
    #[serde(default)]
    pub telemetry: crate::telemetry::TelemetryConfig,
    /// Schedules this node declares.
    #[serde(default)]
    pub schedules: Vec<ScheduleSection>,
}

/// `[cluster]`: present (with `listen`) to join a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// This node's cluster address, `ip:port`.
    pub listen: Option<String>,
    /// The host peers reach it at (default: the listen IP).
    pub advertise: Option<String>,
    /// Cluster addresses of nodes to join.
    #[serde(default)]
    pub seeds: Vec<String>,
    /// The shared secret.
    pub cookie: Option<String>,
    /// A file holding the shared secret.
    pub cookie_file: Option<std::path::PathBuf>,
    /// `scheduler`, `worker` (default both).
    pub roles: Option<Vec<String>>,
    /// This node's certificate (PEM), for mutual TLS on cluster links.
    pub tls_cert: Option<std::path::PathBuf>,
    /// Its private key (PEM).
    pub tls_key: Option<std::path::PathBuf>,
    /// The cluster CA's certificate (PEM).
    pub tls_ca: Option<std::path::PathBuf>,
    /// Allow plain TCP on a non-loopback cluster address.
    pub insecure: Option<bool>,
}

/// `[cache]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// How often expired entries are removed (e.g. `1m`).
    pub expiry_interval: Option<String>,
}

/// `[runs]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsSection {
    /// How long an ended run's journal is kept (e.g. `1h`).
    pub journal_retention: Option<String>,
    /// Largest run output kept, in bytes.
    pub max_output_bytes: Option<usize>,
    /// How long a cancelled run's task bodies may still run (e.g. `500ms`).
    pub cancel_grace: Option<String>,
    /// Calls one run may make in all (default 10,000,000); beyond it the run fails.
    pub max_calls: Option<u64>,
    /// Calls of one run in flight at once (default 4,096); beyond it calls wait.
    pub max_in_flight: Option<usize>,
}

/// `[api]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// Listen address.
    pub listen: Option<String>,
    /// Bearer token.
    pub token: Option<String>,
    /// A file holding the bearer token.
    pub token_file: Option<std::path::PathBuf>,
    /// Serve HTTPS with this certificate (PEM)…
    pub tls_cert: Option<std::path::PathBuf>,
    /// …and this private key (PEM).
    pub tls_key: Option<std::path::PathBuf>,
    /// The dashboard's link to a run's trace, with `{trace_id}` in it.
    pub trace_url: Option<String>,
}

/// `[[schedules]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSection {
    /// Unique name.
    pub name: String,
    /// The registered workflow it runs.
    pub workflow: String,
    /// Cron expression (5 fields, or 6 with seconds).
    pub cron: Option<String>,
    /// Time zone of `cron` (IANA name, default UTC).
    pub tz: Option<String>,
    /// Or a fixed rate.
    pub every_ms: Option<u64>,
    /// Project of its runs (default `default`).
    pub project: Option<String>,
    /// Domain of its runs (default `development`).
    pub domain: Option<String>,
}

/// Parses a duration: `500ms`, `30s`, `5m`, `2h`, `7d`, or a number of milliseconds
/// ([`cairn_engine::clock::parse_duration`]).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, Error> {
    cairn_engine::clock::parse_duration(text).map_err(Error::Config)
}

impl NodeConfig {
    /// Reads `path`; errors name the file and the bad key.
    pub fn load(path: &Path) -> Result<NodeConfig, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("reading config {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| Error::Config(format!("config {}: {e}", path.display())))
    }

    /// The declared schedules.
    pub fn schedule_specs(&self) -> Result<Vec<ScheduleSpec>, Error> {
        self.schedules
            .iter()
            .map(|s| {
                let trigger = match (&s.cron, s.every_ms) {
                    (Some(expr), None) => Trigger::Cron {
                        expr: expr.clone(),
                        tz: s.tz.clone().unwrap_or_else(|| "UTC".into()),
                    },
                    (None, Some(period_ms)) if period_ms > 0 => Trigger::Every {
                        period_ms,
                        anchor_ms: 0,
                    },
                    _ => {
                        return Err(Error::Config(format!(
                            "schedule {:?}: give exactly one of `cron` or `every_ms` (> 0)",
                            s.name
                        )));
                    }
                };
                let mut spec = ScheduleSpec::new(&s.name, &s.workflow, trigger);
                spec.project = s.project.clone().unwrap_or_else(|| "default".into());
                spec.domain = s.domain.clone().unwrap_or_else(|| "development".into());
                Ok(spec)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses_and_unknown_keys_are_named() {
        let cfg: NodeConfig = toml::from_str(
            r#"
            name = "a"
            store = "embedded:/tmp/x"
            [api]
            listen = "127.0.0.1:0"
            [[schedules]]
            name = "s"
            workflow = "w"
            every_ms = 300
            "#,
        )
        .unwrap();
        assert_eq!(cfg.name.as_deref(), Some("a"));
        let specs = cfg.schedule_specs().unwrap();
        assert_eq!(specs[0].project, "default");
        assert!(matches!(
            specs[0].trigger,
            Trigger::Every { period_ms: 300, .. }
        ));

        let err = toml::from_str::<NodeConfig>("nmae = \"a\"").unwrap_err();
        assert!(err.to_string().contains("nmae"), "{err}");
        let both: NodeConfig =
            toml::from_str("[[schedules]]\nname='s'\nworkflow='w'\ncron='* * * * *'\nevery_ms=5")
                .unwrap();
        assert!(
            both.schedule_specs()
                .unwrap_err()
                .to_string()
                .contains("exactly one")
        );
    }
}
