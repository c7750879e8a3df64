//! Link settings as people write them (issue "links like the papers' networks"): rates as
//! `"100Mbit"`, `"1Gbit"`; delays and jitter as `"20ms"`, `"1.5ms"`, `"250us"`, `"1s"`; loss
//! as `"0.5%"`. Pure parsers: each returns the value or a (message, hint) pair for the
//! diagnostic that points at the value.

/// Largest rate accepted, bits per second (tc's rates are 64-bit; 100 Gbit is past any link a
/// namespace testbed carries).
pub const MAX_RATE_BPS: u64 = 100_000_000_000;
/// Smallest rate accepted: below this a single full-size frame takes over a second.
pub const MIN_RATE_BPS: u64 = 8_000;
/// Longest one-way delay accepted, microseconds.
pub const MAX_DELAY_US: u64 = 10_000_000;

const RATE_UNITS: [(&str, u64); 5] = [
    ("bit", 1),
    ("kbit", 1_000),
    ("mbit", 1_000_000),
    ("gbit", 1_000_000_000),
    ("tbit", 1_000_000_000_000),
];
const TIME_UNITS: [(&str, f64); 3] = [("us", 1.0), ("ms", 1_000.0), ("s", 1_000_000.0)];

/// Why a value is refused: (message, hint).
pub type Refusal = (String, String);

/// Splits `"12.5 ms"` into (12.5, "ms").
fn number_and_unit(text: &str) -> Option<(f64, &str)> {
    let t = text.trim();
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (digits, unit) = t.split_at(end);
    if digits.is_empty() || digits.starts_with('.') || digits.ends_with('.') {
        return None;
    }
    let value: f64 = digits.parse().ok()?;
    value.is_finite().then_some((value, unit.trim()))
}

/// Why `unit` (missing or unknown) is refused in `key = text`.
fn unit_refusal(key: &str, text: &str, unit: &str) -> String {
    if unit.is_empty() {
        format!("{key} `{text}` has no unit")
    } else {
        format!("unknown unit `{unit}` in {key} `{text}`")
    }
}

/// A rate, bits per second: `"100Mbit"`, `"1.5Gbit"`, `"512kbit"`.
pub fn parse_rate(key: &str, text: &str) -> Result<u64, Refusal> {
    let hint = || {
        format!(
            "write bits per second with a unit, such as `\"100Mbit\"`, `\"1Gbit\"` or \
             `\"512kbit\"` ({} to {})",
            show_rate(MIN_RATE_BPS),
            show_rate(MAX_RATE_BPS)
        )
    };
    let Some((value, unit)) = number_and_unit(text) else {
        return Err((format!("invalid {key} `{text}`"), hint()));
    };
    let lower = unit.to_ascii_lowercase();
    if lower.ends_with("bps") {
        // tc reads `mbps` as megabytes per second and iperf as megabits: refuse the ambiguity.
        return Err((
            format!("{key} `{text}` is ambiguous"),
            format!(
                "`bps` means bytes per second to tc and bits to most people; write bits, e.g. \
                 `\"{}Mbit\"`",
                value
            ),
        ));
    }
    let Some((_, factor)) = RATE_UNITS.iter().find(|(u, _)| *u == lower) else {
        return Err((unit_refusal(key, text, unit), hint()));
    };
    let bps = value * *factor as f64;
    if !(MIN_RATE_BPS as f64..=MAX_RATE_BPS as f64).contains(&bps) {
        return Err((format!("{key} `{text}` is out of range"), hint()));
    }
    Ok(bps.round() as u64)
}

/// A delay or jitter, microseconds: `"20ms"`, `"0.5ms"`, `"250us"`, `"1s"`; `"0ms"` is none.
pub fn parse_delay(key: &str, text: &str) -> Result<u64, Refusal> {
    let hint = || {
        format!(
            "write a time with a unit, such as `\"20ms\"`, `\"0.5ms\"`, `\"250us\"` or `\"1s\"` \
             (at most {} s)",
            MAX_DELAY_US / 1_000_000
        )
    };
    let Some((value, unit)) = number_and_unit(text) else {
        return Err((format!("invalid {key} `{text}`"), hint()));
    };
    let Some((_, factor)) = TIME_UNITS.iter().find(|(u, _)| *u == unit) else {
        return Err((unit_refusal(key, text, unit), hint()));
    };
    let us = value * factor;
    if us > MAX_DELAY_US as f64 {
        return Err((format!("{key} `{text}` is out of range"), hint()));
    }
    Ok(us.round() as u64)
}

/// A loss, percent: `"0.5%"`, `"10%"`.
pub fn parse_loss(key: &str, text: &str) -> Result<f64, Refusal> {
    let hint = || "write a percentage from 0 to 100, such as `\"0.5%\"`".to_string();
    match number_and_unit(text) {
        Some((value, "%")) if (0.0..=100.0).contains(&value) => Ok(value),
        Some((_, "%")) => Err((format!("{key} `{text}` is out of range"), hint())),
        Some((_, "")) => Err((format!("{key} `{text}` has no `%`"), hint())),
        _ => Err((format!("invalid {key} `{text}`"), hint())),
    }
}

/// `100Mbit`, `1.5Gbit`, `512kbit`: the largest unit that keeps a whole or one-decimal number.
pub fn show_rate(bps: u64) -> String {
    let (unit, factor) = RATE_UNITS
        .iter()
        .rev()
        .find(|(_, f)| bps >= *f)
        .copied()
        .unwrap_or(("bit", 1));
    let v = bps as f64 / factor as f64;
    let unit = match unit {
        "bit" => "bit",
        "kbit" => "kbit",
        "mbit" => "Mbit",
        "gbit" => "Gbit",
        _ => "Tbit",
    };
    if v.fract() == 0.0 {
        format!("{v:.0}{unit}")
    } else {
        format!("{v}{unit}")
    }
}

/// `20ms`, `0.5ms`, `250us`.
pub fn show_delay(us: u64) -> String {
    if us.is_multiple_of(1000) {
        format!("{}ms", us / 1000)
    } else if us >= 1000 {
        format!("{}ms", us as f64 / 1000.0)
    } else {
        format!("{us}us")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_as_people_write_them() {
        assert_eq!(parse_rate("rate", "100Mbit"), Ok(100_000_000));
        assert_eq!(parse_rate("rate", "1Gbit"), Ok(1_000_000_000));
        assert_eq!(parse_rate("rate", "1.5gbit"), Ok(1_500_000_000));
        assert_eq!(parse_rate("rate", "512 kbit"), Ok(512_000));
        assert!(parse_rate("rate", "100").unwrap_err().0.contains("no unit"));
        assert!(
            parse_rate("rate", "100Mbps")
                .unwrap_err()
                .0
                .contains("ambiguous")
        );
        assert!(
            parse_rate("rate", "1bit")
                .unwrap_err()
                .0
                .contains("out of range")
        );
        assert!(
            parse_rate("rate", "fast")
                .unwrap_err()
                .0
                .contains("invalid")
        );
        assert_eq!(show_rate(100_000_000), "100Mbit");
        assert_eq!(show_rate(1_500_000_000), "1.5Gbit");
    }

    #[test]
    fn delays_and_losses_read_as_people_write_them() {
        assert_eq!(parse_delay("delay", "20ms"), Ok(20_000));
        assert_eq!(parse_delay("delay", "0.5ms"), Ok(500));
        assert_eq!(parse_delay("delay", "250us"), Ok(250));
        assert_eq!(parse_delay("delay", "1s"), Ok(1_000_000));
        assert_eq!(parse_delay("delay", "0ms"), Ok(0));
        assert!(
            parse_delay("delay", "20")
                .unwrap_err()
                .0
                .contains("no unit")
        );
        assert!(
            parse_delay("delay", "11s")
                .unwrap_err()
                .0
                .contains("out of range")
        );
        assert!(parse_delay("delay", "-1ms").is_err());
        assert_eq!(parse_loss("loss", "0.5%"), Ok(0.5));
        assert!(parse_loss("loss", "101%").is_err());
        assert!(parse_loss("loss", "5").unwrap_err().0.contains("no `%`"));
        assert_eq!(show_delay(20_000), "20ms");
        assert_eq!(show_delay(1_500), "1.5ms");
        assert_eq!(show_delay(250), "250us");
    }
}
