//! The `switchboard` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::shutdown::Shutdown;

#[derive(Debug, Parser)]
#[command(
    name = "switchboard",
    version,
    about = "A connector daemon for multi-tenant platforms"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon until SIGINT or SIGTERM, then shut down gracefully.
    Serve {
        #[arg(long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Validate the configuration and print it, every secret redacted.
    CheckConfig {
        #[arg(long, default_value = "config.toml")]
        config: PathBuf,
    },
}

impl Cli {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::CheckConfig { config } => match Config::load(&config) {
                Ok(loaded) => {
                    println!("# {} is valid; effective configuration:", config.display());
                    print!("{}", loaded.to_redacted_toml());
                    Ok(ExitCode::SUCCESS)
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    Ok(ExitCode::FAILURE)
                }
            },
            Command::Serve { config } => {
                let loaded = match Config::load(&config) {
                    Ok(loaded) => loaded,
                    Err(error) => {
                        eprintln!("error: {error}");
                        return Ok(ExitCode::FAILURE);
                    }
                };
                crate::logging::init(&loaded.log);
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async {
                    let shutdown = Shutdown::new();
                    shutdown.trigger_on_signals()?;
                    match crate::run(loaded, shutdown).await {
                        Ok(()) => Ok(ExitCode::SUCCESS),
                        Err(error) => {
                            tracing::error!(error = %error, "switchboard failed");
                            Ok(ExitCode::FAILURE)
                        }
                    }
                })
            }
        }
    }
}
