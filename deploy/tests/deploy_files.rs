//! The deployment files cannot run here (no FoundationDB, Docker daemon or Kubernetes); what
//! can be checked offline is: they parse, their Cairn settings are ones `cairn up` accepts, the
//! config files load as node configs, and the pieces refer to each other consistently.

mod common;

use serde_yaml::Value;
use std::collections::BTreeSet;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every `CAIRN_*` variable `cairn up` reads, from its own help.
fn accepted_env() -> BTreeSet<String> {
    let out = std::process::Command::new(common::CAIRN)
        .args(["up", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    help.split("[env: ")
        .skip(1)
        .map(|s| s.split(['=', ']']).next().unwrap().to_string())
        .collect()
}

fn env_names(env: &Value) -> Vec<String> {
    match env {
        Value::Mapping(m) => m
            .keys()
            .filter_map(|k| k.as_str().map(String::from))
            .collect(),
        Value::Sequence(items) => items
            .iter()
            .filter_map(|i| i["name"].as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

fn check_env(where_: &str, env: &Value, accepted: &BTreeSet<String>) {
    for name in env_names(env) {
        if name.starts_with("CAIRN_") {
            assert!(
                accepted.contains(&name),
                "{where_}: `cairn up` has no {name}"
            );
        }
    }
}

#[test]
fn compose_file_parses_and_wires_three_nodes_to_fdb_and_jaeger() {
    let text = std::fs::read_to_string(root().join("compose/docker-compose.yml")).unwrap();
    let doc: Value = serde_yaml::from_str(&text).unwrap();
    let mut doc = doc;
    doc.apply_merge().unwrap();
    let services = doc["services"].as_mapping().unwrap();
    let names: BTreeSet<&str> = services.keys().filter_map(|k| k.as_str()).collect();
    for needed in ["fdb", "jaeger", "cairn-1", "cairn-2", "cairn-3"] {
        assert!(names.contains(needed), "no service {needed}");
    }
    let accepted = accepted_env();
    for i in 1..=3 {
        let node = &services[format!("cairn-{i}").as_str()];
        let env = &node["environment"];
        check_env(&format!("cairn-{i}"), env, &accepted);
        assert!(env["CAIRN_STORE"].as_str().unwrap().starts_with("fdb:"));
        // Mutual TLS on the cluster and HTTPS on the API, from the mounted certificates.
        let mounts: Vec<&str> = node["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        let tls_dir = mounts
            .iter()
            .find_map(|m| m.strip_prefix("./certs:"))
            .expect("the certificates are mounted")
            .trim_end_matches(":ro");
        for var in [
            "CAIRN_TLS_CERT",
            "CAIRN_TLS_KEY",
            "CAIRN_CLUSTER_TLS_CERT",
            "CAIRN_CLUSTER_TLS_KEY",
            "CAIRN_CLUSTER_TLS_CA",
        ] {
            let path = env[var]
                .as_str()
                .unwrap_or_else(|| panic!("cairn-{i}: no {var}"));
            assert!(
                path.starts_with(tls_dir),
                "{var}={path} is not in the mounted {tls_dir}"
            );
        }
        assert!(
            env["CAIRN_COOKIE"]
                .as_str()
                .unwrap()
                .contains("CAIRN_COOKIE")
        );
        assert_eq!(
            env["CAIRN_NAME"].as_str(),
            Some(format!("cairn-{i}").as_str())
        );
        assert_eq!(
            env["CAIRN_CLUSTER_ADVERTISE"].as_str(),
            node["hostname"].as_str()
        );
        if i > 1 {
            let seed = env["CAIRN_SEEDS"].as_str().unwrap();
            let host = seed.split(':').next().unwrap();
            assert!(names.contains(host), "seed {seed} is not a service");
        }
        let depends: Vec<&str> = node["depends_on"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert!(depends.contains(&"fdb") && depends.contains(&"jaeger"));
    }
}

#[test]
fn kubernetes_manifests_parse_and_agree_with_each_other() {
    let text = std::fs::read_to_string(root().join("k8s/cairn.yaml")).unwrap();
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, ["ConfigMap", "Service", "Service", "StatefulSet"]);
    for d in &docs {
        assert!(d["apiVersion"].as_str().is_some() && d["metadata"]["name"].as_str().is_some());
    }
    // The config in the ConfigMap is a valid node config.
    let toml_text = docs[0]["data"]["cairn.toml"].as_str().unwrap();
    let path = std::env::temp_dir().join(format!("cairn-k8s-{}.toml", std::process::id()));
    std::fs::write(&path, toml_text).unwrap();
    let cfg = cairn::config::NodeConfig::load(&path).unwrap();
    assert!(cfg.store.clone().unwrap().starts_with("fdb:"));
    // Cluster mutual TLS and API TLS, from the Secret mounted where the config says.
    let sts = &docs[3];
    let pod = &sts["spec"]["template"]["spec"];
    let mount = pod["containers"][0]["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "tls")
        .expect("a tls volume mount");
    let dir = mount["mountPath"].as_str().unwrap();
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "tls")
        .expect("a tls volume");
    assert_eq!(volume["secret"]["secretName"].as_str(), Some("cairn-tls"));
    for file in [
        &cfg.cluster.tls_cert,
        &cfg.cluster.tls_key,
        &cfg.cluster.tls_ca,
        &cfg.api.tls_cert,
        &cfg.api.tls_key,
    ] {
        let file = file.as_ref().expect("a TLS file in the config");
        assert!(
            file.starts_with(dir),
            "{} is not under {dir}",
            file.display()
        );
    }
    let config_mount = pod["containers"][0]["volumeMounts"][0]["mountPath"]
        .as_str()
        .unwrap();
    let args: Vec<&str> = pod["containers"][0]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert_eq!(
        args,
        ["up", "--config", &format!("{config_mount}/cairn.toml")]
    );
    let seeds = cfg.cluster.seeds;
    // The StatefulSet's pods are reachable at the seed through the headless service.
    let service = sts["spec"]["serviceName"].as_str().unwrap();
    assert_eq!(docs[1]["metadata"]["name"].as_str(), Some(service));
    assert_eq!(docs[1]["spec"]["clusterIP"].as_str(), Some("None"));
    let sts_name = sts["metadata"]["name"].as_str().unwrap();
    assert_eq!(seeds, [format!("{sts_name}-0.{service}:7100")]);
    let container = &sts["spec"]["template"]["spec"]["containers"][0];
    check_env("StatefulSet", &container["env"], &accepted_env());
    let ports: Vec<i64> = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["containerPort"].as_i64().unwrap())
        .collect();
    assert_eq!(ports, [7070, 7100]);
    assert_eq!(
        sts["spec"]["selector"]["matchLabels"],
        sts["spec"]["template"]["metadata"]["labels"]
    );
}

#[test]
fn systemd_unit_and_its_config_are_consistent() {
    let unit = std::fs::read_to_string(root().join("systemd/cairn.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    assert_eq!(
        exec,
        "/usr/local/bin/cairn up --config /etc/cairn/cairn.toml"
    );
    for section in ["[Unit]", "[Service]", "[Install]"] {
        assert!(unit.contains(section), "no {section}");
    }
    let cfg = cairn::config::NodeConfig::load(&root().join("systemd/cairn.toml")).unwrap();
    assert!(cfg.cluster.listen.is_some() && !cfg.cluster.seeds.is_empty());
    assert!(
        cfg.cluster.cookie.is_none(),
        "the cookie belongs in the environment file"
    );
    assert!(
        cfg.cluster.tls_cert.is_some()
            && cfg.cluster.tls_key.is_some()
            && cfg.cluster.tls_ca.is_some(),
        "a non-loopback cluster address needs TLS"
    );
    assert!(cfg.api.tls_cert.is_some() && cfg.api.tls_key.is_some());
}

/// The Prometheus name an OpenTelemetry metric gets through OTLP ingestion.
fn prometheus_names() -> BTreeSet<String> {
    use cairn_engine::telemetry::semconv as sc;
    let flat = |n: &str| n.replace('.', "_");
    [
        format!("{}_total", flat(sc::METRIC_CALLS)),
        format!("{}_seconds_bucket", flat(sc::METRIC_CALL_DURATION)),
        format!("{}_seconds_bucket", flat(sc::METRIC_WAIT_DURATION)),
        format!("{}_total", flat(sc::METRIC_LEASE_TAKEOVERS)),
        flat(sc::METRIC_QUEUE_DEPTH),
        format!("{}_total", flat(sc::METRIC_SCHEDULE_TICKS)),
        // Labels.
        flat(sc::CACHE_STATUS),
        flat(sc::SCHEDULE),
    ]
    .into_iter()
    .collect()
}

#[test]
fn grafana_dashboard_queries_only_metrics_and_spans_cairn_emits() {
    use cairn_engine::telemetry::semconv as sc;
    let text = std::fs::read_to_string(root().join("grafana/cairn-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let known = prometheus_names();
    let spans = [
        sc::SPAN_RUN,
        sc::SPAN_CALL,
        sc::SPAN_RESOLVE,
        sc::SPAN_WAIT,
        sc::SPAN_EXECUTE,
        sc::SPAN_COMMIT,
    ];
    let mut sources = BTreeSet::new();
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 8);
    for panel in panels {
        let source = panel["datasource"]["type"].as_str().unwrap();
        sources.insert(source.to_string());
        for target in panel["targets"].as_array().unwrap() {
            if let Some(expr) = target["expr"].as_str() {
                let mut tokens = expr
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|t| t.starts_with("cairn_"))
                    .peekable();
                assert!(tokens.peek().is_some(), "{expr} names no Cairn metric");
                for t in tokens {
                    assert!(known.contains(t), "{expr}: Cairn emits no {t}");
                }
            }
            if let Some(q) = target["query"].as_str() {
                let name = q.split('"').nth(1).unwrap();
                assert!(spans.contains(&name), "{q}: Cairn emits no span {name}");
                for attr in q.split("span.").skip(1) {
                    let attr = attr.split([',', ')', ' ']).next().unwrap();
                    assert!(attr.starts_with("cairn."), "{attr}");
                }
            }
        }
    }
    assert_eq!(
        sources,
        BTreeSet::from(["prometheus".to_string(), "tempo".to_string()])
    );
    // Quantile panels read second-scaled histograms with the engine's explicit buckets, keep
    // the `le` label, and show seconds.
    let histograms = [sc::METRIC_CALL_DURATION, sc::METRIC_WAIT_DURATION]
        .map(|m| format!("{}_seconds_bucket", m.replace('.', "_")));
    let mut quantiles = 0;
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let Some(expr) = target["expr"].as_str() else {
                continue;
            };
            let Some(rest) = expr.strip_prefix("histogram_quantile(") else {
                continue;
            };
            quantiles += 1;
            let q: f64 = rest.split(',').next().unwrap().trim().parse().unwrap();
            assert!(q > 0.0 && q < 1.0, "{expr}");
            let by = rest
                .split("by (")
                .nth(1)
                .unwrap()
                .split(')')
                .next()
                .unwrap();
            assert!(by.split(',').any(|l| l.trim() == "le"), "{expr} drops `le`");
            assert!(
                histograms.iter().any(|h| expr.contains(h.as_str())),
                "{expr} reads no duration histogram"
            );
            assert_eq!(panel["fieldConfig"]["defaults"]["unit"], "s", "{expr}");
        }
    }
    assert!(quantiles >= 4);
    // The buckets cover a hit (microseconds) to a long task (a minute), increasing.
    let b = sc::DURATION_BUCKETS;
    assert!(b.windows(2).all(|w| w[0] < w[1]));
    assert!(b[0] <= 1e-6 && *b.last().unwrap() >= 60.0);
    // The statuses the dashboard filters on are real cache statuses.
    for status in ["Hit", "Waited", "PutFailure", "Evicted"] {
        assert!(
            text.contains(&format!("cairn_cache_status=\\\"{status}\\\"")),
            "{status}"
        );
        assert!(
            serde_json::from_value::<cairn::CacheStatus>(serde_json::json!(status)).is_ok(),
            "{status} is not a CacheStatus"
        );
    }
}

/// The README's OpenSSL lines, run as written, make a CA and a node certificate with which two
/// ends complete a mutual TLS 1.3 handshake as Cairn configures it.
#[test]
fn the_readme_certificate_commands_make_certificates_cairn_accepts() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let block = readme
        .split("<!-- certificates -->\n```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the certificate commands in deploy/README.md");
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", block])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files = cairn::tls::ClusterTlsFiles {
        node: cairn::tls::CertFiles {
            cert: dir.path().join("node.crt"),
            key: dir.path().join("node.key"),
        },
        ca: dir.path().join("ca.crt"),
    };
    let tls = cairn::tls::ClusterTls::load(&files).unwrap();
    cairn::tls::ApiTls::load(&files.node).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for dialled in ["cairn-2:7100", "127.0.0.1:7100"] {
            let (a, b) = tokio::io::duplex(64 * 1024);
            let name = cairn::tls::server_name(dialled).unwrap();
            let (server, client) =
                tokio::join!(tls.acceptor.accept(a), tls.connector.connect(name, b));
            let client = client.unwrap_or_else(|e| panic!("dialling {dialled}: {e}"));
            let server = server.unwrap_or_else(|e| panic!("accepting {dialled}: {e}"));
            assert_eq!(
                client.get_ref().1.protocol_version(),
                Some(rustls::ProtocolVersion::TLSv1_3)
            );
            assert!(
                server.get_ref().1.peer_certificates().is_some(),
                "the client presented its certificate"
            );
        }
        // A name the certificate does not carry is refused.
        let (a, b) = tokio::io::duplex(64 * 1024);
        let name = cairn::tls::server_name("cairn-9:7100").unwrap();
        let (_, client) = tokio::join!(tls.acceptor.accept(a), tls.connector.connect(name, b));
        assert!(client.is_err());
    });
}
