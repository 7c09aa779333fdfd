//! Health reports: what every supervised actor looks like from the outside.
//!
//! A report is observed, never waited on: [`observe`] asks an actor for its report and,
//! past a timeout, falls back to the last report it got, marked `stale`. A busy actor
//! therefore slows nobody's health check down.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ractor::{ActorRef, Message, RpcReplyPort};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::circuit_breaker::BreakerSnapshot;

/// Where an actor is in its life, as its supervisor and the actor itself see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Starting,
    Running,
    /// Waiting out the backoff delay before a restart.
    Backoff,
    Restarting,
    Stopped,
    /// Gave up: restart intensity exceeded, or failed and not to be restarted.
    Failed,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Starting,
        Status::Running,
        Status::Backoff,
        Status::Restarting,
        Status::Stopped,
        Status::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Running => "running",
            Status::Backoff => "backoff",
            Status::Restarting => "restarting",
            Status::Stopped => "stopped",
            Status::Failed => "failed",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A wall-clock instant, serialized as RFC 3339 (`2026-11-22T21:34:47.123Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub SystemTime);

impl Timestamp {
    pub fn now() -> Self {
        Self(SystemTime::now())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_rfc3339_millis(self.0))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        humantime::parse_rfc3339_weak(&text)
            .map(Timestamp)
            .map_err(serde::de::Error::custom)
    }
}

/// Why an actor stopped abnormally, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub reason: String,
    pub at: Timestamp,
}

/// One node of the health tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// The stable name under which the supervisor knows the actor.
    pub name: String,
    /// What sort of actor it is (`supervisor`, `connector`, `integration`, ...).
    pub kind: String,
    pub status: Status,
    /// The running actor's id; it changes with every restart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor_id: Option<String>,
    /// Restarts after a failure or an exit.
    pub restarts: u32,
    /// Restarts asked for explicitly (an operator, the admin endpoint), counted apart.
    pub manual_restarts: u32,
    /// What is wrong now; cleared once the actor recovers.
    pub last_error: Option<String>,
    /// The last failure that stopped the actor (and when), kept after it recovered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Failure>,
    pub last_restart_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerSnapshot>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mailbox_len: Option<usize>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, serde_json::Value>,
    /// The actor did not answer in time: this is the last report it gave.
    pub stale: bool,
    pub children: Vec<HealthReport>,
}

impl HealthReport {
    pub fn new(name: impl Into<String>, kind: impl Into<String>, status: Status) -> Self {
        Self {
            name: name.into(),
            kind: kind.into(),
            status,
            actor_id: None,
            restarts: 0,
            manual_restarts: 0,
            last_error: None,
            last_failure: None,
            last_restart_at: None,
            breaker: None,
            mailbox_len: None,
            details: BTreeMap::new(),
            stale: false,
            children: Vec::new(),
        }
    }

    pub fn with_detail(mut self, key: impl Into<String>, value: impl Serialize) -> Self {
        self.details.insert(
            key.into(),
            serde_json::to_value(value).unwrap_or(serde_json::Value::Null),
        );
        self
    }

    /// The node at a path of names below this one (`["connector:slack", "integration:.."]`).
    pub fn find(&self, path: &[&str]) -> Option<&HealthReport> {
        match path.split_first() {
            None => Some(self),
            Some((first, rest)) => self
                .children
                .iter()
                .find(|child| child.name == *first)
                .and_then(|child| child.find(rest)),
        }
    }

    /// Depth-first search for a node by name anywhere below (and including) this one.
    pub fn find_named(&self, name: &str) -> Option<&HealthReport> {
        if self.name == name {
            return Some(self);
        }
        self.children
            .iter()
            .find_map(|child| child.find_named(name))
    }

    /// Every node of the tree, depth first, with its parent's name.
    pub fn walk(&self) -> Vec<(Option<&str>, &HealthReport)> {
        let mut nodes = vec![(None, self)];
        let mut index = 0;
        while index < nodes.len() {
            let parent = nodes[index].1;
            nodes.extend(
                parent
                    .children
                    .iter()
                    .map(|c| (Some(parent.name.as_str()), c)),
            );
            index += 1;
        }
        nodes
    }

    /// Lays the actor's own report over what its supervisor knows of it: the supervisor
    /// owns the lifecycle (status while not running, restarts), the actor everything else.
    pub fn merged_with(self, own: HealthReport) -> HealthReport {
        HealthReport {
            status: match self.status {
                Status::Running => own.status,
                supervised => supervised,
            },
            kind: if own.kind.is_empty() {
                self.kind
            } else {
                own.kind
            },
            last_error: own.last_error.or(self.last_error),
            last_failure: own.last_failure.or(self.last_failure),
            stale: own.stale || self.stale,
            name: self.name,
            actor_id: self.actor_id,
            restarts: self.restarts,
            manual_restarts: self.manual_restarts,
            last_restart_at: self.last_restart_at,
            breaker: own.breaker,
            mailbox_len: own.mailbox_len,
            details: own.details,
            children: own.children,
        }
    }
}

/// The message an observable actor answers with its report.
pub struct ObserveHealth(pub RpcReplyPort<HealthReport>);

/// Makes an actor observable: `observable!(MyMsg::Observe)` converts [`ObserveHealth`]
/// into the message variant that carries the reply port.
#[macro_export]
macro_rules! observable {
    ($message:ident :: $variant:ident) => {
        impl From<$crate::ObserveHealth> for $message {
            fn from($crate::ObserveHealth(reply): $crate::ObserveHealth) -> Self {
                $message::$variant(reply)
            }
        }
    };
}

/// The last report an actor gave, kept by whoever observes it. Empty until the first
/// observation, so that a hundred thousand idle children cost a pointer each.
/// The last report an actor gave, kept as its JSON text: a supervisor keeps one per
/// child (a hundred thousand integrations), and the text is a fifth of the tree's size
/// in memory. Read back only when the actor does not answer in time.
#[derive(Debug, Clone, Default)]
pub struct ReportCache(Arc<Mutex<Option<Box<str>>>>);

impl ReportCache {
    pub fn store(&self, report: &HealthReport) {
        let text = serde_json::to_string(report)
            .ok()
            .map(String::into_boxed_str);
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = text;
    }

    /// The last report, marked stale.
    pub fn stale(&self) -> Option<HealthReport> {
        let text = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()?;
        let mut report: HealthReport = serde_json::from_str(&text).ok()?;
        report.stale = true;
        Some(report)
    }
}

/// Asks `actor` for its report; past `timeout`, returns the cached one marked stale.
pub async fn observe<M>(
    actor: &ActorRef<M>,
    timeout: Duration,
    cache: &ReportCache,
) -> Option<HealthReport>
where
    M: Message + From<ObserveHealth>,
{
    match actor
        .call(|reply| M::from(ObserveHealth(reply)), Some(timeout))
        .await
    {
        Ok(ractor::rpc::CallResult::Success(report)) => {
            cache.store(&report);
            Some(report)
        }
        _ => cache.stale(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_report_comes_back_whole_and_marked_stale() {
        let at = Timestamp(SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_849_600_123));
        let mut report = HealthReport::new("integration:1", "integration", Status::Running)
            .with_detail("organization_id", "org-1")
            .with_detail(
                "limiter",
                serde_json::json!({"keys": 0, "blocked_for_ms": null}),
            );
        report.actor_id = Some("0.7".into());
        report.restarts = 2;
        report.last_error = Some("validation failed".into());
        report.last_failure = Some(Failure {
            reason: "panicked".into(),
            at,
        });
        report.last_restart_at = Some(at);
        report.breaker = Some(crate::circuit_breaker::BreakerSnapshot {
            state: crate::circuit_breaker::BreakerState::Open,
            calls: 4,
            failures: 3,
            failure_rate: Some(75.0),
            last_transition: Some(crate::circuit_breaker::Transition {
                from: crate::circuit_breaker::BreakerState::Closed,
                to: crate::circuit_breaker::BreakerState::Open,
                at,
            }),
        });
        let cache = ReportCache::default();
        assert_eq!(cache.stale(), None);
        cache.store(&report);
        let mut expected = report.clone();
        expected.stale = true;
        assert_eq!(cache.stale(), Some(expected));
    }

    fn tree() -> HealthReport {
        let mut root = HealthReport::new("root", "supervisor", Status::Running);
        let mut slack = HealthReport::new("connector:slack", "connector", Status::Running);
        slack.children.push(HealthReport::new(
            "integration:1",
            "integration",
            Status::Backoff,
        ));
        root.children.push(slack);
        root.children
            .push(HealthReport::new("vault", "vault", Status::Running));
        root
    }

    #[test]
    fn find_follows_a_path_of_names() {
        let root = tree();
        let node = root
            .find(&["connector:slack", "integration:1"])
            .expect("found");
        assert_eq!(node.status, Status::Backoff);
        assert!(root.find(&["connector:github"]).is_none());
        assert_eq!(
            root.find_named("vault").map(|n| n.kind.as_str()),
            Some("vault")
        );
        assert_eq!(root.walk().len(), 4);
    }

    #[test]
    fn serializes_statuses_and_timestamps_for_humans() {
        let mut report = HealthReport::new("vault", "vault", Status::Restarting);
        report.last_restart_at = Some(Timestamp(
            SystemTime::UNIX_EPOCH + Duration::from_millis(1500),
        ));
        let json = serde_json::to_value(&report).expect("serializes");
        assert_eq!(json["status"], "restarting");
        assert_eq!(json["last_restart_at"], "1970-01-01T00:00:01.500Z");
        assert!(json.get("breaker").is_none());
    }

    #[test]
    fn the_supervisor_owns_the_lifecycle_and_the_actor_the_rest() {
        let mut supervised = HealthReport::new("integration:1", "", Status::Running);
        supervised.restarts = 2;
        let own = HealthReport::new("whatever", "integration", Status::Running)
            .with_detail("expires_at", "soon");
        let merged = supervised.clone().merged_with(own.clone());
        assert_eq!(merged.name, "integration:1");
        assert_eq!(merged.restarts, 2);
        assert_eq!(merged.kind, "integration");
        assert_eq!(merged.details["expires_at"], "soon");

        supervised.status = Status::Backoff;
        assert_eq!(supervised.merged_with(own).status, Status::Backoff);
    }
}
