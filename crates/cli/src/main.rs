//! The `mconnect` command: a thin shell over [`mconnect_cli::cli`].

/// Every exchange allocates and frees many small buffers on two runtime
/// workers and the audit threads; with mimalloc's per-thread free lists the
/// allocator's own share of the broker's profile under load fell from 8.7 %
/// (glibc) to 4.2 % (benches/README.md). The library leaves the choice to the
/// binary that embeds it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    mconnect_cli::cli::main()
}
