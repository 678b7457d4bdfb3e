//! Go-style durations (`2m0s`, `90s`, `1h30m`, `500ms`), as used in k0sctl.yaml and on k0sctl's
//! command line.
//!
//! Parsing and formatting follow Go's `time.ParseDuration` and `Duration.String` exactly, so a
//! manifest written by k0sctl (`gracePeriod: 2m0s`) round-trips unchanged. Hand-written because
//! the general-purpose duration crates format differently (`2m` instead of `2m0s`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration that reads and writes Go's notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct GoDuration(pub Duration);

impl GoDuration {
    pub const fn from_secs(s: u64) -> Self {
        GoDuration(Duration::from_secs(s))
    }

    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }
}

impl From<GoDuration> for Duration {
    fn from(d: GoDuration) -> Duration {
        d.0
    }
}

/// Parses a Go duration string. Negative durations are rejected (none of k0sctl's settings
/// accept one).
pub fn parse(s: &str) -> Result<Duration, String> {
    let orig = s;
    let err = || {
        format!(
            "invalid duration {orig:?}: use a number with a unit, such as 30s, 2m0s, 1h30m or 500ms"
        )
    };
    let mut s = s.trim();
    if s.contains(char::is_whitespace) {
        return Err(err());
    }
    if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    } else if s.starts_with('-') {
        if s == "-0" {
            return Ok(Duration::ZERO);
        }
        return Err(format!(
            "invalid duration {orig:?}: a duration cannot be negative"
        ));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err());
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &s[..int_len];
        s = &s[int_len..];
        let mut frac_part = "";
        if let Some(rest) = s.strip_prefix('.') {
            let n = rest.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &rest[..n];
            s = &rest[n..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err());
        }
        let unit_len = s
            .bytes()
            .take_while(|c| !c.is_ascii_digit() && *c != b'.')
            .count();
        let unit = &s[..unit_len];
        s = &s[unit_len..];
        let nanos_per: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            "" => {
                return Err(format!(
                    "invalid duration {orig:?}: missing unit (use ns, us, ms, s, m or h; e.g. 30s)"
                ));
            }
            other => {
                return Err(format!(
                    "invalid duration {orig:?}: unknown unit {other:?} (use ns, us, ms, s, m or h)"
                ));
            }
        };
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| err())?
        };
        let mut v = int.checked_mul(nanos_per).ok_or_else(err)?;
        if !frac_part.is_empty() {
            let digits = frac_part.len().min(18) as u32;
            let frac: u128 = frac_part[..digits as usize].parse().map_err(|_| err())?;
            v += frac * nanos_per / 10u128.pow(digits);
        }
        total = total.checked_add(v).ok_or_else(err)?;
    }
    if total > i64::MAX as u128 {
        return Err(format!("invalid duration {orig:?}: too long"));
    }
    Ok(Duration::from_nanos(total as u64))
}

/// Formats like Go's `Duration.String`: `0s`, `1.5s`, `2m0s`, `1h30m0s`, `500ms`.
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (unit, div) = if nanos < 1_000 {
            ("ns", 1)
        } else if nanos < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", frac(nanos, div));
    }
    let hours = nanos / 3_600_000_000_000;
    let rem = nanos % 3_600_000_000_000;
    let mins = rem / 60_000_000_000;
    let secs_nanos = rem % 60_000_000_000;
    let secs = frac(secs_nanos, 1_000_000_000);
    if hours > 0 {
        format!("{hours}h{mins}m{secs}s")
    } else if mins > 0 {
        format!("{mins}m{secs}s")
    } else {
        format!("{secs}s")
    }
}

fn frac(v: u128, div: u128) -> String {
    let whole = v / div;
    let rest = v % div;
    if rest == 0 {
        return whole.to_string();
    }
    let width = (div as f64).log10().round() as usize;
    let mut f = format!("{rest:0width$}");
    while f.ends_with('0') {
        f.pop();
    }
    format!("{whole}.{f}")
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format(self.0))
    }
}

impl std::str::FromStr for GoDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse(s).map(GoDuration)
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(self.0))
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = GoDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 2m0s")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<GoDuration, E> {
                match parse(v) {
                    Ok(d) => Ok(GoDuration(d)),
                    Err(e) => super::decode::invalid(e),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<GoDuration, E> {
                if v == 0 {
                    return Ok(GoDuration::default());
                }
                super::decode::invalid(format!(
                    "a bare number ({v}) is not a duration: add a unit, e.g. {v}s (k0sctl would read it as {v} nanoseconds)"
                ))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<GoDuration, E> {
                self.visit_i64(v as i64)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<GoDuration, E> {
                super::decode::invalid(format!(
                    "a bare number ({v}) is not a duration: add a unit, e.g. 30s"
                ))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<GoDuration, E> {
                Ok(GoDuration::default())
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<GoDuration, E> {
                super::decode::invalid(format!("expected a duration such as 2m0s, found {v}"))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<GoDuration, A::Error> {
                super::decode::invalid("expected a duration such as 2m0s, found a mapping")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<GoDuration, A::Error> {
                super::decode::invalid("expected a duration such as 2m0s, found a list")
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_go() {
        assert_eq!(parse("2m0s").unwrap(), Duration::from_secs(120));
        assert_eq!(parse("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
        assert_eq!(parse(".5h").unwrap(), Duration::from_secs(1800));
        assert!(parse("5").unwrap_err().contains("missing unit"));
        assert!(parse("5d").unwrap_err().contains("unknown unit"));
        assert!(parse("-5s").unwrap_err().contains("negative"));
        assert!(parse("").is_err());
        assert!(parse("s").is_err());
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format(Duration::ZERO), "0s");
        assert_eq!(format(Duration::from_secs(120)), "2m0s");
        assert_eq!(format(Duration::from_secs(300)), "5m0s");
        assert_eq!(format(Duration::from_secs(5400)), "1h30m0s");
        assert_eq!(format(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format(Duration::from_millis(500)), "500ms");
        assert_eq!(format(Duration::from_micros(1)), "1µs");
        assert_eq!(format(Duration::from_nanos(1)), "1ns");
    }
}
