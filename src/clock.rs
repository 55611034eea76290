//! Time as HubSpot writes it: milliseconds inside, ISO-8601 UTC with milliseconds on the wire.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// `2024-01-15T10:30:00.000Z`, the form HubSpot returns for every timestamp.
pub fn iso(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Parses an ISO-8601 / RFC 3339 timestamp (an offset is required, as in `2023-11-07T05:31:56Z`).
pub fn parse_iso(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// HubSpot's datetime inputs: epoch milliseconds or ISO-8601.
pub fn parse_datetime(s: &str) -> Option<i64> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    parse_iso(s)
}

/// HubSpot's date inputs: `YYYY-MM-DD`, or epoch milliseconds at midnight UTC. Returns the
/// `YYYY-MM-DD` form.
pub fn parse_date(s: &str) -> Option<String> {
    if let Ok(ms) = s.parse::<i64>() {
        if ms.rem_euclid(86_400_000) != 0 {
            return None;
        }
        return Some(iso(ms)[..10].to_string());
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &fmt)
        .ok()
        .map(|d| d.format(&fmt).expect("date formats"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let ms = parse_iso("2023-11-07T05:31:56Z").unwrap();
        assert_eq!(iso(ms), "2023-11-07T05:31:56.000Z");
        assert_eq!(parse_datetime(&ms.to_string()), Some(ms));
        assert_eq!(parse_iso("2023-13-07T05:31:56Z"), None);
        assert_eq!(parse_iso("yesterday"), None);
    }
}
