//! A job's workspace: the run's source snapshot unpacked fresh, the artifacts of the jobs it
//! needs laid in, and afterwards the declared artifacts collected into the store.

use std::path::{Component, Path, PathBuf};

use conveyor_store::{ArtifactRef, Cas};
use globset::{GlobBuilder, GlobSetBuilder};

/// More matches than this for one job is refused rather than filling the store.
const MAX_ARTIFACT_FILES: usize = 10_000;

/// Why a workspace could not be prepared or its artifacts collected: the job fails with it.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("cannot clear workspace {}: {error}", dir.display())]
    Clear { dir: PathBuf, error: std::io::Error },
    #[error("cannot create workspace {}: {error}", dir.display())]
    Create { dir: PathBuf, error: std::io::Error },
    #[error("source snapshot {0} is missing from the artifact store")]
    MissingSnapshot(String),
    #[error("cannot open source snapshot: {0}")]
    OpenSnapshot(std::io::Error),
    #[error("cannot unpack source snapshot: {0}")]
    Unpack(std::io::Error),
    #[error("artifact path '{0}' is not relative")]
    NotRelative(String),
    #[error("artifact {path} ({digest}) is missing from the store")]
    MissingInput { path: String, digest: String },
    #[error("cannot place artifact {path}: {error}")]
    Place { path: String, error: std::io::Error },
    #[error("workspace is gone: {0}")]
    Gone(std::io::Error),
    #[error("artifact pattern '{pattern}': {error}")]
    Pattern { pattern: String, error: globset::Error },
    #[error("cannot read workspace: {0}")]
    Walk(walkdir::Error),
    #[error("artifact '{0}' is a dangling symlink")]
    Dangling(String),
    #[error("artifact '{name}' is a symlink to {} — outside the workspace; refused", target.display())]
    Escapes { name: String, target: PathBuf },
    #[error("artifacts match more than {MAX_ARTIFACT_FILES} files")]
    TooMany,
    #[error("artifact pattern '{0}' matched no file")]
    NoMatch(String),
    #[error("cannot store artifact {path}: {error}")]
    Store { path: String, error: std::io::Error },
}

/// Unpacks the snapshot into a fresh `dir` and places `inputs` (artifacts of needed jobs).
pub fn prepare(
    cas: &Cas,
    dir: &Path,
    source_digest: &str,
    inputs: &[ArtifactRef],
) -> Result<(), WorkspaceError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|error| WorkspaceError::Clear {
            dir: dir.to_path_buf(),
            error,
        })?;
    }
    std::fs::create_dir_all(dir).map_err(|error| WorkspaceError::Create {
        dir: dir.to_path_buf(),
        error,
    })?;
    let tar_path = cas
        .path(source_digest)
        .filter(|p| p.is_file())
        .ok_or_else(|| WorkspaceError::MissingSnapshot(source_digest.to_string()))?;
    let file = std::fs::File::open(&tar_path).map_err(WorkspaceError::OpenSnapshot)?;
    // `unpack` refuses entries that would land outside `dir`.
    tar::Archive::new(std::io::BufReader::new(file))
        .unpack(dir)
        .map_err(WorkspaceError::Unpack)?;
    for input in inputs {
        let relative =
            safe_relative(&input.path).ok_or_else(|| WorkspaceError::NotRelative(input.path.clone()))?;
        let target = dir.join(relative);
        let blob =
            cas.path(&input.digest)
                .filter(|p| p.is_file())
                .ok_or_else(|| WorkspaceError::MissingInput {
                    path: input.path.clone(),
                    digest: input.digest.clone(),
                })?;
        let place = |error| WorkspaceError::Place {
            path: input.path.clone(),
            error,
        };
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(place)?;
        }
        let _ = std::fs::remove_file(&target);
        std::fs::copy(&blob, &target).map_err(place)?;
        // The copy inherits the blob's read-only mode; a job may rewrite its inputs.
        std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .map_err(place)?;
    }
    Ok(())
}

fn safe_relative(path: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    p.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| p.to_path_buf())
}

/// Files of `dir` matching `patterns`, as `/`-separated relative paths (sorted). Symlinks are
/// followed only when they stay inside the workspace; one that leads out is an error.
pub fn find_artifacts(dir: &Path, patterns: &[String]) -> Result<Vec<(String, PathBuf)>, WorkspaceError> {
    if patterns.is_empty() {
        return Ok(Vec::new());
    }
    let root = dir.canonicalize().map_err(WorkspaceError::Gone)?;
    let mut found = Vec::new();
    for pattern in patterns {
        let invalid = |error| WorkspaceError::Pattern {
            pattern: pattern.clone(),
            error,
        };
        let glob = GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(invalid)?;
        let set = GlobSetBuilder::new().add(glob).build().map_err(invalid)?;
        let before = found.len();
        for entry in walkdir::WalkDir::new(&root)
            .follow_links(false)
            .sort_by_file_name()
        {
            let entry = entry.map_err(WorkspaceError::Walk)?;
            if entry.file_type().is_dir() {
                continue;
            }
            let relative = entry
                .path()
                .strip_prefix(&root)
                .expect("walkdir stays under its root");
            let name = relative.to_string_lossy().replace('\\', "/");
            if !set.is_match(relative) {
                continue;
            }
            let real = if entry.path_is_symlink() {
                let target = entry
                    .path()
                    .canonicalize()
                    .map_err(|_| WorkspaceError::Dangling(name.clone()))?;
                if !target.starts_with(&root) {
                    return Err(WorkspaceError::Escapes { name, target });
                }
                if !target.is_file() {
                    continue;
                }
                target
            } else {
                entry.path().to_path_buf()
            };
            if !found.iter().any(|(n, _)| n == &name) {
                found.push((name, real));
            }
            if found.len() > MAX_ARTIFACT_FILES {
                return Err(WorkspaceError::TooMany);
            }
        }
        if found.len() == before {
            return Err(WorkspaceError::NoMatch(pattern.clone()));
        }
    }
    found.sort();
    Ok(found)
}

/// Streams each found file into the store.
pub async fn store_artifacts(
    cas: &Cas,
    files: Vec<(String, PathBuf)>,
) -> Result<Vec<ArtifactRef>, WorkspaceError> {
    let mut out = Vec::with_capacity(files.len());
    for (path, real) in files {
        let (digest, size) = match cas.put_file(&real).await {
            Ok(stored) => stored,
            Err(error) => return Err(WorkspaceError::Store { path, error }),
        };
        out.push(ArtifactRef { path, digest, size });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_matches_and_refuses_escaping_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(ws.join("dist/nested")).unwrap();
        std::fs::write(ws.join("dist/a.tar.gz"), "a").unwrap();
        std::fs::write(ws.join("dist/nested/b.tar.gz"), "b").unwrap();
        std::fs::write(dir.path().join("secret"), "s").unwrap();

        let found = find_artifacts(&ws, &["dist/*.tar.gz".into()]).unwrap();
        assert_eq!(
            found.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(),
            vec!["dist/a.tar.gz"]
        );
        let all = find_artifacts(&ws, &["dist/**/*.tar.gz".into()]).unwrap();
        assert_eq!(all.len(), 2);

        assert_eq!(
            find_artifacts(&ws, &["none/*".into()]).unwrap_err().to_string(),
            "artifact pattern 'none/*' matched no file"
        );

        std::os::unix::fs::symlink(dir.path().join("secret"), ws.join("dist/leak.tar.gz")).unwrap();
        let err = find_artifacts(&ws, &["dist/*.tar.gz".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("outside the workspace"), "{err}");
    }

    #[test]
    fn safe_relative_rejects_escapes() {
        assert!(safe_relative("dist/a").is_some());
        assert!(safe_relative("../a").is_none());
        assert!(safe_relative("/etc/passwd").is_none());
    }
}
