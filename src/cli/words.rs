//! Times in words for people reading tokens.

use std::time::{Duration, UNIX_EPOCH};

/// `2026-11-24T21:00:00Z (in 59m 58s)` or `(… ago)`.
pub(crate) fn time(secs: i64, now_secs: i64) -> String {
    let at = if secs >= 0 {
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs as u64)).to_string()
    } else {
        format!("{secs} (before 1970)")
    };
    let delta = secs - now_secs;
    let span = humantime::format_duration(Duration::from_secs(delta.unsigned_abs()));
    match delta {
        0 => format!("{at} (now)"),
        d if d > 0 => format!("{at} (in {span})"),
        _ => format!("{at} ({span} ago)"),
    }
}

pub(crate) fn duration_ms(ms: u64) -> String {
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}
