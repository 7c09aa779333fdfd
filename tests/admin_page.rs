//! The admin web page in a real browser (headless Chromium over WebDriver) against a
//! real daemon: the token prompt, the tree, restarting an integration, replaying a
//! dead event, and hostile text shown as text. Screenshots of the tree and of the
//! events view are saved under `target/test-artifacts/`.

mod common;

use common::TestDaemon;
use common::browser::Browser;
use serde_json::{Value, json};
use switchboard::store::events::{self, DeliveryScope, NewEvent};
use switchboard::store::integrations;

const ADMIN_TOKEN: &str = "page-admin-token-0123456789";

async fn daemon() -> TestDaemon {
    let daemon = TestDaemon::start_with_admin(
        &format!("token = \"{ADMIN_TOKEN}\""),
        "[connectors.webhook]\n",
    )
    .await;
    daemon.ready().await;
    daemon
}

/// The admin API, with the token.
async fn admin(daemon: &TestDaemon, method: reqwest::Method, path: &str) -> Value {
    let response = daemon
        .http
        .request(method, daemon.admin_url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

async fn actor_id(daemon: &TestDaemon, integration: &str) -> String {
    let node = admin(daemon, reqwest::Method::GET, "/admin/connectors/webhook").await;
    node["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == format!("integration:{integration}"))
        .and_then(|c| c["actor_id"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Opens the page and gives the token.
async fn sign_in(browser: &Browser, daemon: &TestDaemon, token: &str) {
    browser.goto(&daemon.admin_url("/")).await;
    let field = browser.wait_for("#token").await;
    browser.type_into(&field, token).await;
    browser.click_on("#token-form button[type=submit]").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_asks_for_the_token_shows_the_tree_and_restarts_an_integration() {
    let daemon = daemon().await;
    let (_, token) = daemon.organization("Acme").await;
    let done = daemon.connect(&token, "webhook", json!({})).await;
    let id = done["integration"]["id"].as_str().unwrap().to_string();

    // Served with a strict policy, no inline script.
    let page = daemon.http.get(daemon.admin_url("/")).send().await.unwrap();
    let headers = page.headers().clone();
    let html = page.text().await.unwrap();
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(
        policy.contains("script-src 'self'") && policy.contains("default-src 'none'"),
        "{policy}"
    );
    assert_eq!(headers["x-frame-options"], "DENY");
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "no inline script or style"
    );

    let browser = Browser::start().await;
    // Without the token: the prompt and nothing else.
    browser.goto(&daemon.admin_url("/")).await;
    browser.wait_for("#token").await;
    let shown = browser.page_text().await;
    assert!(!shown.contains("connector:webhook"), "{shown}");
    assert!(browser.find_all("#app:not([hidden])").await.is_empty());

    // A wrong token is refused plainly.
    sign_in(&browser, &daemon, "not-the-token").await;
    browser
        .wait_for_text("#login-error", "The admin token was refused (401)")
        .await;
    assert!(!browser.page_text().await.contains("connector:webhook"));

    // The right one shows the tree.
    sign_in(&browser, &daemon, ADMIN_TOKEN).await;
    let connector = browser
        .wait_for(".row[data-name='connector:webhook']")
        .await;
    let line = browser.text(&connector).await;
    assert!(
        line.contains("running") && line.contains("1 running"),
        "{line}"
    );
    browser.wait_for_text("#metrics", "received").await;
    let picture = browser.screenshot("admin-tree.png").await;
    assert!(std::fs::metadata(&picture).unwrap().len() > 1000);

    // Open the connector, restart the integration from its row.
    browser
        .click_on(".row[data-name='connector:webhook'] button[aria-expanded]")
        .await;
    let row = format!(".row[data-name='integration:{id}']");
    browser.wait_for(&row).await;
    let before = actor_id(&daemon, &id).await;
    assert!(!before.is_empty());
    let restart = format!("{row} .actions button:nth-child(1)");
    let label = browser.wait_for_text(&restart, "Restart").await;
    assert_eq!(label, "Restart");
    browser.click_on(&restart).await;
    browser.accept_dialog().await;
    browser
        .wait_for_text("#notice", &format!("Integration {id} restarted: running"))
        .await;
    let after = actor_id(&daemon, &id).await;
    assert_ne!(before, after, "a new actor");

    // Validate from the page: the outcome is shown.
    browser
        .click_on(&format!("{row} .actions button:nth-child(2)"))
        .await;
    browser.accept_dialog().await;
    browser
        .wait_for_text("#notice", &format!("Integration {id} is valid."))
        .await;

    // The vault: its keys and what they protect.
    browser.click_on("#tabs [data-view='vault']").await;
    let shown = browser.wait_for_text("#vault", "active key").await;
    assert!(
        shown.contains("ready") || shown.contains("active"),
        "{shown}"
    );
    browser.wait_for_text("#vault", "1").await;

    // Phone width: nothing wider than the screen.
    browser.resize(390, 844).await;
    let overflow = browser
        .script(
            "return document.documentElement.scrollWidth - window.innerWidth",
            json!([]),
        )
        .await;
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "wider than a phone by {overflow}px"
    );
    browser.quit().await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_event_is_replayed_from_the_page_and_hostile_text_stays_text() {
    let daemon = daemon().await;
    let (organization, token) = daemon.organization("Acme").await;
    let done = daemon.connect(&token, "webhook", json!({})).await;
    let id = done["integration"]["id"].as_str().unwrap().to_string();

    // An integration whose provider account and metadata are hostile markup.
    let hostile_account = "acct-<img src=x onerror=\"window.__xss='account'\">";
    let (other, _) = daemon.organization("Globex").await;
    let pending = integrations::create_pending(&daemon.store, &other, "webhook", None)
        .await
        .unwrap();
    integrations::activate(
        &daemon.store,
        &other,
        &pending.id,
        Some(hostile_account.into()),
        &json!({"note": "<script>window.__xss='metadata'</script>"}),
        Vec::new(),
    )
    .await
    .unwrap();

    // A dead event whose payload is hostile markup.
    let payload = json!({
        "type": "order.created",
        "html": "<script>window.__xss='payload'</script><img src=x onerror=\"window.__xss='img'\">"
    });
    let stored = events::write_batch_durably(
        &daemon.store,
        vec![NewEvent {
            organization_id: Some(organization.clone()),
            integration_id: Some(id.clone()),
            connector_type: "webhook".into(),
            event_type: "order.created".into(),
            delivery_id: "hostile-1".into(),
            delivery_scope: DeliveryScope::Integration,
            payload: payload.to_string(),
            occurred_at: None,
            dead_reason: Some("the receiver refused it 5 times".into()),
        }],
        &[],
        Vec::new(),
    )
    .await
    .unwrap();
    let event_id = stored[0].id.clone();

    let browser = Browser::start().await;
    sign_in(&browser, &daemon, ADMIN_TOKEN).await;
    browser
        .wait_for(".row[data-name='connector:webhook']")
        .await;

    // Search by the provider account: the markup is shown as text.
    let search = browser.wait_for("#search").await;
    browser.type_into(&search, "onerror").await;
    browser.click_on("#search-form button[type=submit]").await;
    let found = browser
        .wait_for_text("#search-results", "1 integration found")
        .await;
    assert!(found.contains(hostile_account), "{found}");
    assert!(
        found.contains("<script>window.__xss='metadata'</script>"),
        "the metadata, as text: {found}"
    );

    // The events view: the dead event, its payload as text, replayed.
    browser.click_on("#tabs [data-view='events']").await;
    let status = browser.wait_for("#event-status").await;
    browser.type_into(&status, "dead").await;
    browser.click_on("#event-filters button[type=submit]").await;
    let event_row = format!("tr[data-id='{event_id}']");
    browser.wait_for_text(&event_row, "dead").await;
    browser.click_on(&event_row).await;
    let shown = browser
        .wait_for_text("#payload", "window.__xss='payload'")
        .await;
    assert!(shown.contains("<img src=x onerror="), "{shown}");
    browser.screenshot("admin-events.png").await;
    assert_eq!(
        browser
            .script("return window.__xss === undefined", json!([]))
            .await,
        true,
        "no script of the daemon's data ran"
    );

    browser.click_on("#replay").await;
    browser.accept_dialog().await;
    browser.wait_for_text("#notice", "replayed").await;
    let mut status = String::new();
    for _ in 0..100 {
        let event = admin(
            &daemon,
            reqwest::Method::GET,
            &format!("/admin/events/{event_id}"),
        )
        .await;
        status = event["status"].as_str().unwrap_or_default().to_string();
        if status == "done" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, "done", "the replayed event is processed");
    assert_eq!(
        browser
            .script("return window.__xss === undefined", json!([]))
            .await,
        true
    );
    browser.quit().await;
    daemon.stop().await;
}
