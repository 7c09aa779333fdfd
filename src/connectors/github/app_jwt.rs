//! The GitHub App's JWT: how the app itself (not an installation) authenticates.
//!
//! RS256 with the app's private key, `iat` 60 s in the past (GitHub's advice against
//! clock drift), `exp` 9 minutes after `iat` (GitHub refuses more than 10) and `iss`
//! the app id. One token is cached and minted again a minute before it expires.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// How far back `iat` is set, for clocks that run ahead of GitHub's.
pub const BACKDATE: Duration = Duration::from_secs(60);
/// `exp - iat`.
pub const LIFETIME: Duration = Duration::from_secs(9 * 60);
/// A cached token this close to its expiry is minted again.
const RENEW_BEFORE: Duration = Duration::from_secs(60);

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub iat: u64,
    pub exp: u64,
    pub iss: String,
}

pub struct AppJwt {
    app_id: String,
    key: EncodingKey,
    cached: Mutex<Option<(Secret, u64)>>,
}

impl std::fmt::Debug for AppJwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppJwt")
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

impl AppJwt {
    /// Reads the private key (PKCS#1 as GitHub hands it out, or PKCS#8). The error
    /// never quotes the key.
    pub fn new(app_id: &str, private_key_pem: &Secret) -> Result<Self, String> {
        let key = EncodingKey::from_rsa_pem(private_key_pem.expose().as_bytes()).map_err(|e| {
            format!("connectors.github.private_key is not an RSA private key in PEM: {e}")
        })?;
        Ok(Self {
            app_id: app_id.to_string(),
            key,
            cached: Mutex::new(None),
        })
    }

    /// The current token, minted when there is none or it is about to expire.
    pub fn token(&self) -> Result<Secret, String> {
        let now = unix_now();
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((token, exp)) = cached.as_ref()
            && now + RENEW_BEFORE.as_secs() < *exp
        {
            return Ok(token.clone());
        }
        let iat = now.saturating_sub(BACKDATE.as_secs());
        let claims = Claims {
            iat,
            exp: iat + LIFETIME.as_secs(),
            iss: self.app_id.clone(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map_err(|e| format!("signing the app JWT failed: {e}"))?;
        let token = Secret::new(token);
        *cached = Some((token.clone(), claims.exp));
        Ok(token)
    }

    /// Drops the cached token (GitHub refused it): the next call mints a new one.
    pub fn forget(&self) {
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    const KEY: &str = include_str!("../../../tests/fixtures/github-app-test-key.pem");
    const PUBLIC: &str = include_str!("../../../tests/fixtures/github-app-test-key.pub.pem");

    #[test]
    fn claims_follow_githubs_rules_and_the_token_is_cached() {
        let jwt = AppJwt::new("12345", &Secret::new(KEY)).unwrap();
        let token = jwt.token().unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&["12345"]);
        let decoded = jsonwebtoken::decode::<Claims>(
            token.expose(),
            &DecodingKey::from_rsa_pem(PUBLIC.as_bytes()).unwrap(),
            &validation,
        )
        .unwrap();
        let now = unix_now();
        assert!(decoded.claims.iat <= now - 59 && decoded.claims.iat >= now - 61);
        assert_eq!(decoded.claims.exp - decoded.claims.iat, 9 * 60);
        assert_eq!(jwt.token().unwrap().expose(), token.expose(), "cached");
        jwt.forget();
        // Minted again (same second gives the same claims, so compare the cache state).
        assert!(jwt.cached.lock().unwrap().is_none());
        jwt.token().unwrap();
        assert!(jwt.cached.lock().unwrap().is_some());
    }

    #[test]
    fn a_bad_key_is_a_clear_error_that_does_not_quote_it() {
        let error = AppJwt::new(
            "1",
            &Secret::new(
                "-----BEGIN RSA PRIVATE KEY-----\nnot-a-key\n-----END RSA PRIVATE KEY-----",
            ),
        )
        .unwrap_err();
        assert!(error.contains("connectors.github.private_key"), "{error}");
        assert!(!error.contains("not-a-key"), "{error}");
    }
}
