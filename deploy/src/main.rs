//! The `cairn` command. `cairn up --examples` serves the example tasks and workflows; a binary
//! of your own registers yours (`cairn::cli::main(|node| node.task(…).workflow(…))`).

// glibc malloc contends between tokio worker threads; mimalloc does not.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cairn::cli::main(|node| node)
}
