//! Slack's request signatures (v0): `X-Slack-Signature: v0=<hex HMAC-SHA256 of
//! "v0:<X-Slack-Request-Timestamp>:<raw body>">` with the app's signing secret, a
//! timestamp within 5 minutes (replays), compared in constant time.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::Secret;

pub const SIGNATURE: &str = "x-slack-signature";
pub const TIMESTAMP: &str = "x-slack-request-timestamp";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Slack-Signature or X-Slack-Request-Timestamp")]
    Missing,
    #[error("X-Slack-Request-Timestamp is not a Unix time")]
    BadTimestamp,
    #[error("the request timestamp is outside the allowed window (a replay?)")]
    Stale,
    #[error("X-Slack-Signature is not v0=<hex>")]
    Malformed,
    #[error("the signature does not match the body")]
    Mismatch,
}

fn mac(secret: &Secret, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac
}

pub fn verify(
    secret: &Secret,
    signature: Option<&str>,
    timestamp: Option<&str>,
    body: &[u8],
    tolerance: Duration,
    now: i64,
) -> Result<(), SignatureError> {
    let (Some(signature), Some(timestamp)) = (signature, timestamp) else {
        return Err(SignatureError::Missing);
    };
    let at: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    if now.abs_diff(at) > tolerance.as_secs() {
        return Err(SignatureError::Stale);
    }
    let expected = signature
        .trim()
        .strip_prefix("v0=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or(SignatureError::Malformed)?;
    mac(secret, timestamp.trim(), body)
        .verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// The `X-Slack-Signature` Slack would send (fakes and benchmarks sign with it).
pub fn sign(secret: &Secret, timestamp: i64, body: &[u8]) -> String {
    let mac = mac(secret, &timestamp.to_string(), body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slack's published example ("Verifying requests from Slack").
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TIMESTAMP: i64 = 1531420618;
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
    const WINDOW: Duration = Duration::from_secs(300);

    #[test]
    fn slacks_test_vector_verifies() {
        let secret = Secret::new(SECRET);
        assert_eq!(sign(&secret, TIMESTAMP, BODY.as_bytes()), SIGNATURE);
        let ts = TIMESTAMP.to_string();
        assert_eq!(
            verify(
                &secret,
                Some(SIGNATURE),
                Some(&ts),
                BODY.as_bytes(),
                WINDOW,
                TIMESTAMP + 10
            ),
            Ok(())
        );
    }

    #[test]
    fn wrong_secret_stale_timestamp_and_tampered_body_are_refused() {
        let secret = Secret::new(SECRET);
        let ts = TIMESTAMP.to_string();
        let check = |secret: &Secret, body: &str, now: i64| {
            verify(
                secret,
                Some(SIGNATURE),
                Some(&ts),
                body.as_bytes(),
                WINDOW,
                now,
            )
        };
        assert_eq!(
            check(&Secret::new("another"), BODY, TIMESTAMP),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(&secret, BODY, TIMESTAMP + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            check(&secret, &BODY.replace("roadrunner", "coyote"), TIMESTAMP),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&secret, None, Some(&ts), BODY.as_bytes(), WINDOW, TIMESTAMP),
            Err(SignatureError::Missing)
        );
    }
}
