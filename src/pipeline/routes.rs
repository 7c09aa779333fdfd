//! Routes: `[[routes]]` send an organization's events somewhere. A route matches a
//! connector and an event type (a glob such as `pull_request.*`) and names an action,
//! behind a circuit breaker of its own:
//! - `http.forward` POSTs the normalized event to `url`, signed the Standard Webhooks
//!   way with the route's `secret`;
//! - `slack.post` posts a readable line about the event to `channel` of the same
//!   organization's Slack workspace.
//!
//! A failed action fails the event's attempt, which is retried (at-least-once delivery).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_actors::{BreakerConfig, BreakerState, CircuitBreaker};
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
    #[serde(default)]
    pub url: Option<String>,
    /// Signs forwarded events (`whsec_...`), for `http.forward`.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// The Slack channel (id or name) `slack.post` posts to.
    #[serde(default)]
    pub channel: Option<String>,
}

fn everything() -> String {
    "*".to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouteAction {
    #[serde(rename = "http.forward")]
    HttpForward,
    #[serde(rename = "slack.post")]
    SlackPost,
}

/// Posts a routed event to an organization's chat (the Slack connector provides it).
#[async_trait::async_trait]
pub trait ChatPoster: Send + Sync + 'static {
    async fn post(
        &self,
        organization_id: &str,
        channel: &str,
        envelope: &Envelope,
    ) -> Result<(), String>;
}

impl RouteConfig {
    pub fn problems(&self, index: usize) -> Vec<Problem> {
        let mut problems = Vec::new();
        let key = |field: &str| format!("routes[{index}].{field}");
        match self.action {
            RouteAction::HttpForward => {
                let url = self.url.as_deref().unwrap_or_default();
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    problems.push(Problem::new(key("url"), "must be an http(s) URL"));
                }
                let signs = self
                    .secret
                    .as_ref()
                    .is_some_and(|secret| standard_webhooks::sign(secret, "check", 0, b"").is_ok());
                if !signs {
                    problems.push(Problem::new(
                        key("secret"),
                        "must be a whsec_ secret (base64)",
                    ));
                }
            }
            RouteAction::SlackPost => {
                if self.channel.as_deref().unwrap_or_default().is_empty() {
                    problems.push(Problem::new(key("channel"), "is required for slack.post"));
                }
            }
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

impl Route {
    /// Whether this route takes events of this organization, connector and type.
    fn takes(&self, organization_id: Option<&str>, connector: &str, event_type: &str) -> bool {
        organization_id == Some(self.config.organization_id.as_str())
            && connector == self.config.connector
            && self.pattern.matches(event_type)
    }
}

pub struct Routes {
    routes: Vec<Route>,
    client: reqwest::Client,
    chat: Option<Arc<dyn ChatPoster>>,
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
            chat: None,
        }
    }

    /// Where `slack.post` routes post (without it they fail, and their events retry).
    pub fn with_chat(mut self, chat: Arc<dyn ChatPoster>) -> Self {
        self.chat = Some(chat);
        self
    }

    /// Whether any route takes events of this organization, connector and type (an
    /// event no route takes is not even put in an envelope).
    pub fn wants(&self, organization_id: Option<&str>, connector: &str, event_type: &str) -> bool {
        self.routes
            .iter()
            .any(|route| route.takes(organization_id, connector, event_type))
    }

    /// Runs every route matching the event; the first failure fails the attempt.
    pub async fn dispatch(&self, envelope: &Envelope) -> Result<usize, String> {
        let mut dispatched = 0;
        for route in &self.routes {
            if !route.takes(
                envelope.organization_id.as_deref(),
                &envelope.connector,
                &envelope.event_type,
            ) {
                continue;
            }
            self.run(route, envelope).await?;
            dispatched += 1;
        }
        Ok(dispatched)
    }

    /// Runs one route's action behind its breaker.
    async fn run(&self, route: &Route, envelope: &Envelope) -> Result<(), String> {
        let target = match route.config.action {
            RouteAction::HttpForward => route.config.url.clone().unwrap_or_default(),
            RouteAction::SlackPost => format!(
                "slack:{}",
                route.config.channel.as_deref().unwrap_or_default()
            ),
        };
        // A poisoned lock still holds a consistent breaker: every update is one step.
        route
            .breaker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_acquire()
            .map_err(|rejected| format!("route {target}: {rejected}"))?;
        let outcome = match route.config.action {
            RouteAction::HttpForward => self.forward(route, envelope).await,
            RouteAction::SlackPost => match &self.chat {
                Some(chat) => chat
                    .post(
                        &route.config.organization_id,
                        route.config.channel.as_deref().unwrap_or_default(),
                        envelope,
                    )
                    .await
                    .map_err(|error| format!("route {target}: {error}")),
                None => Err(format!("route {target}: Slack is not configured")),
            },
        };
        let mut breaker = route.breaker.lock().unwrap_or_else(|p| p.into_inner());
        let before = breaker.state();
        match &outcome {
            Ok(()) => breaker.record_success(),
            Err(_) => breaker.record_failure(),
        }
        match (before, breaker.state()) {
            (BreakerState::Open, _) | (_, BreakerState::HalfOpen) => {}
            (_, BreakerState::Open) => {
                tracing::info!(route = %target, "route breaker opened: its events wait for their retries")
            }
            (BreakerState::HalfOpen, BreakerState::Closed) => {
                tracing::info!(route = %target, "route breaker closed: the route answers again")
            }
            _ => {}
        }
        outcome
    }

    async fn forward(&self, route: &Route, envelope: &Envelope) -> Result<(), String> {
        let (Some(url), Some(secret)) = (&route.config.url, &route.config.secret) else {
            return Err("http.forward needs a url and a secret".to_string());
        };
        let body = serde_json::to_vec(envelope).map_err(|e| e.to_string())?;
        let timestamp = standard_webhooks::unix_now();
        let signature = standard_webhooks::sign(secret, &envelope.id, timestamp, &body)
            .map_err(|e| e.to_string())?;
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header(standard_webhooks::ID, &envelope.id)
            .header(standard_webhooks::TIMESTAMP, timestamp.to_string())
            .header(standard_webhooks::SIGNATURE, signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("route {url} answered {}", response.status())),
            Err(error) => Err(format!("route {url} unreachable: {error}")),
        }
    }
}
