//! Durations as people read them, the same in every message and CLI table.

use std::time::Duration;

/// `500ms`, `42s`, `1m 30s`, `10m`, `2h 5m`, `3d 4h`: the two largest units, zeros left out.
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    if seconds == 0 {
        return format!("{}ms", d.as_millis());
    }
    let parts = [
        (seconds / 86_400, "d"),
        (seconds % 86_400 / 3600, "h"),
        (seconds % 3600 / 60, "m"),
        (seconds % 60, "s"),
    ];
    let first = parts.iter().position(|(n, _)| *n > 0).unwrap_or(3);
    parts[first..(first + 2).min(parts.len())]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        let cases = [
            (0, "0ms"),
            (500, "500ms"),
            (42_000, "42s"),
            (90_000, "1m 30s"),
            (600_000, "10m"),
            (3_600_000, "1h"),
            (5_400_000, "1h 30m"),
            (7_530_000, "2h 5m"),
            (273_600_000, "3d 4h"),
        ];
        for (ms, want) in cases {
            assert_eq!(human_duration(Duration::from_millis(ms)), want);
        }
    }
}
