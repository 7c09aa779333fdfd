//! GitHub's webhook events, typed: only the fields switchboard acts on or shows.
//!
//! The envelope's `event_type` is `<X-GitHub-Event>.<action>` (`pull_request.opened`)
//! or the event name alone when it has no action (`push`), so that routes can match
//! `pull_request.*`.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Account {
    pub login: String,
    #[serde(default)]
    pub id: u64,
    #[serde(rename = "type", default)]
    pub kind: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub login: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Repository {
    pub full_name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Installation {
    pub id: u64,
    pub account: Option<Account>,
    #[serde(default)]
    pub repository_selection: Option<String>,
    #[serde(default)]
    pub permissions: serde_json::Value,
    #[serde(default)]
    pub suspended_at: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Commit {
    pub id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PushEvent {
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub repository: Repository,
    #[serde(default)]
    pub commits: Vec<Commit>,
    pub sender: User,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PullRequest {
    pub number: u64,
    pub title: String,
    pub html_url: String,
    #[serde(default)]
    pub merged: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PullRequestEvent {
    pub action: String,
    pub pull_request: PullRequest,
    pub repository: Repository,
    pub sender: User,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Issue {
    pub number: u64,
    pub title: String,
    pub html_url: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IssuesEvent {
    pub action: String,
    pub issue: Issue,
    pub repository: Repository,
    pub sender: User,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Comment {
    pub body: String,
    pub html_url: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IssueCommentEvent {
    pub action: String,
    pub issue: Issue,
    pub comment: Comment,
    pub repository: Repository,
    pub sender: User,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InstallationEvent {
    pub action: String,
    pub installation: Installation,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InstallationRepositoriesEvent {
    pub action: String,
    pub installation: Installation,
    #[serde(default)]
    pub repository_selection: Option<String>,
    #[serde(default)]
    pub repositories_added: Vec<Repository>,
    #[serde(default)]
    pub repositories_removed: Vec<Repository>,
}

/// The events the connector knows; anything else is routed as it came.
#[derive(Debug, Clone)]
pub enum GithubEvent {
    Push(PushEvent),
    PullRequest(PullRequestEvent),
    Issues(IssuesEvent),
    IssueComment(IssueCommentEvent),
    Installation(InstallationEvent),
    InstallationRepositories(InstallationRepositoriesEvent),
    Other,
}

impl GithubEvent {
    /// Parses a payload by its `X-GitHub-Event` name. A known event whose payload
    /// does not have the expected shape is an error naming the field.
    pub fn parse(name: &str, payload: &serde_json::Value) -> Result<Self, serde_json::Error> {
        let payload = payload.clone();
        Ok(match name {
            "push" => GithubEvent::Push(serde_json::from_value(payload)?),
            "pull_request" => GithubEvent::PullRequest(serde_json::from_value(payload)?),
            "issues" => GithubEvent::Issues(serde_json::from_value(payload)?),
            "issue_comment" => GithubEvent::IssueComment(serde_json::from_value(payload)?),
            "installation" => GithubEvent::Installation(serde_json::from_value(payload)?),
            "installation_repositories" => {
                GithubEvent::InstallationRepositories(serde_json::from_value(payload)?)
            }
            _ => GithubEvent::Other,
        })
    }

    /// One readable line, for chat.
    pub fn describe(&self) -> Option<String> {
        Some(match self {
            GithubEvent::Push(e) => {
                let branch = e.git_ref.strip_prefix("refs/heads/").unwrap_or(&e.git_ref);
                let n = e.commits.len();
                format!(
                    "{} pushed {n} commit{} to {} in {}",
                    e.sender.login,
                    if n == 1 { "" } else { "s" },
                    branch,
                    e.repository.full_name
                )
            }
            GithubEvent::PullRequest(e) => {
                let action = if e.action == "closed" && e.pull_request.merged {
                    "merged"
                } else {
                    e.action.as_str()
                };
                format!(
                    "{} {action} pull request #{} in {}: {} <{}>",
                    e.sender.login,
                    e.pull_request.number,
                    e.repository.full_name,
                    e.pull_request.title,
                    e.pull_request.html_url
                )
            }
            GithubEvent::Issues(e) => format!(
                "{} {} issue #{} in {}: {} <{}>",
                e.sender.login,
                e.action,
                e.issue.number,
                e.repository.full_name,
                e.issue.title,
                e.issue.html_url
            ),
            GithubEvent::IssueComment(e) => format!(
                "{} commented on #{} in {}: {} <{}>",
                e.sender.login,
                e.issue.number,
                e.repository.full_name,
                e.comment.body.chars().take(200).collect::<String>(),
                e.comment.html_url
            ),
            GithubEvent::Installation(e) => {
                format!("GitHub App installation {} {}", e.installation.id, e.action)
            }
            GithubEvent::InstallationRepositories(e) => format!(
                "GitHub App installation {}: {} repositories added, {} removed",
                e.installation.id,
                e.repositories_added.len(),
                e.repositories_removed.len()
            ),
            GithubEvent::Other => return None,
        })
    }
}

/// The `X-GitHub-Event` name of an envelope's `event_type`.
pub fn event_name(event_type: &str) -> &str {
    event_type.split('.').next().unwrap_or(event_type)
}

/// `<event>.<action>`, or the event alone.
pub fn event_type(name: &str, payload: &serde_json::Value) -> String {
    event_type_of(name, payload.get("action").and_then(|a| a.as_str()))
}

/// The event type from the `X-GitHub-Event` name and the payload's `action`.
pub fn event_type_of(name: &str, action: Option<&str>) -> String {
    match action {
        Some(action) if !action.is_empty() => format!("{name}.{action}"),
        _ => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_merged_pull_request_reads_as_merged() {
        let payload = json!({
            "action": "closed",
            "pull_request": {"number": 7, "title": "Fix", "html_url": "https://github.com/o/r/pull/7", "merged": true},
            "repository": {"full_name": "o/r"},
            "sender": {"login": "octocat"}
        });
        assert_eq!(event_type("pull_request", &payload), "pull_request.closed");
        let event = GithubEvent::parse("pull_request", &payload).unwrap();
        assert_eq!(
            event.describe().unwrap(),
            "octocat merged pull request #7 in o/r: Fix <https://github.com/o/r/pull/7>"
        );
    }

    #[test]
    fn a_push_names_its_branch_and_commits() {
        let payload = json!({
            "ref": "refs/heads/main",
            "repository": {"full_name": "o/r"},
            "commits": [{"id": "a"}, {"id": "b"}],
            "sender": {"login": "octocat"}
        });
        assert_eq!(event_type("push", &payload), "push");
        let event = GithubEvent::parse("push", &payload).unwrap();
        assert_eq!(
            event.describe().unwrap(),
            "octocat pushed 2 commits to main in o/r"
        );
    }

    #[test]
    fn a_malformed_known_event_names_the_missing_field() {
        let error = GithubEvent::parse("issues", &json!({"action": "opened"})).unwrap_err();
        assert!(error.to_string().contains("issue"), "{error}");
    }
}
