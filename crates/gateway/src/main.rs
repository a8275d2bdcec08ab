//! The `claude-gateway` binary: a thin edge over the library.

/// mimalloc: the request path allocates many small, short-lived buffers (header maps, bodies, JSON); the benchmark's
/// profile put ~30 % of the gateway's instructions in glibc's malloc/free.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    claude_gateway::cli::main()
}
