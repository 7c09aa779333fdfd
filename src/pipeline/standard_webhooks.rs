//! Standard Webhooks signatures (standardwebhooks.com): `webhook-id`,
//! `webhook-timestamp` (seconds) and `webhook-signature`, a space-separated list of
//! `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`. Secrets are `whsec_` and
//! base64. Used to verify what generic webhooks receive and to sign what routes send.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::secret::Secret;

pub const ID: &str = "webhook-id";
pub const TIMESTAMP: &str = "webhook-timestamp";
pub const SIGNATURE: &str = "webhook-signature";
const SECRET_PREFIX: &str = "whsec_";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("the webhook-timestamp is not a number of seconds")]
    BadTimestamp,
    #[error("the webhook-timestamp is outside the tolerance window")]
    StaleTimestamp,
    #[error("no valid signature")]
    NoValidSignature,
    /// A common mistake, worth its own hint: HMAC keyed with the secret's text.
    #[error(
        "no valid signature: it was made with the whole whsec_… string as the key; the key is \
         the base64-decoded part after whsec_"
    )]
    SignedWithSecretText,
    #[error("the signing secret is malformed")]
    BadSecret,
}

/// A new random signing secret (`whsec_` + 32 random bytes in base64).
pub fn generate_secret() -> Secret {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    Secret::new(format!("{SECRET_PREFIX}{}", STANDARD.encode(key)))
}

fn key(secret: &Secret) -> Result<Vec<u8>, SignatureError> {
    let encoded = secret
        .expose()
        .strip_prefix(SECRET_PREFIX)
        .unwrap_or(secret.expose());
    STANDARD
        .decode(encoded)
        .map_err(|_| SignatureError::BadSecret)
}

fn mac(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `webhook-signature` value for a message.
pub fn sign(
    secret: &Secret,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SignatureError> {
    let key = key(secret)?;
    let signature = mac(&key, id, &timestamp.to_string(), body)
        .finalize()
        .into_bytes();
    Ok(format!("v1,{}", STANDARD.encode(signature)))
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Verifies a message; any one valid `v1` signature among those listed suffices.
/// Comparison is constant-time. Returns the message's timestamp.
pub fn verify(
    secret: &Secret,
    id: Option<&str>,
    timestamp: Option<&str>,
    signatures: Option<&str>,
    body: &[u8],
    tolerance: Duration,
    now: i64,
) -> Result<i64, SignatureError> {
    let id = id.ok_or(SignatureError::MissingHeader(ID))?;
    let timestamp_text = timestamp.ok_or(SignatureError::MissingHeader(TIMESTAMP))?;
    let signatures = signatures.ok_or(SignatureError::MissingHeader(SIGNATURE))?;
    let timestamp: i64 = timestamp_text
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    // Checked: a timestamp near i64::MIN or MAX must not wrap into the window.
    let skew = now.checked_sub(timestamp).and_then(i64::checked_abs);
    if skew.is_none_or(|skew| skew > tolerance) {
        return Err(SignatureError::StaleTimestamp);
    }
    let signed_with = |key: &[u8]| {
        let expected = mac(key, id, timestamp_text.trim(), body);
        signatures.split_whitespace().any(|candidate| {
            candidate
                .strip_prefix("v1,")
                .and_then(|encoded| STANDARD.decode(encoded).ok())
                .is_some_and(|bytes| expected.clone().verify_slice(&bytes).is_ok())
        })
    };
    if signed_with(&key(secret)?) {
        return Ok(timestamp);
    }
    if signed_with(secret.expose().as_bytes()) {
        return Err(SignatureError::SignedWithSecretText);
    }
    Err(SignatureError::NoValidSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    // The example from the Standard Webhooks specification's reference libraries.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: i64 = 1_614_265_330;
    const SPEC_BODY: &str = r#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn check(signatures: &str, body: &str, secret: &str, now: i64) -> Result<i64, SignatureError> {
        verify(
            &Secret::new(secret),
            Some(SPEC_ID),
            Some(&SPEC_TIMESTAMP.to_string()),
            Some(signatures),
            body.as_bytes(),
            Duration::from_secs(300),
            now,
        )
    }

    #[test]
    fn signs_like_the_specification() {
        let signature = sign(
            &Secret::new(SPEC_SECRET),
            SPEC_ID,
            SPEC_TIMESTAMP,
            SPEC_BODY.as_bytes(),
        )
        .unwrap();
        assert_eq!(signature, SPEC_SIGNATURE);
    }

    #[rstest]
    #[case::valid(SPEC_SIGNATURE, SPEC_BODY, SPEC_SECRET, 0, Ok(SPEC_TIMESTAMP))]
    #[case::one_of_several(
        "v1,bm90IGl0 v2,whatever v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        SPEC_BODY,
        SPEC_SECRET,
        0,
        Ok(SPEC_TIMESTAMP)
    )]
    #[case::wrong_secret(
        SPEC_SIGNATURE,
        SPEC_BODY,
        "whsec_c2VjcmV0LW90aGVy",
        0,
        Err(SignatureError::NoValidSignature)
    )]
    #[case::tampered_body(
        SPEC_SIGNATURE,
        r#"{"test": 2432232315}"#,
        SPEC_SECRET,
        0,
        Err(SignatureError::NoValidSignature)
    )]
    #[case::stale(
        SPEC_SIGNATURE,
        SPEC_BODY,
        SPEC_SECRET,
        301,
        Err(SignatureError::StaleTimestamp)
    )]
    #[case::from_the_future(SPEC_SIGNATURE, SPEC_BODY, SPEC_SECRET, -301, Err(SignatureError::StaleTimestamp))]
    fn verifies(
        #[case] signatures: &str,
        #[case] body: &str,
        #[case] secret: &str,
        #[case] skew: i64,
        #[case] expected: Result<i64, SignatureError>,
    ) {
        assert_eq!(
            check(signatures, body, secret, SPEC_TIMESTAMP + skew),
            expected
        );
    }

    /// A correctly signed message at `timestamp`, verified at `now` (5 minutes' tolerance).
    fn verify_signed_at(timestamp: i64, now: i64) -> Result<i64, SignatureError> {
        let secret = Secret::new(SPEC_SECRET);
        let signature = sign(&secret, SPEC_ID, timestamp, SPEC_BODY.as_bytes()).unwrap();
        verify(
            &secret,
            Some(SPEC_ID),
            Some(&timestamp.to_string()),
            Some(&signature),
            SPEC_BODY.as_bytes(),
            Duration::from_secs(300),
            now,
        )
    }

    const NOW: i64 = 1_800_000_000;

    #[rstest]
    #[case::i64_min(i64::MIN, false)]
    #[case::now_minus_two_to_the_63(NOW.wrapping_sub(i64::MIN), false)]
    #[case::i64_max(i64::MAX, false)]
    #[case::zero(0, false)]
    #[case::just_too_old(NOW - 301, false)]
    #[case::oldest_accepted(NOW - 300, true)]
    #[case::now(NOW, true)]
    #[case::newest_accepted(NOW + 300, true)]
    #[case::just_too_new(NOW + 301, false)]
    fn timestamps_at_the_edges_never_wrap_into_the_window(
        #[case] timestamp: i64,
        #[case] accepted: bool,
    ) {
        let verified = verify_signed_at(timestamp, NOW);
        if accepted {
            assert_eq!(verified, Ok(timestamp));
        } else {
            assert_eq!(verified, Err(SignatureError::StaleTimestamp));
        }
    }

    #[test]
    fn a_signature_keyed_with_the_secrets_text_gets_a_hint() {
        let text_key = mac(
            SPEC_SECRET.as_bytes(),
            SPEC_ID,
            &SPEC_TIMESTAMP.to_string(),
            SPEC_BODY.as_bytes(),
        );
        let signature = format!("v1,{}", STANDARD.encode(text_key.finalize().into_bytes()));
        let refused = check(&signature, SPEC_BODY, SPEC_SECRET, SPEC_TIMESTAMP);
        assert_eq!(refused, Err(SignatureError::SignedWithSecretText));
        assert!(
            refused
                .unwrap_err()
                .to_string()
                .contains("base64-decoded part after whsec_")
        );
    }

    #[test]
    fn generated_secrets_round_trip() {
        let secret = generate_secret();
        assert!(secret.expose().starts_with("whsec_"));
        let signature = sign(&secret, "id-1", 1000, b"body").unwrap();
        let verified = verify(
            &secret,
            Some("id-1"),
            Some("1000"),
            Some(&signature),
            b"body",
            Duration::from_secs(300),
            1000,
        );
        assert_eq!(verified, Ok(1000));
        assert_eq!(
            verify(
                &secret,
                None,
                Some("1000"),
                Some(&signature),
                b"body",
                Duration::from_secs(300),
                1000
            ),
            Err(SignatureError::MissingHeader(ID))
        );
    }
}
