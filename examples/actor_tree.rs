//! Prints a running daemon's actor tree, one line per actor.
//!
//! Run: `cargo run --example actor_tree [-- http://127.0.0.1:9090]`
//! (set SWITCHBOARD_ADMIN_TOKEN when the admin endpoint asks for one).

use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:9090".to_string());
    switchboard::install_crypto_provider();
    let mut request = reqwest::Client::new().get(format!("{base}/admin/actors"));
    if let Ok(token) = std::env::var("SWITCHBOARD_ADMIN_TOKEN") {
        request = request.bearer_auth(token);
    }
    let tree: Value = request.send().await?.error_for_status()?.json().await?;
    print_node(&tree, 0);
    Ok(())
}

fn print_node(node: &Value, depth: usize) {
    let error = node["last_error"]
        .as_str()
        .map(|e| format!("  last error: {e}"))
        .unwrap_or_default();
    println!(
        "{:indent$}{} [{}] {} restarts={} manual={}{}{}",
        "",
        node["name"].as_str().unwrap_or("?"),
        node["kind"].as_str().unwrap_or("?"),
        node["status"].as_str().unwrap_or("?"),
        node["restarts"],
        node["manual_restarts"],
        if node["stale"] == true {
            " (stale)"
        } else {
            ""
        },
        error,
        indent = depth * 2
    );
    for child in node["children"].as_array().into_iter().flatten() {
        print_node(child, depth + 1);
    }
}
