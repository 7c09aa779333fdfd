//! The Slack bot: what `help`, `status`, `integrations` and `restart <connector>` answer,
//! in a DM, on a mention or through `/switchboard`. Anything else goes to the agent
//! service (`[bot] agent_url`) when there is one.

use std::sync::Arc;

use crate::connectors::DaemonServices;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Status,
    Integrations,
    Restart(String),
    /// Not a command: a conversation for the agent.
    Other(String),
}

/// Reads a command from a message, without the bot's mention (`<@U123> status`).
pub fn parse(text: &str) -> Command {
    let mut words = text
        .split_whitespace()
        .filter(|w| !(w.starts_with("<@") && w.ends_with('>')));
    let first = words.next().unwrap_or("help").to_ascii_lowercase();
    let rest: Vec<&str> = words.collect();
    match (first.as_str(), rest.as_slice()) {
        ("help", []) => Command::Help,
        ("status", []) => Command::Status,
        ("integrations", []) => Command::Integrations,
        ("restart", [connector]) => Command::Restart(connector.to_string()),
        _ => Command::Other(text.trim().to_string()),
    }
}

pub const HELP: &str = "I am switchboard. Ask me:\n\
• `help`: this message\n\
• `status`: your organization's integrations and their health\n\
• `integrations`: what is connected\n\
• `restart <connector>`: restart a connector (admins only)";

/// The answer to a command, or `None` for a conversation (the agent's business).
pub async fn answer(
    command: &Command,
    daemon: Option<&Arc<dyn DaemonServices>>,
    organization_id: &str,
    user: &str,
    admins: &[String],
) -> Option<String> {
    let unavailable = || "switchboard is starting; ask again in a moment.".to_string();
    Some(match command {
        Command::Help => HELP.to_string(),
        Command::Status | Command::Integrations => {
            let Some(daemon) = daemon else {
                return Some(unavailable());
            };
            match daemon.integrations(organization_id).await {
                Ok(list) if list.is_empty() => "No integrations yet.".to_string(),
                Ok(list) => {
                    let lines: Vec<String> = list
                        .iter()
                        .map(|i| match (command, &i.health) {
                            (Command::Status, Some(health)) => format!(
                                "• {} {}: {} (actor {health})",
                                i.connector,
                                i.account.as_deref().unwrap_or(""),
                                i.status
                            ),
                            _ => format!(
                                "• {} {}: {}",
                                i.connector,
                                i.account.as_deref().unwrap_or(""),
                                i.status
                            ),
                        })
                        .collect();
                    lines.join("\n")
                }
                Err(error) => format!("I could not read the integrations: {error}"),
            }
        }
        Command::Restart(connector) => {
            if !admins.iter().any(|admin| admin == user) {
                return Some(format!(
                    "Sorry <@{user}>, only switchboard admins can restart connectors."
                ));
            }
            let Some(daemon) = daemon else {
                return Some(unavailable());
            };
            match daemon
                .restart_connector(connector, &format!("Slack user {user}"))
                .await
            {
                Ok(()) => format!("Restarting the {connector} connector now."),
                Err(error) => format!("Could not restart {connector}: {error}"),
            }
        }
        Command::Other(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_read_without_the_mention() {
        assert_eq!(parse("<@U0BOT> status"), Command::Status);
        assert_eq!(parse("  HELP "), Command::Help);
        assert_eq!(parse(""), Command::Help);
        assert_eq!(parse("restart github"), Command::Restart("github".into()));
        assert_eq!(
            parse("<@U0BOT> why is the build red?"),
            Command::Other("<@U0BOT> why is the build red?".into())
        );
    }
}
