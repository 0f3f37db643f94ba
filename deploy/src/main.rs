//! The `cairn` command: runs a Cairn node and talks to one.

use anyhow::Context;
use cairn_engine::{AnyStore, RetryPolicy, Store, Transaction, transact};
use clap::{Parser, Subcommand};
use std::time::Instant;

/// Cairn: a distributed task engine with a transactional cache of task outputs.
#[derive(Parser)]
#[command(name = "cairn", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Opens a store and checks it with a write, a read and a clear, timing each.
    CheckStore {
        /// Store URL: embedded:<dir>, postgres://… or fdb:<cluster-file>.
        #[arg(long, env = "CAIRN_STORE", default_value = "embedded:./cairn-data")]
        store: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::CheckStore { store } => check_store(&store).await,
    }
}

async fn check_store(url: &str) -> anyhow::Result<()> {
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
    let tx = store.begin_read().await?;
    let value = tx.get(&key, true).await.context("read")?;
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
