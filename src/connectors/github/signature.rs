//! GitHub webhook signatures: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the
//! raw body>` with the app's webhook secret, compared in constant time. The older
//! SHA-1 `X-Hub-Signature` alone is refused.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::Secret;

pub const SIGNATURE_256: &str = "x-hub-signature-256";
pub const SIGNATURE_SHA1: &str = "x-hub-signature";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Hub-Signature-256")]
    Missing,
    #[error("only a SHA-1 signature (X-Hub-Signature) was sent: SHA-256 is required")]
    Sha1Only,
    #[error("X-Hub-Signature-256 is not sha256=<hex>")]
    Malformed,
    #[error("the signature does not match the body")]
    Mismatch,
}

/// Checks a request's signature headers against its raw body.
pub fn verify(
    secret: &Secret,
    signature_256: Option<&str>,
    signature_sha1: Option<&str>,
    body: &[u8],
) -> Result<(), SignatureError> {
    let Some(header) = signature_256 else {
        return Err(if signature_sha1.is_some() {
            SignatureError::Sha1Only
        } else {
            SignatureError::Missing
        });
    };
    let expected = header
        .trim()
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or(SignatureError::Malformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// The header value GitHub would send for `body` (the fake GitHub in the tests and
/// the benchmarks sign with it).
pub fn sign(secret: &Secret, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's published example ("Validating webhook deliveries").
    const SECRET: &str = "It's a Secret to Everybody";
    const PAYLOAD: &[u8] = b"Hello, World!";
    const SIGNATURE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn githubs_test_vector_verifies() {
        let secret = Secret::new(SECRET);
        assert_eq!(sign(&secret, PAYLOAD), SIGNATURE);
        assert_eq!(verify(&secret, Some(SIGNATURE), None, PAYLOAD), Ok(()));
    }

    #[test]
    fn wrong_secret_tampered_body_and_sha1_only_are_refused() {
        let secret = Secret::new(SECRET);
        assert_eq!(
            verify(&Secret::new("another"), Some(SIGNATURE), None, PAYLOAD),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&secret, Some(SIGNATURE), None, b"Hello, World?"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                &secret,
                None,
                Some("sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59"),
                PAYLOAD
            ),
            Err(SignatureError::Sha1Only)
        );
        assert_eq!(
            verify(&secret, None, None, PAYLOAD),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(&secret, Some("sha256=zz"), None, PAYLOAD),
            Err(SignatureError::Malformed)
        );
    }
}
