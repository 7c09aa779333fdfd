//! The README is a promise: its quick start and its "Try it" section run as written,
//! against the real binary, substituting only the ports (free ones instead of 8080
//! and 9090). A command that fails (a curl answered 4xx or 5xx included) fails this
//! test with what the script printed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const README: &str = include_str!("../README.md");

/// The body of the `## <title>` section.
fn section(title: &str) -> &'static str {
    let heading = format!("\n## {title}");
    let start = README
        .find(&heading)
        .unwrap_or_else(|| panic!("the README has no section '{title}'"));
    let body = &README[start + heading.len()..];
    &body[..body.find("\n## ").unwrap_or(body.len())]
}

/// The ```sh blocks of a section, in order.
fn shell_blocks(text: &str) -> Vec<&str> {
    text.split("```sh\n")
        .skip(1)
        .map(|rest| &rest[..rest.find("```").expect("a closed code block")])
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The environment the README's commands run in: `switchboard` on the PATH, a home
/// of their own, nothing of the caller's configuration.
fn command_in(dir: &Path, program: &str) -> Command {
    let bin_dir = Path::new(BIN).parent().expect("the binary's directory");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new(program);
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", path)
        .env("HOME", dir)
        .env("LANG", "C.UTF-8");
    command
}

#[test]
fn the_quick_start_runs_the_daemon_on_its_embedded_default() {
    let blocks = shell_blocks(section("Quick start"));
    assert_eq!(
        blocks.first().map(|b| b.trim()),
        Some("cargo run --release -- serve\ncargo test --workspace"),
        "the quick start's two commands changed: update this test"
    );
    // `cargo run --release -- serve` is the binary's `serve`, from a directory without
    // a config.toml; `cargo test` is what runs this.
    let dir = tempfile::tempdir().expect("temp dir");
    let (api, admin) = (free_port(), free_port());
    let daemon = command_in(dir.path(), BIN)
        .arg("serve")
        .env("SWITCHBOARD_LISTEN", format!("127.0.0.1:{api}"))
        .env("SWITCHBOARD_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve starts");
    let started = Instant::now();
    let mut ready = false;
    while started.elapsed() < Duration::from_secs(30) {
        let answer = command_in(dir.path(), "curl")
            .args(["-sf", &format!("http://127.0.0.1:{admin}/readyz")])
            .output()
            .expect("curl runs");
        if answer.status.success() {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let output = daemon.wait_with_output().expect("serve exits");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(ready, "never ready:\n{log}");
    assert_eq!(output.status.code(), Some(0), "{log}");
    let first = log.lines().next().unwrap_or_default();
    assert!(
        first.contains("embedded default"),
        "first log line: {first}"
    );
    assert!(dir.path().join("data/switchboard.db").exists());
}

#[test]
fn the_try_it_section_runs_as_written() {
    let blocks = shell_blocks(section("Try it: an organization, a webhook, an event"));
    assert!(blocks.len() >= 5, "the Try it section lost its commands");
    let dir = tempfile::tempdir().expect("temp dir");
    let (api, admin) = (free_port(), free_port());
    let script = blocks
        .join("\n")
        .replace(":8080", &format!(":{api}"))
        .replace(":9090", &format!(":{admin}"));
    // Fail on the first failing command, curl's 4xx and 5xx included (except where
    // the README itself asks for -f, as its readiness loop does); stop the daemon
    // whatever happens.
    let preamble = "set -euo pipefail\n\
        curl() { case \" $* \" in *' -sf '*|*' -f '*) command curl --max-time 10 \"$@\";; \
        *) command curl --max-time 10 --fail-with-body \"$@\";; esac; }\n\
        trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n";
    let mut run = command_in(dir.path(), "bash")
        .arg("-c")
        .arg(format!("{preamble}{script}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash runs");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = run.try_wait().expect("waits") {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(90) {
            let _ = run.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = run.wait_with_output().expect("output");
    let printed = format!(
        "stdout:\n{}\nstderr:\n{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        std::fs::read_to_string(dir.path().join("switchboard-try/daemon.log")).unwrap_or_default()
    );
    assert!(
        status.is_some(),
        "the README's commands did not finish:\n{printed}"
    );
    assert!(
        output.status.success(),
        "a README command failed:\n{printed}"
    );
    // Both ways of signing got an event stored.
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.matches("\"duplicate\":false").count(),
        2,
        "{printed}"
    );
    // The daemon's log tells the story one line per lifecycle change, and nothing per
    // event at info.
    let log = std::fs::read_to_string(dir.path().join("switchboard-try/daemon.log"))
        .expect("the daemon's log");
    let lines = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(lines("daemon: ready"), 1, "one ready line:\n{log}");
    for change in [
        "api listening",
        "admin endpoint listening",
        "integration authorization started",
        "integration activated",
        "integration revoked",
    ] {
        assert_eq!(lines(change), 1, "{change}:\n{log}");
    }
    assert_eq!(
        lines("order-1001"),
        0,
        "events are not logged at info:\n{log}"
    );
}
