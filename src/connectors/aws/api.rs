//! AWS's Query APIs as switchboard uses them (STS and CloudWatch): form-encoded POSTs
//! signed with SigV4, XML answers, and XML `ErrorResponse`s turned into typed errors.
//!
//! Throttling (`Throttling`, `RequestLimitExceeded`...) comes without a time to wait:
//! the integration is held back by a backoff that doubles with each one in a row, and
//! its requests are refused at once until the hold ends.

use std::time::{Duration, SystemTime};

use chrono::NaiveDateTime;
use roxmltree::{Document, Node};
use switchboard_actors::RateLimiter;

use super::sigv4::{AwsKeys, Scope, sign_headers};
use crate::connectors::ConnectorError;
use crate::connectors::http::{self, Answer, Backoffs};
use crate::secret::Secret;

const THROTTLED: [&str; 5] = [
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
];
const EXPIRED: [&str; 2] = ["ExpiredToken", "ExpiredTokenException"];
/// Codes that say these credentials may not do this (or are not credentials at all).
const DENIED: [&str; 6] = [
    "AccessDenied",
    "AccessDeniedException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "AuthFailure",
];
const STS_VERSION: &str = "2011-06-15";
const CLOUDWATCH_VERSION: &str = "2010-08-01";

/// One AWS service endpoint, and what its requests are signed for.
#[derive(Debug, Clone, Copy)]
pub struct Service<'a> {
    pub url: &'a str,
    pub region: &'a str,
    /// The signing name: `sts`, `monitoring`.
    pub name: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AwsError {
    #[error("AWS is throttling requests ({code}): held back for {hold:?}")]
    Throttled { code: String, hold: Duration },
    /// The session's token expired: assume the role again.
    #[error("ExpiredToken: {0}")]
    ExpiredToken(String),
    /// The credentials are refused, or may not do this.
    #[error("{code}: {message}")]
    Denied { code: String, message: String },
    #[error("AWS refused the request ({status}, {code}): {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("{0}")]
    Unavailable(String),
}

impl From<AwsError> for ConnectorError {
    fn from(error: AwsError) -> Self {
        match error {
            AwsError::Throttled { hold, .. } => ConnectorError::RateLimited { retry_after: hold },
            error @ (AwsError::ExpiredToken(_) | AwsError::Denied { .. }) => {
                ConnectorError::Unauthorized(error.to_string())
            }
            AwsError::Refused { status, .. } if status >= 500 => {
                ConnectorError::Unavailable(error.to_string())
            }
            AwsError::Refused { code, message, .. } => {
                ConnectorError::Invalid(format!("{code}: {message}"))
            }
            AwsError::Unavailable(message) => ConnectorError::Unavailable(message),
        }
    }
}

/// Session credentials and when they expire.
#[derive(Debug, Clone)]
pub struct Session {
    pub keys: AwsKeys,
    pub expires_at: NaiveDateTime,
}

/// Who a set of credentials is (`GetCallerIdentity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity {
    pub account: String,
    pub arn: String,
    pub user_id: String,
}

/// One `StateUpdate` of CloudWatch's alarm history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryItem {
    pub alarm_name: String,
    pub timestamp: String,
    pub summary: String,
    /// JSON: `oldState`, `newState` (each with `stateValue`, `stateReason`).
    pub data: String,
}

#[derive(Debug, Clone, Default)]
pub struct HistoryPage {
    pub items: Vec<HistoryItem>,
    pub next_token: Option<String>,
}

/// A `DescribeAlarmHistory` query: the window, oldest first, and where to go on.
#[derive(Debug, Clone, Copy)]
pub struct HistoryQuery<'a> {
    pub start: &'a str,
    pub end: &'a str,
    pub next_token: Option<&'a str>,
    pub page_size: u32,
}

pub struct AwsApi {
    http: reqwest::Client,
    /// The holds throttling sets, per integration.
    holds: RateLimiter<String>,
    backoffs: Backoffs,
}

impl AwsApi {
    pub fn new(http: reqwest::Client) -> Self {
        Self {
            http,
            holds: RateLimiter::new(None),
            backoffs: Backoffs::new(Duration::from_secs(1), Duration::from_secs(60)),
        }
    }

    /// A plain GET (an SNS certificate, a `SubscribeURL`).
    pub async fn get(&self, url: &str) -> Result<Answer, String> {
        http::send(self.http.get(url), "AWS").await
    }

    /// One Query API call for `owner` (an integration): its XML answer.
    pub async fn call(
        &self,
        owner: &str,
        service: Service<'_>,
        keys: &AwsKeys,
        params: &[(&str, &str)],
    ) -> Result<String, AwsError> {
        if let Err(hold) = self.holds.try_acquire(&owner.to_string()) {
            return Err(AwsError::Throttled {
                code: "held back after throttling".into(),
                hold,
            });
        }
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        let url = url::Url::parse(service.url)
            .map_err(|e| AwsError::Unavailable(format!("bad AWS endpoint: {e}")))?;
        let host = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            (None, _) => return Err(AwsError::Unavailable("AWS endpoint has no host".into())),
        };
        const CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";
        let signed = sign_headers(
            keys,
            Scope {
                region: service.region,
                service: service.name,
            },
            "POST",
            url.as_str(),
            &[("host", &host), ("content-type", CONTENT_TYPE)],
            body.as_bytes(),
            SystemTime::now(),
        )
        .map_err(AwsError::Unavailable)?;
        let mut request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(body);
        for (name, value) in signed {
            request = request.header(name, value);
        }
        let Answer { status, text, .. } = http::send(request, "AWS")
            .await
            .map_err(AwsError::Unavailable)?;
        if status.is_success() {
            self.backoffs.reset(owner);
            return Ok(text);
        }
        let (code, message) = error_of(&text).unwrap_or_else(|| {
            (
                status.as_str().to_string(),
                status.canonical_reason().unwrap_or("error").to_string(),
            )
        });
        Err(if THROTTLED.contains(&code.as_str()) {
            let hold = self.backoffs.next(owner);
            self.holds.block_key_for(owner.to_string(), hold);
            AwsError::Throttled { code, hold }
        } else if EXPIRED.contains(&code.as_str()) {
            AwsError::ExpiredToken(message)
        } else if DENIED.contains(&code.as_str()) {
            AwsError::Denied { code, message }
        } else {
            AwsError::Refused {
                status: status.as_u16(),
                code,
                message,
            }
        })
    }

    /// `AssumeRole` with switchboard's own keys: the role's session credentials.
    pub async fn assume_role(
        &self,
        owner: &str,
        sts: Service<'_>,
        keys: &AwsKeys,
        role: &RoleRequest<'_>,
    ) -> Result<Session, AwsError> {
        let duration = role.duration.as_secs().to_string();
        let xml = self
            .call(
                owner,
                sts,
                keys,
                &[
                    ("Action", "AssumeRole"),
                    ("Version", STS_VERSION),
                    ("RoleArn", role.role_arn),
                    ("RoleSessionName", role.session_name),
                    ("ExternalId", role.external_id),
                    ("DurationSeconds", &duration),
                ],
            )
            .await?;
        let document = parse(&xml)?;
        let credentials = descendant(&document, "Credentials")
            .ok_or_else(|| unexpected("AssumeRole", "no Credentials"))?;
        let field = |name: &str| {
            child_text(credentials, name)
                .ok_or_else(|| unexpected("AssumeRole", &format!("no {name}")))
        };
        let expiration = field("Expiration")?;
        let expires_at = chrono::DateTime::parse_from_rfc3339(&expiration)
            .map_err(|_| unexpected("AssumeRole", "an unreadable Expiration"))?
            .naive_utc();
        Ok(Session {
            keys: AwsKeys {
                access_key_id: field("AccessKeyId")?,
                secret_access_key: Secret::new(field("SecretAccessKey")?),
                session_token: Some(Secret::new(field("SessionToken")?)),
            },
            expires_at,
        })
    }

    /// `GetCallerIdentity`: who `keys` are (it needs no permission).
    pub async fn caller_identity(
        &self,
        owner: &str,
        sts: Service<'_>,
        keys: &AwsKeys,
    ) -> Result<CallerIdentity, AwsError> {
        let xml = self
            .call(
                owner,
                sts,
                keys,
                &[("Action", "GetCallerIdentity"), ("Version", STS_VERSION)],
            )
            .await?;
        let document = parse(&xml)?;
        let result = descendant(&document, "GetCallerIdentityResult")
            .ok_or_else(|| unexpected("GetCallerIdentity", "no GetCallerIdentityResult"))?;
        let field = |name: &str| {
            child_text(result, name)
                .ok_or_else(|| unexpected("GetCallerIdentity", &format!("no {name}")))
        };
        Ok(CallerIdentity {
            account: field("Account")?,
            arn: field("Arn")?,
            user_id: field("UserId")?,
        })
    }

    /// One page of an alarm history (`StateUpdate` items, oldest first).
    pub async fn alarm_history(
        &self,
        owner: &str,
        monitoring: Service<'_>,
        keys: &AwsKeys,
        query: HistoryQuery<'_>,
    ) -> Result<HistoryPage, AwsError> {
        let page_size = query.page_size.to_string();
        let mut params = vec![
            ("Action", "DescribeAlarmHistory"),
            ("Version", CLOUDWATCH_VERSION),
            ("HistoryItemType", "StateUpdate"),
            ("ScanBy", "TimestampAscending"),
            ("StartDate", query.start),
            ("EndDate", query.end),
            ("MaxRecords", &page_size),
        ];
        if let Some(token) = query.next_token {
            params.push(("NextToken", token));
        }
        let xml = self.call(owner, monitoring, keys, &params).await?;
        let document = parse(&xml)?;
        let items = descendant(&document, "AlarmHistoryItems")
            .into_iter()
            .flat_map(|list| list.children().filter(|n| n.has_tag_name_local("member")))
            .filter_map(|member| {
                Some(HistoryItem {
                    alarm_name: child_text(member, "AlarmName")?,
                    timestamp: child_text(member, "Timestamp")?,
                    summary: child_text(member, "HistorySummary").unwrap_or_default(),
                    data: child_text(member, "HistoryData").unwrap_or_default(),
                })
            })
            .collect();
        let next_token = descendant(&document, "NextToken")
            .and_then(|node| node.text())
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .map(str::to_string);
        Ok(HistoryPage { items, next_token })
    }
}

/// What `AssumeRole` is asked.
#[derive(Debug, Clone, Copy)]
pub struct RoleRequest<'a> {
    pub role_arn: &'a str,
    pub session_name: &'a str,
    pub external_id: &'a str,
    pub duration: Duration,
}

/// An `ErrorResponse`'s code and message (STS nests them in `Error`; some services
/// answer `<Response><Errors><Error>`).
pub fn error_of(xml: &str) -> Option<(String, String)> {
    let document = Document::parse(xml).ok()?;
    let error = descendant(&document, "Error")?;
    Some((
        child_text(error, "Code")?,
        child_text(error, "Message").unwrap_or_default(),
    ))
}

trait LocalName {
    fn has_tag_name_local(&self, name: &str) -> bool;
}

impl LocalName for Node<'_, '_> {
    /// Namespaces aside: AWS answers in its own namespace per service and version.
    fn has_tag_name_local(&self, name: &str) -> bool {
        self.is_element() && self.tag_name().name() == name
    }
}

fn parse(xml: &str) -> Result<Document<'_>, AwsError> {
    Document::parse(xml)
        .map_err(|e| AwsError::Unavailable(format!("AWS answered with unreadable XML: {e}")))
}

fn descendant<'a, 'input>(document: &'a Document<'input>, name: &str) -> Option<Node<'a, 'input>> {
    document
        .descendants()
        .find(|node| node.has_tag_name_local(name))
}

fn child_text(node: Node<'_, '_>, name: &str) -> Option<String> {
    node.children()
        .find(|child| child.has_tag_name_local(name))
        .map(|child| child.text().unwrap_or_default().trim().to_string())
}

fn unexpected(action: &str, what: &str) -> AwsError {
    AwsError::Unavailable(format!("AWS answered {action} with {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_responses_map_to_what_the_caller_does_next() {
        let xml = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
          <Error><Type>Sender</Type><Code>AccessDenied</Code><Message>User: arn:aws:iam::111122223333:user/sb is not authorized to perform: sts:AssumeRole</Message></Error>
          <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ErrorResponse>"#;
        let (code, message) = error_of(xml).unwrap();
        assert_eq!(code, "AccessDenied");
        assert!(message.starts_with("User: arn:aws:iam::111122223333:user/sb"));
        let denied = ConnectorError::from(AwsError::Denied { code, message });
        assert!(
            matches!(&denied, ConnectorError::Unauthorized(m) if m.starts_with("AccessDenied: User:")),
            "{denied:?}"
        );
        assert_eq!(
            ConnectorError::from(AwsError::Throttled {
                code: "Throttling".into(),
                hold: Duration::from_secs(2)
            }),
            ConnectorError::RateLimited {
                retry_after: Duration::from_secs(2)
            }
        );
        assert!(matches!(
            ConnectorError::from(AwsError::Refused {
                status: 503,
                code: "ServiceUnavailable".into(),
                message: "try later".into()
            }),
            ConnectorError::Unavailable(_)
        ));
        assert_eq!(error_of("not xml"), None);
    }
}
