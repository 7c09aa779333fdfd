//! A headless Chromium driven over W3C WebDriver (chromedriver), for the admin page's
//! tests. A small client on the tests' own reqwest: the few commands the tests use
//! (navigate, find, click, type, read text, run a script, accept a confirm, resize,
//! screenshot). A WebDriver crate would double some forty crates of the test build
//! (http 0.2, cookie, digest 0.11, ...) for these ten calls.
//!
//! Without Chromium and its driver the tests fail, saying how to install them.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// The W3C key under which an element reference is given.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const INSTALL: &str = "the admin page tests need Chromium and its WebDriver: \
                       apt-get install chromium chromium-driver (Debian)";

fn find_binary(names: &[&str]) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/bin", "/usr/lib/chromium"].map(PathBuf::from));
    dirs.iter()
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`
    session: String,
    _driver: Child,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium session.
    pub async fn start() -> Browser {
        let driver_path = find_binary(&["chromedriver"]).unwrap_or_else(|| panic!("{INSTALL}"));
        let chromium = find_binary(&["chromium", "chromium-browser", "google-chrome"])
            .unwrap_or_else(|| panic!("{INSTALL}"));
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}; {INSTALL}", driver_path.display()));
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let mut ready = false;
        for _ in 0..100 {
            if let Ok(response) = http.get(format!("{base}/status")).send().await
                && let Ok(status) = response.json::<Value>().await
                && status["value"]["ready"] == true
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "chromedriver did not start; {INSTALL}");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900",
                         "--no-first-run", "--disable-extensions"]
            }
        }}});
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("a session");
        let id = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {created}; {INSTALL}"));
        Browser {
            http,
            session: format!("{base}/session/{id}"),
            _driver: driver,
        }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("a WebDriver answer");
        answer["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.command(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({"url": url})).await;
    }

    /// The elements matching a CSS selector now.
    pub async fn find_all(&self, css: &str) -> Vec<String> {
        let found = self
            .post("/elements", json!({"using": "css selector", "value": css}))
            .await;
        found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e[ELEMENT].as_str().map(str::to_string))
            .collect()
    }

    /// The first element matching `css` that is displayed, waiting up to 10 s.
    pub async fn wait_for(&self, css: &str) -> String {
        for _ in 0..100 {
            for element in self.find_all(css).await {
                if self.displayed(&element).await {
                    return element;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "nothing displayed matches {css}; the page says: {}; its console: {}",
            self.page_text().await,
            self.console().await
        );
    }

    /// Waits up to 10 s until the element's text contains `expected`.
    pub async fn wait_for_text(&self, css: &str, expected: &str) -> String {
        let mut last = String::new();
        for _ in 0..100 {
            for element in self.find_all(css).await {
                last = self.text(&element).await;
                if last.contains(expected) {
                    return last;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{css} never said '{expected}' (last: '{last}')");
    }

    pub async fn displayed(&self, element: &str) -> bool {
        self.command(
            reqwest::Method::GET,
            &format!("/element/{element}/displayed"),
            None,
        )
        .await
            == true
    }

    pub async fn text(&self, element: &str) -> String {
        self.command(
            reqwest::Method::GET,
            &format!("/element/{element}/text"),
            None,
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Everything the page shows, as text.
    pub async fn page_text(&self) -> String {
        self.script("return document.body.innerText", json!([]))
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// What the page logged (chromedriver's log endpoint), for failure messages.
    pub async fn console(&self) -> String {
        self.post("/se/log", json!({"type": "browser"}))
            .await
            .to_string()
    }

    /// Clicks the first displayed element matching `css`, looking it up again when the page
    /// re-rendered it between the lookup and the click (the admin page redraws its tree every
    /// few seconds and after each action, which makes an element id stale).
    pub async fn click_on(&self, css: &str) {
        for _ in 0..20 {
            let element = self.wait_for(css).await;
            let answer = self
                .post(&format!("/element/{element}/click"), json!({}))
                .await;
            match answer.get("error").and_then(Value::as_str) {
                None => return,
                Some("stale element reference") => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Some(_) => panic!("click on {css} refused: {answer}"),
            }
        }
        panic!("{css} was redrawn under every click");
    }

    pub async fn type_into(&self, element: &str, text: &str) {
        self.post(&format!("/element/{element}/value"), json!({"text": text}))
            .await;
    }

    /// Runs a script in the page and gives its return value.
    pub async fn script(&self, source: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({"script": source, "args": args}))
            .await
    }

    /// Accepts the confirm dialog the page opened, waiting for it up to 5 s.
    pub async fn accept_dialog(&self) {
        for _ in 0..50 {
            let answer = self.post("/alert/accept", json!({})).await;
            if answer.is_null() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no dialog to accept");
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.post("/window/rect", json!({"width": width, "height": height}))
            .await;
    }

    /// Saves a screenshot of the page as a PNG under `target/test-artifacts/`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let encoded = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("a screenshot"))
            .expect("base64 PNG");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
        std::fs::create_dir_all(&dir).expect("artifacts directory");
        let path = dir.join(name);
        std::fs::write(&path, png).expect("screenshot written");
        path
    }

    pub async fn quit(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}
