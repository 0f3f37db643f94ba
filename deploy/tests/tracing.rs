//! The span tree of runs, received by an in-process OTLP receiver from real `cairn` processes:
//! names, parent links and attributes, over gRPC across two nodes (the worker's execute span is
//! a child of the other node's call span) and over HTTP on one node.

mod common;

use common::otlp::{Span, Spans};
use common::{NodeProcess, cli_json, free_port, store_url};
use std::collections::BTreeMap;

fn by_id(spans: &[Span]) -> BTreeMap<&str, &Span> {
    spans.iter().map(|s| (s.span_id.as_str(), s)).collect()
}

fn parent<'a>(ids: &BTreeMap<&str, &'a Span>, s: &Span) -> &'a Span {
    ids.get(s.parent_id.as_str())
        .unwrap_or_else(|| panic!("{} has no received parent ({})", s.name, s.parent_id))
}

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_a_hit_a_miss_and_a_wait_form_one_tree_across_two_nodes() {
    // Names in the semantic conventions module are the ones on the wire.
    use cairn_engine::telemetry::semconv as sc;
    let spans = Spans::default();
    let endpoint = common::otlp::grpc(spans.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = store_url("tracing");
    let (pa, pb) = (free_port(), free_port());
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_SERVICE_NAME", "cairn-test"),
    ];
    let ca = format!("127.0.0.1:{pa}");
    let cb = format!("127.0.0.1:{pb}");
    // `sched` has no workers: every job it dispatches runs on `work`.
    let mut a = NodeProcess::start_with_env(
        dir.path(),
        &[
            "--store",
            &store,
            "--name",
            "sched",
            "--cluster-listen",
            &ca,
            "--cookie",
            "c",
            "--roles",
            "scheduler",
        ],
        &env,
    );
    let mut b = NodeProcess::start_with_env(
        dir.path(),
        &[
            "--store",
            &store,
            "--name",
            "work",
            "--cluster-listen",
            &cb,
            "--cookie",
            "c",
            "--seeds",
            &ca,
        ],
        &env,
    );
    let (ua, ub) = (a.url.clone(), b.url.clone());
    tokio::task::spawn_blocking(move || {
        // Wait (bounded) for the two nodes to see each other.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while cli_json(&ua, &["nodes"], 0).as_array().unwrap().len() < 2 {
            assert!(std::time::Instant::now() < deadline, "nodes did not join");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        // A miss (run on the other node's worker), then the same call as a hit.
        let miss = cli_json(&ua, &["run", "integer_sqrt", "--input", "49"], 0);
        assert_eq!(miss["counts"]["Populated"], 1);
        let hit = cli_json(&ua, &["run", "integer_sqrt", "--input", "49"], 0);
        assert_eq!(hit["counts"]["Hit"], 1);
        // The same slow call on both nodes at once: one computes, the other waits on the lease.
        let other = std::thread::spawn({
            let ub = ub.clone();
            move || cli_json(&ub, &["run", "daily_report", "--input", r#""traced""#], 0)
        });
        let first = cli_json(&ua, &["run", "daily_report", "--input", r#""traced""#], 0);
        let second = other.join().unwrap();
        let statuses: Vec<String> = [&first, &second]
            .iter()
            .map(|r| r["calls"][0]["status"].as_str().unwrap().to_string())
            .collect();
        let mut sorted = statuses.clone();
        sorted.sort();
        assert_eq!(sorted, ["Populated", "Waited"], "{statuses:?}");
    })
    .await
    .unwrap();
    // Graceful stops flush what the exporters buffered.
    a.terminate();
    b.terminate();

    let all = spans.all();
    let ids = by_id(&all);
    assert_eq!(named(&all, sc::SPAN_RUN).len(), 4, "{all:#?}");
    for call in named(&all, sc::SPAN_CALL) {
        let run = parent(&ids, call);
        assert_eq!(run.name, sc::SPAN_RUN);
        assert_eq!(run.trace_id, call.trace_id);
        assert_eq!(call.attrs[sc::RUN_ID], run.attrs[sc::RUN_ID]);
        assert!(call.attrs.contains_key(sc::CACHE_STATUS), "{call:?}");
        assert!(call.attrs.contains_key(sc::EXECUTION), "{call:?}");
    }
    // Resolves hang under calls and say what they found.
    let outcomes: Vec<&str> = named(&all, sc::SPAN_RESOLVE)
        .iter()
        .map(|r| {
            assert_eq!(parent(&ids, r).name, sc::SPAN_CALL);
            assert_eq!(r.attrs[sc::CACHE_KEY].len(), 32);
            r.attrs[sc::RESOLVE_OUTCOME].as_str()
        })
        .collect();
    assert!(
        outcomes.contains(&"hit") && outcomes.contains(&"acquired"),
        "{outcomes:?}"
    );
    let acquired = named(&all, sc::SPAN_RESOLVE)
        .into_iter()
        .find(|r| r.attrs[sc::RESOLVE_OUTCOME] == "acquired")
        .unwrap();
    assert!(acquired.attrs.contains_key(sc::LEASE_GENERATION));

    // Every execution ran on `work`, under a call span of `sched` or `work`, in the same trace.
    let executes = named(&all, sc::SPAN_EXECUTE);
    assert_eq!(executes.len(), 2, "integer_sqrt once, daily_report once");
    let mut across = 0;
    for ex in &executes {
        assert_eq!(ex.resource["cairn.node"], "work");
        assert_eq!(ex.resource["service.name"], "cairn-test");
        let call = parent(&ids, ex);
        assert_eq!(call.name, sc::SPAN_CALL);
        assert_eq!(call.trace_id, ex.trace_id);
        assert_eq!(call.attrs[sc::EXECUTION], ex.attrs[sc::EXECUTION]);
        if call.resource["cairn.node"] == "sched" {
            across += 1;
        }
        let commits: Vec<_> = named(&all, sc::SPAN_COMMIT)
            .into_iter()
            .filter(|c| c.parent_id == ex.span_id)
            .collect();
        assert_eq!(commits.len(), 1, "one commit under each execute");
    }
    assert!(
        across >= 1,
        "no execute span under another node's call span"
    );

    // The deduplicated call: one wait span, behind the execution that computed the report.
    let waits = named(&all, sc::SPAN_WAIT);
    assert_eq!(waits.len(), 1, "{waits:#?}");
    let wait = waits[0];
    assert_eq!(parent(&ids, wait).name, sc::SPAN_CALL);
    let report_exec = executes
        .iter()
        .find(|e| e.attrs[sc::TASK] == "daily_report")
        .unwrap();
    assert_eq!(
        wait.attrs[sc::WAIT_BEHIND],
        report_exec.attrs[sc::EXECUTION]
    );
    assert_eq!(wait.attrs[sc::WAIT_OUTCOME], "hit");
    assert!(wait.attrs[sc::WAIT_MS].parse::<u64>().unwrap() < 30_000);
    // Linked to the call span, on the other node, whose execution computed the report.
    let producer = named(&all, sc::SPAN_CALL)
        .into_iter()
        .find(|c| c.attrs[sc::EXECUTION] == wait.attrs[sc::WAIT_BEHIND])
        .expect("the producing call");
    assert!(
        wait.links
            .contains(&(producer.trace_id.clone(), producer.span_id.clone())),
        "{:?}",
        wait.links
    );
    only_cairn_spans_with_typed_numbers(&all);
    resolves_close_before_their_executions(&all);
}

/// Every span received is Cairn's, and every numeric attribute arrives as a number.
fn only_cairn_spans_with_typed_numbers(all: &[Span]) {
    use cairn_engine::telemetry::semconv as sc;
    let mut seen = std::collections::BTreeSet::new();
    for s in all {
        assert!(s.name.starts_with("cairn."), "a dependency's span: {s:?}");
        for attr in [
            sc::LEASE_GENERATION,
            sc::WAIT_MS,
            sc::ATTEMPTS,
            sc::RUN_ATTEMPT,
        ] {
            if let Some(t) = s.types.get(attr) {
                assert_eq!(*t, "int", "{attr} of {}", s.name);
                seen.insert(attr);
            }
        }
    }
    for attr in [
        sc::LEASE_GENERATION,
        sc::WAIT_MS,
        sc::ATTEMPTS,
        sc::RUN_ATTEMPT,
    ] {
        assert!(seen.contains(attr), "no span carries {attr}");
    }
}

/// A resolve that acquired closes before the execution it led to starts: it covers the resolve,
/// not the execution and commit after it (1 ms of slack for clocks of one machine).
fn resolves_close_before_their_executions(all: &[Span]) {
    use cairn_engine::telemetry::semconv as sc;
    let ids = by_id(all);
    let mut checked = 0;
    for resolve in named(all, sc::SPAN_RESOLVE) {
        if resolve.attrs[sc::RESOLVE_OUTCOME] != "acquired" {
            continue;
        }
        let call = parent(&ids, resolve);
        let execution = &call.attrs[sc::EXECUTION];
        let execute = named(all, sc::SPAN_EXECUTE)
            .into_iter()
            .find(|e| &e.attrs[sc::EXECUTION] == execution)
            .unwrap_or_else(|| panic!("no execute span for {execution}"));
        assert!(
            resolve.end_ns <= execute.start_ns + 1_000_000,
            "resolve of {execution} ends {} µs after its execution starts",
            (resolve.end_ns - execute.start_ns) / 1_000
        );
        checked += 1;
    }
    assert!(checked > 0, "no acquired resolve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_http_configured_by_the_config_file() {
    use cairn_engine::telemetry::semconv as sc;
    let spans = Spans::default();
    let endpoint = common::otlp::http(spans.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    // Configured by the config file this time, not the OTEL_* variables.
    std::fs::write(
        dir.path().join("cairn.toml"),
        format!(
            "store = \"embedded:./data\"\n[api]\ntrace_url = \"http://tempo.test/trace/{{trace_id}}\"\n[telemetry]\notlp_endpoint = \"{endpoint}\"\nprotocol = \"http/protobuf\"\nservice_name = \"cairn-from-config\"\n"
        ),
    )
    .unwrap();
    let mut node = NodeProcess::start_with_env(dir.path(), &["--config", "cairn.toml"], &[]);
    let url = node.url.clone();
    let first_run = tokio::task::spawn_blocking(move || {
        let run = cli_json(&url, &["run", "sum_of_squares", "--input", "3"], 0);
        assert_eq!(run["output"], 5);
        // The same slow call from two runs at once on this one node: the second joins the
        // first's flight in the same scheduler.
        let other = std::thread::spawn({
            let url = url.clone();
            move || cli_json(&url, &["run", "daily_report", "--input", r#""local""#], 0)
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        let first = cli_json(&url, &["run", "daily_report", "--input", r#""local""#], 0);
        let second = other.join().unwrap();
        let mut statuses: Vec<String> = [&first, &second]
            .iter()
            .map(|r| r["calls"][0]["status"].as_str().unwrap().to_string())
            .collect();
        statuses.sort();
        assert_eq!(statuses, ["Populated", "Waited"]);
        run
    })
    .await
    .unwrap();
    // The dashboard links the run to its trace with the configured template.
    let run_id = first_run["run_id"].as_str().unwrap();
    let trace_id = first_run["trace_id"]
        .as_str()
        .expect("a traced run has a trace id")
        .to_string();
    let page = reqwest::get(format!("{}/runs/{run_id}", node.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&format!("href=\"http://tempo.test/trace/{trace_id}\"")),
        "no trace link on the run page"
    );
    node.terminate();
    let all = spans.all();
    let ids = by_id(&all);
    assert_eq!(named(&all, sc::SPAN_RUN).len(), 3);
    assert_eq!(
        named(&all, sc::SPAN_CALL).len(),
        6,
        "three squares, a total and two reports"
    );
    assert_eq!(named(&all, sc::SPAN_EXECUTE).len(), 5, "the report once");
    for ex in named(&all, sc::SPAN_EXECUTE) {
        assert_eq!(parent(&ids, ex).name, sc::SPAN_CALL);
    }
    assert_eq!(all[0].resource["service.name"], "cairn-from-config");
    assert!(
        named(&all, sc::SPAN_RUN)
            .iter()
            .any(|r| r.trace_id == trace_id),
        "the linked trace is the run's"
    );
    only_cairn_spans_with_typed_numbers(&all);
    resolves_close_before_their_executions(&all);

    // The call that waited on this node: a wait span under it, naming the execution that
    // produced the report and linked to that call's span.
    let calls = named(&all, sc::SPAN_CALL);
    let waited = calls
        .iter()
        .find(|c| c.attrs[sc::CACHE_STATUS] == "Waited")
        .expect("a Waited call");
    let producer = calls
        .iter()
        .find(|c| c.attrs[sc::TASK] == "daily_report" && c.attrs[sc::CACHE_STATUS] == "Populated")
        .expect("the Populated report");
    let waits: Vec<_> = named(&all, sc::SPAN_WAIT)
        .into_iter()
        .filter(|w| w.parent_id == waited.span_id)
        .collect();
    assert_eq!(waits.len(), 1, "{:#?}", named(&all, sc::SPAN_WAIT));
    let wait = waits[0];
    assert_eq!(wait.attrs[sc::WAIT_BEHIND], producer.attrs[sc::EXECUTION]);
    assert_eq!(wait.attrs[sc::WAIT_OUTCOME], "hit");
    assert_eq!(wait.types[sc::WAIT_MS], "int");
    assert!(
        wait.links
            .contains(&(producer.trace_id.clone(), producer.span_id.clone())),
        "no link to the producing call: {:?}",
        wait.links
    );
}
