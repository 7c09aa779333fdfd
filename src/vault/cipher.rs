//! AES-256-GCM with a random 96-bit nonce per encryption and associated data that
//! binds each ciphertext to where it belongs. A sealed value is `nonce || ciphertext+tag`.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use zeroize::Zeroizing;

const NONCE_LEN: usize = 12;

/// Where a credential belongs. Its ciphertext decrypts under this binding only, so a
/// ciphertext copied onto another row (organization, integration or type) is refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Binding {
    pub organization_id: String,
    pub integration_id: String,
    pub credential_type: String,
}

impl Binding {
    pub fn new(
        organization_id: impl Into<String>,
        integration_id: impl Into<String>,
        credential_type: impl Into<String>,
    ) -> Self {
        Self {
            organization_id: organization_id.into(),
            integration_id: integration_id.into(),
            credential_type: credential_type.into(),
        }
    }

    /// The associated data: a domain tag and each field length-prefixed, so that no two
    /// different bindings can produce the same bytes.
    pub fn associated_data(&self) -> Vec<u8> {
        let mut aad = b"switchboard.credential.v1".to_vec();
        for field in [
            &self.organization_id,
            &self.integration_id,
            &self.credential_type,
        ] {
            aad.extend_from_slice(&(field.len() as u32).to_be_bytes());
            aad.extend_from_slice(field.as_bytes());
        }
        aad
    }
}

/// The ciphertext failed authentication: wrong key, wrong binding, or tampered bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ciphertext does not authenticate")]
pub struct Unauthentic;

/// A 256-bit key, ready to use (the key schedule is computed once).
pub struct Cipher(Aes256Gcm);

impl Cipher {
    pub fn new(key: &[u8; 32]) -> Self {
        Self(Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key)))
    }

    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let mut sealed = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
        sealed.extend_from_slice(&nonce);
        // Encryption into a Vec cannot fail for inputs under GCM's 64 GiB limit.
        let ciphertext = self
            .0
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .unwrap_or_default();
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, Unauthentic> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(Unauthentic);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        self.0
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| Unauthentic)
    }
}

pub fn random_key() -> Zeroizing<[u8; 32]> {
    let key = Aes256Gcm::generate_key(&mut OsRng);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&key);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding() -> Binding {
        Binding::new("org-a", "int-1", "bot_token")
    }

    #[test]
    fn round_trips_and_never_repeats_a_nonce() {
        let cipher = Cipher::new(&random_key());
        let aad = binding().associated_data();
        let first = cipher.seal(&aad, b"xoxb-123");
        let second = cipher.seal(&aad, b"xoxb-123");
        assert_ne!(first[..12], second[..12]);
        assert_ne!(first, second);
        assert_eq!(&*cipher.open(&aad, &first).unwrap(), b"xoxb-123");
    }

    #[test]
    fn another_binding_a_flipped_bit_or_another_key_fail() {
        let cipher = Cipher::new(&random_key());
        let sealed = cipher.seal(&binding().associated_data(), b"secret");
        for other in [
            Binding::new("org-b", "int-1", "bot_token"),
            Binding::new("org-a", "int-2", "bot_token"),
            Binding::new("org-a", "int-1", "refresh_token"),
            // Field boundaries matter: same concatenation, other binding.
            Binding::new("org-ai", "nt-1", "bot_token"),
        ] {
            assert_eq!(
                cipher.open(&other.associated_data(), &sealed),
                Err(Unauthentic)
            );
        }
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert_eq!(
            cipher.open(&binding().associated_data(), &tampered),
            Err(Unauthentic)
        );
        assert_eq!(
            cipher.open(&binding().associated_data(), &sealed[..10]),
            Err(Unauthentic)
        );
        let other_key = Cipher::new(&random_key());
        assert_eq!(
            other_key.open(&binding().associated_data(), &sealed),
            Err(Unauthentic)
        );
    }
}
