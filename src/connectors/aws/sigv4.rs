//! Signing AWS requests (Signature Version 4) with the `aws-sigv4` crate: switchboard
//! computes no signature of its own.

use std::fmt;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

use crate::secret::Secret;

/// An access key: long-lived, or a session's (with its token).
#[derive(Clone)]
pub struct AwsKeys {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

impl fmt::Debug for AwsKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKeys")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .field("session_token", &self.session_token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Where a request is signed for.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub region: &'a str,
    pub service: &'a str,
}

/// The headers that sign a request (`authorization`, `x-amz-date` and, with a
/// session, `x-amz-security-token`), for `headers` (which must include those the
/// request sends that are to be signed) and `body`, at `time`.
pub fn sign_headers(
    keys: &AwsKeys,
    scope: Scope<'_>,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    time: SystemTime,
) -> Result<Vec<(String, String)>, String> {
    let identity: Identity = Credentials::new(
        keys.access_key_id.clone(),
        keys.secret_access_key.expose().clone(),
        keys.session_token.as_ref().map(|t| t.expose().clone()),
        None,
        "switchboard",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(scope.region)
        .name(scope.service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("cannot sign the request: {e}"))?
        .into();
    let request = SignableRequest::new(
        method,
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| format!("cannot sign the request: {e}"))?;
    let (instructions, _) = sign(request, &params)
        .map_err(|e| format!("cannot sign the request: {e}"))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect())
}

/// The `Signature=` of an `Authorization` header.
pub fn signature_of(authorization: &str) -> Option<&str> {
    authorization
        .split(',')
        .find_map(|part| part.trim().strip_prefix("Signature="))
}

#[cfg(test)]
mod tests {
    //! AWS's published SigV4 test suite (`aws-signing-test-suite/v4`, as shipped in
    //! the `aws-sigv4` crate's sources): each case's request, credentials and time,
    //! and the signature AWS gives for it.

    use super::*;

    const TIME: u64 = 1_440_938_160; // 2015-08-30T12:36:00Z
    const HOST: (&str, &str) = ("host", "example.amazonaws.com");
    const TOKEN: &str = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";

    fn keys(token: Option<&str>) -> AwsKeys {
        AwsKeys {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: token.map(Secret::new),
        }
    }

    fn signature(keys: &AwsKeys, method: &str, url: &str, headers: &[(&str, &str)]) -> String {
        let signed = sign_headers(
            keys,
            Scope {
                region: "us-east-1",
                service: "service",
            },
            method,
            url,
            headers,
            b"",
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(TIME),
        )
        .expect("signed");
        let authorization = &signed
            .iter()
            .find(|(name, _)| name == "authorization")
            .expect("an authorization header")
            .1;
        signature_of(authorization)
            .expect("a signature")
            .to_string()
    }

    #[test]
    fn the_published_vectors_sign_as_aws_says() {
        let plain = keys(None);
        // post-vanilla
        assert_eq!(
            signature(&plain, "POST", "https://example.amazonaws.com/", &[HOST]),
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        );
        // post-vanilla-query
        assert_eq!(
            signature(
                &plain,
                "POST",
                "https://example.amazonaws.com/?Param1=value1",
                &[HOST]
            ),
            "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11"
        );
        // get-vanilla-query-order-key-case
        assert_eq!(
            signature(
                &plain,
                "GET",
                "https://example.amazonaws.com/?Param2=value2&Param1=value1",
                &[HOST]
            ),
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
        // post-sts-header-before: a session token is signed with the request.
        assert_eq!(
            signature(
                &keys(Some(TOKEN)),
                "POST",
                "https://example.amazonaws.com/",
                &[HOST]
            ),
            "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead"
        );
    }

    #[test]
    fn keys_never_show_their_secrets() {
        let shown = format!("{:?}", keys(Some("the-token")));
        assert!(shown.contains("AKIDEXAMPLE"), "{shown}");
        assert!(
            !shown.contains("wJalr") && !shown.contains("the-token"),
            "{shown}"
        );
    }
}
