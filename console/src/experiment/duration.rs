//! Durations and fractions as experiment files write them: `"500ms"`, `"2.5s"`, `"3m"`,
//! `"1h"`, or an integer number of milliseconds; fractions as `"40%"`.

use std::time::Duration;

/// The longest duration a file may give (`run_timeout`, a fault's time or lease).
pub(crate) const MAX: Duration = Duration::from_secs(24 * 3600);

pub(crate) const HINT: &str = "write a string with a unit such as `\"500ms\"`, `\"2.5s\"` or \
                               `\"3m\"` (units ms, s, m, h), or an integer number of \
                               milliseconds";

const UNITS: [(&str, u128); 4] = [
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Reads the duration `value` of `key`: a string with a unit or an integer of milliseconds,
/// from 0 to [`MAX`]. Errors are (message, hint).
pub(crate) fn parse(key: &str, value: &toml::Value) -> Result<Duration, (String, String)> {
    let too_long = |shown: &str| {
        (
            format!("`{key}` = {shown} is too long"),
            format!("give at most 24h; {HINT}"),
        )
    };
    match value {
        toml::Value::Integer(n) => {
            let Ok(ms) = u64::try_from(*n) else {
                return Err((
                    format!("`{key}` = {n} is negative"),
                    format!("give a duration of 0 or more; {HINT}"),
                ));
            };
            let d = Duration::from_millis(ms);
            if d > MAX {
                return Err(too_long(&n.to_string()));
            }
            Ok(d)
        }
        toml::Value::String(s) => {
            let invalid = || {
                (
                    format!("invalid duration `{s}` for `{key}`"),
                    HINT.to_string(),
                )
            };
            let (number, unit) = split_number(s).ok_or_else(invalid)?;
            let unit = unit.trim_start_matches(' ');
            if unit.is_empty() {
                return Err((
                    format!("duration `{s}` for `{key}` has no unit"),
                    format!(
                        "write `\"{s}ms\"` or `\"{s}s\"`, or an integer without quotes for \
                         milliseconds; units: ms, s, m, h"
                    ),
                ));
            }
            let Some((_, unit_ns)) = UNITS.iter().find(|(u, _)| *u == unit) else {
                return Err(invalid());
            };
            let nanos = scale(number, *unit_ns).ok_or_else(|| too_long(&format!("`{s}`")))?;
            if nanos > MAX.as_nanos() {
                return Err(too_long(&format!("`{s}`")));
            }
            let nanos = u64::try_from(nanos).map_err(|_| too_long(&format!("`{s}`")))?;
            Ok(Duration::from_nanos(nanos))
        }
        toml::Value::Float(f) => Err((
            format!("invalid type: float `{f}` for `{key}`"),
            format!(
                "a number without a unit is an integer number of milliseconds; \
                 write a string with a unit instead, such as `\"{f}s\"`"
            ),
        )),
        other => Err((
            format!("invalid type: {} for `{key}`", other.type_str()),
            HINT.to_string(),
        )),
    }
}

/// `"40%"` → 0.4; `None` when the text is not a percentage. The number is decimal digits with
/// an optional fraction; the result is not range-checked.
pub(crate) fn parse_percent(text: &str) -> Option<f64> {
    let rest = text.strip_suffix('%')?.trim_end_matches(' ');
    let (number, unit) = split_number(rest)?;
    if !unit.is_empty() {
        return None;
    }
    number.parse::<f64>().ok().map(|p| p / 100.0)
}

/// Splits `"2.5 s"` into (`"2.5"`, `" s"`): the number is digits, optionally `.` and more
/// digits. `None` when there are no leading digits or nothing follows the `.`.
fn split_number(s: &str) -> Option<(&str, &str)> {
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if digits == 0 {
        return None;
    }
    let mut end = digits;
    if s[digits..].starts_with('.') {
        let after = &s[digits + 1..];
        let fraction = after
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after.len());
        if fraction == 0 {
            return None;
        }
        end = digits + 1 + fraction;
    }
    Some(s.split_at(end))
}

/// `number` (digits, optionally `.` digits) times `unit` nanoseconds, rounded down; `None` on
/// overflow.
fn scale(number: &str, unit: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let whole: u128 = whole.parse().ok()?;
    let mut nanos = whole.checked_mul(unit)?;
    // Digits beyond the 18th cannot change a result counted in nanoseconds of at most hours.
    let fraction = &fraction[..fraction.len().min(18)];
    if !fraction.is_empty() {
        let digits: u128 = fraction.parse().ok()?;
        let scale = 10u128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
        nanos = nanos.checked_add(digits.checked_mul(unit)? / scale)?;
    }
    Some(nanos)
}

/// A duration the way a file would write it: `"300s"`, `"2.5s"`, `"500ms"`, `"0.25ms"`.
pub(crate) fn show(d: Duration) -> String {
    let nanos = d.as_nanos();
    let trimmed = |whole: u128, fraction: u128, width: usize, unit: &str| {
        if fraction == 0 {
            format!("{whole}{unit}")
        } else {
            let f = format!("{fraction:0width$}");
            format!("{whole}.{}{unit}", f.trim_end_matches('0'))
        }
    };
    if nanos >= 1_000_000_000 && nanos.is_multiple_of(1_000_000) {
        trimmed(
            nanos / 1_000_000_000,
            (nanos % 1_000_000_000) / 1_000_000,
            3,
            "s",
        )
    } else {
        trimmed(nanos / 1_000_000, nanos % 1_000_000, 6, "ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: toml::Value) -> Result<Duration, (String, String)> {
        parse("d", &v)
    }

    fn s(text: &str) -> Result<Duration, (String, String)> {
        p(toml::Value::String(text.to_string()))
    }

    #[test]
    fn reads_every_unit_exactly() {
        assert_eq!(s("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(s("2.5s"), Ok(Duration::from_millis(2500)));
        assert_eq!(s("0.1s"), Ok(Duration::from_millis(100)));
        assert_eq!(s("3m"), Ok(Duration::from_secs(180)));
        assert_eq!(s("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(s("2 s"), Ok(Duration::from_secs(2)));
        assert_eq!(s("0.25ms"), Ok(Duration::from_micros(250)));
        assert_eq!(s("24h"), Ok(MAX));
        assert_eq!(
            p(toml::Value::Integer(1500)),
            Ok(Duration::from_millis(1500))
        );
        assert_eq!(p(toml::Value::Integer(0)), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        for bad in [
            "",
            "s",
            "5",
            "5 minutes",
            "1.s",
            ".5s",
            "-1s",
            "1e3ms",
            "2.5.1s",
            "5sec",
            "24.1h",
            "99999999999999999999999999999999999999999h",
        ] {
            assert!(s(bad).is_err(), "{bad:?} accepted");
        }
        assert!(p(toml::Value::Integer(-1)).is_err());
        assert!(p(toml::Value::Float(1.5)).is_err());
        assert!(p(toml::Value::Boolean(true)).is_err());
        assert!(p(toml::Value::Integer(i64::MAX)).is_err());
        let (message, hint) = s("5").unwrap_err();
        assert_eq!(message, "duration `5` for `d` has no unit");
        assert!(hint.contains("\"5ms\""), "{hint}");
    }

    #[test]
    fn percentages() {
        assert_eq!(parse_percent("40%"), Some(0.4));
        assert_eq!(parse_percent("12.5 %"), Some(0.125));
        assert_eq!(parse_percent("40"), None);
        assert_eq!(parse_percent("%"), None);
        assert_eq!(parse_percent("4x%"), None);
    }

    #[test]
    fn shows_durations_as_written() {
        assert_eq!(show(Duration::from_secs(300)), "300s");
        assert_eq!(show(Duration::from_millis(2500)), "2.5s");
        assert_eq!(show(Duration::from_millis(500)), "500ms");
        assert_eq!(show(Duration::from_micros(250)), "0.25ms");
        assert_eq!(show(Duration::from_nanos(1_000_000_001)), "1000.000001ms");
    }
}
