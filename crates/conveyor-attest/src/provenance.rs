//! SLSA v1 provenance (<https://slsa.dev/spec/v1.0/provenance>) inside an in-toto Statement v1.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
pub const BUILD_TYPE: &str = "https://conveyor.dev/buildtypes/pipeline/v1";

/// One produced file: its path in the release and its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    pub name: String,
    pub digest: BTreeMap<String, String>,
}

impl Subject {
    pub fn sha256(name: &str, hex_digest: &str) -> Self {
        Subject {
            name: name.to_string(),
            digest: BTreeMap::from([("sha256".to_string(), hex_digest.to_string())]),
        }
    }
}

/// Everything the provenance statement records about one pipeline run.
#[derive(Debug, Clone, PartialEq)]
pub struct Provenance {
    pub subjects: Vec<Subject>,
    pub project: String,
    /// Where the source came from (git URL without credentials, or local path).
    pub source_uri: String,
    pub commit: String,
    /// The branch the run was asked to build, its commit checked to be on it; `None` for a run
    /// of a commit alone.
    pub branch: Option<String>,
    pub event: String,
    /// SHA-256 of the `conveyor.yml` text the run used.
    pub pipeline_digest: String,
    /// SHA-256 of the exact source tree snapshot the jobs ran on.
    pub source_tree_digest: String,
    pub builder_id: String,
    pub builder_version: String,
    pub invocation_id: String,
    /// RFC 3339 times, given by the caller.
    pub started_on: String,
    pub finished_on: String,
}

impl Provenance {
    /// The in-toto Statement v1 as JSON.
    pub fn statement(&self) -> Value {
        // A run of a commit alone claims no ref. Verifiers (`slsa-verifier --source-branch`)
        // take `ref` as "built from this branch"; inferring one from the branches that contain
        // the commit would claim what nobody asked for, and change as branches move.
        let git_ref = self.branch.as_ref().map(|b| format!("refs/heads/{b}"));
        let mut source = json!({ "uri": self.source_uri });
        let mut git_uri = format!("git+{}", self.source_uri);
        if let Some(git_ref) = &git_ref {
            source["ref"] = git_ref.as_str().into();
            git_uri = format!("{git_uri}@{git_ref}");
        }
        json!({
            "_type": STATEMENT_TYPE,
            "subject": self.subjects,
            "predicateType": PREDICATE_TYPE,
            "predicate": {
                "buildDefinition": {
                    "buildType": BUILD_TYPE,
                    "externalParameters": {
                        "project": self.project,
                        "source": source,
                        "event": self.event,
                        "pipeline": "conveyor.yml",
                    },
                    "internalParameters": {
                        "pipelineDigest": { "sha256": self.pipeline_digest },
                    },
                    "resolvedDependencies": [
                        {
                            "uri": git_uri,
                            "digest": { "gitCommit": self.commit },
                        },
                        {
                            "uri": "conveyor:source-tree.tar",
                            "digest": { "sha256": self.source_tree_digest },
                        },
                    ],
                },
                "runDetails": {
                    "builder": {
                        "id": self.builder_id,
                        "version": { "conveyor": self.builder_version },
                    },
                    "metadata": {
                        "invocationId": self.invocation_id,
                        "startedOn": self.started_on,
                        "finishedOn": self.finished_on,
                    },
                },
            },
        })
    }
}

/// Why a signed payload is not a statement Conveyor made.
#[derive(Debug, thiserror::Error)]
pub enum StatementError {
    #[error("statement _type is not {STATEMENT_TYPE}")]
    Type,
    #[error("statement predicateType is not {PREDICATE_TYPE}")]
    PredicateType,
    #[error("statement has no subject")]
    NoSubject,
    #[error("statement subject is malformed: {0}")]
    Subject(serde_json::Error),
}

/// The subjects of a statement, as read back from a verified payload.
pub fn subjects_of(statement: &Value) -> Result<Vec<Subject>, StatementError> {
    if statement.get("_type").and_then(Value::as_str) != Some(STATEMENT_TYPE) {
        return Err(StatementError::Type);
    }
    if statement.get("predicateType").and_then(Value::as_str) != Some(PREDICATE_TYPE) {
        return Err(StatementError::PredicateType);
    }
    let subjects = statement
        .get("subject")
        .cloned()
        .ok_or(StatementError::NoSubject)?;
    serde_json::from_value(subjects).map_err(StatementError::Subject)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Provenance {
        Provenance {
            subjects: vec![Subject::sha256("dist/app.tar.gz", "ab12")],
            project: "hello".into(),
            source_uri: "/src/hello".into(),
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            branch: Some("main".into()),
            event: "push".into(),
            pipeline_digest: "cd34".into(),
            source_tree_digest: "ef56".into(),
            builder_id: "https://conveyor.dev/builder/local".into(),
            builder_version: "0.1.0".into(),
            invocation_id: "hello/runs/1".into(),
            started_on: "2026-01-01T00:00:00Z".into(),
            finished_on: "2026-01-01T00:01:00Z".into(),
        }
    }

    #[test]
    fn statement_has_the_slsa_v1_shape() {
        let s = example().statement();
        assert_eq!(s["_type"], STATEMENT_TYPE);
        assert_eq!(s["predicateType"], PREDICATE_TYPE);
        let def = &s["predicate"]["buildDefinition"];
        assert_eq!(def["buildType"], BUILD_TYPE);
        assert_eq!(def["externalParameters"]["source"]["ref"], "refs/heads/main");
        assert_eq!(
            def["resolvedDependencies"][0]["uri"],
            "git+/src/hello@refs/heads/main"
        );
        assert_eq!(
            def["resolvedDependencies"][0]["digest"]["gitCommit"],
            "0123456789abcdef0123456789abcdef01234567"
        );
        let run = &s["predicate"]["runDetails"];
        assert_eq!(run["builder"]["id"], "https://conveyor.dev/builder/local");
        assert_eq!(run["metadata"]["invocationId"], "hello/runs/1");
        assert_eq!(subjects_of(&s).unwrap(), example().subjects);
    }

    #[test]
    fn a_commit_alone_claims_no_ref() {
        let s = Provenance {
            branch: None,
            ..example()
        }
        .statement();
        let def = &s["predicate"]["buildDefinition"];
        assert_eq!(
            def["externalParameters"]["source"],
            json!({ "uri": "/src/hello" })
        );
        assert_eq!(def["resolvedDependencies"][0]["uri"], "git+/src/hello");
    }

    #[test]
    fn subjects_of_rejects_other_statements() {
        let mut s = example().statement();
        s["predicateType"] = "https://example.com/other".into();
        assert!(matches!(subjects_of(&s), Err(StatementError::PredicateType)));
    }
}
