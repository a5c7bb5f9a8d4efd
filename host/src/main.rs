//! The `retryguard` binary: everything lives in the library (`retryguard::cli`).
fn main() -> std::process::ExitCode {
    retryguard::cli::main()
}
