//! A fake AWS on loopback that speaks the protocols switchboard uses.
//!
//! - STS (`/sts/`): `GetCallerIdentity` and `AssumeRole`, each request's SigV4
//!   signature recomputed from the request with the secret the fake knows for its
//!   access key (a wrong secret is `SignatureDoesNotMatch`, an unknown key
//!   `InvalidClientTokenId`, a session past its end `ExpiredToken`). A role is
//!   assumed only by the principal it trusts and with its external id
//!   (`AccessDenied` otherwise, worded as AWS words it), and hands out expiring
//!   session credentials.
//! - CloudWatch per region (`/monitoring/<region>`): `DescribeAlarmHistory` over the
//!   alarm state changes a test records, oldest first, in pages with opaque
//!   `NextToken`s; `Throttling` on demand.
//! - The SNS host, over HTTPS with the test CA (`tests/fixtures/aws-test-*.pem`):
//!   the signing certificate, and `SubscribeURL`s that record the confirmation.
//! - An SNS sender: messages signed with the fixture key (SignatureVersion 1 and 2).
//!
//! Errors are AWS's XML `ErrorResponse`s with their real codes and status codes.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use switchboard::connectors::aws::sigv4::{AwsKeys, Scope, sign_headers, signature_of};
use switchboard::secret::Secret;

/// The tenant's account, its role and its topic.
pub const ACCOUNT: &str = "111122223333";
pub const ROLE_ARN: &str = "arn:aws:iam::111122223333:role/switchboard-read";
pub const TOPIC: &str = "arn:aws:sns:us-east-1:111122223333:cloudwatch-alarms";
pub const OTHER_TOPIC: &str = "arn:aws:sns:us-east-1:444455556666:someone-elses";
/// switchboard's own principal and its key.
pub const PRINCIPAL: &str = "arn:aws:iam::999988887777:user/switchboard";
pub const OWN_KEY_ID: &str = "AKIASWITCHBOARD00001";
pub const OWN_SECRET: &str = "own+Secret/Key/For/Tests/0000000000000000";
/// A tenant's IAM user key.
pub const TENANT_KEY_ID: &str = "AKIATENANTUSER000001";
pub const TENANT_SECRET: &str = "tenant+Secret/Key/For/Tests/000000000000";

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
pub const SNS_SIGNING_KEY: &str = include_str!("../fixtures/aws-sns-signing.key.pem");
pub const SNS_SIGNING_CERT: &str = include_str!("../fixtures/aws-sns-signing.pem");
const TLS_CERT: &str = include_str!("../fixtures/aws-test-tls.pem");
const TLS_KEY: &str = include_str!("../fixtures/aws-test-tls.key.pem");

/// An access key the fake knows.
#[derive(Debug, Clone)]
struct Key {
    secret: String,
    token: Option<String>,
    account: String,
    arn: String,
    expired: bool,
}

#[derive(Debug, Clone)]
struct Role {
    trusted: String,
    external_id: String,
}

/// One recorded alarm state change.
#[derive(Debug, Clone)]
pub struct Change {
    pub alarm: String,
    pub at: DateTime<Utc>,
    pub old: String,
    pub new: String,
    pub reason: String,
}

#[derive(Default)]
pub struct FakeAwsState {
    keys: Mutex<HashMap<String, Key>>,
    roles: Mutex<HashMap<String, Role>>,
    /// Successful AssumeRole calls: (role, external id, session name).
    pub assumed: Mutex<Vec<(String, String, String)>>,
    /// Requests whose signature checked out, by action.
    pub signed_ok: Mutex<Vec<String>>,
    /// Alarm history by region.
    pub history: Mutex<BTreeMap<String, Vec<Change>>>,
    /// DescribeAlarmHistory queries: (region, parameters).
    pub history_queries: Mutex<Vec<(String, BTreeMap<String, String>)>>,
    /// Answer the next N CloudWatch requests with `Throttling`.
    pub throttle_next: AtomicU32,
    /// Tokens of the subscriptions confirmed through a `SubscribeURL`.
    pub confirmed: Mutex<Vec<String>>,
    next: AtomicU32,
}

pub struct FakeAws {
    pub addr: SocketAddr,
    /// The HTTPS listener of the SNS host.
    pub tls_addr: SocketAddr,
    pub state: Arc<FakeAwsState>,
}

impl FakeAws {
    pub async fn start() -> FakeAws {
        switchboard::install_crypto_provider();
        let state = Arc::new(FakeAwsState::default());
        state.add_key(OWN_KEY_ID, OWN_SECRET, None, "999988887777", PRINCIPAL);
        state.add_key(
            TENANT_KEY_ID,
            TENANT_SECRET,
            None,
            ACCOUNT,
            "arn:aws:iam::111122223333:user/alarms-reader",
        );
        let app = Router::new()
            .route("/sts/", post(sts))
            .route("/monitoring/{region}", post(cloudwatch))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let sns = Router::new()
            .route("/certs/{name}", get(certificate))
            .route("/confirm", get(confirm))
            .with_state(Arc::clone(&state));
        let tls_addr = serve_tls(sns).await;
        FakeAws {
            addr,
            tls_addr,
            state,
        }
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `[connectors.aws]` pointing at this fake, with switchboard's own principal and
    /// the test CA trusted; `extra` goes into the section.
    pub fn config_section(&self, extra: &str) -> String {
        format!(
            "[connectors.aws]\nprincipal_arn = \"{PRINCIPAL}\"\naccess_key_id = \"{OWN_KEY_ID}\"\n\
             secret_access_key = \"{OWN_SECRET}\"\nsts_url = \"{base}/sts/\"\n\
             sns_hosts = [\"127.0.0.1\"]\nca_certificates = \"{FIXTURES}/aws-test-ca.pem\"\n\
             {extra}\n\
             [connectors.aws.monitoring_urls]\n\"us-east-1\" = \"{base}/monitoring/us-east-1\"\n\
             \"eu-west-1\" = \"{base}/monitoring/eu-west-1\"\n",
            base = self.base()
        )
    }

    /// The tenant creates the role, trusting `principal` with `external_id`.
    pub fn create_role(&self, principal: &str, external_id: &str) {
        self.state.roles.lock().unwrap().insert(
            ROLE_ARN.into(),
            Role {
                trusted: principal.into(),
                external_id: external_id.into(),
            },
        );
    }

    /// The tenant deletes the role.
    pub fn delete_role(&self) {
        self.state.roles.lock().unwrap().remove(ROLE_ARN);
    }

    /// Every session handed out so far expires now.
    pub fn expire_sessions(&self) {
        for key in self.state.keys.lock().unwrap().values_mut() {
            if key.token.is_some() {
                key.expired = true;
            }
        }
    }

    /// The secrets and tokens of every session handed out.
    pub fn session_secrets(&self) -> Vec<String> {
        self.state
            .keys
            .lock()
            .unwrap()
            .values()
            .filter_map(|key| Some([key.secret.clone(), key.token.clone()?]))
            .flatten()
            .collect()
    }

    pub fn assumed(&self) -> usize {
        self.state.assumed.lock().unwrap().len()
    }

    /// Records an alarm's change of state in `region`'s history.
    pub fn record(&self, region: &str, change: Change) {
        let mut history = self.state.history.lock().unwrap();
        let changes = history.entry(region.to_string()).or_default();
        changes.push(change);
        changes.sort_by_key(|c| c.at);
    }

    /// The certificate URL the fake's SNS signs with.
    pub fn cert_url(&self) -> String {
        format!(
            "https://{}/certs/SimpleNotificationService-test.pem",
            self.tls_addr
        )
    }

    /// A signed SNS notification of `message` on `topic`.
    pub fn notification(&self, topic: &str, message: &str, version: u8) -> SnsDelivery {
        let id = self.id("msg");
        let fields = json!({
            "Type": "Notification",
            "MessageId": id,
            "TopicArn": topic,
            "Subject": "ALARM: \"HighCPU\" in US East (N. Virginia)",
            "Message": message,
            "Timestamp": rfc3339(Utc::now()),
            "SignatureVersion": version.to_string(),
            "SigningCertURL": self.cert_url(),
            "UnsubscribeURL": format!("https://{}/unsubscribe?SubscriptionArn={topic}:1", self.tls_addr),
        });
        SnsDelivery::signed(fields, SNS_SIGNING_KEY)
    }

    /// A signed subscription confirmation for `topic`.
    pub fn subscription_confirmation(&self, topic: &str) -> SnsDelivery {
        let token = self.id("token");
        let fields = json!({
            "Type": "SubscriptionConfirmation",
            "MessageId": self.id("msg"),
            "Token": token,
            "TopicArn": topic,
            "Message": format!("You have chosen to subscribe to the topic {topic}.\nTo confirm the subscription, visit the SubscribeURL included in this message."),
            "SubscribeURL": format!("https://{}/confirm?Action=ConfirmSubscription&TopicArn={topic}&Token={token}", self.tls_addr),
            "Timestamp": rfc3339(Utc::now()),
            "SignatureVersion": "1",
            "SigningCertURL": self.cert_url(),
        });
        SnsDelivery::signed(fields, SNS_SIGNING_KEY)
    }

    fn id(&self, prefix: &str) -> String {
        format!(
            "{prefix}-{:08}-0000-4000-8000-000000000000",
            self.state.next.fetch_add(1, Ordering::SeqCst)
        )
    }
}

impl FakeAwsState {
    fn add_key(&self, id: &str, secret: &str, token: Option<&str>, account: &str, arn: &str) {
        self.keys.lock().unwrap().insert(
            id.into(),
            Key {
                secret: secret.into(),
                token: token.map(str::to_string),
                account: account.into(),
                arn: arn.into(),
                expired: false,
            },
        );
    }
}

/// An SNS message as SNS posts it: the JSON body and its headers.
#[derive(Debug, Clone)]
pub struct SnsDelivery {
    pub fields: Value,
}

impl SnsDelivery {
    /// `fields` signed with the RSA key `key_pem` (PKCS#8), as SNS signs them.
    pub fn signed(mut fields: Value, key_pem: &str) -> Self {
        fields["Signature"] = json!(sign(&fields, key_pem));
        Self { fields }
    }

    pub fn body(&self) -> String {
        self.fields.to_string()
    }

    /// Posts it to `url` with SNS's headers: (status, answer).
    pub async fn deliver(&self, http: &reqwest::Client, url: &str) -> (u16, Value) {
        let response = http
            .post(url)
            .header("content-type", "text/plain; charset=UTF-8")
            .header(
                "x-amz-sns-message-type",
                self.fields["Type"].as_str().unwrap(),
            )
            .header(
                "x-amz-sns-message-id",
                self.fields["MessageId"].as_str().unwrap(),
            )
            .header(
                "x-amz-sns-topic-arn",
                self.fields["TopicArn"].as_str().unwrap(),
            )
            .header("user-agent", "Amazon Simple Notification Service Agent")
            .body(self.body())
            .send()
            .await
            .expect("daemon reachable");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// The string SNS signs, written out here from AWS's documentation (not the
/// daemon's code): `Key\nValue\n` for each key present, in this order.
pub fn string_to_sign(fields: &Value) -> String {
    [
        "Message",
        "MessageId",
        "Subject",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ]
    .iter()
    .filter_map(|key| {
        fields[*key]
            .as_str()
            .map(|value| format!("{key}\n{value}\n"))
    })
    .collect()
}

fn sign(fields: &Value, key_pem: &str) -> String {
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::signature::{SignatureEncoding, Signer};
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(key_pem)
        .or_else(|_| {
            use rsa::pkcs1::DecodeRsaPrivateKey;
            rsa::RsaPrivateKey::from_pkcs1_pem(key_pem)
        })
        .expect("an RSA key");
    let data = string_to_sign(fields);
    let signature = match fields["SignatureVersion"].as_str() {
        Some("2") => rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha256>::new(key)
            .sign(data.as_bytes())
            .to_vec(),
        _ => rsa::pkcs1v15::SigningKey::<sha1::Sha1>::new(key)
            .sign(data.as_bytes())
            .to_vec(),
    };
    base64::engine::general_purpose::STANDARD.encode(signature)
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An AWS Query API error.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let kind = if status.is_server_error() {
        "Receiver"
    } else {
        "Sender"
    };
    (
        status,
        [("content-type", "text/xml")],
        format!(
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <Error>\n    \
             <Type>{kind}</Type>\n    <Code>{code}</Code>\n    <Message>{message}</Message>\n  \
             </Error>\n  <RequestId>4c2b2e1a-0000-4000-8000-000000000000</RequestId>\n</ErrorResponse>\n"
        ),
    )
        .into_response()
}

fn xml(body: String) -> Response {
    (StatusCode::OK, [("content-type", "text/xml")], body).into_response()
}

fn form(body: &[u8]) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// Checks a request's SigV4 signature by signing it again with the secret the fake
/// knows for its key: the key, or the error AWS would answer.
fn authenticate(
    state: &FakeAwsState,
    headers: &HeaderMap,
    path: &str,
    body: &[u8],
    service: &str,
    region: &str,
) -> Result<Key, Box<Response>> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let invalid_token = || {
        Box::new(error(
            StatusCode::FORBIDDEN,
            "InvalidClientTokenId",
            "The security token included in the request is invalid.",
        ))
    };
    let authorization = header("authorization").ok_or_else(|| {
        Box::new(error(
            StatusCode::FORBIDDEN,
            "MissingAuthenticationToken",
            "Request is missing Authentication Token",
        ))
    })?;
    let rest = authorization
        .strip_prefix("AWS4-HMAC-SHA256 Credential=")
        .ok_or_else(invalid_token)?;
    let credential = rest.split(',').next().unwrap_or_default();
    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, _date, scope_region, scope_service, "aws4_request"] = scope.as_slice() else {
        return Err(invalid_token());
    };
    let key = state
        .keys
        .lock()
        .unwrap()
        .get(*key_id)
        .cloned()
        .ok_or_else(invalid_token)?;
    if key.token.as_deref() != header("x-amz-security-token") {
        return Err(invalid_token());
    }
    if *scope_region != region || *scope_service != service {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            &format!(
                "Credential should be scoped to a valid region and service ('{region}', '{service}')."
            ),
        )));
    }
    let signed_headers: Vec<&str> = rest
        .split(',')
        .find_map(|part| part.trim().strip_prefix("SignedHeaders="))
        .unwrap_or_default()
        .split(';')
        .collect();
    let time = header("x-amz-date")
        .and_then(|date| chrono::NaiveDateTime::parse_from_str(date, "%Y%m%dT%H%M%SZ").ok())
        .map(|t| SystemTime::from(t.and_utc()))
        .ok_or_else(invalid_token)?;
    // Signed again from what arrived: the headers it names (the signer adds the
    // date and the token itself), the path, the body.
    let resigned: Vec<(&str, &str)> = signed_headers
        .iter()
        .filter(|name| !["x-amz-date", "x-amz-security-token"].contains(name))
        .filter_map(|name| Some((*name, header(name)?)))
        .collect();
    let url = format!("http://{}{path}", header("host").unwrap_or_default());
    let expected = sign_headers(
        &AwsKeys {
            access_key_id: (*key_id).to_string(),
            secret_access_key: Secret::new(key.secret.clone()),
            session_token: key.token.clone().map(Secret::new),
        },
        Scope { region, service },
        "POST",
        &url,
        &resigned,
        body,
        time,
    )
    .expect("the fake signs");
    let expected_signature = expected
        .iter()
        .find(|(name, _)| name == "authorization")
        .and_then(|(_, value)| signature_of(value).map(str::to_string));
    if expected_signature.as_deref() != signature_of(authorization) {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method.",
        )));
    }
    if key.expired {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "ExpiredToken",
            "The security token included in the request is expired",
        )));
    }
    Ok(key)
}

async fn sts(State(state): State<Arc<FakeAwsState>>, headers: HeaderMap, body: Bytes) -> Response {
    let key = match authenticate(&state, &headers, "/sts/", &body, "sts", "us-east-1") {
        Ok(key) => key,
        Err(refused) => return *refused,
    };
    let params = form(&body);
    let action = params.get("Action").cloned().unwrap_or_default();
    state.signed_ok.lock().unwrap().push(action.clone());
    match action.as_str() {
        "GetCallerIdentity" => xml(format!(
            "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  \
             <GetCallerIdentityResult>\n    <Arn>{}</Arn>\n    <UserId>AIDATEST{}</UserId>\n    \
             <Account>{}</Account>\n  </GetCallerIdentityResult>\n  <ResponseMetadata>\n    \
             <RequestId>01234567-89ab-cdef-0123-456789abcdef</RequestId>\n  </ResponseMetadata>\n\
             </GetCallerIdentityResponse>\n",
            key.arn, key.account, key.account
        )),
        "AssumeRole" => {
            let role_arn = params.get("RoleArn").cloned().unwrap_or_default();
            let denied = || {
                error(
                    StatusCode::FORBIDDEN,
                    "AccessDenied",
                    &format!(
                        "User: {} is not authorized to perform: sts:AssumeRole on resource: {role_arn}",
                        key.arn
                    ),
                )
            };
            let Some(role) = state.roles.lock().unwrap().get(&role_arn).cloned() else {
                return denied();
            };
            if role.trusted != key.arn
                || params.get("ExternalId").map(String::as_str) != Some(role.external_id.as_str())
            {
                return denied();
            }
            let seconds: i64 = params
                .get("DurationSeconds")
                .and_then(|s| s.parse().ok())
                .unwrap_or(3600);
            let n = state.next.fetch_add(1, Ordering::SeqCst);
            let id = format!("ASIATESTSESSION{n:05}");
            let secret = format!("session/secret/{n:05}/for/tests/000000000");
            let token = format!("FwoGZXIvYXdzEBQaDTestSessionToken{n:05}//////////");
            let account = role_arn.split(':').nth(4).unwrap_or_default().to_string();
            let session_name = params.get("RoleSessionName").cloned().unwrap_or_default();
            let arn =
                format!("arn:aws:sts::{account}:assumed-role/switchboard-read/{session_name}");
            state.add_key(&id, &secret, Some(&token), &account, &arn);
            state.assumed.lock().unwrap().push((
                role_arn.clone(),
                params.get("ExternalId").cloned().unwrap_or_default(),
                session_name,
            ));
            let expiration = rfc3339(Utc::now() + chrono::Duration::seconds(seconds));
            xml(format!(
                "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  \
                 <AssumeRoleResult>\n    <AssumedRoleUser>\n      <Arn>{arn}</Arn>\n      \
                 <AssumedRoleId>AROATEST:{n}</AssumedRoleId>\n    </AssumedRoleUser>\n    \
                 <Credentials>\n      <AccessKeyId>{id}</AccessKeyId>\n      \
                 <SecretAccessKey>{secret}</SecretAccessKey>\n      \
                 <SessionToken>{token}</SessionToken>\n      <Expiration>{expiration}</Expiration>\n    \
                 </Credentials>\n  </AssumeRoleResult>\n  <ResponseMetadata>\n    \
                 <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>\n  \
                 </ResponseMetadata>\n</AssumeRoleResponse>\n"
            ))
        }
        other => error(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            &format!("Could not find operation {other} for version 2011-06-15"),
        ),
    }
}

async fn cloudwatch(
    State(state): State<Arc<FakeAwsState>>,
    Path(region): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/monitoring/{region}");
    if let Err(refused) = authenticate(&state, &headers, &path, &body, "monitoring", &region) {
        return *refused;
    }
    if state
        .throttle_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return error(StatusCode::BAD_REQUEST, "Throttling", "Rate exceeded");
    }
    let params = form(&body);
    state
        .signed_ok
        .lock()
        .unwrap()
        .push("DescribeAlarmHistory".into());
    state
        .history_queries
        .lock()
        .unwrap()
        .push((region.clone(), params.clone()));
    if params.get("Action").map(String::as_str) != Some("DescribeAlarmHistory") {
        return error(StatusCode::BAD_REQUEST, "InvalidAction", "unknown action");
    }
    let time = |name: &str| {
        params
            .get(name)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    let (start, end) = (time("StartDate"), time("EndDate"));
    let page_size: usize = params
        .get("MaxRecords")
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    let offset = match params.get("NextToken") {
        None => 0,
        Some(token) => match token
            .strip_prefix("page-token:")
            .and_then(|n| n.parse().ok())
        {
            Some(offset) => offset,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "InvalidNextToken",
                    "The service returned an invalid next token",
                );
            }
        },
    };
    let matching: Vec<Change> = state
        .history
        .lock()
        .unwrap()
        .get(&region)
        .into_iter()
        .flatten()
        .filter(|c| start.is_none_or(|s| c.at >= s) && end.is_none_or(|e| c.at <= e))
        .cloned()
        .collect();
    let page: Vec<&Change> = matching.iter().skip(offset).take(page_size).collect();
    let next = if offset + page.len() < matching.len() {
        format!("<NextToken>page-token:{}</NextToken>", offset + page.len())
    } else {
        String::new()
    };
    let members: String = page
        .iter()
        .map(|c| {
            let data = json!({"version": "1.0",
                "oldState": {"stateValue": c.old, "stateReason": "earlier"},
                "newState": {"stateValue": c.new, "stateReason": c.reason}});
            format!(
                "      <member>\n        <AlarmName>{}</AlarmName>\n        <AlarmType>MetricAlarm</AlarmType>\n        \
                 <Timestamp>{}</Timestamp>\n        <HistoryItemType>StateUpdate</HistoryItemType>\n        \
                 <HistorySummary>Alarm updated from {} to {}</HistorySummary>\n        \
                 <HistoryData>{}</HistoryData>\n      </member>\n",
                c.alarm,
                rfc3339(c.at),
                c.old,
                c.new,
                escape(&data.to_string())
            )
        })
        .collect();
    xml(format!(
        "<DescribeAlarmHistoryResponse xmlns=\"http://monitoring.amazonaws.com/doc/2010-08-01/\">\n  \
         <DescribeAlarmHistoryResult>\n    <AlarmHistoryItems>\n{members}    </AlarmHistoryItems>\n    \
         {next}\n  </DescribeAlarmHistoryResult>\n  <ResponseMetadata>\n    \
         <RequestId>7f0c2f4e-0000-4000-8000-000000000000</RequestId>\n  </ResponseMetadata>\n\
         </DescribeAlarmHistoryResponse>\n"
    ))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn certificate(Path(name): Path<String>) -> Response {
    if name.ends_with(".pem") {
        (StatusCode::OK, SNS_SIGNING_CERT).into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

async fn confirm(
    State(state): State<Arc<FakeAwsState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(token) = query.get("Token") else {
        return error(StatusCode::BAD_REQUEST, "InvalidParameter", "Token missing");
    };
    state.confirmed.lock().unwrap().push(token.clone());
    xml(format!(
        "<ConfirmSubscriptionResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\">\n  \
         <ConfirmSubscriptionResult>\n    <SubscriptionArn>{}:5c6e0000</SubscriptionArn>\n  \
         </ConfirmSubscriptionResult>\n</ConfirmSubscriptionResponse>\n",
        query.get("TopicArn").cloned().unwrap_or_default()
    ))
}

/// Serves `app` over HTTPS with the test certificate for 127.0.0.1.
async fn serve_tls(app: Router) -> SocketAddr {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(TLS_CERT.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(TLS_KEY.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

/// An alarm's change of state, for `record` and for SNS messages alike.
pub fn change(alarm: &str, at: DateTime<Utc>, old: &str, new: &str) -> Change {
    Change {
        alarm: alarm.into(),
        at,
        old: old.into(),
        new: new.into(),
        reason: format!("Threshold Crossed: 1 datapoint moved {alarm} from {old} to {new}"),
    }
}

/// The SNS `Message` CloudWatch sends for `change` in `region`.
pub fn alarm_message(region: &str, change: &Change) -> String {
    json!({
        "AlarmName": change.alarm,
        "AlarmDescription": null,
        "AWSAccountId": ACCOUNT,
        "AlarmConfigurationUpdatedTimestamp": "2026-11-01T09:00:00.000+0000",
        "NewStateValue": change.new,
        "NewStateReason": change.reason,
        "StateChangeTime": change.at.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string(),
        "Region": "US East (N. Virginia)",
        "AlarmArn": format!("arn:aws:cloudwatch:{region}:{ACCOUNT}:alarm:{}", change.alarm),
        "OldStateValue": change.old,
        "OKActions": [],
        "AlarmActions": [TOPIC],
        "InsufficientDataActions": [],
        "Trigger": {"MetricName": "CPUUtilization", "Namespace": "AWS/EC2", "Statistic": "AVERAGE",
                    "Period": 300, "EvaluationPeriods": 1, "ComparisonOperator": "GreaterThanThreshold",
                    "Threshold": 80.0},
    })
    .to_string()
}
