//! The Slack connector: OAuth v2 installs, bot tokens (with rotation), the Web API,
//! Events API requests over HTTP, Socket Mode, and the bot people talk to.
//!
//! - [`web_api`]: calls, typed `ok: false` errors, per-method tiers, `Retry-After`;
//! - [`signature`]: v0 request signatures;
//! - [`events`]: what Slack sends, classified by workspace and type;
//! - [`socket_mode`]: the `slack:socket` actor and its WebSocket client;
//! - [`bot`]: the commands and their answers.
//!
//! A workspace (team id) is bound to one organization's integration; its events reach
//! that integration's actor, which runs [`Connector::handle_event`] here: the bot's
//! replies, and `app_uninstalled`/`tokens_revoked`, which revoke the integration.

pub mod bot;
pub mod config;
pub mod events;
pub mod ingress;
mod interactions;
pub mod post;
pub mod signature;
pub mod socket_mode;
pub mod web_api;

use std::sync::{Arc, OnceLock};

use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{debug, warn};

pub use self::config::SlackConfig;
use self::web_api::{Auth, SlackError, SlackWebApi};
use super::ingress::Ingress;
use super::{
    AuthorizationStart, AuthorizeRequest, Authorized, CallbackRequest, Connector, ConnectorContext,
    ConnectorError, CredentialValue, Credentials, EventEffect, Provider, ProviderGate,
};
use crate::pipeline::Envelope;
use crate::pipeline::actions::ActionKind;
use crate::secret::Secret;

pub const NAME: &str = "slack";
pub const BOT_TOKEN: &str = "bot_token";
pub const REFRESH_TOKEN: &str = "refresh_token";

pub const PROVIDER: Provider = Provider {
    name: NAME,
    build: |section| {
        Ok(Arc::new(SlackConnector::build(&SlackConfig::from_section(
            section,
        )?)))
    },
};

pub struct SlackConnector {
    shared: Arc<Shared>,
}

/// What the connector, its Socket Mode actor and the HTTP ingress share.
pub struct Shared {
    pub config: SlackConfig,
    pub api: SlackWebApi,
    agent: reqwest::Client,
    /// The daemon, once the tree is built.
    context: OnceLock<ConnectorContext>,
}

impl SlackConnector {
    pub fn build(config: &SlackConfig) -> Self {
        let api = SlackWebApi::new(&config.api_base_url, config.request_timeout);
        let agent = crate::connectors::http::client(config.agent_timeout);
        Self {
            shared: Arc::new(Shared {
                config: config.clone(),
                api,
                agent,
                context: OnceLock::new(),
            }),
        }
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

#[derive(Deserialize)]
struct OauthAccess {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<i64>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    bot_user_id: Option<String>,
    #[serde(default)]
    app_id: Option<String>,
    team: Option<Team>,
}

#[derive(Deserialize)]
struct Team {
    id: String,
    #[serde(default)]
    name: Option<String>,
}

/// The bot token and, with token rotation on, its refresh token: one set, replaced together.
fn token_values(access: &OauthAccess) -> Vec<CredentialValue> {
    let expires_at = access
        .expires_in
        .map(|seconds| crate::store::now() + chrono::Duration::seconds(seconds));
    let mut values = vec![CredentialValue {
        credential_type: BOT_TOKEN.to_string(),
        secret: Secret::new(access.access_token.clone()),
        expires_at,
    }];
    if let Some(refresh) = &access.refresh_token {
        values.push(CredentialValue {
            credential_type: REFRESH_TOKEN.to_string(),
            secret: Secret::new(refresh.clone()),
            expires_at: None,
        });
    }
    values
}

/// A message to post.
pub struct Message<'a> {
    pub channel: &'a str,
    pub text: &'a str,
    pub thread_ts: Option<&'a str>,
    /// Block Kit blocks; `text` is then the fallback.
    pub blocks: Option<Value>,
}

fn bot_token(credentials: &Credentials) -> Result<&Secret, ConnectorError> {
    credentials
        .get(BOT_TOKEN)
        .ok_or_else(|| ConnectorError::Unauthorized("no bot token".into()))
}

fn team_of(credentials: &Credentials) -> &str {
    credentials.external_id.as_deref().unwrap_or("unknown-team")
}

/// What someone said to the bot, and where.
struct Said<'a> {
    channel: &'a str,
    thread_ts: &'a str,
    user: &'a str,
    text: &'a str,
}

impl Shared {
    fn client_secret(&self) -> Result<&Secret, ConnectorError> {
        self.config.client_secret.as_ref().ok_or_else(|| {
            ConnectorError::Invalid("connectors.slack.client_secret is not set".into())
        })
    }

    /// `chat.postMessage` as the workspace's bot, in a thread when `thread_ts` is set.
    /// With `blocks`, `text` is the notification's fallback.
    pub async fn post_message(
        &self,
        team: &str,
        token: &Secret,
        message: Message<'_>,
    ) -> Result<Value, SlackError> {
        let mut body = json!({"channel": message.channel, "text": message.text});
        if let Some(thread_ts) = message.thread_ts {
            body["thread_ts"] = json!(thread_ts);
        }
        if let Some(blocks) = message.blocks {
            body["blocks"] = blocks;
        }
        self.api.json(team, "chat.postMessage", token, &body).await
    }

    /// The answer to a command from `user` of the organization, or `None` when the
    /// text is a conversation for the agent.
    pub async fn command_answer(
        &self,
        organization_id: &str,
        user: &str,
        text: &str,
    ) -> Option<String> {
        let command = bot::parse(text);
        bot::answer(
            &command,
            self.context.get().map(|context| &context.daemon),
            organization_id,
            user,
            &self.config.admins,
        )
        .await
    }

    /// The immediate answer to a `/switchboard` command (its payload names the user
    /// and the text), as Slack takes it in a response or an acknowledgement.
    pub async fn slash_command_response(&self, organization_id: &str, payload: &Value) -> Value {
        let user = payload["user_id"].as_str().unwrap_or_default();
        let text = payload["text"].as_str().unwrap_or_default();
        let answer = self
            .command_answer(organization_id, user, text)
            .await
            .unwrap_or_else(|| bot::HELP.to_string());
        json!({"response_type": "ephemeral", "text": answer})
    }

    /// A message to the bot (a DM or a mention): answered in its thread. Each Web API
    /// request goes through the integration's `provider` gate.
    async fn converse(
        &self,
        credentials: &Credentials,
        event: &events::InnerEvent,
        provider: &ProviderGate,
    ) -> Result<(), ConnectorError> {
        let token = bot_token(credentials)?;
        let team = team_of(credentials);
        let (Some(channel), Some(ts)) = (&event.channel, &event.ts) else {
            return Ok(());
        };
        let user = event.user.clone().unwrap_or_default();
        let text = event.text.clone().unwrap_or_default();
        let thread_ts = event.thread_ts.clone().unwrap_or_else(|| ts.clone());
        let answer = match self
            .command_answer(&credentials.organization_id, &user, &text)
            .await
        {
            Some(answer) => answer,
            None => match &self.config.agent_url {
                Some(url) => {
                    let said = Said {
                        channel,
                        thread_ts: &thread_ts,
                        user: &user,
                        text: &text,
                    };
                    self.ask_agent(url, credentials, said, provider).await?
                }
                None => format!("I don't know that one.\n{}", bot::HELP),
            },
        };
        let reply = Message {
            channel,
            text: &answer,
            thread_ts: Some(&thread_ts),
            blocks: None,
        };
        provider
            .call(async {
                self.post_message(team, token, reply)
                    .await
                    .map_err(ConnectorError::from)
            })
            .await?;
        Ok(())
    }

    /// Forwards a conversation to the agent service with the thread's earlier messages.
    async fn ask_agent(
        &self,
        url: &str,
        credentials: &Credentials,
        said: Said<'_>,
        provider: &ProviderGate,
    ) -> Result<String, ConnectorError> {
        let Said {
            channel,
            thread_ts,
            user,
            text,
        } = said;
        let token = bot_token(credentials)?;
        let team = team_of(credentials);
        let replies = provider
            .call(async {
                self.api
                    .form(
                        team,
                        "conversations.replies",
                        Auth::Bearer(token),
                        &[("channel", channel), ("ts", thread_ts), ("limit", "50")],
                    )
                    .await
                    .map_err(ConnectorError::from)
            })
            .await;
        let messages: Vec<Value> = match replies {
            Ok(answer) => answer["messages"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .map(|m| json!({"user": m["user"], "bot_id": m["bot_id"], "text": m["text"], "ts": m["ts"]}))
                        .collect()
                })
                .unwrap_or_default(),
            // The event waits for the quota; it is handled again after.
            Err(error @ ConnectorError::QuotaSpent { .. }) => return Err(error),
            Err(error) => {
                warn!(error = %error, "thread history unavailable for the agent");
                Vec::new()
            }
        };
        let request = json!({
            "organization": credentials.organization_id,
            "channel": channel,
            "thread_ts": thread_ts,
            "user": user,
            "text": text,
            "messages": messages,
        });
        let response = self
            .agent
            .post(url)
            .json(&request)
            .send()
            .await
            .map_err(|e| ConnectorError::Unavailable(format!("agent unreachable: {e}")))?;
        if !response.status().is_success() {
            return Err(ConnectorError::Unavailable(format!(
                "agent answered {}",
                response.status()
            )));
        }
        let answer: Value = response
            .json()
            .await
            .map_err(|e| ConnectorError::Unavailable(format!("agent answer unreadable: {e}")))?;
        Ok(answer["text"].as_str().unwrap_or_default().to_string())
    }
}

#[async_trait::async_trait]
impl Connector for SlackConnector {
    fn name(&self) -> &str {
        NAME
    }

    fn attach(&self, context: &ConnectorContext) {
        let _ = self.shared.context.set(context.clone());
    }

    fn ingress(&self) -> Option<Arc<dyn Ingress>> {
        Some(Arc::new(ingress::SlackIngress {
            shared: Arc::clone(&self.shared),
        }))
    }

    fn actions(&self) -> Vec<Arc<dyn ActionKind>> {
        vec![Arc::new(post::SlackPost {
            shared: Arc::clone(&self.shared),
        })]
    }

    fn actors(&self, context: &ConnectorContext) -> Vec<switchboard_actors::ChildSpec> {
        if self.shared.config.socket_mode {
            vec![socket_mode::child_spec(
                Arc::clone(&self.shared),
                context.clone(),
            )]
        } else {
            Vec::new()
        }
    }

    async fn authorize(
        &self,
        request: &AuthorizeRequest,
    ) -> Result<AuthorizationStart, ConnectorError> {
        let config = &self.shared.config;
        let mut url = url::Url::parse(&format!(
            "{}/oauth/v2/authorize",
            config.web_base_url.trim_end_matches('/')
        ))
        .map_err(|e| ConnectorError::Invalid(format!("bad Slack web URL: {e}")))?;
        let redirect = config
            .redirect_url
            .as_deref()
            .unwrap_or(&request.redirect_url);
        url.query_pairs_mut()
            .append_pair("client_id", &config.client_id)
            .append_pair("scope", &config.scopes.join(","))
            .append_pair("redirect_uri", redirect)
            .append_pair("state", &request.state);
        Ok(AuthorizationStart::Oauth2 {
            url: url.to_string(),
        })
    }

    async fn complete(&self, request: &CallbackRequest) -> Result<Authorized, ConnectorError> {
        let code = request
            .code
            .as_ref()
            .ok_or_else(|| ConnectorError::Invalid("the authorization code is missing".into()))?;
        let config = &self.shared.config;
        let redirect = config
            .redirect_url
            .as_deref()
            .unwrap_or(&request.redirect_url);
        let answer = self
            .shared
            .api
            .form(
                "oauth",
                "oauth.v2.access",
                Auth::Client {
                    id: &config.client_id,
                    secret: self.shared.client_secret()?,
                },
                &[("code", code.expose()), ("redirect_uri", redirect)],
            )
            .await
            .map_err(|error| match error {
                SlackError::Api(code) | SlackError::Auth(code) => {
                    ConnectorError::Invalid(format!("Slack refused the authorization: {code}"))
                }
                other => other.into(),
            })?;
        let access: OauthAccess = serde_json::from_value(answer).map_err(|e| {
            ConnectorError::Unavailable(format!("unexpected oauth.v2.access answer: {e}"))
        })?;
        let team = access
            .team
            .as_ref()
            .ok_or_else(|| ConnectorError::Invalid("Slack named no workspace".into()))?;
        let scopes: Vec<&str> = access
            .scope
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .collect();
        Ok(Authorized {
            external_id: Some(team.id.clone()),
            metadata: json!({
                "team": team.name,
                "team_id": team.id,
                "bot_user_id": access.bot_user_id,
                "app_id": access.app_id,
                "scopes": scopes,
                "token_rotation": access.refresh_token.is_some(),
            }),
            credentials: token_values(&access),
            reveal: None,
        })
    }

    async fn validate(&self, credentials: &Credentials) -> Result<(), ConnectorError> {
        self.shared
            .api
            .form(
                team_of(credentials),
                "auth.test",
                Auth::Bearer(bot_token(credentials)?),
                &[],
            )
            .await?;
        Ok(())
    }

    async fn refresh(
        &self,
        credentials: &Credentials,
    ) -> Result<Vec<CredentialValue>, ConnectorError> {
        // Without token rotation a bot token never expires: nothing to refresh.
        let refresh = credentials
            .get(REFRESH_TOKEN)
            .ok_or(ConnectorError::NotSupported)?;
        let config = &self.shared.config;
        let answer = self
            .shared
            .api
            .form(
                team_of(credentials),
                "oauth.v2.access",
                Auth::Client {
                    id: &config.client_id,
                    secret: self.shared.client_secret()?,
                },
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh.expose()),
                ],
            )
            .await
            .map_err(|error| match error {
                // invalid_refresh_token and friends: the grant is gone.
                SlackError::Api(code) => ConnectorError::Unauthorized(code),
                other => other.into(),
            })?;
        let access: OauthAccess = serde_json::from_value(answer)
            .map_err(|e| ConnectorError::Unavailable(format!("unexpected refresh answer: {e}")))?;
        Ok(token_values(&access))
    }

    async fn revoke(&self, credentials: &Credentials) -> Result<(), ConnectorError> {
        match self
            .shared
            .api
            .form(
                team_of(credentials),
                "auth.revoke",
                Auth::Bearer(bot_token(credentials)?),
                &[],
            )
            .await
        {
            // Already revoked: what was asked is done.
            Ok(_) | Err(SlackError::Auth(_)) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// What the bot answers (mentions, messages) and what revokes the integration.
    fn handles(&self, event_type: &str) -> bool {
        event_type.starts_with("app_mention")
            || event_type.starts_with("message")
            || matches!(
                event_type,
                "app_uninstalled" | "tokens_revoked" | "interactive.block_actions"
            )
    }

    async fn handle_event(
        &self,
        credentials: &Credentials,
        event: &Envelope,
        provider: &ProviderGate,
    ) -> Result<EventEffect, ConnectorError> {
        if event.event_type == "interactive.block_actions" {
            self.shared
                .clicked(credentials, &event.payload, provider)
                .await?;
            return Ok(EventEffect::None);
        }
        if !event.event_type.starts_with("app_mention") && !event.event_type.starts_with("message")
        {
            return Ok(match event.event_type.as_str() {
                "app_uninstalled" => EventEffect::Revoked {
                    reason: "the Slack app was uninstalled from the workspace".into(),
                },
                "tokens_revoked" if revokes_bot(&event.payload) => EventEffect::Revoked {
                    reason: "Slack revoked the bot token".into(),
                },
                _ => EventEffect::None,
            });
        }
        let Ok(callback) = serde_json::from_value::<events::EventCallback>(event.payload.clone())
        else {
            warn!(event_id = %event.id, "Slack event not understood");
            return Ok(EventEffect::None);
        };
        let inner = &callback.event;
        let bot_user = credentials.metadata["bot_user_id"].as_str();
        let from_a_bot = inner.bot_id.is_some()
            || inner.subtype.is_some()
            || (inner.user.is_some() && inner.user.as_deref() == bot_user);
        let to_the_bot = inner.kind == "app_mention" || inner.channel_type.as_deref() == Some("im");
        if from_a_bot || !to_the_bot {
            return Ok(EventEffect::None);
        }
        debug!(integration_id = %credentials.integration_id, event = %event.event_type, "answering in Slack");
        self.shared.converse(credentials, inner, provider).await?;
        Ok(EventEffect::None)
    }
}

/// Whether a `tokens_revoked` event names bot tokens (the ones switchboard holds).
fn revokes_bot(payload: &Value) -> bool {
    payload
        .pointer("/event/tokens/bot")
        .and_then(Value::as_array)
        .is_some_and(|bots| !bots.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_revoked_matters_only_when_it_names_bot_tokens() {
        let bot =
            json!({"event": {"type": "tokens_revoked", "tokens": {"oauth": [], "bot": ["U0BOT"]}}});
        let user_only =
            json!({"event": {"type": "tokens_revoked", "tokens": {"oauth": ["U0HUMAN"]}}});
        assert!(revokes_bot(&bot));
        assert!(!revokes_bot(&user_only));
    }
}
