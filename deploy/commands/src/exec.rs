//! Running one command: a fresh sandbox holding exactly the declared input files (copied from
//! the workspace when it has the same bytes, else fetched from the store by digest), a cleared
//! environment plus the declared variables, its own process group (killed whole on timeout,
//! cancellation or exit), and its declared outputs stored as blobs.

use crate::decl::inside;
use crate::task::{ArgValue, CommandInput, CommandOutput, CommandTask, FileRef, under};
use crate::template::{Part, Template};
use cairn_engine::blobs::Blobs;
use cairn_engine::store::AnyStore;
use cairn_engine::task::TaskError;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::AsyncReadExt;

fn failed(message: impl Into<String>) -> TaskError {
    TaskError::Failed {
        message: message.into(),
    }
}

fn engine(e: impl std::fmt::Display) -> TaskError {
    TaskError::Engine {
        detail: e.to_string(),
    }
}

/// A sandbox directory, removed when dropped.
struct Sandbox(PathBuf);

impl Sandbox {
    fn new(root: &Path) -> Result<Sandbox, TaskError> {
        let name = format!("{:016x}", rand::random::<u64>());
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| engine(format!("creating sandbox {}: {e}", dir.display())))?;
        Ok(Sandbox(dir))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The command's process group, killed when dropped: on timeout and cancellation (the worker
/// drops the call's future) and after the command exits (nothing it started outlives it).
struct Group(i32);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Runs `task` on `input`.
pub(crate) async fn run(
    task: &CommandTask,
    input: CommandInput,
) -> Result<CommandOutput, TaskError> {
    let decl = &task.decl;
    let shared = &task.shared;
    let blobs = shared.blobs().await;
    // The tools must be the ones the caller's key names.
    let here = task
        .tool_digests()
        .await
        .map_err(|e| failed(e.to_string()))?;
    for (name, want) in &input.tools {
        if here.get(name) != Some(want) {
            return Err(failed(format!(
                "tool {name:?} ({}) on this node is not the one the caller hashed (digest {}, the caller's {want}): every node must have the same tools",
                decl.tools
                    .get(name)
                    .map_or("?".into(), |p| p.display().to_string()),
                here.get(name).map_or("missing".into(), |d| d.to_string()),
            )));
        }
    }
    let sandbox = Sandbox::new(&shared.settings.sandbox)?;
    for value in input.args.values() {
        match value {
            ArgValue::File(f) => materialise(task, &blobs, &sandbox.0, f).await?,
            ArgValue::Files(fs) => {
                for f in fs {
                    materialise(task, &blobs, &sandbox.0, f).await?;
                }
            }
            _ => {}
        }
    }
    let mut outputs: BTreeMap<String, String> = BTreeMap::new();
    for (name, tpl) in &decl.outputs {
        let path = render_one(tpl, &input.args, &outputs);
        if !inside(&path) {
            return Err(failed(format!(
                "output {name:?} resolves to {path:?}, outside the sandbox"
            )));
        }
        if let Some(parent) = Path::new(&path).parent() {
            std::fs::create_dir_all(sandbox.0.join(parent)).map_err(engine)?;
        }
        outputs.insert(name.clone(), path);
    }
    let mut argv: Vec<String> = Vec::new();
    for tpl in &decl.argv {
        argv.extend(render_arg(tpl, &input.args, &outputs));
    }
    let program = decl
        .tools
        .get(&argv[0])
        .cloned()
        .ok_or_else(|| failed(format!("tool {:?} is not declared", argv[0])))?;
    let workdir = sandbox.0.join(&decl.workdir);
    std::fs::create_dir_all(&workdir).map_err(engine)?;
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(
            input
                .env
                .iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| (k, v))),
        )
        .current_dir(&workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| failed(format!("starting {}: {e}", program.display())))?;
    let _group = child.id().map(|pid| Group(pid as i32));
    let limit = shared.settings.max_output_bytes;
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let (out, err, status) = tokio::join!(
        read_limited(stdout, limit),
        read_limited(stderr, limit),
        child.wait()
    );
    let status = status.map_err(|e| failed(format!("waiting for {}: {e}", program.display())))?;
    let (out, out_over) = out.map_err(engine)?;
    let (err, err_over) = err.map_err(engine)?;
    for (stream, over) in [("stdout", out_over), ("stderr", err_over)] {
        if over {
            return Err(failed(format!(
                "the command wrote more than max_output_bytes ({limit} bytes) to {stream}"
            )));
        }
    }
    let Some(code) = status.code() else {
        return Err(failed(format!(
            "the command was killed by a signal ({status}); stderr: {}",
            tail(&err)
        )));
    };
    if !decl.success_exit_codes.contains(&code) {
        return Err(failed(format!(
            "exit code {code} (success: {:?}); stderr: {}",
            decl.success_exit_codes,
            tail(&err)
        )));
    }
    let mut files = BTreeMap::new();
    for (name, path) in &outputs {
        let full = sandbox.0.join(path);
        let meta = std::fs::symlink_metadata(&full).map_err(|_| {
            failed(format!(
                "declared output {name:?} ({path}) was not created by the command"
            ))
        })?;
        if !meta.is_file() {
            return Err(failed(format!(
                "declared output {name:?} ({path}) is not a regular file"
            )));
        }
        if meta.len() > shared.settings.max_file_bytes {
            return Err(failed(format!(
                "output {name:?} ({path}) is {} bytes, over max_file_bytes ({})",
                meta.len(),
                shared.settings.max_file_bytes
            )));
        }
        let hashed = shared.hasher.hash(full.clone()).await.map_err(failed)?;
        let reader = tokio::fs::File::open(&full).await.map_err(engine)?;
        blobs
            .put_stream(&hashed.digest, &format!("output {path}"), reader)
            .await
            .map_err(engine)?;
        files.insert(
            name.clone(),
            FileRef {
                path: path.clone(),
                size: hashed.size,
                exec: hashed.exec,
                digest: hashed.digest,
            },
        );
    }
    let stream = |name: &str, bytes: Vec<u8>| {
        let blobs = blobs.clone();
        let name = name.to_string();
        async move {
            let size = bytes.len() as u64;
            let digest = blobs.put(&bytes).await.map_err(engine)?;
            Ok::<_, TaskError>(FileRef {
                path: name,
                size,
                exec: false,
                digest,
            })
        }
    };
    // The files of each list input, kept for `explain`.
    let mut manifests = BTreeMap::new();
    for (name, value) in &input.args {
        if let ArgValue::Files(fs) = value {
            let mut fs = fs.clone();
            fs.sort_by(|a, b| a.path.cmp(&b.path));
            let json = serde_json::to_vec(&fs).map_err(|e| failed(e.to_string()))?;
            manifests.insert(name.clone(), blobs.put(&json).await.map_err(engine)?);
        }
    }
    Ok(CommandOutput {
        exit_code: code,
        stdout: stream("stdout", out).await?,
        stderr: stream("stderr", err).await?,
        files,
        manifests,
    })
}

async fn read_limited(
    pipe: impl tokio::io::AsyncRead + Unpin,
    limit: u64,
) -> std::io::Result<(Vec<u8>, bool)> {
    let mut buf = Vec::new();
    pipe.take(limit + 1).read_to_end(&mut buf).await?;
    let over = buf.len() as u64 > limit;
    buf.truncate(limit as usize);
    Ok((buf, over))
}

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end();
    let start = text.char_indices().rev().nth(2000).map_or(0, |(i, _)| i);
    if text.is_empty() {
        "(empty)".into()
    } else {
        text[start..].to_string()
    }
}

async fn materialise(
    task: &CommandTask,
    blobs: &Blobs<AnyStore>,
    root: &Path,
    f: &FileRef,
) -> Result<(), TaskError> {
    if !inside(&f.path) {
        return Err(failed(format!(
            "input file {:?} is outside the sandbox",
            f.path
        )));
    }
    let target = under(root, f);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(engine)?;
    }
    let local = task.shared.in_workspace(&f.path);
    let same_locally = match task.shared.hasher.hash(local.clone()).await {
        Ok(h) => h.digest == f.digest,
        Err(_) => false,
    };
    if same_locally {
        tokio::fs::copy(&local, &target).await.map_err(engine)?;
    } else {
        let file = tokio::fs::File::create(&target).await.map_err(engine)?;
        blobs
            .write_to(&f.digest, file)
            .await
            .map_err(|e| failed(format!("input file {}: {e}", f.path)))?;
    }
    let mode = if f.exec { 0o755 } else { 0o644 };
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode)).map_err(engine)?;
    Ok(())
}

fn value_text(v: &ArgValue) -> String {
    match v {
        ArgValue::Str(s) => s.clone(),
        ArgValue::Int(i) => i.to_string(),
        ArgValue::File(f) => f.path.clone(),
        ArgValue::Files(fs) => fs
            .iter()
            .map(|f| f.path.as_str())
            .collect::<Vec<_>>()
            .join(" "),
    }
}

fn lookup(
    r: &str,
    args: &BTreeMap<String, ArgValue>,
    outputs: &BTreeMap<String, String>,
) -> String {
    match r.strip_prefix("outputs.") {
        Some(o) => outputs.get(o).cloned().unwrap_or_default(),
        None => args.get(r).map(value_text).unwrap_or_default(),
    }
}

fn render_one(
    tpl: &Template,
    args: &BTreeMap<String, ArgValue>,
    outputs: &BTreeMap<String, String>,
) -> String {
    tpl.render(|r| lookup(r, args, outputs))
}

/// One argv element, or several when it is exactly a reference to a list of files.
fn render_arg(
    tpl: &Template,
    args: &BTreeMap<String, ArgValue>,
    outputs: &BTreeMap<String, String>,
) -> Vec<String> {
    if let [Part::Ref(r)] = tpl.parts.as_slice()
        && let Some(ArgValue::Files(fs)) = args.get(r)
    {
        return fs.iter().map(|f| f.path.clone()).collect();
    }
    vec![render_one(tpl, args, outputs)]
}
