//! Command tasks declared in a tasks file, through the real binary: `cairn up --tasks`, then
//! `cairn run` and `cairn cache explain` as a user types them.

mod common;

use common::{CAIRN, NodeProcess, cli, cli_json, wait_until};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const BUILD_TASKS: &str = r#"
[task.compile]
command = ["cc", "-O2", "-c", "${src}", "-o", "${outputs.obj}"]
inputs = { src = "file", headers = "glob" }
outputs = { obj = "obj/${src}.o" }
env = { LC_ALL = "C" }

[task.link]
command = ["cc", "-o", "${outputs.app}", "${objs}"]
inputs = { objs = "file[]" }
outputs = { app = "bin/app" }
tools = ["ld"]
env = { PATH = "/usr/bin:/bin" }

[workflow.build]
inputs = { srcs = "glob", headers = "glob" }
output = { app = "${steps.link.outputs.app}" }

[workflow.build.steps.compile]
task = "compile"
for_each = "${inputs.srcs}"
with = { src = "${item}", headers = "${inputs.headers}" }

[workflow.build.steps.link]
task = "link"
with = { objs = "${steps.compile.outputs.obj}" }
"#;

const FILES: usize = 20;

fn write_project(dir: &Path) {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let mut header = String::from("#ifndef COMMON_H\n#define COMMON_H\n");
    let mut main = String::from("#include \"common.h\"\nint main(void) {\n    int s = 0;\n");
    for i in 0..FILES {
        header.push_str(&format!("int f{i:02}(int n);\n"));
        main.push_str(&format!("    s += f{i:02}({i});\n"));
        std::fs::write(
            dir.join(format!("src/f{i:02}.c")),
            format!("#include \"common.h\"\nint f{i:02}(int n) {{ return n * {i}; }}\n"),
        )
        .unwrap();
    }
    header.push_str("#endif\n");
    main.push_str("    return s == 0;\n}\n");
    std::fs::write(dir.join("src/common.h"), header).unwrap();
    std::fs::write(dir.join("src/main.c"), main).unwrap();
    std::fs::write(dir.join("tasks.toml"), BUILD_TASKS).unwrap();
}

const BUILD_INPUT: &str = r#"{"srcs": "src/*.c", "headers": "src/*.h"}"#;

/// The run's calls as (task, status), in the order they were made.
fn statuses(detail: &Value) -> Vec<(String, String)> {
    detail["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["task"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn count(calls: &[(String, String)], task: &str, status: &str) -> usize {
    calls
        .iter()
        .filter(|(t, s)| t == task && s == status)
        .count()
}

fn build(url: &str) -> Vec<(String, String)> {
    let detail = cli_json(url, &["run", "build", "--input", BUILD_INPUT], 0);
    assert_eq!(detail["status"], "succeeded", "{detail:#}");
    statuses(&detail)
}

/// `cairn cache explain compile` of one source file with the project's headers.
fn explain_compile(url: &str, src: &str) -> Value {
    let input = format!(r#"{{"src": "{src}", "headers": "src/*.h"}}"#);
    cli_json(url, &["cache", "explain", "compile", "--input", &input], 0)
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} in {}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn a_compile_and_link_workflow_runs_each_step_once_per_content_and_cuts_off_early() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    write_project(ws);
    let tasks = ws.join("tasks.toml");
    let mut node = NodeProcess::start(
        ws,
        &[
            "--store",
            &format!("embedded:{}", ws.join("data").display()),
            "--tasks",
            tasks.to_str().unwrap(),
        ],
    );
    let url = node.url.as_str();
    let compiles = FILES + 1;

    // First run: everything executes.
    let first = build(url);
    assert_eq!(count(&first, "compile", "Populated"), compiles, "{first:?}");
    assert_eq!(count(&first, "link", "Populated"), 1, "{first:?}");
    assert_eq!(first.len(), compiles + 1);

    // Second run: everything hits.
    let second = build(url);
    assert!(second.iter().all(|(_, s)| s == "Hit"), "{second:?}");
    assert_eq!(second.len(), compiles + 1);

    // A touched file (new mtime, same bytes) still hits.
    std::fs::File::options()
        .write(true)
        .open(ws.join("src/f03.c"))
        .unwrap()
        .set_modified(std::time::SystemTime::now())
        .unwrap();
    let touched = build(url);
    assert!(touched.iter().all(|(_, s)| s == "Hit"), "{touched:?}");

    // A comment edited in one file: explain names the file; only its compile re-runs, and it
    // produces the same object, so the link hits (early cutoff).
    edit(&ws.join("src/f07.c"), "int f07", "/* seven */ int f07");
    let explained = explain_compile(url, "src/f07.c");
    assert_eq!(explained["verdict"], "miss", "{explained:#}");
    let summary = explained["nearest"][0]["summary"].to_string();
    assert!(
        summary.contains("src.content") && summary.contains("file src/f07.c"),
        "{explained:#}"
    );
    let commented = build(url);
    assert_eq!(
        count(&commented, "compile", "Populated"),
        1,
        "{commented:?}"
    );
    assert_eq!(
        count(&commented, "compile", "Hit"),
        compiles - 1,
        "{commented:?}"
    );
    assert_eq!(
        count(&commented, "link", "Hit"),
        1,
        "early cutoff: {commented:?}"
    );

    // A real change: its compile and the link re-run.
    edit(&ws.join("src/f07.c"), "n * 7", "n * 70");
    let changed = build(url);
    assert_eq!(count(&changed, "compile", "Populated"), 1, "{changed:?}");
    assert_eq!(count(&changed, "link", "Populated"), 1, "{changed:?}");

    // A header every file includes: every compile re-runs.
    edit(&ws.join("src/common.h"), "#endif", "/* h */\n#endif");
    // A glob input's manifest is kept: explain lists the file that changed in it.
    let explained = explain_compile(url, "src/f02.c");
    let summary = explained["nearest"][0]["summary"].to_string();
    assert!(
        summary.contains(
            r#"input \"headers\" changed: 1 file differs: src/common.h has other content"#
        ),
        "{explained:#}"
    );
    let header = build(url);
    assert_eq!(
        count(&header, "compile", "Populated"),
        compiles,
        "{header:?}"
    );
    assert_eq!(count(&header, "link", "Hit"), 1, "same objects: {header:?}");

    // Blobs go with the last entry that refers to them: evicting every link entry deletes the
    // binaries they stored; the objects, which compile entries still refer to, stay.
    let run = cli_json(url, &["run", "build", "--input", BUILD_INPUT], 0);
    let app = run["output"]["app"]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("the binary's digest in {run:#}"))
        .to_string();
    // The binary comes out of the store by its digest, checked, and runs.
    let fetched = ws.join("fetched-app");
    let wrote = cli_json(
        url,
        &["cache", "blob", &app, "--output", fetched.to_str().unwrap()],
        0,
    );
    assert_eq!(wrote["digest"], app.as_str(), "{wrote:#}");
    let bytes = std::fs::read(&fetched).unwrap();
    assert_eq!(wrote["size"], bytes.len() as u64);
    assert_eq!(blake3::hash(&bytes).to_hex().as_str(), app);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fetched, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ran = std::process::Command::new(&fetched).status().unwrap();
    assert!(ran.success(), "the fetched binary runs: {ran:?}");
    let stdout = cli(
        url,
        &[
            "cache",
            "blob",
            run["output"]["app"]["digest"].as_str().unwrap(),
        ],
    );
    assert_eq!(stdout.stdout, bytes, "to stdout by default");
    let (code, stderr) = common::cli_fails(url, &["cache", "blob", &"0".repeat(64)]);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains(&format!("no blob {} in the store", "0".repeat(64))),
        "{stderr}"
    );
    let (code, stderr) = common::cli_fails(url, &["cache", "blob", "not-a-digest"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not 64 hexadecimal digits"), "{stderr}");
    let compiled = explain_compile(url, "src/f07.c");
    assert_eq!(compiled["verdict"], "hit", "{compiled:#}");
    let evicted = cli_json(url, &["cache", "evict", "--task", "link"], 0);
    assert_eq!(evicted["evicted"], 2, "two link entries: {evicted:#}");
    node.terminate();
    let store_url = format!("embedded:{}", ws.join("data").display());
    let (project, domain) = (
        run["project"].as_str().unwrap().to_string(),
        run["domain"].as_str().unwrap().to_string(),
    );
    let (app_stored, objects) = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = cairn::AnyStore::open(&store_url).await.unwrap();
        let catalog = cairn::Catalog::new(store);
        let blobs = catalog.blobs();
        let app_stored = blobs.size(&app.parse().unwrap()).await.unwrap().is_some();
        let page = catalog
            .list_entries(&project, &domain, Some("compile"), None, 100, None)
            .await
            .unwrap();
        let mut objects = 0;
        for entry in page.entries {
            let hit = catalog.lookup(&entry.key, None).await.unwrap().unwrap();
            let out: cairn::commands::CommandOutput = rmp_serde::from_slice(&hit.output).unwrap();
            let obj = &out.files["obj"];
            assert_eq!(blobs.get(&obj.digest).await.unwrap().len() as u64, obj.size);
            assert!(blobs.references(&obj.digest).await.unwrap() >= 1);
            objects += 1;
        }
        (app_stored, objects)
    });
    assert!(!app_stored, "the evicted link entries' binary is deleted");
    assert!(
        objects > compiles,
        "every compile entry's object is still stored: {objects}"
    );
}

#[test]
fn environment_values_and_tool_binaries_are_part_of_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    let tool = ws.join("stamp");
    let write_tool = |version: &str| {
        let script = format!("#!/bin/sh\necho \"{version} $GREETING\" > \"$1\"\n");
        std::fs::write(&tool, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    write_tool("v1");
    std::fs::write(
        ws.join("tasks.toml"),
        format!(
            r#"
[task.stamp]
command = ["{}", "${{outputs.out}}"]
outputs = {{ out = "out.txt" }}
env_pass = ["GREETING"]

[workflow.stamp]
output = {{ out = "${{steps.stamp.outputs.out}}" }}
steps.stamp = {{ task = "stamp" }}
"#,
            tool.display()
        ),
    )
    .unwrap();
    let store = format!("embedded:{}", ws.join("data").display());
    let tasks = ws.join("tasks.toml");
    let args = ["--store", &store, "--tasks", tasks.to_str().unwrap()];
    let run = |url: &str| {
        let detail = cli_json(url, &["run", "stamp", "--input", "{}"], 0);
        let calls = statuses(&detail);
        assert_eq!(calls.len(), 1, "{detail:#}");
        calls[0].1.clone()
    };
    let mut node = NodeProcess::start_with_env(ws, &args, &[("GREETING", "hello")]);
    assert_eq!(run(&node.url), "Populated");
    assert_eq!(run(&node.url), "Hit");
    // Another binary at the same path.
    write_tool("v2");
    assert_eq!(run(&node.url), "Populated", "a changed tool re-runs");
    assert_eq!(run(&node.url), "Hit");
    // The same node with another value of a passed variable.
    node.terminate();
    let node = NodeProcess::start_with_env(ws, &args, &[("GREETING", "bye")]);
    assert_eq!(run(&node.url), "Populated", "a changed env value re-runs");
    assert_eq!(run(&node.url), "Hit");
}

fn alive(pid: i32) -> bool {
    // A zombie is dead for our purpose.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.split(") ").nth(1).unwrap_or("").starts_with('Z'))
        .unwrap_or(false)
}

#[test]
fn a_timeout_kills_the_process_group_and_a_failure_is_never_cached() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    let pidfile = ws.join("sleeper.pid");
    let counter = ws.join("failures.log");
    std::fs::write(
        ws.join("tasks.toml"),
        format!(
            r#"
[task.hang]
script = "sleep 600 & echo $$! > \"$$PIDFILE\"; wait"
env = {{ PIDFILE = "{}" }}
timeout = "1s"

[task.fail]
script = "echo ran >> \"$$COUNTER\"; echo broken >&2; exit 3"
env = {{ COUNTER = "{}" }}

[workflow.hang]
steps.hang = {{ task = "hang" }}

[workflow.fail]
steps.fail = {{ task = "fail" }}
"#,
            pidfile.display(),
            counter.display()
        ),
    )
    .unwrap();
    let tasks = ws.join("tasks.toml");
    let node = NodeProcess::start(
        ws,
        &[
            "--store",
            &format!("embedded:{}", ws.join("data").display()),
            "--tasks",
            tasks.to_str().unwrap(),
        ],
    );
    let failed = |workflow: &str| {
        let out = cli(&node.url, &["run", workflow, "--input", "{}", "--json"]);
        let detail: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
        });
        assert_eq!(detail["status"], "failed", "{detail:#}");
        detail
    };
    let hung = failed("hang");
    assert!(
        hung["error"].to_string().contains("timed out")
            || hung["error"].to_string().contains("1000"),
        "{hung:#}"
    );
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_until(
        "the command's background sleeper is killed with its group",
        Duration::from_secs(10),
        || !alive(pid),
    );

    let first = failed("fail");
    assert!(
        first["error"].to_string().contains("exit code 3")
            && first["error"].to_string().contains("broken"),
        "{first:#}"
    );
    failed("fail");
    let runs = std::fs::read_to_string(&counter).unwrap();
    assert_eq!(runs.lines().count(), 2, "a failure is not cached: {runs:?}");
}

/// `cairn up --tasks` with a bad file: exit 2, the error names the file, line and field, and
/// no node starts.
fn refused(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(CAIRN)
        .args(["up", "--listen", "127.0.0.1:0", "--store"])
        .arg(format!("embedded:{}", dir.join("data").display()))
        .arg("--tasks")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{}:", path.display())), "{stderr}");
    stderr
}

#[test]
fn bad_declarations_name_the_file_line_and_field_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let e = refused(
        d,
        "tool.toml",
        "[task.a]\ncommand = [\"no-such-tool-xyz\"]\n",
    );
    assert!(
        e.contains(":2:") && e.contains("task.a.command") && e.contains("no-such-tool-xyz"),
        "{e}"
    );
    let e = refused(
        d,
        "type.toml",
        "[task.a]\ncommand = [\"cat\", \"${x}\"]\ninputs = { x = \"fiel\" }\n",
    );
    assert!(
        e.contains(":3:")
            && e.contains("task.a.inputs.x")
            && e.contains("unknown input type \"fiel\""),
        "{e}"
    );
    let e = refused(
        d,
        "cycle.toml",
        concat!(
            "[task.a]\ncommand = [\"cat\", \"${f}\"]\ninputs = { f = \"file\" }\noutputs = { o = \"o\" }\n",
            "[workflow.w]\n",
            "steps.one = { task = \"a\", with = { f = \"${steps.two.outputs.o}\" } }\n",
            "steps.two = { task = \"a\", with = { f = \"${steps.one.outputs.o}\" } }\n",
        ),
    );
    assert!(
        e.contains("workflow.w.steps") && e.contains("cycle") && e.contains("one -> two -> one"),
        "{e}"
    );
    let e = refused(
        d,
        "outside.toml",
        "[task.a]\ncommand = [\"true\"]\noutputs = { o = \"../escape\" }\n",
    );
    assert!(
        e.contains(":3:") && e.contains("task.a.outputs.o") && e.contains("outside the workspace"),
        "{e}"
    );
    let e = refused(
        d,
        "template.toml",
        "[task.a]\ninputs = { x = \"string\" }\ncommand = [\"echo\", \"${y}\"]\n",
    );
    assert!(
        e.contains(":3:") && e.contains("task.a.command") && e.contains("unknown input \"${y}\""),
        "{e}"
    );
    let e = refused(
        d,
        "mismatch.toml",
        concat!(
            "[task.a]\ncommand = [\"cat\", \"${f}\"]\ninputs = { f = \"file\" }\n",
            "[workflow.w]\ninputs = { n = \"int\" }\n",
            "steps.one = { task = \"a\", with = { f = \"${inputs.n}\" } }\n",
        ),
    );
    assert!(
        e.contains(":6:") && e.contains("with.f") && e.contains("type mismatch"),
        "{e}"
    );
    assert!(!d.join("data").exists(), "no store was opened");
}

/// Two nodes on one PostgreSQL store, each with its own copy of the workspace (no shared
/// filesystem), run the same build at the same moment: every step executes once in all, both
/// runs end with the same outputs, and whichever node runs a downstream step gets its input
/// objects from the store (they exist nowhere else: outputs never enter a workspace).
#[test]
fn two_nodes_on_postgres_run_each_step_once_without_a_shared_filesystem() {
    let store = common::store_url("commands_two");
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes: Vec<NodeProcess> = dirs
        .iter()
        .map(|d| {
            write_project(d.path());
            let tasks = d.path().join("tasks.toml");
            NodeProcess::start(
                d.path(),
                &["--store", &store, "--tasks", tasks.to_str().unwrap()],
            )
        })
        .collect();
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let runs: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = urls
            .iter()
            .map(|url| s.spawn(move || cli_json(url, &["run", "build", "--input", BUILD_INPUT], 0)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for run in &runs {
        assert_eq!(run["status"], "succeeded", "{run:#}");
    }
    assert_eq!(
        runs[0]["output"], runs[1]["output"],
        "the same bytes on both nodes"
    );
    let all: Vec<(String, String)> = runs.iter().flat_map(statuses).collect();
    let executed = |task: &str| count(&all, task, "Populated");
    assert_eq!(
        executed("compile"),
        FILES + 1,
        "each compile once in all: {all:?}"
    );
    assert_eq!(executed("link"), 1, "the link once in all: {all:?}");
    let link_done_by: Vec<usize> = runs
        .iter()
        .enumerate()
        .filter(|(_, r)| count(&statuses(r), "link", "Populated") == 1)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(link_done_by.len(), 1);
    // The linking node's workspace holds no object: its inputs came from the store.
    let linker = dirs[link_done_by[0]].path();
    assert!(!linker.join("obj").exists() && !linker.join("src/f00.c.o").exists());
}
