//! The content-addressed store: every artifact is stored once, under its SHA-256, read-only.
//! Files are streamed through the hasher; nothing is read whole into memory.

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

#[derive(Debug, Clone)]
pub struct Cas {
    root: PathBuf,
}

const CHUNK: usize = 64 * 1024;

fn is_digest(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

impl Cas {
    pub fn new(root: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(root.join("tmp"))?;
        Ok(Cas { root })
    }

    /// Where the blob with this digest lives; `None` for text that is not a digest.
    pub fn path(&self, digest: &str) -> Option<PathBuf> {
        is_digest(digest).then(|| self.root.join("sha256").join(&digest[..2]).join(&digest[2..]))
    }

    pub fn contains(&self, digest: &str) -> bool {
        self.path(digest).is_some_and(|p| p.is_file())
    }

    pub async fn put_file(&self, path: &Path) -> std::io::Result<(String, u64)> {
        self.put_reader(tokio::fs::File::open(path).await?).await
    }

    /// Streams `reader` into the store; returns its digest and size. An existing blob is never
    /// rewritten.
    pub async fn put_reader(&self, mut reader: impl AsyncRead + Unpin) -> std::io::Result<(String, u64)> {
        let tmp = tempfile_in(&self.root.join("tmp"));
        let mut out = tokio::fs::File::create(&tmp).await?;
        let (digest, size) = copy_hashing(&mut reader, &mut out).await?;
        out.sync_all().await?;
        drop(out);
        let target = self.path(&digest).expect("a sha256 hex digest is a valid digest");
        if target.exists() {
            tokio::fs::remove_file(&tmp).await?;
        } else {
            tokio::fs::create_dir_all(target.parent().expect("blob paths have a parent")).await?;
            let mut perms = tokio::fs::metadata(&tmp).await?.permissions();
            perms.set_readonly(true);
            tokio::fs::set_permissions(&tmp, perms).await?;
            tokio::fs::rename(&tmp, &target).await?;
        }
        Ok((digest, size))
    }

    /// Re-hashes the stored blob: what its digest is now (to detect tampering).
    pub async fn rehash(&self, digest: &str) -> std::io::Result<String> {
        let path = self.path(digest).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("'{digest}' is not a sha256 digest"),
            )
        })?;
        sha256_file(&path).await
    }
}

/// Streams a file through SHA-256.
pub async fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = tokio::fs::File::open(path).await?;
    Ok(copy_hashing(&mut file, &mut tokio::io::sink()).await?.0)
}

/// Copies `reader` to `writer` in chunks, hashing on the way; returns the hex digest and size.
async fn copy_hashing(
    reader: &mut (impl AsyncRead + Unpin),
    writer: &mut (impl AsyncWrite + Unpin),
) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        writer.write_all(&buf[..n]).await?;
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

fn tempfile_in(dir: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("put-{}-{n}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stores_once_by_digest_and_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::new(dir.path().join("cas")).unwrap();
        let (d1, n1) = cas.put_reader(&b"hello"[..]).await.unwrap();
        let (d2, _) = cas.put_reader(&b"hello"[..]).await.unwrap();
        assert_eq!(
            d1,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!((d1.clone(), n1), (d2, 5));
        let path = cas.path(&d1).unwrap();
        assert!(std::fs::metadata(&path).unwrap().permissions().readonly());
        assert_eq!(cas.rehash(&d1).await.unwrap(), d1);
        assert!(cas.path("../../etc/passwd").is_none());
    }
}
