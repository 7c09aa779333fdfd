//! Routes send an organization's events somewhere. A route matches a connector and an
//! event type (a glob such as `pull_request.*`) and names an action by its full name,
//! with the action's settings; each route has a circuit breaker of its own.
//!
//! Routes come from two places: the operator's `[[routes]]` in the configuration, and
//! the tenants' own, created through the tenant API and kept in the store (see
//! [`crate::store::routes`]); those take effect at once, without a restart.
//!
//! `http.forward` is the pipeline's own action: it POSTs the normalized event to `url`,
//! signed the Standard Webhooks way with the route's `secret`. Connectors offer the
//! others (see [`super::actions`]). A failed action fails the event's attempt, which is
//! retried (at-least-once delivery).

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_actors::{BreakerConfig, BreakerState, CircuitBreaker};
use wildmatch::WildMatch;

use super::Envelope;
use super::actions::{Action, ActionEvent, ActionKind, ActionKinds, Describe, Settings};
use super::standard_webhooks;
use crate::problem::Problem;
use crate::secret::Secret;

/// The name of the pipeline's own action.
pub const HTTP_FORWARD: &str = "http.forward";

/// An operator route, as `[[routes]]` gives it.
#[derive(Clone, Serialize, Deserialize)]
pub struct RouteConfig {
    pub organization_id: String,
    pub connector: String,
    /// A glob over event types; `*` matches everything.
    #[serde(default = "everything")]
    pub event_type: String,
    /// The action's full name: `http.forward`, or one a connector offers (`<connector>.post`)
    pub action: String,
    /// The action's settings: a `settings` table, or keys beside the route's own
    /// (`url = ...`, `channel = ...`).
    #[serde(flatten)]
    pub settings: Settings,
}

// Settings may hold secrets: only their names are shown.
impl fmt::Debug for RouteConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteConfig")
            .field("organization_id", &self.organization_id)
            .field("connector", &self.connector)
            .field("event_type", &self.event_type)
            .field("action", &self.action)
            .field("settings", &self.settings.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn everything() -> String {
    "*".to_string()
}

impl RouteConfig {
    /// The action's settings: the `settings` table merged with the keys beside it.
    pub fn action_settings(&self) -> Settings {
        let mut settings = self.settings.clone();
        if let Some(serde_json::Value::Object(nested)) = settings.remove("settings") {
            settings.extend(nested);
        }
        settings
    }

    /// Checks the route against the actions there are; problems keyed
    /// `routes[<index>].<setting>`.
    pub fn problems(&self, index: usize, kinds: &ActionKinds) -> Vec<Problem> {
        let key = |field: &str| format!("routes[{index}].{field}");
        let mut problems = Vec::new();
        if let Err(error) = prepare(kinds, &self.action, &self.action_settings()) {
            problems.extend(
                error
                    .into_iter()
                    .map(|problem| Problem::new(key(&problem.key), problem.message)),
            );
        }
        problems
    }
}

/// Prepares the named action with `settings`, or says what is wrong with them.
pub fn prepare(
    kinds: &ActionKinds,
    action: &str,
    settings: &Settings,
) -> Result<Arc<dyn Action>, Vec<Problem>> {
    kinds
        .find(action)
        .map_err(|problem| vec![problem])?
        .prepare(settings)
}

/// A route, prepared: who it is for, what it takes and what it does.
pub struct RouteSpec {
    /// The stored route's id; `None` for an operator route.
    pub id: Option<String>,
    pub organization_id: String,
    pub connector: String,
    pub event_type: String,
    pub action: Arc<dyn Action>,
}

struct Route {
    spec: RouteSpec,
    pattern: WildMatch,
    breaker: Mutex<CircuitBreaker>,
}

impl Route {
    /// Whether this route takes events of this organization, connector and type.
    fn takes(&self, organization_id: Option<&str>, connector: &str, event_type: &str) -> bool {
        organization_id == Some(self.spec.organization_id.as_str())
            && connector == self.spec.connector
            && self.pattern.matches(event_type)
    }
}

pub struct Routes {
    operator: Vec<Arc<Route>>,
    /// Every route, operator routes first; replaced whole when tenant routes change.
    all: RwLock<Arc<[Arc<Route>]>>,
    /// Whether the tenant routes were loaded from the store: until then no event is
    /// taken for one nothing wants, and none is dispatched.
    tenant_loaded: tokio::sync::watch::Sender<bool>,
    breaker: BreakerConfig,
    describer: Arc<dyn Describe>,
}

impl Routes {
    pub fn new(
        operator: Vec<RouteSpec>,
        breaker: &BreakerConfig,
        describer: Arc<dyn Describe>,
    ) -> Self {
        let operator: Vec<Arc<Route>> = operator
            .into_iter()
            .map(|spec| Arc::new(route(spec, breaker)))
            .collect();
        Self {
            all: RwLock::new(operator.clone().into()),
            operator,
            tenant_loaded: tokio::sync::watch::Sender::new(false),
            breaker: breaker.clone(),
            describer,
        }
    }

    /// Routes with no tenant routes to load (tests and tools).
    pub fn operator_only(
        operator: Vec<RouteSpec>,
        breaker: &BreakerConfig,
        describer: Arc<dyn Describe>,
    ) -> Self {
        let routes = Self::new(operator, breaker, describer);
        routes.tenant_loaded.send_replace(true);
        routes
    }

    /// The ids of the tenant routes running now.
    pub fn tenant_route_ids(&self) -> HashSet<String> {
        self.snapshot()
            .iter()
            .filter_map(|r| r.spec.id.clone())
            .collect()
    }

    fn snapshot(&self) -> Arc<[Arc<Route>]> {
        Arc::clone(&self.all.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Sets the tenant routes: the running ones in `keep` stay as they are (with their
    /// breakers), the others go, and `added` start.
    pub fn set_tenant_routes(&self, keep: &HashSet<String>, added: Vec<RouteSpec>) {
        let current = self.snapshot();
        let mut all = self.operator.clone();
        all.extend(
            current
                .iter()
                .filter(|r| r.spec.id.as_ref().is_some_and(|id| keep.contains(id)))
                .cloned(),
        );
        all.extend(
            added
                .into_iter()
                .map(|spec| Arc::new(route(spec, &self.breaker))),
        );
        *self.all.write().unwrap_or_else(|p| p.into_inner()) = all.into();
        self.tenant_loaded.send_replace(true);
    }

    /// Whether any route takes events of this organization, connector and type (an
    /// event no route takes is not even put in an envelope).
    pub fn wants(&self, organization_id: Option<&str>, connector: &str, event_type: &str) -> bool {
        !*self.tenant_loaded.borrow()
            || self
                .snapshot()
                .iter()
                .any(|route| route.takes(organization_id, connector, event_type))
    }

    /// Runs every route matching the event; the first failure fails the attempt.
    pub async fn dispatch(&self, envelope: &Envelope) -> Result<usize, String> {
        // Not before the tenant routes are known: an event must not miss its route.
        let _ = self
            .tenant_loaded
            .subscribe()
            .wait_for(|loaded| *loaded)
            .await;
        let mut dispatched = 0;
        for route in self.snapshot().iter() {
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

    /// Runs one route's action on `envelope` now, behind its breaker (the tenant API's
    /// route test). `None` when the organization has no route with that id.
    pub async fn run_one(
        &self,
        organization_id: &str,
        route_id: &str,
        envelope: &Envelope,
    ) -> Option<Result<(), String>> {
        let route = self
            .snapshot()
            .iter()
            .find(|r| {
                r.spec.id.as_deref() == Some(route_id) && r.spec.organization_id == organization_id
            })
            .cloned()?;
        Some(self.run(&route, envelope).await)
    }

    /// Runs one route's action behind its breaker.
    async fn run(&self, route: &Route, envelope: &Envelope) -> Result<(), String> {
        let target = route.spec.action.target();
        // A poisoned lock still holds a consistent breaker: every update is one step.
        route
            .breaker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_acquire()
            .map_err(|rejected| format!("route {target}: {rejected}"))?;
        let event = ActionEvent {
            envelope,
            describer: self.describer.as_ref(),
        };
        let outcome = route
            .spec
            .action
            .run(&route.spec.organization_id, &event)
            .await
            .map_err(|error| format!("route {target}: {error}"));
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
}

fn route(spec: RouteSpec, breaker: &BreakerConfig) -> Route {
    Route {
        pattern: WildMatch::new(&spec.event_type),
        breaker: Mutex::new(CircuitBreaker::new(breaker.clone())),
        spec,
    }
}

/// `http.forward`: POSTs the normalized event to `url`, signed with `secret`.
pub struct HttpForward {
    client: reqwest::Client,
}

impl HttpForward {
    pub fn new(timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { client }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForwardSettings {
    url: String,
    /// Signs forwarded events (`whsec_...`).
    secret: Secret,
}

const SECRET: &str = "secret";

impl ActionKind for HttpForward {
    fn name(&self) -> &'static str {
        HTTP_FORWARD
    }

    fn secret_settings(&self) -> &'static [&'static str] {
        &[SECRET]
    }

    fn complete(&self, settings: &mut Settings) -> Vec<&'static str> {
        if settings.contains_key(SECRET) {
            return Vec::new();
        }
        let secret = standard_webhooks::generate_secret();
        settings.insert(SECRET.into(), secret.expose().as_str().into());
        vec![SECRET]
    }

    fn prepare(&self, settings: &Settings) -> Result<Arc<dyn Action>, Vec<Problem>> {
        let mut problems = Vec::new();
        let url = settings.get("url").and_then(|u| u.as_str()).unwrap_or("");
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            problems.push(Problem::new("url", "must be an http(s) URL"));
        }
        let signs = settings
            .get(SECRET)
            .and_then(|s| s.as_str())
            .is_some_and(|secret| {
                standard_webhooks::sign(&Secret::new(secret.to_string()), "check", 0, b"").is_ok()
            });
        if !signs {
            problems.push(Problem::new(SECRET, "must be a whsec_ secret (base64)"));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let typed: ForwardSettings = super::actions::typed_settings(settings)?;
        Ok(Arc::new(Forward {
            client: self.client.clone(),
            url: typed.url,
            secret: typed.secret,
        }))
    }
}

struct Forward {
    client: reqwest::Client,
    url: String,
    secret: Secret,
}

#[async_trait::async_trait]
impl Action for Forward {
    fn target(&self) -> String {
        self.url.clone()
    }

    async fn run(&self, _organization_id: &str, event: &ActionEvent<'_>) -> Result<(), String> {
        let envelope = event.envelope;
        let body = serde_json::to_vec(envelope).map_err(|e| e.to_string())?;
        let timestamp = standard_webhooks::unix_now();
        let signature = standard_webhooks::sign(&self.secret, &envelope.id, timestamp, &body)
            .map_err(|e| e.to_string())?;
        let sent = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header(standard_webhooks::ID, &envelope.id)
            .header(standard_webhooks::TIMESTAMP, timestamp.to_string())
            .header(standard_webhooks::SIGNATURE, signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("answered {}", response.status())),
            Err(error) => Err(format!("unreachable: {error}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts the events it is run for.
    struct Counting(Arc<AtomicUsize>);

    #[async_trait::async_trait]
    impl Action for Counting {
        fn target(&self) -> String {
            "counting".into()
        }
        async fn run(&self, _: &str, _: &ActionEvent<'_>) -> Result<(), String> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    struct Plain;

    impl Describe for Plain {
        fn describe(&self, _: &Envelope) -> Option<String> {
            None
        }
    }

    fn envelope() -> Envelope {
        Envelope {
            id: "e1".into(),
            organization_id: Some("org".into()),
            integration_id: Some("i1".into()),
            connector: "webhook".into(),
            event_type: "order.created".into(),
            delivery_id: "d1".into(),
            occurred_at: None,
            received_at: "2026-12-04T00:00:00Z".into(),
            payload: serde_json::json!({}),
        }
    }

    #[tokio::test]
    async fn no_event_passes_the_routes_before_the_tenant_routes_are_loaded() {
        let routes = Arc::new(Routes::new(
            Vec::new(),
            &BreakerConfig::default(),
            Arc::new(Plain),
        ));
        // Until then anything may have a route: nothing is settled as unwanted.
        assert!(routes.wants(Some("org"), "webhook", "order.created"));
        let dispatch = tokio::spawn({
            let routes = Arc::clone(&routes);
            async move { routes.dispatch(&envelope()).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !dispatch.is_finished(),
            "dispatch waits for the tenant routes"
        );

        let runs = Arc::new(AtomicUsize::new(0));
        let tenant_route = RouteSpec {
            id: Some("r1".into()),
            organization_id: "org".into(),
            connector: "webhook".into(),
            event_type: "order.*".into(),
            action: Arc::new(Counting(Arc::clone(&runs))),
        };
        routes.set_tenant_routes(&HashSet::new(), vec![tenant_route]);
        assert_eq!(dispatch.await.unwrap(), Ok(1));
        assert_eq!(runs.load(Ordering::SeqCst), 1, "the tenant route ran");
        assert!(!routes.wants(Some("org"), "webhook", "invoice.paid"));
    }
}
