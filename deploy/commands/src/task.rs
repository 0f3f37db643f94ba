//! A command task is an ordinary Cairn [`Task`]: its calls go through the same resolve, lease,
//! dispatch, commit and records path as a Rust task's. What differs is its input (files by
//! content digest, environment values, tool digests) and its body (a process in a sandbox).

use crate::decl::{InputType, TaskDecl, inside};
use crate::exec;
use crate::hash::{FileHasher, Hashed};
use cairn_engine::blobs::{BlobDigest, Blobs};
use cairn_engine::catalog::{KeyInputs, TaskSignature, TypeDesc};
use cairn_engine::store::AnyStore;
use cairn_engine::task::{Task, TaskError, TaskOptions, TaskSpec};
use cairn_engine::{Error, Result};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::watch;

/// A file by content: where it sits (relative to the workspace or sandbox root), its size, its
/// exec bit and its BLAKE3 digest. The bytes are a blob in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// Path relative to the root, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Executable by its owner.
    pub exec: bool,
    /// BLAKE3 of its content.
    pub digest: BlobDigest,
}

/// The value of one input of a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArgValue {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// One file.
    File(FileRef),
    /// Several files (a `file[]` or `glob` input), sorted by path.
    Files(Vec<FileRef>),
}

/// The input of a command task's call: its arguments, plus the environment and tools as the
/// caller's node saw them, so they are part of the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandInput {
    /// Arguments by input name.
    pub args: BTreeMap<String, ArgValue>,
    /// Declared environment variables (`None`: an `env_pass` variable that is not set).
    pub env: BTreeMap<String, Option<String>>,
    /// Digest of each declared tool's executable.
    pub tools: BTreeMap<String, BlobDigest>,
}

/// What a command produced. Files are blobs in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutput {
    /// Its exit code (one of the task's success codes).
    pub exit_code: i32,
    /// Standard output.
    pub stdout: FileRef,
    /// Standard error.
    pub stderr: FileRef,
    /// Declared output files by name.
    pub files: BTreeMap<String, FileRef>,
    /// The files of each list input (`file[]`, `glob`) it was made from: a blob of their
    /// [`FileRef`]s as JSON, sorted by path, so `explain` lists which files changed since.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub manifests: BTreeMap<String, BlobDigest>,
}

/// What every command task of one tasks file shares: settings, the file hasher, and the blob
/// store once the node has opened it.
pub struct Shared {
    /// `[settings]`.
    pub settings: crate::decl::Settings,
    /// Digests of files, memoised.
    pub hasher: Arc<FileHasher>,
    blobs: watch::Sender<Option<Blobs<AnyStore>>>,
}

impl Shared {
    pub(crate) fn new(settings: crate::decl::Settings) -> Arc<Shared> {
        Arc::new(Shared {
            hasher: FileHasher::with_memo_file(settings.digest_memo.clone()),
            settings,
            blobs: watch::channel(None).0,
        })
    }

    /// Gives the tasks the node's store (for blobs).
    pub fn attach(&self, blobs: Blobs<AnyStore>) {
        self.blobs.send_replace(Some(blobs));
    }

    /// The blob store, once attached (calls wait for it: a job can reach a worker while its node
    /// is still starting).
    pub async fn blobs(&self) -> Blobs<AnyStore> {
        let mut rx = self.blobs.subscribe();
        let got = rx.wait_for(Option::is_some).await;
        got.ok()
            .and_then(|b| b.clone())
            .expect("the sender lives as long as the tasks")
    }

    /// The absolute path of workspace path `path`.
    pub fn in_workspace(&self, path: &str) -> PathBuf {
        self.settings.workspace.join(path)
    }

    /// A workspace file by content: hashed (memoised), checked against the size limit. With
    /// `upload`, stored as a blob too, so a worker on another node can materialise it.
    pub async fn file_ref(&self, path: &str, blobs: Option<&Blobs<AnyStore>>) -> Result<FileRef> {
        let file = self.workspace_path(path)?;
        let hashed =
            self.hasher
                .hash(file.clone())
                .await
                .map_err(|reason| Error::InvalidInput {
                    what: format!("file {path:?}"),
                    reason,
                })?;
        self.check_size(path, &hashed)?;
        if let Some(blobs) = blobs {
            let reader = tokio::fs::File::open(&file).await.map_err(|e| Error::Io {
                what: format!("opening {path}"),
                detail: e.to_string(),
            })?;
            blobs
                .put_stream(&hashed.digest, &format!("file {path}"), reader)
                .await?;
        }
        Ok(to_ref(path, hashed))
    }

    /// [`Shared::file_ref`] without upload, on this thread (for `explain`).
    pub fn file_ref_blocking(&self, path: &str) -> Result<FileRef> {
        let file = self.workspace_path(path)?;
        let hashed = self
            .hasher
            .hash_blocking(&file)
            .map_err(|reason| Error::InvalidInput {
                what: format!("file {path:?}"),
                reason,
            })?;
        self.check_size(path, &hashed)?;
        Ok(to_ref(path, hashed))
    }

    fn workspace_path(&self, path: &str) -> Result<PathBuf> {
        if !inside(path) {
            return Err(Error::InvalidInput {
                what: format!("file {path:?}"),
                reason: "not a relative path inside the workspace".into(),
            });
        }
        Ok(self.in_workspace(path))
    }

    fn check_size(&self, path: &str, hashed: &Hashed) -> Result<()> {
        if hashed.size > self.settings.max_file_bytes {
            return Err(Error::InvalidInput {
                what: format!("file {path:?}"),
                reason: format!(
                    "{} bytes, over the tasks file's max_file_bytes of {}",
                    hashed.size, self.settings.max_file_bytes
                ),
            });
        }
        Ok(())
    }

    /// The workspace files matching `pattern`, sorted.
    pub fn glob(&self, pattern: &str) -> Result<Vec<String>> {
        let bad = |reason: String| Error::InvalidInput {
            what: format!("glob {pattern:?}"),
            reason,
        };
        if !inside(pattern) {
            return Err(bad(
                "a glob is relative to the workspace, without '..'".into()
            ));
        }
        let root = &self.settings.workspace;
        let full = root.join(pattern);
        let paths = glob::glob(&full.to_string_lossy()).map_err(|e| bad(e.to_string()))?;
        let mut out = Vec::new();
        for p in paths {
            let p = p.map_err(|e| bad(e.to_string()))?;
            if !p.is_file() {
                continue;
            }
            let rel = p.strip_prefix(root).map_err(|e| bad(e.to_string()))?;
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
        out.sort();
        Ok(out)
    }
}

fn to_ref(path: &str, h: Hashed) -> FileRef {
    FileRef {
        path: path.to_string(),
        size: h.size,
        exec: h.exec,
        digest: h.digest,
    }
}

/// A command task declared in a tasks file.
#[derive(Clone)]
pub struct CommandTask {
    pub(crate) decl: Arc<TaskDecl>,
    spec: &'static TaskSpec,
    pub(crate) shared: Arc<Shared>,
}

impl CommandTask {
    pub(crate) fn new(decl: TaskDecl, shared: Arc<Shared>) -> CommandTask {
        let spec: &'static TaskSpec = Box::leak(Box::new(spec_of(&decl)));
        CommandTask {
            decl: Arc::new(decl),
            spec,
            shared,
        }
    }

    /// Its declaration.
    pub fn decl(&self) -> &TaskDecl {
        &self.decl
    }

    /// The names of the key components of input `name` of type `ty`.
    fn components(name: &str, ty: InputType) -> Vec<String> {
        match ty {
            InputType::File => vec![name.to_string(), format!("{name}.content")],
            _ => vec![name.to_string()],
        }
    }

    fn env_names(&self) -> impl Iterator<Item = &String> {
        self.decl.env.keys().chain(self.decl.env_pass.iter())
    }

    /// The environment values this node gives a call: the declared values, and the passed
    /// variables as they are set here.
    pub fn env_values(&self) -> BTreeMap<String, Option<String>> {
        let mut env: BTreeMap<String, Option<String>> = self
            .decl
            .env
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        for k in &self.decl.env_pass {
            env.insert(k.clone(), std::env::var(k).ok());
        }
        env
    }

    /// The digests of this node's tools.
    pub async fn tool_digests(&self) -> Result<BTreeMap<String, BlobDigest>> {
        let mut out = BTreeMap::new();
        for (name, path) in &self.decl.tools {
            let h = self
                .shared
                .hasher
                .hash(path.clone())
                .await
                .map_err(|reason| Error::InvalidInput {
                    what: format!("tool {name:?}"),
                    reason,
                })?;
            out.insert(name.clone(), h.digest);
        }
        Ok(out)
    }

    /// A call's input from its arguments, with this node's environment and tools.
    pub async fn input(&self, args: BTreeMap<String, ArgValue>) -> Result<CommandInput> {
        Ok(CommandInput {
            args,
            env: self.env_values(),
            tools: self.tool_digests().await?,
        })
    }
}

fn spec_of(decl: &TaskDecl) -> TaskSpec {
    let argv: Vec<String> = decl.argv.iter().map(|t| t.source()).collect();
    let outputs: Vec<String> = decl
        .outputs
        .iter()
        .map(|(n, t)| format!("{n}={}", t.source()))
        .collect();
    let env: Vec<&String> = decl.env.keys().chain(decl.env_pass.iter()).collect();
    let described = format!(
        "command{{argv:{argv:?},outputs:{outputs:?},env:{env:?},tools:{:?},timeout_ms:{:?},success:{:?},workdir:{:?},os:{},arch:{}}}",
        decl.tools.keys().collect::<Vec<_>>(),
        decl.timeout.map(|d| d.as_millis()),
        decl.success_exit_codes,
        decl.workdir,
        std::env::consts::OS,
        std::env::consts::ARCH,
    );
    let mut sig = TaskSignature::new(decl.name.clone(), TypeDesc::named(described));
    for (n, ty) in &decl.inputs {
        for c in CommandTask::components(n, *ty) {
            let what = if c.ends_with(".content") {
                "file content".to_string()
            } else {
                ty.name().to_string()
            };
            sig = sig.input(c, TypeDesc::named(what));
        }
    }
    for k in env {
        sig = sig.input(format!("env.{k}"), TypeDesc::named("env"));
    }
    for t in decl.tools.keys() {
        sig = sig.input(format!("tool.{t}"), TypeDesc::named("tool"));
    }
    let mut ignore = Vec::new();
    for n in &decl.cache_ignore_inputs {
        ignore.extend(CommandTask::components(n, decl.inputs[n]));
    }
    TaskSpec::new(
        sig,
        TaskOptions {
            cache: decl.cache,
            cache_version: decl.cache_version.clone(),
            ignore_inputs: ignore,
            max_age: decl.max_age,
            retries: decl.retries,
            timeout: decl.timeout,
            ..TaskOptions::default()
        },
    )
}

fn manifest(files: &[FileRef]) -> Vec<(&str, u64, bool, String)> {
    let mut m: Vec<_> = files
        .iter()
        .map(|f| (f.path.as_str(), f.size, f.exec, f.digest.to_string()))
        .collect();
    m.sort();
    m
}

impl Task for CommandTask {
    type Input = CommandInput;
    type Output = CommandOutput;

    fn spec(&self) -> &'static TaskSpec {
        self.spec
    }

    fn key_inputs(&self, input: &CommandInput) -> Result<KeyInputs> {
        let mut k = KeyInputs::new();
        for (n, ty) in &self.decl.inputs {
            let bad = |reason: String| Error::InvalidInput {
                what: format!("input {n:?} of task {:?}", self.decl.name),
                reason,
            };
            match (ty, input.args.get(n)) {
                (InputType::File, Some(ArgValue::File(f))) => {
                    k.add(n, &f.path)?;
                    k.add(
                        &format!("{n}.content"),
                        &(f.size, f.exec, f.digest.to_string()),
                    )?;
                }
                (InputType::Files | InputType::Glob, Some(ArgValue::Files(fs))) => {
                    k.add(n, &manifest(fs))?;
                }
                (InputType::Files | InputType::Glob, Some(ArgValue::File(f))) => {
                    k.add(n, &manifest(std::slice::from_ref(f)))?;
                }
                (InputType::String, Some(ArgValue::Str(s))) => {
                    k.add(n, s)?;
                }
                (InputType::String, Some(ArgValue::Int(i))) => {
                    k.add(n, &i.to_string())?;
                }
                (InputType::Int, Some(ArgValue::Int(i))) => {
                    k.add(n, i)?;
                }
                (_, None) => return Err(bad("missing".into())),
                (ty, Some(v)) => {
                    return Err(bad(format!("expected a {}, got {v:?}", ty.name())));
                }
            }
        }
        for name in self.env_names() {
            let value = input.env.get(name).cloned().flatten();
            k.add(&format!("env.{name}"), &value)?;
        }
        for name in self.decl.tools.keys() {
            let d = input.tools.get(name).ok_or_else(|| Error::InvalidInput {
                what: format!("tool {name:?} of task {:?}", self.decl.name),
                reason: "the call does not carry its digest".into(),
            })?;
            k.add(&format!("tool.{name}"), &d.to_string())?;
        }
        Ok(k)
    }

    /// `{"src": "src/a.c", "srcs": "src/*.c", "n": 3}`: files are read from this node's
    /// workspace and hashed; environment and tools are this node's.
    fn input_from_json(&self, json: &serde_json::Value) -> Result<CommandInput> {
        let serde_json::Value::Object(fields) = json else {
            return Err(Error::InvalidInput {
                what: format!("input of task {:?}", self.decl.name),
                reason: "expected an object of the inputs by name".into(),
            });
        };
        let mut args = BTreeMap::new();
        for (n, ty) in &self.decl.inputs {
            let bad = |reason: &str| Error::InvalidInput {
                what: format!("input {n:?} of task {:?}", self.decl.name),
                reason: reason.to_string(),
            };
            let v = fields.get(n).ok_or_else(|| bad("missing"))?;
            let value = match ty {
                InputType::String => ArgValue::Str(
                    v.as_str()
                        .ok_or_else(|| bad("expected a string"))?
                        .to_string(),
                ),
                InputType::Int => {
                    ArgValue::Int(v.as_i64().ok_or_else(|| bad("expected an integer"))?)
                }
                InputType::File => ArgValue::File(
                    self.shared
                        .file_ref_blocking(v.as_str().ok_or_else(|| bad("expected a path"))?)?,
                ),
                InputType::Files | InputType::Glob => {
                    let paths = paths_of(&self.shared, v)
                        .map_err(|_| bad("expected a glob pattern or an array of paths"))?;
                    ArgValue::Files(
                        paths
                            .iter()
                            .map(|p| self.shared.file_ref_blocking(p))
                            .collect::<Result<_>>()?,
                    )
                }
            };
            args.insert(n.clone(), value);
        }
        let mut tools = BTreeMap::new();
        for (name, path) in &self.decl.tools {
            let h =
                self.shared
                    .hasher
                    .hash_blocking(path)
                    .map_err(|reason| Error::InvalidInput {
                        what: format!("tool {name:?}"),
                        reason,
                    })?;
            tools.insert(name.clone(), h.digest);
        }
        Ok(CommandInput {
            args,
            env: self.env_values(),
            tools,
        })
    }

    fn blobs(output: &CommandOutput) -> Vec<BlobDigest> {
        let mut blobs: Vec<BlobDigest> = [&output.stdout, &output.stderr]
            .into_iter()
            .chain(output.files.values())
            .map(|f| f.digest)
            .chain(output.manifests.values().copied())
            .collect();
        blobs.sort();
        blobs.dedup();
        blobs
    }

    fn describe_change<'a>(
        &'a self,
        name: &'a str,
        called: &'a CommandInput,
        stored: &'a CommandOutput,
    ) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            if let Some(base) = name.strip_suffix(".content")
                && let Some(ArgValue::File(f)) = called.args.get(base)
            {
                return Some(format!("file {} has other content", f.path));
            }
            let now = match called.args.get(name)? {
                ArgValue::Files(fs) => fs.clone(),
                ArgValue::File(f) => vec![f.clone()],
                _ => return None,
            };
            let manifest = stored.manifests.get(name)?;
            let bytes = self.shared.blobs().await.get(manifest).await.ok()?;
            let then: Vec<FileRef> = serde_json::from_slice(&bytes).ok()?;
            Some(describe_files(&then, &now))
        })
    }

    fn invoke(
        &self,
        input: CommandInput,
    ) -> BoxFuture<'static, std::result::Result<CommandOutput, TaskError>> {
        let me = self.clone();
        Box::pin(async move { exec::run(&me, input).await })
    }
}

/// Most files [`describe_files`] names.
const DESCRIBED_FILES: usize = 10;

/// How the files of a list input differ between `then` and `now`: each path added, removed,
/// with other content or another exec bit, sorted, the first [`DESCRIBED_FILES`] named.
pub(crate) fn describe_files(then: &[FileRef], now: &[FileRef]) -> String {
    let by_path = |fs: &[FileRef]| -> BTreeMap<String, FileRef> {
        fs.iter().map(|f| (f.path.clone(), f.clone())).collect()
    };
    let (then, now) = (by_path(then), by_path(now));
    let mut paths: Vec<&String> = then.keys().chain(now.keys()).collect();
    paths.sort();
    paths.dedup();
    let changes: Vec<String> = paths
        .into_iter()
        .filter_map(|p| match (then.get(p), now.get(p)) {
            (None, Some(_)) => Some(format!("{p} added")),
            (Some(_), None) => Some(format!("{p} removed")),
            (Some(a), Some(b)) if a.digest != b.digest => Some(format!("{p} has other content")),
            (Some(a), Some(b)) if a.exec != b.exec => Some(format!("{p} changed its exec bit")),
            _ => None,
        })
        .collect();
    if changes.is_empty() {
        return "the same files in another order".into();
    }
    let mut text = changes
        .iter()
        .take(DESCRIBED_FILES)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if changes.len() > DESCRIBED_FILES {
        text.push_str(&format!(" and {} more", changes.len() - DESCRIBED_FILES));
    }
    match changes.len() {
        1 => format!("1 file differs: {text}"),
        n => format!("{n} files differ: {text}"),
    }
}

/// A JSON value naming files: a glob pattern, or an array of paths.
pub(crate) fn paths_of(shared: &Shared, v: &serde_json::Value) -> Result<Vec<String>> {
    match v {
        serde_json::Value::String(pattern) => shared.glob(pattern),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| Error::InvalidInput {
                        what: "file list".into(),
                        reason: "expected an array of paths".into(),
                    })
            })
            .collect(),
        _ => Err(Error::InvalidInput {
            what: "file list".into(),
            reason: "expected a glob pattern or an array of paths".into(),
        }),
    }
}

/// The path a file reference has under `root`.
pub(crate) fn under(root: &Path, f: &FileRef) -> PathBuf {
    root.join(&f.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &str, exec: bool) -> FileRef {
        FileRef {
            path: path.into(),
            size: content.len() as u64,
            exec,
            digest: BlobDigest::of(content.as_bytes()),
        }
    }

    #[test]
    fn a_list_input_names_the_files_added_removed_and_changed() {
        let then = [
            file("a.c", "a", false),
            file("b.c", "b", false),
            file("run.sh", "x", false),
        ];
        let now = [
            file("run.sh", "x", true),
            file("c.c", "c", false),
            file("a.c", "A", false),
        ];
        assert_eq!(
            describe_files(&then, &now),
            "4 files differ: a.c has other content, b.c removed, c.c added, run.sh changed its exec bit"
        );
        assert_eq!(
            describe_files(&then, &then),
            "the same files in another order"
        );
        let many: Vec<FileRef> = (0..25)
            .map(|i| file(&format!("f{i:02}.c"), "x", false))
            .collect();
        let text = describe_files(&[], &many);
        assert!(text.starts_with("25 files differ: f00.c added, "), "{text}");
        assert!(text.ends_with("f09.c added and 15 more"), "{text}");
    }

    #[test]
    fn an_output_refers_to_its_files_streams_and_manifests_once_each() {
        let same = file("out", "same", false);
        let output = CommandOutput {
            exit_code: 0,
            stdout: same.clone(),
            stderr: file("stderr", "", false),
            files: [("obj".to_string(), same.clone())].into(),
            manifests: [("srcs".to_string(), BlobDigest::of(b"[]"))].into(),
        };
        let blobs = <CommandTask as Task>::blobs(&output);
        assert_eq!(blobs.len(), 3, "{blobs:?}");
        assert!(blobs.contains(&same.digest) && blobs.contains(&BlobDigest::of(b"[]")));
    }
}
