//! Turning a successful run into a signed release, and checking one.

use std::collections::BTreeMap;

use conveyor_attest::dsse::IN_TOTO_PAYLOAD_TYPE;
use conveyor_attest::provenance::subjects_of;
use conveyor_attest::{Envelope, Provenance, PublicKey, Subject};
use conveyor_store::{ArtifactRef, Event, IdKind, Release, RunView};

use crate::{Engine, EngineError};

impl Engine {
    /// Signs the provenance of `run` over `artifacts` and records the release.
    pub(crate) async fn create_release(
        &self,
        run: &RunView,
        artifacts: Vec<ArtifactRef>,
    ) -> Result<i64, EngineError> {
        let provenance = Provenance {
            subjects: artifacts
                .iter()
                .map(|a| Subject::sha256(&a.path, &a.digest))
                .collect(),
            project: run.project.clone(),
            // Redacted again: runs recorded before sources were stored without credentials.
            source_uri: crate::source::redacted(&run.source_uri),
            commit: run.commit.clone(),
            branch: (!run.branch.is_empty()).then(|| run.branch.clone()),
            event: run.event.clone(),
            pipeline_digest: sha256_hex(run.pipeline.as_bytes()),
            source_tree_digest: run.source_digest.clone(),
            builder_id: self.config.builder_id.clone(),
            builder_version: env!("CARGO_PKG_VERSION").to_string(),
            invocation_id: format!("{}/runs/{}", run.project, run.id),
            started_on: run
                .created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            finished_on: conveyor_store::now_rfc3339(),
        };
        let payload = serde_json::to_vec(&provenance.statement()).expect("statements serialize");
        let envelope = self.data.signer.sign(IN_TOTO_PAYLOAD_TYPE, &payload);
        let envelope = serde_json::to_value(envelope).expect("envelopes serialize");
        Ok(self
            .events()
            .append_new(IdKind::Release, |release_id| Event::ReleaseCreated {
                release_id,
                run_id: run.id,
                project: run.project.clone(),
                commit: run.commit.clone(),
                branch: run.branch.clone(),
                artifacts,
                envelope,
            })
            .await?)
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// [`verify_release`] against what the content store holds, without reading the blobs: each is
/// stored under its digest and checked when written, so one that is there is intact. (`conveyor
/// verify` rehashes them instead.)
pub fn verify_stored(release: &Release, keys: &[PublicKey], cas: &conveyor_store::cas::Cas) -> Vec<String> {
    let actual = release
        .artifacts
        .iter()
        .map(|a| {
            let found = match cas.path(&a.digest) {
                Some(path) if path.exists() => Ok(a.digest.clone()),
                _ => Err("not in the content store".to_string()),
            };
            (a.path.clone(), found)
        })
        .collect();
    verify_release(release, keys, &actual)
}

/// Checks a release: the envelope's signature by one of `keys` (the server's current key and
/// those a rotation retired), that its signed subjects are exactly the
/// release's artifacts, and that each artifact's content (its digest as computed now, in
/// `actual`) still matches. Returns every mismatch, in words; empty means verified.
pub fn verify_release(
    release: &Release,
    keys: &[PublicKey],
    actual: &BTreeMap<String, Result<String, String>>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let envelope: Envelope = match serde_json::from_value(release.envelope.clone()) {
        Ok(e) => e,
        Err(e) => return vec![format!("release {}: envelope is malformed: {e}", release.id)],
    };
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
        problems.push(format!(
            "envelope payloadType is '{}', expected {IN_TOTO_PAYLOAD_TYPE}",
            envelope.payload_type
        ));
    }
    let payload = match envelope.signer(keys).and_then(|key| envelope.verify(key)) {
        Ok(p) => p,
        Err(e) => {
            problems.push(format!("signature: {e}"));
            return problems;
        }
    };
    let statement: serde_json::Value = match serde_json::from_slice(&payload) {
        Ok(s) => s,
        Err(e) => {
            problems.push(format!("signed payload is not JSON: {e}"));
            return problems;
        }
    };
    let commit = &statement["predicate"]["buildDefinition"]["resolvedDependencies"][0]["digest"]["gitCommit"];
    if commit.as_str() != Some(release.commit.as_str()) {
        problems.push(format!(
            "release metadata says commit {} but the signed provenance says {commit}",
            release.commit
        ));
    }
    let subjects = match subjects_of(&statement) {
        Ok(s) => s,
        Err(e) => {
            problems.push(e.to_string());
            return problems;
        }
    };
    let signed: BTreeMap<&str, &str> = subjects
        .iter()
        .map(|s| (s.name.as_str(), s.digest.get("sha256").map_or("", String::as_str)))
        .collect();
    for artifact in &release.artifacts {
        match signed.get(artifact.path.as_str()) {
            None => problems.push(format!(
                "artifact {} is not in the signed provenance",
                artifact.path
            )),
            Some(digest) if *digest != artifact.digest => problems.push(format!(
                "artifact {}: release metadata says sha256 {} but the signed provenance says {digest}",
                artifact.path, artifact.digest
            )),
            Some(_) => {}
        }
    }
    for (name, digest) in &signed {
        if !release.artifacts.iter().any(|a| a.path == *name) {
            problems.push(format!(
                "signed subject {name} is missing from the release's artifacts"
            ));
        }
        match actual.get(*name) {
            None => problems.push(format!("artifact {name}: content was not checked")),
            Some(Err(e)) => problems.push(format!("artifact {name}: {e}")),
            Some(Ok(now)) if now != digest => problems.push(format!(
                "artifact {name}: content has sha256 {now}, but the signed digest is {digest} — the file was changed"
            )),
            Some(Ok(_)) => {}
        }
    }
    problems
}
