//! How long the dashboard's page of a run of 10,000 calls takes: rendered by the server
//! (request to last byte, on loopback) and loaded by a real headless Chromium (navigation
//! start to the load event).
//!
//! ```sh
//! cargo run --release -p cairn-benches --bin dashboard_render            # 10,000 calls
//! cargo run --release -p cairn-benches --bin dashboard_render -- 1000    # another size
//! ```
//!
//! A node with the example workflows on a fresh embedded store runs `fan_out` over `n` inputs
//! (`n` cached `slow_square` calls and one `total`), then the page of that run is fetched 10
//! times over HTTP and loaded 5 times in Chromium (Debian's `chromium` and `chromium-driver`).
//! Without chromedriver the browser half is skipped and says so.

use fantoccini::ClientBuilder;
use serde_json::json;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let n: i64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = cairn_benches::runtime();
    rt.block_on(async {
        let node = Arc::new(
            cairn::examples::register(cairn::Node::builder())
                .store_url(format!("embedded:{}", dir.path().display()))
                .start()
                .await
                .expect("node"),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let server = cairn::api::ApiServer::start(
            node.clone(),
            Arc::new(cairn::api::LocalOnly),
            listener,
            &cairn::api::ApiConfig::default(),
        )
        .expect("api");
        let base = format!("http://{}", server.addr());
        let client = cairn::client::Client::new(base.clone(), None);
        let started = Instant::now();
        let run = client
            .submit(&cairn::api::types::SubmitRunRequest {
                workflow: "fan_out".into(),
                input: json!({"n": n, "delay_ms": 0}),
                project: "default".into(),
                domain: "development".into(),
                overwrite_cache: false,
            })
            .await
            .expect("submit");
        let detail = client
            .run(&run.run_id, Duration::from_secs(60))
            .await
            .expect("run");
        assert_eq!(
            detail.calls.len() as i64,
            n + 1,
            "every call is recorded: {:?}",
            detail.run.status
        );
        println!(
            "run {} of {} calls took {:.2} s",
            run.run_id,
            detail.calls.len(),
            started.elapsed().as_secs_f64()
        );
        let page = format!("{base}/runs/{}", run.run_id);

        // Server side: request to last byte.
        let http = reqwest::Client::new();
        let mut server_ms = Vec::new();
        let mut size = 0;
        for _ in 0..10 {
            let t = Instant::now();
            let body = http
                .get(&page)
                .send()
                .await
                .expect("GET")
                .error_for_status()
                .expect("200")
                .text()
                .await
                .expect("body");
            server_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            assert!(body.contains("id=\"timeline\""), "the page has its timeline");
            assert!(
                body.contains(&format!("×{n}")),
                "the timeline groups the {n} calls"
            );
            size = body.len();
        }
        server_ms.sort_by(f64::total_cmp);
        println!(
            "server render of the run page ({} KiB): p50 {:.1} ms, max {:.1} ms (10 requests)",
            size / 1024,
            percentile(&server_ms, 0.5),
            server_ms[server_ms.len() - 1]
        );

        // Browser: navigation start to the load event.
        let driver_bin = "/usr/bin/chromedriver";
        if !std::path::Path::new(driver_bin).exists() {
            println!("browser load: SKIPPED ({driver_bin} is missing: apt-get install chromium chromium-driver)");
            return;
        }
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let mut driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver");
        let profile = tempfile::tempdir().expect("profile");
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                         format!("--user-data-dir={}", profile.path().display())]
            }
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!()
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let browser = loop {
            match ClientBuilder::rustls()
                .expect("connector")
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(c) => break c,
                Err(e) if Instant::now() > deadline => panic!("no WebDriver session: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let mut load_ms = Vec::new();
        for _ in 0..5 {
            browser.goto(&page).await.expect("goto");
            let t = browser
                .execute(
                    "const e = performance.getEntriesByType('navigation')[0]; \
                     return [e.responseEnd, e.domContentLoadedEventEnd, e.loadEventEnd];",
                    vec![],
                )
                .await
                .expect("timing");
            let load = t[2].as_f64().expect("loadEventEnd");
            load_ms.push((load, t[0].as_f64().unwrap_or(0.0)));
        }
        let _ = browser.close().await;
        let _ = driver.kill();
        let _ = driver.wait();
        load_ms.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (p50, response) = load_ms[load_ms.len() / 2];
        println!(
            "browser load event of the run page: p50 {p50:.1} ms (response end {response:.1} ms), max {:.1} ms (5 loads)",
            load_ms[load_ms.len() - 1].0
        );
        server.stop().await;
    });
}
