//! Route actions: what a route does with an event. Each is named by its full name
//! (`http.forward`, `<connector>.post`, ...) and owned by whoever provides it: `http.forward`
//! is the pipeline's own, the rest come from connectors. The owner checks a route's
//! settings (a bad one is a problem naming the setting) and prepares the action once;
//! routes then run the prepared action for each event they take.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::Envelope;
use crate::problem::Problem;

/// A route's action settings, as given (`channel`, `url`, `secret`, ...).
pub type Settings = serde_json::Map<String, Value>;

/// A kind of action, as its owner registers it.
pub trait ActionKind: Send + Sync + 'static {
    /// The full name routes use: `<owner>.<verb>`.
    fn name(&self) -> &'static str;

    /// Settings that are secrets: encrypted in the store, shown only once.
    fn secret_settings(&self) -> &'static [&'static str] {
        &[]
    }

    /// Fills in what a tenant may leave out (a generated signing secret), before
    /// [`ActionKind::prepare`]; the names of the settings it generated.
    fn complete(&self, _settings: &mut Settings) -> Vec<&'static str> {
        Vec::new()
    }

    /// Checks the settings and prepares the action; each problem is keyed by the
    /// setting's name.
    fn prepare(&self, settings: &Settings) -> Result<Arc<dyn Action>, Vec<Problem>>;
}

/// A prepared action, run for every event its route takes.
#[async_trait::async_trait]
pub trait Action: Send + Sync + 'static {
    /// Where it sends events, for logs and errors (`https://…`, `<connector>:<channel>`).
    fn target(&self) -> String;

    /// Runs for one event of `organization_id`. An `Err` fails the event's attempt.
    async fn run(&self, organization_id: &str, event: &ActionEvent<'_>) -> Result<(), String>;
}

/// Gives a readable line about an event, from the connector that knows its kind.
pub trait Describe: Send + Sync + 'static {
    fn describe(&self, envelope: &Envelope) -> Option<String>;

    /// What the event is about, when it is one step in the life of something that
    /// lasts (an alert, an incident); see [`Subject`].
    fn subject(&self, _envelope: &Envelope) -> Option<Subject> {
        None
    }
}

/// The thing an event is about, the same across its events: a monitoring alert from
/// trigger to recovery, an on-call incident. Actions use it to fold an event into
/// what came before: one incident per alert, one chat message updated as the
/// incident moves on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// Stable across the subject's events, and unique across connectors
    /// (`<connector>:<kind>:<id>`).
    pub key: String,
    /// Whether this event ends it (a recovery, a resolution).
    pub ends: bool,
    /// What a person can do about it now, offered as buttons in chat messages.
    pub controls: Vec<Control>,
}

/// Something a person can do about a subject from a chat message: a button whose
/// click the chat connector hands to the daemon as an operation of the connector
/// that offered it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Control {
    /// What the button says.
    pub label: String,
    /// `<connector>.<verb>`: who acts, and how (`<connector>.acknowledge`).
    pub operation: String,
    /// What it acts on, in the connector's terms (an incident id).
    pub target: String,
    /// `primary` or `danger`: how the button looks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style: Option<String>,
}

/// An event as an action sees it.
pub struct ActionEvent<'a> {
    pub envelope: &'a Envelope,
    pub describer: &'a dyn Describe,
}

impl ActionEvent<'_> {
    /// A readable line about the event: its connector's, or a plain one.
    pub fn line(&self) -> String {
        self.describer.describe(self.envelope).unwrap_or_else(|| {
            format!(
                "{} event `{}` (id {})",
                self.envelope.connector, self.envelope.event_type, self.envelope.id
            )
        })
    }

    /// What the event is about, if its connector knows.
    pub fn subject(&self) -> Option<Subject> {
        self.describer.subject(self.envelope)
    }
}

/// `text` cut to at most `max` characters (a provider's limit on a title), ending in
/// `…` when cut.
pub fn truncated(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Every action kind this daemon offers, by full name.
#[derive(Clone, Default)]
pub struct ActionKinds {
    kinds: BTreeMap<&'static str, Arc<dyn ActionKind>>,
}

impl ActionKinds {
    pub fn with(mut self, kind: Arc<dyn ActionKind>) -> Self {
        self.kinds.insert(kind.name(), kind);
        self
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn ActionKind>> {
        self.kinds.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.keys().copied()
    }

    /// The kind named `name`, or a problem listing those there are.
    pub fn find(&self, name: &str) -> Result<&Arc<dyn ActionKind>, Problem> {
        self.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.names().collect();
            Problem::new(
                "action",
                format!(
                    "unknown action '{name}' (this daemon offers: {})",
                    known.join(", ")
                ),
            )
        })
    }
}

/// Reads settings into an action's own typed form; unknown or mistyped settings are
/// problems naming them.
pub fn typed_settings<T: serde::de::DeserializeOwned>(
    settings: &Settings,
) -> Result<T, Vec<Problem>> {
    crate::problem::deserialize(Value::Object(settings.clone()), "").map_err(|mut problem| {
        if problem.key == "(top level)" {
            problem.key = "settings".to_string();
        }
        vec![problem]
    })
}
