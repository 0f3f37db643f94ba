//! Store URLs: which backend, where, and how.
//!
//! - `embedded:<dir>[?fsync=true&memo_mib=N]` — the on-disk default, keeping up to N MiB
//!   (default 64, 0: none) of entry metadata in memory for hits; `&fdb_limits=true` enforces
//!   FoundationDB's limits on it ([`super::fdb_limits`]), and `&maybe_committed=P` (with
//!   `&seed=N`) also injects "maybe committed" into a fraction P of commits: for tests;
//! - `postgres://user:pass@host:port/db[?pool_size=N&table=NAME&…]` — PostgreSQL; every other
//!   query parameter is passed on to the driver;
//! - `fdb:[<cluster-file>]` — FoundationDB (cargo feature `fdb`), default cluster file if empty;
//! - `memory:` — a new, empty store in this process, gone when it exits (tests, experiments).

use crate::error::Error;
use std::path::PathBuf;
use std::str::FromStr;

/// The FoundationDB-limits mode of an embedded URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FdbLimitsParams {
    /// Commits reported "maybe committed", per million.
    pub maybe_committed_ppm: u32,
    /// Seed of the injected faults.
    pub seed: u64,
}

impl FdbLimitsParams {
    /// The wrapper's configuration.
    pub fn config(&self) -> super::fdb_limits::FdbLimitsConfig {
        super::fdb_limits::FdbLimitsConfig {
            maybe_committed: f64::from(self.maybe_committed_ppm) / 1_000_000.0,
            seed: self.seed,
            ..Default::default()
        }
    }
}

/// A parsed store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// The embedded on-disk store.
    Embedded {
        /// Its directory (created if missing).
        dir: PathBuf,
        /// Sync the journal to disk on every commit.
        fsync: bool,
        /// FoundationDB's limits enforced on it (`fdb_limits=true`), for tests.
        fdb_limits: Option<FdbLimitsParams>,
        /// Bytes of entry metadata kept in memory (`memo_mib=`, default 64; 0: none), so hits
        /// read no snapshot ([`super::memo`]).
        memo_bytes: usize,
    },
    /// PostgreSQL.
    Postgres {
        /// The connection URL handed to the driver, without Cairn's own parameters.
        conninfo: String,
        /// Connections in the pool.
        pool_size: usize,
        /// The key/value table (created on first connect).
        table: String,
    },
    /// In this process's memory.
    Memory,
    /// FoundationDB.
    Fdb {
        /// The cluster file; `None` for the client's default.
        cluster_file: Option<PathBuf>,
        /// `?max_watches=N`: FoundationDB's cap on outstanding watches (default 10,000).
        max_watches: Option<usize>,
    },
}

/// `url` with any password replaced by `***`, fit for errors and logs.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &authority[..colon],
            &rest[at..]
        ),
        _ => url.to_string(),
    }
}

fn bad(url: &str, reason: impl Into<String>) -> Error {
    Error::BadUrl {
        url: redact(url),
        reason: reason.into(),
    }
}

fn parse_bool(url: &str, name: &str, v: &str) -> Result<bool, Error> {
    match v {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(bad(url, format!("{name}={v:?} is not a boolean"))),
    }
}

fn is_sql_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 48
}

impl FromStr for StoreUrl {
    type Err = Error;

    fn from_str(url: &str) -> Result<Self, Error> {
        if let Some(rest) = url.strip_prefix("embedded:") {
            let (dir, query) = rest.split_once('?').unwrap_or((rest, ""));
            if dir.is_empty() {
                return Err(bad(
                    url,
                    "embedded: needs a directory, e.g. embedded:./cairn-data",
                ));
            }
            let mut fsync = false;
            let mut limits = false;
            let mut memo_bytes = super::memo::DEFAULT_BUDGET;
            let mut params = FdbLimitsParams::default();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                match pair.split_once('=') {
                    Some(("fsync", v)) => fsync = parse_bool(url, "fsync", v)?,
                    Some(("fdb_limits", v)) => limits = parse_bool(url, "fdb_limits", v)?,
                    Some(("memo_mib", v)) => {
                        let mib: usize =
                            v.parse().ok().filter(|m| *m <= 1 << 20).ok_or_else(|| {
                                bad(url, format!("memo_mib {v:?} is not a size in MiB"))
                            })?;
                        memo_bytes = mib << 20;
                    }
                    Some(("maybe_committed", v)) => {
                        let p: f64 = v
                            .parse()
                            .ok()
                            .filter(|p: &f64| (0.0..=1.0).contains(p))
                            .ok_or_else(|| {
                                bad(url, format!("maybe_committed {v:?} is not in [0, 1]"))
                            })?;
                        params.maybe_committed_ppm = (p * 1_000_000.0).round() as u32;
                    }
                    Some(("seed", v)) => {
                        params.seed = v
                            .parse()
                            .map_err(|e| bad(url, format!("seed {v:?}: {e}")))?;
                    }
                    _ => {
                        return Err(bad(
                            url,
                            format!(
                                "unknown parameter {pair:?} (known: fsync, memo_mib, \
                                 fdb_limits, maybe_committed, seed)"
                            ),
                        ));
                    }
                }
            }
            if !limits && params != FdbLimitsParams::default() {
                return Err(bad(url, "maybe_committed and seed need fdb_limits=true"));
            }
            return Ok(StoreUrl::Embedded {
                dir: PathBuf::from(dir),
                fsync,
                fdb_limits: limits.then_some(params),
                memo_bytes,
            });
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let (base, query) = url.split_once('?').unwrap_or((url, ""));
            let mut pool_size = 8;
            let mut table = "cairn_kv".to_string();
            let mut passed = Vec::new();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                match pair.split_once('=') {
                    Some(("pool_size", v)) => {
                        pool_size = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                            bad(url, format!("pool_size={v:?} is not a positive number"))
                        })?;
                    }
                    Some(("table", v)) => {
                        if !is_sql_identifier(v) {
                            return Err(bad(
                                url,
                                format!("table={v:?} must be a lower-case SQL identifier"),
                            ));
                        }
                        table = v.to_string();
                    }
                    _ => passed.push(pair),
                }
            }
            let conninfo = if passed.is_empty() {
                base.to_string()
            } else {
                format!("{base}?{}", passed.join("&"))
            };
            conninfo
                .parse::<tokio_postgres::Config>()
                .map_err(|e| bad(url, e.to_string()))?;
            return Ok(StoreUrl::Postgres {
                conninfo,
                pool_size,
                table,
            });
        }
        if let Some(rest) = url.strip_prefix("memory:") {
            if !rest.is_empty() {
                return Err(bad(url, "memory: takes no directory or parameters"));
            }
            return Ok(StoreUrl::Memory);
        }
        if let Some(rest) = url.strip_prefix("fdb:") {
            let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
            let mut max_watches = None;
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                match pair.split_once('=') {
                    Some(("max_watches", n)) => {
                        max_watches = Some(
                            n.parse::<usize>()
                                .map_err(|e| bad(url, format!("max_watches {n:?}: {e}")))?,
                        );
                    }
                    _ => {
                        return Err(bad(
                            url,
                            format!("unknown parameter {pair:?}; fdb: URLs take max_watches=N"),
                        ));
                    }
                }
            }
            return Ok(StoreUrl::Fdb {
                cluster_file: (!path.is_empty()).then(|| PathBuf::from(path)),
                max_watches,
            });
        }
        Err(bad(
            url,
            "unknown backend; expected embedded:<dir>, postgres://…, fdb:<cluster-file> or memory:",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_backend() {
        assert_eq!(
            "embedded:/tmp/x?fsync=true".parse::<StoreUrl>().unwrap(),
            StoreUrl::Embedded {
                dir: "/tmp/x".into(),
                fsync: true,
                fdb_limits: None,
                memo_bytes: 64 << 20,
            }
        );
        assert_eq!(
            "embedded:/tmp/x?fdb_limits=true&maybe_committed=0.01&seed=3&memo_mib=0"
                .parse::<StoreUrl>()
                .unwrap(),
            StoreUrl::Embedded {
                dir: "/tmp/x".into(),
                fsync: false,
                fdb_limits: Some(FdbLimitsParams {
                    maybe_committed_ppm: 10_000,
                    seed: 3,
                }),
                memo_bytes: 0,
            }
        );
        assert!(
            "embedded:/tmp/x?maybe_committed=0.5"
                .parse::<StoreUrl>()
                .is_err()
        );
        let err = "embedded:/tmp/x?memo_mib=lots"
            .parse::<StoreUrl>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("memo_mib \"lots\""), "{err}");
        assert_eq!(
            "postgres://u:p@127.0.0.1:5432/db?pool_size=3&table=t1&connect_timeout=2"
                .parse::<StoreUrl>()
                .unwrap(),
            StoreUrl::Postgres {
                conninfo: "postgres://u:p@127.0.0.1:5432/db?connect_timeout=2".into(),
                pool_size: 3,
                table: "t1".into()
            }
        );
        assert_eq!(
            "fdb:/etc/fdb.cluster".parse::<StoreUrl>().unwrap(),
            StoreUrl::Fdb {
                cluster_file: Some("/etc/fdb.cluster".into()),
                max_watches: None,
            }
        );
        assert_eq!(
            "fdb:/etc/fdb.cluster?max_watches=20000"
                .parse::<StoreUrl>()
                .unwrap(),
            StoreUrl::Fdb {
                cluster_file: Some("/etc/fdb.cluster".into()),
                max_watches: Some(20_000),
            }
        );
        assert!(
            "fdb:/x?watches=1"
                .parse::<StoreUrl>()
                .unwrap_err()
                .to_string()
                .contains("max_watches")
        );
    }

    #[test]
    fn bad_urls_name_the_problem_and_hide_passwords() {
        let err = "redis://x".parse::<StoreUrl>().unwrap_err().to_string();
        assert!(
            err.contains("redis://x") && err.contains("unknown backend"),
            "{err}"
        );
        let err = "postgres://u:secret@h/db?table=Bad;drop"
            .parse::<StoreUrl>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("table=") && !err.contains("secret"), "{err}");
        let err = "embedded:".parse::<StoreUrl>().unwrap_err().to_string();
        assert!(err.contains("needs a directory"), "{err}");
        let err = "embedded:/x?fsync=maybe"
            .parse::<StoreUrl>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("fsync"), "{err}");
    }
}
