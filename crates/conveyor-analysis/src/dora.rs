//! DORA's four keys from Conveyor's own deployment records.
//!
//! - **Deployment frequency**: successful deployments (rollbacks excluded) per day over the window.
//! - **Lead time for changes**: median of (deployment succeeded − commit time) over them.
//! - **Change failure rate**: deployments that failed or were aborted after starting, or that
//!   succeeded and were later rolled back or fixed forward (a later deployment marked as fixing
//!   it), over all deployments that started.
//! - **Time to restore**: median time from a failure to service restored — for a deployment
//!   that failed or was aborted, its start to its end (traffic went back to the stable version);
//!   for one rolled back or fixed forward, its success to the rollback's or the fix's success.
//!
//! Levels follow the DORA report's thresholds (elite, high, medium, low).

use std::time::Duration;

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Failed or aborted after it started taking traffic.
    Failed,
    /// Never started (refused at a gate, aborted while waiting): not a change that reached users.
    NotStarted,
}

/// One deployment into the environment measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub id: i64,
    pub outcome: Outcome,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    /// The commit time of the change it shipped.
    pub committed: Option<DateTime<Utc>>,
    /// Set when this deployment rolled back deployment `rollback_of`.
    pub rollback_of: Option<i64>,
    /// Set when a later deployment, `fixed_by`, was marked as fixing this one forward.
    pub fixed_by: Option<i64>,
}

pub use conveyor_api::dora::{Bucket, Frequency, Level, Measure, Rate, Report};

const DAY: u64 = 86_400;

/// The report over the deployments that finished within `window` before `now`.
pub fn report(all: &[Deployment], now: DateTime<Utc>, window: Duration) -> Report {
    let since = now - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    let recent: Vec<&Deployment> = all
        .iter()
        .filter(|d| d.finished > since && d.finished <= now)
        .collect();
    // What restored service after `d`: a successful rollback of it, or its successful fix forward.
    let restored_by = |d: &Deployment| {
        all.iter().find(|r| {
            r.outcome == Outcome::Succeeded && (r.rollback_of == Some(d.id) || d.fixed_by == Some(r.id))
        })
    };

    let shipped: Vec<&&Deployment> = recent
        .iter()
        .filter(|d| d.outcome == Outcome::Succeeded && d.rollback_of.is_none())
        .collect();
    let days = (window.as_secs() as f64 / DAY as f64).max(1.0 / 24.0);
    let per_day = shipped.len() as f64 / days;
    let deployment_frequency = Frequency {
        per_day,
        bucket: bucket(per_day),
        level: frequency_level(per_day),
    };

    let leads: Vec<u64> = shipped
        .iter()
        .filter_map(|d| d.committed.map(|c| (d.finished - c).num_seconds().max(0) as u64))
        .collect();
    let lead_time = median(&leads).map(|m| Measure {
        median_seconds: m,
        samples: leads.len(),
        level: lead_level(m),
    });

    let started: Vec<&&Deployment> = recent
        .iter()
        .filter(|d| d.outcome != Outcome::NotStarted && d.rollback_of.is_none())
        .collect();
    let failed = started
        .iter()
        .filter(|d| d.outcome == Outcome::Failed || restored_by(d).is_some())
        .count();
    let change_failure_rate = (!started.is_empty()).then(|| {
        let ratio = failed as f64 / started.len() as f64;
        Rate {
            failed,
            total: started.len(),
            ratio,
            level: failure_level(ratio),
        }
    });

    let restores: Vec<u64> = started
        .iter()
        .filter_map(|d| match (d.outcome, restored_by(d)) {
            (Outcome::Failed, _) => Some((d.finished - d.started).num_seconds().max(0) as u64),
            (_, Some(rollback)) => Some((rollback.finished - d.finished).num_seconds().max(0) as u64),
            _ => None,
        })
        .collect();
    let time_to_restore = median(&restores).map(|m| Measure {
        median_seconds: m,
        samples: restores.len(),
        level: restore_level(m),
    });

    Report {
        window_days: window.as_secs() / DAY,
        deployments: recent.len(),
        deployment_frequency,
        lead_time,
        change_failure_rate,
        time_to_restore,
    }
}

fn median(values: &[u64]) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2
    } else {
        sorted[mid]
    })
}

fn bucket(per_day: f64) -> Bucket {
    match per_day {
        d if d >= 1.0 => Bucket::Daily,
        d if d >= 1.0 / 7.0 => Bucket::Weekly,
        d if d >= 1.0 / 30.0 => Bucket::Monthly,
        _ => Bucket::Yearly,
    }
}

fn frequency_level(per_day: f64) -> Level {
    match bucket(per_day) {
        Bucket::Daily => Level::Elite,
        Bucket::Weekly => Level::High,
        Bucket::Monthly => Level::Medium,
        Bucket::Yearly => Level::Low,
    }
}

fn lead_level(seconds: u64) -> Level {
    match seconds {
        s if s < DAY => Level::Elite,
        s if s < 7 * DAY => Level::High,
        s if s < 30 * DAY => Level::Medium,
        _ => Level::Low,
    }
}

fn failure_level(ratio: f64) -> Level {
    match ratio {
        r if r <= 0.05 => Level::Elite,
        r if r <= 0.10 => Level::High,
        r if r <= 0.15 => Level::Medium,
        _ => Level::Low,
    }
}

fn restore_level(seconds: u64) -> Level {
    match seconds {
        s if s < 3600 => Level::Elite,
        s if s < DAY => Level::High,
        s if s < 7 * DAY => Level::Medium,
        _ => Level::Low,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn dep(id: i64, outcome: Outcome, started: &str, finished: &str, committed: Option<&str>) -> Deployment {
        Deployment {
            id,
            outcome,
            started: t(started),
            finished: t(finished),
            committed: committed.map(t),
            rollback_of: None,
            fixed_by: None,
        }
    }

    #[test]
    fn a_deployment_fixed_forward_is_a_change_failure_restored_by_the_fix() {
        let now = t("2026-11-25T00:00:00Z");
        let mut all = vec![
            dep(
                1,
                Outcome::Succeeded,
                "2026-11-24T08:00:00Z",
                "2026-11-24T08:05:00Z",
                None,
            ),
            // The fix shipped 2 hours after the broken change went out.
            dep(
                2,
                Outcome::Succeeded,
                "2026-11-24T10:00:00Z",
                "2026-11-24T10:05:00Z",
                None,
            ),
            // A canary that failed on its own.
            dep(
                3,
                Outcome::Failed,
                "2026-11-24T09:00:00Z",
                "2026-11-24T09:01:00Z",
                None,
            ),
        ];
        all[0].fixed_by = Some(2);
        let r = report(&all, now, Duration::from_secs(7 * DAY));
        let cfr = r.change_failure_rate.unwrap();
        // 1 (fixed forward) and 3 (failed) of 3.
        assert_eq!((cfr.failed, cfr.total), (2, 3));
        let ttr = r.time_to_restore.unwrap();
        // 2 h (fix forward) and 1 min (failed canary): median of two.
        assert_eq!((ttr.samples, ttr.median_seconds), (2, (2 * 3600 + 60) / 2));
    }

    #[test]
    fn the_four_keys_over_a_window() {
        let now = t("2026-11-25T00:00:00Z");
        let mut all = vec![
            // Shipped, 2 hours after its commit.
            dep(
                1,
                Outcome::Succeeded,
                "2026-11-20T10:00:00Z",
                "2026-11-20T10:05:00Z",
                Some("2026-11-20T08:05:00Z"),
            ),
            // Shipped, then rolled back 30 minutes later by deployment 3.
            dep(
                2,
                Outcome::Succeeded,
                "2026-11-21T10:00:00Z",
                "2026-11-21T10:05:00Z",
                Some("2026-11-20T10:05:00Z"),
            ),
            dep(
                3,
                Outcome::Succeeded,
                "2026-11-21T10:34:00Z",
                "2026-11-21T10:35:00Z",
                None,
            ),
            // A canary that failed after 10 minutes: traffic went back to stable.
            dep(
                4,
                Outcome::Failed,
                "2026-11-22T10:00:00Z",
                "2026-11-22T10:10:00Z",
                None,
            ),
            // Refused at a gate: no change reached anyone.
            dep(
                5,
                Outcome::NotStarted,
                "2026-11-23T10:00:00Z",
                "2026-11-23T10:00:00Z",
                None,
            ),
            // Outside the 7-day window.
            dep(
                6,
                Outcome::Succeeded,
                "2026-10-01T10:00:00Z",
                "2026-10-01T10:05:00Z",
                None,
            ),
        ];
        all[2].rollback_of = Some(2);
        let r = report(&all, now, Duration::from_secs(7 * DAY));
        assert_eq!(r.deployments, 5);
        // Deployments 1 and 2 shipped (the rollback does not count): 2 in 7 days.
        assert!((r.deployment_frequency.per_day - 2.0 / 7.0).abs() < 1e-9);
        assert_eq!(
            (r.deployment_frequency.bucket, r.deployment_frequency.level),
            (Bucket::Weekly, Level::High)
        );
        // Lead times 2 h and 24 h: median 13 h.
        let lead = r.lead_time.unwrap();
        assert_eq!(
            (lead.median_seconds, lead.samples, lead.level),
            (13 * 3600, 2, Level::Elite)
        );
        // 1, 2 (rolled back) and 4 (failed) started: 2 of 3 failed.
        let cfr = r.change_failure_rate.unwrap();
        assert_eq!((cfr.failed, cfr.total, cfr.level), (2, 3, Level::Low));
        // Restores: 30 min (rollback) and 10 min (failed canary): median 20 min.
        let ttr = r.time_to_restore.unwrap();
        assert_eq!(
            (ttr.median_seconds, ttr.samples, ttr.level),
            (20 * 60, 2, Level::Elite)
        );
    }

    #[test]
    fn an_empty_window_has_no_measures() {
        let r = report(&[], t("2026-11-30T00:00:00Z"), Duration::from_secs(90 * DAY));
        assert_eq!(
            (r.deployments, r.deployment_frequency.bucket),
            (0, Bucket::Yearly)
        );
        assert_eq!(
            (r.lead_time, r.change_failure_rate, r.time_to_restore),
            (None, None, None)
        );
    }

    #[test]
    fn level_thresholds() {
        let cases = [
            (frequency_level(3.0), Level::Elite),
            (frequency_level(0.5), Level::High),
            (frequency_level(0.05), Level::Medium),
            (frequency_level(0.01), Level::Low),
            (lead_level(3600), Level::Elite),
            (lead_level(3 * DAY), Level::High),
            (lead_level(10 * DAY), Level::Medium),
            (lead_level(60 * DAY), Level::Low),
            (failure_level(0.0), Level::Elite),
            (failure_level(0.08), Level::High),
            (failure_level(0.15), Level::Medium),
            (failure_level(0.5), Level::Low),
            (restore_level(60), Level::Elite),
            (restore_level(7200), Level::High),
            (restore_level(2 * DAY), Level::Medium),
            (restore_level(30 * DAY), Level::Low),
        ];
        for (i, (got, want)) in cases.iter().enumerate() {
            assert_eq!(got, want, "case {i}");
        }
        assert_eq!(median(&[5, 1, 3]), Some(3));
        assert_eq!(median(&[4, 1, 3, 2]), Some(2));
    }
}
