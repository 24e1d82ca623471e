//! The `mconnect` command: a thin shell over [`mconnect::cli`].

fn main() -> std::process::ExitCode {
    mconnect::cli::main()
}
