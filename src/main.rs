use std::process::ExitCode;

use clap::Parser;

fn main() -> anyhow::Result<ExitCode> {
    switchboard::cli::Cli::parse().run()
}
