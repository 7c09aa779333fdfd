//! switchboard: a connector daemon on a supervised actor tree.
//!
//! It connects a multi-tenant platform to its customers' Slack, GitHub, PagerDuty,
//! Datadog, AWS and GCP accounts: it runs the authorization flows, keeps credentials
//! encrypted and fresh, and receives and processes events without losing one. Every
//! connector and every tenant integration is an actor under a supervisor, so a failure
//! is restarted alone and an operator can see and restart any part through the admin
//! endpoint.
//!
//! # Layout
//! - [`cli`]: the `switchboard` command line (clap).
//! - [`config`]: TOML configuration, `${VAR}` expansion, `*_file` secrets, validation.
//! - [`logging`]: tracing, as text or JSON.
//! - [`problem`]: a configuration problem at its key path.
//! - [`secret`]: a string type that never prints itself.
//! - [`shutdown`]: the one shutdown signal passed down through the daemon.
//! - [`tree`]: the root supervisor and the actor tree built from the configuration.
//! - [`cluster`]: several nodes on one PostgreSQL: leases, fencing, failover.
//! - [`connectors`]: one module per provider and the `[connectors.<name>]` sections.
//! - [`http`]: the API listener and the admin endpoint (health, restarts, metrics).
//! - [`daemon`]: starting and stopping all of the above.
//!
//! The domain-free supervision toolkit lives in the `switchboard-actors` crate.

pub mod cli;
pub mod cluster;
pub mod config;
pub mod connectors;
pub mod daemon;
pub mod http;
pub mod integration;
pub mod logging;
pub mod pipeline;
pub mod problem;
pub mod secret;
pub mod shutdown;
pub mod store;
pub mod tree;
pub mod vault;

pub use config::Config;
pub use daemon::{Daemon, DaemonError, run};
pub use shutdown::Shutdown;

/// Installs the process's one TLS crypto provider (ring) for every client; harmless
/// when one is installed already.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Locks `mutex`, taking over a poisoned one: what it guards here (caches, counters)
/// stays usable after a panic elsewhere, and a panic must not spread to every user.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
