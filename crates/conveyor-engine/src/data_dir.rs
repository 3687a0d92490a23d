//! The layout of a data directory: database, artifacts, logs, workspaces, signing key.

use std::path::{Path, PathBuf};

use conveyor_attest::KeyPair;
use conveyor_store::logs::LogDir;
use conveyor_store::{Cas, Store};

use crate::EngineError;

pub struct DataDir {
    pub root: PathBuf,
    pub store: Store,
    pub cas: Cas,
    pub logs: LogDir,
    pub signer: KeyPair,
}

impl DataDir {
    /// Opens `root`, creating it (and the signing key) on first use. The directory is the
    /// server's alone (0700): its database holds the secrets, `keys/` the signing key.
    pub async fn open(root: &Path) -> Result<DataDir, EngineError> {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::create_dir_all(root)?;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))?;
        let store = Store::open(&root.join("conveyor.db")).await?;
        let cas = Cas::new(root.join("cas"))?;
        let logs = LogDir::new(root.join("logs"))?;
        std::fs::create_dir_all(root.join("work"))?;
        std::fs::create_dir_all(root.join("repos"))?;
        let signer = load_or_create_key(&root.join("keys"))?;
        Ok(DataDir {
            root: root.to_path_buf(),
            store,
            cas,
            logs,
            signer,
        })
    }

    pub fn work_dir(&self) -> PathBuf {
        self.root.join("work")
    }

    pub fn repos_dir(&self) -> PathBuf {
        self.root.join("repos")
    }
}

/// Why the signing key cannot be read or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{} is not a 32-byte hex Ed25519 seed", .0.display())]
    NotASeed(PathBuf),
    #[error("no OS randomness to create a key: {0}")]
    NoRandomness(getrandom::Error),
}

/// The release signing key: created once from the OS's randomness, kept owner-readable only.
fn load_or_create_key(dir: &Path) -> Result<KeyPair, EngineError> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[tokio::test]
    async fn the_data_directory_and_its_key_are_the_servers_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("data");
        let mode = |path: PathBuf| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        for _ in 0..2 {
            DataDir::open(&root).await.unwrap();
            assert_eq!(mode(root.clone()), 0o700, "data directory");
            assert_eq!(mode(root.join("keys")), 0o700, "keys/");
            assert_eq!(mode(root.join("keys/signing.key")), 0o600, "signing key");
            // A directory made by hand (or by an older version) is tightened on the next open.
            std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
}
