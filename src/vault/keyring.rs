//! Envelope encryption: data keys encrypt credentials; the master key wraps data keys.
//!
//! The master key never touches the database: each wrapped data key records only the
//! master key's fingerprint, so that a wrong master key is named as such instead of
//! looking like corrupt data.

use std::collections::HashMap;

use base64::Engine;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::VaultError;
use super::cipher::{Cipher, random_key};

pub struct MasterKey {
    cipher: Cipher,
    fingerprint: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.fingerprint)
    }
}

impl MasterKey {
    pub fn from_base64(text: &str) -> Result<MasterKey, VaultError> {
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| VaultError::InvalidMasterKey("not valid base64".into()))?,
        );
        let key: &[u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            VaultError::InvalidMasterKey(format!("{} bytes instead of 32", bytes.len()))
        })?;
        Ok(Self::from_bytes(key))
    }

    pub fn from_bytes(key: &[u8; 32]) -> MasterKey {
        let mut hasher = Sha256::new();
        hasher.update(b"switchboard.master-key.fingerprint");
        hasher.update(key);
        let fingerprint = format!("mk_{}", &hex::encode(hasher.finalize())[..16]);
        MasterKey {
            cipher: Cipher::new(key),
            fingerprint,
        }
    }

    /// A new random master key and its base64 text (to be stored by the caller).
    pub fn generate() -> (MasterKey, Zeroizing<String>) {
        let key = random_key();
        let text = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(*key));
        (Self::from_bytes(&key), text)
    }

    /// Identifies the key without revealing it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn aad(key_id: &str) -> Vec<u8> {
        [b"switchboard.data-key.v1:".as_slice(), key_id.as_bytes()].concat()
    }

    pub fn wrap(&self, key_id: &str, data_key: &[u8; 32]) -> Vec<u8> {
        self.cipher.seal(&Self::aad(key_id), data_key)
    }

    pub fn unwrap(&self, key_id: &str, wrapped: &[u8]) -> Result<Zeroizing<[u8; 32]>, VaultError> {
        let plain = self
            .cipher
            .open(&Self::aad(key_id), wrapped)
            .map_err(|_| VaultError::CorruptDataKey(key_id.to_string()))?;
        let mut key = Zeroizing::new([0u8; 32]);
        if plain.len() != 32 {
            return Err(VaultError::CorruptDataKey(key_id.to_string()));
        }
        key.copy_from_slice(&plain);
        Ok(key)
    }
}

/// The unwrapped data keys, by id, and which one encrypts new credentials.
pub struct Keyring {
    keys: HashMap<String, Cipher>,
    active: String,
}

impl Keyring {
    pub fn new(active: String) -> Self {
        Self {
            keys: HashMap::new(),
            active,
        }
    }

    pub fn insert(&mut self, id: String, key: &[u8; 32]) {
        self.keys.insert(id, Cipher::new(key));
    }

    pub fn set_active(&mut self, id: String) {
        self.active = id;
    }

    pub fn active_id(&self) -> &str {
        &self.active
    }

    pub fn active(&self) -> Option<&Cipher> {
        self.keys.get(&self.active)
    }

    pub fn get(&self, id: &str) -> Option<&Cipher> {
        self.keys.get(id)
    }

    pub fn ids(&self) -> impl Iterator<Item = &String> {
        self.keys.keys()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_key_unwraps_only_under_its_master_key_and_id() {
        let (master, text) = MasterKey::generate();
        assert_eq!(
            MasterKey::from_base64(&text).unwrap().fingerprint(),
            master.fingerprint()
        );
        let data_key = random_key();
        let wrapped = master.wrap("dk-1", &data_key);
        assert_eq!(*master.unwrap("dk-1", &wrapped).unwrap(), *data_key);
        assert!(
            matches!(master.unwrap("dk-2", &wrapped), Err(VaultError::CorruptDataKey(id)) if id == "dk-2")
        );
        let (other, _) = MasterKey::generate();
        assert_ne!(other.fingerprint(), master.fingerprint());
        assert!(other.unwrap("dk-1", &wrapped).is_err());
    }

    #[test]
    fn master_keys_must_be_32_bytes_of_base64() {
        assert!(MasterKey::from_base64("not base64!").is_err());
        assert!(MasterKey::from_base64("c2hvcnQ=").is_err());
        let debug = format!("{:?}", MasterKey::generate().0);
        assert!(debug.starts_with("MasterKey(mk_"));
    }
}
