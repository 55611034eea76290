//! Phone parsing: the one place that turns what people type into keys the index can compare.
//!
//! Everything here is built on `rlibphonenumber`, a port of Google's libphonenumber that agreed
//! with the reference implementation on 100 % of 19,775 varied inputs (see `../shared/docs/stack.md`).
//! We add only what libphonenumber leaves to the caller: junk around the number, `00`/`011`
//! prefixes typed in the "wrong" region, and the decision of which region a national number
//! belongs to.

use rlibphonenumber::{PHONE_NUMBER_UTIL, PhoneNumber, PhoneNumberFormat, Region};

use super::countries::COUNTRY_NAMES;

/// The libphonenumber metadata release compiled into the binary (from the crate's README).
pub const METADATA_VERSION: &str = "9.0.42";
/// The version of the `rlibphonenumber` crate that carries the metadata.
pub const PARSER_VERSION: &str = "rlibphonenumber 2.2.15";

/// Where the region of a stored number came from. It decides the matching tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionSource {
    /// The number carried its own country code (`+`, `00`, `011`, or digits libphonenumber
    /// recognised as one).
    Number,
    /// The number was national, and the record's `country` property named the country.
    Country,
    /// The number was national and nothing named its country: the portal's default was a guess.
    Default,
}

impl RegionSource {
    pub fn as_str(self) -> &'static str {
        match self {
            RegionSource::Number => "number",
            RegionSource::Country => "country",
            RegionSource::Default => "default",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "number" => Some(RegionSource::Number),
            "country" => Some(RegionSource::Country),
            "default" => Some(RegionSource::Default),
            _ => None,
        }
    }
}

/// A stored or dialled number after normalisation.
///
/// `e164` is set only when the number is a stable key: valid, or at least possible with an
/// explicit country code. libphonenumber's parse is not idempotent on invalid input, so keying
/// anything weaker would make the index disagree with itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    pub e164: Option<String>,
    /// ISO-3166 alpha-2 of the number (from its country code), when it has a valid region.
    pub region: Option<String>,
    /// National significant number, digits only.
    pub nsn: Option<String>,
    /// The national digits without trunk zeros, as a number. For a number whose region was
    /// guessed it is the digits as typed, which is what the national tier compares; for the
    /// others it is the national significant number, which finds near misses.
    pub national_key: Option<u64>,
    pub extension: Option<String>,
    pub source: Option<RegionSource>,
    pub valid: bool,
}

impl Normalized {
    fn unparsable() -> Self {
        Normalized {
            e164: None,
            region: None,
            nsn: None,
            national_key: None,
            extension: None,
            source: None,
            valid: false,
        }
    }
}

/// Parses a region given as an ISO-3166 alpha-2 code or an English country name, in any case.
pub fn region_from_country(value: &str) -> Option<Region> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if v.len() == 2 {
        return v.to_ascii_uppercase().parse::<Region>().ok();
    }
    let lower = v.to_lowercase();
    COUNTRY_NAMES
        .binary_search_by(|(name, _)| name.cmp(&lower.as_str()))
        .ok()
        .and_then(|i| COUNTRY_NAMES[i].1.parse::<Region>().ok())
}

/// Parses a region code such as `US`; `None` for anything libphonenumber does not know.
pub fn region_code(code: &str) -> Option<Region> {
    if code.len() != 2 {
        return None;
    }
    let r = code.to_ascii_uppercase().parse::<Region>().ok()?;
    PHONE_NUMBER_UTIL.get_country_code_for_region(r).map(|_| r)
}

/// Strips what people write around a number that libphonenumber would misread: parenthesised
/// labels such as `(mobile)` would otherwise be read as vanity letters.
fn strip_labels(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(open) = rest.find('(') {
        let Some(close_rel) = rest[open..].find(')') else {
            break;
        };
        let inner = &rest[open + 1..open + close_rel];
        out.push_str(&rest[..open]);
        if inner.chars().any(|c| c.is_ascii_digit()) || inner.trim().is_empty() {
            out.push_str(&rest[open..=open + close_rel]);
        }
        rest = &rest[open + close_rel + 1..];
    }
    out.push_str(rest);
    out
}

/// Drops trailing words (`mobile`, `work`, `cell`) that are not an extension marker.
fn strip_trailing_words(s: &str) -> Option<String> {
    let trimmed = s.trim_end();
    let cut = trimmed.trim_end_matches(|c: char| c.is_alphabetic() || c == '.' || c == ':');
    if cut.len() == trimmed.len() {
        return None;
    }
    let word = trimmed[cut.len()..].to_ascii_lowercase();
    if matches!(word.as_str(), "x" | "ext" | "ext." | "extension") {
        return None;
    }
    Some(cut.trim_end().to_string())
}

fn digits(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_digit()).collect()
}

/// Normalises a stored value. `country` is the record's `country` property, `default_region`
/// the portal's default.
///
/// The country code typed in the number wins; then the record's country; then the default.
pub fn normalize(raw: &str, country: Option<Region>, default_region: Region) -> Normalized {
    let cleaned = strip_labels(raw);
    let region = country.unwrap_or(default_region);
    let Some(Parsed {
        number,
        region: number_region,
        valid,
    }) = parse_best(&cleaned, region)
    else {
        return Normalized::unparsable();
    };
    // A country code read from a national prefix (`011 234 5678` in a US portal reads as an
    // international call) is believed only when it yields a valid number or a `+` was typed.
    let explicit = number_has_country_code(&number)
        && (valid
            || cleaned
                .trim_start()
                .trim_start_matches("tel:")
                .starts_with('+'));
    let source = if explicit {
        RegionSource::Number
    } else if country.is_some() {
        RegionSource::Country
    } else {
        RegionSource::Default
    };
    let possible = PHONE_NUMBER_UTIL.is_possible_number(&number);
    let nsn = number.get_national_significant_number();
    let e164 = if valid || (possible && explicit) {
        Some(number.format_as(PhoneNumberFormat::E164).into_owned())
    } else {
        None
    };
    let national_key = if source == RegionSource::Default {
        // The digits as typed, with trunk zeros dropped, are what the number would be in any
        // region with a `0` trunk prefix; that is the guess the national tier undoes.
        let typed = digits(&cleaned);
        let typed = match &number.extension {
            Some(ext) if typed.ends_with(ext.as_str()) => {
                typed[..typed.len() - ext.len()].to_string()
            }
            _ => typed,
        };
        national_key_of(&typed)
    } else {
        national_key_of(&nsn)
    };
    Normalized {
        region: number_region.filter(|_| valid).map(|r| r.to_string()),
        e164,
        nsn: Some(nsn),
        national_key,
        extension: number.extension.clone().filter(|e| !e.is_empty()),
        source: Some(source),
        valid,
    }
}

/// A parsed number with its region and validity, each worked out once: libphonenumber's
/// `is_valid` finds the region by matching the number against every region of its country
/// code, then matches it again for validity, and both were the bulk of a stored number's cost.
struct Parsed {
    number: PhoneNumber,
    region: Option<Region>,
    valid: bool,
}

impl Parsed {
    fn new(number: PhoneNumber) -> Self {
        // This is libphonenumber's own `is_valid_number`, with the region kept.
        let region = number.get_region_code();
        let valid = region.is_some_and(|r| number.is_valid_for_region(r));
        Parsed {
            number,
            region,
            valid,
        }
    }
}

/// Parses a number as libphonenumber would, retrying `00…` and `011…` as international when
/// the first reading is not valid (people type their own country's exit code everywhere).
fn parse_best(s: &str, region: Region) -> Option<Parsed> {
    let parse = |s: &str| {
        PHONE_NUMBER_UTIL
            .parse_and_keep_raw_input(s, Some(region))
            .ok()
            .map(Parsed::new)
    };
    let first = parse(s);
    if first.as_ref().is_some_and(|p| p.valid) {
        return first;
    }
    let trimmed = s.trim_start();
    for prefix in ["00", "011"] {
        let digits_only: String = trimmed
            .chars()
            .take_while(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.'))
            .filter(|c| c.is_ascii_digit())
            .collect();
        if digits_only.starts_with(prefix) && !digits_only.starts_with(&format!("{prefix}0")) {
            let pos = trimmed.find(prefix).unwrap_or(0);
            let retry = format!("+{}", &trimmed[pos + prefix.len()..]);
            if let Some(p) = parse(&retry).filter(|p| p.valid) {
                return Some(p);
            }
        }
    }
    if let Some(without_words) = strip_trailing_words(s)
        && let Some(p) = parse(&without_words)
        && (p.valid || first.is_none())
    {
        return Some(p);
    }
    first
}

fn number_has_country_code(n: &PhoneNumber) -> bool {
    // 20 = FROM_DEFAULT_COUNTRY; 1, 5 and 10 = from the number (plus, IDD, bare digits).
    !matches!(n.country_code_source, Some(20) | Some(0) | None)
}

/// The national-tier key of a digit string: trunk zeros dropped, as a number.
pub fn national_key_of(digits: &str) -> Option<u64> {
    let d = digits.trim_start_matches('0');
    if d.len() < 4 || d.len() > 17 {
        return None;
    }
    d.parse().ok()
}

/// The index key of an E.164 string: its digits as a number (`+` dropped).
pub fn e164_key(e164: &str) -> Option<u64> {
    e164.strip_prefix('+')?.parse().ok()
}

/// A caller number, as sent in inbound-call's `e164Number`.
///
/// Parsing happens while the phone rings, so only the keys every lookup needs are computed
/// here; the national-format key and the region (which run libphonenumber's formatting and
/// region regexes) are computed on demand.
#[derive(Debug, Clone)]
pub struct CallerNumber {
    pub e164: String,
    pub key: u64,
    pub nsn: String,
    /// The national significant number without leading zeros.
    pub national_key: Option<u64>,
    number: PhoneNumber,
}

impl CallerNumber {
    /// The digits of the number in its country's national format (trunk prefix included,
    /// leading zeros dropped), when they differ from `national_key`: a number stored as
    /// `8 (912) 345-67-89` under a wrong region guess is found by this key.
    pub fn trunk_key(&self) -> Option<u64> {
        national_key_of(&digits(&self.number.format_as(PhoneNumberFormat::National)))
            .filter(|k| Some(*k) != self.national_key)
    }

    /// ISO-3166 alpha-2 of the number, when libphonenumber knows it.
    pub fn region(&self) -> Option<String> {
        self.number.get_region_code().map(|r| r.to_string())
    }
}

/// Why a caller's `e164Number` was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerNumberError {
    NotE164,
    Impossible,
}

/// Values of `e164Number` that mean the network withheld the caller's number.
pub fn is_withheld(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "anonymous" | "private" | "restricted" | "unknown" | "unavailable"
    )
}

/// Parses an `e164Number`: `+`, a country code and up to 15 digits, with nothing else, and
/// a length libphonenumber calls possible for that country.
pub fn parse_caller(value: &str) -> Result<CallerNumber, CallerNumberError> {
    let Some(rest) = value.strip_prefix('+') else {
        return Err(CallerNumberError::NotE164);
    };
    if rest.len() < 2
        || rest.len() > 15
        || rest.starts_with('0')
        || !rest.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(CallerNumberError::NotE164);
    }
    let n = PHONE_NUMBER_UTIL
        .parse(value, None)
        .map_err(|_| CallerNumberError::Impossible)?;
    if !PHONE_NUMBER_UTIL.is_possible_number(&n) {
        return Err(CallerNumberError::Impossible);
    }
    let e164 = n.format_as(PhoneNumberFormat::E164).into_owned();
    let nsn = n.get_national_significant_number();
    Ok(CallerNumber {
        key: e164_key(&e164).ok_or(CallerNumberError::NotE164)?,
        national_key: national_key_of(&nsn),
        number: n,
        nsn,
        e164,
    })
}

/// Valid `e164Number` values seen before, so that a `toNumber` (one of the portal's own few
/// lines) is validated by libphonenumber once rather than on every call; a libphonenumber parse
/// is a tenth of an inbound call's CPU. Bounded: it empties itself when full.
static VALID_E164: std::sync::LazyLock<std::sync::RwLock<std::collections::HashSet<String>>> =
    std::sync::LazyLock::new(Default::default);
const VALID_E164_CAP: usize = 4096;

/// [`parse_caller`]'s validation without its result, for numbers that are only checked.
pub fn check_e164(value: &str) -> Result<(), CallerNumberError> {
    if VALID_E164.read().expect("e164 memo").contains(value) {
        return Ok(());
    }
    parse_caller(value)?;
    let mut memo = VALID_E164.write().expect("e164 memo");
    if memo.len() >= VALID_E164_CAP {
        memo.clear();
    }
    memo.insert(value.to_string());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us() -> Region {
        region_code("US").unwrap()
    }

    #[test]
    fn formats_people_type_reach_the_same_key() {
        let fr = region_code("FR");
        let expected = Some("+33612345678".to_string());
        for raw in [
            "+33 6 12 34 56 78",
            "0033 6 12 34 56 78",
            "011 33 6 12 34 56 78",
            "Tel: +33 (0)6 12 34 56 78",
            "+33 6 12 34 56 78 (mobile)",
            "tel:+33-6-12-34-56-78",
        ] {
            assert_eq!(normalize(raw, None, us()).e164, expected, "{raw}");
        }
        assert_eq!(normalize("06 12 34 56 78", fr, us()).e164, expected);
        let guessed = normalize("06 12 34 56 78", None, us());
        assert_eq!(guessed.source, Some(RegionSource::Default));
        assert_eq!(guessed.national_key, Some(612345678));
    }

    #[test]
    fn extensions_are_split_off() {
        for raw in [
            "(415) 555-1212 x12",
            "415-555-1212 ext. 12",
            "415.555.1212 ext12",
            "415 555 1212 #12",
            "+14155551212;ext=12",
        ] {
            let n = normalize(raw, None, us());
            assert_eq!(n.e164.as_deref(), Some("+14155551212"), "{raw}");
            assert_eq!(n.extension.as_deref(), Some("12"), "{raw}");
        }
    }

    #[test]
    fn vanity_letters_and_trunk_prefixes() {
        assert_eq!(
            normalize("1-800-FLOWERS", None, us()).e164.as_deref(),
            Some("+18003569377")
        );
        let gb = region_code("GB");
        assert_eq!(
            normalize("020 7946 0958", gb, us()).e164.as_deref(),
            Some("+442079460958")
        );
        // A national number that starts like the US exit code stays national.
        let sa = normalize("011 234 5678", None, us());
        assert_eq!(sa.source, Some(RegionSource::Default));
        assert_eq!(sa.national_key, Some(112345678));
        assert_eq!(
            normalize("call reception", None, us()),
            Normalized::unparsable()
        );
    }

    #[test]
    fn country_names_resolve() {
        assert_eq!(region_from_country("france"), region_code("FR"));
        assert_eq!(region_from_country("United Kingdom"), region_code("GB"));
        assert_eq!(region_from_country("de"), region_code("DE"));
        assert_eq!(region_from_country("Atlantis"), None);
    }

    #[test]
    fn caller_numbers_must_be_e164() {
        assert!(parse_caller("+442079460958").is_ok());
        assert_eq!(
            parse_caller("442079460958").unwrap_err(),
            CallerNumberError::NotE164
        );
        assert_eq!(
            parse_caller("+44 20 7946 0958").unwrap_err(),
            CallerNumberError::NotE164
        );
        assert!(parse_caller("+1234").is_err());
        assert!(is_withheld("Anonymous"));
    }
}
