//! `switchboard doctor phones`: what to fix in the data before switching telephony over.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::store::PhoneRow;

/// Numbers shared by more records than this are reported (a switchboard line copied onto
/// every contact of a company logs one call onto all of them).
pub const SHARED_THRESHOLD: usize = 5;

/// Renders the report for one portal's phone rows.
pub fn report(portal_id: i64, rows: &[PhoneRow]) -> String {
    let unparsable: Vec<&PhoneRow> = rows
        .iter()
        .filter(|r| r.e164.is_none() && r.source.as_deref() != Some("default"))
        .collect();
    let guessed: Vec<&PhoneRow> = rows
        .iter()
        .filter(|r| r.source.as_deref() == Some("default"))
        .collect();
    let mut by_number: BTreeMap<&str, Vec<&PhoneRow>> = BTreeMap::new();
    for r in rows {
        if let Some(e) = r.e164.as_deref() {
            by_number.entry(e).or_default().push(r);
        }
    }
    let shared: Vec<(&str, Vec<&PhoneRow>)> = by_number
        .into_iter()
        .map(|(n, mut v)| {
            v.dedup_by_key(|r| r.object_id);
            (n, v)
        })
        .filter(|(_, v)| v.len() > SHARED_THRESHOLD)
        .collect();

    let mut out = String::new();
    let line = |r: &PhoneRow| {
        format!(
            "  {} {} {}: {:?}",
            r.object_type.plural(),
            r.object_id,
            r.property,
            r.raw
        )
    };
    let _ = writeln!(
        out,
        "Phone numbers of portal {portal_id}: {} stored values\n",
        rows.len()
    );
    let _ = writeln!(
        out,
        "Cannot be parsed (kept as typed, never matched): {}",
        unparsable.len()
    );
    for r in &unparsable {
        let _ = writeln!(out, "{}", line(r));
    }
    let _ = writeln!(
        out,
        "\nRegion only guessed from the portal default (no country code, no `country`; national-tier matches only): {}",
        guessed.len()
    );
    for r in &guessed {
        let _ = writeln!(
            out,
            "{} -> guessed {}",
            line(r),
            r.e164
                .as_deref()
                .unwrap_or("(not valid in the default region)")
        );
    }
    let _ = writeln!(
        out,
        "\nShared by more than {SHARED_THRESHOLD} records: {}",
        shared.len()
    );
    for (n, v) in &shared {
        let ids: Vec<String> = v
            .iter()
            .map(|r| format!("{} {}", r.object_type.plural(), r.object_id))
            .collect();
        let _ = writeln!(out, "  {n}: {} records ({})", v.len(), ids.join(", "));
    }
    let _ = writeln!(
        out,
        "\nSummary: {} unparsable, {} guessed region, {} shared numbers",
        unparsable.len(),
        guessed.len(),
        shared.len()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ObjectType;

    fn row(id: i64, raw: &str, e164: Option<&str>, source: Option<&str>) -> PhoneRow {
        PhoneRow {
            object_id: id,
            object_type: ObjectType::Contact,
            property: "phone".into(),
            raw: raw.into(),
            e164: e164.map(str::to_string),
            national_key: None,
            extension: None,
            source: source.map(str::to_string),
            region: None,
        }
    }

    #[test]
    fn counts_each_kind_of_problem() {
        let mut rows: Vec<PhoneRow> = (1..=SHARED_THRESHOLD as i64 + 1)
            .map(|i| row(i, "+1 201 555 0123", Some("+12015550123"), Some("number")))
            .collect();
        rows.push(row(
            50,
            "(201) 555-0199",
            Some("+12015550199"),
            Some("default"),
        ));
        rows.push(row(51, "n/a", None, None));
        let out = report(7, &rows);
        assert!(
            out.contains("Summary: 1 unparsable, 1 guessed region, 1 shared numbers"),
            "{out}"
        );
        assert!(out.contains("+12015550123: 6 records"), "{out}");
    }
}
