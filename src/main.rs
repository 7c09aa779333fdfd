use std::process::ExitCode;

use clap::Parser;

/// glibc's malloc took about 8% of the daemon's time under webhook load, much of it
/// in arena locks between the runtime's threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<ExitCode> {
    switchboard::cli::Cli::parse().run()
}
