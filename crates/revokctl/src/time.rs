//! Times on the command line: RFC 3339 (`2026-12-01T00:00:00Z`), unix seconds (`1764547200`),
//! or a duration from now (`+1h`, `+30d`, `+90s`).

use std::time::UNIX_EPOCH;

use revokd_proto::clock::unix_now;

/// Parses a time given in any of the accepted forms into unix seconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Some(d) = s.strip_prefix('+') {
        let d = humantime::parse_duration(d)
            .map_err(|e| format!("{s:?}: not a duration like +1h or +30d ({e})"))?;
        return Ok(unix_now().saturating_add(d.as_secs() as i64));
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map_err(|_| format!("{s:?}: unix seconds out of range"));
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
        format!("{s:?}: expected RFC 3339 (2026-12-01T00:00:00Z), unix seconds or +duration ({e})")
    })?;
    Ok(t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0))
}

/// Formats unix seconds as RFC 3339 (UTC).
pub fn format_time(secs: i64) -> String {
    if secs <= 0 {
        return "-".into();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(secs as u64))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_three_forms() {
        assert_eq!(parse_time("1764547200"), Ok(1_764_547_200));
        assert_eq!(parse_time("2025-12-01T00:00:00Z"), Ok(1_764_547_200));
        let t = parse_time("+1h").unwrap();
        assert!((t - unix_now() - 3600).abs() <= 1);
        assert!(parse_time("tomorrow").is_err());
        assert!(parse_time("+forever").is_err());
        assert_eq!(format_time(1_764_547_200), "2025-12-01T00:00:00Z");
    }
}
