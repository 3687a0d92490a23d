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
    git_with(dir, args, &[]).await
}

/// Runs git with `env` added. Whatever it says on failure is scrubbed of URL credentials, since
/// the error ends up in API answers, logs and run errors.
async fn git_with(dir: &Path, args: &[&str], env: &[(String, String)]) -> Result<String, EngineError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(SourceError::NoGit)?;
    if !out.status.success() {
        return Err(SourceError::Git {
            command: scrub(&args.join(" ")),
            stderr: scrub(String::from_utf8_lossy(&out.stderr).trim()),
        }
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Where a project's source is fetched from: the URL as shown and signed (no credentials) and,
/// apart, the credentials git needs to fetch it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// [`redacted`]: safe to record in the event log, show and sign.
    pub url: String,
    /// The userinfo taken out of the URL (`user:token`), if any.
    pub credentials: Option<String>,
}

impl Remote {
    /// Splits a source URL as a user gave it.
    pub fn parse(uri: &str) -> Remote {
        Remote {
            url: redacted(uri),
            credentials: userinfo_span(uri).map(|span| uri[span].to_string()),
        }
    }

    /// The environment that makes git fetch `url` with the credentials. Git rewrites the URL
    /// itself (`url.<full>.insteadOf`), so the credentials are never on a command line (which
    /// every local user can read in `ps`) nor in the mirror's config.
    fn git_env(&self) -> Vec<(String, String)> {
        // Git never waits on a terminal that a server does not have.
        let mut env = vec![("GIT_TERMINAL_PROMPT".to_string(), "0".to_string())];
        if let Some(credentials) = &self.credentials
            && let Some((scheme, rest)) = self.url.split_once("://")
        {
            env.extend([
                ("GIT_CONFIG_COUNT".to_string(), "1".to_string()),
                (
                    "GIT_CONFIG_KEY_0".to_string(),
                    format!("url.{scheme}://{credentials}@{rest}.insteadOf"),
                ),
                ("GIT_CONFIG_VALUE_0".to_string(), self.url.clone()),
            ]);
        }
        env
    }
}

/// Clones `remote` as a bare mirror into `mirror` the first time, then fetches. Only branches
/// and tags are mirrored: pull-request refs (`refs/pull/*`, `refs/merge-requests/*`) hold
/// anyone's commits, which must not become runnable as if they were on a branch.
/// One fetch of a mirror at a time: the poller and a manual trigger fetching the same mirror at
/// once would race on its refs.
pub async fn sync_mirror(remote: &Remote, mirror: &Path) -> Result<(), EngineError> {
    static LOCKS: std::sync::LazyLock<
        std::sync::Mutex<
            std::collections::HashMap<std::path::PathBuf, std::sync::Arc<tokio::sync::Mutex<()>>>,
        >,
    > = std::sync::LazyLock::new(Default::default);
    let lock = LOCKS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(mirror.to_path_buf())
        .or_default()
        .clone();
    let _held = lock.lock().await;
    let env = remote.git_env();
    if mirror.join("HEAD").exists() {
        // The URL rather than `origin`: mirrors made by `clone --mirror` before fetch `refs/*`.
        git_with(
            mirror,
            &[
                "fetch",
                "--prune",
                "--quiet",
                "--",
                &remote.url,
                "+refs/heads/*:refs/heads/*",
                "+refs/tags/*:refs/tags/*",
            ],
            &env,
        )
        .await?;
    } else {
        let parent = mirror.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)?;
        let target = mirror.to_string_lossy();
        // `--bare` copies branches and tags only (and the remote's HEAD, the default branch);
        // `--no-local` so that a local source's objects are fetched, not hard-linked whole
        // (those of its pull-request refs with them); `--` so that a source starting with '-'
        // is never taken for an option.
        git_with(
            parent,
            &[
                "clone",
                "--bare",
                "--no-local",
                "--quiet",
                "--",
                &remote.url,
                &target,
            ],
            &env,
        )
        .await?;
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

/// Whether `commit` is `head` or one of its ancestors.
pub async fn is_ancestor(repo: &Path, commit: &str, head: &str) -> Result<bool, EngineError> {
    let status = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["merge-base", "--is-ancestor", commit, head])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .map_err(SourceError::NoGit)?;
    // 1 is git's "no"; anything else is a failure to answer.
    match status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => Err(SourceError::Git {
            command: format!("merge-base --is-ancestor {commit} {head}"),
            stderr: format!("exited with {status}"),
        }
        .into()),
    }
}

/// Whether a branch or a tag of a mirror contains `commit`.
pub async fn on_branch_or_tag(repo: &Path, commit: &str) -> Result<bool, EngineError> {
    let text = git(
        repo,
        &[
            "for-each-ref",
            "--count=1",
            "--format=%(refname)",
            "--contains",
            commit,
            "refs/heads",
            "refs/tags",
        ],
    )
    .await?;
    Ok(!text.trim().is_empty())
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

/// The emails (author and committer, lowercased, each once) of the commits `commit` brings over
/// `since` — or of `commit` alone without it; at most the newest 1000 commits.
pub async fn commit_emails(
    repo: &Path,
    since: Option<&str>,
    commit: &str,
) -> Result<Vec<String>, EngineError> {
    let mut args = vec!["log", "--max-count=1000", "--format=%ae%n%ce"];
    let exclude = since.map(|s| format!("^{s}"));
    match &exclude {
        Some(exclude) => args.extend([commit, exclude.as_str()]),
        None => args.extend(["--max-count=1", commit]),
    }
    args.push("--");
    let text = git(repo, &args).await?;
    let mut emails: Vec<String> = Vec::new();
    for email in text.lines().map(|l| l.trim().to_ascii_lowercase()) {
        if !email.is_empty() && !emails.contains(&email) {
            emails.push(email);
        }
    }
    Ok(emails)
}

/// A commit as a list of changes shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitLine {
    pub sha: String,
    pub author: String,
    pub subject: String,
}

/// The commits reachable from `commit` and not from `since`, newest first, at most `limit`.
pub async fn commits_between(
    repo: &Path,
    since: &str,
    commit: &str,
    limit: usize,
) -> Result<Vec<CommitLine>, EngineError> {
    let max = format!("--max-count={limit}");
    let exclude = format!("^{since}");
    let text = git(
        repo,
        &["log", &max, "--format=%H%x1f%an%x1f%s", commit, &exclude, "--"],
    )
    .await?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, '\x1f');
            Some(CommitLine {
                sha: fields.next()?.to_string(),
                author: fields.next()?.to_string(),
                subject: fields.next().unwrap_or("").to_string(),
            })
        })
        .collect())
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

// === credentials in URLs ===

/// `uri` without the credentials it may carry: `https://user:token@host/repo.git` →
/// `https://host/repo.git`. The one function for everything shown, recorded or signed. An ssh
/// user alone (`ssh://git@host/repo`) is an account name, not a secret, and stays; scp-like
/// `git@host:repo` and local paths have no credentials.
pub fn redacted(uri: &str) -> String {
    match userinfo_span(uri) {
        Some(span) => format!("{}{}", &uri[..span.start], &uri[span.end + 1..]),
        None => uri.to_string(),
    }
}

/// `text` (an error message, a command line) with the credentials of every URL in it removed.
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        // The URL starts where its scheme does; it ends at whitespace or a quote.
        let start = rest[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || "+-.".contains(c)))
            .map_or(0, |i| i + 1);
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || "'\"`<>".contains(c))
            .map_or(rest.len(), |i| at + i);
        out.push_str(&rest[..start]);
        out.push_str(&redacted(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Where the userinfo of a `scheme://userinfo@host/…` URL is (without its `@`), when it is a
/// credential: always for http(s) and the like (a token may be the user name alone), for ssh
/// only when it has a password.
fn userinfo_span(uri: &str) -> Option<std::ops::Range<usize>> {
    let (scheme, rest) = uri.split_once("://")?;
    let valid_scheme = scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !valid_scheme {
        return None;
    }
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let at = authority.rfind('@')?;
    let userinfo = &authority[..at];
    let ssh = scheme.split('+').any(|part| part.eq_ignore_ascii_case("ssh"));
    if ssh && !userinfo.contains(':') {
        return None;
    }
    let start = scheme.len() + 3;
    Some(start..start + at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_removes_credentials_and_nothing_else() {
        let cases = [
            (
                "https://alice:s3cr3t@host/repo.git",
                "https://host/repo.git",
                Some("alice:s3cr3t"),
            ),
            (
                "https://ghp_token@github.com/o/r.git",
                "https://github.com/o/r.git",
                Some("ghp_token"),
            ),
            (
                "http://u:p%40ss@127.0.0.1:8080/r.git",
                "http://127.0.0.1:8080/r.git",
                Some("u:p%40ss"),
            ),
            ("https://u:p@ss@host/r.git", "https://host/r.git", Some("u:p@ss")),
            ("https://host/repo.git", "https://host/repo.git", None),
            (
                "https://host/team@org/repo.git",
                "https://host/team@org/repo.git",
                None,
            ),
            (
                "https://u:p@host/team@org/repo.git",
                "https://host/team@org/repo.git",
                Some("u:p"),
            ),
            ("https://host?ref=a@b", "https://host?ref=a@b", None),
            ("ssh://git@host/repo.git", "ssh://git@host/repo.git", None),
            (
                "ssh://git:pw@host/repo.git",
                "ssh://host/repo.git",
                Some("git:pw"),
            ),
            ("git+ssh://git@host/repo.git", "git+ssh://git@host/repo.git", None),
            ("git@github.com:o/r.git", "git@github.com:o/r.git", None),
            ("/srv/git/repo@2.git", "/srv/git/repo@2.git", None),
            ("file:///srv/git/repo@2.git", "file:///srv/git/repo@2.git", None),
            ("./relative/path", "./relative/path", None),
            ("", "", None),
        ];
        for (uri, shown, credentials) in cases {
            assert_eq!(redacted(uri), shown, "{uri}");
            let remote = Remote::parse(uri);
            assert_eq!(remote.url, shown, "{uri}");
            assert_eq!(remote.credentials.as_deref(), credentials, "{uri}");
        }
    }

    #[test]
    fn scrub_removes_credentials_of_every_url_in_a_message() {
        let cases = [
            (
                "fatal: unable to access 'https://alice:s3cr3t@host/r.git/': 403",
                "fatal: unable to access 'https://host/r.git/': 403",
            ),
            (
                "clone --bare -- http://t@a/x.git https://u:p@b/y.git",
                "clone --bare -- http://a/x.git https://b/y.git",
            ),
            (
                "fatal: repository \"https://u:p@h/r\" not found",
                "fatal: repository \"https://h/r\" not found",
            ),
            ("no url here: user@host", "no url here: user@host"),
            (
                "ssh://git@host/r and git@host:r",
                "ssh://git@host/r and git@host:r",
            ),
            ("://odd", "://odd"),
        ];
        for (text, scrubbed) in cases {
            assert_eq!(scrub(text), scrubbed, "{text}");
        }
    }

    #[test]
    fn git_is_given_the_credentials_through_its_environment_only() {
        let env = Remote::parse("https://alice:s3cr3t@host/r.git").git_env();
        assert!(env.contains(&(
            "GIT_CONFIG_KEY_0".to_string(),
            "url.https://alice:s3cr3t@host/r.git.insteadOf".to_string()
        )));
        assert!(env.contains(&("GIT_CONFIG_VALUE_0".to_string(), "https://host/r.git".to_string())));
        assert!(
            !Remote::parse("/srv/r.git")
                .git_env()
                .iter()
                .any(|(k, _)| k == "GIT_CONFIG_COUNT")
        );
    }
}
