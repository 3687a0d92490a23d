//! A job's workspace: the run's source snapshot unpacked fresh, the artifacts of the jobs it
//! needs laid in, and afterwards the declared artifacts collected into the store.

use std::path::{Component, Path, PathBuf};

use conveyor_store::{ArtifactRef, Cas};
use globset::{GlobBuilder, GlobSetBuilder};

/// More matches than this for one job is refused rather than filling the store.
const MAX_ARTIFACT_FILES: usize = 10_000;

/// Unpacks the snapshot into a fresh `dir` and places `inputs` (artifacts of needed jobs).
pub fn prepare(cas: &Cas, dir: &Path, source_digest: &str, inputs: &[ArtifactRef]) -> Result<(), String> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| format!("cannot clear workspace {}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create workspace {}: {e}", dir.display()))?;
    let tar_path = cas
        .path(source_digest)
        .filter(|p| p.is_file())
        .ok_or_else(|| format!("source snapshot {source_digest} is missing from the artifact store"))?;
    let file = std::fs::File::open(&tar_path).map_err(|e| format!("cannot open source snapshot: {e}"))?;
    // `unpack` refuses entries that would land outside `dir`.
    tar::Archive::new(std::io::BufReader::new(file))
        .unpack(dir)
        .map_err(|e| format!("cannot unpack source snapshot: {e}"))?;
    for input in inputs {
        let relative = safe_relative(&input.path)
            .ok_or_else(|| format!("artifact path '{}' is not relative", input.path))?;
        let target = dir.join(relative);
        let blob = cas.path(&input.digest).filter(|p| p.is_file()).ok_or_else(|| {
            format!(
                "artifact {} ({}) is missing from the store",
                input.path, input.digest
            )
        })?;
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot place artifact {}: {e}", input.path))?;
        }
        let _ = std::fs::remove_file(&target);
        std::fs::copy(&blob, &target).map_err(|e| format!("cannot place artifact {}: {e}", input.path))?;
        // The copy inherits the blob's read-only mode; a job may rewrite its inputs.
        std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .map_err(|e| format!("cannot place artifact {}: {e}", input.path))?;
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
pub fn find_artifacts(dir: &Path, patterns: &[String]) -> Result<Vec<(String, PathBuf)>, String> {
    if patterns.is_empty() {
        return Ok(Vec::new());
    }
    let root = dir
        .canonicalize()
        .map_err(|e| format!("workspace is gone: {e}"))?;
    let mut found = Vec::new();
    for pattern in patterns {
        let glob = GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| format!("artifact pattern '{pattern}': {e}"))?;
        let set = GlobSetBuilder::new()
            .add(glob)
            .build()
            .map_err(|e| e.to_string())?;
        let before = found.len();
        for entry in walkdir::WalkDir::new(&root)
            .follow_links(false)
            .sort_by_file_name()
        {
            let entry = entry.map_err(|e| format!("cannot read workspace: {e}"))?;
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
                    .map_err(|_| format!("artifact '{name}' is a dangling symlink"))?;
                if !target.starts_with(&root) {
                    return Err(format!(
                        "artifact '{name}' is a symlink to {} — outside the workspace; refused",
                        target.display()
                    ));
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
                return Err(format!("artifacts match more than {MAX_ARTIFACT_FILES} files"));
            }
        }
        if found.len() == before {
            return Err(format!("artifact pattern '{pattern}' matched no file"));
        }
    }
    found.sort();
    Ok(found)
}

/// Streams each found file into the store.
pub async fn store_artifacts(cas: &Cas, files: Vec<(String, PathBuf)>) -> Result<Vec<ArtifactRef>, String> {
    let mut out = Vec::with_capacity(files.len());
    for (path, real) in files {
        let (digest, size) = cas
            .put_file(&real)
            .await
            .map_err(|e| format!("cannot store artifact {path}: {e}"))?;
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
            find_artifacts(&ws, &["none/*".into()]).unwrap_err(),
            "artifact pattern 'none/*' matched no file"
        );

        std::os::unix::fs::symlink(dir.path().join("secret"), ws.join("dist/leak.tar.gz")).unwrap();
        let err = find_artifacts(&ws, &["dist/*.tar.gz".into()]).unwrap_err();
        assert!(err.contains("outside the workspace"), "{err}");
    }

    #[test]
    fn safe_relative_rejects_escapes() {
        assert!(safe_relative("dist/a").is_some());
        assert!(safe_relative("../a").is_none());
        assert!(safe_relative("/etc/passwd").is_none());
    }
}
