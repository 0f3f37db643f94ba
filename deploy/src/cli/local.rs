//! Commands that run in-process, without a node: the quickstart and the store check.

use crate::examples::{daily_report, integer_sqrt, square, squares_report, sum_of_squares, total};
use crate::{CallSummary, Node, RunOptions, RunReport, ScheduleSpec, Trigger};
use anyhow::Context;
use cairn_engine::{AnyStore, RetryPolicy, Store, Transaction, transact};
use std::time::Instant;

/// Prints an error and turns it into an exit code.
pub(super) fn report(result: anyhow::Result<()>) -> u8 {
    match result {
        Ok(()) => crate::client::exit::OK,
        Err(e) => {
            eprintln!("error: {e:#}");
            crate::client::exit::FAILED
        }
    }
}

fn print_calls(title: &str, report: &RunReport<impl std::fmt::Debug>) {
    println!("\n{title}  (run {}, {:?})", report.run_id, report.duration);
    let mut calls: Vec<&CallSummary> = report.calls.iter().collect();
    if calls.len() > 12 {
        let mut by_status = std::collections::BTreeMap::new();
        for c in &calls {
            *by_status
                .entry((&*c.task, format!("{:?}", c.status)))
                .or_insert(0) += 1;
        }
        for ((task, status), n) in by_status {
            println!("  {n:>5} × {task:<14} {status}");
        }
    } else {
        calls.sort_by_key(|c| c.execution.clone());
        for c in calls {
            let error = c
                .error
                .as_deref()
                .map(|e| format!("  error: {e}"))
                .unwrap_or_default();
            println!(
                "  {:<14} {:<14} {:>10.3?}{error}",
                c.task,
                format!("{:?}", c.status),
                c.duration
            );
        }
    }
    println!("  → {:?}", report.output);
}

pub(super) async fn quickstart(store: &str) -> anyhow::Result<()> {
    // The OTEL_* variables work here too: `OTEL_EXPORTER_OTLP_ENDPOINT=… cairn quickstart`.
    let telemetry = crate::telemetry::Telemetry::init(&Default::default(), "quickstart")
        .map_err(anyhow::Error::msg)?;
    let mut every_300ms = ScheduleSpec::new(
        "squares-every-300ms",
        "squares_report",
        Trigger::Every {
            period_ms: 300,
            anchor_ms: 0,
        },
    );
    every_300ms.project = "flytesnacks".into();
    every_300ms.domain = "development".into();
    let node = Node::builder()
        .name("quickstart")
        .store_url(store)
        .task(square)
        .task(total)
        .task(integer_sqrt)
        .task(daily_report)
        .workflow("squares_report", squares_report)
        .schedule(every_300ms)
        .schedule_poll(std::time::Duration::from_millis(50))
        .start()
        .await
        .with_context(|| format!("starting a node on {store}"))?;
    println!("Cairn quickstart on {store}");
    let opts = || RunOptions::new("flytesnacks", "development");

    let r = node
        .run(opts(), |ctx| async move { ctx.call(square, 2).await })
        .await;
    print_calls("square(2), first run", &r);
    let r = node
        .run(opts(), |ctx| async move { ctx.call(square, 2).await })
        .await;
    print_calls("square(2), second run: answered from the cache", &r);

    let r = node.run(opts(), |ctx| sum_of_squares(ctx, 100)).await;
    print_calls(
        "sum_of_squares(100): fan-out over 100 inputs, then a join",
        &r,
    );

    let r = node
        .run(
            opts(),
            |ctx| async move { ctx.call(integer_sqrt, -4).await },
        )
        .await;
    print_calls(
        "integer_sqrt(-4): a failing task (errors are never cached)",
        &r,
    );

    let started = Instant::now();
    let runs = (0..20).map(|_| {
        node.run(opts(), |ctx| async move {
            ctx.call(daily_report, "2026-11-25".to_string()).await
        })
    });
    let reports = futures::future::join_all(runs).await;
    let mut by_status = std::collections::BTreeMap::new();
    for r in &reports {
        for c in &r.calls {
            *by_status.entry(format!("{:?}", c.status)).or_insert(0) += 1;
        }
    }
    println!(
        "\ndaily_report(\"2026-11-25\") called by 20 concurrent runs ({:?} in all):",
        started.elapsed()
    );
    for (status, n) in by_status {
        println!("  {n:>5} × {status}");
    }
    println!("  → {:?}", reports[0].output);

    let overwrite = opts().overwrite_cache(true);
    let r = node
        .run(overwrite, |ctx| async move { ctx.call(square, 2).await })
        .await;
    print_calls(
        "square(2) with overwrite_cache: re-executed and replaced",
        &r,
    );

    // The schedule has been firing since the node started; give it a few more ticks.
    tokio::time::sleep(std::time::Duration::from_millis(1_000)).await;
    node.catalog().flush_records().await?;
    println!("\nschedule squares-every-300ms (workflow squares_report, fixed rate 300 ms):");
    let ticks = node.schedules().ticks("squares-every-300ms").await?;
    for (tick, rec) in ticks.iter().rev().take(5).rev() {
        let calls = node.catalog().run_executions(&rec.run_id).await?;
        let mut by_status = std::collections::BTreeMap::new();
        for c in &calls {
            *by_status.entry(format!("{:?}", c.status)).or_insert(0) += 1;
        }
        let summary: Vec<String> = by_status.iter().map(|(s, n)| format!("{n} {s}")).collect();
        let outcome = match &rec.outcome {
            Some(Ok(())) => "ok".to_string(),
            Some(Err(e)) => format!("failed: {e}"),
            None => "running".to_string(),
        };
        println!(
            "  tick {tick}  fired {} ms late  {outcome:<8} calls: {}",
            rec.fired_at_ms - tick,
            summary.join(", ")
        );
    }
    if let Some(r) = node.schedules().get("squares-every-300ms").await? {
        let st = r.state;
        println!(
            "  fired {} · missed {} · skipped for overlap {} · failed {} · max lateness {} ms",
            st.fired, st.missed, st.skipped_overlap, st.failed, st.late_ms_max
        );
    }

    node.shutdown().await?;
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    println!("\nRun it again: every cacheable call above is then a Hit.");
    Ok(())
}

pub(super) async fn check_store(url: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let store = AnyStore::open(url).await?;
    println!(
        "opened {} store in {:?}",
        store.backend(),
        started.elapsed()
    );
    let key = cairn_engine::keys::pack(
        &cairn_engine::keys::subspace(cairn_engine::keys::tag::TEST),
        &("check-store", std::process::id()),
    );
    let policy = RetryPolicy::default();
    let t = Instant::now();
    transact(&store, &policy, |tx| {
        let key = &key;
        async move {
            tx.set(key, b"ok");
            Ok(())
        }
    })
    .await
    .context("write")?;
    println!("write  {:?}", t.elapsed());
    let t = Instant::now();
    let value = store
        .begin_read()
        .await?
        .get(&key, true)
        .await
        .context("read")?;
    anyhow::ensure!(
        value.as_deref() == Some(&b"ok"[..]),
        "read back {value:?}, wrote \"ok\""
    );
    println!("read   {:?}", t.elapsed());
    let t = Instant::now();
    transact(&store, &policy, |tx| {
        let key = &key;
        async move {
            tx.clear(key);
            Ok(())
        }
    })
    .await
    .context("clear")?;
    println!("clear  {:?}", t.elapsed());
    Ok(())
}
