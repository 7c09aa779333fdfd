//! The admin page's first render with N integrations (default 100,000), in headless
//! Chromium: the time from navigation to a usable tree (the page's own mark, set once
//! the tree is in the document) and the bytes the browser transferred for it (the
//! navigation and every resource and API call, headers included). Beside it, in the
//! same run, what an operator had before the page: the whole health tree as JSON.
//! Then the time to open the connector's first page of 50 integrations.
//!
//! Run: `cargo bench --bench admin_page [-- COUNT]` (needs `chromium` and
//! `chromedriver`: `apt-get install chromium chromium-driver`).

#[path = "../tests/common/browser.rs"]
#[allow(dead_code)]
mod browser;
mod common;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use browser::Browser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROUNDS: usize = 3;

fn main() {
    let count: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run(count));
}

/// Polls a script until it returns something other than null (10 s at most).
async fn until_value(browser: &Browser, script: &str) -> Value {
    for _ in 0..1000 {
        let value = browser.script(script, json!([])).await;
        if !value.is_null() {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the page never answered {script}");
}

async fn run(count: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, _) = common::seeded_config(dir.path(), count, "").await;
    let (admin, shutdown, task) = common::start_idle_daemon(&config).await;
    let http = reqwest::Client::new();
    common::wait_ready(&http, admin).await;
    // Every actor runs once the connector's summary counts them all.
    common::all_running(&http, admin, count).await;
    println!("{count} integrations running");

    // Before the page: the whole tree as JSON (every child listed).
    let started = Instant::now();
    let whole = http
        .get(format!("http://{admin}/admin/actors?limit={count}"))
        .send()
        .await
        .expect("tree")
        .bytes()
        .await
        .expect("tree bytes");
    let whole_took = started.elapsed();
    println!(
        "the whole tree as JSON: {:.1} MB in {whole_took:.2?}",
        whole.len() as f64 / 1e6
    );

    let browser = Browser::start().await;
    let url = format!("http://{admin}/");
    let mut renders = Vec::new();
    for round in 1..=ROUNDS {
        browser.goto("about:blank").await;
        browser.goto(&url).await;
        let rendered = until_value(&browser, "return window.switchboardTreeRenderedAt ?? null")
            .await
            .as_f64()
            .expect("ms");
        let bytes = browser
            .script(
                "return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))\
                 .reduce((sum, entry) => sum + (entry.transferSize || 0), 0)",
                json!([]),
            )
            .await
            .as_f64()
            .unwrap_or_default();
        println!(
            "first render, round {round}: usable tree at {rendered:.0} ms, {:.1} KB transferred",
            bytes / 1e3
        );
        renders.push((rendered, bytes));
    }
    // Opening the connector: its first page of 50.
    let show = ".row[data-name='connector:bench'] button[aria-expanded]";
    browser.wait_for(show).await;
    let before = browser
        .script("return performance.now()", json!([]))
        .await
        .as_f64()
        .unwrap_or_default();
    browser.click_on(show).await;
    let opened = until_value(
        &browser,
        "return document.querySelectorAll('.children .row').length >= 50 ? performance.now() : null",
    )
    .await
    .as_f64()
    .unwrap_or_default();
    println!(
        "the connector's first page of 50 shown {:.0} ms after the click",
        opened - before
    );
    renders.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (median, bytes) = renders[ROUNDS / 2];
    println!(
        "first render at {count} integrations: {median:.0} ms (median of {ROUNDS}; target < 1000 ms), \
         {:.1} KB (target < 1000 KB); {:.4}% of the bytes of the whole tree, which took {:.0}% of the time",
        bytes / 1e3,
        100.0 * bytes / whole.len() as f64,
        100.0 * median / whole_took.as_secs_f64() / 1000.0
    );
    browser.quit().await;
    shutdown.trigger();
    let _ = task.await;
}
