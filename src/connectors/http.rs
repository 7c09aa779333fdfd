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
