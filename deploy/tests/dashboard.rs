//! The web dashboard in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
//! which `.ci/run` installs), driven through WebDriver against a real `cairn up`.
//!
//! Each test saves a screenshot of every page it visits under
//! `target/dashboard-screenshots/`. Every wait is bounded (`WAIT`): a page that never shows
//! what it should fails the test, it does not hang CI.

mod common;

use common::{NodeProcess, cli_json, free_port};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for anything a page should show.
const WAIT: Duration = Duration::from_secs(20);

/// A chromedriver process and a Chromium session through it; both end when dropped.
struct Browser {
    client: Option<Client>,
    driver: Child,
    shots: PathBuf,
}

impl Browser {
    async fn start(test: &str) -> Browser {
        let driver_bin =
            std::env::var("CAIRN_CHROMEDRIVER").unwrap_or("/usr/bin/chromedriver".into());
        assert!(
            Path::new(&driver_bin).exists(),
            "{driver_bin} is missing: install Debian's chromium and chromium-driver (.ci/run does)"
        );
        // fantoccini's connector asks rustls for the process's provider (loopback HTTP only).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let port = free_port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().unwrap().keep();
        let caps = json!({
            "browserName": "chrome",
            // The forms' confirmations are accepted, as a user clicking OK would.
            "unhandledPromptBehavior": "accept",
            "goog:chromeOptions": {
                "binary": std::env::var("CAIRN_CHROMIUM").unwrap_or("/usr/bin/chromium".into()),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1400,1000",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        });
        let caps = match caps {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + WAIT;
        let client = loop {
            match ClientBuilder::rustls()
                .expect("rustls connector")
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("no WebDriver session from {driver_bin}: {e}"),
            }
        };
        let shots = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/dashboard-screenshots")
            .join(test);
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            client: Some(client),
            driver,
            shots,
        }
    }

    fn c(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    async fn goto(&self, url: &str) {
        self.c()
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Saves a screenshot as `<name>.png`.
    async fn shot(&self, name: &str) {
        let png = self.c().screenshot().await.expect("screenshot");
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    /// Waits until `css` matches an element; its text.
    async fn wait_text(&self, css: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(e) = self.c().find(Locator::Css(css)).await
                && let Ok(t) = e.text().await
            {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "no element {css:?} on {}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Presses Tab until the element matching `css` has focus.
    async fn tab_to(&self, css: &str) {
        let target = self
            .c()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css:?}: {e}"));
        for _ in 0..40 {
            let active = self.c().active_element().await.expect("focus");
            if active.element_id() == target.element_id() {
                return;
            }
            active.send_keys("\u{E004}").await.expect("Tab");
        }
        panic!("Tab never reached {css:?}");
    }

    async fn count(&self, css: &str) -> usize {
        self.c()
            .find_all(Locator::Css(css))
            .await
            .map_or(0, |v| v.len())
    }

    async fn click(&self, css: &str) {
        self.c()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css:?}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css:?}: {e}"));
    }

    async fn url(&self) -> String {
        self.c()
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    async fn source(&self) -> String {
        self.c().source().await.expect("page source")
    }

    async fn js(&self, script: &str) -> Value {
        self.c().execute(script, vec![]).await.expect("script")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Ends the session (and its Chromium) before the driver goes.
            let _ = futures::executor::block_on(async {
                tokio::time::timeout(Duration::from_secs(5), client.close()).await
            });
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `cairn run …` in a blocking thread (the CLI waits for the run).
async fn run(node: &str, args: &[&str]) -> Value {
    let node = node.to_string();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli_json(&node, &args, 0)
    })
    .await
    .unwrap()
}

fn api(node: &str, path: &str) -> Value {
    let out = Command::new("curl")
        .args(["-s", "-f", &format!("{node}{path}")])
        .output()
        .expect("curl");
    assert!(out.status.success(), "GET {path}: {:?}", out.status);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_appear_live_and_a_run_shows_every_call_with_waits_linked_to_their_producer() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &["--store", "embedded:./data"]);
    let b = Browser::start("runs").await;

    // An empty dashboard says how to fill it.
    b.goto(&format!("{}/runs", node.url)).await;
    let empty = b.wait_text("#empty").await;
    assert!(
        empty.contains("cairn run sum_of_squares --input 10"),
        "{empty}"
    );
    b.shot("runs-empty").await;

    // A run submitted through the CLI appears without a reload: a mark set on the page
    // survives, so the page was not loaded again.
    b.js("window.cairnMark = 'kept'; return null;").await;
    let first = run(&node.url, &["run", "sum_of_squares", "--input", "10"]).await;
    let run_id = first["run_id"].as_str().unwrap().to_string();
    b.wait_text(&format!("tr[data-run='{run_id}']")).await;
    assert_eq!(b.js("return window.cairnMark;").await, json!("kept"));
    b.shot("runs-list").await;

    // Its page lists every call with its status.
    b.click(&format!("tr[data-run='{run_id}'] a")).await;
    b.wait_text("#calls").await;
    let calls = first["calls"].as_array().unwrap();
    assert_eq!(b.count("#calls tbody tr").await, calls.len());
    assert_eq!(
        b.count("#calls tbody tr[data-status='populated']").await,
        11
    );
    assert_eq!(b.count("#timeline g[data-execution]").await, calls.len());
    b.shot("run-populated").await;

    // Two identical runs at once: one computes each key, the other waits for it.
    let input = r#"{"n": 12, "delay_ms": 1500}"#;
    let args = ["run", "fan_out", "--input", input];
    let (x, y) = tokio::join!(run(&node.url, &args), run(&node.url, &args));
    let waits = |r: &Value| r["counts"]["Waited"].as_u64().unwrap_or(0);
    let (waiter, producer) = if waits(&x) >= waits(&y) {
        (x, y)
    } else {
        (y, x)
    };
    assert!(waits(&waiter) > 0, "no call waited: {waiter} {producer}");
    let waiter_id = waiter["run_id"].as_str().unwrap();
    b.goto(&format!("{}/runs/{waiter_id}", node.url)).await;
    b.wait_text("#calls").await;
    assert_eq!(
        b.count("#calls tbody tr[data-status='waited']").await as u64,
        waits(&waiter)
    );
    b.shot("run-with-waits").await;
    // The first waited call links to the execution that produced its value, on its run's page.
    let link = b
        .c()
        .find(Locator::Css("#calls tr[data-status='waited'] a.waited"))
        .await
        .expect("a waited call links to its producer");
    let producing = link.text().await.unwrap();
    link.click().await.unwrap();
    let row = format!("#call-{producing}");
    b.wait_text(&row).await;
    let url = b.url().await;
    let producer_run = api(&node.url, &format!("/v1/executions/{producing}"))["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(url.contains(&format!("/runs/{producer_run}")), "{url}");
    let status = b
        .c()
        .find(Locator::Css(&row))
        .await
        .unwrap()
        .attr("data-status")
        .await
        .unwrap();
    assert_eq!(
        status.as_deref(),
        Some("populated"),
        "the producer ran the body"
    );
    b.shot("run-producer").await;

    // The filters work from the keyboard: Tab to the status, pick one, Tab to Filter, Enter.
    b.goto(&format!("{}/runs", node.url)).await;
    b.wait_text(&format!("tr[data-run='{run_id}']")).await;
    b.tab_to("#f-status").await;
    b.c()
        .active_element()
        .await
        .unwrap()
        .send_keys("s")
        .await
        .unwrap();
    b.tab_to("form[aria-label='Filter runs'] button[type=submit]")
        .await;
    b.c()
        .active_element()
        .await
        .unwrap()
        .send_keys("\u{E007}")
        .await
        .unwrap();
    b.wait_text("#runs-rows tr").await;
    let url = b.url().await;
    assert!(url.contains("status=succeeded"), "{url}");
    assert_eq!(
        b.count("#runs-rows tr").await,
        3,
        "the three runs succeeded"
    );

    b.goto(&format!("{}/nodes", node.url)).await;
    let nodes = b.wait_text("#nodes").await;
    assert!(
        nodes.contains(&node.name) && nodes.contains("live"),
        "{nodes}"
    );
    b.shot("nodes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_explain_form_names_the_input_and_an_evict_button_evicts() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &["--store", "embedded:./data"]);
    run(&node.url, &["run", "sum_of_squares", "--input", "10"]).await;
    let b = Browser::start("cache").await;

    // Explain through the form: a new input misses, and the input is named.
    // Every task with what the cache did for it; one click narrows to a task.
    b.goto(&format!("{}/cache", node.url)).await;
    let square = b.wait_text("#tasks tr[data-task='square']").await;
    assert!(
        square.contains("0.0 %"),
        "ten squares ran, none hit yet: {square}"
    );
    b.shot("cache-tasks").await;
    b.click("#tasks tr[data-task='square'] a").await;
    let stats = b.wait_text("#stats").await;
    assert!(stats.contains("entries"), "{stats}");
    assert_eq!(b.count("#entries tbody tr").await, 10);
    b.shot("cache").await;
    let input = b.c().find(Locator::Css("#x-input")).await.unwrap();
    input.send_keys(r#"{"n": 11}"#).await.unwrap();
    b.click("form[aria-label='Explain a call'] button[type=submit]")
        .await;
    assert_eq!(b.wait_text("[data-verdict]").await, "miss");
    let diff = b.wait_text("#differences").await;
    assert!(diff.contains("input \"n\" changed"), "{diff}");
    b.shot("explain").await;

    // Evict square(3) with its button (the confirmation is accepted).
    let key = api(&node.url, "/v1/cache/entries?task=square&limit=100")["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_string())
        .find(|k| api(&node.url, &format!("/v1/cache/entries/{k}"))["output"] == 9)
        .expect("square(3) is stored");
    b.goto(&format!("{}/cache/entries/{key}", node.url)).await;
    assert_eq!(b.wait_text("#output").await, "9");
    b.shot("entry").await;
    b.click(&format!("button[aria-label='Evict entry {key}']"))
        .await;
    let notice = b.wait_text("#evicted").await;
    assert!(notice.contains("Evicted 1 entry"), "{notice}");
    assert_eq!(b.count(&format!("tr[data-key='{key}']")).await, 0);

    // The next run recomputes that one call and says so.
    let again = run(&node.url, &["run", "sum_of_squares", "--input", "10"]).await;
    assert_eq!(again["counts"]["Evicted"], 1, "{again}");
    b.goto(&format!(
        "{}/runs/{}",
        node.url,
        again["run_id"].as_str().unwrap()
    ))
    .await;
    b.wait_text("#calls").await;
    assert_eq!(b.count("#calls tbody tr[data-status='evicted']").await, 1);
    b.shot("run-evicted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_a_schedule_stops_its_ticks() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cairn.toml"),
        "[[schedules]]\nname = \"fast\"\nworkflow = \"squares_report\"\nevery_ms = 500\n",
    )
    .unwrap();
    let node = NodeProcess::start(
        dir.path(),
        &["--store", "embedded:./data", "--config", "cairn.toml"],
    );
    let b = Browser::start("schedules").await;
    let fired = |node: &str| api(node, "/v1/schedules")[0]["fired"].as_u64().unwrap_or(0);
    let deadline = Instant::now() + WAIT;
    while fired(&node.url) < 2 {
        assert!(Instant::now() < deadline, "the schedule never fired twice");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.goto(&format!("{}/schedules", node.url)).await;
    b.wait_text("section[data-schedule='fast'] table").await;
    b.shot("schedules").await;
    b.click("button[aria-label='Pause schedule fast']").await;
    b.wait_text("button[aria-label='Resume schedule fast']")
        .await;
    assert_eq!(api(&node.url, "/v1/schedules")[0]["paused"], true);
    // Ticks that were due when it paused may still finish; none start after.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let at_pause = fired(&node.url);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(fired(&node.url), at_pause, "a paused schedule fired");
    b.goto(&format!("{}/schedules", node.url)).await;
    b.wait_text("button[aria-label='Resume schedule fast']")
        .await;
    b.shot("schedules-paused").await;
}

/// Serves one page on 127.0.0.1 (another origin than the node) to every request.
fn serve_page(html: String) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { break };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{html}",
                html.len()
            );
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_token_shows_nothing_without_it_and_refuses_forged_posts() {
    const TOKEN: &str = "dashboard-test-token-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(
        dir.path(),
        &["--store", "embedded:./data", "--token", TOKEN],
    );
    let out = Command::new(common::CAIRN)
        .args(["run", "sum_of_squares", "--input", "4", "--json"])
        .env("CAIRN_NODE", &node.url)
        .env("CAIRN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first: Value = serde_json::from_slice(&out.stdout).unwrap();
    let run_id = first["run_id"].as_str().unwrap();
    let b = Browser::start("token").await;

    // Without the token: the prompt, and nothing about any run, on every page.
    for page in [
        "/runs/rows",
        &format!("/runs/{run_id}"),
        "/cache?task=square",
        "/runs",
    ] {
        b.goto(&format!("{}{page}", node.url)).await;
        b.wait_text("#token").await;
        assert!(
            b.url().await.contains("/login"),
            "{page} did not ask for the token"
        );
        let source = b.source().await;
        // The id is in the address the user typed (and where to return after signing in);
        // nothing else about the run is on the page.
        if !page.contains(run_id) {
            assert!(
                !source.contains(run_id),
                "{page} showed a run id without the token"
            );
        }
        assert!(
            !source.contains("sum_of_squares"),
            "{page} showed a run without the token"
        );
    }
    b.shot("login").await;

    // A wrong token is refused; the right one opens the page asked for.
    b.c()
        .find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys("not-the-token-at-all")
        .await
        .unwrap();
    b.click("button[type=submit]").await;
    let problem = b.wait_text("[role=alert]").await;
    assert!(problem.contains("not this node's token"), "{problem}");
    // From the keyboard: the field has focus, Enter submits.
    let field = b.c().active_element().await.unwrap();
    assert_eq!(field.attr("id").await.unwrap().as_deref(), Some("token"));
    field.send_keys(&format!("{TOKEN}\u{E007}")).await.unwrap();
    b.wait_text(&format!("tr[data-run='{run_id}']")).await;
    b.shot("runs-signed-in").await;

    // The session cookie cannot be read by scripts.
    assert_eq!(b.js("return document.cookie;").await, json!(""));

    // A page on another origin posts a forged eviction: refused, nothing evicted.
    let key = {
        let out = Command::new("curl")
            .args(["-s", "-f", "-H", &format!("Authorization: Bearer {TOKEN}")])
            .arg(format!("{}/v1/cache/entries?task=square", node.url))
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["entries"][0]["key"].as_str().unwrap().to_string()
    };
    let evil = serve_page(format!(
        "<html><body><form method='post' action='{}/cache/evict'>\
         <input name='csrf' value='guessed'><input name='scope' value='key'>\
         <input name='key' value='{key}'></form>\
         <script>document.forms[0].submit()</script></body></html>",
        node.url
    ));
    b.goto(&format!("http://127.0.0.1:{evil}/")).await;
    let refused = b.wait_text("[role=alert]").await;
    assert!(refused.contains("refused"), "{refused}");
    assert!(
        b.url().await.starts_with(&node.url),
        "the forged form reached the node"
    );
    b.shot("forged-post-refused").await;
    let still = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &format!("Authorization: Bearer {TOKEN}"),
        ])
        .arg(format!("{}/v1/cache/entries/{key}", node.url))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&still.stdout),
        "200",
        "the forged POST evicted the entry"
    );

    // The same eviction from the dashboard's own page goes through.
    b.goto(&format!("{}/cache/entries/{key}", node.url)).await;
    b.click(&format!("button[aria-label='Evict entry {key}']"))
        .await;
    let notice = b.wait_text("#evicted").await;
    assert!(notice.contains("Evicted 1 entry"), "{notice}");
}
