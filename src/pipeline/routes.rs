//! Routes: `[[routes]]` send an organization's events somewhere. A route matches a
//! connector and an event type (a glob such as `pull_request.*`) and names an action;
//! `http.forward` POSTs the normalized event to a URL, signed the Standard Webhooks way
//! with the route's secret, behind a circuit breaker of its own. A failed action fails
//! the event's attempt, which is retried (at-least-once delivery).

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_actors::{BreakerConfig, CircuitBreaker};
use wildmatch::WildMatch;

use super::Envelope;
use super::standard_webhooks;
use crate::config::Problem;
use crate::secret::Secret;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub organization_id: String,
    pub connector: String,
    /// A glob over event types; `*` matches everything.
    #[serde(default = "everything")]
    pub event_type: String,
    pub action: RouteAction,
    /// Where `http.forward` POSTs.
    pub url: String,
    /// Signs forwarded events (`whsec_...`).
    pub secret: Secret,
}

fn everything() -> String {
    "*".to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouteAction {
    #[serde(rename = "http.forward")]
    HttpForward,
}

impl RouteConfig {
    pub fn problems(&self, index: usize) -> Vec<Problem> {
        let mut problems = Vec::new();
        let key = |field: &str| format!("routes[{index}].{field}");
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            problems.push(Problem::new(key("url"), "must be an http(s) URL"));
        }
        if standard_webhooks::sign(&self.secret, "check", 0, b"").is_err() {
            problems.push(Problem::new(
                key("secret"),
                "must be a whsec_ secret (base64)",
            ));
        }
        if self.organization_id.is_empty() {
            problems.push(Problem::new(key("organization_id"), "is required"));
        }
        problems
    }
}

struct Route {
    config: RouteConfig,
    pattern: WildMatch,
    breaker: Mutex<CircuitBreaker>,
}

pub struct Routes {
    routes: Vec<Route>,
    client: reqwest::Client,
}

impl Routes {
    pub fn new(configs: &[RouteConfig], breaker: &BreakerConfig, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            routes: configs
                .iter()
                .map(|config| Route {
                    pattern: WildMatch::new(&config.event_type),
                    breaker: Mutex::new(CircuitBreaker::new(breaker.clone())),
                    config: config.clone(),
                })
                .collect(),
            client,
        }
    }

    /// Runs every route matching the event; the first failure fails the attempt.
    pub async fn dispatch(&self, envelope: &Envelope) -> Result<usize, String> {
        let mut dispatched = 0;
        for route in &self.routes {
            let config = &route.config;
            if envelope.organization_id.as_deref() != Some(config.organization_id.as_str())
                || envelope.connector != config.connector
                || !route.pattern.matches(&envelope.event_type)
            {
                continue;
            }
            self.forward(route, envelope).await?;
            dispatched += 1;
        }
        Ok(dispatched)
    }

    async fn forward(&self, route: &Route, envelope: &Envelope) -> Result<(), String> {
        // A poisoned lock still holds a consistent breaker: every update is one step.
        route
            .breaker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_acquire()
            .map_err(|rejected| format!("route {}: {rejected}", route.config.url))?;
        let body = serde_json::to_vec(envelope).map_err(|e| e.to_string())?;
        let timestamp = standard_webhooks::unix_now();
        let signature =
            standard_webhooks::sign(&route.config.secret, &envelope.id, timestamp, &body)
                .map_err(|e| e.to_string())?;
        let sent = self
            .client
            .post(&route.config.url)
            .header("content-type", "application/json")
            .header(standard_webhooks::ID, &envelope.id)
            .header(standard_webhooks::TIMESTAMP, timestamp.to_string())
            .header(standard_webhooks::SIGNATURE, signature)
            .body(body)
            .send()
            .await;
        let outcome = match sent {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!(
                "route {} answered {}",
                route.config.url,
                response.status()
            )),
            Err(error) => Err(format!("route {} unreachable: {error}", route.config.url)),
        };
        let mut breaker = route.breaker.lock().unwrap_or_else(|p| p.into_inner());
        match &outcome {
            Ok(()) => breaker.record_success(),
            Err(_) => breaker.record_failure(),
        }
        outcome
    }
}
