//! `cairn up`: a node and its HTTP API, until Ctrl-C or SIGTERM.

use crate::api::{ApiConfig, ApiServer, LocalOnly};
use crate::client::exit;
use crate::cluster::{ClusterConfig, Roles};
use crate::config::NodeConfig;
use crate::{Node, NodeBuilder};
use cairn_engine::Store;
use std::io::Write;
use std::sync::Arc;

/// Options of `cairn up`. Each flag overrides its environment variable, which overrides the
/// config file, which overrides the default.
#[derive(clap::Args)]
pub(super) struct UpArgs {
    /// A TOML config file (see `cairn::config`).
    #[arg(long, env = "CAIRN_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// Store URL: embedded:<dir>, postgres://… or fdb:<cluster-file> [default: embedded:./cairn-data].
    #[arg(long, env = "CAIRN_STORE")]
    store: Option<String>,
    /// Address of the HTTP API (port 0 picks a free port; the address is printed)
    /// [default: 127.0.0.1:7070].
    #[arg(long, env = "CAIRN_LISTEN")]
    listen: Option<String>,
    /// Bearer token the API requires (required when not listening on loopback; at least 16
    /// characters). Prefer --token-file: a flag shows in `ps`.
    #[arg(long, env = "CAIRN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the bearer token (its trailing newline is ignored).
    #[arg(long, env = "CAIRN_TOKEN_FILE", conflicts_with = "token")]
    token_file: Option<std::path::PathBuf>,
    /// Node name (lease owner in the store) [default: cairn-<pid>].
    #[arg(long, env = "CAIRN_NAME")]
    name: Option<String>,
    /// Tasks this node's workers run at once [default: 64].
    #[arg(long, env = "CAIRN_CONCURRENCY")]
    concurrency: Option<usize>,
    /// Join a cluster: this node's cluster address (`ip:port`).
    #[arg(long, env = "CAIRN_CLUSTER_LISTEN")]
    cluster_listen: Option<String>,
    /// The host other nodes reach this one at [default: the cluster listen IP].
    #[arg(long, env = "CAIRN_CLUSTER_ADVERTISE")]
    cluster_advertise: Option<String>,
    /// Cluster addresses of nodes to join, comma-separated.
    #[arg(long, env = "CAIRN_SEEDS", value_delimiter = ',')]
    seeds: Vec<String>,
    /// The cluster's shared secret. Prefer --cookie-file: a flag shows in `ps`.
    #[arg(long, env = "CAIRN_COOKIE", hide_env_values = true)]
    cookie: Option<String>,
    /// A file holding the cluster's shared secret (its trailing newline is ignored).
    #[arg(long, env = "CAIRN_COOKIE_FILE", conflicts_with = "cookie")]
    cookie_file: Option<std::path::PathBuf>,
    /// This node's certificate (PEM) for mutual TLS 1.3 on every cluster link; needs
    /// --cluster-tls-key and --cluster-tls-ca. It must name the host other nodes dial.
    #[arg(long, env = "CAIRN_CLUSTER_TLS_CERT")]
    cluster_tls_cert: Option<std::path::PathBuf>,
    /// This node's private key (PEM) for cluster TLS.
    #[arg(long, env = "CAIRN_CLUSTER_TLS_KEY")]
    cluster_tls_key: Option<std::path::PathBuf>,
    /// The cluster CA's certificate (PEM): peers' certificates must chain to it.
    #[arg(long, env = "CAIRN_CLUSTER_TLS_CA")]
    cluster_tls_ca: Option<std::path::PathBuf>,
    /// Allow plain TCP cluster links on an address that is not loopback (jobs' inputs and
    /// outputs then cross the network in clear).
    #[arg(long, env = "CAIRN_CLUSTER_INSECURE")]
    cluster_insecure: bool,
    /// Serve the API over HTTPS with this certificate (PEM); needs --tls-key. Reloaded when the
    /// file changes or on SIGHUP.
    #[arg(long, env = "CAIRN_TLS_CERT")]
    tls_cert: Option<std::path::PathBuf>,
    /// The API certificate's private key (PEM).
    #[arg(long, env = "CAIRN_TLS_KEY")]
    tls_key: Option<std::path::PathBuf>,
    /// Roles: scheduler, worker, or both, comma-separated [default: scheduler,worker].
    #[arg(long, env = "CAIRN_ROLES")]
    roles: Option<String>,
    /// Liveness TTL: other nodes resume this node's runs after seeing no heartbeat from it for
    /// this long (e.g. 10s) [default: 10s].
    #[arg(long, env = "CAIRN_NODE_TTL", value_parser = crate::config::parse_duration)]
    node_ttl: Option<std::time::Duration>,
    /// How often this node removes expired cache entries (e.g. 1m); nodes with the worker role
    /// collect [default: 60s].
    #[arg(long, env = "CAIRN_EXPIRY_INTERVAL", value_parser = crate::config::parse_duration)]
    expiry_interval: Option<std::time::Duration>,
    /// Serve the example tasks and workflows (`sum_of_squares`, `fan_out`, …).
    #[arg(long, env = "CAIRN_EXAMPLES")]
    examples: bool,
    /// How long a cancelled run's task bodies may still run before they are aborted
    /// [default: 500ms].
    #[arg(long, env = "CAIRN_CANCEL_GRACE", value_parser = crate::config::parse_duration)]
    cancel_grace: Option<std::time::Duration>,
    /// The dashboard's link to a run's trace: a URL with `{trace_id}` in it, e.g.
    /// 'http://jaeger:16686/trace/{trace_id}'.
    #[arg(long, env = "CAIRN_TRACE_URL")]
    trace_url: Option<String>,
    /// A tasks file (TOML) declaring command tasks, workflows and schedules (see the README's
    /// "Command tasks").
    #[arg(long, env = "CAIRN_TASKS")]
    tasks: Option<std::path::PathBuf>,
}

/// `UpArgs` over the config file over the defaults.
struct Settings {
    store: String,
    listen: String,
    token: Option<String>,
    api_tls: Option<crate::tls::ApiTls>,
    name: Option<String>,
    concurrency: usize,
    schedules: Vec<crate::ScheduleSpec>,
    cluster: Option<ClusterConfig>,
    telemetry: crate::telemetry::TelemetryConfig,
    node_ttl: Option<std::time::Duration>,
    cancel_grace: Option<std::time::Duration>,
    run_limits: cairn_engine::runs::RunLimits,
    call_limits: cairn_scheduler::CallLimits,
    takes_over_runs: bool,
    examples: bool,
    expiry: Option<std::time::Duration>,
    trace_url: Option<String>,
    tasks: Option<cairn_commands::TasksFile>,
}

impl Settings {
    fn resolve(args: UpArgs) -> anyhow::Result<Settings> {
        let file = match &args.config {
            Some(path) => NodeConfig::load(path).map_err(anyhow::Error::msg)?,
            None => NodeConfig::default(),
        };
        let schedules = file.schedule_specs().map_err(anyhow::Error::msg)?;
        let clustered = args.cluster_listen.is_some() || file.cluster.listen.is_some();
        let roles_given = args
            .roles
            .clone()
            .or(file.cluster.roles.clone().map(|r| r.join(",")));
        if roles_given.is_some() && !clustered {
            anyhow::bail!(
                "--roles only applies to a node in a cluster: give --cluster-listen (a node on its \
                 own schedules and runs its own tasks)"
            );
        }
        let token = match (&args.token, &args.token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(path)) => Some(read_secret("--token-file", path)?),
            (None, None) => match (&file.api.token, &file.api.token_file) {
                (Some(t), _) => Some(t.clone()),
                (None, Some(path)) => Some(read_secret("[api] token_file", path)?),
                (None, None) => None,
            },
        };
        if let Some(t) = &token {
            check_token(t)?;
        }
        let cookie = match (&args.cookie, &args.cookie_file) {
            (Some(c), _) => Some(c.clone()),
            (None, Some(path)) => Some(read_secret("--cookie-file", path)?),
            (None, None) => match (&file.cluster.cookie, &file.cluster.cookie_file) {
                (Some(c), _) => Some(c.clone()),
                (None, Some(path)) => Some(read_secret("[cluster] cookie_file", path)?),
                (None, None) => None,
            },
        };
        let roles = match roles_given {
            Some(r) => Roles::parse(&r).map_err(anyhow::Error::msg)?,
            None => Roles {
                scheduler: true,
                worker: true,
            },
        };
        let seeds = if args.seeds.is_empty() {
            file.cluster.seeds
        } else {
            args.seeds
        };
        let parse =
            |what: &str, v: &Option<String>| -> anyhow::Result<Option<std::time::Duration>> {
                v.as_deref()
                    .map(crate::config::parse_duration)
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("config {what}: {e}"))
            };
        let node_ttl = match args.node_ttl {
            Some(t) => Some(t),
            None => parse("node_ttl", &file.node_ttl)?,
        };
        let cancel_grace = match args.cancel_grace {
            Some(t) => Some(t),
            None => parse("runs.cancel_grace", &file.runs.cancel_grace)?,
        };
        let mut run_limits = cairn_engine::runs::RunLimits::default();
        if let Some(r) = parse("runs.journal_retention", &file.runs.journal_retention)? {
            run_limits.journal_retention = r;
        }
        if let Some(n) = file.runs.max_output_bytes {
            run_limits.max_output_bytes = n;
        }
        let mut call_limits = cairn_scheduler::CallLimits::default();
        if let Some(n) = file.runs.max_calls {
            call_limits.max_calls = n;
        }
        if let Some(n) = file.runs.max_in_flight {
            call_limits.max_in_flight = n.max(1);
        }
        let takes_over_runs = roles.scheduler;
        let expiry_every = match args.expiry_interval {
            Some(t) => t,
            None => parse("cache.expiry_interval", &file.cache.expiry_interval)?
                .unwrap_or(std::time::Duration::from_secs(60)),
        };
        let expiry = roles
            .worker
            .then_some(expiry_every.max(std::time::Duration::from_millis(10)));
        let cluster_tls = match (
            args.cluster_tls_cert.or(file.cluster.tls_cert),
            args.cluster_tls_key.or(file.cluster.tls_key),
            args.cluster_tls_ca.or(file.cluster.tls_ca),
        ) {
            (None, None, None) => None,
            (Some(cert), Some(key), Some(ca)) => Some(
                crate::tls::ClusterTls::load(&crate::tls::ClusterTlsFiles {
                    node: crate::tls::CertFiles { cert, key },
                    ca,
                })
                .map_err(|e| anyhow::anyhow!("cluster TLS: {e}"))?,
            ),
            _ => anyhow::bail!(
                "cluster TLS needs all three of --cluster-tls-cert, --cluster-tls-key and \
                 --cluster-tls-ca (or [cluster] tls_cert, tls_key, tls_ca)"
            ),
        };
        let api_tls = match (
            args.tls_cert.or(file.api.tls_cert),
            args.tls_key.or(file.api.tls_key),
        ) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(
                crate::tls::ApiTls::load(&crate::tls::CertFiles { cert, key })
                    .map_err(|e| anyhow::anyhow!("API TLS: {e}"))?,
            ),
            _ => anyhow::bail!(
                "API TLS needs both --tls-cert and --tls-key (or [api] tls_cert and tls_key)"
            ),
        };
        let insecure = args.cluster_insecure || file.cluster.insecure.unwrap_or(false);
        let cluster = match args.cluster_listen.or(file.cluster.listen) {
            None => {
                if cluster_tls.is_some() || insecure {
                    anyhow::bail!(
                        "cluster TLS and --cluster-insecure only apply to a node in a cluster: \
                         give --cluster-listen"
                    );
                }
                None
            }
            Some(listen) => {
                let config = ClusterConfig {
                    listen: listen
                        .parse()
                        .map_err(|e| anyhow::anyhow!("cluster address {listen:?}: {e}"))?,
                    advertise: args.cluster_advertise.or(file.cluster.advertise),
                    seeds,
                    cookie: cookie.unwrap_or_default(),
                    roles,
                    tls: cluster_tls,
                    insecure,
                };
                config.check().map_err(anyhow::Error::msg)?;
                Some(config)
            }
        };
        Ok(Settings {
            expiry,
            examples: args.examples || file.examples.unwrap_or(false),
            trace_url: match args.trace_url.clone().or(file.api.trace_url.clone()) {
                Some(t) if !t.contains("{trace_id}") => anyhow::bail!(
                    "the trace URL {t:?} has no {{trace_id}} in it (e.g. \
                     'http://jaeger:16686/trace/{{trace_id}}')"
                ),
                other => other,
            },
            tasks: match args.tasks.clone().or(file.tasks.clone()) {
                None => None,
                Some(path) => Some(
                    cairn_commands::TasksFile::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?,
                ),
            },
            call_limits,
            node_ttl,
            cancel_grace,
            run_limits,
            takes_over_runs,
            telemetry: file.telemetry.clone(),
            cluster,
            schedules,
            store: args
                .store
                .or(file.store)
                .unwrap_or_else(|| "embedded:./cairn-data".into()),
            listen: args
                .listen
                .or(file.api.listen)
                .unwrap_or_else(|| "127.0.0.1:7070".into()),
            token,
            api_tls,
            name: args.name.or(file.name),
            concurrency: args.concurrency.or(file.concurrency).unwrap_or(64),
        })
    }
}

/// A secret read from a file, without its trailing newline.
fn read_secret(what: &str, path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("{what} {}: {e}", path.display()))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

/// Shortest API token accepted.
const MIN_TOKEN: usize = 16;

fn check_token(token: &str) -> anyhow::Result<()> {
    if token.trim().is_empty() || token.chars().count() < MIN_TOKEN {
        anyhow::bail!(
            "the API token must be at least {MIN_TOKEN} characters and not only whitespace \
             (e.g. `openssl rand -hex 24`)"
        );
    }
    Ok(())
}

pub(super) async fn up(args: UpArgs, configure: impl Fn(NodeBuilder) -> NodeBuilder) -> u8 {
    // Configuration errors (exit 2) are found before anything starts.
    let prepared = match prepare(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e:#}");
            return exit::INVALID;
        }
    };
    match serve(prepared, configure).await {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit::FAILED
        }
    }
}

/// A checked configuration.
struct Prepared {
    args: Settings,
    config: ApiConfig,
    addr: std::net::SocketAddr,
}

fn prepare(args: UpArgs) -> anyhow::Result<Prepared> {
    let args = Settings::resolve(args)?;
    let config = ApiConfig {
        token: args.token.clone(),
        trace_url: args.trace_url.clone(),
        https: args.api_tls.is_some(),
        ..ApiConfig::default()
    };
    let addr: std::net::SocketAddr = args
        .listen
        .parse()
        .map_err(|e| anyhow::anyhow!("--listen {:?}: {e}", args.listen))?;
    // Checked before the node starts, so a refused configuration starts nothing.
    config.check(addr).map_err(anyhow::Error::msg)?;
    Ok(Prepared { args, config, addr })
}

async fn serve(
    prepared: Prepared,
    configure: impl Fn(NodeBuilder) -> NodeBuilder,
) -> anyhow::Result<()> {
    let Prepared { args, config, addr } = prepared;
    // A stable default identity: an embedded store's directory names the node (the builder
    // derives it); otherwise the host and the API port, when one is fixed.
    let name = args.name.clone().unwrap_or_else(|| {
        if !args.store.starts_with("embedded:") && addr.port() != 0 {
            format!("{}-{}", crate::node::host_name(), addr.port())
        } else {
            crate::node::default_name(Some(&args.store))
        }
    });
    let mut builder = Node::builder()
        .store_url(&args.store)
        .concurrency(args.concurrency)
        .run_limits(args.run_limits.clone())
        .call_limits(args.call_limits)
        .takes_over_runs(args.takes_over_runs)
        .expiry_collection(args.expiry);
    builder = builder.name(&name);
    if let Some(ttl) = args.node_ttl {
        builder = builder.node_ttl(ttl);
    }
    if let Some(grace) = args.cancel_grace {
        builder = builder.cancel_grace(grace);
    }
    let telemetry =
        crate::telemetry::Telemetry::init(&args.telemetry, &name).map_err(anyhow::Error::msg)?;
    for spec in args.schedules {
        builder = builder.schedule(spec);
    }
    if let Some(cluster) = args.cluster {
        builder = builder.cluster(cluster);
    }
    if args.examples {
        builder = crate::examples::register(builder);
    }
    if let Some(tasks) = &args.tasks {
        builder = crate::commands::register(builder, tasks);
    }
    let node = Arc::new(
        configure(builder)
            .start()
            .await
            .map_err(|e| anyhow::anyhow!("starting a node on {}: {e}", redact(&args.store)))?,
    );
    if let Some(tasks) = &args.tasks {
        crate::commands::attach(&node, tasks);
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("listening on {addr}: {e}"))?;
    let members: Arc<dyn crate::api::Members> = match node.cluster() {
        Some(cluster) => cluster.clone(),
        None => Arc::new(LocalOnly),
    };
    let scheme = if args.api_tls.is_some() {
        "https"
    } else {
        "http"
    };
    let (server, _reload) = match &args.api_tls {
        None => (
            ApiServer::start(node.clone(), members, listener, &config)
                .map_err(anyhow::Error::msg)?,
            None,
        ),
        Some(tls) => {
            let listener = tls
                .listen(listener)
                .map_err(|e| anyhow::anyhow!("listening on {addr}: {e}"))?;
            (
                ApiServer::start_on(node.clone(), members, listener, &config)
                    .map_err(anyhow::Error::msg)?,
                Some(AbortOnDrop(tls.watch())),
            )
        }
    };
    println!(
        "cairn node {} listening on {scheme}://{} (store: {})",
        node.name(),
        server.addr(),
        node.catalog().store().backend()
    );
    let _ = std::io::stdout().flush();
    shutdown_signal().await;
    eprintln!("stopping");
    server.stop().await;
    if let Ok(node) = Arc::try_unwrap(node) {
        node.shutdown().await?;
    }
    if let Some(tasks) = &args.tasks
        && let Err(e) = tasks.save_memo()
    {
        eprintln!("warning: {e}");
    }
    // Flushes the spans and metrics still buffered.
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    Ok(())
}

/// Stops a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn redact(url: &str) -> String {
    cairn_engine::store::redact(url)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
