//! The `cairn` command line. A binary that registers its own tasks and workflows gets the whole
//! CLI with [`main`]:
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     cairn::cli::main(|node| node.task(cairn::examples::square))
//! }
//! ```
//!
//! `cairn up` runs a node (with those tasks and workflows) and its HTTP API; every other command
//! but `quickstart` and `check-store` talks to a running node through that API
//! ([`crate::client`]). Exit codes are in [`crate::client::exit`].

/// The CLI's `println!`: like the standard one, except that when stdout has been closed (output
/// piped into `head`) the command ends quietly, as Unix tools do, instead of panicking. Defined
/// before the command modules so that theirs is this one.
macro_rules! println {
    () => {
        $crate::cli::write_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::write_line(format_args!($($arg)*))
    };
}

mod local;
mod remote;
mod up;

/// Writes one line to stdout; exits with 0 if stdout is a closed pipe.
pub(crate) fn write_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{args}")
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

use crate::NodeBuilder;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Cairn: a distributed task engine with a transactional cache of task outputs.
#[derive(Parser)]
#[command(name = "cairn", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the node to talk to is.
#[derive(clap::Args, Clone)]
struct Remote {
    /// The node's API address.
    #[arg(
        long,
        global = true,
        env = "CAIRN_NODE",
        default_value = "http://127.0.0.1:7070"
    )]
    node: String,
    /// Bearer token, when the node requires one.
    #[arg(long, global = true, env = "CAIRN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A CA certificate (PEM) to trust for an `https://` node, e.g. a private CA's; without it
    /// the system's trust store is used.
    #[arg(long, global = true, env = "CAIRN_CA")]
    ca: Option<std::path::PathBuf>,
    /// Print the node's JSON answer instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a node: its workers, schedulers, schedules and HTTP API, until Ctrl-C or SIGTERM.
    Up(up::UpArgs),
    /// Starts a run of a workflow on a node and waits for it, showing progress.
    Run(remote::RunArgs),
    /// Lists runs, or shows one with its calls.
    Runs(remote::RunsArgs),
    /// Browses, explains and evicts the cache.
    Cache(remote::CacheArgs),
    /// Lists, pauses, resumes or backfills schedules.
    Schedules(remote::SchedulesArgs),
    /// Lists the workflows a node can run.
    Workflows(remote::Plain),
    /// Lists the cluster's nodes and their load.
    Nodes(remote::Plain),
    /// Prints the node's OpenAPI document.
    Openapi(remote::Plain),
    /// Starts a node with the example workflows in-process and prints every task call with its
    /// cache status and time. Run it twice: the second time everything cacheable is a hit.
    Quickstart {
        /// Store URL: embedded:<dir>, postgres://… or fdb:<cluster-file>.
        #[arg(long, env = "CAIRN_STORE", default_value = "embedded:./cairn-data")]
        store: String,
    },
    /// Opens a store and checks it with a write, a read and a clear, timing each.
    CheckStore {
        /// Store URL.
        #[arg(long, env = "CAIRN_STORE", default_value = "embedded:./cairn-data")]
        store: String,
    },
}

/// Parses the command line and runs it; `configure` registers the binary's tasks, workflows
/// and schedules on the node `cairn up` starts.
pub fn main(configure: impl Fn(NodeBuilder) -> NodeBuilder + Send + 'static) -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(crate::client::exit::UNAVAILABLE);
        }
    };
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Up(args) => up::up(args, configure).await,
            Command::Run(args) => remote::run(args).await,
            Command::Runs(args) => remote::runs(args).await,
            Command::Cache(args) => remote::cache(args).await,
            Command::Schedules(args) => remote::schedules(args).await,
            Command::Workflows(args) => remote::workflows(args).await,
            Command::Nodes(args) => remote::nodes(args).await,
            Command::Openapi(args) => remote::openapi(args).await,
            Command::Quickstart { store } => local::report(local::quickstart(&store).await),
            Command::CheckStore { store } => local::report(local::check_store(&store).await),
        }
    });
    // FoundationDB requires its network thread stopped before the process exits.
    drop(runtime);
    #[cfg(feature = "fdb")]
    cairn_engine::store::foundationdb::stop_network();
    ExitCode::from(code)
}
