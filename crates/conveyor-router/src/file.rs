//! The route config's file: `RouteConfig::load` and the atomic `RouteConfig::save`, and the
//! errors of both. The only module of the crate that touches the disk.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::{ConfigError, RouteConfig};

/// Failures of loading or saving a route config: a refused config (the caller's mistake) or the
/// config file (the disk, or a file that is not a route config).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error("route config {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("route config {path} is not valid JSON for a route config: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

// === impl RouteConfig ===

impl RouteConfig {
    /// Reads a config written by `save` and validates it.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        let config: Self = serde_json::from_slice(&bytes).map_err(|source| Error::Parse {
            path: path.to_owned(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Writes the config as JSON, atomically: a temporary file beside `path` is written, synced
    /// and renamed over it, so a crash leaves either the old or the new config, never a mix.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        self.validate()?;
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let mut json = serde_json::to_vec_pretty(self).expect("a RouteConfig always serializes");
        json.push(b'\n');
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        let file_name = path.file_name().ok_or_else(|| {
            io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the path names no file",
            ))
        })?;
        let mut tmp_name = file_name.to_owned();
        tmp_name.push(format!(".tmp-{}-{}", std::process::id(), fastrand::u64(..)));
        let tmp = dir.join(tmp_name);
        let written = (|| {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(error) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(error));
        }
        // Make the rename itself durable; a directory that cannot be opened (some platforms) is
        // not an error: the rename already happened.
        if let Ok(dir) = std::fs::File::open(&dir) {
            dir.sync_all().map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::config::{Backend, Sticky};

    /// `blue` on two instances at 25 %, `green` on one at 75 %.
    fn two_versions() -> RouteConfig {
        let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let mut config = RouteConfig::single("blue", vec![addr(1), addr(2)]);
        config.backends[0].weight = 2500;
        config.backends.push(Backend {
            version: "green".into(),
            weight: 7500,
            upstreams: vec![addr(3)],
        });
        config
    }

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("routes.json");
        let mut config = two_versions();
        config.sticky = Some(Sticky::Header {
            name: "x-user-id".into(),
        });
        config.save(&path).expect("save");
        assert_eq!(RouteConfig::load(&path).expect("load"), config);
        config.backends[0].weight = 0;
        config.backends[1].weight = 10_000;
        config.save(&path).expect("save over");
        assert_eq!(RouteConfig::load(&path).expect("load"), config);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("routes.json")]);
    }

    #[test]
    fn load_reports_missing_garbled_and_invalid_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("routes.json");
        assert!(matches!(RouteConfig::load(&path), Err(Error::Io { .. })));
        std::fs::write(&path, "{").expect("write");
        assert!(matches!(RouteConfig::load(&path), Err(Error::Parse { .. })));
        std::fs::write(&path, r#"{"backends":[]}"#).expect("write");
        assert!(matches!(
            RouteConfig::load(&path),
            Err(Error::Invalid(ConfigError::NoBackends))
        ));
        let mut empty = two_versions();
        empty.backends.clear();
        assert!(matches!(
            empty.save(&path),
            Err(Error::Invalid(ConfigError::NoBackends))
        ));
    }
}
