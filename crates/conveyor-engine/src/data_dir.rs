//! The layout of a data directory: database, artifacts, logs, workspaces, and under `keys/`
//! (0700, every file 0600) the signing key and the secrets keyring; `checkpoints.jsonl`, the
//! export of the event log's signed checkpoints.

use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use conveyor_attest::{Checkpoint, KeyPair, PublicKey};
use conveyor_store::logs::LogDir;
use conveyor_store::{Audit, Cas, Database, Keyring, SecretKey, Store, StoreError};

use crate::EngineError;

pub struct DataDir {
    pub root: PathBuf,
    pub store: Store,
    pub cas: Cas,
    pub logs: LogDir,
    /// Signs releases and the event log's checkpoints (DSSE's payload type keeps the two apart).
    pub signer: KeyPair,
    /// Public keys the signer had before rotations (`keys/retired/*.pub`): what they signed
    /// still verifies.
    pub retired: Vec<PublicKey>,
    /// `keys/in-use.lock`, held shared while the directory is open: a key rotation takes it
    /// exclusively, so it never re-seals values under a server that still holds the old key.
    lock: std::fs::File,
}

impl DataDir {
    /// Opens `root`, creating it (and its keys) on first use, with the store in `database`
    /// (`Database::in_data_dir(root)` by default), which gets the secrets keyring. The directory
    /// is the server's alone (0700): its database holds the secrets, `keys/` the keys.
    pub async fn open(root: &Path, database: &Database) -> Result<DataDir, EngineError> {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::create_dir_all(root)?;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))?;
        let keys = root.join("keys");
        std::fs::create_dir_all(&keys)?;
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o700))?;
        let lock = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(keys.join("in-use.lock"))?;
        lock.lock_shared()?;
        let signer = load_or_create_key(&keys)?;
        let retired = retired_keys(&keys.join("retired"))?;
        let keyring = load_or_create_keyring(&keys.join("secrets.key"))?;
        owner_only(&keys)?;
        let store = Store::open(database, keyring).await?;
        let cas = Cas::new(root.join("cas"))?;
        let logs = LogDir::new(root.join("logs"))?;
        std::fs::create_dir_all(root.join("work"))?;
        std::fs::create_dir_all(root.join("repos"))?;
        Ok(DataDir {
            root: root.to_path_buf(),
            store,
            cas,
            logs,
            signer,
            retired,
            lock,
        })
    }

    /// Every key whose signatures verify: the current one first, then the retired ones.
    pub fn public_keys(&self) -> Vec<PublicKey> {
        std::iter::once(self.signer.public())
            .chain(self.retired.iter().cloned())
            .collect()
    }

    /// Replaces the signing key with a fresh one; the old public key is kept under
    /// `keys/retired/` so releases and checkpoints it signed still verify, and the rotation is
    /// recorded (`signing_key_rotated`). Refused while another process has the directory open.
    /// Returns the new key's id.
    pub async fn rotate_signing_key(&self) -> Result<String, EngineError> {
        self.lock.try_lock().map_err(|_| KeyError::InUse)?;
        let keys = self.root.join("keys");
        let retired_dir = keys.join("retired");
        std::fs::create_dir_all(&retired_dir)?;
        std::fs::set_permissions(&retired_dir, std::fs::Permissions::from_mode(0o700))?;
        let old = self.signer.public();
        write_atomically(&retired_dir.join(format!("{}.pub", old.key_id())), &old.to_hex())?;
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(KeyError::NoRandomness)?;
        let new = KeyPair::from_seed(seed);
        write_atomically(&keys.join("signing.key"), &hex::encode(seed))?;
        write_atomically(&keys.join("signing.pub"), &new.public().to_hex())?;
        let key_id = new.public().key_id();
        self.store
            .log()
            .append(conveyor_store::Event::SigningKeyRotated {
                key_id: key_id.clone(),
                previous: old.key_id(),
            })
            .await?;
        tracing::info!(key = %key_id, previous = %old.key_id(), "signing key rotated");
        Ok(key_id)
    }

    /// Where signed checkpoints are exported, one DSSE envelope per line.
    pub fn checkpoint_file(&self) -> PathBuf {
        self.root.join("checkpoints.jsonl")
    }

    /// Signs a checkpoint of the event log's head, if it moved since the last one.
    pub async fn checkpoint(&self) -> Result<Option<Checkpoint>, EngineError> {
        Ok(self
            .store
            .log()
            .checkpoint(&self.signer, &self.checkpoint_file())
            .await?)
    }

    /// Verifies the event log's chain and checkpoints against this directory's key and export.
    pub async fn audit(&self) -> Result<Audit, EngineError> {
        Ok(self
            .store
            .audit(&self.public_keys(), Some(&self.checkpoint_file()))
            .await?)
    }

    /// Re-seals every secret value under a new key and retires the old ones; refused while
    /// another process has the directory open. Returns the new key's id and how many values
    /// were re-sealed. Crash-safe: the keyring file holds old and new keys until the values are
    /// all re-sealed (in one transaction), then only the new one.
    pub async fn rotate_secrets_key(&self) -> Result<(String, usize), EngineError> {
        self.lock.try_lock().map_err(|_| KeyError::InUse)?;
        let path = self.root.join("keys").join("secrets.key");
        let new = SecretKey::generate().map_err(StoreError::from)?;
        let mut keys = read_keyring(&path)?.keys().to_vec();
        keys.push(new.clone());
        write_keyring(&path, &keys)?;
        let resealed = self.store.log().rotate_secrets_key(Keyring::new(keys)).await?;
        write_keyring(&path, std::slice::from_ref(&new))?;
        tracing::info!(
            key = new.id(),
            secrets = resealed,
            "secret values re-sealed under a new key"
        );
        Ok((new.id().to_string(), resealed))
    }

    pub fn work_dir(&self) -> PathBuf {
        self.root.join("work")
    }

    pub fn repos_dir(&self) -> PathBuf {
        self.root.join("repos")
    }

    /// Where a project's git mirror is.
    pub fn mirror(&self, project: &str) -> PathBuf {
        self.repos_dir().join(format!("{project}.git"))
    }
}

/// Why a key cannot be read, created or rotated.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{} is not a 32-byte hex Ed25519 seed", .0.display())]
    NotASeed(PathBuf),
    #[error("{} is not a hex Ed25519 public key", .0.display())]
    NotAPublicKey(PathBuf),
    #[error("{}:{line}: not a 32-byte hex secrets key", .path.display())]
    NotASecretsKey { path: PathBuf, line: usize },
    #[error("the data directory is open in another process (a running server?): stop it first")]
    InUse,
    #[error("no OS randomness to create a key: {0}")]
    NoRandomness(getrandom::Error),
}

/// The release signing key: created once from the OS's randomness, kept owner-readable only.
fn load_or_create_key(dir: &Path) -> Result<KeyPair, EngineError> {
    let secret = dir.join("signing.key");
    if let Ok(text) = std::fs::read_to_string(&secret) {
        let bytes = hex::decode(text.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok());
        return bytes
            .map(KeyPair::from_seed)
            .ok_or_else(|| KeyError::NotASeed(secret).into());
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(KeyError::NoRandomness)?;
    let key = KeyPair::from_seed(seed);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&secret)?;
    std::io::Write::write_all(&mut file, hex::encode(seed).as_bytes())?;
    file.sync_all()?;
    std::fs::write(dir.join("signing.pub"), key.public().to_hex())?;
    Ok(key)
}

/// The public keys rotations retired, by key id (one hex key per `<id>.pub`).
fn retired_keys(dir: &Path) -> Result<Vec<PublicKey>, EngineError> {
    let mut keys = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(keys);
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pub"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path)?;
        keys.push(PublicKey::from_hex(&text).map_err(|_| KeyError::NotAPublicKey(path))?);
    }
    Ok(keys)
}

/// Writes `text` to `path` through a fresh file 0600, synced and renamed over it.
fn write_atomically(path: &Path, text: &str) -> Result<(), EngineError> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".new");
    let fresh = path.with_file_name(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&fresh)?;
    std::io::Write::write_all(&mut file, text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&fresh, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The secrets keyring: one hex key per line, the last one current (more than one only while a
/// rotation is under way). Created with one fresh key on first use.
fn load_or_create_keyring(path: &Path) -> Result<Keyring, EngineError> {
    if path.exists() {
        return read_keyring(path);
    }
    let key = SecretKey::generate().map_err(StoreError::from)?;
    write_keyring(path, std::slice::from_ref(&key))?;
    Ok(Keyring::new(vec![key]))
}

fn read_keyring(path: &Path) -> Result<Keyring, EngineError> {
    let text = std::fs::read_to_string(path)?;
    let keys = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            SecretKey::from_hex(line).ok_or_else(|| KeyError::NotASecretsKey {
                path: path.to_path_buf(),
                line: n + 1,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err(KeyError::NotASecretsKey {
            path: path.to_path_buf(),
            line: 1,
        }
        .into());
    }
    Ok(Keyring::new(keys))
}

/// Replaces the keyring file atomically (a new file 0600, synced, renamed over it).
fn write_keyring(path: &Path, keys: &[SecretKey]) -> Result<(), EngineError> {
    let text: String = keys.iter().map(|k| k.to_hex() + "\n").collect();
    write_atomically(path, &text)
}

/// Every file under `keys/` is its owner's only, public keys too: one rule, nothing to judge,
/// and older data directories are brought in line.
fn owner_only(dir: &Path) -> Result<(), EngineError> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn keys_and_the_database_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path(), &Database::in_data_dir(dir.path()))
            .await
            .unwrap();
        data.store.log().set_secret("p", "T", "v").await.unwrap();
        assert_eq!(mode(&dir.path().join("keys")), 0o700);
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir.path().join("keys")).unwrap() {
            files.push(entry.unwrap().path());
        }
        for name in ["conveyor.db", "conveyor.db-wal", "conveyor.db-shm"] {
            files.push(dir.path().join(name));
        }
        assert_eq!(files.len(), 7, "{files:?}");
        for file in files {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        // The directory is the server's alone; one made by hand (or by an older version) is
        // tightened on the next open.
        assert_eq!(mode(dir.path()), 0o700);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        drop(data);
        DataDir::open(dir.path(), &Database::in_data_dir(dir.path()))
            .await
            .unwrap();
        assert_eq!(mode(dir.path()), 0o700);
    }

    #[tokio::test]
    async fn rotation_retires_the_old_secrets_key_and_waits_for_other_processes() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path(), &Database::in_data_dir(dir.path()))
            .await
            .unwrap();
        data.store.log().set_secret("p", "T", "value").await.unwrap();
        let path = dir.path().join("keys/secrets.key");
        let before = std::fs::read_to_string(&path).unwrap();

        let (key_id, resealed) = data.rotate_secrets_key().await.unwrap();
        assert_eq!(resealed, 1);
        let after = read_keyring(&path).unwrap();
        assert_eq!(after.keys().len(), 1);
        assert_eq!(after.current().unwrap().id(), key_id);
        assert!(!std::fs::read_to_string(&path).unwrap().contains(before.trim()));
        assert_eq!(data.store.secrets("p").await.unwrap()[0].1, "value");
        drop(data);

        let reopened = DataDir::open(dir.path(), &Database::in_data_dir(dir.path()))
            .await
            .unwrap();
        assert_eq!(reopened.store.secrets("p").await.unwrap()[0].1, "value");
        // Another process (here another open of the directory) still using the key.
        let other = DataDir::open(dir.path(), &Database::in_data_dir(dir.path()))
            .await
            .unwrap();
        assert!(matches!(
            reopened.rotate_secrets_key().await,
            Err(EngineError::Key(KeyError::InUse))
        ));
        drop(other);
    }
}
