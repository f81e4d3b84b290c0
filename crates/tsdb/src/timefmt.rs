//! RFC3339 formatting and parsing of nanosecond timestamps (UTC), without a date library.
//!
//! Formatting matches Go's `time.RFC3339Nano` as InfluxDB prints it: trailing zeros of the
//! fraction are dropped, the zone is always `Z`.

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's civil_from_days.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats nanoseconds since the epoch as RFC3339 with minimal fraction digits.
pub fn format_rfc3339(ns: i64) -> String {
    let mut s = String::with_capacity(30);
    write_rfc3339(&mut s, ns);
    s
}

/// Appends `n` as exactly `width` decimal digits (`n` must fit).
fn push_digits(out: &mut String, mut n: u64, width: usize) {
    let mut buf = [b'0'; 20];
    for i in (0..width).rev() {
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    // ASCII digits are always valid UTF-8.
    out.push_str(std::str::from_utf8(&buf[..width]).unwrap_or_default());
}

/// Appends what [`format_rfc3339`] returns, without allocating (query results print a
/// timestamp per row).
pub fn write_rfc3339(out: &mut String, ns: i64) {
    let secs = ns.div_euclid(1_000_000_000);
    let frac = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    if (0..=9999).contains(&y) {
        push_digits(out, y as u64, 4);
    } else {
        use std::fmt::Write;
        let _ = write!(out, "{y:04}");
    }
    out.push('-');
    push_digits(out, u64::from(mo), 2);
    out.push('-');
    push_digits(out, u64::from(d), 2);
    out.push('T');
    push_digits(out, (sod / 3600) as u64, 2);
    out.push(':');
    push_digits(out, ((sod % 3600) / 60) as u64, 2);
    out.push(':');
    push_digits(out, (sod % 60) as u64, 2);
    if frac != 0 {
        let mut digits = 9;
        let mut f = frac;
        while f % 10 == 0 {
            f /= 10;
            digits -= 1;
        }
        out.push('.');
        push_digits(out, f as u64, digits);
    }
    out.push('Z');
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, `YYYY-MM-DD HH:MM:SS[.frac]` or `YYYY-MM-DD`.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) && !t.is_empty() {
            t.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y = num(0..4)?;
    let mo = num(5..7)? as u32;
    let d = num(8..10)? as u32;
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    if b.len() == 10 {
        return days.checked_mul(86_400_000_000_000);
    }
    if !(b[10] == b'T' || b[10] == b' ') || b.len() < 19 || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let h = num(11..13)?;
    let mi = num(14..16)?;
    let se = num(17..19)?;
    if h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac: i64 = 0;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let st = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[st..i];
        if digits.is_empty() || digits.len() > 9 {
            return None;
        }
        frac = digits.parse::<i64>().ok()? * 10i64.pow(9 - digits.len() as u32);
    }
    let mut offset_s: i64 = 0;
    let rest = &s[i..];
    match rest {
        "" | "Z" | "z" => {}
        _ => {
            let rb = rest.as_bytes();
            if rb.len() != 6 || !(rb[0] == b'+' || rb[0] == b'-') || rb[3] != b':' {
                return None;
            }
            let oh: i64 = rest[1..3].parse().ok()?;
            let om: i64 = rest[4..6].parse().ok()?;
            offset_s = (oh * 3600 + om * 60) * if rb[0] == b'-' { -1 } else { 1 };
        }
    }
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset_s;
    secs.checked_mul(1_000_000_000)?.checked_add(frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for ns in [
            0i64,
            1,
            1_500_000_000,
            1_600_000_000_123_000_000,
            -1,
            951_782_400_000_000_000,
        ] {
            let s = format_rfc3339(ns);
            assert_eq!(parse_rfc3339(&s), Some(ns), "{s}");
        }
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_500_000_000), "1970-01-01T00:00:01.5Z");
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
    }

    /// The digit-by-digit writer against `format!`, over the whole `i64` range.
    #[test]
    fn writer_matches_format() {
        fn reference(ns: i64) -> String {
            let secs = ns.div_euclid(1_000_000_000);
            let frac = ns.rem_euclid(1_000_000_000);
            let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
            let sod = secs.rem_euclid(86_400);
            let mut s = format!(
                "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}",
                sod / 3600,
                (sod % 3600) / 60,
                sod % 60
            );
            if frac != 0 {
                s.push('.');
                s.push_str(format!("{frac:09}").trim_end_matches('0'));
            }
            s.push('Z');
            s
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut cases = vec![0, -1, 1, i64::MIN, i64::MAX, 1_600_000_000_000_000_000];
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push(x as i64);
            cases.push((x % 4_000_000_000_000_000_000) as i64);
        }
        for ns in cases {
            assert_eq!(format_rfc3339(ns), reference(ns), "{ns}");
        }
    }
}
