//! What the connectors' HTTP clients share: one way to build a client (the TLS
//! provider installed, a timeout, switchboard's `User-Agent`) and one way to read an
//! answer to the end, with errors that never quote the URL (a query can carry a token).

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

/// How switchboard names itself to providers.
pub const USER_AGENT: &str = concat!("switchboard/", env!("CARGO_PKG_VERSION"));

/// A client for one provider's API: requests time out after `timeout`.
pub fn client(timeout: Duration) -> reqwest::Client {
    crate::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(USER_AGENT)
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// An answer read to its end.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

/// Sends a request and reads the whole answer. The error says what failed, named
/// after the `provider` ("GitHub unreachable: …", "… answer cut short: …"), without
/// the URL.
pub async fn send(request: reqwest::RequestBuilder, provider: &str) -> Result<Answer, String> {
    let response = request
        .send()
        .await
        .map_err(|e| format!("{provider} unreachable: {}", e.without_url()))?;
    let status = response.status();
    let headers = response.headers().clone();
    let text = response
        .text()
        .await
        .map_err(|e| format!("{provider} answer cut short: {}", e.without_url()))?;
    Ok(Answer {
        status,
        headers,
        text,
    })
}

/// One segment of a URL path (an id from a provider or a tenant), percent-encoded.
pub fn path_segment(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

/// Holds after a provider's "slow down" that says for how long: a backoff per key
/// (an integration) that doubles with each one in a row, from `start` up to `cap`,
/// and starts again once a request goes through.
pub struct Backoffs {
    start: std::time::Duration,
    cap: std::time::Duration,
    counts: std::sync::Mutex<std::collections::HashMap<String, u32>>,
}

impl Backoffs {
    pub fn new(start: std::time::Duration, cap: std::time::Duration) -> Self {
        Self {
            start,
            cap,
            counts: std::sync::Mutex::default(),
        }
    }

    /// The next hold for `key`.
    pub fn next(&self, key: &str) -> std::time::Duration {
        let mut counts = crate::lock(&self.counts);
        let count = counts.entry(key.to_string()).or_insert(0);
        let hold = self
            .start
            .saturating_mul(1 << (*count).min(6))
            .min(self.cap);
        *count += 1;
        hold
    }

    /// `key`'s request went through.
    pub fn reset(&self, key: &str) {
        crate::lock(&self.counts).remove(key);
    }
}

/// A client trusting, beside the system's roots, the CA certificates in the PEM file
/// at `extra_roots` (a TLS-inspecting proxy's, a test's).
pub fn client_trusting(
    timeout: Duration,
    extra_roots: Option<&std::path::Path>,
) -> Result<reqwest::Client, String> {
    crate::install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(USER_AGENT);
    if let Some(path) = extra_roots {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let roots = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
        builder = builder.tls_certs_merge(roots);
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}
