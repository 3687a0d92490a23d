//! Secret values, sealed at rest. Each value is encrypted with XChaCha20-Poly1305 under the
//! current key of the `Keyring` the store was opened with (the store never reads key files: the
//! data directory passes the keys in), with a fresh random 24-byte nonce and the project and
//! secret name as associated data, so a ciphertext moved onto another secret's row does not open.
//! Each row names the key that sealed it; rotation re-seals every value under a new key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest as _, Sha256};
use sqlx::Row as _;

use crate::backend::Tx;
use crate::{Store, StoreError};

/// Bytes of a secrets key.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;

/// One XChaCha20-Poly1305 key and its id: the first 16 hex digits of SHA-256 over a label and
/// the key, so a row names its key without revealing it and a wrong key file is told apart from
/// a damaged value.
#[derive(Clone)]
pub struct SecretKey {
    bytes: [u8; KEY_LEN],
    id: String,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        f.debug_struct("SecretKey").field("id", &self.id).finish()
    }
}

impl SecretKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        let mut h = Sha256::new();
        h.update(b"conveyor secrets key id\n");
        h.update(bytes);
        let id = hex::encode(&h.finalize()[..8]);
        SecretKey { bytes, id }
    }

    /// A new key from the OS's randomness.
    pub fn generate() -> Result<Self, SecretError> {
        let mut bytes = [0u8; KEY_LEN];
        getrandom::fill(&mut bytes).map_err(|e| SecretError::Randomness(e.to_string()))?;
        Ok(SecretKey::from_bytes(bytes))
    }

    /// From its hex text (how key files hold it).
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text.trim()).ok()?;
        Some(SecretKey::from_bytes(bytes.try_into().ok()?))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.bytes)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.bytes.into())
    }
}

/// The keys the store may use: values are sealed under the last (current) one; the others only
/// open values sealed before a rotation finished. An empty keyring reads and writes no secret.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: Vec<SecretKey>,
}

/// Why a secret value cannot be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the store was opened without a secrets key: secret values can be neither read nor written")]
    NoKey,
    #[error("secret {name} of project {project} is sealed under key {key_id}, which the store was not given")]
    UnknownKey {
        project: String,
        name: String,
        key_id: String,
    },
    #[error(
        "secret {name} of project {project} does not open under key {key_id}: its stored value was altered or copied from another secret"
    )]
    Unopenable {
        project: String,
        name: String,
        key_id: String,
    },
    #[error("no OS randomness for a secrets key or nonce: {0}")]
    Randomness(String),
}

/// A sealed value as a row holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sealed {
    pub(crate) key_id: String,
    /// Base64 of the 24-byte nonce.
    pub(crate) nonce: String,
    /// Base64 of ciphertext and tag.
    pub(crate) value: String,
}

/// What the tag authenticates besides the value: which secret it is. Length-prefixed, so no two
/// (project, name) pairs give the same bytes.
fn associated_data(project: &str, name: &str) -> Vec<u8> {
    let mut aad = b"conveyor secret v1\n".to_vec();
    for part in [project, name] {
        aad.extend_from_slice(&(part.len() as u64).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

impl Keyring {
    /// `keys`, the last one current.
    pub fn new(keys: Vec<SecretKey>) -> Self {
        Keyring { keys }
    }

    /// The key new values are sealed under.
    pub fn current(&self) -> Option<&SecretKey> {
        self.keys.last()
    }

    pub fn keys(&self) -> &[SecretKey] {
        &self.keys
    }

    pub(crate) fn seal(&self, project: &str, name: &str, value: &str) -> Result<Sealed, SecretError> {
        let key = self.current().ok_or(SecretError::NoKey)?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| SecretError::Randomness(e.to_string()))?;
        let aad = associated_data(project, name);
        let ciphertext = key
            .cipher()
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 seals any value the API accepts");
        Ok(Sealed {
            key_id: key.id.clone(),
            nonce: BASE64.encode(nonce),
            value: BASE64.encode(ciphertext),
        })
    }

    pub(crate) fn open(&self, project: &str, name: &str, sealed: &Sealed) -> Result<String, SecretError> {
        let key =
            self.keys
                .iter()
                .find(|k| k.id == sealed.key_id)
                .ok_or_else(|| SecretError::UnknownKey {
                    project: project.into(),
                    name: name.into(),
                    key_id: sealed.key_id.clone(),
                })?;
        let unopenable = || SecretError::Unopenable {
            project: project.into(),
            name: name.into(),
            key_id: sealed.key_id.clone(),
        };
        let nonce: [u8; NONCE_LEN] = BASE64
            .decode(&sealed.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(unopenable)?;
        let ciphertext = BASE64.decode(&sealed.value).map_err(|_| unopenable())?;
        let aad = associated_data(project, name);
        let plain = key
            .cipher()
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| unopenable())?;
        String::from_utf8(plain).map_err(|_| unopenable())
    }
}

// === rows ===

/// Stores a sealed value, replacing the secret's previous one.
pub(crate) async fn put(
    tx: &mut Tx<'_>,
    project: &str,
    name: &str,
    sealed: &Sealed,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO secrets (project, name, value, key_id, nonce) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (project, name) DO UPDATE
         SET value = excluded.value, key_id = excluded.key_id, nonce = excluded.nonce",
    )
    .bind(project)
    .bind(name)
    .bind(&sealed.value)
    .bind(&sealed.key_id)
    .bind(&sealed.nonce)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A row's value as stored.
pub(crate) enum Stored {
    Sealed(Sealed),
    /// From before values were sealed (`key_id` NULL).
    Plaintext(String),
}

/// Every secret of every project, as stored: `(project, name, value)`.
pub(crate) async fn all(tx: &mut Tx<'_>) -> Result<Vec<(String, String, Stored)>, StoreError> {
    let rows = sqlx::query("SELECT project, name, value, key_id, nonce FROM secrets ORDER BY project, name")
        .fetch_all(&mut **tx)
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let value: String = row.get(2);
            let stored = match (row.get::<Option<String>, _>(3), row.get::<Option<String>, _>(4)) {
                (Some(key_id), Some(nonce)) => Stored::Sealed(Sealed { key_id, nonce, value }),
                _ => Stored::Plaintext(value),
            };
            (row.get(0), row.get(1), stored)
        })
        .collect())
}

/// Where a project's source-URL credentials are kept among its sealed values: a name no secret
/// can have, so no pipeline can ask for them.
pub(crate) const SOURCE_CREDENTIALS: &str = "source credentials";

impl Store {
    /// A project's secrets, opened: `(name, value)` by name.
    pub async fn secrets(&self, project: &str) -> Result<Vec<(String, String)>, StoreError> {
        let mut values = self.sealed_values(project).await?;
        values.retain(|(name, _)| name != SOURCE_CREDENTIALS);
        Ok(values)
    }

    /// Every sealed value of a project (its secrets and its source credentials), opened.
    pub(crate) async fn sealed_values(&self, project: &str) -> Result<Vec<(String, String)>, StoreError> {
        let keyring = self.log().keyring();
        let rows =
            sqlx::query("SELECT name, value, key_id, nonce FROM secrets WHERE project = $1 ORDER BY name")
                .bind(project)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|row| {
                let name: String = row.get(0);
                let sealed = Sealed {
                    value: row.get(1),
                    // A plaintext row left by an open without a key: it does not open either.
                    key_id: row.get::<Option<String>, _>(2).unwrap_or_default(),
                    nonce: row.get::<Option<String>, _>(3).unwrap_or_default(),
                };
                let value = keyring.open(project, &name, &sealed)?;
                Ok((name, value))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(seed: u8) -> Keyring {
        Keyring::new(vec![SecretKey::from_bytes([seed; KEY_LEN])])
    }

    #[test]
    fn a_value_opens_only_as_the_secret_it_was_sealed_for_under_its_key() {
        let keyring = ring(1);
        let sealed = keyring.seal("p", "TOKEN", "s3cr3t").unwrap();
        assert_eq!(sealed.key_id, keyring.current().unwrap().id());
        assert_eq!(keyring.open("p", "TOKEN", &sealed).unwrap(), "s3cr3t");
        assert!(!sealed.value.contains("s3cr3t"));
        // A fresh nonce each time: the same value never seals to the same bytes.
        assert_ne!(keyring.seal("p", "TOKEN", "s3cr3t").unwrap(), sealed);

        // Swapped onto another secret's row, or another project's, it does not open.
        for (project, name) in [("p", "OTHER"), ("q", "TOKEN"), ("pT", "OKEN")] {
            assert!(matches!(
                keyring.open(project, name, &sealed),
                Err(SecretError::Unopenable { .. })
            ));
        }
        // Under another key with the same id (a forged row), or altered, neither.
        let wrong = Keyring::new(vec![SecretKey {
            bytes: [2; KEY_LEN],
            id: sealed.key_id.clone(),
        }]);
        assert!(matches!(
            wrong.open("p", "TOKEN", &sealed),
            Err(SecretError::Unopenable { .. })
        ));
        let mut altered = sealed.clone();
        altered.value = BASE64.encode(b"0123456789abcdef0123456789");
        assert!(matches!(
            keyring.open("p", "TOKEN", &altered),
            Err(SecretError::Unopenable { .. })
        ));
        // A keyring without its key says which key is missing.
        match ring(3).open("p", "TOKEN", &sealed) {
            Err(SecretError::UnknownKey { key_id, .. }) => assert_eq!(key_id, sealed.key_id),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Keyring::default().seal("p", "T", "v"),
            Err(SecretError::NoKey)
        ));
    }

    #[test]
    fn keys_round_trip_through_hex_and_their_ids_differ() {
        let key = SecretKey::generate().unwrap();
        let again = SecretKey::from_hex(&key.to_hex()).unwrap();
        assert_eq!((again.id(), again.bytes), (key.id(), key.bytes));
        assert_eq!(key.id().len(), 16);
        assert_ne!(SecretKey::generate().unwrap().id(), key.id());
        assert!(SecretKey::from_hex("abcd").is_none());
        assert!(!format!("{key:?}").contains(&key.to_hex()));
    }
}

#[cfg(test)]
mod store_tests {
    use super::*;
    use crate::Database;
    use crate::Event;
    use crate::db::tests::{Scratch, keyring, open};

    /// Whether `needle` is anywhere in the database, once the store is closed.
    async fn in_file(store: Store, scratch: &Scratch, needle: &str) -> bool {
        store.pool.close().await;
        scratch.holds(needle)
    }

    #[tokio::test]
    async fn source_credentials_are_sealed_apart_from_the_secrets_steps_get() {
        let scratch = Scratch::new();
        let store = open(&scratch).await;
        let credentials = "alice:a-recognisable-git-token-424242";
        store
            .log()
            .set_source_credentials("p", Some(credentials))
            .await
            .unwrap();
        store.log().set_secret("p", "TOKEN", "t").await.unwrap();
        assert_eq!(
            store.source_credentials("p").await.unwrap().as_deref(),
            Some(credentials)
        );
        // Never among the secrets a pipeline's steps are given.
        assert_eq!(
            store.secrets("p").await.unwrap(),
            [("TOKEN".to_string(), "t".to_string())]
        );
        store.log().set_source_credentials("p", None).await.unwrap();
        assert_eq!(store.source_credentials("p").await.unwrap(), None);
        store
            .log()
            .set_source_credentials("p", Some(credentials))
            .await
            .unwrap();
        assert!(!in_file(store, &scratch, "a-recognisable-git-token").await);
    }

    #[tokio::test]
    async fn secret_values_are_sealed_in_the_database_and_open_only_with_their_key() {
        let scratch = Scratch::new();
        let store = open(&scratch).await;
        let value = "a-very-recognisable-secret-value-31337";
        store.log().set_secret("p", "TOKEN", value).await.unwrap();
        store.log().set_secret("p", "OTHER", "other-value").await.unwrap();
        assert_eq!(
            store.secrets("p").await.unwrap(),
            [
                ("OTHER".to_string(), "other-value".to_string()),
                ("TOKEN".to_string(), value.to_string())
            ]
        );
        let events = store.events(0, 10).await.unwrap();
        assert!(matches!(&events[0].event, Event::SecretSet { name, .. } if name == "TOKEN"));
        // A SQLite file was created owner-only.
        if let Database::Sqlite(path) = &scratch.database {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                std::fs::metadata(path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert!(!in_file(store, &scratch, value).await);

        // Without its key (another one, or none) the store cannot read it.
        let other = Store::open(
            &scratch.database,
            Keyring::new(vec![SecretKey::from_bytes([9; KEY_LEN])]),
        )
        .await
        .unwrap();
        assert!(matches!(
            other.secrets("p").await,
            Err(StoreError::Secret(SecretError::UnknownKey { .. }))
        ));
        other.pool.close().await;
        let none = Store::open(&scratch.database, Keyring::default()).await.unwrap();
        assert!(matches!(
            none.secrets("p").await,
            Err(StoreError::Secret(SecretError::UnknownKey { .. }))
        ));
        assert!(matches!(
            none.log().set_secret("p", "T", "v").await,
            Err(StoreError::Secret(SecretError::NoKey))
        ));
        none.pool.close().await;

        // One secret's ciphertext copied onto another's row does not open as it.
        let store = open(&scratch).await;
        sqlx::query(
            "UPDATE secrets SET value = (SELECT value FROM secrets WHERE name = 'TOKEN'),
                nonce = (SELECT nonce FROM secrets WHERE name = 'TOKEN') WHERE name = 'OTHER'",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        assert!(matches!(
            store.secrets("p").await,
            Err(StoreError::Secret(SecretError::Unopenable { name, .. })) if name == "OTHER"
        ));
    }

    #[tokio::test]
    async fn rotation_reseals_every_value_under_the_new_key_and_retires_the_old() {
        let scratch = Scratch::new();
        let store = open(&scratch).await;
        store.log().set_secret("p", "A", "value-a").await.unwrap();
        store.log().set_secret("q", "B", "value-b").await.unwrap();
        let old = keyring().current().unwrap().clone();
        let new = SecretKey::generate().unwrap();
        let both = Keyring::new(vec![old.clone(), new.clone()]);
        assert_eq!(store.log().rotate_secrets_key(both).await.unwrap(), 2);
        let rotated = store.events(2, 10).await.unwrap();
        assert_eq!(
            rotated[0].event,
            Event::SecretsKeyRotated {
                key_id: new.id().to_string(),
                previous: vec![old.id().to_string()],
                secrets: 2,
            }
        );
        // Only the new key is used from now on, in this process and after.
        store.log().set_secret("p", "C", "value-c").await.unwrap();
        store.pool.close().await;
        let under_new = Store::open(&scratch.database, Keyring::new(vec![new]))
            .await
            .unwrap();
        assert_eq!(
            under_new.secrets("p").await.unwrap(),
            [
                ("A".to_string(), "value-a".to_string()),
                ("C".to_string(), "value-c".to_string())
            ]
        );
        assert_eq!(under_new.secrets("q").await.unwrap()[0].1, "value-b");
        under_new.pool.close().await;
        let under_old = open(&scratch).await;
        assert!(matches!(
            under_old.secrets("q").await,
            Err(StoreError::Secret(SecretError::UnknownKey { key_id, .. })) if key_id != old.id()
        ));
    }
}
