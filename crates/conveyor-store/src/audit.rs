//! Verifying the log. The hash chain is walked a page at a time (memory bounded by a page, not
//! by the log), then every signed checkpoint — the database's, and those of an exported file
//! when one is given — is checked against the public key and against the chain at its seq. A
//! rewrite that recomputed every hash and the chain head is caught by the first checkpoint it
//! reaches back to; checkpoints removed from the database are caught by the exported file.

use std::path::Path;

use conveyor_attest::{Checkpoint, Envelope, PublicKey};
use sqlx::Row as _;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _};

use crate::backend::Tx;
use crate::db::{GENESIS_HASH, chain_hash};
use crate::{Store, StoreError};

/// Events (or checkpoints) read at a time.
const PAGE: i64 = 1000;

/// What verifying the log found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    /// Events walked.
    pub events: u64,
    /// Checkpoints of the database checked.
    pub checkpoints: u64,
    /// Lines of the exported file checked.
    pub exported: u64,
    /// Empty when the log is intact.
    pub problems: Vec<AuditProblem>,
}

/// One way the log fails verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditProblem {
    Missing {
        after: i64,
        next: i64,
    },
    BrokenLink {
        seq: i64,
    },
    Edited {
        seq: i64,
    },
    Truncated {
        head: i64,
        last: i64,
    },
    /// A checkpoint row whose envelope is not a checkpoint signed by the key.
    CheckpointInvalid {
        seq: i64,
        error: String,
    },
    /// A validly signed checkpoint whose event no longer has the signed hash.
    CheckpointMismatch {
        seq: i64,
    },
    /// A validly signed checkpoint of an event after the end of the log.
    CheckpointPastEnd {
        seq: i64,
        last: i64,
    },
    /// A checkpoint of the exported file that the database does not hold.
    CheckpointRemoved {
        seq: i64,
    },
    /// A line of the exported file that is not a checkpoint signed by the key.
    ExportInvalid {
        line: u64,
        error: String,
    },
}

impl std::fmt::Display for AuditProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuditProblem::Missing { after, next } => write!(
                f,
                "events {}..={} are missing: rows were deleted after event {after}",
                after + 1,
                next - 1
            ),
            AuditProblem::BrokenLink { seq } => write!(
                f,
                "event {seq}: prev_hash does not match the hash of the event before it"
            ),
            AuditProblem::Edited { seq } => write!(
                f,
                "event {seq}: stored hash does not match its content: the row was edited"
            ),
            AuditProblem::Truncated { head, last } => write!(
                f,
                "the chain head records event {head} but the log ends at event {last}: the newest events were deleted"
            ),
            AuditProblem::CheckpointInvalid { seq, error } => {
                write!(
                    f,
                    "the checkpoint stored for event {seq} is not validly signed: {error}"
                )
            }
            AuditProblem::CheckpointMismatch { seq } => write!(
                f,
                "event {seq} does not have the hash a signed checkpoint records for it: history was rewritten up to there"
            ),
            AuditProblem::CheckpointPastEnd { seq, last } => write!(
                f,
                "a signed checkpoint covers event {seq} but the log ends at event {last}: the newest events were deleted"
            ),
            AuditProblem::CheckpointRemoved { seq } => write!(
                f,
                "the exported checkpoint of event {seq} is not in the database: checkpoints were removed"
            ),
            AuditProblem::ExportInvalid { line, error } => {
                write!(
                    f,
                    "exported checkpoint on line {line} is not validly signed: {error}"
                )
            }
        }
    }
}

impl Store {
    /// Verifies the chain and every checkpoint against `keys` (the server's current key and
    /// those it retired): the database's, and those of the exported file `exported` (missing:
    /// nothing exported yet). Reads one snapshot of the database a page at a time.
    pub async fn audit(&self, keys: &[PublicKey], exported: Option<&Path>) -> Result<Audit, StoreError> {
        // The file's length before the snapshot: a checkpoint is committed before it is
        // exported, so every line within that length is in the snapshot too.
        let exported = match exported {
            Some(path) => match tokio::fs::metadata(path).await {
                Ok(meta) => Some((path, meta.len())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        let mut tx = self.pool.begin().await?;
        let mut audit = Audit {
            events: 0,
            checkpoints: 0,
            exported: 0,
            problems: Vec::new(),
        };
        let last = walk_chain(&mut tx, &mut audit).await?;

        let mut after = i64::MIN;
        loop {
            let rows =
                sqlx::query("SELECT seq, envelope FROM checkpoints WHERE seq > $1 ORDER BY seq LIMIT $2")
                    .bind(after)
                    .bind(PAGE)
                    .fetch_all(&mut *tx)
                    .await?;
            let Some(row) = rows.last() else { break };
            after = row.get(0);
            for row in &rows {
                let seq: i64 = row.get(0);
                audit.checkpoints += 1;
                match signed(row.get(1), keys) {
                    Ok(checkpoint) => {
                        check_against_chain(&mut tx, &checkpoint, last, &mut audit.problems).await?
                    }
                    Err(error) => audit
                        .problems
                        .push(AuditProblem::CheckpointInvalid { seq, error }),
                }
            }
        }

        if let Some((path, len)) = exported {
            let file = tokio::fs::File::open(path).await?.take(len);
            let mut lines = tokio::io::BufReader::new(file).lines();
            let mut number = 0;
            while let Some(line) = lines.next_line().await? {
                number += 1;
                if line.trim().is_empty() {
                    continue;
                }
                audit.exported += 1;
                let checkpoint = match signed(&line, keys) {
                    Ok(checkpoint) => checkpoint,
                    Err(error) => {
                        audit
                            .problems
                            .push(AuditProblem::ExportInvalid { line: number, error });
                        continue;
                    }
                };
                let stored: Option<String> =
                    sqlx::query_scalar("SELECT envelope FROM checkpoints WHERE seq = $1")
                        .bind(checkpoint.seq)
                        .fetch_optional(&mut *tx)
                        .await?;
                match stored {
                    None => {
                        audit
                            .problems
                            .push(AuditProblem::CheckpointRemoved { seq: checkpoint.seq });
                        check_against_chain(&mut tx, &checkpoint, last, &mut audit.problems).await?;
                    }
                    // The same statement was checked against the chain above.
                    Some(stored) if signed(&stored, keys).as_ref() == Ok(&checkpoint) => {}
                    Some(_) => check_against_chain(&mut tx, &checkpoint, last, &mut audit.problems).await?,
                }
            }
        }
        Ok(audit)
    }
}

/// Walks every event, checking links and hashes, then the chain head; returns the last seq.
async fn walk_chain(tx: &mut Tx<'_>, audit: &mut Audit) -> Result<i64, StoreError> {
    let mut expected_prev = GENESIS_HASH.to_string();
    let mut last_seq = 0;
    loop {
        let rows = sqlx::query(
            "SELECT seq, at, kind, data, prev_hash, hash FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(last_seq)
        .bind(PAGE)
        .fetch_all(&mut **tx)
        .await?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let seq: i64 = row.get(0);
            let (at, kind, data): (&str, &str, &str) = (row.get(1), row.get(2), row.get(3));
            let (prev, hash): (&str, &str) = (row.get(4), row.get(5));
            if seq != last_seq + 1 {
                audit.problems.push(AuditProblem::Missing {
                    after: last_seq,
                    next: seq,
                });
            } else if prev != expected_prev {
                audit.problems.push(AuditProblem::BrokenLink { seq });
            }
            if chain_hash(prev, seq, at, kind, data) != hash {
                audit.problems.push(AuditProblem::Edited { seq });
            }
            expected_prev = hash.to_string();
            last_seq = seq;
            audit.events += 1;
        }
    }
    let head: Option<(i64, String)> = sqlx::query_as("SELECT seq, hash FROM chain_head WHERE id = 1")
        .fetch_optional(&mut **tx)
        .await?;
    if let Some((head_seq, head_hash)) = head {
        if head_seq != last_seq {
            audit.problems.push(AuditProblem::Truncated {
                head: head_seq,
                last: last_seq,
            });
        } else if head_hash != expected_prev {
            audit.problems.push(AuditProblem::Edited { seq: last_seq });
        }
    }
    Ok(last_seq)
}

/// The checkpoint an envelope's JSON carries, if one of `keys` signed it.
fn signed(envelope: &str, keys: &[PublicKey]) -> Result<Checkpoint, String> {
    let envelope: Envelope =
        serde_json::from_str(envelope).map_err(|e| format!("not a DSSE envelope: {e}"))?;
    Checkpoint::verify(&envelope, keys).map_err(|e| e.to_string())
}

/// Whether the log's event `checkpoint.seq` still has the signed hash.
async fn check_against_chain(
    tx: &mut Tx<'_>,
    checkpoint: &Checkpoint,
    last: i64,
    problems: &mut Vec<AuditProblem>,
) -> Result<(), StoreError> {
    let hash: Option<String> = sqlx::query_scalar("SELECT hash FROM events WHERE seq = $1")
        .bind(checkpoint.seq)
        .fetch_optional(&mut **tx)
        .await?;
    let seq = checkpoint.seq;
    match hash {
        Some(hash) if hash == checkpoint.head_hash => {}
        None if seq > last => problems.push(AuditProblem::CheckpointPastEnd { seq, last }),
        _ => problems.push(AuditProblem::CheckpointMismatch { seq }),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use conveyor_attest::KeyPair;

    use super::*;
    use crate::Event;
    use crate::db::tests::{store_with_a_run, tamper};

    fn cancel(run_id: i64) -> Event {
        Event::RunCancelRequested {
            run_id,
            reason: "test".into(),
        }
    }

    /// What someone who can write the file does to rewrite history unnoticed by the chain
    /// alone: edit an event, then recompute every hash after it and the chain head.
    async fn rewrite_history(store: &Store, seq: i64) {
        tamper(
            store,
            &[
                "DROP TRIGGER events_no_update",
                &format!("UPDATE events SET data = replace(data, 'make', 'evil') WHERE seq = {seq}"),
            ],
        )
        .await;
        let rows: Vec<(i64, String, String, String)> =
            sqlx::query_as("SELECT seq, at, kind, data FROM events ORDER BY seq")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        assert!(rows[seq as usize - 1].3.contains("evil"));
        let mut prev = GENESIS_HASH.to_string();
        for (seq, at, kind, data) in rows {
            let hash = chain_hash(&prev, seq, &at, &kind, &data);
            sqlx::query("UPDATE events SET prev_hash = $1, hash = $2 WHERE seq = $3")
                .bind(&prev)
                .bind(&hash)
                .bind(seq)
                .execute(&store.pool)
                .await
                .unwrap();
            sqlx::query("UPDATE chain_head SET seq = $1, hash = $2 WHERE id = 1")
                .bind(seq)
                .bind(&hash)
                .execute(&store.pool)
                .await
                .unwrap();
            prev = hash;
        }
    }

    #[tokio::test]
    async fn a_rewrite_that_recomputed_every_hash_is_caught_by_the_checkpoints() {
        let (scratch, store, _) = store_with_a_run().await;
        let signer = KeyPair::from_seed([6; 32]);
        let key = [signer.public()];
        let export = scratch.dir().join("checkpoints.jsonl");
        let first = store.log().checkpoint(&signer, &export).await.unwrap().unwrap();
        assert_eq!(first.seq, 7);
        // Nothing appended since: nothing to sign.
        assert_eq!(store.log().checkpoint(&signer, &export).await.unwrap(), None);
        // More than a page of events, so the walk reads several.
        for chunk in (0..2 * PAGE + 5).collect::<Vec<_>>().chunks(500) {
            store
                .log()
                .append_all(chunk.iter().map(|i| cancel(*i)).collect())
                .await
                .unwrap();
        }
        let second = store.log().checkpoint(&signer, &export).await.unwrap().unwrap();
        assert_eq!(
            (second.seq, store.log().checkpointed()),
            (2 * PAGE + 12, 2 * PAGE + 12)
        );
        assert_eq!(std::fs::read_to_string(&export).unwrap().lines().count(), 2);
        let intact = Audit {
            events: second.seq as u64,
            checkpoints: 2,
            exported: 2,
            problems: vec![],
        };
        assert_eq!(store.audit(&key, Some(&export)).await.unwrap(), intact);

        rewrite_history(&store, 3).await;
        // The chain alone is consistent again: only the signatures tell.
        assert_eq!(
            store.audit(&key, None).await.unwrap().problems[..],
            [
                AuditProblem::CheckpointMismatch { seq: first.seq },
                AuditProblem::CheckpointMismatch { seq: second.seq },
            ]
        );
        // The file's checkpoints are the database's: each is reported once.
        assert_eq!(store.audit(&key, Some(&export)).await.unwrap().problems.len(), 2);
        assert_eq!(
            AuditProblem::CheckpointMismatch { seq: 7 }.to_string(),
            "event 7 does not have the hash a signed checkpoint records for it: history was rewritten up to there"
        );
    }

    #[tokio::test]
    async fn checkpoints_signed_by_another_key_or_forged_are_refused() {
        let (scratch, store, _) = store_with_a_run().await;
        let export = scratch.dir().join("checkpoints.jsonl");
        let signer = KeyPair::from_seed([6; 32]);
        store.log().checkpoint(&signer, &export).await.unwrap();
        let other = [KeyPair::from_seed([7; 32]).public()];
        let problems = store.audit(&other, Some(&export)).await.unwrap().problems;
        assert!(
            matches!(&problems[..], [
                AuditProblem::CheckpointInvalid { seq: 7, error },
                AuditProblem::ExportInvalid { line: 1, .. },
            ] if error.contains(&format!("signed by key {}, which is none of the server's keys", signer.public().key_id()))),
            "{problems:?}"
        );

        // Someone with the file but not the key signs their own statement into the table.
        let forged = conveyor_attest::Checkpoint {
            seq: 8,
            head_hash: "00".repeat(32),
            time: crate::now_rfc3339(),
        }
        .sign(&KeyPair::from_seed([8; 32]));
        sqlx::query("INSERT INTO checkpoints (seq, head_hash, at, envelope) VALUES (8, '', '', $1)")
            .bind(serde_json::to_string(&forged).unwrap())
            .execute(&store.pool)
            .await
            .unwrap();
        std::fs::write(scratch.dir().join("garbage.jsonl"), "not json\n").unwrap();
        let problems = store
            .audit(&[signer.public()], Some(&scratch.dir().join("garbage.jsonl")))
            .await
            .unwrap()
            .problems;
        assert!(
            matches!(&problems[..], [
                AuditProblem::CheckpointInvalid { seq: 8, .. },
                AuditProblem::ExportInvalid { line: 1, error },
            ] if error.starts_with("not a DSSE envelope")),
            "{problems:?}"
        );
    }

    #[tokio::test]
    async fn deleted_checkpoints_and_events_are_caught_by_the_exported_file() {
        let (scratch, store, _) = store_with_a_run().await;
        let signer = KeyPair::from_seed([6; 32]);
        let export = scratch.dir().join("checkpoints.jsonl");
        store.log().checkpoint(&signer, &export).await.unwrap();
        // The newest events go, the head is moved back to match, the checkpoint is deleted.
        let (seq, hash): (i64, String) = sqlx::query_as("SELECT seq, hash FROM events WHERE seq = 5")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        tamper(
            &store,
            &[
                "DROP TRIGGER events_no_delete",
                "DROP TRIGGER checkpoints_no_delete",
                "DELETE FROM events WHERE seq > 5",
                "DELETE FROM checkpoints",
                &format!("UPDATE chain_head SET seq = {seq}, hash = '{hash}' WHERE id = 1"),
            ],
        )
        .await;
        let key = [signer.public()];
        // The database alone looks intact...
        assert_eq!(store.audit(&key, None).await.unwrap().problems, []);
        // ... not next to the exported file.
        assert_eq!(
            store.audit(&key, Some(&export)).await.unwrap().problems,
            [
                AuditProblem::CheckpointRemoved { seq: 7 },
                AuditProblem::CheckpointPastEnd { seq: 7, last: 5 },
            ]
        );
        // A missing export file is one with nothing exported yet.
        let none = store
            .audit(&key, Some(&scratch.dir().join("none.jsonl")))
            .await
            .unwrap();
        assert_eq!((none.exported, none.problems), (0, vec![]));
    }
}
