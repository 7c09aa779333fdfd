//! `Secret<T>`: a value that never shows itself.
//!
//! Its `Debug`, `Display` and `Serialize` all print `[redacted]`, and its memory is
//! zeroed on drop. The plaintext is reachable only through [`Secret::expose`], so every
//! use of a secret is a visible, greppable call. `Secret` (a string) holds configured
//! secrets and tokens; `Secret<Vec<u8>>` is how plaintext credentials leave the vault.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, Zeroizing};

pub const REDACTED: &str = "[redacted]";

#[derive(Clone)]
pub struct Secret<T: Zeroize = String>(Zeroizing<T>);

impl<T: Zeroize> Secret<T> {
    pub fn wrap(value: T) -> Self {
        Self(Zeroizing::new(value))
    }

    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl Secret<String> {
    pub fn new(value: impl Into<String>) -> Self {
        Self::wrap(value.into())
    }

    /// Compares with `candidate` in time independent of where they differ.
    pub fn matches(&self, candidate: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.expose().as_bytes().ct_eq(candidate.as_bytes()).into()
    }
}

impl<T: Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T: Zeroize> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T: Zeroize> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shows_itself() {
        let secret = Secret::new("xoxb-very-secret");
        assert_eq!(format!("{secret:?} {secret}"), "[redacted] [redacted]");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"[redacted]\"");
        assert_eq!(secret.expose(), "xoxb-very-secret");
        assert!(secret.matches("xoxb-very-secret"));
        assert!(!secret.matches("xoxb-very-secreT"));
        assert!(!secret.matches("xoxb"));
        let bytes = Secret::wrap(b"raw".to_vec());
        assert_eq!(format!("{bytes:?}"), "[redacted]");
        assert_eq!(bytes.expose(), b"raw");
    }
}
