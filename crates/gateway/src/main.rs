//! The `claude-gateway` binary: a thin edge over the library.

fn main() -> std::process::ExitCode {
    claude_gateway::cli::main()
}
