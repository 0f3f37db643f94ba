//! Deterministic simulation of whole Cairn nodes (see `cairn_tests::sim`): regression seeds
//! first, then a range of seeds, each run twice and compared.
//!
//! - `CAIRN_SIM_SEEDS=N` (default 2000) seeds, from `CAIRN_SIM_FIRST` (default 0);
//! - `CAIRN_SIM_SEED=S cargo test -p cairn-tests --test simulation replay -- --nocapture`
//!   replays one seed and prints its trace;
//! - `CAIRN_SIM_SOAK_SECS=T cargo test -p cairn-tests --test simulation soak -- --ignored`
//!   runs random seeds for T seconds.

use cairn_tests::sim::{SeedReport, describe, run_seed};
use std::time::{Duration, Instant};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `seed` twice on this thread; a violation or two different traces fail the test.
fn check_seed(seed: u64) -> SeedReport {
    let first = run_seed(seed);
    assert!(first.violations.is_empty(), "{}", describe(&first));
    let second = run_seed(seed);
    assert_eq!(
        first.trace_hash,
        second.trace_hash,
        "seed {seed} is not deterministic: two runs gave different traces\n{}\n--- second run ---\n{}",
        describe(&first),
        describe(&second)
    );
    first
}

/// Seeds in `[first, first + n)` on two threads.
fn check_range(first: u64, n: u64) -> Vec<SeedReport> {
    let threads = 2;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                (first..first + n)
                    .filter(|s| s % threads == t)
                    .map(check_seed)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| match h.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        })
        .collect()
}

#[test]
fn regression_seeds_then_a_range_of_seeds() {
    let regressions: Vec<u64> = include_str!("../sim-regression-seeds.txt")
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| l.parse().expect("a seed"))
        .collect();
    for seed in &regressions {
        check_seed(*seed);
    }
    let started = Instant::now();
    let n = env_u64("CAIRN_SIM_SEEDS", 2000);
    let reports = check_range(env_u64("CAIRN_SIM_FIRST", 0), n);
    let elapsed = started.elapsed();
    let executions: usize = reports.iter().map(|r| r.executions).sum();
    let answers: usize = reports.iter().map(|r| r.answers).sum();
    let nemeses: usize = reports.iter().map(|r| r.nemesis_events).sum();
    let paused = reports.iter().filter(|r| r.swarm.pause_backfill).count();
    println!(
        "{n} seeds, each run twice, in {elapsed:.1?} ({:.0} seeds/min): {executions} executions, \
         {answers} answers, {nemeses} nemesis events, {paused} seeds pausing and backfilling \
         their schedule, 0 violations",
        n as f64 / elapsed.as_secs_f64() * 60.0
    );
}

#[test]
fn replay() {
    let Ok(seed) = std::env::var("CAIRN_SIM_SEED") else {
        return;
    };
    let r = run_seed(seed.parse().expect("CAIRN_SIM_SEED is a number"));
    println!("{}", describe(&r));
    println!("{} events; violations: {:?}", r.events, r.violations);
}

#[test]
#[ignore = "a soak: CAIRN_SIM_SOAK_SECS=T cargo test -p cairn-tests --test simulation soak -- --ignored"]
fn soak() {
    let budget = Duration::from_secs(env_u64("CAIRN_SIM_SOAK_SECS", 600));
    let started = Instant::now();
    let mut first = env_u64("CAIRN_SIM_FIRST", rand::random::<u32>() as u64 * 1_000);
    let mut total = 0;
    while started.elapsed() < budget {
        check_range(first, 200);
        first += 200;
        total += 200;
    }
    println!(
        "soak: {total} seeds in {:.0?}, 0 violations",
        started.elapsed()
    );
}
