//! Folds events into the read models. Used both on append and on rebuild, so the read models are
//! always exactly what the log says.

use sqlx::{Sqlite, Transaction};

use crate::event::{DeploymentStatus, Event, JobStatus, RunStatus, StepStatus};

type Tx<'a> = Transaction<'a, Sqlite>;

const READ_MODELS: &[&str] = &[
    "projects",
    "runs",
    "jobs",
    "steps",
    "artifacts",
    "releases",
    "tokens",
    "deployments",
    "judgements",
    "flag_sets",
    "flag_ages",
    "flag_keys",
    "flag_schedules",
];

pub(crate) async fn clear(tx: &mut Tx<'_>) -> Result<(), sqlx::Error> {
    for table in READ_MODELS {
        sqlx::query(&format!("DELETE FROM {table}"))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

pub(crate) async fn apply(tx: &mut Tx<'_>, event: &Event, at: &str) -> Result<(), sqlx::Error> {
    match event {
        Event::ProjectAdded {
            project,
            source_uri,
            poll_seconds,
            heads,
        } => {
            sqlx::query(
                "INSERT INTO projects (name, source_uri, poll_seconds, heads, created_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (name) DO UPDATE SET source_uri = excluded.source_uri,
                    poll_seconds = excluded.poll_seconds, heads = excluded.heads",
            )
            .bind(project)
            .bind(source_uri)
            .bind(*poll_seconds as i64)
            .bind(serde_json::to_string(heads).expect("heads serialize"))
            .bind(at)
            .execute(&mut **tx)
            .await?;
        }
        Event::SecretSet { .. } | Event::RunCancelRequested { .. } => {}
        Event::TokenCreated { name, hash } => {
            sqlx::query(
                "INSERT INTO tokens (name, hash, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET hash = excluded.hash, created_at = excluded.created_at",
            )
            .bind(name)
            .bind(hash)
            .bind(at)
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
            for job in jobs {
                sqlx::query("INSERT INTO jobs (run_id, job, status, attempt) VALUES ($1, $2, $3, 0)")
                    .bind(run_id)
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
                "INSERT INTO releases (id, run_id, project, commit_sha, branch, artifacts, envelope, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(release_id)
            .bind(run_id)
            .bind(project)
            .bind(commit)
            .bind(branch)
            .bind(serde_json::to_string(artifacts).expect("artifact refs serialize"))
            .bind(envelope.to_string())
            .bind(at)
            .execute(&mut **tx)
            .await?;
        }
        Event::DeploymentRequested {
            deployment_id,
            project,
            environment,
            release_id,
            requested_by,
            author,
            rollback_of,
            phases,
        } => {
            sqlx::query(
                "INSERT INTO deployments (id, project, environment, release_id, status, requested_by, author,
                    rollback_of, phases, traffic, gates, approvals, instances, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, '[]', '[]', '{}', $10)",
            )
            .bind(deployment_id)
            .bind(project)
            .bind(environment)
            .bind(release_id)
            .bind(DeploymentStatus::Pending.as_str())
            .bind(requested_by)
            .bind(author)
            .bind(rollback_of)
            .bind(serde_json::to_string(phases).expect("phases serialize"))
            .bind(at)
            .execute(&mut **tx)
            .await?;
        }
        Event::DeploymentGated { deployment_id, gates } => {
            sqlx::query("UPDATE deployments SET status = $2, gates = $3 WHERE id = $1")
                .bind(deployment_id)
                .bind(DeploymentStatus::Pending.as_str())
                .bind(serde_json::to_string(gates).expect("gates serialize"))
                .execute(&mut **tx)
                .await?;
        }
        Event::DeploymentApproved { deployment_id, by } => {
            sqlx::query(
                "UPDATE deployments SET approvals = json_insert(approvals, '$[#]', $2) WHERE id = $1",
            )
            .bind(deployment_id)
            .bind(by)
            .execute(&mut **tx)
            .await?;
        }
        Event::DeploymentPhase {
            deployment_id,
            index,
            phase,
            traffic,
        } => {
            sqlx::query(
                "UPDATE deployments SET status = $2, phase_index = $3, phase = $4, traffic = $5, gates = '[]'
                 WHERE id = $1",
            )
            .bind(deployment_id)
            .bind(DeploymentStatus::Running.as_str())
            .bind(*index as i64)
            .bind(phase)
            .bind(*traffic as i64)
            .execute(&mut **tx)
            .await?;
        }
        Event::DeploymentInstances {
            deployment_id,
            version,
            instances,
        } => {
            sqlx::query(
                "UPDATE deployments SET instances = json_set(instances, '$.' || $2, json($3)) WHERE id = $1",
            )
            .bind(deployment_id)
            .bind(format!("\"{version}\""))
            .bind(serde_json::to_string(instances).expect("instances serialize"))
            .execute(&mut **tx)
            .await?;
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
            sqlx::query("UPDATE deployments SET status = $2, reason = $3, finished_at = $4, gates = '[]' WHERE id = $1")
                .bind(deployment_id)
                .bind(status.as_str())
                .bind(reason)
                .bind(at)
                .execute(&mut **tx)
                .await?;
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
    Ok(())
}
