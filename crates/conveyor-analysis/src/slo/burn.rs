//! The Google SRE workbook's multiwindow, multi-burn-rate alerts on an error budget.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::SloError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Page,
    Ticket,
}

/// One multiwindow alert: fires when both windows burn faster than `burn_rate`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BurnRateAlert {
    pub severity: Severity,
    pub long_window_secs: u64,
    pub short_window_secs: u64,
    pub burn_rate: f64,
}

const HOUR: u64 = 3600;

/// The SRE workbook's recommended set (table 5-8): paging at 2% of a 30-day budget in one hour
/// (14.4×) or 5% in six hours (6×), a ticket at 10% in three days (1×); each short window is 1/12
/// of its long one.
pub fn sre_workbook_alerts() -> [BurnRateAlert; 3] {
    [
        BurnRateAlert {
            severity: Severity::Page,
            long_window_secs: HOUR,
            short_window_secs: 5 * 60,
            burn_rate: 14.4,
        },
        BurnRateAlert {
            severity: Severity::Page,
            long_window_secs: 6 * HOUR,
            short_window_secs: 30 * 60,
            burn_rate: 6.0,
        },
        BurnRateAlert {
            severity: Severity::Ticket,
            long_window_secs: 72 * HOUR,
            short_window_secs: 6 * HOUR,
            burn_rate: 1.0,
        },
    ]
}

/// Good and total events the caller counted over the trailing `window_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowCounts {
    pub window_secs: u64,
    pub good: u64,
    pub total: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WindowBurn {
    pub window_secs: u64,
    pub good: u64,
    pub total: u64,
    /// Bad / total; None without traffic.
    pub error_ratio: Option<f64>,
    /// Error ratio / error budget; None without traffic.
    pub burn_rate: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Firing,
    NotFiring,
    /// A window had no traffic and the other did not rule the alert out; whether that blocks a
    /// rollout is the caller's policy.
    NoData,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AlertEvaluation {
    pub alert: BurnRateAlert,
    pub long: WindowBurn,
    pub short: WindowBurn,
    pub state: AlertState,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BurnRateReport {
    pub target: f64,
    /// 1 − target: the share of events allowed to be bad.
    pub error_budget: f64,
    pub alerts: Vec<AlertEvaluation>,
    pub firing: bool,
    pub no_data: bool,
}

/// Evaluates `alerts` for an SLO `target` (e.g. 0.999) from per-window counts. A window fires
/// when its burn rate strictly exceeds the threshold, as in the workbook's alert expressions.
pub fn evaluate_burn_rates(
    target: f64,
    alerts: &[BurnRateAlert],
    counts: &[WindowCounts],
) -> Result<BurnRateReport, SloError> {
    if !(target > 0.0 && target < 1.0) {
        return Err(SloError::TargetOutOfRange(target));
    }
    let error_budget = 1.0 - target;
    let mut windows = BTreeMap::new();
    for window in counts {
        if window.good > window.total {
            return Err(SloError::MoreGoodThanTotal {
                window_secs: window.window_secs,
                good: window.good,
                total: window.total,
            });
        }
        if windows.insert(window.window_secs, *window).is_some() {
            return Err(SloError::DuplicateWindow(window.window_secs));
        }
    }
    let burn = |window_secs: u64| -> Result<WindowBurn, SloError> {
        let counts = windows
            .get(&window_secs)
            .ok_or(SloError::MissingWindow(window_secs))?;
        let error_ratio =
            (counts.total > 0).then(|| (counts.total - counts.good) as f64 / counts.total as f64);
        Ok(WindowBurn {
            window_secs,
            good: counts.good,
            total: counts.total,
            error_ratio,
            burn_rate: error_ratio.map(|ratio| ratio / error_budget),
        })
    };

    let mut evaluations = Vec::with_capacity(alerts.len());
    for alert in alerts {
        let invalid = |problem| SloError::InvalidAlert {
            long_window_secs: alert.long_window_secs,
            short_window_secs: alert.short_window_secs,
            problem,
        };
        if !(alert.burn_rate.is_finite() && alert.burn_rate > 0.0) {
            return Err(invalid("the burn rate must be a positive number"));
        }
        if alert.short_window_secs == 0 || alert.short_window_secs >= alert.long_window_secs {
            return Err(invalid(
                "the short window must be shorter than the long one and not empty",
            ));
        }
        let (long, short) = (burn(alert.long_window_secs)?, burn(alert.short_window_secs)?);
        let exceeds = |window: &WindowBurn| window.burn_rate.map(|rate| rate > alert.burn_rate);
        let state = match (exceeds(&long), exceeds(&short)) {
            (Some(true), Some(true)) => AlertState::Firing,
            (Some(false), _) | (_, Some(false)) => AlertState::NotFiring,
            _ => AlertState::NoData,
        };
        evaluations.push(AlertEvaluation {
            alert: *alert,
            long,
            short,
            state,
        });
    }
    Ok(BurnRateReport {
        target,
        error_budget,
        firing: evaluations
            .iter()
            .any(|evaluation| evaluation.state == AlertState::Firing),
        no_data: evaluations
            .iter()
            .any(|evaluation| evaluation.state == AlertState::NoData),
        alerts: evaluations,
    })
}
