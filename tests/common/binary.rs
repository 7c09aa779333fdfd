//! The real `switchboard` binary, run the way an operator runs it, with none of the
//! caller's environment (a developer's DATABASE_URL or RUST_LOG must not change a test).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

pub const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// `switchboard serve` in `dir` (its `config.toml`, on port 0): the child, and the API
/// and admin addresses it logged. Its log is drained so that it never blocks on a
/// full pipe.
pub async fn serve(dir: &std::path::Path) -> (tokio::process::Child, String, String) {
    let mut child = tokio::process::Command::new(BIN)
        .arg("serve")
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawns");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let (mut api, mut admin) = (None, None);
    while api.is_none() || admin.is_none() {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("daemon logs in time")
            .expect("reads")
            .expect("daemon still running");
        let addr = || {
            line.split("addr=")
                .nth(1)
                .and_then(|a| a.split_whitespace().next())
                .map(str::to_string)
        };
        if line.contains("admin endpoint listening") {
            admin = addr();
        } else if line.contains("api listening") {
            api = addr();
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, api.expect("api"), admin.expect("admin"))
}
