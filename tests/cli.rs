//! The `switchboard` binary: check-config, --version, and serve with a graceful exit.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// The binary, with none of the caller's environment (a developer's DATABASE_URL or
/// SWITCHBOARD_LISTEN must not change what a test checks).
fn bin() -> Command {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

fn bin_async() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(BIN);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    file.write_all(text.as_bytes()).expect("written");
    file
}

fn check_config(text: &str) -> (i32, String, String) {
    let file = config_file(text);
    let output = bin()
        .args(["check-config", "--config"])
        .arg(file.path())
        .output()
        .expect("runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn version_and_help_answer() {
    let output = bin().arg("--version").output().expect("runs");
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("switchboard {}", env!("CARGO_PKG_VERSION"))
    );
    let help = bin().arg("--help").output().expect("runs");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("serve") && text.contains("check-config"),
        "{text}"
    );
}

/// Where there is no config.toml, the embedded default is in effect (and says so);
/// `--config` goes before or after the command.
#[test]
fn without_a_config_file_the_embedded_default_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = bin()
        .arg("check-config")
        .current_dir(dir.path())
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(shown.contains("embedded default"), "{shown}");
    assert!(shown.contains("listen = \"127.0.0.1:8080\""), "{shown}");

    let file = config_file("[server]\nlisten = \"127.0.0.1:18081\"\n");
    for args in [
        vec!["--config", file.path().to_str().unwrap(), "check-config"],
        vec!["check-config", "--config", file.path().to_str().unwrap()],
    ] {
        let output = bin()
            .args(&args)
            .current_dir(dir.path())
            .output()
            .expect("runs");
        let shown = String::from_utf8_lossy(&output.stdout);
        assert!(shown.contains("127.0.0.1:18081"), "{args:?}: {shown}");
    }
}

#[test]
fn check_config_prints_the_effective_config_with_secrets_redacted() {
    let (code, stdout, _) = check_config(
        "[admin]\ntoken = \"admin-t0ken\"\n[database]\nurl = \"postgres://sb:pa55@db/sb\"\n\
         [connectors.slack]\nclient_id = \"C1\"\nclient_secret = \"sl-cl1ent\"\nsigning_secret = \"sl-s3cret\"\n",
    );
    assert_eq!(code, 0);
    for secret in ["admin-t0ken", "pa55", "sl-s3cret", "sl-cl1ent"] {
        assert!(!stdout.contains(secret), "{secret} shown:\n{stdout}");
    }
    assert!(stdout.contains("[redacted]"), "{stdout}");
    assert!(stdout.contains("client_id = \"C1\""), "{stdout}");
}

#[test]
fn check_config_rejects_an_unknown_key_naming_it() {
    let (code, _, stderr) = check_config("[server]\nlisen = \"127.0.0.1:8080\"\n");
    assert_eq!(code, 1);
    assert!(
        stderr.contains("server.lisen: unknown field `lisen`"),
        "{stderr}"
    );
}

#[test]
fn check_config_rejects_a_bad_address_naming_the_key() {
    let (code, _, stderr) = check_config("[admin]\nlisten = \"localhost:nine\"\n");
    assert_eq!(code, 1);
    assert!(
        stderr.contains("admin.listen: invalid socket address"),
        "{stderr}"
    );
}

#[test]
fn serve_refuses_a_public_admin_listener_without_a_token() {
    let file = config_file("[admin]\nlisten = \"0.0.0.0:0\"\n");
    let output = bin()
        .args(["serve", "--config"])
        .arg(file.path())
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("admin.token: required when admin.listen"),
        "{stderr}"
    );
}

#[tokio::test]
async fn serve_shuts_down_gracefully_on_sigterm_and_sigint() {
    switchboard::install_crypto_provider();
    for signal in ["-TERM", "-INT"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = config_file(&format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"${{SB_TEST_ADMIN_TOKEN}}\"\n\
             [connectors.github]\napp_id = \"1\"\napp_slug = \"sb\"\nwebhook_secret = \"gh-wh-never-logged\"\n\
             client_id = \"Iv1.x\"\nclient_secret = \"gh-cs-never-logged\"\n\
             private_key_file = \"{}/tests/fixtures/github-app-test-key.pem\"\n",
            env!("CARGO_MANIFEST_DIR")
        ));
        let mut child = bin_async()
            .args(["serve", "--config"])
            .arg(file.path())
            .current_dir(dir.path())
            .env("RUST_LOG", "trace")
            .env("SB_TEST_ADMIN_TOKEN", "admin-t0ken-never-logged")
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawns");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let mut seen = Vec::new();
        let admin = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.expect("reads") {
                seen.push(line.clone());
                if line.contains("admin endpoint listening")
                    && let Some(addr) = line.split("addr=").nth(1)
                {
                    return addr.split_whitespace().next().expect("address").to_string();
                }
            }
            panic!("daemon exited before listening");
        })
        .await
        .expect("daemon listens in time");

        let health = reqwest::get(format!("http://{admin}/healthz"))
            .await
            .expect("answers");
        assert_eq!(health.text().await.expect("body"), "ok");

        let pid = child.id().expect("running").to_string();
        let killed = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .expect("exits in time")
            .expect("exit status");
        assert_eq!(status.code(), Some(0), "{signal}");
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push(line);
        }
        assert!(seen.iter().any(|l| l.contains("stopped")), "{seen:?}");
        // Even at trace level, no secret reaches the log.
        let log = seen.join("\n");
        assert!(!log.contains("never-logged"), "{log}");
        // The listener is closed once the daemon has exited.
        assert!(
            reqwest::get(format!("http://{admin}/healthz"))
                .await
                .is_err()
        );
    }
}

fn run_in(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let output = bin().args(args).current_dir(dir).output().expect("runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn field<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find_map(|line| line.strip_prefix(label))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {label} in {text}"))
}

#[test]
fn organizations_tokens_and_keys_are_managed_from_the_command_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The defaults, but for the admin address: `keys rotate` asks a daemon listening
    // there first, and none may (port 1 refuses connections).
    std::fs::write(
        dir.path().join("config.toml"),
        "[admin]\nlisten = \"127.0.0.1:1\"\n",
    )
    .expect("config");

    let (code, out, _) = run_in(dir.path(), &["migrate"]);
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
        .expect("migrations")
        .count();
    assert_eq!(
        (code, out.trim()),
        (0, format!("applied {migrations} migration(s)").as_str())
    );
    let (code, out, _) = run_in(dir.path(), &["migrate"]);
    assert_eq!((code, out.trim()), (0, "applied 0 migration(s)"));

    let (code, out, err) = run_in(dir.path(), &["orgs", "create", "Acme Corp"]);
    assert_eq!(code, 0, "{err}");
    let org = field(&out, "organization:").to_string();
    let token = field(&out, "api token:").to_string();
    assert!(token.starts_with("sbt_"));
    assert!(err.contains("shown once"));

    let (_, list, _) = run_in(dir.path(), &["orgs", "list"]);
    assert!(list.contains(&org) && list.contains("Acme Corp"), "{list}");

    let (code, out, _) = run_in(dir.path(), &["tokens", "create", "--org", "Acme Corp"]);
    assert_eq!(code, 0, "an organization is named by its name too");
    let token_id = field(&out, "token id:").to_string();
    let (_, listed, _) = run_in(dir.path(), &["tokens", "list", "--org", &org]);
    assert!(
        listed.contains(&token_id) && listed.contains("live"),
        "{listed}"
    );
    let (code, _, err) = run_in(dir.path(), &["tokens", "create", "--org", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("no organization 'nope'"), "{err}");
    assert_eq!(run_in(dir.path(), &["tokens", "revoke", &token_id]).0, 0);
    let (code, _, err) = run_in(dir.path(), &["tokens", "revoke", &token_id]);
    assert_eq!(code, 1, "{err}");

    let (code, out, _) = run_in(dir.path(), &["keys", "rotate"]);
    assert_eq!(code, 0);
    assert!(out.contains("new active key dk_"), "{out}");
    let (_, status, _) = run_in(dir.path(), &["keys", "status"]);
    assert_eq!(status.matches("dk_").count(), 2, "{status}");
    assert_eq!(status.matches("(active)").count(), 1, "{status}");

    // Only hashes of the tokens are on disk.
    let database = std::fs::read(dir.path().join("data/switchboard.db")).expect("database");
    let wal = std::fs::read(dir.path().join("data/switchboard.db-wal")).unwrap_or_default();
    let all = [database, wal].concat();
    assert!(!all.windows(token.len()).any(|w| w == token.as_bytes()));
}

#[tokio::test]
async fn json_logging_writes_one_json_object_per_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = config_file(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n",
    );
    let mut child = bin_async()
        .args(["serve", "--config"])
        .arg(file.path())
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawns");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let line = lines.next_line().await.expect("reads").expect("a log line");
            if line.contains("admin endpoint listening") {
                return line;
            }
        }
    })
    .await
    .expect("logs in time");
    let entry: serde_json::Value = serde_json::from_str(&line).expect("a JSON object");
    assert_eq!(entry["message"], "admin endpoint listening");
    assert!(
        entry["addr"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{entry}"
    );
    assert_eq!(entry["level"], "INFO");
    child.start_kill().expect("stops");
}

/// `keys rotate` next to a running daemon: the daemon rotates, so the very next
/// credential it writes is under the new key, and `/admin/vault` says so.
#[tokio::test]
async fn a_key_rotated_from_the_command_line_reaches_the_running_daemon() {
    switchboard::install_crypto_provider();
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("config.toml"),
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[connectors.webhook]\n",
    )
    .expect("config");
    let (code, out, err) = run_in(dir.path(), &["orgs", "create", "Acme"]);
    assert_eq!(code, 0, "{err}");
    let token = field(&out, "api token:").to_string();
    let (mut daemon, api, admin) = common::binary::serve(dir.path()).await;
    let http = reqwest::Client::new();
    // One JSON answer, whatever the request.
    let json_of = |request: reqwest::RequestBuilder| async move {
        request
            .send()
            .await
            .expect("answers")
            .json::<serde_json::Value>()
            .await
            .expect("json")
    };
    let vault = || json_of(http.get(format!("http://{admin}/admin/vault")));
    let mut before = serde_json::Value::Null;
    for _ in 0..200 {
        before = vault().await["active_key"].clone();
        if before.is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(before.is_string(), "the vault never became ready");

    // The CLI finds the daemon on admin.listen: with port 0 in the file it cannot, so
    // it is told the port the daemon took, as an operator's config would say.
    std::fs::write(
        dir.path().join("config.toml"),
        format!("[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"{admin}\"\n[connectors.webhook]\n"),
    )
    .expect("config");
    let (code, out, err) = run_in(dir.path(), &["keys", "rotate"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("is rotating"), "{err}");
    assert!(out.contains("new active key dk_"), "{out}");
    let after = vault().await["active_key"].clone();
    assert_ne!(after, before, "the daemon's active key moved");

    // The next credential written: a generic webhook's signing secret.
    let call = |path: &'static str, body: serde_json::Value| {
        json_of(
            http.post(format!("http://{api}{path}"))
                .bearer_auth(&token)
                .json(&body),
        )
    };
    let started = call(
        "/integrations/authorize",
        serde_json::json!({"connector_type": "webhook"}),
    )
    .await;
    let done = call(
        "/integrations/callback",
        serde_json::json!({"connector_type": "webhook", "state": started["state"]}),
    )
    .await;
    assert!(done["integration"]["id"].is_string(), "{done}");
    let status = vault().await;
    let keys = status["keys"].as_array().expect("keys");
    let credentials_under = |id: &serde_json::Value| {
        keys.iter().find(|k| k["id"] == *id).expect("key listed")["credentials"].clone()
    };
    assert_eq!(credentials_under(&after), 1, "{status}");
    assert_eq!(credentials_under(&before), 0, "{status}");
    daemon.kill().await.expect("killed");
}
