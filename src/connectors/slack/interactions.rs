//! Clicks on switchboard's buttons (`block_actions` whose `action_id` starts with
//! `switchboard:`), handled once the interaction is durable, like every Slack event:
//! Slack's 3 seconds are met by the acknowledgement, and a failed attempt is retried
//! by the pipeline.
//!
//! The button names an operation of the connector that offered it (see
//! `pipeline::actions::Control`); the daemon runs it for the organization the clicking
//! workspace is bound to, and for no other: a button copied from another
//! organization's message is refused. The person is named by their email when the bot
//! may read it (`users.info`, scope `users:read.email`), so that the provider records
//! who acted. What the person should know (the incident was already resolved, the
//! button is not theirs) comes back as an ephemeral message through `response_url`.

use serde_json::{Value, json};
use tracing::{info, warn};

use super::post::{BUTTON_PREFIX, ButtonValue};
use super::web_api::Auth;
use super::{Shared, bot_token, team_of};
use crate::connectors::{ConnectorError, Credentials, Operated, Operation, Person, ProviderGate};

impl Shared {
    /// Runs the operations of switchboard's buttons in a `block_actions` payload.
    pub(super) async fn clicked(
        &self,
        credentials: &Credentials,
        payload: &Value,
        provider: &ProviderGate,
    ) -> Result<(), ConnectorError> {
        let clicks: Vec<(&str, &str)> = payload["actions"]
            .as_array()
            .map(|actions| {
                actions
                    .iter()
                    .filter_map(|a| {
                        let operation = a["action_id"].as_str()?.strip_prefix(BUTTON_PREFIX)?;
                        Some((operation, a["value"].as_str().unwrap_or_default()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        if clicks.is_empty() {
            return Ok(());
        }
        let response_url = payload["response_url"].as_str();
        let daemon = &self
            .context
            .get()
            .ok_or_else(|| ConnectorError::Unavailable("Slack is starting".into()))?
            .daemon;
        let by = self.person(credentials, &payload["user"], provider).await?;
        for (operation, value) in clicks {
            let Ok(value) = serde_json::from_str::<ButtonValue>(value) else {
                warn!(operation, "a switchboard button without a readable value");
                continue;
            };
            if value.organization_id != credentials.organization_id {
                warn!(integration_id = %credentials.integration_id, operation, "button of another organization refused");
                self.tell(
                    response_url,
                    "This button belongs to another organization's message: nothing was done.",
                )
                .await;
                continue;
            }
            let outcome = daemon
                .operate(&Operation {
                    organization_id: credentials.organization_id.clone(),
                    name: operation.to_string(),
                    target: value.target,
                    by: by.clone(),
                })
                .await;
            match outcome {
                Ok(Operated::Done(what)) => {
                    info!(integration_id = %credentials.integration_id, operation, by = %by.name, what = %what, "button operation done");
                }
                Ok(Operated::Declined(reason)) => self.tell(response_url, &reason).await,
                // Worth another attempt: the pipeline retries the click.
                Err(error)
                    if error.is_provider_failure()
                        || matches!(error, ConnectorError::QuotaSpent { .. }) =>
                {
                    return Err(error);
                }
                Err(error) => {
                    self.tell(response_url, &format!("That did not work: {error}"))
                        .await
                }
            }
        }
        Ok(())
    }

    /// Who clicked: their email through `users.info` when the bot may read it.
    async fn person(
        &self,
        credentials: &Credentials,
        user: &Value,
        provider: &ProviderGate,
    ) -> Result<Person, ConnectorError> {
        let id = user["id"].as_str().unwrap_or_default();
        let name = user["name"]
            .as_str()
            .or_else(|| user["username"].as_str())
            .unwrap_or(id)
            .to_string();
        if id.is_empty() {
            return Ok(Person { email: None, name });
        }
        let token = bot_token(credentials)?;
        let looked_up = provider
            .call(async {
                self.api
                    .form(
                        team_of(credentials),
                        "users.info",
                        Auth::Bearer(token),
                        &[("user", id)],
                    )
                    .await
                    .map_err(ConnectorError::from)
            })
            .await;
        let email = match looked_up {
            Ok(answer) => answer["user"]["profile"]["email"]
                .as_str()
                .map(str::to_string),
            Err(error @ ConnectorError::QuotaSpent { .. }) => return Err(error),
            Err(error) => {
                // Without the email the provider records the integration's own user.
                warn!(error = %error, "the clicking user's email is unavailable");
                None
            }
        };
        Ok(Person { email, name })
    }

    /// An ephemeral answer to the person who clicked, through the interaction's
    /// `response_url` (only one under Slack's hooks base).
    async fn tell(&self, response_url: Option<&str>, text: &str) {
        let Some(url) = response_url.filter(|url| {
            url.starts_with(&format!(
                "{}/",
                self.config.hooks_base_url.trim_end_matches('/')
            ))
        }) else {
            warn!("an interaction without a usable response_url: the person is not told");
            return;
        };
        let body = json!({"response_type": "ephemeral", "replace_original": false, "text": text});
        if let Err(error) = self.agent.post(url).json(&body).send().await {
            warn!(error = %error.without_url(), "the ephemeral answer could not be sent");
        }
    }
}
