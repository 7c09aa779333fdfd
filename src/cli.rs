//! The `switchboard` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::shutdown::Shutdown;
use crate::store::{self, Store};
use crate::vault::{self, Vault, VaultArgs};

#[derive(Debug, Parser)]
#[command(
    name = "switchboard",
    version,
    about = "A connector daemon for multi-tenant platforms",
    after_help = "Without --config, ./config.toml is read when it exists, and the embedded \
                  default configuration (loopback, SQLite under ./data) is used when it does not."
)]
pub struct Cli {
    /// The configuration file (TOML). Default: ./config.toml when it exists, else the
    /// embedded default. Given before or after the command.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon until SIGINT or SIGTERM, then shut down gracefully.
    Serve,
    /// Validate the configuration and print it, every secret redacted.
    CheckConfig,
    /// Apply pending database migrations (serve also runs them).
    Migrate,
    /// Manage organizations (tenants).
    Orgs {
        #[command(subcommand)]
        command: OrgsCommand,
    },
    /// Manage organization API tokens.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// Manage the vault's data keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrgsCommand {
    /// Create an organization; prints its id and a first API token (shown once).
    Create {
        /// The organization's name (need not be unique; its id is).
        name: String,
    },
    /// List organizations: id, creation time, name.
    List,
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create an API token for an organization (shown once; only its hash is kept).
    Create {
        /// The organization's id or name (see `switchboard orgs list`).
        #[arg(long)]
        org: String,
    },
    /// List an organization's API tokens: id, creation time, revoked or live.
    List {
        /// The organization's id or name (see `switchboard orgs list`).
        #[arg(long)]
        org: String,
    },
    /// Revoke an API token.
    Revoke {
        /// The token's id (see `switchboard tokens list --org ORG`), not the token.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a new active data key and re-encrypt every credential under it (a
    /// daemon answering on admin.listen does it itself).
    Rotate,
    /// Show the data keys and how many credentials each protects.
    Status,
}

/// Where the configuration comes from, and what it says.
enum Source {
    File(PathBuf),
    Embedded,
}

/// Loads the configuration `--config` names, else ./config.toml, else the embedded
/// default (which says so on stderr, since logging may not be set up yet).
fn load_config(config: Option<&Path>) -> Result<(Config, Source), String> {
    let path = match config {
        Some(path) => path.to_path_buf(),
        None if Path::new("config.toml").exists() => PathBuf::from("config.toml"),
        None => {
            let config = Config::embedded_default().map_err(|e| e.to_string())?;
            return checked(config, "(embedded default)").map(|config| (config, Source::Embedded));
        }
    };
    let config = Config::load(&path).map_err(|e| e.to_string())?;
    checked(config, &path.display().to_string()).map(|config| (config, Source::File(path)))
}

/// The configuration, once the connectors have checked their sections and the
/// routes' actions their settings (the config module knows neither).
fn checked(config: Config, source: &str) -> Result<Config, String> {
    let problems = crate::connectors::check(&config.connectors, &config.routes);
    if problems.is_empty() {
        return Ok(config);
    }
    let listed: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
    Err(format!(
        "{source} has {} problem(s):\n{}",
        problems.len(),
        listed.join("\n")
    ))
}

impl Cli {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        // Before any HTTP client is built (checking the configuration builds some).
        crate::install_crypto_provider();
        let config = self.config.as_deref();
        match self.command {
            Command::CheckConfig => match load_config(config) {
                Ok((loaded, source)) => {
                    match source {
                        Source::File(path) => {
                            println!("# {} is valid; effective configuration:", path.display())
                        }
                        Source::Embedded => println!(
                            "# no config.toml here: the embedded default configuration, in effect:"
                        ),
                    }
                    print!("{}", loaded.to_redacted_toml());
                    Ok(ExitCode::SUCCESS)
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    Ok(ExitCode::FAILURE)
                }
            },
            Command::Migrate => admin_command(config, |store, _| async move {
                let applied = store.migrate().await?;
                println!("applied {applied} migration(s)");
                Ok(())
            }),
            Command::Orgs { command } => admin_command(config, |store, _| async move {
                store.migrate().await?;
                match command {
                    OrgsCommand::Create { name } => {
                        let org = store::organizations::create(&store, &name).await?;
                        let (token, plaintext) = store::tokens::create(&store, &org.id).await?;
                        store::audit::record(
                            &store,
                            Some(&org.id),
                            "cli",
                            "organization.create",
                            None,
                            serde_json::json!({"name": name, "token_id": token.id}),
                        )
                        .await?;
                        println!("organization: {}", org.id);
                        println!("token id:     {}", token.id);
                        println!("api token:    {}", plaintext.expose());
                        eprintln!("the token is shown once: only its SHA-256 hash is stored");
                    }
                    OrgsCommand::List => {
                        for org in store::organizations::list(&store).await? {
                            println!(
                                "{}\t{}\t{}",
                                org.id,
                                org.created_at.and_utc().to_rfc3339(),
                                org.name
                            );
                        }
                    }
                }
                Ok(())
            }),
            Command::Tokens { command } => admin_command(config, |store, _| async move {
                store.migrate().await?;
                match command {
                    TokensCommand::Create { org } => {
                        let org = organization(&store, &org).await?;
                        let (token, plaintext) = store::tokens::create(&store, &org).await?;
                        store::audit::record(
                            &store,
                            Some(&org),
                            "cli",
                            "token.create",
                            None,
                            serde_json::json!({"token_id": token.id}),
                        )
                        .await?;
                        println!("token id:  {}", token.id);
                        println!("api token: {}", plaintext.expose());
                        eprintln!("the token is shown once: only its SHA-256 hash is stored");
                    }
                    TokensCommand::List { org } => {
                        let org = organization(&store, &org).await?;
                        for token in store::tokens::list(&store, &org).await? {
                            println!(
                                "{}\t{}\t{}",
                                token.id,
                                token.created_at.and_utc().to_rfc3339(),
                                if token.revoked_at.is_some() {
                                    "revoked"
                                } else {
                                    "live"
                                }
                            );
                        }
                    }
                    TokensCommand::Revoke { id } => {
                        store::tokens::revoke(&store, &id)
                            .await
                            .map_err(|e| match e {
                                store::StoreError::NotFound => {
                                    anyhow::anyhow!("no live token '{id}'")
                                }
                                other => other.into(),
                            })?;
                        store::audit::record(
                            &store,
                            None,
                            "cli",
                            "token.revoke",
                            None,
                            serde_json::json!({"token_id": id}),
                        )
                        .await?;
                        println!("revoked {id}");
                    }
                }
                Ok(())
            }),
            Command::Keys { command } => {
                admin_command(config, |store, loaded| async move {
                    // A running daemon rotates itself: its next encryption is under the
                    // new key. Without one reachable, the rotation is done here and
                    // running daemons follow it within `vault::ACTIVE_KEY_CHECK`.
                    if matches!(command, KeysCommand::Rotate) && rotate_in_daemon(&loaded).await? {
                        return Ok(());
                    }
                    store.migrate().await?;
                    let (ready, store_ready) = tokio::sync::watch::channel(true);
                    let (vault, actor) = Vault::spawn(VaultArgs {
                        master: Arc::new(vault::resolve_master_key(
                            &loaded.vault,
                            &store.data_dir(),
                        )?),
                        previous: Arc::new(vault::previous_master_keys(&loaded.vault)?),
                        store: store.clone(),
                        store_ready,
                        backoff: loaded.supervision.backoff(),
                        resume_rotation: false,
                        rotation_batch: loaded.vault.rotation_batch as usize,
                        active_key_check: crate::vault::ACTIVE_KEY_CHECK,
                    })
                    .await?;
                    let _keep_ready = ready;
                    vault.ready(Duration::from_secs(30)).await?;
                    match command {
                        KeysCommand::Rotate => {
                            let report = vault::rotation::rotate(
                                &store,
                                &vault,
                                loaded.vault.rotation_batch as usize,
                            )
                            .await?;
                            store::audit::record(
                                &store,
                                None,
                                "cli",
                                "vault.rotate",
                                None,
                                serde_json::to_value(&report)?,
                            )
                            .await?;
                            println!(
                                "new active key {}: {} credential(s) re-encrypted, {} failed, in {:.2?}",
                                report.new_key_id.as_deref().unwrap_or("?"),
                                report.reencrypted,
                                report.failed,
                                report.took
                            );
                        }
                        KeysCommand::Status => {
                            let status = vault.status().await?;
                            let counts = store::integrations::count_by_key(&store).await?;
                            println!("master key: {}", status.master_key);
                            for row in store::vault_keys::list(&store).await? {
                                let n = counts
                                    .iter()
                                    .find(|(id, _)| *id == row.id)
                                    .map_or(0, |(_, n)| *n);
                                println!(
                                    "{}{}\t{} credential(s)",
                                    row.id,
                                    if row.active { " (active)" } else { "" },
                                    n
                                );
                            }
                        }
                    }
                    actor.stop(None);
                    Ok(())
                })
            }
            Command::Serve => {
                let (loaded, source) = match load_config(config) {
                    Ok(loaded) => loaded,
                    Err(error) => {
                        eprintln!("error: {error}");
                        return Ok(ExitCode::FAILURE);
                    }
                };
                crate::logging::init(&loaded.log);
                match source {
                    Source::File(path) => tracing::info!(config = %path.display(), "starting"),
                    Source::Embedded => tracing::info!(
                        "starting on the embedded default configuration (no config.toml here; --config names one)"
                    ),
                }
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

/// Asks the daemon on `admin.listen` to rotate the data key and waits for its
/// report. `false` when no daemon answers there (the caller rotates itself).
async fn rotate_in_daemon(config: &Config) -> anyhow::Result<bool> {
    let mut addr = config.admin.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    crate::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let with_token = |request: reqwest::RequestBuilder| match &config.admin.token {
        Some(token) => request.bearer_auth(token.expose()),
        None => request,
    };
    let started = match with_token(http.post(format!("http://{addr}/admin/vault/rotate")))
        .send()
        .await
    {
        Ok(response) => response,
        Err(error) if error.is_connect() => return Ok(false),
        Err(error) => anyhow::bail!("the daemon at {addr} did not answer: {error}"),
    };
    let status = started.status();
    let answer: serde_json::Value = started.json().await.unwrap_or_default();
    if status != reqwest::StatusCode::ACCEPTED {
        anyhow::bail!(
            "the daemon at {addr} refused the rotation ({status}): {}",
            answer["error"]["message"]
                .as_str()
                .unwrap_or("no reason given")
        );
    }
    eprintln!(
        "the daemon at {addr} is rotating to key {}",
        answer["new_key_id"].as_str().unwrap_or("?")
    );
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let vault: serde_json::Value = with_token(http.get(format!("http://{addr}/admin/vault")))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let rotation = &vault["rotation"];
        match rotation["state"].as_str() {
            Some("running") => continue,
            Some("done") => {
                let report = &rotation["report"];
                println!(
                    "new active key {}: {} credential(s) re-encrypted, {} failed, in {}",
                    rotation["new_key_id"].as_str().unwrap_or("?"),
                    report["reencrypted"],
                    report["failed"],
                    report["took"].as_str().unwrap_or("?"),
                );
                return Ok(true);
            }
            _ => anyhow::bail!(
                "the rotation failed in the daemon (credentials stay readable; it resumes at the next start): {}",
                rotation["error"].as_str().unwrap_or("no reason given")
            ),
        }
    }
}

/// An organization named by its id or its name.
async fn organization(store: &Store, id_or_name: &str) -> anyhow::Result<String> {
    if let Some(org) = store::organizations::get(store, id_or_name).await? {
        return Ok(org.id);
    }
    let named: Vec<_> = store::organizations::list(store)
        .await?
        .into_iter()
        .filter(|org| org.name == id_or_name)
        .collect();
    match named.as_slice() {
        [org] => Ok(org.id.clone()),
        [] => anyhow::bail!(
            "no organization '{id_or_name}': give an organization's id or name (`switchboard orgs list` shows them)"
        ),
        _ => anyhow::bail!(
            "{} organizations are named '{id_or_name}': give the id (`switchboard orgs list` shows them)",
            named.len()
        ),
    }
}

/// Runs a one-shot command against the configured store.
fn admin_command<F, Fut>(config: Option<&Path>, command: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(Store, Config) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let loaded = match load_config(config) {
        Ok((loaded, _)) => loaded,
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    crate::logging::init(&crate::config::LogConfig {
        level: "warn".to_string(),
        ..loaded.log.clone()
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = Store::connect(&loaded.database).context("opening the store")?;
        match command(store, loaded).await {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(error) => {
                eprintln!("error: {error:#}");
                Ok(ExitCode::FAILURE)
            }
        }
    })
}
