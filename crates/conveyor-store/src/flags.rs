//! Reads of the feature-flag read models: definitions per project environment, flag ages,
//! evaluation keys, scheduled changes, and the flag history (an index into the log).

use serde::Serialize;
use sqlx::Row as _;

use crate::backend::{Row, time};
use crate::db::{Store, StoreError};
use crate::query::{StoredEvent, stored_event};

pub use conveyor_api::{FlagKeyRow, FlagScheduleView};

/// The current flag definition of one project environment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlagSetRow {
    pub project: String,
    pub environment: String,
    /// flagd JSON.
    pub definition: serde_json::Value,
    /// 1 for the first definition, +1 per change.
    pub version: i64,
    pub updated_at: String,
    pub updated_by: String,
}

/// When a flag was added and last changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlagAge {
    pub flag: String,
    pub created_at: String,
    pub changed_at: String,
}

fn decode_json(seq: i64, text: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Decode {
        seq,
        error: e.to_string(),
    })
}

fn flag_set_from_row(row: &Row) -> Result<FlagSetRow, StoreError> {
    let version: i64 = row.get(3);
    Ok(FlagSetRow {
        project: row.get(0),
        environment: row.get(1),
        definition: decode_json(version, row.get::<&str, _>(2))?,
        version,
        updated_at: row.get(4),
        updated_by: row.get(5),
    })
}

const FLAG_SET_COLUMNS: &str = "project, environment, definition, version, updated_at, updated_by";

const SCHEDULE_COLUMNS: &str =
    "id, project, environment, flag, due_at, patch, created_by, created_at, status, outcome, finished_at";

fn schedule_from_row(row: &Row) -> Result<FlagScheduleView, StoreError> {
    let id: i64 = row.get(0);
    Ok(FlagScheduleView {
        id,
        project: row.get(1),
        environment: row.get(2),
        flag: row.get(3),
        due_at: row.get(4),
        patch: decode_json(id, row.get::<&str, _>(5))?,
        created_by: row.get(6),
        created_at: time(row, 7)?,
        status: row.get(8),
        outcome: row.get(9),
        finished_at: time(row, 10)?,
    })
}

impl Store {
    /// Every environment's current flag definition.
    pub async fn flag_sets(&self) -> Result<Vec<FlagSetRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {FLAG_SET_COLUMNS} FROM flag_sets ORDER BY project, environment"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(flag_set_from_row).collect()
    }

    pub async fn flag_set(&self, project: &str, environment: &str) -> Result<Option<FlagSetRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {FLAG_SET_COLUMNS} FROM flag_sets WHERE project = $1 AND environment = $2"
        ))
        .bind(project)
        .bind(environment)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(flag_set_from_row).transpose()
    }

    /// When each flag of an environment was added and last changed, by flag key.
    pub async fn flag_ages(&self, project: &str, environment: &str) -> Result<Vec<FlagAge>, StoreError> {
        Ok(sqlx::query_as::<_, (String, String, String)>(
            "SELECT flag, created_at, changed_at FROM flag_ages WHERE project = $1 AND environment = $2 ORDER BY flag",
        )
        .bind(project)
        .bind(environment)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|(flag, created_at, changed_at)| FlagAge {
            flag,
            created_at,
            changed_at,
        })
        .collect())
    }

    /// Every evaluation key (hashes only).
    pub async fn flag_keys(&self) -> Result<Vec<FlagKeyRow>, StoreError> {
        sqlx::query(
            "SELECT hash, name, project, environment, created_by, created_at FROM flag_keys
             ORDER BY project, environment, name",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok(FlagKeyRow {
                hash: row.try_get(0)?,
                name: row.try_get(1)?,
                project: row.try_get(2)?,
                environment: row.try_get(3)?,
                created_by: row.try_get(4)?,
                created_at: time(row, 5)?,
            })
        })
        .collect()
    }

    /// Scheduled changes of an environment (all environments when `None`), oldest due first;
    /// only pending ones when `pending_only`.
    pub async fn flag_schedules(
        &self,
        scope: Option<(&str, &str)>,
        pending_only: bool,
    ) -> Result<Vec<FlagScheduleView>, StoreError> {
        let (project, environment) = scope.unzip();
        let rows = sqlx::query(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM flag_schedules
             WHERE ($1 IS NULL OR project = $1) AND ($2 IS NULL OR environment = $2)
               AND (NOT $3 OR status = 'pending')
             ORDER BY due_at, id"
        ))
        .bind(project)
        .bind(environment)
        .bind(pending_only)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(schedule_from_row).collect()
    }

    pub async fn flag_schedule(&self, id: i64) -> Result<Option<FlagScheduleView>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM flag_schedules WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(schedule_from_row).transpose()
    }

    /// The flag events of one environment, newest first: changes (who, when, the diff), keys,
    /// schedules.
    pub async fn flag_history(
        &self,
        project: &str,
        environment: &str,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT e.seq, e.at, e.data FROM flag_history h JOIN events e ON e.seq = h.seq
             WHERE h.project = $1 AND h.environment = $2
             ORDER BY h.seq DESC LIMIT $3",
        )
        .bind(project)
        .bind(environment)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stored_event).collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::db::IdKind;
    use crate::event::Event;

    fn changed(definition: serde_json::Value, touched: &[&str], removed: &[&str]) -> Event {
        Event::FlagsChanged {
            project: "p".into(),
            environment: "production".into(),
            by: "alice".into(),
            definition,
            changes: vec!["flag 'x' added".into()],
            touched: touched.iter().map(|s| s.to_string()).collect(),
            removed: removed.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[tokio::test]
    async fn flag_read_models_fold_and_rebuild() {
        let scratch = crate::db::tests::Scratch::new();
        let store = crate::db::tests::open(&scratch).await;
        store
            .log()
            .append(changed(json!({"flags": {"x": 1}}), &["x"], &[]))
            .await
            .unwrap();
        store
            .log()
            .append(changed(json!({"flags": {"y": 2}}), &["y"], &["x"]))
            .await
            .unwrap();
        store
            .log()
            .append(Event::FlagKeyCreated {
                project: "p".into(),
                environment: "production".into(),
                name: "web".into(),
                hash: "ab".repeat(32),
                by: "admin".into(),
            })
            .await
            .unwrap();
        let id = store
            .log()
            .append_new(IdKind::FlagSchedule, |schedule_id| Event::FlagChangeScheduled {
                schedule_id,
                project: "p".into(),
                environment: "production".into(),
                flag: "y".into(),
                due_at: "2030-01-01T00:00:00Z".into(),
                patch: json!({"state": "DISABLED"}),
                by: "alice".into(),
            })
            .await
            .unwrap();
        assert_eq!(id, 1);
        let set = store.flag_set("p", "production").await.unwrap().unwrap();
        assert_eq!((set.version, &set.definition), (2, &json!({"flags": {"y": 2}})));
        let ages = store.flag_ages("p", "production").await.unwrap();
        assert_eq!(ages.iter().map(|a| a.flag.as_str()).collect::<Vec<_>>(), ["y"]);
        assert_eq!(store.flag_schedules(None, true).await.unwrap().len(), 1);
        store
            .log()
            .append(Event::FlagScheduleFinished {
                schedule_id: id,
                project: "p".into(),
                environment: "production".into(),
                status: "applied".into(),
                outcome: "flag 'y': state ENABLED → DISABLED".into(),
            })
            .await
            .unwrap();
        assert!(store.flag_schedules(None, true).await.unwrap().is_empty());
        let history = store.flag_history("p", "production", 10).await.unwrap();
        assert_eq!(history.len(), 5);
        assert!(store.flag_history("p", "staging", 10).await.unwrap().is_empty());

        let keys = store.flag_keys().await.unwrap();
        let schedule = store.flag_schedule(id).await.unwrap();
        store.log().rebuild_read_models().await.unwrap();
        assert_eq!(store.flag_set("p", "production").await.unwrap().unwrap(), set);
        assert_eq!(store.flag_ages("p", "production").await.unwrap(), ages);
        assert_eq!(store.flag_keys().await.unwrap(), keys);
        assert_eq!(store.flag_schedule(id).await.unwrap(), schedule);
        assert_eq!(schedule.unwrap().status, "applied");
    }
}
