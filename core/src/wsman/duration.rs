//! xs:duration values as WS-Management uses them.
//!
//! Three spellings occur on the wire and each field keeps its own, so that a parsed
//! message is written back as it came:
//! * [`format_seconds`]: `PT20S`, `PT1.5S` — pypsrp's `wsman:OperationTimeout`,
//!   `rsp:IdleTimeOut` and `rsp:Lifetime` in requests (R:test_winrs_extra_opts);
//! * [`format_millis`]: `PT7200.000S` — Windows' `rsp:IdleTimeOut` and `rsp:MaxIdleTimeOut`
//!   in shell descriptions (R:test_psrp_open_runspace);
//! * [`format_dhms`]: `P0DT0H0M9S` — Windows' `rsp:ShellRunTime` / `rsp:ShellInactivity`.

use std::time::Duration;

/// Parses a non-negative xs:duration with day, hour, minute and (fractional) second parts,
/// e.g. `PT20S`, `PT7200.000S`, `P0DT0H0M9S`, `P1DT2H`. Years, months and weeks are not
/// accepted (WS-Management never sends them and they have no fixed length); nor is a
/// negative duration. Returns `None` for anything else, including values that overflow.
pub fn parse(text: &str) -> Option<Duration> {
    let rest = text.trim().strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => {
            if t.is_empty() {
                return None;
            }
            (d, Some(t))
        }
        None => (rest, None),
    };
    if date.is_empty() && time.is_none() {
        return None;
    }
    let mut secs: u64 = 0;
    let mut nanos: u32 = 0;
    if !date.is_empty() {
        let days = date.strip_suffix('D')?;
        secs = add_units(secs, days, 86_400)?;
    }
    if let Some(mut t) = time {
        if let Some((h, after)) = t.split_once('H') {
            secs = add_units(secs, h, 3_600)?;
            t = after;
        }
        if let Some((m, after)) = t.split_once('M') {
            secs = add_units(secs, m, 60)?;
            t = after;
        }
        if !t.is_empty() {
            let s = t.strip_suffix('S')?;
            let (whole, frac) = match s.split_once('.') {
                Some((w, f)) => (w, Some(f)),
                None => (s, None),
            };
            secs = add_units(secs, whole, 1)?;
            if let Some(frac) = frac {
                nanos = parse_fraction(frac)?;
            }
        }
    }
    Some(Duration::new(secs, nanos))
}

/// `PT<seconds>S`, with a fraction only when there is one (`PT20S`, `PT0.5S`).
pub fn format_seconds(d: Duration) -> String {
    let nanos = d.subsec_nanos();
    if nanos == 0 {
        return format!("PT{}S", d.as_secs());
    }
    let frac = format!("{nanos:09}");
    format!("PT{}.{}S", d.as_secs(), frac.trim_end_matches('0'))
}

/// `PT<seconds>.<millis>S` with exactly three decimals, as Windows writes timeouts
/// (`PT7200.000S`, `PT2147483.647S`).
pub fn format_millis(d: Duration) -> String {
    format!("PT{}.{:03}S", d.as_secs(), d.subsec_millis())
}

/// `P<d>DT<h>H<m>M<s>S`, as Windows writes shell run and inactivity times (`P0DT0H0M9S`).
pub fn format_dhms(d: Duration) -> String {
    let total = d.as_secs();
    let (days, rem) = (total / 86_400, total % 86_400);
    let (hours, rem) = (rem / 3_600, rem % 3_600);
    let (minutes, seconds) = (rem / 60, rem % 60);
    let millis = d.subsec_millis();
    if millis == 0 {
        format!("P{days}DT{hours}H{minutes}M{seconds}S")
    } else {
        format!("P{days}DT{hours}H{minutes}M{seconds}.{millis:03}S")
    }
}

fn add_units(acc: u64, digits: &str, unit: u64) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    acc.checked_add(n.checked_mul(unit)?)
}

fn parse_fraction(digits: &str) -> Option<u32> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Nanosecond precision; further digits are dropped (they are digits, checked above).
    let mut nanos: u32 = 0;
    let mut scale: u32 = 100_000_000;
    for b in digits.bytes().take(9) {
        nanos += u32::from(b - b'0') * scale;
        scale /= 10;
    }
    Some(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_recorded_spellings() {
        assert_eq!(parse("PT20S"), Some(Duration::from_secs(20)));
        assert_eq!(parse("PT7200.000S"), Some(Duration::from_secs(7200)));
        assert_eq!(
            parse("PT2147483.647S"),
            Some(Duration::from_millis(2_147_483_647))
        );
        assert_eq!(parse("P0DT0H0M9S"), Some(Duration::from_secs(9)));
        assert_eq!(
            parse("P1DT2H3M4.5S"),
            Some(Duration::new(93_784, 500_000_000))
        );
        assert_eq!(parse("P2D"), Some(Duration::from_secs(172_800)));
    }

    #[test]
    fn rejects_invalid_and_hostile_values() {
        for bad in [
            "PT-1S",
            "-PT1S",
            "P",
            "PT",
            "20S",
            "P1Y",
            "P1M",
            "PT1.S",
            "PT.5S",
            "PT1X",
            "P1DT",
            "PT99999999999999999999S",
            "PT18446744073709551615H",
            "P1W",
            "",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_each_field_style() {
        assert_eq!(format_seconds(Duration::from_secs(20)), "PT20S");
        assert_eq!(format_seconds(Duration::from_millis(1500)), "PT1.5S");
        assert_eq!(format_millis(Duration::from_secs(7200)), "PT7200.000S");
        assert_eq!(
            format_millis(Duration::from_millis(2_147_483_647)),
            "PT2147483.647S"
        );
        assert_eq!(format_dhms(Duration::from_secs(9)), "P0DT0H0M9S");
        assert_eq!(format_dhms(Duration::from_secs(90_061)), "P1DT1H1M1S");
        for d in [Duration::from_millis(1), Duration::from_secs(86_401)] {
            assert_eq!(parse(&format_seconds(d)), Some(d));
            assert_eq!(parse(&format_millis(d)), Some(d));
            assert_eq!(parse(&format_dhms(d)), Some(d));
        }
    }
}
