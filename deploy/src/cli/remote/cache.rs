//! `cairn cache`: lists, shows, evicts, explains and verifies entries.

use super::{Remote, client, parse_json, show};
use crate::api::types::*;
use crate::client::exit;

/// What `cairn cache blob --output` wrote.
#[derive(serde::Serialize)]
struct BlobWritten {
    digest: String,
    size: u64,
    path: String,
}

/// `cairn cache`.
#[derive(clap::Args)]
pub(in crate::cli) struct CacheArgs {
    #[command(subcommand)]
    action: CacheAction,
    #[command(flatten)]
    remote: Remote,
}

#[derive(clap::Subcommand)]
enum CacheAction {
    /// Lists entries of a project and domain (optionally one task and version).
    Ls {
        /// The project: entries and runs are never shared across projects.
        #[arg(long, default_value = "default")]
        project: String,
        /// The domain (development, staging, production…): never shared across domains.
        #[arg(long, default_value = "development")]
        domain: String,
        /// Only this task.
        #[arg(long)]
        task: Option<String>,
        /// Only this cache version (with --task).
        #[arg(long, requires = "task")]
        version: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Cursor from a previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Shows one entry with its output.
    Show {
        /// The cache key (hex).
        key: String,
    },
    /// Writes a blob (a command task's output file, stdout or stderr, by the digest its
    /// output names) to a file or to stdout, checked against its digest.
    Blob {
        /// The blob's BLAKE3 digest (64 hex digits).
        digest: String,
        /// The file to write (default: stdout). Left out when the transfer fails.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
    },
    /// Evicts entries: one key, a task (and version), a project/domain, or an execution's.
    Evict {
        /// One key (hex).
        #[arg(long, conflicts_with_all = ["task", "execution", "all"])]
        key: Option<String>,
        /// Every entry of this task (in --project/--domain).
        #[arg(long, conflicts_with_all = ["execution", "all"])]
        task: Option<String>,
        /// Only this cache version of --task.
        #[arg(long, requires = "task")]
        version: Option<String>,
        /// Every entry this execution produced.
        #[arg(long, conflicts_with = "all")]
        execution: Option<String>,
        /// Every entry of --project/--domain.
        #[arg(long)]
        all: bool,
        /// The project: entries and runs are never shared across projects.
        #[arg(long, default_value = "default")]
        project: String,
        /// The domain (development, staging, production…): never shared across domains.
        #[arg(long, default_value = "development")]
        domain: String,
    },
    /// Reads back every entry and checks it; reports the corrupt ones (and removes them with
    /// --repair).
    Verify {
        /// Only this task's entries.
        #[arg(long)]
        task: Option<String>,
        /// Remove the corrupt entries found.
        #[arg(long)]
        repair: bool,
        /// The project: entries and runs are never shared across projects.
        #[arg(long, default_value = "default")]
        project: String,
        /// The domain (development, staging, production…): never shared across domains.
        #[arg(long, default_value = "development")]
        domain: String,
    },
    /// Explains whether a task call would hit, and what differs from the nearest entries.
    Explain {
        /// The task.
        task: String,
        /// Its input as JSON: an object of the inputs by name, or the input value.
        #[arg(long, allow_hyphen_values = true)]
        input: String,
        /// The project: entries and runs are never shared across projects.
        #[arg(long, default_value = "default")]
        project: String,
        /// The domain (development, staging, production…): never shared across domains.
        #[arg(long, default_value = "development")]
        domain: String,
    },
}

pub(in crate::cli) async fn cache(args: CacheArgs) -> u8 {
    let c = match client(&args.remote) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let r = &args.remote;
    match args.action {
        CacheAction::Ls {
            project,
            domain,
            task,
            version,
            limit,
            cursor,
        } => {
            let q = EntriesQuery {
                project: Some(project),
                domain: Some(domain),
                task,
                version,
                limit: Some(limit),
                cursor,
            };
            show(r, c.entries(&q).await, |page| {
                println!(
                    "{:<32} {:<16} {:<8} {:>9} {:<24}",
                    "key", "task", "version", "bytes", "execution"
                );
                for e in &page.entries {
                    println!(
                        "{:<32} {:<16} {:<8} {:>9} {:<24}",
                        e.key, e.task, e.version, e.size, e.execution
                    );
                }
                if let Some(next) = &page.next {
                    println!("more: --cursor {next}");
                }
            })
        }
        CacheAction::Show { key } => show(r, c.entry(&key).await, |d| {
            let e = &d.entry;
            println!("key        {}", e.key);
            println!("task       {} version {}", e.task, e.version);
            println!("project    {}/{}", e.project, e.domain);
            println!("signature  {}", e.signature);
            for (name, digest) in &e.inputs {
                println!("input      {name} = {digest}");
            }
            println!("stored at  {} ms by {}", e.created_at_ms, e.execution);
            println!("size       {} bytes", e.size);
            match &d.output {
                Some(v) => println!("output     {v}"),
                None => println!("output     (task not registered on this node)"),
            }
        }),
        CacheAction::Blob { digest, output } => match output {
            None => {
                let mut stdout = std::io::stdout().lock();
                match c.blob(&digest, &mut stdout).await {
                    Ok(_) => exit::OK,
                    Err(e) => super::fail(&e),
                }
            }
            Some(path) => {
                // Written next to the destination, renamed into place once the digest checks.
                let tmp = path.with_extension("cairn-partial");
                let file = std::fs::File::create(&tmp);
                let mut file = match file {
                    Ok(f) => std::io::BufWriter::new(f),
                    Err(e) => {
                        eprintln!("error: cannot create {}: {e}", tmp.display());
                        return exit::INVALID;
                    }
                };
                let result = c.blob(&digest, &mut file).await;
                drop(file);
                let result = result.and_then(|size| {
                    std::fs::rename(&tmp, &path)
                        .map(|()| BlobWritten {
                            digest: digest.clone(),
                            size,
                            path: path.display().to_string(),
                        })
                        .map_err(|e| crate::client::ClientError::Decode {
                            url: path.display().to_string(),
                            detail: format!("renaming {} into place: {e}", tmp.display()),
                        })
                });
                if result.is_err() {
                    let _ = std::fs::remove_file(&tmp);
                }
                show(r, result, |w| {
                    println!("wrote {} bytes to {}", w.size, w.path)
                })
            }
        },
        CacheAction::Evict {
            key,
            task,
            version,
            execution,
            all,
            project,
            domain,
        } => {
            let req = match (key, task, execution, all) {
                (Some(key), ..) => EvictRequest::Key { key },
                (_, Some(task), ..) => EvictRequest::Task {
                    project,
                    domain,
                    task,
                    version,
                },
                (_, _, Some(execution), _) => EvictRequest::Execution { execution },
                (.., true) => EvictRequest::ProjectDomain { project, domain },
                _ => {
                    eprintln!("error: say what to evict: --key, --task, --execution or --all");
                    return exit::INVALID;
                }
            };
            show(r, c.evict(&req).await, |res| {
                println!(
                    "evicted {} entr{}",
                    res.evicted,
                    if res.evicted == 1 { "y" } else { "ies" }
                )
            })
        }
        CacheAction::Verify {
            task,
            repair,
            project,
            domain,
        } => {
            let req = VerifyRequest {
                project,
                domain,
                task,
                repair,
            };
            let result = c.verify(&req).await;
            let found = result
                .as_ref()
                .is_ok_and(|v| !v.corrupt.is_empty() && !repair);
            let code = show(r, result, |v| {
                println!(
                    "checked {} entries: {} corrupt{}",
                    v.checked,
                    v.corrupt.len(),
                    if repair {
                        format!(", {} removed", v.repaired)
                    } else {
                        String::new()
                    }
                );
                for e in &v.corrupt {
                    println!("  {}: {}", e.key, e.detail);
                }
            });
            // Corrupt entries left in place are a failure a script can see.
            if code == exit::OK && found {
                exit::FAILED
            } else {
                code
            }
        }
        CacheAction::Explain {
            task,
            input,
            project,
            domain,
        } => {
            let input = match parse_json("--input", &input) {
                Ok(v) => v,
                Err(code) => return code,
            };
            let req = ExplainRequest {
                task,
                input,
                project,
                domain,
            };
            show(r, c.explain(&req).await, |e| {
                println!("key      {}", e.key);
                match e.verdict.as_str() {
                    "hit" => println!("verdict  hit: an entry is stored under this key"),
                    "evicted" => println!(
                        "verdict  miss: the entry was evicted ({})",
                        e.reason.as_deref().unwrap_or("")
                    ),
                    "corrupt" => println!(
                        "verdict  miss: the stored entry is corrupt ({}); the next call replaces it",
                        e.reason.as_deref().unwrap_or("")
                    ),
                    _ if e.nearest.is_empty() => println!(
                        "verdict  miss: no entry of this task in this project/domain ({} compared)",
                        e.compared
                    ),
                    _ => {
                        println!(
                            "verdict  miss; {} of {} stored entr{} differ{} least:",
                            e.tied,
                            e.compared,
                            if e.compared == 1 { "y" } else { "ies" },
                            if e.tied == 1 { "s" } else { "" }
                        );
                        for d in &e.nearest {
                            println!("  {}: {}", d.entry, d.summary.join("; "));
                        }
                        if e.tied > e.nearest.len() {
                            println!("  … and {} more like these", e.tied - e.nearest.len());
                        }
                    }
                }
            })
        }
    }
}
