//! A service-account key, as Google hands it out (JSON), checked before anything is
//! stored, and the RS256 assertion it signs for the JWT-bearer grant.
//!
//! Errors name the field at fault and never quote the key: they reach the tenant.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::Value;

use crate::connectors::ConnectorError;
use crate::secret::Secret;

/// `exp - iat` of an assertion: Google accepts at most an hour.
pub const ASSERTION_LIFETIME: u64 = 3600;

/// The fields of a key switchboard uses. The private key stays a [`Secret`].
pub struct ServiceAccountKey {
    pub project_id: String,
    pub private_key_id: String,
    pub client_email: String,
    pub token_uri: String,
    key: EncodingKey,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .finish_non_exhaustive()
    }
}

fn invalid(message: impl Into<String>) -> ConnectorError {
    ConnectorError::Invalid(message.into())
}

impl ServiceAccountKey {
    /// Reads and checks a key: `type` is `service_account`, the fields switchboard
    /// needs are there, and `private_key` is an RSA key in PEM that signs.
    pub fn parse(json: &Secret) -> Result<Self, ConnectorError> {
        const FIELD: &str = "credentials.service_account_key";
        // serde_json's messages can quote the text they choke on: only its position.
        let value: Value = serde_json::from_str(json.expose()).map_err(|e| {
            invalid(format!(
                "{FIELD} is not JSON (line {}, column {}): paste the key file as it was downloaded",
                e.line(),
                e.column()
            ))
        })?;
        let field = |name: &str| -> Result<String, ConnectorError> {
            match value.get(name) {
                Some(Value::String(text)) if !text.trim().is_empty() => Ok(text.clone()),
                Some(_) => Err(invalid(format!(
                    "{FIELD}.{name} must be a non-empty string"
                ))),
                None => Err(invalid(format!("{FIELD}.{name} is missing"))),
            }
        };
        let kind = field("type")?;
        if kind != "service_account" {
            return Err(invalid(format!(
                "{FIELD}.type must be \"service_account\", not \"{}\": create a key for a service account",
                kind.chars().take(40).collect::<String>()
            )));
        }
        let (client_email, token_uri) = (field("client_email")?, field("token_uri")?);
        let (project_id, private_key_id) = (field("project_id")?, field("private_key_id")?);
        let pem = Secret::new(field("private_key")?);
        let not_rsa = || {
            invalid(format!(
                "{FIELD}.private_key is not an RSA private key in PEM"
            ))
        };
        let key = EncodingKey::from_rsa_pem(pem.expose().as_bytes()).map_err(|_| not_rsa())?;
        let parsed = Self {
            project_id,
            private_key_id,
            client_email,
            token_uri,
            key,
        };
        // The PEM's armour can be right around a body that is not a key: sign once.
        parsed
            .assertion(&["check".to_string()], "https://example.invalid/token")
            .map_err(|_| not_rsa())?;
        Ok(parsed)
    }

    /// The JWT-bearer assertion: `iss` the service account, `scope`, `aud` the token
    /// endpoint, valid for an hour from now, `kid` the key's id.
    pub fn assertion(&self, scopes: &[String], audience: &str) -> Result<Secret, ConnectorError> {
        #[derive(Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            scope: String,
            aud: &'a str,
            iat: u64,
            exp: u64,
        }
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.private_key_id.clone());
        let claims = Claims {
            iss: &self.client_email,
            scope: scopes.join(" "),
            aud: audience,
            iat,
            exp: iat + ASSERTION_LIFETIME,
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map(Secret::new)
            .map_err(|e| invalid(format!("the assertion could not be signed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = include_str!("../../../tests/fixtures/gcp-service-account.pem");

    fn key(overrides: serde_json::Value) -> Secret {
        let mut key = serde_json::json!({
            "type": "service_account", "project_id": "acme-prod", "private_key_id": "k1",
            "private_key": PEM, "client_email": "sa@acme-prod.iam.gserviceaccount.com",
            "token_uri": "https://oauth2.googleapis.com/token"
        });
        for (name, value) in overrides.as_object().unwrap() {
            if value.is_null() {
                key.as_object_mut().unwrap().remove(name);
            } else {
                key[name] = value.clone();
            }
        }
        Secret::new(key.to_string())
    }

    fn refusal(json: Secret) -> String {
        match ServiceAccountKey::parse(&json) {
            Err(ConnectorError::Invalid(message)) => message,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_bad_key_is_refused_naming_the_field_and_never_quoting_it() {
        let parsed = ServiceAccountKey::parse(&key(serde_json::json!({}))).expect("valid");
        assert_eq!(parsed.client_email, "sa@acme-prod.iam.gserviceaccount.com");
        assert!(format!("{parsed:?}").contains("acme-prod"));

        let message = refusal(key(serde_json::json!({"type": "authorized_user"})));
        assert!(
            message.contains("type must be \"service_account\""),
            "{message}"
        );
        let message = refusal(key(serde_json::json!({"client_email": null})));
        assert_eq!(
            message,
            "credentials.service_account_key.client_email is missing"
        );
        let message = refusal(key(serde_json::json!({"token_uri": ""})));
        assert!(
            message.contains("token_uri must be a non-empty string"),
            "{message}"
        );
        let garbled = PEM.replace("MII", "XYZ");
        let message = refusal(key(serde_json::json!({"private_key": garbled})));
        assert_eq!(
            message,
            "credentials.service_account_key.private_key is not an RSA private key in PEM"
        );
        let message = refusal(Secret::new(format!("{{\"private_key\": \"{}", &PEM[..60])));
        assert!(message.contains("is not JSON (line"), "{message}");
        assert!(!message.contains("PRIVATE KEY"), "never quoted: {message}");
    }
}
