//! Folds events into the read models. Used both on append and on rebuild, so the read models are
//! always exactly what the log says. Lists and maps live in child tables with an explicit order
//! (`idx`), written with plain SQL every backend runs.

use crate::StoreError;
use crate::backend::Tx;
use crate::event::{ArtifactRef, DeploymentStatus, Event, JobStatus, Role, RunStatus, StepStatus, UserKind};
use crate::query::stored_event;

const READ_MODELS: &[&str] = &[
    "projects",
    "project_heads",
    "runs",
    "jobs",
    "steps",
    "artifacts",
    "releases",
    "release_artifacts",
    "tokens",
    "users",
    "user_grants",
    "deployments",
    "deployment_phases",
    "deployment_gates",
    "deployment_approvals",
    "deployment_authors",
    "environment_protections",
    "deployment_versions",
    "deployment_instances",
    "judgements",
    "flag_sets",
    "flag_ages",
    "flag_keys",
    "flag_schedules",
    "flag_history",
];

/// Empties every read model and folds the whole log into them again; returns how many events.
pub(crate) async fn rebuild(tx: &mut Tx<'_>) -> Result<usize, StoreError> {
    for table in READ_MODELS {
        sqlx::query(&format!("DELETE FROM {table}"))
            .execute(&mut **tx)
            .await?;
    }
    let rows = sqlx::query("SELECT seq, at, data FROM events ORDER BY seq")
        .fetch_all(&mut **tx)
        .await?;
    for row in &rows {
        let stored = stored_event(row)?;
        apply(tx, stored.seq, &stored.event, &stored.at).await?;
    }
    Ok(rows.len())
}

/// Replaces a deployment's list in `table` (`deployment_id, idx, {column}`) with `items`.
async fn set_list(
    tx: &mut Tx<'_>,
    table: &str,
    column: &str,
    deployment_id: i64,
    items: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("DELETE FROM {table} WHERE deployment_id = $1"))
        .bind(deployment_id)
        .execute(&mut **tx)
        .await?;
    let insert = format!("INSERT INTO {table} (deployment_id, idx, {column}) VALUES ($1, $2, $3)");
    for (idx, item) in items.iter().enumerate() {
        sqlx::query(&insert)
            .bind(deployment_id)
            .bind(idx as i64)
            .bind(item)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// The name the first token of a log from before users had.
const BOOTSTRAP_ADMIN: &str = "admin";

async fn add_user(
    tx: &mut Tx<'_>,
    user: &str,
    kind: UserKind,
    email: Option<&str>,
    at: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO users (name, kind, email, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, email = excluded.email",
    )
    .bind(user)
    .bind(kind.as_str())
    .bind(email)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The user's role on exactly this scope ('' = every project / environment).
async fn grant(
    tx: &mut Tx<'_>,
    user: &str,
    role: Role,
    project: Option<&str>,
    environment: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO user_grants (user_name, project, environment, role) VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_name, project, environment) DO UPDATE SET role = excluded.role",
    )
    .bind(user)
    .bind(project.unwrap_or(""))
    .bind(environment.unwrap_or(""))
    .bind(role.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Folds the event `seq` (appended at `at`) into the read models.
pub(crate) async fn apply(tx: &mut Tx<'_>, seq: i64, event: &Event, at: &str) -> Result<(), sqlx::Error> {
    match event {
        Event::ProjectAdded {
            project,
            source_uri,
            poll_seconds,
            heads,
        } => {
            sqlx::query(
                "INSERT INTO projects (name, source_uri, poll_seconds, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET source_uri = excluded.source_uri,
                    poll_seconds = excluded.poll_seconds",
            )
            .bind(project)
            .bind(source_uri)
            .bind(*poll_seconds as i64)
            .bind(at)
            .execute(&mut **tx)
            .await?;
            sqlx::query("DELETE FROM project_heads WHERE project = $1")
                .bind(project)
                .execute(&mut **tx)
                .await?;
            for (branch, sha) in heads {
                sqlx::query("INSERT INTO project_heads (project, branch, sha) VALUES ($1, $2, $3)")
                    .bind(project)
                    .bind(branch)
                    .bind(sha)
                    .execute(&mut **tx)
                    .await?;
            }
        }
        Event::SecretSet { .. }
        | Event::SecretsSealed { .. }
        | Event::SecretsKeyRotated { .. }
        | Event::SigningKeyRotated { .. }
        | Event::RunCancelRequested { .. } => {}
        Event::TokenCreated {
            name,
            hash,
            user,
            expires_at,
            by: _,
        } => {
            let owner = user.as_deref().unwrap_or(name);
            if user.is_none() && name == BOOTSTRAP_ADMIN {
                // A log from before users: its first token was the admin's.
                add_user(tx, owner, UserKind::Person, None, at).await?;
                grant(tx, owner, Role::Admin, None, None).await?;
            }
            // Created again under its name, a token is rotated: never once it was revoked (a
            // rotation racing a revocation must not bring the token back).
            let written = sqlx::query(
                "INSERT INTO tokens (name, hash, user_name, expires_at, created_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (name) DO UPDATE SET hash = excluded.hash, user_name = excluded.user_name,
                    expires_at = excluded.expires_at, created_at = excluded.created_at
                 WHERE tokens.revoked_at IS NULL",
            )
            .bind(name)
            .bind(hash)
            .bind(owner)
            .bind(expires_at)
            .bind(at)
            .execute(&mut **tx)
            .await?;
            if written.rows_affected() == 0 {
                return Err(sqlx::Error::Protocol(format!("token {name} was revoked")));
            }
        }
        Event::TokenRevoked { name, .. } => {
            sqlx::query("UPDATE tokens SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL")
                .bind(name)
                .bind(at)
                .execute(&mut **tx)
                .await?;
        }
        Event::UserAdded {
            user, kind, email, ..
        } => {
            add_user(tx, user, *kind, email.as_deref(), at).await?;
        }
        Event::UserRemoved { user, .. } => {
            for statement in [
                "DELETE FROM users WHERE name = $1",
                "DELETE FROM user_grants WHERE user_name = $1",
            ] {
                sqlx::query(statement).bind(user).execute(&mut **tx).await?;
            }
            sqlx::query("UPDATE tokens SET revoked_at = $2 WHERE user_name = $1 AND revoked_at IS NULL")
                .bind(user)
                .bind(at)
                .execute(&mut **tx)
                .await?;
        }
        Event::RoleGranted {
            user,
            role,
            project,
            environment,
            ..
        } => grant(tx, user, *role, project.as_deref(), environment.as_deref()).await?,
        Event::RoleRevoked {
            user,
            project,
            environment,
            ..
        } => {
            sqlx::query("DELETE FROM user_grants WHERE user_name = $1 AND project = $2 AND environment = $3")
                .bind(user)
                .bind(project.as_deref().unwrap_or(""))
                .bind(environment.as_deref().unwrap_or(""))
                .execute(&mut **tx)
                .await?;
        }
        Event::RunCreated {
            run_id,
            project,
            source_uri,
            commit,
            branch,
            event,
            pipeline,
            source_digest,
            committed_at,
            jobs,
        } => {
            sqlx::query(
                "INSERT INTO runs (id, project, source_uri, commit_sha, branch, event, status, pipeline, source_digest, created_at,
                    committed_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(run_id)
            .bind(project)
            .bind(source_uri)
            .bind(commit)
            .bind(branch)
            .bind(event)
            .bind(RunStatus::Running.as_str())
            .bind(pipeline)
            .bind(source_digest)
            .bind(at)
            .bind(committed_at)
            .execute(&mut **tx)
            .await?;
            for (idx, job) in jobs.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO jobs (run_id, idx, job, status, attempt) VALUES ($1, $2, $3, $4, 0)",
                )
                .bind(run_id)
                .bind(idx as i64)
                .bind(job)
                .bind(JobStatus::Pending.as_str())
                .execute(&mut **tx)
                .await?;
            }
        }
        Event::JobStarted { run_id, job, attempt } => {
            sqlx::query(
                "UPDATE jobs SET status = $3, attempt = $4, started_at = $5, finished_at = NULL, reason = NULL
                 WHERE run_id = $1 AND job = $2",
            )
            .bind(run_id)
            .bind(job)
            .bind(JobStatus::Running.as_str())
            .bind(*attempt as i64)
            .bind(at)
            .execute(&mut **tx)
            .await?;
        }
        Event::StepStarted {
            run_id,
            job,
            attempt,
            step,
            name,
        } => {
            sqlx::query(
                "INSERT INTO steps (run_id, job, attempt, idx, name, status, started_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(run_id)
            .bind(job)
            .bind(*attempt as i64)
            .bind(*step as i64)
            .bind(name)
            .bind(StepStatus::Running.as_str())
            .bind(at)
            .execute(&mut **tx)
            .await?;
        }
        Event::StepFinished {
            run_id,
            job,
            attempt,
            step,
            outcome,
            exit_code,
        } => {
            sqlx::query(
                "UPDATE steps SET status = $5, exit_code = $6, finished_at = $7
                 WHERE run_id = $1 AND job = $2 AND attempt = $3 AND idx = $4",
            )
            .bind(run_id)
            .bind(job)
            .bind(*attempt as i64)
            .bind(*step as i64)
            .bind(outcome.as_str())
            .bind(exit_code)
            .bind(at)
            .execute(&mut **tx)
            .await?;
        }
        Event::JobFinished {
            run_id,
            job,
            attempt: _,
            status,
            reason,
            artifacts,
        } => {
            sqlx::query(
                "UPDATE jobs SET status = $3, reason = $4, finished_at = $5 WHERE run_id = $1 AND job = $2",
            )
            .bind(run_id)
            .bind(job)
            .bind(status.as_str())
            .bind(reason)
            .bind(at)
            .execute(&mut **tx)
            .await?;
            for artifact in artifacts {
                sqlx::query(
                    "INSERT INTO artifacts (run_id, job, path, digest, size) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (run_id, job, path) DO UPDATE SET digest = excluded.digest, size = excluded.size",
                )
                .bind(run_id)
                .bind(job)
                .bind(&artifact.path)
                .bind(&artifact.digest)
                .bind(artifact.size as i64)
                .execute(&mut **tx)
                .await?;
            }
        }
        Event::JobSkipped { run_id, job, reason } => {
            sqlx::query(
                "UPDATE jobs SET status = $3, reason = $4, finished_at = $5 WHERE run_id = $1 AND job = $2",
            )
            .bind(run_id)
            .bind(job)
            .bind(JobStatus::Skipped.as_str())
            .bind(reason)
            .bind(at)
            .execute(&mut **tx)
            .await?;
        }
        Event::RunFinished { run_id, status } => {
            sqlx::query("UPDATE runs SET status = $2, finished_at = $3 WHERE id = $1")
                .bind(run_id)
                .bind(status.as_str())
                .bind(at)
                .execute(&mut **tx)
                .await?;
        }
        Event::ReleaseCreated {
            release_id,
            run_id,
            project,
            commit,
            branch,
            artifacts,
            envelope,
        } => {
            sqlx::query(
                "INSERT INTO releases (id, run_id, project, commit_sha, branch, envelope, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(release_id)
            .bind(run_id)
            .bind(project)
            .bind(commit)
            .bind(branch)
            .bind(envelope.to_string())
            .bind(at)
            .execute(&mut **tx)
            .await?;
            for (idx, ArtifactRef { path, digest, size }) in artifacts.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO release_artifacts (release_id, idx, path, digest, size) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(release_id)
                .bind(idx as i64)
                .bind(path)
                .bind(digest)
                .bind(*size as i64)
                .execute(&mut **tx)
                .await?;
            }
        }
        Event::DeploymentRequested {
            deployment_id,
            project,
            environment,
            release_id,
            requested_by,
            author,
            authors,
            rollback_of,
            phases,
        } => {
            sqlx::query(
                "INSERT INTO deployments (id, project, environment, release_id, status, requested_by, author,
                    rollback_of, traffic, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9)",
            )
            .bind(deployment_id)
            .bind(project)
            .bind(environment)
            .bind(release_id)
            .bind(DeploymentStatus::Pending.as_str())
            .bind(requested_by)
            .bind(author)
            .bind(rollback_of)
            .bind(at)
            .execute(&mut **tx)
            .await?;
            set_list(tx, "deployment_phases", "phase", *deployment_id, phases).await?;
            set_list(tx, "deployment_authors", "author", *deployment_id, authors).await?;
        }
        Event::EnvironmentProtected {
            project,
            environment,
            protection,
            ..
        } => {
            sqlx::query("DELETE FROM environment_protections WHERE project = $1 AND environment = $2")
                .bind(project)
                .bind(environment)
                .execute(&mut **tx)
                .await?;
            if let Some(protection) = protection {
                sqlx::query(
                    "INSERT INTO environment_protections (project, environment, protection) VALUES ($1, $2, $3)",
                )
                .bind(project)
                .bind(environment)
                .bind(serde_json::to_string(protection).expect("a protection serializes"))
                .execute(&mut **tx)
                .await?;
            }
        }
        Event::DeploymentGated { deployment_id, gates } => {
            sqlx::query("UPDATE deployments SET status = $2 WHERE id = $1")
                .bind(deployment_id)
                .bind(DeploymentStatus::Pending.as_str())
                .execute(&mut **tx)
                .await?;
            set_list(tx, "deployment_gates", "gate", *deployment_id, gates).await?;
        }
        Event::DeploymentApproved { deployment_id, by } => {
            // One approval per person, and none once the deployment ended: the append fails
            // whole otherwise, however many ask at once.
            let added = sqlx::query(
                "INSERT INTO deployment_approvals (deployment_id, idx, approver)
                 SELECT $1, COUNT(*), $2 FROM deployment_approvals WHERE deployment_id = $1
                 HAVING NOT EXISTS (SELECT 1 FROM deployment_approvals WHERE deployment_id = $1 AND approver = $2)
                    AND EXISTS (SELECT 1 FROM deployments WHERE id = $1 AND finished_at IS NULL)",
            )
            .bind(deployment_id)
            .bind(by)
            .execute(&mut **tx)
            .await?;
            if added.rows_affected() == 0 {
                return Err(sqlx::Error::Protocol(format!(
                    "deployment {deployment_id} has {by}'s approval already, or has ended"
                )));
            }
        }
        Event::DeploymentPhase {
            deployment_id,
            index,
            phase,
            traffic,
        } => {
            sqlx::query(
                "UPDATE deployments SET status = $2, phase_index = $3, phase = $4, traffic = $5 WHERE id = $1",
            )
            .bind(deployment_id)
            .bind(DeploymentStatus::Running.as_str())
            .bind(*index as i64)
            .bind(phase)
            .bind(*traffic as i64)
            .execute(&mut **tx)
            .await?;
            set_list(tx, "deployment_gates", "gate", *deployment_id, &[]).await?;
        }
        Event::DeploymentInstances {
            deployment_id,
            version,
            instances,
        } => {
            sqlx::query(
                "INSERT INTO deployment_versions (deployment_id, version) VALUES ($1, $2)
                 ON CONFLICT (deployment_id, version) DO NOTHING",
            )
            .bind(deployment_id)
            .bind(version)
            .execute(&mut **tx)
            .await?;
            sqlx::query("DELETE FROM deployment_instances WHERE deployment_id = $1 AND version = $2")
                .bind(deployment_id)
                .bind(version)
                .execute(&mut **tx)
                .await?;
            for (idx, instance) in instances.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO deployment_instances (deployment_id, version, idx, addr, instance_id) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(deployment_id)
                .bind(version)
                .bind(idx as i64)
                .bind(instance.addr.to_string())
                .bind(instance.id.as_ref().map(|id| id.0.as_str()))
                .execute(&mut **tx)
                .await?;
            }
        }
        Event::DeploymentPaused { deployment_id, .. } => {
            sqlx::query("UPDATE deployments SET status = $2 WHERE id = $1")
                .bind(deployment_id)
                .bind(DeploymentStatus::Paused.as_str())
                .execute(&mut **tx)
                .await?;
        }
        Event::DeploymentResumed { deployment_id, .. } => {
            sqlx::query("UPDATE deployments SET status = $2 WHERE id = $1")
                .bind(deployment_id)
                .bind(DeploymentStatus::Running.as_str())
                .execute(&mut **tx)
                .await?;
        }
        Event::DeploymentFinished {
            deployment_id,
            status,
            reason,
        } => {
            sqlx::query("UPDATE deployments SET status = $2, reason = $3, finished_at = $4 WHERE id = $1")
                .bind(deployment_id)
                .bind(status.as_str())
                .bind(reason)
                .bind(at)
                .execute(&mut **tx)
                .await?;
            set_list(tx, "deployment_gates", "gate", *deployment_id, &[]).await?;
        }
        Event::DeploymentFixedForward {
            deployment_id,
            fixed_by,
            ..
        } => {
            sqlx::query("UPDATE deployments SET fixed_by = $2 WHERE id = $1")
                .bind(deployment_id)
                .bind(fixed_by)
                .execute(&mut **tx)
                .await?;
        }
        Event::DeploymentJudged {
            deployment_id,
            metric,
            verdict,
            traffic,
            summary,
            evidence,
        } => {
            sqlx::query(
                "INSERT INTO judgements (deployment_id, metric, verdict, traffic, summary, evidence, at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(deployment_id)
            .bind(metric)
            .bind(verdict.as_str())
            .bind(*traffic as i64)
            .bind(summary)
            .bind(evidence.to_string())
            .bind(at)
            .execute(&mut **tx)
            .await?;
        }
        Event::FlagsChanged {
            project,
            environment,
            by,
            definition,
            touched,
            removed,
            ..
        } => {
            sqlx::query(
                "INSERT INTO flag_sets (project, environment, definition, version, updated_at, updated_by)
                 VALUES ($1, $2, $3, 1, $4, $5)
                 ON CONFLICT (project, environment) DO UPDATE SET definition = excluded.definition,
                    version = flag_sets.version + 1, updated_at = excluded.updated_at, updated_by = excluded.updated_by",
            )
            .bind(project)
            .bind(environment)
            .bind(definition.to_string())
            .bind(at)
            .bind(by)
            .execute(&mut **tx)
            .await?;
            for flag in touched {
                sqlx::query(
                    "INSERT INTO flag_ages (project, environment, flag, created_at, changed_at) VALUES ($1, $2, $3, $4, $4)
                     ON CONFLICT (project, environment, flag) DO UPDATE SET changed_at = excluded.changed_at",
                )
                .bind(project)
                .bind(environment)
                .bind(flag)
                .bind(at)
                .execute(&mut **tx)
                .await?;
            }
            for flag in removed {
                sqlx::query("DELETE FROM flag_ages WHERE project = $1 AND environment = $2 AND flag = $3")
                    .bind(project)
                    .bind(environment)
                    .bind(flag)
                    .execute(&mut **tx)
                    .await?;
            }
        }
        Event::FlagKeyCreated {
            project,
            environment,
            name,
            hash,
            by,
        } => {
            sqlx::query(
                "INSERT INTO flag_keys (hash, name, project, environment, created_by, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(hash)
            .bind(name)
            .bind(project)
            .bind(environment)
            .bind(by)
            .bind(at)
            .execute(&mut **tx)
            .await?;
        }
        Event::FlagChangeScheduled {
            schedule_id,
            project,
            environment,
            flag,
            due_at,
            patch,
            by,
        } => {
            sqlx::query(
                "INSERT INTO flag_schedules (id, project, environment, flag, due_at, patch, created_by, created_at, status)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending')",
            )
            .bind(schedule_id)
            .bind(project)
            .bind(environment)
            .bind(flag)
            .bind(due_at)
            .bind(patch.to_string())
            .bind(by)
            .bind(at)
            .execute(&mut **tx)
            .await?;
        }
        Event::FlagScheduleFinished {
            schedule_id,
            status,
            outcome,
            ..
        } => {
            sqlx::query(
                "UPDATE flag_schedules SET status = $2, outcome = $3, finished_at = $4 WHERE id = $1",
            )
            .bind(schedule_id)
            .bind(status)
            .bind(outcome)
            .bind(at)
            .execute(&mut **tx)
            .await?;
        }
    }
    if let Some((project, environment)) = flag_history_scope(event) {
        sqlx::query("INSERT INTO flag_history (seq, project, environment) VALUES ($1, $2, $3)")
            .bind(seq)
            .bind(project)
            .bind(environment)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// The project environment whose flag history shows `event`, if it is a flag event.
fn flag_history_scope(event: &Event) -> Option<(&str, &str)> {
    match event {
        Event::FlagsChanged {
            project, environment, ..
        }
        | Event::FlagKeyCreated {
            project, environment, ..
        }
        | Event::FlagChangeScheduled {
            project, environment, ..
        }
        | Event::FlagScheduleFinished {
            project, environment, ..
        } => Some((project, environment)),
        _ => None,
    }
}
