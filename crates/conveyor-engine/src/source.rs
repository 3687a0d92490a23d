//! Where a run's source comes from: a git mirror of the project (server), or a working directory
//! (`conveyor run`). Either way it becomes one tar snapshot in the artifact store, so every job
//! of the run — and a resumed run after a crash — starts from exactly the same tree.

use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Why the project's source could not be fetched or read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot run git: {0}")]
    NoGit(std::io::Error),
    #[error("git {command} failed: {stderr}")]
    Git { command: String, stderr: String },
}

use conveyor_store::Cas;
use tokio::process::Command;

use crate::EngineError;

async fn git(dir: &Path, args: &[&str]) -> Result<String, EngineError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(SourceError::NoGit)?;
    if !out.status.success() {
        return Err(SourceError::Git {
            command: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Clones `uri` as a bare mirror into `mirror` the first time, then fetches.
pub async fn sync_mirror(uri: &str, mirror: &Path) -> Result<(), EngineError> {
    if mirror.join("HEAD").exists() {
        git(
            mirror,
            &[
                "fetch",
                "--prune",
                "--quiet",
                "origin",
                "+refs/heads/*:refs/heads/*",
            ],
        )
        .await?;
    } else {
        let parent = mirror.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)?;
        let target = mirror.to_string_lossy();
        // `--` so that a source starting with '-' is never taken for an option.
        git(parent, &["clone", "--mirror", "--quiet", "--", uri, &target]).await?;
    }
    Ok(())
}

/// Every branch of a mirror with its head commit.
pub async fn branches(mirror: &Path) -> Result<Vec<(String, String)>, EngineError> {
    let text = git(
        mirror,
        &[
            "for-each-ref",
            "--format=%(refname:short) %(objectname)",
            "refs/heads",
        ],
    )
    .await?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(b, c)| (b.to_string(), c.to_string()))
        .collect())
}

/// The commit a branch (or any rev) points at.
pub async fn resolve(repo: &Path, rev: &str) -> Result<String, EngineError> {
    Ok(
        git(repo, &["rev-parse", "--verify", &format!("{rev}^{{commit}}")])
            .await?
            .trim()
            .to_string(),
    )
}

/// When a commit was made (its committer date, RFC 3339).
pub async fn commit_time(repo: &Path, commit: &str) -> Option<String> {
    git(repo, &["show", "-s", "--format=%cI", commit])
        .await
        .ok()
        .map(|t| t.trim().to_string())
}

/// A file's text at a commit.
pub async fn file_at(repo: &Path, commit: &str, path: &str) -> Result<String, EngineError> {
    git(repo, &["show", &format!("{commit}:{path}")]).await
}

/// `git archive` of the exact commit, streamed into the store. Returns the snapshot's digest.
pub async fn snapshot_commit(repo: &Path, commit: &str, cas: &Cas) -> Result<String, EngineError> {
    let mut child = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["archive", "--format=tar", commit])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(SourceError::NoGit)?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (digest, _) = cas.put_reader(stdout).await?;
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        return Err(SourceError::Git {
            command: format!("archive {commit}"),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }
        .into());
    }
    Ok(digest)
}

/// What `conveyor run` knows of a working directory.
#[derive(Debug, Clone)]
pub struct WorkingTree {
    pub commit: String,
    pub branch: String,
    pub source_digest: String,
    pub committed_at: Option<String>,
}

/// Snapshots a working directory as it is on disk (uncommitted edits included, ignored files
/// excluded when it is a git checkout), like a local runner does.
pub async fn snapshot_working_tree(
    dir: &Path,
    cas: &Cas,
    scratch: &Path,
) -> Result<WorkingTree, EngineError> {
    let in_git = git(dir, &["rev-parse", "--is-inside-work-tree"]).await.is_ok();
    let (commit, branch, files) = if in_git {
        let commit = resolve(dir, "HEAD").await.unwrap_or_else(|_| "0".repeat(40));
        let branch = git(dir, &["rev-parse", "--abbrev-ref", "HEAD"])
            .await
            .map(|b| b.trim().to_string())
            .unwrap_or_else(|_| "local".into());
        let listed = git(
            dir,
            &[
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
                ".",
            ],
        )
        .await?;
        let files: Vec<PathBuf> = listed
            .split('\0')
            .filter(|f| !f.is_empty())
            .map(PathBuf::from)
            .filter(|f| dir.join(f).symlink_metadata().is_ok())
            .collect();
        (commit, branch, files)
    } else {
        let files = walkdir::WalkDir::new(dir)
            .into_iter()
            .filter_entry(|e| e.file_name() != ".git")
            .filter_map(Result::ok)
            .filter(|e| !e.file_type().is_dir())
            .filter_map(|e| e.path().strip_prefix(dir).ok().map(Path::to_path_buf))
            .collect();
        ("0".repeat(40), "local".to_string(), files)
    };
    std::fs::create_dir_all(scratch)?;
    let tar_path = scratch.join(format!("snapshot-{}.tar", std::process::id()));
    {
        let file = std::fs::File::create(&tar_path)?;
        let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
        builder.follow_symlinks(false);
        for f in &files {
            builder.append_path_with_name(dir.join(f), f)?;
        }
        builder
            .into_inner()?
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()?;
    }
    let (source_digest, _) = cas.put_file(&tar_path).await?;
    std::fs::remove_file(&tar_path)?;
    let committed_at = if in_git {
        commit_time(dir, "HEAD").await
    } else {
        None
    };
    Ok(WorkingTree {
        commit,
        branch,
        source_digest,
        committed_at,
    })
}
