//! The `cairn` command, with the example tasks and workflows registered on the nodes it starts.

// glibc malloc contends between tokio worker threads; mimalloc does not.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cairn::cli::main(cairn::examples::register)
}
